"""`llmfleet plan` and `llmfleet schema`: a fleet's serving plans, and the manifest's JSON Schema."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich import box
from rich.table import Table

from llmfleet.model_store.gateway.consumers import consumers_json_schema
from llmfleet.model_store.contract.manifest import fleet_json_schema
from llmfleet.model_store.contract.plan import AnyPlan, ImagePlan, vllm_argv
from llmfleet.scripts import lock_cli
from llmfleet.scripts.cli_common import FleetOpt, JsonOpt, console, errors, fleet_file, load_and_plan
from llmfleet.model_store.contract.kinds import IMAGE, KINDS


def plan_summary(plan: AnyPlan) -> dict:
    """The stable, documented JSON form of one model's plan (`llmfleet plan --json`)."""
    if KINDS[plan.kind] is IMAGE:
        return _image_summary(plan)
    return {
        **_placement(plan),
        "tensor_parallel_size": plan.tensor_parallel_size,
        "weights_bytes": plan.memory.weights_bytes,
        "kv_bytes_per_token": plan.memory.kv_bytes_per_token,
        "max_concurrency": plan.memory.max_concurrency,
        "token_capacity": plan.memory.token_capacity,
        "gpu_memory_utilization": plan.vllm.gpu_memory_utilization,
        "cost_per_hour_usd": plan.cost_per_hour_usd,
        "startup_grace_seconds": plan.timing.startup_grace_seconds,
        "vllm_args": vllm_argv(plan.vllm, model=plan.model_location()),
        "reasons": plan.reasons,
        "plan": plan.model_dump(mode="json"),
    }


def _placement(plan: AnyPlan) -> dict:
    """The keys every kind of plan shares: where it runs."""
    return {
        "name": plan.model_name,
        "instance_type": plan.instance_type,
        "sagemaker_instance_type": plan.sagemaker_instance_type,
        "targets": plan.targets,
        "gpu": plan.gpu_name,
        "gpus_per_instance": plan.gpus_per_instance,
        "gpu_memory_bytes": plan.gpu_memory_bytes,
    }


def _image_summary(plan: ImagePlan) -> dict:
    """An image model's plan: the same placement and cost keys, images in flight instead of tokens."""
    return {
        **_placement(plan),
        "kind": "image",
        "weights_bytes": plan.memory.weights_bytes,
        "max_images_in_flight": plan.memory.max_images_in_flight,
        "planned_batch": plan.image.max_batch,
        "peak_bytes": plan.memory.peak_bytes,
        "offload": plan.image.offload,
        "cost_per_hour_usd": plan.cost_per_hour_usd,
        "startup_grace_seconds": plan.timing.startup_grace_seconds,
        "reasons": plan.reasons,
        "plan": plan.model_dump(mode="json"),
    }


def _fits(plan: AnyPlan) -> str:
    """The table's capacity cell: sequences at the context length, or images in flight at their size."""
    if KINDS[plan.kind] is IMAGE:
        return f"{plan.image.max_batch} img @ {plan.image.max_size}px"
    return f"{plan.memory.max_concurrency} @ {plan.vllm.max_model_len:,}"


def plan(
    fleet: FleetOpt = None,
    as_json: JsonOpt = False,
    refresh: Annotated[bool, typer.Option("--refresh", help="Resolve the architecture facts again (store, Hub) and rewrite fleet.lock.json first.")] = False,
) -> None:
    """Plan every model of the fleet: instance, GPUs, tensor parallelism, memory, cost, and why.

    Facts come from fleet.lock.json beside the manifest (`llmfleet lock`), never the network;
    without a lock, from local checkpoints and the bundled configs."""
    fleet = fleet_file(fleet)
    if refresh:
        lock_cli.resolve_and_write(fleet, report=errors if as_json else console)
    manifest, plans = load_and_plan(fleet)
    if as_json:
        print(json.dumps({"fleet": manifest.name, "stage": manifest.stage, "models": [plan_summary(p) for p in plans]}, indent=2))
        return
    # Readable at 80 columns: memory figures are in the reasons below the table.
    table = Table(title=f"fleet {manifest.name} ({manifest.stage}, {manifest.region})", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("model", overflow="fold", max_width=22)
    table.add_column("instance", no_wrap=True, min_width=16)
    for column, width in (("GPUs", 9), ("TP", 2), ("fits @ ctx", 12), ("$/h", 6)):
        table.add_column(column, justify="right", no_wrap=True, min_width=width)
    for p in plans:
        instance = p.instance_type + (f"\n{p.sagemaker_instance_type}" if p.sagemaker_instance_type else "")
        gpu = p.gpu_name.removeprefix("NVIDIA ").replace(" 80GB", "-80").replace(" 40GB", "-40")
        table.add_row(
            p.model_name,
            instance,
            f"{p.gpus_per_instance}x {gpu}",
            str(p.tensor_parallel_size),
            _fits(p),
            f"{p.cost_per_hour_usd:.2f}",
        )
    console.print(table)
    for p in plans:
        console.print(f"\n[bold]{p.model_name}[/]")
        for reason in p.reasons:
            console.print(f"  - {reason}", highlight=False)
    sources = "; ".join(dict.fromkeys(source for p in plans for source in p.price_source.split("; ")))
    console.print(f"\n$/h: one server on each target, on-demand; prices: {sources}", style="dim", soft_wrap=True)


def schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")] = None,
    consumers: Annotated[bool, typer.Option("--consumers", help="The gateway's consumers file instead of the fleet's.")] = False,
) -> None:
    """Write the fleet manifest's (or the consumers file's) JSON Schema, for editors (yaml-language-server)."""
    text = json.dumps(consumers_json_schema() if consumers else fleet_json_schema(), indent=2) + "\n"
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        errors.print(f"wrote {output}")
