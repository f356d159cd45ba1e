"""`make bench`: run every benchmark in scripts/benchmarks/ and print figures and ratios.

Each module there exposes `run() -> None` that prints its own section. Benchmarks
measure; they never assert a time. `python -m llmfleet.scripts.bench NAME...` runs a subset.
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
import time

import llmfleet.scripts.benchmarks as benchmarks


def main(selected: list[str]) -> int:
    names = [m.name for m in pkgutil.iter_modules(benchmarks.__path__) if not m.name.startswith("_")]
    unknown = sorted(set(selected) - set(names))
    if unknown:
        print(f"unknown benchmark(s) {unknown}; available: {names}", file=sys.stderr)
        return 2
    failed = []
    for name in selected or names:
        print(f"\n=== {name} ===", flush=True)
        started = time.perf_counter()
        try:
            importlib.import_module(f"llmfleet.scripts.benchmarks.{name}").run()
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            failed.append(name)
            print(f"benchmark {name} failed: {exc!r}", file=sys.stderr)
        print(f"({name}: {time.perf_counter() - started:.1f} s)", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
