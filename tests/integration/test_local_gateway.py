"""The local fleet's gateway (what `llmfleet local up` starts when the fleet enables it) in front of
a stub server standing in for the local vLLM: the example fleet's consumers each get a key, and
`llmfleet invoke` and `llmfleet usage` go through it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.scripts.local_fleet import LocalState, StateDir, http_ok, start_detached, stop_process, wait_until
from llmfleet.scripts.local_gateway import key_for, up_gateway
from tests.conftest import REPO, free_port

LLMFLEET = str(Path(sys.executable).parent / "llmfleet")


@pytest.fixture(scope="module")
def local(tmp_path_factory, moto_endpoint):
    work = tmp_path_factory.mktemp("local-gateway")
    state_dir = StateDir(work / ".llmfleet")
    state_dir.logs.mkdir(parents=True)
    port = free_port()
    stub = start_detached("server", [sys.executable, "-m", "llmfleet.scripts.openai_stub", "--port", str(port)],
                          dict(os.environ), state_dir.logs / "server.log", port)
    records = [stub]
    try:
        wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/v1/models"), process=stub, timeout=30, what="the stub serves")
        fleet, plans = load_and_plan(REPO / "fleet.yaml")
        plan = next(p for p in plans if p.model_name == "qwen3-small")
        steps: list[str] = []
        gateway_url, database_url = up_gateway(
            fleet, REPO / "fleet.yaml", plan, server_url=f"http://127.0.0.1:{port}", server_api_key="local-key",
            aws_endpoint=moto_endpoint, state_dir=state_dir, on_step=steps.append, started=records.append,
        )
        state = LocalState(
            fleet_path=str(REPO / "fleet.yaml"), fleet="demo", stage="prod", region="us-east-1", model="qwen3-small",
            store_uri="s3://llmfleet-store", store_method="boto3", server_url=f"http://127.0.0.1:{port}",
            s3_endpoint=moto_endpoint, api_key_file=str(state_dir.api_key_file), processes={r.name: r for r in records},
            gateway_url=gateway_url, gateway_keys_file=str(state_dir.gateway_keys_file), usage_database_url=database_url,
        )
        state_dir.save(state)
        yield {"work": work, "state": state, "steps": steps, "stub": f"http://127.0.0.1:{port}"}
    finally:
        for record in reversed(records):
            stop_process(record)
        cluster = state_dir.root / "postgres" / "cluster"
        if cluster.is_symlink():
            shutil.rmtree(cluster.resolve(), ignore_errors=True)


def test_each_consumer_of_the_example_fleet_has_a_key_only_its_user_reads(local) -> None:
    keys = json.loads(Path(local["state"].gateway_keys_file).read_text())
    assert sorted(keys) == ["legal-team", "platform", "search-team"]
    assert oct(Path(local["state"].gateway_keys_file).stat().st_mode & 0o777) == "0o600"
    assert key_for(Path(local["state"].gateway_keys_file), "qwen3-small:medical") == keys["search-team"]["key"]
    assert key_for(Path(local["state"].gateway_keys_file), "r1-distill-14b") == keys["legal-team"]["key"]


def test_invoke_goes_through_the_gateway_and_usage_reads_it_back(local) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "LLMFLEET_"))}
    answer = subprocess.run([LLMFLEET, "invoke", "qwen3-small:medical", "Hi", "--max-tokens", "4", "--json"],
                            cwd=local["work"], env=env, capture_output=True, text=True, timeout=120)
    assert answer.returncode == 0, answer.stderr
    assert json.loads(answer.stdout)["content"] == "x " * 4
    assert httpx.get(f"{local['stub']}/stub/last").json()["body"]["model"] == "medical"  # routed to the adapter
    exports = subprocess.run([LLMFLEET, "local", "env"], cwd=local["work"], env=env, capture_output=True, text=True, check=True)
    database = next(line.split("=", 1)[1] for line in exports.stdout.splitlines() if "LLMFLEET_GATEWAY_DATABASE_URL" in line)
    for _ in range(50):
        usage = subprocess.run([LLMFLEET, "usage", "--json", "--database", database], capture_output=True, text=True, check=True)
        rows = json.loads(usage.stdout)["rows"]
        if rows:
            break
        time.sleep(0.2)  # the row is written just after the answer
    assert [(r["consumer"], r["model"], r["requests"]) for r in rows] == [("search-team", "qwen3-small", 1)]
