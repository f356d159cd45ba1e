"""The CI publisher's IAM statements cover exactly the calls the adapter commands make.

The commands run for real against moto's server while every API call of every client they
create is recorded (botocore's `provide-client-params` / `after-call` events on the default
session, so a second client or another service is seen too). Each call is mapped to the IAM
action and resource AWS authorizes it with and evaluated against
model_store.store.access.ci_publisher_statements with moto's IAM policy evaluator. The test fails
on a call the statements do not grant, on an operation with no known mapping (a new kind of
call must be mapped and granted on purpose), and on a grant no command uses.
"""

from __future__ import annotations

import json
import threading
import uuid
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from moto.iam.access_control import IAMPolicy, PermissionResult
from typer.testing import CliRunner

from llmfleet.model_store.store.access import ci_publisher_statements, POLICY_VERSION
from llmfleet.model_store.store.store import ModelStore, StoreLocation, TRANSFER_CONFIG
from llmfleet.scripts.cli import app
from llmfleet.scripts.cli_common import EXIT_REFUSED
from tests.integration.conftest import MODEL, REVISION, write_adapter, write_model

PREFIX = "team"
STAGE = "prod"  # the stage the CI role promotes on (the commands below promote to it)
REGION = "us-east-1"  # aws_env's AWS_DEFAULT_REGION
KEY_ARN = f"arn:aws:kms:{REGION}:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
# S3 calls KMS for the caller through the S3 endpoint of its region (kms:ViaService).
VIA_S3 = {"kms:ViaService": f"s3.{REGION}.amazonaws.com"}

# The IAM action S3 authorizes each operation with, and whether on the object or the bucket
# (Service Authorization Reference, "Actions defined by Amazon S3"; S3 API Reference,
# "Permissions" of each operation; 2026-11). HEAD is GetObject; every part of a multipart
# upload is PutObject.
S3_ACTIONS = {
    "GetObject": ("s3:GetObject", "object"),
    "HeadObject": ("s3:GetObject", "object"),
    "PutObject": ("s3:PutObject", "object"),
    "CreateMultipartUpload": ("s3:PutObject", "object"),
    "UploadPart": ("s3:PutObject", "object"),
    "CompleteMultipartUpload": ("s3:PutObject", "object"),
    "AbortMultipartUpload": ("s3:AbortMultipartUpload", "object"),
    "ListObjectsV2": ("s3:ListBucket", "bucket"),
}
# The store bucket is SSE-KMS: S3 uses the key on the caller's behalf and checks the caller's
# right to (S3 API Reference, PutObject, GetObject, CreateMultipartUpload, UploadPart, 2026-11).
KMS_ACTIONS = {
    "PutObject": ("kms:GenerateDataKey",),
    "CreateMultipartUpload": ("kms:GenerateDataKey",),
    "UploadPart": ("kms:Decrypt",),
    "GetObject": ("kms:Decrypt",),
}
# S3 answers a read of a missing key with 404 only when the caller may list the bucket (else 403).
READS = ("GetObject", "HeadObject")
MISSING = 404


@dataclass(frozen=True)
class Call:
    """One API call a client made, as sent, with the HTTP status it got."""

    service: str
    operation: str
    bucket: str | None
    key: str | None  # the object key, or the prefix of a listing
    status: int

    def __str__(self) -> str:
        return f"{self.service}:{self.operation} {self.bucket}/{self.key or ''} -> {self.status}"


@dataclass(frozen=True)
class Need:
    """An IAM action on a resource a call needs, with the call for the message."""

    action: str
    resource: str
    call: Call

    @property
    def conditions(self) -> dict[str, str]:
        return VIA_S3 if self.action.startswith("kms:") else {}


class CallRecorder:
    """Records every call of the clients made from an event emitter (thread-safe enough:
    list.append is atomic, and the transfer manager's threads share the client)."""

    _CONTEXT_KEY = "recorded_call"

    def __init__(self) -> None:
        self.calls: list[Call] = []

    def attach(self, events) -> None:
        events.register("provide-client-params", self._on_params)
        events.register("after-call", self._on_response)

    def _on_params(self, params: dict, model, context: dict, **_) -> None:
        context[self._CONTEXT_KEY] = (
            model.service_model.endpoint_prefix,
            model.name,
            params.get("Bucket"),
            params.get("Key", params.get("Prefix")),
        )

    def _on_response(self, http_response, context: dict, **_) -> None:
        self.calls.append(Call(*context[self._CONTEXT_KEY], status=http_response.status_code))

    def take(self) -> list[Call]:
        """The calls recorded since the last take."""
        taken, self.calls = self.calls, []
        return taken


def needs(call: Call) -> list[Need]:
    """The IAM permissions AWS checks for `call`; ValueError when the operation is not mapped."""
    if call.service != "s3" or call.operation not in S3_ACTIONS:
        raise ValueError(f"{call}: no IAM mapping for {call.service}:{call.operation}; map it and grant it on purpose")
    action, on = S3_ACTIONS[call.operation]
    bucket_arn = f"arn:aws:s3:::{call.bucket}"
    found = [Need(action, bucket_arn if on == "bucket" else f"{bucket_arn}/{call.key}", call)]
    if call.status < 300:  # S3 reaches the key only for a call it carries out
        found += [Need(kms, KEY_ARN, call) for kms in KMS_ACTIONS.get(call.operation, ())]
    if call.operation in READS and call.status == MISSING:
        found.append(Need("s3:ListBucket", bucket_arn, call))
    return found


def document(statements: list[dict]) -> IAMPolicy:
    return IAMPolicy(json.dumps({"Version": POLICY_VERSION, "Statement": statements}))


def permits(policy: IAMPolicy, need: Need) -> bool:
    result = policy.is_action_permitted(need.action, need.resource, incoming_condition_values=need.conditions)
    return result == PermissionResult.PERMITTED


def refusals(calls: list[Call], statements: list[dict]) -> list[str]:
    """Every recorded call the statements do not cover (or that has no mapping), as messages."""
    policy = document(statements)
    problems = []
    for call in calls:
        try:
            problems += [f"{n.action} on {n.resource} (for {call})" for n in needs(call) if not permits(policy, n)]
        except ValueError as exc:
            problems.append(str(exc))
    return problems


def unused_grants(calls: list[Call], statements: list[dict]) -> list[str]:
    """Every (statement, action, resource) of the statements no recorded call needed."""
    used = [n for call in calls for n in needs(call)]
    unused = []
    for statement in statements:
        for action in statement["Action"]:
            for resource in statement["Resource"]:
                single = document([statement | {"Action": [action], "Resource": [resource]}])
                if not any(permits(single, n) for n in used):
                    unused.append(f"{statement['Sid']}: {action} on {resource}")
    return unused


@dataclass
class Fleet:
    """A store under a prefix, an unrecorded admin view of it, and the recorded CLI."""

    location: StoreLocation
    admin: ModelStore
    recorder: CallRecorder
    session: boto3.Session
    tmp: Path

    @property
    def statements(self) -> list[dict]:
        """The CI role of stage STAGE of a fleet serving MODEL."""
        return ci_publisher_statements(self.location.bucket, PREFIX, KEY_ARN, models=[MODEL], stage=STAGE)

    def run(self, *args: object):
        """`llmfleet ARGS` as a CI job runs it (LLMFLEET_STORE set); the click Result."""
        return CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)


@pytest.fixture
def fleet(aws_env: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Fleet:
    # The admin (who creates the bucket and uploads base models) has its own session: not recorded.
    admin_client = boto3.session.Session().client("s3", endpoint_url=aws_env)
    location = StoreLocation(bucket=f"llmfleet-store-{uuid.uuid4().hex[:10]}", prefix=PREFIX)
    admin_client.create_bucket(Bucket=location.bucket)
    # Every client the commands create (boto3.client(...)) comes from the default session.
    recorded_session = boto3.session.Session()
    recorder = CallRecorder()
    recorder.attach(recorded_session.events)
    monkeypatch.setattr(boto3, "DEFAULT_SESSION", recorded_session)
    monkeypatch.setenv("LLMFLEET_STORE", location.uri)
    monkeypatch.setenv("GITHUB_ACTOR", "ci")
    monkeypatch.chdir(tmp_path)  # no ./fleet.yaml: the store and stage come from the flags and LLMFLEET_STORE
    return Fleet(location, ModelStore(location, admin_client), recorder, recorded_session, tmp_path)


def fail_first_upload_part(session: boto3.Session) -> threading.Event:
    """Make the first UploadPart answer 500 (a transfer that breaks midway); returns 'it did'."""
    failed = threading.Event()

    def answer(**_):
        if failed.is_set():
            return None
        failed.set()
        return AWSResponse("http://injected", 500, {}, None), {
            "Error": {"Code": "InternalError", "Message": "injected part failure"}
        }

    session.events.register("before-call.s3.UploadPart", answer)
    return failed


def operations(calls: list[Call]) -> set[tuple[str, int]]:
    return {(c.operation, c.status) for c in calls}


def test_the_adapter_commands_call_only_what_the_ci_role_is_granted(fleet: Fleet) -> None:
    fleet.admin.upload_model(write_model(fleet.tmp / "model"), MODEL, REVISION, uploader="admin")
    adapter = write_adapter(fleet.tmp / "a1", seed=1)
    # A tokenizer file above the multipart threshold: the upload goes in parts.
    (adapter / "tokenizer.json").write_bytes(b" " * (TRANSFER_CONFIG.multipart_threshold + 1024))
    calls: dict[str, list[Call]] = {}

    broken = fail_first_upload_part(fleet.session)
    interrupted = fleet.run("adapter", "publish", adapter, "-m", MODEL, "-n", "medical", "--version", "v1")
    assert broken.is_set() and interrupted.exit_code == EXIT_REFUSED, interrupted.stderr
    calls["publish interrupted"] = fleet.recorder.take()
    assert {("AbortMultipartUpload", 204), ("HeadObject", MISSING)} <= operations(calls["publish interrupted"])

    resumed = fleet.run("adapter", "publish", adapter, "-m", MODEL, "-n", "medical", "--version", "v1")
    assert resumed.exit_code == 0 and resumed.stdout.strip() == "v1", resumed.stderr
    calls["publish"] = fleet.recorder.take()
    assert {("CreateMultipartUpload", 200), ("UploadPart", 200), ("CompleteMultipartUpload", 200)} <= operations(
        calls["publish"]
    )
    assert any(c.operation == "PutObject" and c.key.endswith("/v1/_manifest.json") for c in calls["publish"])

    again = fleet.run("adapter", "publish", adapter, "-m", MODEL, "-n", "medical", "--version", "v1")
    assert again.exit_code == EXIT_REFUSED and "versions are immutable" in again.stderr
    calls["publish again"] = fleet.recorder.take()
    assert not {c.operation for c in calls["publish again"]} & {"PutObject", "CreateMultipartUpload"}

    second = fleet.run("adapter", "publish", write_adapter(fleet.tmp / "a2", seed=2), "-m", MODEL, "-n", "medical")
    assert second.exit_code == 0, second.stderr
    v2 = second.stdout.strip()
    calls["publish derived version"] = fleet.recorder.take()

    missing = fleet.run("adapter", "promote", "medical@v9", "-m", MODEL, "-s", STAGE)
    assert missing.exit_code == EXIT_REFUSED and "is not published" in missing.stderr
    calls["promote missing"] = fleet.recorder.take()
    assert {("HeadObject", MISSING), ("ListObjectsV2", 200), ("GetObject", 200)} <= operations(calls["promote missing"])

    assert fleet.run("adapter", "promote", "medical@v1", "-m", MODEL, "-s", STAGE).exit_code == 0
    calls["first promote"] = fleet.recorder.take()
    assert {("GetObject", MISSING), ("PutObject", 200)} <= operations(calls["first promote"])
    for args in (
        ("promote", f"medical@{v2}", "-s", STAGE, "--fraction", "0.5"),
        ("rollback", "medical", "-s", STAGE),
        ("list", "-s", STAGE),
        ("history", "medical", "-s", STAGE),
        ("versions", "medical"),
        ("retire", "medical", "-s", STAGE),
    ):
        result = fleet.run("adapter", *args, "-m", MODEL)
        assert result.exit_code == 0, (args, result.stderr)

    everything = [call for flow in calls.values() for call in flow] + fleet.recorder.take()
    assert {c.operation for c in everything} == set(S3_ACTIONS)
    assert all(c.key is None or c.key.startswith(f"{PREFIX}/") for c in everything)
    assert refusals(everything, fleet.statements) == []
    assert unused_grants(everything, fleet.statements) == []


def test_model_weights_can_be_neither_uploaded_nor_read(fleet: Fleet) -> None:
    model = write_model(fleet.tmp / "model", weights_bytes=4096)
    assert fleet.run("model", "upload", model, "-m", MODEL, "--revision", REVISION).exit_code == 0
    ModelStore.from_uri(fleet.location.uri).download_model(MODEL, REVISION, fleet.tmp / "copy")
    calls = fleet.recorder.take()
    weights = f"{PREFIX}/models/{MODEL}/{REVISION}/model.safetensors"
    put, get = (next(c for c in calls if c.key == weights and c.operation == op) for op in ("PutObject", "GetObject"))
    weights_arn = f"arn:aws:s3:::{fleet.location.bucket}/{weights}"
    assert refusals([put, get], fleet.statements) == [
        f"s3:PutObject on {weights_arn} (for {put})",
        f"s3:GetObject on {weights_arn} (for {get})",
    ]
    # No file of a base model may be written, config.json included.
    model_writes = [c for c in calls if c.operation == "PutObject"]
    assert len(model_writes) == 4  # config, tokenizer config, weights, manifest
    assert len(refusals(model_writes, fleet.statements)) == len(model_writes)


def test_an_unmapped_or_ungranted_call_is_reported() -> None:
    bucket = "llmfleet-store"
    delete = Call("s3", "DeleteObject", bucket, f"{PREFIX}/adapters/{MODEL}/medical/v1/_manifest.json", 204)
    outside = Call("s3", "PutObject", bucket, f"other/registry/{MODEL}/prod.json", 200)
    identity = Call("sts", "GetCallerIdentity", None, None, 200)
    problems = refusals([delete, outside, identity], ci_publisher_statements(bucket, PREFIX, KEY_ARN, models=[MODEL], stage=STAGE))
    assert len(problems) == 3
    assert "no IAM mapping for s3:DeleteObject" in problems[0] and "no IAM mapping for sts:" in problems[2]
    assert problems[1].startswith(f"s3:PutObject on arn:aws:s3:::{bucket}/other/registry/")
