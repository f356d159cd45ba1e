"""The boot executor: one error for a store that stays down (botocore retries, nothing else), which
adapter versions a server wants, and where the weights come from (SageMaker's verified copy or a download)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from llmfleet.model_store.contract.container import EXIT_STORE, SAGEMAKER_MODEL_DIR
from llmfleet.containers.entrypoint.settings import EntrypointError, settings_from_env
from llmfleet.containers.entrypoint.store_sync import STORE_ATTEMPTS, StoreGateway
from llmfleet.model_store.store.boot import desired_adapters
from llmfleet.model_store.planning.fleet import load_and_plan
from llmfleet.model_store.contract.manifest import AdapterRef
from llmfleet.model_store.store.registry import RegistryRefused
from llmfleet.model_store.store.store import (
    FileEntry,
    MANIFEST_NAME,
    ModelStore,
    StoreError,
    StoreLocation,
    StoreRefused,
    verify_model_directory,
    VersionManifest,
)

REPO = Path(__file__).resolve().parents[2]


class Failing:
    """A store call that fails once with `error`."""

    def __init__(self, error: Exception):
        self.error, self.calls = error, 0

    def __call__(self) -> str:
        self.calls += 1
        raise self.error


def bare_gateway(tmp_path: Path) -> StoreGateway:
    plan = load_and_plan(REPO / "fleet.yaml")[1][0]
    return StoreGateway(ModelStore(StoreLocation("bucket", "fleet"), None), plan, model_root=str(tmp_path), server_id="s")


def test_a_store_that_stays_down_ends_in_one_clear_error_with_the_store_exit_code(tmp_path: Path):
    call = Failing(EndpointConnectionError(endpoint_url="http://s3"))

    with pytest.raises(EntrypointError, match=r"download of model 'm' \(store s3://bucket/fleet\) failed: Could not connect") as failed:
        bare_gateway(tmp_path)._call(call, "download of model 'm'")
    assert call.calls == 1  # botocore retried inside the call; no second layer here
    assert failed.value.exit_code == EXIT_STORE


def test_a_refused_document_is_one_refusal_and_a_registry_refusal_goes_up_as_is(tmp_path: Path):
    gateway = bare_gateway(tmp_path)
    with pytest.raises(EntrypointError, match="download refused: .*expected 'v1'"):
        gateway._call(Failing(StoreRefused("s3://b/k/_manifest.json: describes version 'v2', expected 'v1'")), "download")
    with pytest.raises(RegistryRefused) as refused:  # the caller keeps serving and polls past it
        gateway._call(Failing(RegistryRefused("s3://b/registry/m/prod.json: not a valid registry document", '"e1"')), "poll")
    assert refused.value.etag == '"e1"'


def test_programming_errors_are_not_turned_into_store_errors(tmp_path: Path):
    with pytest.raises(KeyError):
        bare_gateway(tmp_path)._call(Failing(KeyError("bug")), "x")


def test_the_container_retries_through_botocore_alone(tmp_path: Path):
    plan = load_and_plan(REPO / "fleet.yaml")[1][0]
    settings = settings_from_env({"LLMFLEET_PLAN": plan.to_json(), "LLMFLEET_STORE": "s3://bucket/fleet", "AWS_DEFAULT_REGION": "us-east-1"})

    retries = StoreGateway.connect(settings).store.client.meta.config.retries

    assert retries == {"mode": "standard", "total_max_attempts": STORE_ATTEMPTS}


class PlanStub:
    def __init__(self, adapters: list[AdapterRef]):
        self.adapters = adapters


def test_registry_decides_unless_the_manifest_pins_a_version():
    plan = PlanStub([AdapterRef(name="medical", version="v1"), AdapterRef(name="legal")])

    assert desired_adapters(plan, {"medical": "v3", "legal": "v2", "finance": "v1"}) == {
        "medical": "v1",
        "legal": "v2",
        "finance": "v1",
    }


def test_a_pinned_adapter_is_served_before_any_promotion():
    assert desired_adapters(PlanStub([AdapterRef(name="medical", version="v1")]), {}) == {"medical": "v1"}


# --- the model copy SageMaker makes (ModelDataSource into /opt/ml/model) ------------------


def write_version(directory: Path, *, model: str = "m", revision: str = "main") -> Path:
    """A model revision directory with its `_manifest.json`, as the store lays it out."""
    files = {"config.json": b'{"model_type": "qwen3"}', "weights/model.safetensors": bytes(range(256)) * 4}
    entries = []
    for relpath, data in files.items():
        (directory / relpath).parent.mkdir(parents=True, exist_ok=True)
        (directory / relpath).write_bytes(data)
        entries.append(FileEntry(relpath, f"models/{model}/{revision}/{relpath}", len(data), hashlib.sha256(data).hexdigest()))
    manifest = VersionManifest("model", model, revision, tuple(entries), "ci", "2026-11-25T00:00:00Z", "test")
    (directory / MANIFEST_NAME).write_text(manifest.to_json())
    return directory


def test_a_faithful_copy_verifies(tmp_path: Path):
    manifest = verify_model_directory(write_version(tmp_path), model="m", revision="main")

    assert [entry.path for entry in manifest.files] == ["config.json", "weights/model.safetensors"]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "weights/model.safetensors").write_bytes(bytes(1024)), "checksum mismatch for .*model.safetensors"),
        (lambda d: (d / "weights/model.safetensors").write_bytes(b"short"), "got 5 bytes"),
        (lambda d: (d / "config.json").unlink(), "config.json: missing"),
        (lambda d: (d / MANIFEST_NAME).write_text("{}"), "not a valid _manifest.json"),
    ],
)
def test_a_damaged_copy_is_refused_naming_the_file(tmp_path: Path, damage, message: str):
    damage(write_version(tmp_path))

    with pytest.raises(StoreError, match=message):
        verify_model_directory(tmp_path, model="m", revision="main")


def test_a_copy_of_another_revision_is_refused(tmp_path: Path):
    with pytest.raises(StoreError, match="describes model 'm' revision 'old', expected model 'm' revision 'main'"):
        verify_model_directory(write_version(tmp_path, revision="old"), model="m", revision="main")


class RecordingStore:
    """The store as the gateway sees it; records downloads instead of making them."""

    location = StoreLocation("bucket", "fleet")

    def __init__(self) -> None:
        self.downloads: list[Path] = []

    def download_model(self, model: str, revision: str, dest: Path) -> Path:
        self.downloads.append(dest)
        return dest


def gateway_for(tmp_path: Path, preloaded: Path | None) -> tuple[StoreGateway, RecordingStore]:
    plan = load_and_plan(REPO / "fleet.yaml")[1][0]
    assert not plan.streams_weights
    plan = plan.model_copy(update={"model_name": "m", "revision": "main"})
    store = RecordingStore()
    gateway = StoreGateway(store, plan, model_root=str(tmp_path / "cache"), server_id="s", preloaded_model_dir=preloaded)
    return gateway, store


def test_sagemaker_copy_is_verified_and_served_in_place(tmp_path: Path):
    copy = write_version(tmp_path / "opt-ml-model")
    gateway, store = gateway_for(tmp_path, copy)

    assert gateway.model_location() == str(copy)
    assert store.downloads == []


def test_without_a_copy_the_model_is_downloaded(tmp_path: Path):
    gateway, store = gateway_for(tmp_path, tmp_path / "empty")  # SageMaker target, no ModelDataSource

    location = gateway.model_location()

    assert store.downloads == [Path(location)] and str(tmp_path / "cache") in location


def test_a_damaged_sagemaker_copy_stops_the_container(tmp_path: Path):
    copy = write_version(tmp_path / "opt-ml-model")
    (copy / "config.json").write_text("{}")
    gateway, store = gateway_for(tmp_path, copy)

    with pytest.raises(EntrypointError, match="model copy in .*opt-ml-model failed verification: checksum mismatch"):
        gateway.model_location()
    assert store.downloads == []


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"LLMFLEET_TARGET": "sagemaker"}, SAGEMAKER_MODEL_DIR),
        ({"LLMFLEET_TARGET": "sagemaker", "LLMFLEET_SAGEMAKER_MODEL_DIR": "/srv/model"}, "/srv/model"),
        ({"LLMFLEET_TARGET": "ecs", "LLMFLEET_SAGEMAKER_MODEL_DIR": "/srv/model"}, None),
    ],
)
def test_only_sagemaker_looks_for_a_model_copy(env: dict, expected: str | None):
    plan = load_and_plan(REPO / "fleet.yaml")[1][0]
    settings = settings_from_env({"LLMFLEET_PLAN": plan.to_json(), "LLMFLEET_STORE": "s3://bucket/fleet", **env})

    assert settings.preloaded_model_dir == expected
