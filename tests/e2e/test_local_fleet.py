"""The local fleet end to end, through the `llmfleet` command as a user runs it.

One `local up` (one real vLLM boot) serves the whole module: invoke the base model and an
adapter, publish and promote a new adapter version (served without a restart), roll it
back, read `status`, call `/invocations` with the SageMaker body, then `local down` leaves
no process and no open port. `up` first has to clean a stale state planted as a crash
would leave it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2
import psutil
import pytest

from llmfleet.model_store.ops.chat import chat_request, parse_chat_response, reasoning_and_content, sse_chunks
from llmfleet.scripts.cli_common import load_and_plan
from llmfleet.scripts.local_fleet import LocalFleetError, LocalState, ProcessRecord, StateDir, start_detached, stop_process, store_uri_of

REPO = Path(__file__).resolve().parents[2]
LLMFLEET = str(Path(sys.executable).parent / "llmfleet")
MODEL = "qwen3-small"
ADAPTER = "medical"
PROMPT = "Tell me a story about the sea."
# The adapter agent polls every 2 s locally; a promotion shows within a few polls.
SWAP_WAIT_SECONDS = 120


def run(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([LLMFLEET, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=timeout)
    assert result.returncode == 0, f"llmfleet {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}"
    return result


def clean_env() -> dict[str, str]:
    """The user's environment without AWS settings: the local fleet must need none."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LLMFLEET_"))}


def answer(cwd: Path, target: str) -> str:
    result = run("invoke", target, PROMPT, "--max-tokens", "12", "--temperature", "0", "--json", cwd=cwd)
    return json.loads(result.stdout)["content"]


def served_adapters(state: LocalState) -> dict[str, str]:
    return httpx2.get(f"{state.server_url}/llmfleet/adapters", timeout=10).json()["adapters"]


def wait_for_version(state: LocalState, version: str) -> None:
    deadline = time.monotonic() + SWAP_WAIT_SECONDS
    while served_adapters(state).get(ADAPTER) != version:
        assert time.monotonic() < deadline, f"{ADAPTER}@{version} not served within {SWAP_WAIT_SECONDS}s: {served_adapters(state)}"
        time.sleep(1)


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def plant_state(state_dir: StateDir, processes: dict[str, ProcessRecord], server_url: str) -> None:
    """A state.json as an earlier `up` writes it."""
    state_dir.save(
        LocalState(
            fleet_path=str(REPO / "fleet.yaml"), fleet="demo", stage="prod", region="us-east-1", model=MODEL,
            store_uri="s3://llmfleet-store", store_method="boto3", server_url=server_url,
            s3_endpoint="http://127.0.0.1:1", api_key_file=str(state_dir.api_key_file),
            processes=processes, started_at="earlier", plan_cost_per_hour_usd=1.5,
        )
    )


def exited_process(state_dir: StateDir, name: str) -> ProcessRecord:
    record = start_detached(name, [sys.executable, "-c", "pass"], dict(os.environ), state_dir.logs / f"old-{name}.log", 1)
    psutil.Process(record.pid).wait(timeout=30)
    return record


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("local-fleet")


@pytest.fixture(scope="module")
def stale(workdir: Path) -> Iterator[dict]:
    """What a crashed `up` leaves: a state naming a dead process and a live one holding a port."""
    state_dir = StateDir(workdir / ".llmfleet")
    state_dir.root.mkdir(parents=True)
    dead = exited_process(state_dir, "moto")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    port = server.getsockname()[1]
    server.close()
    holder = f"import socket, time; s = socket.socket(); s.bind(('127.0.0.1', {port})); s.listen(); time.sleep(600)"
    live = start_detached("server", [sys.executable, "-c", holder], dict(os.environ), state_dir.logs / "old-server.log", port)
    plant_state(state_dir, {"moto": dead, "server": live}, f"http://127.0.0.1:{port}")
    yield {"dead": dead, "live": live}
    stop_process(live)  # a no-op once `up` stopped it, as it must


@pytest.fixture(scope="module")
def fleet(workdir: Path, stale: dict) -> Iterator[dict]:
    """`llmfleet local up` on the example fleet; `local down` at the end whatever happened."""
    started = time.monotonic()
    try:
        result = run("local", "up", "-f", str(REPO / "fleet.yaml"), cwd=workdir, env=clean_env(), timeout=900)
        wall = time.monotonic() - started
        print(f"\nllmfleet local up: {wall:.1f}s wall")
        yield {"state": StateDir(workdir / ".llmfleet").load(), "up": result, "wall": wall}
    finally:
        subprocess.run([LLMFLEET, "local", "down"], cwd=workdir, capture_output=True, timeout=300)
        cluster = workdir / ".llmfleet" / "postgres" / "cluster"  # as root, the gateway's Postgres lives under /tmp
        if cluster.is_symlink():
            shutil.rmtree(cluster.resolve(), ignore_errors=True)


def test_up_cleaned_the_stale_state_and_prints_how_to_call_the_fleet(fleet: dict, stale: dict):
    up, state = fleet["up"], fleet["state"]
    assert "found the state of an earlier `local up`" in up.stderr
    assert not stale["live"].alive(), "the live process of the stale state was not stopped"
    assert state.model == MODEL and state.standin
    assert set(state.adapters) == {"medical", "legal", "finance"}
    assert state.store_method == "boto3" and "created with boto3" in up.stderr
    for text in (f"{state.server_url}/v1", state.s3_endpoint, "stand-in", "curl", "OpenAI(base_url=", "llmfleet local down"):
        assert text in up.stdout, text
    assert Path(state.api_key_file).read_text().strip() in up.stdout
    assert "not started locally: r1-distill-14b" in up.stdout
    assert oct(Path(state.api_key_file).stat().st_mode & 0o777) == "0o600"


def test_second_up_reuses_the_running_fleet(fleet: dict, workdir: Path):
    again = run("local", "up", "-f", str(REPO / "fleet.yaml"), cwd=workdir, env=clean_env())
    assert "already up" in again.stderr
    assert StateDir(workdir / ".llmfleet").load().processes == fleet["state"].processes


def test_invoke_streams_the_answer_to_stdout(fleet: dict, workdir: Path):
    streamed = run("invoke", f"{MODEL}:legal", PROMPT, "--max-tokens", "12", "--temperature", "0", cwd=workdir)
    collected = answer(workdir, f"{MODEL}:legal")
    assert collected and streamed.stdout == collected + "\n"


def test_invoke_with_url_and_key_needs_no_local_state(fleet: dict, tmp_path: Path):
    """The ALB path: an explicit URL and key, from a directory without `.llmfleet/`."""
    state = fleet["state"]
    env = clean_env() | {"LLMFLEET_API_KEY": Path(state.api_key_file).read_text().strip()}
    result = run("invoke", MODEL, PROMPT, "--url", state.openai_base_url, "--max-tokens", "4", "--json", cwd=tmp_path, env=env)
    assert json.loads(result.stdout)["content"]
    refused = subprocess.run(
        [LLMFLEET, "invoke", MODEL, PROMPT, "--url", state.server_url, "--api-key", "wrong"],
        capture_output=True, text=True, cwd=tmp_path, env=clean_env(), timeout=120,
    )
    assert refused.returncode == 1 and "401" in refused.stderr


def test_the_server_listens_on_loopback_only(fleet: dict):
    record = fleet["state"].processes["server"]
    family = [psutil.Process(record.pid), *psutil.Process(record.pid).children(recursive=True)]
    listening = {
        connection.laddr
        for process in family
        for connection in process.net_connections(kind="inet")
        if connection.status == psutil.CONN_LISTEN and connection.laddr.port == record.port
    }

    assert listening and {address.ip for address in listening} <= {"127.0.0.1", "::1"}, listening
    assert httpx2.get(f"http://127.0.0.1:{record.port}/health", timeout=10).status_code == 200


def test_api_key_guards_the_openai_api(fleet: dict):
    response = httpx2.post(
        f"{fleet['state'].server_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}]},
        timeout=30,
    )
    assert response.status_code == 401


def test_promote_is_served_without_restart_and_rollback_restores(fleet: dict, workdir: Path):
    state = fleet["state"]
    base, adapter = answer(workdir, MODEL), answer(workdir, f"{MODEL}:{ADAPTER}")
    assert base and adapter and base != adapter, "the stand-in adapter must change the base model's output"
    first_version = state.adapters[ADAPTER]

    from llmfleet.scripts.standin_model import make_lora_adapter

    new_dir = make_lora_adapter(
        workdir / ".llmfleet" / "standin" / "model", workdir / "medical-v2", rank=8, seed=99, base_model_name=MODEL
    )
    env = clean_env() | dict(line.removeprefix("export ").split("=", 1) for line in run("local", "env", cwd=workdir).stdout.splitlines())
    published = run("adapter", "publish", str(new_dir), "--model", MODEL, "--name", ADAPTER, "--fleet", str(REPO / "fleet.yaml"),
                    "--json", cwd=workdir, env=env)
    new_version = json.loads(published.stdout)["version"]
    assert new_version != first_version
    run("adapter", "promote", f"{ADAPTER}@{new_version}", "--model", MODEL, "--stage", state.stage, cwd=workdir, env=env)
    wait_for_version(state, new_version)
    assert state.processes["server"].alive(), "the server restarted (or died) to take the new version"
    promoted_answer = answer(workdir, f"{MODEL}:{ADAPTER}")
    assert promoted_answer != adapter

    run("adapter", "rollback", ADAPTER, "--model", MODEL, "--stage", state.stage, cwd=workdir, env=env)
    wait_for_version(state, first_version)
    assert answer(workdir, f"{MODEL}:{ADAPTER}") == adapter
    assert state.processes["server"].alive()

    report = json.loads(run("status", "--json", cwd=workdir).stdout)
    (row,) = report["models"]
    assert (row["model"], row["target"], row["running"], row["desired"], row["standin"]) == (MODEL, "local", 1, 1, True)
    (server,) = row["servers"]
    assert server["adapters"][ADAPTER] == first_version == row["promoted"][ADAPTER]
    assert server["adapters"] == state.adapters and server["drift"] == []
    assert row["metrics"]["latency_p50_ms"] is not None, "requests were served, so vLLM's histogram has data"
    assert row["cost_per_hour_usd"] > 0
    # The server's start, phase by phase: its boot record through /llmfleet/adapters.
    assert row["metrics"]["last_boot_seconds"] > 0
    assert server["boot"].startswith(f"{round(row['metrics']['last_boot_seconds'])} s (sync ")
    table = run("status", cwd=workdir).stdout
    assert first_version in table and "stand-in" in table
    assert "started in" in table and "compile cache" in table


def test_sagemaker_chat_body_is_answered_on_invocations(fleet: dict):
    body = chat_request(MODEL, PROMPT, max_tokens=8, temperature=0.0, stream=False)
    response = httpx2.post(f"{fleet['state'].server_url}/invocations", json=body, timeout=60)
    assert response.status_code == 200, response.text
    reasoning, content = parse_chat_response(response.json())
    assert content and reasoning == ""


def test_streamed_sagemaker_body_decodes_to_the_same_answer(fleet: dict):
    """`invoke --sagemaker --stream` decodes vLLM's SSE stream from /invocations; cut into small parts here."""
    url = f"{fleet['state'].server_url}/invocations"
    whole = httpx2.post(url, json=chat_request(MODEL, PROMPT, max_tokens=8, temperature=0.0, stream=False), timeout=60)
    body = chat_request(MODEL, PROMPT, max_tokens=8, temperature=0.0, stream=True)
    with httpx2.stream("POST", url, json=body, timeout=60) as response:
        assert response.status_code == 200
        chunks = list(sse_chunks(response.iter_bytes(chunk_size=5)))
    streamed = "".join(reasoning_and_content(c["choices"][0]["delta"])[1] for c in chunks if c.get("choices"))
    assert streamed == parse_chat_response(whole.json())[1] != ""


def test_down_leaves_no_process_and_no_open_port(fleet: dict, workdir: Path):
    state = fleet["state"]
    family = []
    for record in state.processes.values():
        leader = psutil.Process(record.pid)
        family += [leader, *leader.children(recursive=True)]
    assert len(family) >= 3, "moto, the entrypoint and vLLM run"
    down = run("local", "down", cwd=workdir, timeout=300)
    assert "closed" in down.stdout
    assert [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE] == []
    assert [r.port for r in state.processes.values() if port_open(r.port)] == []
    assert StateDir(workdir / ".llmfleet").load() is None
    assert "nothing to stop" in run("local", "down", cwd=workdir).stdout


def test_status_of_a_crashed_local_fleet_says_down(tmp_path: Path):
    state_dir = StateDir(tmp_path / ".llmfleet")
    state_dir.root.mkdir()
    gone = exited_process(state_dir, "server")
    plant_state(state_dir, {"server": gone, "moto": gone}, "http://127.0.0.1:1")
    result = run("status", "--json", cwd=tmp_path)
    (row,) = json.loads(result.stdout)["models"]
    assert (row["state"], row["running"], row["desired"], row["cost_per_hour_usd"]) == ("down", 0, 1, 0.0)
    assert "emulated AWS is not running" in result.stderr


def test_the_local_fleet_serves_each_model_from_its_store_and_refuses_a_local_source():
    """The store itself is derived from the source by the manifest (tests/unit/test_manifest.py)."""
    plans = load_and_plan(REPO / "fleet.yaml")[1]
    assert {store_uri_of(plan) for plan in plans} == {"s3://llmfleet-store"}
    local = plans[0].model_copy(update={"source": "./checkpoints/qwen3", "store_uri": None})
    with pytest.raises(LocalFleetError, match="is a local directory"):
        store_uri_of(local)


def test_records_are_told_apart_from_reused_pids():
    me = psutil.Process()
    assert ProcessRecord("me", me.pid, me.create_time(), 0, "").alive()
    assert not ProcessRecord("other", me.pid, me.create_time() - 100, 0, "").alive()
