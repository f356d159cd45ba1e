"""`llmfleet catalog`: the GPU instance types the planner chooses from, with their prices and
where each price was read."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from llmfleet.model_store.planning.catalog import GpuInstance, INSTANCES, with_gpu
from llmfleet.scripts.cli_common import EXIT_BAD_INPUT, JsonOpt, console, fail

TABLE_WIDTH = 100
GpuOpt = Annotated[
    str | None,
    typer.Option("--gpu", help="Only instances whose GPU name contains this, ignoring case (h200, L40S, b200)."),
]


def _money(price: float | None) -> str:
    return "-" if price is None else f"{price:.2f}"


def _precisions(instance: GpuInstance) -> str:
    return " ".join(name for name, native in (("FP8", instance.gpu.fp8), ("FP4", instance.gpu.fp4)) if native) or "-"


def catalog_table(instances: tuple[GpuInstance, ...]) -> Table:
    """One row per instance, 98 characters wide (no borders, GPU names without "NVIDIA")."""
    table = Table(box=None, pad_edge=False, header_style="bold", title="GPU catalog (on-demand, us-east-1)")
    for header, justify in (
        ("instance", "left"),
        ("SageMaker", "left"),
        ("GPUs", "left"),
        ("GiB/GPU", "right"),
        ("CC", "right"),
        ("FP8/FP4", "left"),
        ("NVMe GB", "right"),
        ("$/h EC2", "right"),
        ("$/h SM", "right"),
    ):
        table.add_column(header, justify=justify, no_wrap=True)
    for i in instances:
        table.add_row(
            i.name,
            i.sagemaker_name or "-",
            f"{i.gpu_count}x {i.gpu.name.removeprefix('NVIDIA ')}",
            f"{i.gpu.memory_mib / 1024:.1f}",
            f"{i.gpu.compute_capability:.1f}",
            _precisions(i),
            str(i.nvme_gb),
            _money(i.price_usd_hour),
            _money(i.sagemaker_price_usd_hour),
        )
    return table


def price_sources(instances: tuple[GpuInstance, ...]) -> dict[str, list[tuple[str, list[str]]]]:
    """Per target (EC2, SageMaker), each distinct price source with the instances read from it,
    the most used source first."""
    sources: dict[str, list[tuple[str, list[str]]]] = {}
    for target, source_of in (("EC2", lambda i: i.price_source), ("SageMaker", lambda i: i.sagemaker_price_source)):
        grouped: dict[str, list[str]] = {}
        for i in instances:
            grouped.setdefault(source_of(i), []).append(i.name)
        sources[target] = sorted(grouped.items(), key=lambda item: -len(item[1]))
    return sources


def catalog(as_json: JsonOpt = False, gpu: GpuOpt = None) -> None:
    """The GPU instance types the planner chooses from, with their on-demand prices.

    `llmfleet plan` puts each model on the cheapest instance of this catalog on which it fits
    (the sum of its targets' prices); serving.instance_type in fleet.yaml must name one of them.
    An instance without a SageMaker price is never chosen for a SageMaker target. GiB/GPU is
    nvidia-smi's memory.total, what vLLM's gpu_memory_utilization is a fraction of; CC is the
    CUDA compute capability. Where and when each price was read is listed below the table;
    --json prints every field of every instance."""
    instances = INSTANCES if gpu is None else with_gpu(gpu)
    if not instances:
        known = sorted({i.gpu.name for i in INSTANCES})
        raise fail(f"--gpu {gpu!r} matches no GPU in the catalog; its GPUs are: {', '.join(known)}", EXIT_BAD_INPUT)
    if as_json:
        print(json.dumps([i.to_record() for i in instances], indent=2))
        return
    # Piped or captured output has no width of its own: rich would assume 80 and cut the table.
    out = console if console.is_terminal else Console(width=max(console.width, TABLE_WIDTH))
    out.print(catalog_table(instances))
    for target, groups in price_sources(instances).items():
        out.print(f"\n{target} prices:", style="bold")
        for n, (source, names) in enumerate(groups):
            which = ", ".join(names) if n else ("the others" if len(groups) > 1 else "all")
            out.print(f"  {which}: {source}", highlight=False, markup=False)
