"""`llmfleet verify`: start vLLM with a plan's exact argv on this machine's GPU (random weights
from config.json), read what it allocates, load it at the plan's concurrency, and compare.

Thin: model_store.ops.verify decides the argv, the emulation and the verdict; this module runs
processes and sends requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import httpx2
import typer
from rich.markup import escape
from rich.table import Table

from llmfleet.containers.entrypoint.compile_cache import installed_vllm_version
from llmfleet.containers.entrypoint.process_group import end_process_group
from llmfleet.containers.entrypoint.vllm_command import serve_argv, serve_command, serve_environment, validate_argv
from llmfleet.model_store.ops import load_verify, verify
from llmfleet.model_store.ops.boot_log import parse_boot_log
from llmfleet.model_store.planning.fleet import load_fleet_and_lock, plan_with_lock
from llmfleet.model_store.facts.lock import FactsRecord
from llmfleet.model_store.contract.manifest import FleetManifest
from llmfleet.model_store.contract.plan import ServingPlan
from llmfleet.scripts.cli_common import (
    EXIT_BAD_INPUT, EXIT_REFUSED, FleetOpt, JsonOpt, console, errors, fail, fleet_file, fleet_models, planning, require_vllm,
)  # fmt: skip
from llmfleet.scripts.local_fleet import log_tail
from llmfleet.scripts.verify_load import run_bench, word_tokenizer, write_dataset

HEALTH_POLL_SECONDS = 2.0
LOAD_HELP = (
    "Check a load plan instead: an open-loop load (vllm bench serve) at each model's planned per-server rate and "
    "at the most it is predicted to take within the SLO, with the load's lengths, against the prediction "
    "(needs a load: section; --compare adds vLLM's serve defaults)."
)
SWEEP_HELP = (
    "As --load, over the plan's flags, vLLM's defaults and a grid of max_num_seqs x max_num_batched_tokens; "
    "ranks them by goodput."
)
POINT_HELP = "--load: only this load point (planned, max-within-slo; repeatable)."
# vllm bench serve's own time beyond the arrivals: its start, the warm-up requests, the last answers.
BENCH_MARGIN_SECONDS = 120.0


def local_gpu() -> verify.LocalGpu:
    """This machine's GPUs as nvidia-smi reports them (the first GPU's name and memory)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
            capture_output=True, text=True, check=True, timeout=30,
        ).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        raise fail("verify needs an NVIDIA GPU (nvidia-smi) and the CUDA build of vLLM on this machine", EXIT_REFUSED) from None
    rows = [line.rsplit(",", 1) for line in out.strip().splitlines() if line.strip()]
    try:
        name, mib = rows[0][0].strip(), int(rows[0][1])
    except (IndexError, ValueError):
        raise fail(f"nvidia-smi reported no usable GPU memory: {out.strip()[:200]!r}", EXIT_REFUSED) from None
    return verify.LocalGpu(name=name, memory_bytes=mib * 2**20, count=len(rows))


def write_config(directory: Path, record: FactsRecord) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.json").write_text(json.dumps(record.config))
    return directory


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    """One vLLM server for one measurement, its log on disk, stopped with its whole process group."""

    def __init__(
        self, argv: list[str], plan: ServingPlan, work: Path, log_path: Path, environment: Mapping[str, str] | None = None
    ) -> None:
        self.log_path = log_path
        self.port = int(argv[argv.index("--port") + 1])
        env = serve_environment({**os.environ, **(environment or {})}, state_dir=str(work / "state"), plan=plan)
        (work / "state").mkdir(exist_ok=True)
        self.log = log_path.open("w")
        self.started = time.monotonic()
        try:
            self.process = subprocess.Popen(serve_command(argv), env=env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        except OSError:
            self.log.close()
            raise

    def wait_healthy(self, timeout: float, on_wait: Callable[[float, str], None] = lambda elapsed, line: None) -> float | None:
        """Seconds until /health answered 200; None if vLLM exited or the time ran out.
        `on_wait(elapsed seconds, the log's last line)` between polls."""
        while time.monotonic() - self.started < timeout:
            if self.process.poll() is not None:
                return None
            on_wait(time.monotonic() - self.started, log_tail(self.log_path, 1))
            try:
                if httpx2.get(f"http://127.0.0.1:{self.port}/health", timeout=2).status_code == 200:
                    return time.monotonic() - self.started
            except httpx2.HTTPError:
                pass
            time.sleep(HEALTH_POLL_SECONDS)
        return None

    def stop(self) -> str:
        end_process_group(self.process.pid)
        self.log.close()
        return self.log_path.read_text(errors="replace")


async def _one_request(client: httpx2.AsyncClient, url: str, body: dict) -> tuple[float | None, int]:
    """(seconds to the first streamed token, output tokens) of one completion; (None, 0) on failure."""
    started = time.monotonic()
    first, tokens = None, 0
    try:
        async with client.stream("POST", url, json=body) as response:
            if response.status_code != 200:
                return None, 0
            async for line in response.aiter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                if not isinstance(chunk, dict):
                    return None, 0
                if chunk.get("choices") and first is None:
                    first = time.monotonic() - started
                if chunk.get("usage"):
                    tokens = chunk["usage"]["completion_tokens"]
    except (httpx2.HTTPError, ValueError):  # a broken connection or a chunk that is not JSON
        return None, 0
    return first, tokens


async def _load(port: int, model: str, vocab: int, *, requests: int, concurrency: int, prompt_tokens: int, max_tokens: int) -> verify.LoadFigures:
    """`requests` completions of random token-id prompts, `concurrency` at a time (closed loop)."""
    rng = random.Random(0)
    url = f"http://127.0.0.1:{port}/v1/completions"
    low = min(100, vocab // 4)  # past the special tokens most vocabularies start with
    bodies = [
        {
            "model": model,
            "prompt": [rng.randrange(low, vocab) for _ in range(prompt_tokens)],
            "max_tokens": max_tokens,
            "ignore_eos": True,
            "temperature": 0,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        for _ in range(requests)
    ]
    queue: asyncio.Queue = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    ttfts, failed, output = [], 0, 0

    async def worker(client: httpx2.AsyncClient) -> None:
        nonlocal failed, output
        while not queue.empty():
            ttft, tokens = await _one_request(client, url, queue.get_nowait())
            if ttft is None:
                failed += 1
            else:
                ttfts.append(ttft)
                output += tokens

    started = time.monotonic()
    limits = httpx2.Limits(max_connections=concurrency)
    async with httpx2.AsyncClient(timeout=httpx2.Timeout(600, connect=10), limits=limits) as client:
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
    seconds = time.monotonic() - started
    return verify.load_figures(ttfts, output, failed, seconds, concurrency=concurrency, prompt_tokens=prompt_tokens, max_tokens=max_tokens)


def measure(
    plan: ServingPlan,
    record: FactsRecord,
    draft: FactsRecord | None,
    gpu: verify.LocalGpu,
    work: Path,
    *,
    config: verify.Config,
    boot_timeout: float,
    load_requests: int,
    prompt_tokens: int,
    max_tokens: int,
    concurrency: int,
    slo_ttft_ms: int | None,
    host_args: tuple[str, ...] = (),
) -> tuple[verify.Verdict, str]:
    """Start, read, load and stop one server; (verdict, its log)."""
    verify.check_measurable(plan)
    emulation = verify.emulate(plan, gpu)
    model_dir = write_config(work / "model", record)
    draft_dir = str(write_config(work / "draft", draft)) if draft else None
    port = free_port()
    base = serve_argv(plan, model=str(model_dir), port=port, lora_modules={}, host="127.0.0.1")
    argv = verify.verify_argv(base, plan=plan, model_dir=str(model_dir), port=port, emulation=emulation, draft_dir=draft_dir, config=config, host_args=host_args)
    validate_argv(argv)
    errors.print(f"[bold]{plan.model_name}[/] ({config}): {emulation.note}; starting vLLM (log {work / f'{config}.log'})", highlight=False, soft_wrap=True)
    server = Server(argv, plan, work, work / f"{config}.log")
    load = None
    try:
        with errors.status("starting vLLM") as spinner:

            def waiting(elapsed: float, line: str) -> None:
                spinner.update(f"waiting for vLLM to serve ({elapsed:.0f}s of at most {boot_timeout:.0f}s): [dim]{escape(line[:100])}[/]")

            boot_seconds = server.wait_healthy(boot_timeout, waiting)
            if boot_seconds is not None and load_requests:
                spinner.update(f"load test: {load_requests} requests, {concurrency} at a time")
                vocab = int((record.config.get("text_config") or record.config)["vocab_size"])
                load = asyncio.run(_load(port, plan.model_name, vocab, requests=load_requests, concurrency=concurrency, prompt_tokens=prompt_tokens, max_tokens=max_tokens))
    finally:
        log = server.stop()
    return verify.judge(plan, parse_boot_log(log), boot_seconds, load, emulation.note, config=config, slo_ttft_ms=slo_ttft_ms), log


def measure_load(
    plan: ServingPlan,
    record: FactsRecord,
    gpu: verify.LocalGpu,
    work: Path,
    *,
    flags: load_verify.ServerFlags,
    points: list[load_verify.LoadPoint],
    load,
    seconds: float,
    most_requests: int,
    repeats: int,
    boot_timeout: float,
    host_args: tuple[str, ...] = (),
    on_check: Callable[[load_verify.LoadCheck], None] = lambda check: None,
) -> tuple[list[load_verify.LoadCheck], str]:
    """Start one server with `flags`, load it at each point (`repeats` times) with `vllm bench serve`,
    stop it; (the checks, its log). `on_check` gets each check as it is measured."""
    verify.check_measurable(plan)
    emulation = verify.emulate(plan, gpu)
    model_dir = write_config(work / "model", record)
    vocab = int((record.config.get("text_config") or record.config)["vocab_size"])
    tokenizer = word_tokenizer(vocab, work.parent.parent / f"tokenizer-{vocab}")
    port = free_port()
    base = serve_argv(plan, model=str(model_dir), port=port, lora_modules={}, host="127.0.0.1")
    named = flags.config in ("plan", "vllm-defaults")
    argv = verify.verify_argv(
        base,
        plan=plan,
        model_dir=str(model_dir),
        port=port,
        emulation=emulation,
        tokenizer=str(tokenizer),
        config="vllm-defaults" if flags.config == "vllm-defaults" else "plan",
        overrides=None if named else load_verify.flag_overrides(flags),
        host_args=host_args,
    )
    validate_argv(argv)
    errors.print(
        f"[bold]{plan.model_name}[/] ({flags.config}): {emulation.note}; starting vLLM (log {work / 'server.log'})",
        highlight=False,
        soft_wrap=True,
    )
    server = Server(argv, plan, work, work / "server.log")
    checks: list[load_verify.LoadCheck] = []
    try:
        boot_seconds = server.wait_healthy(boot_timeout)
        if boot_seconds is None:
            errors.print(
                f"[red]{plan.model_name} ({flags.config}): vLLM did not serve within {boot_timeout:.0f} s[/]: "
                f"{escape(log_tail(server.log_path, 5))}"
            )
            return checks, server.stop()
        kv_tokens = parse_boot_log(server.log_path.read_text(errors="replace")).kv_tokens
        for point in points:
            for repeat in range(repeats):
                requests = load_verify.request_count(point.requests_per_second, seconds, most_requests)
                seed = repeat * 1000 + len(checks)
                pairs = load_verify.workload(load, requests, max_model_len=plan.vllm.max_model_len, seed=seed)
                stem = f"{point.name}-{repeat}"
                dataset = write_dataset(work / f"{stem}.jsonl", load_verify.dataset_rows(pairs, vocab, seed=seed))
                bench = load_verify.bench_argv(
                    port=port,
                    model=plan.model_name,
                    tokenizer=str(tokenizer),
                    dataset=str(dataset),
                    rate=point.requests_per_second,
                    requests=requests,
                    slo=load.slo,
                    result_dir=str(work),
                    result_file=f"{stem}.json",
                    seed=seed,
                )
                errors.print(
                    f"  {point.name} ({point.requests_per_second:g} requests/s, {requests} requests, "
                    f"run {repeat + 1} of {repeats})",
                    highlight=False,
                )
                timeout = requests / point.requests_per_second + BENCH_MARGIN_SECONDS
                result = run_bench(bench, work / f"{stem}.log", timeout)
                if result is None:
                    errors.print(f"[red]  vllm bench serve failed[/]: {escape(log_tail(work / f'{stem}.log', 5))}")
                    continue
                check = load_verify.LoadCheck(
                    model=plan.model_name,
                    flags=flags,
                    point=point,
                    repeat=repeat,
                    kv_tokens=kv_tokens,
                    boot_seconds=round(boot_seconds, 1),
                    measured=load_verify.measured_load(result),
                )
                checks.append(check)
                on_check(check)
    finally:
        log = server.stop()
    return checks, log


def _load_table(rows: list[tuple[load_verify.LoadCheck, dict[str, tuple[float | None, float | None]]]]) -> Table:
    table = Table(title="predicted / measured, open-loop load (vllm bench serve)")
    for column in (
        "model",
        "config",
        "point",
        "req/s",
        "n",
        "failed",
        "out tok/s",
        "TTFT p50 ms",
        "TTFT p95 ms",
        "ITL mean ms",
        "ITL p95 ms",
        "goodput",
    ):
        table.add_column(column, justify="left" if column in ("model", "config", "point") else "right")
    for check, figures in rows:
        cells = []
        for figure in load_verify.FIGURES:
            predicted, measured = figures[figure]
            cells.append(
                " / ".join("-" if value is None else f"{value:,.1f}" for value in (predicted, measured))
            )
        m = check.measured
        table.add_row(
            check.model,
            check.flags.config,
            check.point.name,
            f"{check.point.requests_per_second:g}",
            str(m.requests),
            str(m.failed),
            *cells,
            "-" if m.goodput is None else f"{m.goodput:.2f}",
        )
    return table


def _table(verdicts: list[verify.Verdict]) -> Table:
    table = Table(title="plan vs vLLM on this GPU")
    for column in ("model", "config", "KV tokens plan", "vLLM", "ratio", "weights GiB plan", "vLLM", "boot s", "compile s", "out tok/s", "TTFT p50/p95 ms", "ok"):
        table.add_column(column, justify="left" if column in ("model", "config") else "right")
    for v in verdicts:
        load = v.load
        table.add_row(
            v.model, v.config, f"{v.predicted_kv_tokens:,}", f"{v.measured_kv_tokens:,}" if v.measured_kv_tokens else "-",
            f"{v.kv_ratio:.3f}" if v.kv_ratio else "-", f"{v.predicted_weights_gib:.2f}",
            f"{v.measured_weights_gib:.2f}" if v.measured_weights_gib is not None else "-",
            f"{v.boot_seconds:.0f}" if v.boot_seconds else "-",
            f"{v.boot.compile_seconds:.0f}" if v.boot.compile_seconds else "-",
            f"{load.output_tokens_per_second:,.0f}" if load else "-",
            (f"{load.ttft_p50_ms:.0f}/{load.ttft_p95_ms:.0f}" if load and load.ttft_p50_ms is not None else "-")
            + ("" if v.slo_met is None else f" (SLO {v.slo_ttft_ms} {'met' if v.slo_met else 'missed'})"),
            "yes" if v.ok else "[red]NO[/]",
        )  # fmt: skip
    return table


def verify_command(
    fleet: FleetOpt = None,
    model: Annotated[list[str] | None, typer.Option("--model", "-m", autocompletion=fleet_models, help="Only this model (repeatable).")] = None,
    compare: Annotated[bool, typer.Option("--compare", help="Also run vLLM's serve defaults and the seed notebook's settings (eager, util 0.7, len 2048) on the same workload.")] = False,
    requests: Annotated[int, typer.Option(help="Load-test requests per server (0: no load test).")] = 64,
    concurrency: Annotated[int | None, typer.Option(help="Requests in flight during the load test (default: the model's target_concurrency).")] = None,
    prompt_tokens: Annotated[int, typer.Option(help="Random token ids per prompt.")] = 512,
    max_tokens: Annotated[int, typer.Option(help="Tokens generated per request (EOS ignored).")] = 128,
    boot_timeout: Annotated[float, typer.Option(help="Seconds to wait for /health.")] = 900,
    record: Annotated[Path | None, typer.Option(help="Merge the measurements into this JSON file after each server, e.g. tests/data/gpu_measurements.json.")] = None,
    keep: Annotated[Path | None, typer.Option(help="Keep each server's log and config under this folder.")] = None,
    vllm_arg: Annotated[list[str] | None, typer.Option("--vllm-arg", help="A flag this host's vLLM build needs that the plan does not decide, e.g. --vllm-arg=--gdn-prefill-backend=triton (repeatable; checked by vLLM's parser, recorded).")] = None,
    skip_unfit: Annotated[bool, typer.Option("--skip-unfit", help="Skip models planned for more GPU memory or GPUs than this machine has, instead of failing.")] = False,
    load: Annotated[bool, typer.Option("--load", help=LOAD_HELP)] = False,
    sweep: Annotated[bool, typer.Option("--sweep", help=SWEEP_HELP)] = False,
    seconds: Annotated[float, typer.Option(help="--load: seconds of arrivals per load point.")] = 30,
    max_requests: Annotated[int, typer.Option(help="--load: at most this many requests per load point.")] = 600,
    repeats: Annotated[int, typer.Option(help="--load: runs of each load point on each server (the noise).")] = 1,
    point: Annotated[list[str] | None, typer.Option("--point", help=POINT_HELP)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Measure the fleet's plans on this machine's GPU against the plan: KV, weights, boot, load.

    vLLM starts with each plan's argv and random weights; the figures are its KV capacity,
    weights, boot phases and a load test at the plan's concurrency.

    Exits 1 when vLLM holds more than 3 % fewer KV tokens than a plan promised, when a
    server does not start or a load-test request fails, when vLLM's parser refuses an argv,
    or when this GPU cannot stand in for a plan's (without --skip-unfit). Needs an NVIDIA
    GPU and the CUDA build of vLLM; a larger GPU emulates the planned one with a lower
    --gpu-memory-utilization, a smaller one is refused.
    """
    fleet = fleet_file(fleet)
    with planning(fleet):
        manifest, lock = load_fleet_and_lock(fleet)
        plans = {p.model_name: p for p in plan_with_lock(manifest, lock)}
    names = model or list(plans)
    unknown = sorted(set(names) - set(plans))
    if unknown:
        raise fail(f"{fleet}: no model {unknown}; it has {sorted(plans)}", EXIT_BAD_INPUT)
    require_vllm("verify measures with vLLM's CUDA build on an NVIDIA GPU: pip install vllm")
    gpu = local_gpu()
    # A SIGTERM (a CI time-out, `timeout`) unwinds like Ctrl-C, so each server's process
    # group is stopped: vLLM runs in a session of its own and would outlive us holding the GPU.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    if load or sweep:
        checks = _verify_loads(
            manifest, lock, plans, names, gpu, keep=keep, record=record, compare=compare, sweep=sweep, seconds=seconds,
            most_requests=max_requests, repeats=repeats, boot_timeout=boot_timeout, skip_unfit=skip_unfit, only=point,
            host_args=tuple(vllm_arg or ()),
        )  # fmt: skip
        if as_json:
            print(json.dumps([c.model_dump(mode="json") for c in checks], indent=2))
        if not checks or any(c.measured.failed for c in checks):
            raise typer.Exit(EXIT_REFUSED)
        return
    verdicts, measurements = [], []
    root = Path(keep or tempfile.mkdtemp(prefix="llmfleet-verify-"))
    try:
        for name in names:
            plan, entry, spec = plans[name], lock.models[name], manifest.model(name)
            for config in verify.CONFIGS if compare else ("plan",):
                work = root / name / config
                work.mkdir(parents=True, exist_ok=True)
                try:
                    verdict, _ = measure(
                        plan, entry.model, entry.draft, gpu, work, config=config, boot_timeout=boot_timeout,
                        load_requests=requests, prompt_tokens=prompt_tokens, max_tokens=max_tokens,
                        concurrency=concurrency or spec.serving.target_concurrency, slo_ttft_ms=spec.serving.slo_ttft_ms,
                        host_args=tuple(vllm_arg or ()),
                    )  # fmt: skip
                except verify.VerifyRefused as exc:
                    _skip_or_raise(exc, skip_unfit)
                    break
                verdicts.append(verdict)
                if not as_json:
                    console.print(_table([verdict]))
                fleet = {
                    **manifest.model_dump(mode="json", exclude_none=True),
                    "models": [spec.model_dump(mode="json", exclude_none=True)],
                }
                recorded = _recorded(gpu, fleet, entry.model, tuple(vllm_arg or ()))
                measurements.append(verify.Measurement(**recorded, verdict=verdict))
                if record is not None:  # after each server: a later crash or time-out keeps these
                    _record(record, measurements[-1:])
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    if record is not None:
        errors.print(f"recorded {len(measurements)} measurement(s) in {record}")
    if as_json:
        print(json.dumps([v.model_dump(mode="json") for v in verdicts], indent=2))
    else:
        console.print(_table(verdicts))
        for v in verdicts:
            for problem in v.problems:
                console.print(f"[red]{v.model} ({v.config}):[/] {problem}", highlight=False)
    if any(not v.ok for v in verdicts if v.config == "plan"):
        raise typer.Exit(EXIT_REFUSED)


def _verify_loads(
    manifest: FleetManifest,
    lock,
    plans: dict[str, ServingPlan],
    names: list[str],
    gpu: verify.LocalGpu,
    *,
    keep: Path | None,
    record: Path | None,
    compare: bool,
    sweep: bool,
    seconds: float,
    most_requests: int,
    repeats: int,
    boot_timeout: float,
    skip_unfit: bool,
    only: list[str] | None = None,
    host_args: tuple[str, ...] = (),
) -> list[load_verify.LoadCheck]:
    """`verify --load` / `--sweep`: each model's servers loaded at its load points; every check
    recorded as it is measured; a table of predicted against measured and, with more than one
    server, where the plan's flags rank by goodput."""
    missing = [name for name in names if manifest.model(name).load is None]
    if missing:
        raise fail(f"--load checks a load plan: model(s) {missing} have no load: section", EXIT_BAD_INPUT)
    root = Path(keep or tempfile.mkdtemp(prefix="llmfleet-verify-load-"))
    checks, rows = [], []
    try:
        for name in names:
            plan, entry, spec = plans[name], lock.models[name], manifest.model(name)
            # Only what the manifest set: a load replaces serving.target_concurrency, whose default
            # would be refused beside it.
            fleet = {
                **manifest.model_dump(mode="json", exclude_none=True),
                "models": [spec.model_dump(mode="json", exclude_unset=True)],
            }
            model_checks = []

            def keep_check(check: load_verify.LoadCheck) -> None:
                measurement = load_verify.LoadMeasurement(**_recorded(gpu, fleet, entry.model, host_args), check=check)
                rows.append((check, load_verify.compared(measurement)))
                model_checks.append(check)
                if record is not None:  # after each check: a later crash or time-out keeps these
                    _record_loads(record, [measurement])

            points = [p for p in load_verify.load_points(plan) if not only or p.name in only]
            if not points:
                raise fail(
                    f"model {name!r}: no load point named {only}; "
                    f"it has {[p.name for p in load_verify.load_points(plan)]}",
                    EXIT_BAD_INPUT,
                )
            all_flags = load_verify.sweep_flags(plan, gpu.name, gpu.memory_bytes, grid=sweep)
            for flags in all_flags if compare or sweep else all_flags[:1]:
                work = root / name / flags.config
                work.mkdir(parents=True, exist_ok=True)
                try:
                    measure_load(
                        plan, entry.model, gpu, work, flags=flags, points=points, load=spec.load, seconds=seconds,
                        most_requests=most_requests, repeats=repeats, boot_timeout=boot_timeout, host_args=host_args,
                        on_check=keep_check,
                    )  # fmt: skip
                except verify.VerifyRefused as exc:
                    _skip_or_raise(exc, skip_unfit)
                    break
            checks += model_checks
            for rank in (
                load_verify.sweep_ranks(model_checks) if len({c.flags.config for c in model_checks}) > 1 else []
            ):
                console.print(
                    f"{name} at {rank.point}: goodput (requests/s within the SLO) "
                    + ", ".join(
                        f"{config} {value:.2f}" for config, value in sorted(rank.goodput.items(), key=lambda kv: -kv[1])
                    )
                    + f"; the plan's flags rank {rank.plan_rank} of {len(rank.goodput)} "
                    f"({rank.plan_share_of_best:.0%} of the best, {rank.best})",
                    highlight=False,
                )
    finally:
        if keep is None:
            shutil.rmtree(root, ignore_errors=True)
    console.print(_load_table(rows))
    if record is not None:
        errors.print(f"recorded {len(checks)} load check(s) in {record}")
    return checks


def _record_loads(path: Path, measurements: list[load_verify.LoadMeasurement]) -> None:
    existing = (
        load_verify.LoadLog.model_validate_json(path.read_text())
        if path.is_file()
        else load_verify.LoadLog(measurements=[])
    )
    path.write_text(existing.merged(measurements).model_dump_json(indent=1) + "\n")


def _skip_or_raise(refused: verify.VerifyRefused, skip_unfit: bool) -> None:
    if not skip_unfit:
        raise refused
    errors.print(f"skipped: {refused}", highlight=False)


def _recorded(gpu: verify.LocalGpu, fleet: dict, record: FactsRecord, host_args: tuple[str, ...]) -> dict:
    """The fields of a record (verify.Recorded) for a measurement made now on this GPU."""
    return {
        "host_vllm_args": list(host_args),
        "date": datetime.now(UTC).date().isoformat(),
        "gpu": gpu.name,
        "gpu_memory_bytes": gpu.memory_bytes,
        "vllm_version": installed_vllm_version(),
        "fleet": fleet,
        "config": record.config,
        "weights_bytes_by_dtype": record.weights_bytes_by_dtype,
    }


def _record(path: Path, measurements: list[verify.Measurement]) -> None:
    existing = verify.MeasurementLog.model_validate_json(path.read_text()) if path.is_file() else verify.MeasurementLog(measurements=[])
    path.write_text(existing.merged(measurements).model_dump_json(indent=1) + "\n")
