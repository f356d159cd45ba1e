"""`llmfleet lock` as CI runs it: the real CLI in a subprocess against a local Hugging Face Hub
over HTTP (tests/integration/hub_server.py) and moto's S3 server, then `plan` and `cdk synth`
reading only the lock, with the Hub stopped or unreachable."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors.numpy import save, save_file

from llmfleet.model_store.store.store import ModelStore
from tests.conftest import REPO, free_port
from tests.integration.conftest import TINY_CONFIG
from tests.integration.hub_server import LocalHub

LLMFLEET = REPO / ".venv" / "bin" / "llmfleet"
PYTHON = REPO / ".venv" / "bin" / "python"

PUBLIC = "acme/tiny-chat"
GATED = "acme/tiny-gated"
NO_CONFIG = "acme/tokenizer-only"
BUNDLED = "Qwen/Qwen3-8B"  # model_store/known_configs holds its config.json
TOKEN = "hf_local_test_token"
MAIN_SHA, OLD_SHA, GATED_SHA, NO_CONFIG_SHA = ("a" * 40, "b" * 40, "c" * 40, "d" * 40)

# Weights whose headers say 16-bit and 8-bit tensors (as a bf16 checkpoint with fp8 parts does):
# the lock must count their bytes per dtype exactly as the headers give them.
MAIN_SHARDS = {
    "model-00001-of-00002.safetensors": {"model.embed_tokens.weight": np.zeros((600, 128), np.float16)},
    "model-00002-of-00002.safetensors": {
        "model.layers.0.mlp.up_proj.weight": np.zeros((256, 128), np.uint8),
        "model.layers.0.mlp.up_proj.weight_scale": np.zeros((1,), np.float16),
    },
}
OLD_WEIGHTS = {"model.embed_tokens.weight": np.zeros((600, 128), np.float16)}
OLD_CONFIG = {**TINY_CONFIG, "max_position_embeddings": 2048}


def bytes_by_dtype(*tensor_sets: dict[str, np.ndarray]) -> dict[str, int]:
    names = {np.dtype(np.float16): "F16", np.dtype(np.uint8): "U8"}
    totals: dict[str, int] = {}
    for tensors in tensor_sets:
        for array in tensors.values():
            totals[names[array.dtype]] = totals.get(names[array.dtype], 0) + array.nbytes
    return totals


MAIN_BYTES = bytes_by_dtype(*MAIN_SHARDS.values())  # {"F16": 153602, "U8": 32768}
OLD_BYTES = bytes_by_dtype(OLD_WEIGHTS)


def config_bytes(config: dict) -> bytes:
    return json.dumps(config).encode()


def hub_repos() -> dict[str, dict]:
    index = {
        "metadata": {"total_size": sum(MAIN_BYTES.values())},
        "weight_map": {name: shard for shard, tensors in MAIN_SHARDS.items() for name in tensors},
    }
    main = {
        "config.json": config_bytes(TINY_CONFIG),
        "model.safetensors.index.json": json.dumps(index).encode(),
        **{shard: save(tensors, metadata={"format": "pt"}) for shard, tensors in MAIN_SHARDS.items()},
    }
    old = {"config.json": config_bytes(OLD_CONFIG), "model.safetensors": save(OLD_WEIGHTS, metadata={"format": "pt"})}
    return {
        PUBLIC: {"commits": {MAIN_SHA: main, OLD_SHA: old}, "refs": {"main": MAIN_SHA, "v1.0": OLD_SHA}},
        GATED: {"commits": {GATED_SHA: main}, "refs": {"main": GATED_SHA}, "gated": True},
        NO_CONFIG: {"commits": {NO_CONFIG_SHA: {"tokenizer.json": b"{}"}}, "refs": {"main": NO_CONFIG_SHA}},
    }


@pytest.fixture(scope="module")
def hub():
    with LocalHub(hub_repos(), token=TOKEN) as running:
        yield running


@pytest.fixture
def fleet_dir(tmp_path: Path, aws_env: str, bucket: str) -> Path:
    """A directory for fleet.yaml; its store is an empty moto bucket, so the store misses and the Hub answers."""
    (tmp_path / "fleet").mkdir()
    return tmp_path / "fleet"


def write_fleet(directory: Path, bucket: str, *models: dict) -> Path:
    path = directory / "fleet.yaml"
    document = {"name": "locked", "store": f"s3://{bucket}", "models": [{"max_model_len": 1024, **m} for m in models]}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def read_lock(fleet: Path) -> dict:
    return json.loads(fleet.with_name("fleet.lock.json").read_text())


def cli_env(endpoint: str, tmp: Path, token: str | None = None) -> dict[str, str]:
    """The environment a CI job gives the CLI: HF_* for the local Hub only, AWS pointed at moto."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("HF_") and k != "HUGGING_FACE_HUB_TOKEN"}
    env |= {
        "HF_ENDPOINT": endpoint,
        "HF_HUB_CACHE": str(tmp / "hf-cache"),
        "HF_HOME": str(tmp / "hf-home"),  # no token saved by `hf auth login` on this machine leaks in
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }
    if token is not None:
        env["HF_TOKEN"] = token
    return env


def llmfleet(*args: object, endpoint: str, tmp: Path, token: str | None = None) -> subprocess.CompletedProcess:
    """The installed CLI as a CI job runs it."""
    result = subprocess.run(
        [str(LLMFLEET), *map(str, args)], cwd=tmp, env=cli_env(endpoint, tmp, token), capture_output=True, text=True, timeout=120
    )
    result.output = result.stdout + result.stderr  # type: ignore[attr-defined]
    return result


def closed_endpoint() -> str:
    return f"http://127.0.0.1:{free_port()}"  # bound then released: nothing listens there


def one_clean_error(result: subprocess.CompletedProcess, code: int, *words: str) -> str:
    """The run exited `code` without a traceback, and exactly one line says all of `words`."""
    assert result.returncode == code, result.output
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if all(w.lower() in line.lower() for w in words)]
    assert len(lines) == 1, f"want one line with {words}:\n{result.output}"
    return lines[0]


def flat(text: str) -> str:
    """Output with rich's line wrapping undone, for phrases that may straddle a wrap."""
    return " ".join(text.split())


# --- the Hub ----------------------------------------------------------------------------------


def test_lock_records_the_hub_commit_config_and_header_bytes_and_plan_needs_only_the_lock(
    fleet_dir: Path, bucket: str, tmp_path: Path
) -> None:
    fleet = write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": PUBLIC})
    with LocalHub(hub_repos(), token=TOKEN) as own_hub:
        locked = llmfleet("lock", "-f", fleet, endpoint=own_hub.endpoint, tmp=tmp_path)
        endpoint = own_hub.endpoint
        weight_reads = [r for r in own_hub.requests if r.method == "GET" and r.path.endswith(".safetensors")]
    assert locked.returncode == 0, locked.output
    entry = read_lock(fleet)["models"]["tiny"]
    assert entry["model"] == {
        "origin": "hub",
        "location": PUBLIC,
        "revision": MAIN_SHA,
        "config": TINY_CONFIG,
        "weights_bytes_by_dtype": MAIN_BYTES,
    }
    assert entry["inputs"]["architecture"] == PUBLIC
    assert f"hub:{PUBLIC}@{MAIN_SHA}" in flat(locked.output)
    # Both shards were read, and only their headers: every weights GET asked for a range.
    assert {r.path.rsplit("/", 1)[1] for r in weight_reads} == set(MAIN_SHARDS)
    assert all(r.range for r in weight_reads), weight_reads

    # The Hub is gone (its port closed) and the model is not bundled: only the lock can answer.
    planned = llmfleet("plan", "-f", fleet, "--json", endpoint=endpoint, tmp=tmp_path)
    assert planned.returncode == 0, planned.output
    (model,) = json.loads(planned.stdout)["models"]
    assert model["weights_bytes"] == sum(MAIN_BYTES.values())


@pytest.mark.parametrize("revision", [OLD_SHA, "v1.0"], ids=["sha", "tag"])
def test_a_pinned_revision_resolves_that_commit_not_main(
    hub: LocalHub, fleet_dir: Path, bucket: str, tmp_path: Path, revision: str
) -> None:
    fleet = write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": f"{PUBLIC}@{revision}"})
    locked = llmfleet("lock", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path)
    assert locked.returncode == 0, locked.output
    record = read_lock(fleet)["models"]["tiny"]["model"]
    assert (record["revision"], record["config"], record["weights_bytes_by_dtype"]) == (OLD_SHA, OLD_CONFIG, OLD_BYTES)


def test_a_gated_repo_needs_hf_token(hub: LocalHub, fleet_dir: Path, bucket: str, tmp_path: Path) -> None:
    fleet = write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": GATED})
    for token in (None, "hf_someone_else"):
        refused = llmfleet("lock", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path, token=token)
        assert GATED in one_clean_error(refused, 1, "gated", "HF_TOKEN")
        assert not fleet.with_name("fleet.lock.json").exists()

    allowed = llmfleet("lock", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path, token=TOKEN)
    assert allowed.returncode == 0, allowed.output
    record = read_lock(fleet)["models"]["tiny"]["model"]
    assert (record["origin"], record["revision"], record["weights_bytes_by_dtype"]) == ("hub", GATED_SHA, MAIN_BYTES)
    assert TOKEN not in allowed.output and TOKEN not in fleet.with_name("fleet.lock.json").read_text()


@pytest.mark.parametrize(
    ("architecture", "words"),
    [
        ("acme/no-such-model", ("acme/no-such-model", "no such model")),
        (f"{PUBLIC}@v9.9", (PUBLIC, "revision", "v9.9")),
        (NO_CONFIG, (NO_CONFIG, "config.json")),
    ],
    ids=["missing-repo", "missing-revision", "no-config"],
)
def test_what_the_hub_refuses_is_one_clear_line(
    hub: LocalHub, fleet_dir: Path, bucket: str, tmp_path: Path, architecture: str, words: tuple[str, ...]
) -> None:
    fleet = write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": architecture})
    one_clean_error(llmfleet("lock", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path), 1, *words)


def test_an_unreachable_hub_falls_back_to_bundled_configs_only(fleet_dir: Path, bucket: str, tmp_path: Path) -> None:
    endpoint = closed_endpoint()
    fleet = write_fleet(fleet_dir, bucket, {"name": "known", "architecture": BUNDLED})
    locked = llmfleet("lock", "-f", fleet, endpoint=endpoint, tmp=tmp_path)
    assert locked.returncode == 0, locked.output
    assert "Traceback" not in locked.output
    record = read_lock(fleet)["models"]["known"]["model"]
    assert (record["origin"], record["location"], record["revision"]) == ("bundled", BUNDLED, None)
    assert f"used the bundled copy of {BUNDLED}" in flat(locked.output)

    fleet = write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": PUBLIC})
    one_clean_error(llmfleet("lock", "-f", fleet, endpoint=endpoint, tmp=tmp_path), 1, PUBLIC, "reach")
    assert read_lock(fleet)["models"].keys() == {"known"}  # the old lock is left whole


# --- the lock against the manifest ------------------------------------------------------------


def test_a_stale_or_damaged_lock_is_refused_with_the_command_that_fixes_it(
    hub: LocalHub, fleet_dir: Path, bucket: str, tmp_path: Path
) -> None:
    fleet = write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": PUBLIC})
    assert llmfleet("lock", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path).returncode == 0

    write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": f"{PUBLIC}@v1.0"})
    stale = llmfleet("plan", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path)
    line = one_clean_error(stale, 2, "stale", "llmfleet lock")
    assert "architecture" in line and "v1.0" in line

    refreshed = llmfleet("plan", "-f", fleet, "--refresh", "--json", endpoint=hub.endpoint, tmp=tmp_path)
    assert refreshed.returncode == 0, refreshed.output
    assert read_lock(fleet)["models"]["tiny"]["model"]["revision"] == OLD_SHA
    assert json.loads(refreshed.stdout)["models"][0]["weights_bytes"] == sum(OLD_BYTES.values())

    fleet.with_name("fleet.lock.json").write_text('{"format": 1, "fleet": "locked", "models": {')
    damaged = llmfleet("plan", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path)
    one_clean_error(damaged, 2, "fleet.lock.json", "llmfleet lock")
    assert len(damaged.stderr.strip().splitlines()) == 1, damaged.stderr


# --- the store --------------------------------------------------------------------------------


def test_the_store_answers_first_and_a_model_it_lacks_falls_through_to_the_hub(
    hub: LocalHub, fleet_dir: Path, bucket: str, tmp_path: Path
) -> None:
    checkpoint = tmp_path / "checkpoint"
    checkpoint.mkdir()
    (checkpoint / "config.json").write_text(json.dumps(TINY_CONFIG))
    save_file(MAIN_SHARDS["model-00002-of-00002.safetensors"], str(checkpoint / "model.safetensors"), metadata={"format": "pt"})
    ModelStore.from_uri(f"s3://{bucket}").upload_model(checkpoint, "stored", "main", uploader="tests")

    fleet = write_fleet(fleet_dir, bucket, {"name": "stored"}, {"name": "hubbed", "architecture": PUBLIC})
    locked = llmfleet("lock", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path)
    assert locked.returncode == 0, locked.output
    models = read_lock(fleet)["models"]
    assert models["stored"]["model"] == {
        "origin": "store",
        "location": f"s3://{bucket}/models/stored",
        "revision": "main",
        "config": TINY_CONFIG,
        "weights_bytes_by_dtype": bytes_by_dtype(MAIN_SHARDS["model-00002-of-00002.safetensors"]),
    }
    assert (models["hubbed"]["model"]["origin"], models["hubbed"]["model"]["revision"]) == ("hub", MAIN_SHA)


# --- cdk synth --------------------------------------------------------------------------------

# Run app.py as the CDK CLI does (context and outdir in CDK_CONTEXT_JSON / CDK_OUTDIR), with
# every Python socket connection refused and reported: synthesis must not reach for the network.
SYNTH_WITHOUT_NETWORK = """
import runpy, socket, sys
def refuse(address):
    print(f"NETWORK ATTEMPT {address!r}", file=sys.stderr)
    raise OSError(f"network disabled in this test: {address!r}")
socket.socket.connect = socket.socket.connect_ex = lambda self, address: refuse(address)
socket.create_connection = lambda address, *args, **kwargs: refuse(address)
sys.argv = ["app.py"]
runpy.run_path("app.py", run_name="__main__")
"""


def container_plans(template: Path) -> list[dict]:
    """The LLMFLEET_PLAN of every container definition in a synthesized template."""
    resources = json.loads(template.read_text())["Resources"].values()
    return [
        json.loads(variable["Value"])
        for resource in resources
        for container in resource.get("Properties", {}).get("ContainerDefinitions", [])
        for variable in container.get("Environment", [])
        if variable["Name"] == "LLMFLEET_PLAN"
    ]


def test_cdk_synth_reads_the_lock_with_the_network_unreachable(
    hub: LocalHub, fleet_dir: Path, bucket: str, tmp_path: Path
) -> None:
    fleet = write_fleet(fleet_dir, bucket, {"name": "tiny", "architecture": PUBLIC})
    assert llmfleet("lock", "-f", fleet, endpoint=hub.endpoint, tmp=tmp_path).returncode == 0

    outdir = tmp_path / "cdk.out"
    context = json.loads((REPO / "cdk.json").read_text())["context"] | {"fleet": str(fleet)}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "AWS_"))}
    env |= {
        "HF_ENDPOINT": closed_endpoint(),
        "HF_HUB_CACHE": str(tmp_path / "empty-hf-cache"),
        "CDK_CONTEXT_JSON": json.dumps(context),
        "CDK_OUTDIR": str(outdir),
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
    }
    synth = subprocess.run(
        [str(PYTHON), "-c", SYNTH_WITHOUT_NETWORK], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    output = synth.stdout + synth.stderr
    assert synth.returncode == 0, output
    assert "NETWORK ATTEMPT" not in output
    template = outdir / "llmfleet-locked-prod-tiny.template.json"
    assert template.is_file(), sorted(p.name for p in outdir.iterdir())
    # The plan the container boots with was made from the lock's header bytes.
    assert [plan["memory"]["weights_bytes"] for plan in container_plans(template)] == [sum(MAIN_BYTES.values())]

    # Without the lock the same synthesis has no facts for this model (it is not bundled).
    fleet.with_name("fleet.lock.json").unlink()
    unlocked = subprocess.run(
        [str(PYTHON), "-c", SYNTH_WITHOUT_NETWORK], cwd=REPO, env=env, capture_output=True, text=True, timeout=300
    )
    assert unlocked.returncode != 0
    assert "llmfleet lock" in unlocked.stdout + unlocked.stderr
    assert "Traceback" not in unlocked.stdout + unlocked.stderr
