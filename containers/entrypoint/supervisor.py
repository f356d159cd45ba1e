"""Boot, supervise and drain one vLLM server: the container's whole life.

    plan + store from the environment -> sync weights and adapters (verified) -> restore the
    compile cache (verified) -> vLLM argv, checked by vLLM's parser -> vLLM as a child, its
    output passed through -> once healthy: boot phases printed and published, compile cache
    published, adapter agent + metrics -> on SIGTERM: drain flag for the middleware, SIGTERM to vLLM (it finishes in-flight work
    within --shutdown-timeout) -> exit with vLLM's code.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace

from llmfleet.model_store.ops.boot_log import boot_record, BootRecord, describe_boot, parse_boot_log
from llmfleet.model_store.contract.container import VLLM_API_KEY_ENV
from llmfleet.model_store.contract.kinds import kind
from llmfleet.model_store.errors import LlmfleetError
from llmfleet.model_store.store.registry import RegistryRefused, RegistryState

from llmfleet.containers.entrypoint.agent import AdapterAgent
from llmfleet.containers.entrypoint.compile_cache import CompileCache, cache_environment, prepare_compile_cache
from llmfleet.containers.entrypoint.metrics import boot_emf_records, start_publisher
from llmfleet.containers.entrypoint.process_group import GROUP_GRACE_SECONDS, end_process_group
from llmfleet.containers.entrypoint.routing import RouteTable, StateDir, lora_name
from llmfleet.containers.entrypoint.settings import EntrypointError, EntrypointSettings, settings_from_env
from llmfleet.containers.entrypoint.store_sync import StoreGateway
from llmfleet.containers.entrypoint.vllm_client import LocalVllm
from llmfleet.containers.entrypoint.vllm_output import VllmOutput
from llmfleet.containers.image_server.serve import serve_images
from llmfleet.containers.entrypoint.vllm_command import (
    adapter_refusal,
    import_vllm_parser,
    serve_argv,
    serve_command,
    serve_environment,
    validate_argv,
)

EXIT_VLLM_STOPPED = 1  # vLLM exited 0 without being asked to: still a failure for the orchestrator
PR_SET_PDEATHSIG = 1  # linux/prctl.h

log = logging.getLogger("llmfleet.entrypoint")


def exit_code_of(returncode: int, *, asked_to_stop: bool) -> int:
    """The container's exit code for vLLM's return code (negative: killed by that signal)."""
    if returncode < 0:
        return 128 - returncode
    if returncode == 0 and not asked_to_stop:
        return EXIT_VLLM_STOPPED
    return returncode


def _die_with_parent() -> None:
    """In the child: the kernel kills vLLM if the entrypoint dies, so no orphan holds the GPU."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Synced:
    """What boot put on local disk, and the adapters it had to leave out."""

    model_location: str
    adapters: dict[str, tuple[str, str]]  # name -> (version, local path)
    refused: dict[str, str]  # name -> version left out
    etag: str | None  # the registry state the adapters come from
    seconds: float = 0.0  # how long the sync took


def sync(gateway: StoreGateway) -> Synced:
    """The boot decision (`model_store.store.boot`) carried out: weights and adapters to local disk,
    verified. An adapter that fails is left out (logged; the base model and the other adapters
    still serve); a model that fails is fatal. A registry document that fails the checks is
    logged and nothing of it served: the base model and the adapters the plan pins start, and
    the agent takes the next document."""
    plan = gateway.plan
    started = time.monotonic()
    try:
        state = gateway.registry_state()
    except RegistryRefused as exc:
        log.error("%s; starting without its adapters", exc)
        state = replace(RegistryState.empty(plan.model_name, plan.stage), etag=exc.etag)
    boot = gateway.boot(state)
    synced = Synced(gateway.fetch_weights(boot.weights), {}, {}, state.etag)
    for name, (version, why) in sorted(boot.refused.items()):
        log.error("adapter %s version %s left out: %s", name, version, why)
        synced.refused[name] = version
    for fetch in boot.adapters:
        try:
            synced.adapters[fetch.name] = (fetch.version, str(gateway.download_adapter(fetch)))
        except EntrypointError as exc:
            log.error("adapter %s version %s left out: %s", fetch.name, fetch.version, exc)
            synced.refused[fetch.name] = fetch.version
            gateway.discard_adapter(fetch.name, fetch.version)
    synced.seconds = time.monotonic() - started
    return synced


def leave_out_refused(synced: Synced, gateway: StoreGateway) -> None:
    """Drop adapters vLLM would refuse: in --lora-modules one would stop the whole server."""
    for name, (version, path) in sorted(synced.adapters.items()):
        reason = adapter_refusal(path, gateway.plan)
        if reason:
            log.error("adapter %s version %s left out: vLLM would refuse it: %s", name, version, reason)
            del synced.adapters[name]
            synced.refused[name] = version
            gateway.discard_adapter(name, version)


def _stop_before_vllm(signum: int, _frame) -> None:
    """SIGTERM while syncing: nothing to drain, leave now. (As PID 1, which SageMaker's
    `docker run` makes us, the default would be to ignore it until SIGKILL.)"""
    log.info("signal %d before vLLM started: exiting", signum)
    raise SystemExit(128 + signum)


def run(settings: EntrypointSettings, env: Mapping[str, str]) -> int:
    plan = settings.plan
    if not kind(plan.kind).served_by_vllm:
        return serve_images(settings, env)  # a diffusers pipeline, not vLLM (containers/image_server)
    signal.signal(signal.SIGTERM, _stop_before_vllm)
    signal.signal(signal.SIGINT, _stop_before_vllm)
    importer = threading.Thread(target=import_vllm_parser, name="vllm-import", daemon=True)
    importer.start()  # seconds of imports, overlapped with the download
    gateway = StoreGateway.connect(settings)
    synced = sync(gateway)
    importer.join()
    cache = prepare_compile_cache(gateway, settings.model_root, synced.model_location) if settings.compile_cache else None
    leave_out_refused(synced, gateway)
    routes = RouteTable(plan.model_name, settings.server_id, {n: v for n, (v, _) in synced.adapters.items()})
    lora_paths = {lora_name(n, v): path for n, (v, path) in synced.adapters.items()}
    argv = serve_argv(
        plan, model=synced.model_location, host=settings.host, port=settings.port, lora_modules=lora_paths
    )
    validate_argv(argv)

    state = StateDir(tempfile.mkdtemp(prefix="llmfleet-state-"))
    try:
        return supervise(settings, env, state, argv, routes, gateway, synced, cache)
    finally:
        shutil.rmtree(state.path, ignore_errors=True)


def supervise(
    settings: EntrypointSettings,
    env: Mapping[str, str],
    state: StateDir,
    argv: list[str],
    routes: RouteTable,
    gateway: StoreGateway,
    synced: Synced,
    cache: CompileCache | None,
) -> int:
    """Run vLLM until it exits; its whole process group goes with it, whatever ends the run."""
    plan = settings.plan
    state.write_routes(routes)
    log.info("starting vLLM: %s", " ".join(argv))
    child_env = serve_environment(env, state_dir=str(state.path), plan=plan)
    if cache is not None:
        child_env.update(cache_environment(cache.directory))
    vllm_started = time.monotonic()
    child = subprocess.Popen(  # noqa: S603 - argv from the plan, validated by vLLM's parser
        serve_command(argv),
        env=child_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: EngineCore and workers are ended with it
        preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, takes no lock
    )
    output = VllmOutput(child.stdout)
    output.start()
    stop = threading.Event()
    try:

        def drain(signum: int, _frame) -> None:
            log.info("signal %d: draining (new requests get 503; in-flight ones finish)", signum)
            state.start_draining()
            stop.set()
            child.send_signal(signum)  # the API server alone: it shuts its engine down after the drain

        signal.signal(signal.SIGTERM, drain)
        signal.signal(signal.SIGINT, drain)

        vllm = LocalVllm(settings.local_address, settings.port, env.get(VLLM_API_KEY_ENV))
        if vllm.wait_healthy(lambda: child.poll() is None, stop.is_set):
            log.info("vLLM is ready on port %d (pid %d)", settings.port, child.pid)
            record_boot(settings, state, output.ready(), synced, cache, time.monotonic() - vllm_started)
            if cache is not None:  # in the background: the server is already serving
                threading.Thread(target=cache.publish, args=(gateway,), name="compile-cache", daemon=True).start()
            agent = None
            if plan.vllm.enable_lora:
                agent = AdapterAgent(
                    gateway,
                    vllm,
                    state,
                    routes,
                    etag=synced.etag,
                    refused=synced.refused,
                    interval=settings.poll_seconds,
                    unload_wait=plan.vllm.shutdown_timeout,
                    stop=stop,
                )
                agent.start()
            start_publisher(vllm.metrics_text, lambda: len(agent.serving()) if agent else 0, settings, stop)
        returncode = child.wait()
        output.join(timeout=GROUP_GRACE_SECONDS)  # the last lines vLLM printed
    finally:
        stop.set()
        if end_process_group(child.pid):
            log.warning("vLLM's process group %d outlived its API server; ended it", child.pid)
    code = exit_code_of(returncode, asked_to_stop=state.is_draining())
    (log.info if code == 0 else log.error)("vLLM exited with %d; container exits with %d", returncode, code)
    return code


def record_boot(
    settings: EntrypointSettings,
    state: StateDir,
    vllm_log: str,
    synced: Synced,
    cache: CompileCache | None,
    vllm_ready_seconds: float,
) -> BootRecord:
    """The boot phases: logged, kept for `/llmfleet/adapters` (and `status`), printed as EMF."""
    record = boot_record(
        parse_boot_log(vllm_log),
        sync_seconds=synced.seconds,
        cache_seconds=cache.seconds if cache else 0.0,
        vllm_ready_seconds=vllm_ready_seconds,
        compile_cache=cache.outcome if cache else "off",
        cache_version=cache.version if cache else None,
    )
    log.info("boot: %s", describe_boot(record))
    state.write_boot(record)
    plan = settings.plan
    for emf in boot_emf_records(
        record, model=plan.model_name, stage=plan.stage, target=settings.target, timestamp_ms=int(time.time() * 1000)
    ):
        print(json.dumps(emf, separators=(",", ":")), flush=True)
    return record


def main(env: Mapping[str, str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s llmfleet %(levelname)s %(message)s", stream=sys.stderr)
    for chatty in ("httpx2", "botocore", "boto3"):  # one line per scrape and poll otherwise
        logging.getLogger(chatty).setLevel(logging.WARNING)
    env = os.environ if env is None else env
    try:
        return run(settings_from_env(env), env)
    except LlmfleetError as exc:  # each class carries its exit code (model_store.contract.container)
        log.error("%s", exc)
        return exc.exit_code
