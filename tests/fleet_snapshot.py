"""The plans and templates of the example fleets, written to a folder, and two such folders compared.

A change meant to move code without changing behaviour is shown by two snapshots, one of the
tree before and one after, that compare equal:

    python tests/fleet_snapshot.py dump before/     # on the old tree
    python tests/fleet_snapshot.py dump after/      # on the new tree
    python tests/fleet_snapshot.py compare before/ after/

`dump` writes, per fleet, `llmfleet plan --json` and every CloudFormation template of the CDK
app synthesized with cdk.json's context (the same as `npx cdk synth`). `compare` lists every file
that differs and exits 1 if any does. The serving image's asset hash covers the files under
`containers/`, so an edit there changes it (and only it); `--ignore-image-hash` masks that hash,
and `compare` says how many places it masked.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
FLEETS = ("fleet.yaml", "examples/image/fleet.yaml")
# A CDK asset hash: 64 hex digits, in image tags, asset paths and the asset manifest.
ASSET_HASH = re.compile(r"\b[0-9a-f]{64}\b")


def slug(fleet: str) -> str:
    return fleet.removesuffix(".yaml").replace("/", "-")


def dump_plan(fleet: str, out: Path) -> None:
    result = subprocess.run(  # noqa: S603 - our own CLI, fixed arguments
        [sys.executable, "-m", "llmfleet.scripts", "plan", "--json", "-f", fleet],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    (out / "plan.json").write_text(result.stdout)


def dump_templates(fleet: str, out: Path) -> None:
    """The app synthesized in a child process: each fleet in a fresh jsii runtime."""
    code = (
        "import json, sys, aws_cdk as cdk\n"
        "from llmfleet.stacks.fleet import compose_fleet\n"
        "context = {**json.load(open('cdk.json'))['context'], 'fleet': sys.argv[1]}\n"
        "app = cdk.App(context=context, outdir=sys.argv[2])\n"
        "compose_fleet(app)\n"
        "app.synth()\n"
    )
    cdk_out = out / "cdk.out"
    subprocess.run([sys.executable, "-c", code, fleet, str(cdk_out)], cwd=REPO, check=True)  # noqa: S603
    for template in sorted(cdk_out.glob("*.template.json")):
        # Re-serialised with sorted keys: the comparison is of content, not of dict order.
        (out / template.name).write_text(json.dumps(json.loads(template.read_text()), indent=1, sort_keys=True))
    subprocess.run(["rm", "-rf", str(cdk_out)], check=True)  # noqa: S603,S607 - asset staging, not compared


def dump(folder: Path) -> None:
    for fleet in FLEETS:
        out = folder / slug(fleet)
        out.mkdir(parents=True, exist_ok=True)
        dump_plan(fleet, out)
        dump_templates(fleet, out)
        print(f"{fleet}: {len(list(out.iterdir()))} files in {out}")


def compare(before: Path, after: Path, *, ignore_image_hash: bool) -> int:
    """Print what differs; 0 when the two snapshots are the same."""
    names = sorted({p.relative_to(before) for p in before.rglob("*") if p.is_file()} | {
        p.relative_to(after) for p in after.rglob("*") if p.is_file()
    })
    different, masked = [], 0
    for name in names:
        old, new = before / name, after / name
        if not old.is_file() or not new.is_file():
            different.append(f"{name}: only in {'after' if new.is_file() else 'before'}")
            continue
        a, b = old.read_text(), new.read_text()
        if a != b and ignore_image_hash:
            a, n1 = ASSET_HASH.subn("<asset-hash>", a)
            b, n2 = ASSET_HASH.subn("<asset-hash>", b)
            masked += max(n1, n2) if a == b else 0
        if a != b:
            different.append(f"{name}: differs")
    for line in different:
        print(line)
    print(f"{len(names)} files compared, {len(different)} differ" + (f", {masked} asset hashes masked" if masked else ""))
    return 1 if different else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dump").add_argument("folder", type=Path)
    cmp = sub.add_parser("compare")
    cmp.add_argument("before", type=Path)
    cmp.add_argument("after", type=Path)
    cmp.add_argument("--ignore-image-hash", action="store_true", help="mask CDK asset hashes (the image's content)")
    args = parser.parse_args(argv)
    if args.command == "dump":
        dump(args.folder)
        return 0
    return compare(args.before, args.after, ignore_image_hash=args.ignore_image_hash)


if __name__ == "__main__":
    raise SystemExit(main())
