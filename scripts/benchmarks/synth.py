"""CDK synthesis time for generated fleets of 1, 10 and 30 models.

Each fleet is the example fleet's models repeated under new names (so every path runs: ECS,
SageMaker, both, scale-to-zero) and synthesized as app.py does: compose the stacks, then
`app.synth()`, with cdk-nag attached and, for its share, without.

The first synthesis in a process pays a fixed warm-up (jsii loads aws-cdk-lib's modules,
CDK loads its template validation rules): a few seconds whatever the fleet. It is printed
apart; the per-size figures are then measured in the same, warm process, each with a fresh
App, rounds interleaved across sizes and cdk-nag on/off (the jsii process only grows, so
later runs are not favoured), best of ROUNDS (the machine is shared). Growth ratios are
against the model-count ratio: 1.0 means linear.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SIZES = (1, 10, 30)
ROUNDS = 3


def generated_fleet(models: int) -> dict:
    """The example fleet's models cycled to `models` entries, names and sources made unique."""
    example = yaml.safe_load((REPO / "fleet.yaml").read_text())
    specs = []
    for index in range(models):
        spec = dict(example["models"][index % len(example["models"])])
        spec["name"] = f"{spec['name'][:33]}-{index:03d}"
        spec["source"] = f"s3://llmfleet-store/models/{spec['name']}"
        specs.append(spec)
    return {**example, "models": specs}


def synthesize(fleet_path: Path, outdir: Path, compliance: bool) -> dict:
    import aws_cdk as cdk

    from llmfleet.stacks.fleet import compose_fleet

    context = json.loads((REPO / "cdk.json").read_text())["context"]
    started = time.perf_counter()
    app = cdk.App(context={**context, "fleet": str(fleet_path)}, outdir=str(outdir))
    fleet = compose_fleet(app, compliance_checks=compliance)
    composed = time.perf_counter()
    app.synth()
    done = time.perf_counter()
    resources = sum(len(json.loads(p.read_text())["Resources"]) for p in outdir.glob("*.template.json"))
    return {"compose": composed - started, "synth": done - composed, "total": done - started,
            "stacks": len(fleet.stacks), "resources": resources}


def measure_all(workdir: Path) -> None:
    """Runs in a fresh process; prints its tables."""
    fleets = {}
    for models in SIZES:
        fleets[models] = workdir / f"fleet-{models}.yaml"
        fleets[models].write_text(yaml.safe_dump(generated_fleet(models), sort_keys=False))
    started = time.perf_counter()
    import aws_cdk  # noqa: F401  (the jsii start-up, timed apart)

    imported = time.perf_counter()
    first = synthesize(fleets[1], workdir / "warm-up", compliance=True)
    print(f"process start-up: import aws_cdk {imported - started:.2f} s; first synthesis (1 model, warm-up) "
          f"{first['total']:.2f} s")
    runs: dict[tuple[bool, int], list[dict]] = {}
    for round_ in range(ROUNDS):
        for models in SIZES:
            # Alternate which variant goes first: the one after pays the other's garbage collection.
            for compliance in (True, False) if (round_ + models) % 2 == 0 else (False, True):
                outdir = workdir / f"out-{models}-{compliance}-{round_}"
                runs.setdefault((compliance, models), []).append(synthesize(fleets[models], outdir, compliance))
    for compliance in (True, False):
        print(f"cdk-nag {'on' if compliance else 'off'}:")
        print(f"  {'models':>6} {'stacks':>6} {'resources':>9} {'compose s':>9} {'synth s':>8} {'total s':>8} "
              f"{'s/model':>8} {'growth':>7} {'/models':>8}")
        previous = None
        for models in SIZES:
            best = min(runs[compliance, models], key=lambda f: f["total"])
            growth = best["total"] / previous[1]["total"] if previous else None
            per_models = growth / (models / previous[0]) if previous else None
            print(
                f"  {models:>6} {best['stacks']:>6} {best['resources']:>9} {best['compose']:>9.2f} {best['synth']:>8.2f} "
                f"{best['total']:>8.2f} {best['total'] / models:>8.2f} "
                f"{'' if growth is None else f'{growth:.2f}':>7} {'' if per_models is None else f'{per_models:.2f}':>8}",
                flush=True,
            )
            previous = (models, best)
    print("growth: total time over the previous size's; /models: growth over the model-count ratio (1.0 = linear)")


def run() -> None:
    with tempfile.TemporaryDirectory(prefix="llmfleet-synth-bench-") as tmp:
        # A fresh interpreter, as `cdk synth` starts one: nothing warmed by earlier benchmarks.
        subprocess.run([sys.executable, "-m", "llmfleet.scripts.benchmarks.synth", tmp], cwd=REPO, check=True)


if __name__ == "__main__":
    measure_all(Path(sys.argv[1]))
