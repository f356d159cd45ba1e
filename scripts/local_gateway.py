"""The gateway on one machine: a real Redis and Postgres (Debian's packages), the keys secret in
the emulated Secrets Manager, and the gateway container's own entrypoint in `.venv-gateway`.

Used by `llmfleet local up` for a fleet with `gateway.enabled`, by the e2e tests and by the
gateway benchmark. Every server listens on 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from llmfleet.model_store.gateway.consumers import (
    ADAPTER_SEPARATOR,
    ALL_MODELS,
    Consumer,
    ConsumersFile,
    load_consumers,
)
from llmfleet.model_store.gateway.config import gateway_config, GatewayConfig
from llmfleet.model_store.gateway.keys import GatewayKeys
from llmfleet.model_store.contract.plan import AnyPlan
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.model_store.gateway.contract import (
    CONFIG_ENV,
    GATEWAY_PYTHON_ENV,
    DB_HOST_ENV,
    DB_NAME_ENV,
    DB_PORT_ENV,
    DB_USER_ENV,
    DEFAULT_DB_NAME,
    GATEWAY_HEALTH_PATH,
    GATEWAY_HOST_ENV,
    gateway_keys_secret_name,
    GATEWAY_PORT,
    GATEWAY_PORT_ENV,
    KEYS_SECRET_ENV,
    REDIS_URL_ENV,
    upstream_key_env,
)
from llmfleet.scripts.local_fleet import (
    HOST,
    LOCAL_CREDENTIALS,
    LocalFleetError,
    ProcessRecord,
    StateDir,
    choose_port,
    http_ok,
    local_client,
    port_is_open,
    start_detached,
    stop_process,
    wait_until,
)
from llmfleet.model_store.contract.targets import ECS

DB_USER = "llmfleet"
# LiteLLM's proxy imports in 11-17 s on these 2 shared cores (measured 2026-12); a loaded machine doubles it.
GATEWAY_READY_SECONDS = 120
SERVICE_READY_SECONDS = 30
# Debian installs Postgres's server programs outside PATH, one directory per major version.
POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"


def gateway_python() -> Path:
    """`.venv-gateway`'s interpreter (made by scripts/bootstrap.sh), or $LLMFLEET_GATEWAY_PYTHON."""
    given = os.environ.get(GATEWAY_PYTHON_ENV)
    repo = Path(__file__).resolve().parents[1]
    python = Path(given) if given else repo / ".venv-gateway" / "bin" / "python"
    if not python.exists():
        raise LocalFleetError(
            f"the gateway's Python {python} is missing: run scripts/bootstrap.sh (it makes .venv-gateway from "
            f"requirements/gateway-lock.txt) or set {GATEWAY_PYTHON_ENV}"
        )
    return python


def postgres_bin() -> Path | None:
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent  # a link on PATH to Debian's directory, which has psql too
    found = sorted(glob.glob(POSTGRES_BIN_GLOB), key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0)
    return Path(found[-1]) if found else None


def missing_services() -> list[str]:
    """What the local gateway needs from the machine and does not find, with the package to install."""
    missing = []
    if shutil.which("redis-server") is None:
        missing.append("redis-server (Debian: apt-get install redis-server)")
    if postgres_bin() is None:
        missing.append("Postgres's initdb and postgres (Debian: apt-get install postgresql)")
    return missing


def _as_postgres_user(argv: list[str]) -> list[str]:
    """initdb and postgres refuse to run as root: as root, run them as Debian's `postgres` user."""
    if os.geteuid() != 0:
        return argv
    return ["runuser", "-u", "postgres", "--", *argv]


def _ready_or_stopped(record: ProcessRecord, check, what: str, timeout: float = SERVICE_READY_SECONDS) -> ProcessRecord:
    """`record` once `check` passes; stopped (and the error raised) when it never does."""
    try:
        wait_until(check, process=record, timeout=timeout, what=what)
    except BaseException:
        stop_process(record)
        raise
    return record


def start_redis(directory: Path, port: int, log: Path) -> ProcessRecord:
    directory.mkdir(parents=True, exist_ok=True)
    argv = ["redis-server", "--bind", HOST, "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(directory), "--protected-mode", "yes"]
    record = start_detached("redis", argv, dict(os.environ), log, port)
    return _ready_or_stopped(record, lambda: port_is_open(port), "Redis accepts connections")


def _cluster_home(directory: Path) -> Path:
    """Where the cluster lives: `directory`, or as root a directory Debian's `postgres` user can reach
    (a test's or a checkout's may sit under a private one), linked from `directory/cluster`."""
    directory.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return directory
    link = directory / "cluster"
    if link.is_symlink() and link.resolve().is_dir():
        return link.resolve()
    home = Path(tempfile.mkdtemp(prefix="llmfleet-postgres-", dir="/tmp"))  # noqa: S108 - reachable by postgres
    shutil.chown(home, "postgres")
    link.unlink(missing_ok=True)
    link.symlink_to(home)
    return home


def start_postgres(directory: Path, port: int, log: Path) -> ProcessRecord:
    """A cluster in `directory` (trust auth on loopback: this machine's user only), database llmfleet."""
    binaries = postgres_bin()
    if binaries is None:
        raise LocalFleetError("Postgres is not installed: apt-get install postgresql (Debian)")
    home = _cluster_home(directory)
    data, sockets = home / "data", home / "run"
    if not (data / "PG_VERSION").exists():
        made = subprocess.run(
            _as_postgres_user([str(binaries / "initdb"), "-D", str(data), "-U", DB_USER, "--auth=trust", "-E", "UTF8"]),
            capture_output=True, text=True,
        )
        if made.returncode != 0:
            raise LocalFleetError(f"initdb failed: {made.stderr.strip()[-500:]}")
        subprocess.run(_as_postgres_user(["mkdir", "-p", str(sockets)]), check=True)
    argv = _as_postgres_user(
        [str(binaries / "postgres"), "-D", str(data), "-p", str(port), "-k", str(sockets), "-c", f"listen_addresses={HOST}"]
    )
    record = start_detached("postgres", argv, dict(os.environ), log, port)
    create = [str(binaries / "psql"), "-h", HOST, "-p", str(port), "-U", DB_USER, "-d", "postgres", "-q", "-c",
              f"SELECT 1 FROM pg_database WHERE datname = '{DEFAULT_DB_NAME}'"]

    def database_ready() -> bool:
        probe = subprocess.run(create + ["-t"], capture_output=True, text=True)
        if probe.returncode != 0:
            return False  # still starting
        if not probe.stdout.strip():
            subprocess.run(create[:-1] + [f"CREATE DATABASE {DEFAULT_DB_NAME}"], capture_output=True, check=True)
        return True

    return _ready_or_stopped(record, database_ready, f"Postgres serves database {DEFAULT_DB_NAME}")


def ensure_keys_secret(endpoint: str, region: str, fleet: str, stage: str) -> str:
    """The fleet stage's keys secret in the emulated Secrets Manager (empty: no consumer has a key yet)."""
    client = local_client("secretsmanager", endpoint, region)
    name = gateway_keys_secret_name(fleet, stage)
    try:
        client.create_secret(Name=name, SecretString="{}")
    except client.exceptions.ResourceExistsException:
        pass
    return name


def gateway_env(
    config: GatewayConfig,
    *,
    aws_endpoint: str,
    region: str,
    keys_secret: str,
    redis_port: int,
    postgres_port: int,
    port: int,
    upstream_keys: dict[str, str],
) -> dict[str, str]:
    """The gateway task's environment, pointed at the local services (as the stack's task definition is at AWS's)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("LITELLM", "DATABASE_URL"))}
    env.pop("AWS_PROFILE", None)
    env.update(
        {
            CONFIG_ENV: config.to_json(),
            KEYS_SECRET_ENV: keys_secret,
            REDIS_URL_ENV: f"redis://{HOST}:{redis_port}/0",
            DB_HOST_ENV: HOST,
            DB_PORT_ENV: str(postgres_port),
            DB_USER_ENV: DB_USER,
            DB_NAME_ENV: DEFAULT_DB_NAME,
            GATEWAY_HOST_ENV: HOST,
            GATEWAY_PORT_ENV: str(port),
            "AWS_ENDPOINT_URL": aws_endpoint,
            "AWS_ACCESS_KEY_ID": LOCAL_CREDENTIALS["aws_access_key_id"],
            "AWS_SECRET_ACCESS_KEY": LOCAL_CREDENTIALS["aws_secret_access_key"],
            "AWS_DEFAULT_REGION": region,
            **upstream_keys,
        }
    )
    return env


def start_gateway(env: dict[str, str], port: int, log: Path) -> ProcessRecord:
    argv = [str(gateway_python()), "-m", "llmfleet.containers.gateway"]
    record = start_detached("gateway", argv, env, log, port)
    return _ready_or_stopped(
        record, lambda: http_ok(f"http://{HOST}:{port}{GATEWAY_HEALTH_PATH}"), f"the gateway answers {GATEWAY_HEALTH_PATH}",
        GATEWAY_READY_SECONDS,
    )


@dataclass
class RunningGateway:
    url: str
    database_url: str
    keys: GatewayKeys
    processes: list[ProcessRecord]


@contextlib.contextmanager
def running_gateway(
    config: GatewayConfig, work: Path, aws_endpoint: str, region: str, upstream_keys: dict[str, str]
) -> Iterator[RunningGateway]:
    """Redis, Postgres and the gateway for `config` on free ports under `work` (tests, benchmarks);
    all stopped, and the cluster removed, on the way out. Create keys before the first request:
    the gateway reads them then, and once a minute after."""
    processes: list[ProcessRecord] = []
    try:
        redis_port, postgres_port, port = (free_port() for _ in range(3))
        processes.append(start_redis(work / "redis", redis_port, work / "redis.log"))
        processes.append(start_postgres(work / "postgres", postgres_port, work / "postgres.log"))
        secret = ensure_keys_secret(aws_endpoint, region, config.fleet, config.stage)
        env = gateway_env(
            config, aws_endpoint=aws_endpoint, region=region, keys_secret=secret, redis_port=redis_port,
            postgres_port=postgres_port, port=port, upstream_keys=upstream_keys,
        )
        keys = GatewayKeys(local_client("secretsmanager", aws_endpoint, region), secret, ConsumersFile(consumers=config.consumers))
        processes.append(start_gateway(env, port, work / "gateway.log"))
        yield RunningGateway(f"http://{HOST}:{port}", f"postgresql://{DB_USER}@{HOST}:{postgres_port}/{DEFAULT_DB_NAME}",
                             keys, processes)
    finally:
        for record in reversed(processes):
            stop_process(record)
        cluster = work / "postgres" / "cluster"
        if cluster.is_symlink():
            shutil.rmtree(cluster.resolve(), ignore_errors=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- the local fleet's gateway -------------------------------------------------------------

REDIS_PORT = 6379
POSTGRES_PORT = 5432
# Without a consumers file the local gateway has one consumer that may call everything.
LOCAL_CONSUMER = Consumer(name="local", models=[ALL_MODELS])


def local_consumers(fleet: FleetManifest, fleet_path: Path) -> ConsumersFile:
    consumers = load_consumers(fleet, fleet_path)
    return consumers if consumers.consumers else ConsumersFile(consumers=[LOCAL_CONSUMER])


def write_keys_file(path: Path, issued: dict[str, str], consumers: ConsumersFile) -> None:
    """{consumer: {key, models}}, readable by this user only (like the server's API key)."""
    path.unlink(missing_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump({c.name: {"key": issued[c.name], "models": c.models} for c in consumers.consumers}, handle, indent=2)


def key_for(keys_file: Path, target: str) -> str:
    """The key of the first local consumer allowed to call `target` (MODEL or MODEL:ADAPTER)."""
    issued = json.loads(keys_file.read_text())
    model, _, adapter = target.partition(ADAPTER_SEPARATOR)
    wanted = {ALL_MODELS, target} | ({f"{model}{ADAPTER_SEPARATOR}*"} if adapter else set())
    for consumer, entry in issued.items():
        if wanted & set(entry["models"]):
            return entry["key"]
    raise LocalFleetError(f"no consumer of the local gateway may call {target!r}; consumers: {sorted(issued)}")


def up_gateway(
    fleet: FleetManifest,
    fleet_path: Path,
    plan: AnyPlan,
    *,
    server_url: str,
    server_api_key: str,
    aws_endpoint: str,
    state_dir: StateDir,
    on_step: Callable[[str], None],
    started: Callable[[ProcessRecord], None],
) -> tuple[str, str]:
    """Redis, Postgres and the gateway in front of the local server; a key for each consumer in
    the state directory's keys file. Returns the gateway's URL and the usage database's URL."""
    missing = missing_services()
    if missing:
        raise LocalFleetError(f"gateway.enabled: the local gateway needs {', '.join(missing)}")
    consumers = local_consumers(fleet, fleet_path)
    # The one model served here stands in as an ECS model behind its load balancer.
    config = gateway_config(
        fleet, [plan.model_copy(update={"targets": [ECS.name]})], consumers, ecs_base_urls={plan.model_name: f"{server_url}/v1"}
    )
    root, logs = state_dir.root, state_dir.logs
    redis_port = choose_port(REDIS_PORT)
    on_step(f"starting Redis on port {redis_port} (rate limits and budgets)")
    started(start_redis(root / "redis", redis_port, logs / "redis.log"))
    postgres_port = choose_port(POSTGRES_PORT)
    on_step(f"starting Postgres on port {postgres_port} (usage rows)")
    started(start_postgres(root / "postgres", postgres_port, logs / "postgres.log"))
    secret = ensure_keys_secret(aws_endpoint, plan.region, fleet.name, plan.stage)
    keys = GatewayKeys(local_client("secretsmanager", aws_endpoint, plan.region), secret, consumers)
    issued = {c.name: keys.create(c.name) for c in consumers.consumers}
    write_keys_file(state_dir.gateway_keys_file, issued, consumers)
    on_step(f"created keys for consumers {sorted(issued)} in the emulated Secrets Manager ({secret})")
    port = choose_port(GATEWAY_PORT)
    env = gateway_env(
        config, aws_endpoint=aws_endpoint, region=plan.region, keys_secret=secret, redis_port=redis_port,
        postgres_port=postgres_port, port=port, upstream_keys={upstream_key_env(plan.model_name): server_api_key},
    )
    on_step(f"starting the gateway (LiteLLM's proxy, python -m llmfleet.containers.gateway) on port {port}")
    started(start_gateway(env, port, logs / "gateway.log"))
    return f"http://{HOST}:{port}", f"postgresql://{DB_USER}@{HOST}:{postgres_port}/{DEFAULT_DB_NAME}"
