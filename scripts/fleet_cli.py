"""`llmfleet status`, `llmfleet invoke`, `llmfleet local up|down|env`: see, call and run the fleet.

Thin: observations are gathered here (boto3 for an AWS account, HTTP for the local fleet)
and handed to model_store.status, which computes the rows; the local fleet's processes are
scripts/local_fleet.py's business.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import boto3
import httpx
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.table import Table

from model_store.container_contract import API_KEY_ENV, STORE_ENV
from model_store.plan import ServingPlan
from model_store.registry import AdapterRegistry, RegistryState, adapters_for_server
from model_store import telemetry
from model_store.status import (
    TAG_MODEL,
    TAG_STAGE,
    Deployment,
    Metrics,
    ModelStatus,
    ServerAdapters,
    fleet_cost_per_hour,
    metrics_from_cloudwatch,
    metrics_from_prometheus,
    model_status,
    unit_cost_per_hour,
)
from model_store.store import ModelStore, StoreError, StoreLocation
from scripts import local_fleet
from scripts.cli_common import EXIT_BAD_INPUT, EXIT_REFUSED, JsonOpt, console, errors, fail, flag_values, load_and_plan

local_app = typer.Typer(
    help="Run the fleet on this machine: emulated AWS (moto), stand-in model, real entrypoint and CPU vLLM.",
    no_args_is_help=True,
)

FleetOpt = Annotated[Path, typer.Option("--fleet", "-f", help="The fleet manifest.")]
STANDIN_LABEL = "stand-in"
# Status fields read from the container's EMF metrics (model_store/telemetry.py).
CLOUDWATCH_METRICS = {
    "queue_depth": telemetry.REQUESTS_WAITING,
    "running_requests": telemetry.REQUESTS_RUNNING,
    "ttft_p50_ms": telemetry.quantile_metric(telemetry.TTFT_PREFIX, 50),
    "latency_p50_ms": telemetry.quantile_metric(telemetry.E2E_LATENCY_PREFIX, 50),
    "latency_p99_ms": telemetry.quantile_metric(telemetry.E2E_LATENCY_PREFIX, 99),
}
METRICS_WINDOW = timedelta(minutes=15)
SAGEMAKER_CONTENT_TYPE = "application/json"


# --- local --------------------------------------------------------------------------------


def _state_dir() -> local_fleet.StateDir:
    return local_fleet.find_state_dir()


def _print_fleet(state: local_fleet.LocalState, api_key: str, first_answer: str) -> None:
    url, model = state.server_url, state.model
    adapter = next(iter(state.adapters), None)
    console.print(f"\n[bold green]local fleet {state.fleet} ({state.stage}) is serving[/]  [dim]({STANDIN_LABEL} model)[/]")
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_row("model", f"{model} [yellow]({STANDIN_LABEL}: random-weight tiny Qwen3, not the real checkpoint)[/]")
    table.add_row("adapters", ", ".join(f"{n}@{v}" for n, v in state.adapters.items()) or "-")
    table.add_row("OpenAI API", f"{url}/v1")
    table.add_row("health", f"{url}/health   adapters: {url}/llmfleet/adapters   metrics: {url}/metrics")
    table.add_row("SageMaker-style", f"{url}/invocations")
    table.add_row("API key", f"{api_key}   [dim](in {state.api_key_file})[/]")
    table.add_row("emulated AWS", f"{state.s3_endpoint} (moto)   store {state.store_uri} (created with {state.store_method})")
    table.add_row("logs", str(Path(state.api_key_file).parent / "logs"))
    if state.ready_seconds is not None:
        table.add_row("up in", f"{state.ready_seconds:.0f}s")
    console.print(table)
    console.print(f"first chat completion ({STANDIN_LABEL}, random text): {escape(first_answer[:80])!r}", highlight=False)
    if state.not_started:
        console.print(
            f"[yellow]not started locally:[/] {', '.join(state.not_started)} — one CPU vLLM is what this machine "
            "serves comfortably; pick another with `llmfleet local up --model NAME`",
            highlight=False,
        )
    target = f"{model}:{adapter}" if adapter else model
    console.print("\n[bold]try it[/]", highlight=False)
    console.print(
        f"  llmfleet invoke {target} \"Hello\"\n"
        f"  curl -s {url}/v1/chat/completions -H \"Authorization: Bearer $(cat {state.api_key_file})\" \\\n"
        f"       -H 'Content-Type: application/json' \\\n"
        f"       -d '{{\"model\": \"{adapter or model}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'\n"
        f"  python -c 'from openai import OpenAI; c = OpenAI(base_url=\"{url}/v1\", api_key=open(\"{state.api_key_file}\").read().strip()); "
        f"print(c.chat.completions.create(model=\"{adapter or model}\", messages=[{{\"role\": \"user\", \"content\": \"Hello\"}}]).choices[0].message.content)'\n"
        f"  eval \"$(llmfleet local env)\" && llmfleet adapter list --model {model} --stage {state.stage}\n"
        f"  llmfleet status\n"
        f"  llmfleet local down",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )


def _first_answer(state: local_fleet.LocalState, api_key: str) -> str:
    """One chat completion through the public API: proof that the fleet serves, not only boots."""
    response = httpx.post(
        f"{state.server_url}/v1/chat/completions",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": state.model, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 16},
        timeout=120,
    )
    response.raise_for_status()
    # A reasoning model's stand-in may spend every token "thinking": show that rather than nothing.
    reasoning, answer = parse_chat_response(response.json())
    return answer or f"(reasoning) {reasoning}"


@local_app.command("up")
def local_up(
    fleet: Annotated[Path, typer.Argument(help="The fleet manifest.")] = Path("fleet.yaml"),
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="The model to run (default: the first with LoRA adapters).")
    ] = None,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for the server to serve.")] = local_fleet.READY_TIMEOUT_SECONDS,
    as_json: JsonOpt = False,
) -> None:
    """Start the fleet locally and return once it serves; it keeps running in the background."""
    manifest, plans = load_and_plan(fleet)
    with flag_values():
        local_fleet.choose_model(plans, model)
    state_dir = _state_dir()
    started = time.monotonic()
    with errors.status("starting") as spinner:

        def step(message: str) -> None:
            errors.print(f"[green]✓[/] {escape(message)}", highlight=False)

        def note(message: str) -> None:
            errors.print(f"[yellow]{escape(message)}[/]", highlight=False)

        def waiting(elapsed: float, last_line: str) -> None:
            spinner.update(f"waiting for the server ({elapsed:.0f}s): [dim]{escape(last_line[:100])}[/]")

        try:
            state, notes = local_fleet.up(
                manifest, plans, fleet_path=fleet, state_dir=state_dir, model=model, on_step=step, on_note=note, on_wait=waiting, timeout=timeout
            )
        except (BotoCoreError, ClientError) as exc:
            raise fail(str(exc), EXIT_REFUSED) from None
    for note in notes:
        errors.print(note, highlight=False)
    api_key = state_dir.api_key()
    try:
        answer = _first_answer(state, api_key)
    except httpx.HTTPError as exc:
        raise fail(f"the server is up but a first chat completion failed: {exc}; see {state_dir.logs}", EXIT_REFUSED) from None
    wall = round(time.monotonic() - started, 1)
    if as_json:
        print(json.dumps({**asdict(state), "openai_base_url": state.openai_base_url, "api_key": api_key, "up_seconds": wall,
                          "standin": True, "first_answer": answer}, indent=2))
        return
    _print_fleet(state, api_key, answer)


@local_app.command("down")
def local_down() -> None:
    """Stop everything `local up` started (server, vLLM, moto); no process or port is left."""
    for note in local_fleet.down(_state_dir()):
        console.print(note, highlight=False)


@local_app.command("env")
def local_env() -> None:
    """Shell exports that point `llmfleet model|adapter` and the AWS CLI at the local store."""
    state = _running_local_state()
    for name, value in {
        "AWS_ENDPOINT_URL": state.s3_endpoint,
        "AWS_ACCESS_KEY_ID": local_fleet.LOCAL_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": local_fleet.LOCAL_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": state.region,
        STORE_ENV: state.store_uri,
    }.items():
        print(f"export {name}={value}")


def _running_local_state() -> local_fleet.LocalState:
    state = _state_dir().load()
    if state is None:
        raise fail("no local fleet: run `llmfleet local up` first", EXIT_BAD_INPUT)
    return state


# --- status -------------------------------------------------------------------------------


def local_status_rows(state: local_fleet.LocalState) -> list[ModelStatus]:
    """The local fleet's one server: its own /llmfleet/adapters and /metrics, the registry in moto."""
    from prometheus_client.parser import text_string_to_metric_families

    server = state.processes.get("server")
    serving = server is not None and server.alive() and local_fleet.http_ok(f"{state.server_url}/health")
    servers, metrics = [], Metrics()
    if serving:
        try:
            described = httpx.get(f"{state.server_url}/llmfleet/adapters", timeout=5).json()
            servers.append(ServerAdapters(described["server_id"], described["adapters"]))
            text = httpx.get(f"{state.server_url}/metrics", timeout=5).text
            metrics = metrics_from_prometheus(
                (s.name, s.labels, s.value) for family in text_string_to_metric_families(text) for s in family.samples
            )
        except (httpx.HTTPError, KeyError, ValueError) as exc:
            servers.append(ServerAdapters(local_fleet.LOCAL_SERVER_ID, error=str(exc)))
    store = ModelStore(
        StoreLocation.parse(state.store_uri), local_fleet.local_client("s3", state.s3_endpoint, state.region)
    )
    moto = state.processes.get("moto")
    if moto is not None and moto.alive():
        registry = AdapterRegistry(store).state(state.model, state.stage)
    else:
        errors.print("[yellow]the emulated AWS is not running: no registry to show; `llmfleet local up` restarts the fleet[/]")
        registry = RegistryState.empty(state.model, state.stage)
    row = model_status(
        model=state.model,
        stage=state.stage,
        deployment=Deployment(
            "local",
            state.server_url,
            desired=1,
            running=int(serving),
            instance_type=f"local CPU (AWS: {state.plan_instance_type})",
            state="serving" if serving else "down",
        ),
        unit_cost_per_hour_usd=state.plan_cost_per_hour_usd,
        promoted=_promoted(registry),
        servers=servers,
        expected={s.server_id: adapters_for_server(registry, s.server_id) for s in servers},
        metrics=metrics,
        standin=True,
    )
    return [row]


def _promoted(state: RegistryState) -> dict[str, str]:
    return {
        name: entry.version + (f" ({entry.fraction:.0%}, else {entry.previous_version})" if entry.fraction < 1 else "")
        for name, entry in state.adapters.items()
    }


def _tags(pairs: list[dict], key: str = "Key", value: str = "Value") -> dict[str, str]:
    return {pair[key]: pair[value] for pair in pairs}


def aws_status_rows(plans: list[ServingPlan], stage: str, session: boto3.Session) -> list[ModelStatus]:
    """ECS services, ALB target health, SageMaker endpoints and the container's CloudWatch metrics."""
    wanted = {plan.model_name: plan for plan in plans}
    ecs, elbv2, sagemaker = session.client("ecs"), session.client("elbv2"), session.client("sagemaker")
    healthy = _healthy_targets(elbv2, stage)
    registry_of = _registries(plans, stage, session)
    rows = []
    clusters = [arn for page in ecs.get_paginator("list_clusters").paginate() for arn in page["clusterArns"]]
    for cluster in clusters:
        arns = [arn for page in ecs.get_paginator("list_services").paginate(cluster=cluster) for arn in page["serviceArns"]]
        for start in range(0, len(arns), 10):  # DescribeServices takes 10 at a time
            for service in ecs.describe_services(cluster=cluster, services=arns[start : start + 10], include=["TAGS"])["services"]:
                tags = _tags(service.get("tags", []), "key", "value")
                plan = wanted.get(tags.get(TAG_MODEL, ""))
                if plan is None or tags.get(TAG_STAGE, stage) != stage:
                    continue
                pages = ecs.get_paginator("list_tasks").paginate(cluster=cluster, serviceName=service["serviceName"])
                tasks = [arn for page in pages for arn in page["taskArns"]]
                deployment = Deployment(
                    "ecs",
                    service["serviceName"],
                    desired=service["desiredCount"],
                    running=service["runningCount"],
                    pending=service.get("pendingCount", 0),
                    instance_type=plan.instance_type,
                    healthy=healthy.get(plan.model_name),
                    state=service.get("status"),
                )
                rows.append(_aws_row(plan, stage, deployment, [t.rsplit("/", 1)[-1] for t in tasks], registry_of, session))
    for page in sagemaker.get_paginator("list_endpoints").paginate():
        for summary in page["Endpoints"]:
            tags = _tags(sagemaker.list_tags(ResourceArn=summary["EndpointArn"])["Tags"])
            plan = wanted.get(tags.get(TAG_MODEL, ""))
            if plan is None or tags.get(TAG_STAGE, stage) != stage:
                continue
            endpoint = sagemaker.describe_endpoint(EndpointName=summary["EndpointName"])
            variants = endpoint.get("ProductionVariants", [])
            deployment = Deployment(
                "sagemaker",
                endpoint["EndpointName"],
                desired=sum(v.get("DesiredInstanceCount", 0) for v in variants),
                running=sum(v.get("CurrentInstanceCount", 0) for v in variants),
                instance_type=plan.sagemaker_instance_type or plan.instance_type,
                state=endpoint["EndpointStatus"],
            )
            rows.append(_aws_row(plan, stage, deployment, [], registry_of, session))
    return rows


def _aws_row(
    plan: ServingPlan,
    stage: str,
    deployment: Deployment,
    server_ids: list[str],
    registry_of: Callable[[str], RegistryState],
    session: boto3.Session,
) -> ModelStatus:
    registry = registry_of(plan.model_name)
    # Servers sit in private subnets: what each has loaded is not reachable from here, so a
    # row shows what the registry assigns it (its AdaptersLoaded metric counts what it has).
    unreachable = "in a private subnet; showing what the registry assigns it"
    servers = [ServerAdapters(server_id, error=unreachable) for server_id in server_ids]
    return model_status(
        model=plan.model_name,
        stage=stage,
        deployment=deployment,
        unit_cost_per_hour_usd=unit_cost_per_hour(plan, deployment.target),
        promoted=_promoted(registry),
        servers=servers,
        expected={server_id: adapters_for_server(registry, server_id) for server_id in server_ids},
        metrics=_cloudwatch_metrics(session.client("cloudwatch"), plan.model_name, stage, deployment.target),
    )


def _healthy_targets(elbv2, stage: str) -> dict[str, int]:
    """Healthy ALB targets per model, from target groups tagged with the model."""
    groups = [g for page in elbv2.get_paginator("describe_target_groups").paginate() for g in page["TargetGroups"]]
    healthy: dict[str, int] = {}
    for start in range(0, len(groups), 20):  # DescribeTags takes 20 ARNs at a time
        batch = groups[start : start + 20]
        described = elbv2.describe_tags(ResourceArns=[g["TargetGroupArn"] for g in batch])["TagDescriptions"]
        for description in described:
            tags = _tags(description["Tags"])
            if TAG_MODEL not in tags or tags.get(TAG_STAGE, stage) != stage:
                continue
            targets = elbv2.describe_target_health(TargetGroupArn=description["ResourceArn"])["TargetHealthDescriptions"]
            count = sum(1 for t in targets if t["TargetHealth"]["State"] == "healthy")
            healthy[tags[TAG_MODEL]] = healthy.get(tags[TAG_MODEL], 0) + count
    return healthy


def _registries(plans: list[ServingPlan], stage: str, session: boto3.Session) -> Callable[[str], RegistryState]:
    """model -> registry state, read from each model's store (empty when it cannot be read)."""
    stores: dict[str, ModelStore] = {}
    client = session.client("s3")

    def registry(model: str) -> RegistryState:
        plan = next(p for p in plans if p.model_name == model)
        uri = local_fleet.store_uri_of(plan)
        store = stores.setdefault(uri, ModelStore(StoreLocation.parse(uri), client))
        try:
            return AdapterRegistry(store).state(model, stage)
        except StoreError as exc:
            errors.print(f"[yellow]registry of {model} unreadable:[/] {escape(str(exc))}")
            return RegistryState.empty(model, stage)

    return registry


def _cloudwatch_metrics(cloudwatch, model: str, stage: str, target: str) -> Metrics:
    """The newest value of each container metric of one target over the last METRICS_WINDOW."""
    dimensions = [{"Name": k, "Value": v} for k, v in telemetry.dimensions(model, stage, target).items()]
    now = datetime.now(UTC)
    queries = [
        {
            "Id": f"m{index}",
            "MetricStat": {
                "Metric": {
                    "Namespace": telemetry.NAMESPACE,
                    "MetricName": name,
                    "Dimensions": dimensions,
                },
                "Period": 60,
                "Stat": "Average",
            },
        }
        for index, name in enumerate(CLOUDWATCH_METRICS.values())
    ]
    # EndTime a period ahead: the newest datapoint (seconds old) falls inside the window.
    results = cloudwatch.get_metric_data(
        MetricDataQueries=queries, StartTime=now - METRICS_WINDOW, EndTime=now + timedelta(minutes=1)
    )["MetricDataResults"]
    latest = {
        result["Id"]: max(zip(result["Timestamps"], result["Values"]))[1] if result["Values"] else None
        for result in results
    }
    return metrics_from_cloudwatch(latest, {field: f"m{index}" for index, field in enumerate(CLOUDWATCH_METRICS)})


def _fmt(value: float | None, unit: str = "") -> str:
    return "-" if value is None else f"{value:g}{unit}"


def _render(rows: list[ModelStatus], title: str) -> None:
    """Two tables: capacity and load per model and target, then adapter versions per server."""
    capacity = Table(title=title, title_justify="left")
    for column in ("model", "target", "tasks", "instance", "queue", "p50/p99 ms", "$/h"):
        capacity.add_column(column, justify="left" if column in ("model", "target", "instance") else "right")
    adapters = Table(title="adapters: loaded per server vs the registry", title_justify="left")
    for column in ("model", "server", "adapter", "loaded", "registry"):
        adapters.add_column(column)
    for row in rows:
        model = row.model + (f" [yellow]({STANDIN_LABEL})[/]" if row.standin else "")
        tasks = f"{row.running}/{row.desired}" + (f" +{row.pending}" if row.pending else "")
        if row.healthy is not None:
            tasks += f" ({row.healthy} healthy)"
        capacity.add_row(
            model,
            row.target + (f"\n{row.state}" if row.state else ""),
            tasks,
            row.instance_type,
            _fmt(row.metrics.queue_depth),
            f"{_fmt(row.metrics.latency_p50_ms)}/{_fmt(row.metrics.latency_p99_ms)}",
            f"{row.cost_per_hour_usd:.2f}",
        )
        for server in row.servers:
            names = sorted(set(server.adapters) | set(server.expected))
            for name in names or ["-"]:
                loaded = server.adapters.get(name) if not server.error else f"[dim]({escape(server.error)})[/]"
                mark = " [red]drift[/]" if name in server.drift else ""
                adapters.add_row(row.model, escape(server.server_id), name, (loaded or "-") + mark, server.expected.get(name, "-"))
        if not row.servers:
            for name, version in row.promoted.items():
                adapters.add_row(row.model, "[dim](no server)[/]", name, "-", version)
    console.print(capacity)
    console.print(adapters)


def status(
    fleet: FleetOpt = Path("fleet.yaml"),
    stage: Annotated[str | None, typer.Option("--stage", "-s", help="The stage (default: the fleet's).")] = None,
    aws: Annotated[bool, typer.Option("--aws", help="Query the AWS account even when a local fleet is up.")] = False,
    region: Annotated[str | None, typer.Option("--region", help="AWS region (default: the fleet's).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Per model: tasks running/desired, instance, adapter versions per server, queue, latency, $/h."""
    state = None if aws else _state_dir().load()
    if state is not None:
        rows = local_status_rows(state)
        title = f"local fleet {state.fleet} ({state.stage}) — {STANDIN_LABEL} model; $/h is the plan's AWS price"
        notes = [f"not started locally: {', '.join(state.not_started)}"] if state.not_started else []
    else:
        manifest, plans = load_and_plan(fleet)
        chosen_stage = stage or manifest.stage
        session = boto3.Session(region_name=region or manifest.region)
        try:
            rows = aws_status_rows(plans, chosen_stage, session)
        except (BotoCoreError, ClientError) as exc:  # no credentials, access denied, endpoint down
            raise fail(f"cannot read the AWS account ({type(exc).__name__}): {exc}", EXIT_REFUSED) from None
        title = f"fleet {manifest.name} ({chosen_stage}, {session.region_name})"
        found = {row.model for row in rows}
        notes = [f"no deployment found for: {', '.join(p.model_name for p in plans if p.model_name not in found)}"] if len(found) < len(plans) else []
    if as_json:
        print(json.dumps({"title": title, "models": [row.to_json() for row in rows],
                          "cost_per_hour_usd": fleet_cost_per_hour(rows), "notes": notes}, indent=2))
        return
    _render(rows, title)
    console.print(f"fleet $/h now: {fleet_cost_per_hour(rows):.2f}", highlight=False)
    for note in notes:
        console.print(f"[dim]{escape(note)}[/]")


# --- invoke -------------------------------------------------------------------------------


def chat_request(model: str, prompt: str, *, max_tokens: int, temperature: float | None, stream: bool) -> dict[str, Any]:
    """The OpenAI chat body, the same for the ALB and for SageMaker's `/invocations`."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": max_tokens}
    if temperature is not None:
        body["temperature"] = temperature
    if stream:
        body["stream"] = True
    return body


def reasoning_and_content(message: dict[str, Any]) -> tuple[str, str]:
    """(reasoning, answer) of a message or a streamed delta.

    vLLM's reasoning parsers fill `reasoning_content` (older releases) or `reasoning`
    (0.3x); either may be absent or null.
    """
    return message.get("reasoning_content") or message.get("reasoning") or "", message.get("content") or ""


def parse_chat_response(body: dict[str, Any]) -> tuple[str, str]:
    """(reasoning, answer) of a whole chat completion."""
    return reasoning_and_content(body["choices"][0]["message"])


def _split_target(target: str) -> tuple[str, str | None]:
    model, _, adapter = target.partition(":")
    if not model or (":" in target and not adapter):
        raise fail(f"{target!r} is not MODEL or MODEL:ADAPTER", EXIT_BAD_INPUT)
    return model, adapter or None


def print_stream(deltas: Iterable[dict[str, Any]], as_json: bool) -> tuple[str, str]:
    """Print deltas as they arrive: answer tokens to stdout, reasoning dimmed on stderr.

    Returns (reasoning, answer); with `as_json` nothing is printed.
    """
    reasoning, answer, in_reasoning = [], [], False
    for delta in deltas:
        thought, content = reasoning_and_content(delta)
        if thought:
            if not in_reasoning and not as_json:
                errors.print("[dim]reasoning:[/]")
            in_reasoning = True
            reasoning.append(thought)
            if not as_json:
                errors.print(f"[dim]{escape(thought)}[/]", end="")
        if content:
            if in_reasoning and not as_json:
                errors.print("\n[dim]answer:[/]")
                in_reasoning = False
            answer.append(content)
            if not as_json:
                sys.stdout.write(content)
                sys.stdout.flush()
    if not as_json:
        sys.stdout.write("\n")
    return "".join(reasoning), "".join(answer)


def _stream_openai(base_url: str, api_key: str, body: dict[str, Any], as_json: bool) -> dict[str, Any]:
    """Stream a chat completion through the OpenAI SDK (the ALB, or the local fleet)."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    try:
        chunks = client.chat.completions.create(**body)
        reasoning, answer = print_stream((c.choices[0].delta.model_dump() for c in chunks if c.choices), as_json)
    except openai.APIConnectionError as exc:
        raise fail(f"cannot reach {base_url}: {exc}", EXIT_REFUSED) from None
    except openai.APIStatusError as exc:
        raise fail(f"{base_url} answered {exc.status_code}: {exc.message}", EXIT_REFUSED) from None
    return {"model": body["model"], "reasoning": reasoning, "content": answer}


def sse_chunks(payloads: Iterable[bytes]) -> Iterator[dict[str, Any]]:
    """The JSON events of a server-sent-event byte stream cut anywhere (HTTP chunks, SageMaker PayloadParts)."""
    pending = b""
    for payload in payloads:
        pending += payload
        *lines, pending = pending.split(b"\n")
        for line in lines:
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event names
            data = line.removeprefix(b"data:").strip()
            if data == b"[DONE]":
                return
            yield json.loads(data)


def stream_sagemaker(runtime, endpoint: str, body: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Chat-completion chunks from InvokeEndpointWithResponseStream (`body` asks for a stream)."""
    response = runtime.invoke_endpoint_with_response_stream(
        EndpointName=endpoint, ContentType=SAGEMAKER_CONTENT_TYPE, Accept="text/event-stream", Body=json.dumps(body)
    )
    # botocore raises the stream's error events (ModelStreamError...) as EventStreamError.
    return sse_chunks(event["PayloadPart"]["Bytes"] for event in response["Body"] if "PayloadPart" in event)


def answered_by_adapter(response: dict[str, Any], adapter: str) -> bool:
    """Whether vLLM answered with `adapter`: it reports the public name or `name@version`."""
    model = str(response.get("model", ""))
    return model == adapter or model.startswith(adapter + "@")


def _from_adapter(response: dict[str, Any], adapter: str | None, endpoint: str) -> dict[str, Any]:
    """`response` (a completion or a chunk), refused when it came from another model than the adapter asked for."""
    if adapter and not answered_by_adapter(response, adapter):
        raise fail(
            f"SageMaker endpoint {endpoint!r} answered with model {response.get('model')!r}, not adapter {adapter!r}: "
            "its /invocations did not select the adapter named in the body",
            EXIT_REFUSED,
        )
    return response


def invoke_sagemaker(runtime, endpoint: str, body: dict[str, Any]) -> dict[str, Any]:
    """One call through the SageMaker SDK's predictor with the chat body; the container's
    vLLM answers on /invocations. `runtime` is the sagemaker-runtime client it calls with."""
    os.environ.setdefault("SAGEMAKER_SUPPRESS_V2_WARNING", "1")  # v2 is the line that installs beside vLLM
    # The SDK logs its config-file search to stdout at INFO unless a level is set before import;
    # stdout is the answer's (and --json's).
    logging.getLogger("sagemaker.config").setLevel(logging.WARNING)
    from sagemaker.deserializers import JSONDeserializer
    from sagemaker.predictor import Predictor
    from sagemaker.serializers import JSONSerializer
    from sagemaker.session import Session

    session = Session(boto_session=boto3.Session(region_name=runtime.meta.region_name), sagemaker_runtime_client=runtime)
    predictor = Predictor(endpoint, sagemaker_session=session, serializer=JSONSerializer(), deserializer=JSONDeserializer())
    return predictor.predict(body)


def invoke(
    target: Annotated[str, typer.Argument(metavar="MODEL[:ADAPTER]", help="The model, or one of its adapters.")],
    prompt: Annotated[str, typer.Argument(help="The user message.")],
    url: Annotated[
        str | None, typer.Option("--url", help="Base URL of the fleet (the ALB), e.g. https://llm.example.com (default: the local fleet, when up).")
    ] = None,
    api_key: Annotated[str | None, typer.Option("--api-key", envvar=API_KEY_ENV, help="The fleet's API key (the local fleet's own by default).")] = None,
    sagemaker: Annotated[str | None, typer.Option("--sagemaker", metavar="ENDPOINT", help="Call a SageMaker endpoint instead.")] = None,
    region: Annotated[str | None, typer.Option("--region", help="AWS region for --sagemaker.")] = None,
    stream: Annotated[
        bool, typer.Option("--stream", help="With --sagemaker: InvokeEndpointWithResponseStream (the ALB path always streams).")
    ] = False,
    max_tokens: Annotated[int, typer.Option("--max-tokens", min=1)] = 256,
    temperature: Annotated[float | None, typer.Option("--temperature", min=0.0)] = None,
    as_json: JsonOpt = False,
) -> None:
    """Send one prompt and stream the answer as it arrives (reasoning models: reasoning shown apart)."""
    model, adapter = _split_target(target)
    served_name = adapter or model  # vLLM serves an adapter under its own name
    if sagemaker:
        runtime = boto3.client("sagemaker-runtime", region_name=region)
        body = chat_request(served_name, prompt, max_tokens=max_tokens, temperature=temperature, stream=stream)
        try:
            if stream:
                chunks = (_from_adapter(chunk, adapter, sagemaker) for chunk in stream_sagemaker(runtime, sagemaker, body))
                deltas = (chunk["choices"][0]["delta"] for chunk in chunks if chunk.get("choices"))
            else:
                response = _from_adapter(invoke_sagemaker(runtime, sagemaker, body), adapter, sagemaker)
                deltas = [response["choices"][0]["message"]]
            reasoning, answer = print_stream(deltas, as_json)
        except (BotoCoreError, ClientError, KeyError, IndexError, TypeError, ValueError) as exc:
            # the call failed, or the body is not a chat completion
            raise fail(f"SageMaker endpoint {sagemaker!r}: {type(exc).__name__}: {exc}", EXIT_REFUSED) from None
        result = {"model": served_name, "reasoning": reasoning, "content": answer}
    else:
        if url is None:
            state = _state_dir().load()
            if state is None:
                raise fail("no --url and no local fleet (`llmfleet local up`); pass the ALB's URL with --url", EXIT_BAD_INPUT)
            url, api_key = state.server_url, api_key or _state_dir().api_key()
        if not api_key:
            raise fail(f"no API key: pass --api-key or set {API_KEY_ENV}", EXIT_BAD_INPUT)
        body = chat_request(served_name, prompt, max_tokens=max_tokens, temperature=temperature, stream=True)
        result = _stream_openai(url.rstrip("/").removesuffix("/v1") + "/v1", api_key, body, as_json)
    if as_json:
        print(json.dumps(result, indent=2))
