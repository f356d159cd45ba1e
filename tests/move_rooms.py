"""Move model_store/ into sub-packages by concern, and every reference with it. Re-runnable on any
checkout that still has the flat layout (it refuses one that has not):

    python tests/move_rooms.py            # from the repository root; then review `git status`

1. whole modules are `git mv`ed (MOVES; a package moves with its files);
2. `plan.py` and `image_plan.py` are split by top-level symbol (SPLITS): each new module gets the
   statements mapped to it, in their order, with the original imports it still uses and imports of
   what it uses from its siblings;
3. every import of the project (any depth, any file) is rewritten from the old module to the new,
   split per destination for the split modules;
4. dotted names (`llmfleet.model_store.plan.vllm_argv`, `model_store.store`) and paths
   (`model_store/plan.py`) in code, docs and configuration follow;
5. the package list in pyproject.toml and `Path(__file__)`-relative data paths follow.

A symbol of a split module that SPLITS does not name (someone added it since) goes to its
module's DEFAULT and is reported, as is every `__file__` use in a moved module.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

REPO = Path.cwd()
PKG = "llmfleet.model_store"
SKIP_DIRS = {".git", ".venv", ".venv-checkov", "node_modules", "cdk.out", "__pycache__", ".pytest_cache", ".hypothesis"}
TEXT_SUFFIXES = {".py", ".md", ".toml", ".json", ".sh", ".yml", ".yaml", ".cfg", ".txt", ""}
SELF = Path(__file__).resolve()

ROOMS = {
    "contract": "What every side reads: the fleet manifest, the plan's types, the container's environment, "
    "its exit codes and paths, metric names, request limits, who may call which path. Imports nothing but the error root.",
    "facts": "Architecture facts: model families, checkpoints, diffusers pipelines, the Hub, the lock file.",
    "planning": "Decisions from facts and the catalog: the text and image planners, the fit search, "
    "lifecycle timings and scaling, the KV allocator, the performance model, edge limits. Never imports store/.",
    "store": "The model store: its S3 layout and transfers, adapter validation, the registry, access "
    "policies, the compile-cache key, the container's boot decision. Never imports planning/.",
    "ops": "Operations over a running fleet: status, verify on a GPU, boot logs, chat, AWS error lines.",
    "gateway": "The API gateway in front of the fleet: its consumers file, the contract with its container, "
    "its configuration derived from the plans, the per-request policy, consumers' keys and the usage table.",
}

# old module (under model_store) -> new module. A package (families) moves with its modules.
MOVES = {
    "container_contract": "contract.container",
    "layout": "contract.layout",
    "manifest": "contract.manifest",
    "telemetry": "contract.telemetry",
    "request_limits": "contract.request_limits",
    "front_door": "contract.front_door",
    "inference_components": "contract.inference_components",
    "architectures": "facts.architectures",
    "families": "facts.families",
    "pipelines": "facts.pipelines",
    "hub": "facts.hub",
    "lock": "facts.lock",
    "catalog": "planning.catalog",
    "kv_cache": "planning.kv_cache",
    "load_plan": "planning.load_plan",
    "performance": "planning.performance",
    "fleet": "planning.fleet",
    "standin": "planning.standin",
    "edge": "planning.edge",
    "store": "store.store",
    "adapters": "store.adapters",
    "registry": "store.registry",
    "access": "store.access",
    "compile_cache": "store.compile_cache",
    "boot": "store.boot",
    "hub_import": "store.hub_import",
    "status": "ops.status",
    "aws_status": "ops.aws_status",
    "verify": "ops.verify",
    "boot_log": "ops.boot_log",
    "chat": "ops.chat",
    "aws_errors": "ops.aws_errors",
    "load_verify": "ops.load_verify",
    "consumers": "gateway.consumers",
    "gateway_contract": "gateway.contract",
    "gateway_config": "gateway.config",
    "gateway_policy": "gateway.policy",
    "gateway_keys": "gateway.keys",
    "gateway_usage": "gateway.usage",
}

PLAN_TYPES = "contract.plan"
TEXT = "planning.text"
FIT = "planning.fit"
LIFECYCLE = "planning.lifecycle"
IMAGE = "planning.image"
KINDS = "planning.kinds"

# split module -> (default destination, {symbol: destination}, docstring per destination)
SPLITS: dict[str, tuple[str, dict[str, str]]] = {
    "plan": (
        TEXT,
        {
            **dict.fromkeys(
                ["DEFAULT_MODEL_ROOT", "Frozen", "_flag", "VllmSettings", "MemoryPlan", "TimingPlan", "AutoscalingPlan",
                 "PerformancePlan", "DeploymentPlan", "ServingPlan", "json_flag", "vllm_argv", "GIB", "MIB"],
                PLAN_TYPES,
            ),
            **dict.fromkeys(
                ["PlanError", "Candidate", "Choice", "cheapest_fit", "hourly_price", "hardware_refusal", "_valid_tp_sizes"],
                FIT,
            ),
            **dict.fromkeys(
                ["IMAGE_PULL_SECONDS", "GPU_LOAD_BYTES_PER_SECOND", "ENGINE_START_SECONDS", "COMPILE_SECONDS",
                 "PROFILE_AND_GRAPHS_SECONDS", "ENGINE_WARMUP_SECONDS_PER_RANK", "GRACE_SAFETY_FACTOR", "DRAIN_SECONDS",
                 "SHUTDOWN_MARGIN_SECONDS", "ASSUMED_REQUEST_SECONDS", "DEFAULT_IDLE_MINUTES", "ROOT_VOLUME_GIB",
                 "HOURS_PER_MONTH", "WAKE_ALARM_SECONDS", "WARM_INSTANCE_START_SECONDS", "COLD_INSTANCE_LAUNCH_SECONDS",
                 "SAGEMAKER_PROVISION_SECONDS", "kernel_warmup_seconds", "boot_seconds", "startup_grace",
                 "root_volume_gib", "warm_pool_size", "warm_pool_usd_per_month", "wake_seconds", "scale_to_zero",
                 "ScalingTargets", "_autoscaling", "deployment_fields", "S3_SYNC_BYTES_PER_SECOND",
                 "MAMBA2_KERNEL_WARMUP_SECONDS", "MIN_GRACE_SECONDS", "MAX_GRACE_SECONDS", "GP3_USD_PER_GIB_MONTH"],
                LIFECYCLE,
            ),
            **dict.fromkeys(
                ["DTYPE_BYTES", "GPU_MEMORY_UTILIZATION", "VLLM_DEFAULT_GPU_MEMORY_UTILIZATION", "RUNTIME_RESERVE_BYTES",
                 "NCCL_RESERVE_BYTES", "MAX_NUM_SEQS_CAP", "TYPICAL_REQUEST_TOKENS", "UNSERVABLE_QUANTIZATION",
                 "weight_format", "serving_dtype", "weight_bytes", "kv_element_bytes", "kv_bytes_per_token", "lora_bytes",
                 "activation_bytes", "_memory_at", "_batched_tokens", "_evaluate", "_boot_seconds",
                 "Sizing", "size_for_concurrency", "plan_model", "_check_fields_fit", "_sizing_reasons", "_batching",
                 "_vllm_settings", "_kv_reason", "_speculative_config"],
                TEXT,
            ),
            "plan_fleet": KINDS,
        },
    ),
    "image_plan": (
        IMAGE,
        {
            **dict.fromkeys(
                ["Offload", "ImageSettings", "ImageMemoryPlan", "ImagePlan", "AnyPlan", "_kind_of", "_ANY_PLAN",
                 "plan_from_json"],
                PLAN_TYPES,
            ),
            **dict.fromkeys(
                ["TRANSFORMER_TENSORS_PER_TOKEN", "VAE_WORKING_TENSORS", "ACTIVATION_BYTES", "IMAGE_SERVER_START_SECONDS",
                 "ASSUMED_IMAGE_SECONDS", "HOST_MEMORY_SHARE", "component_bytes", "activation_bytes_per_image", "_memory",
                 "_evaluate", "_autoscaling", "plan_image_model", "latency_alarm_ms"],
                IMAGE,
            ),
            "plan_any_model": KINDS,
        },
    ),
}
DOCSTRINGS = {
    PLAN_TYPES: "The plan's types: one frozen, JSON-serialisable plan per model kind (`ServingPlan` for vLLM,\n"
    "`ImagePlan` for the image server), what the stacks, the container and `status` read; the argv is a\n"
    "view of it (`vllm_argv`). Decided by planning/, never here.",
    TEXT: "The text-model planner: weight, KV, LoRA and activation bytes per GPU from the model's parts,\n"
    "the vLLM settings, and `plan_model`, the recipe that composes them with the catalog.",
    FIT: "The fit search: each candidate instance and tensor-parallel size the catalog offers, the\n"
    "cheapest that holds the load, and the planner's error.",
    LIFECYCLE: "A server's life as the plan times it: boot and its health-check grace, drain, the root\n"
    "volume, autoscaling targets and scale-to-zero (wake times, warm pools).",
    IMAGE: "The image-model planner: a diffusers pipeline's components, its activations at the\n"
    "manifest's image size, and the cheapest instance that holds them.",
    KINDS: "Every model of a fleet planned by its kind's planner.",
}
# Names each split module's statements bind at top level that are not definitions (TypeVars...).
# Where a name of the whole split module points: dotted (code, mostly the plan's types) and as a
# path (prose, mostly about the planner).
PRIMARY = {"plan": PLAN_TYPES, "image_plan": IMAGE}
PRIMARY_PATH = {"plan": TEXT, "image_plan": IMAGE}


# References the renames above cannot see (a path built with `/`): file, text, replacement.
SPECIAL = [
    ("tests/synth/test_app.py", '(staged / "model_store" / "plan.py")', '(staged / "model_store" / "contract" / "plan.py")'),
    ("tests/synth/test_app.py", '(staged / "model_store" / "gateway_contract.py")', '(staged / "model_store" / "gateway" / "contract.py")'),
]


def run(*args: str) -> None:
    subprocess.run(args, cwd=REPO, check=True)


def module_path(module: str) -> Path:
    return REPO / "model_store" / Path(*module.split("."))


def defined_names(node: ast.stmt) -> list[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [node.name]
    if isinstance(node, ast.Assign):
        return [n.id for t in node.targets for n in ast.walk(t) if isinstance(n, ast.Name)]
    if isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
        return [node.target.id]
    if isinstance(node, ast.TypeAlias):
        return [node.name.id]
    return []


def statement_span(lines: list[str], node: ast.stmt, previous_end: int) -> tuple[int, int]:
    """Lines [start, end) of a statement with its decorators and the comment block right above it."""
    start = min([node.lineno, *(d.lineno for d in getattr(node, "decorator_list", []))]) - 1
    while start > previous_end and lines[start - 1].lstrip().startswith("#"):
        start -= 1
    return start, node.end_lineno


def used_names(source: str) -> set[str]:
    tree = ast.parse(source)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    # quoted forward references (class names) stay strings
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.fullmatch(r"[A-Z]\w*", node.value):
            names.add(node.value)
    return names


def split_module(old: str) -> tuple[dict[str, list[tuple[str, str]]], dict[str, str], list[ast.stmt]]:
    """destination -> body chunks ("def" or "", text); symbol -> destination; the module's import statements."""
    default, mapping = SPLITS[old]
    path = REPO / "model_store" / f"{old}.py"
    text = path.read_text()
    lines = text.splitlines(keepends=True)
    tree = ast.parse(text)
    chunks: dict[str, list[tuple[str, str]]] = defaultdict(list)
    symbols: dict[str, str] = {}
    imports: list[ast.stmt] = []
    previous_end = 0
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imports.append(node)
            previous_end = node.end_lineno
            continue
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and node is tree.body[0]:
            previous_end = node.end_lineno  # the module docstring: each part gets its own
            continue
        names = defined_names(node)
        if not names:
            raise SystemExit(f"model_store/{old}.py:{node.lineno}: a statement that defines nothing; place it by hand")
        destinations = {mapping.get(n, default) for n in names}
        if len(destinations) > 1:
            raise SystemExit(f"model_store/{old}.py:{node.lineno}: {names} map to {destinations}")
        (destination,) = destinations
        for n in names:
            if n not in mapping:
                print(f"note: {old}.{n} is not in SPLITS; it goes to {default}")
            symbols[n] = destination
        start, end = statement_span(lines, node, previous_end)
        chunks[destination].append(("def" if isinstance(node, (ast.FunctionDef, ast.ClassDef)) else "", "".join(lines[start:end])))
        previous_end = end
    return chunks, symbols, imports


def import_line(module: str, names: list[tuple[str, str | None]], indent: str = "") -> str:
    parts = [f"{n} as {a}" if a and a != n else n for n, a in sorted(set(names), key=lambda p: (p[0].lower(), p))]
    line = f"{indent}from {module} import {', '.join(parts)}"
    if len(line) <= 120:
        return line + "\n"
    return f"{indent}from {module} import (\n" + "".join(f"{indent}    {p},\n" for p in parts) + f"{indent})\n"


def new_module(old_module: str, symbol: str | None, symbols: dict[str, dict[str, str]]) -> str | None:
    """The new dotted module (under PKG) for `old_module` (under PKG), or None if it did not move.
    For a split module, `symbol` picks the part."""
    head, _, rest = old_module.partition(".")
    if head in SPLITS and not rest:
        if symbol is None:
            return PRIMARY[head]
        return symbols[head].get(symbol, SPLITS[head][0])
    if head in MOVES:
        return MOVES[head] + (f".{rest}" if rest else "")
    return None


def rewrite_imports(source: str, symbols: dict[str, dict[str, str]]) -> str:
    """Every import of a moved or split module of PKG rewritten; the rest of `source` untouched."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    edits: list[tuple[int, int, str]] = []
    for node in ast.walk(tree):
        indent = " " * node.col_offset if isinstance(node, ast.stmt) else ""
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == PKG:  # from llmfleet.model_store import telemetry [as t]
                out = []
                for alias in node.names:
                    moved = new_module(alias.name, None, symbols) if alias.name in MOVES or alias.name in SPLITS else None
                    if moved is None:
                        out.append(import_line(PKG, [(alias.name, alias.asname)], indent))
                        continue
                    parent, _, leaf = f"{PKG}.{moved}".rpartition(".")
                    out.append(import_line(parent, [(leaf, alias.asname or (alias.name if leaf != alias.name else None))], indent))
                new = "".join(out)
            elif node.module.startswith(PKG + "."):
                old = node.module[len(PKG) + 1 :]
                groups: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
                changed = False
                for alias in node.names:
                    moved = new_module(old, alias.name, symbols)
                    if moved is None:
                        groups[node.module].append((alias.name, alias.asname))
                    else:
                        changed = True
                        groups[f"{PKG}.{moved}"].append((alias.name, alias.asname))
                if not changed:
                    continue
                new = "".join(import_line(m, names, indent) for m, names in sorted(groups.items()))
            else:
                continue
        elif isinstance(node, ast.Import):
            out, changed = [], False
            for alias in node.names:
                name = alias.name
                if name.startswith(PKG + "."):
                    moved = new_module(name[len(PKG) + 1 :], None, symbols)
                    if moved is not None:
                        name, changed = f"{PKG}.{moved}", True
                out.append(f"{name} as {alias.asname}" if alias.asname else name)
            if not changed:
                continue
            new = f"{indent}import {', '.join(out)}\n"
        else:
            continue
        edits.append((node.lineno - 1, node.end_lineno, new))
    for start, end, new in sorted(edits, reverse=True):
        comment = re.search(r"\s+#.*$", lines[end - 1].rstrip("\n"))
        if comment and new.count("\n") == 1:  # keep a trailing comment on a one-line import
            new = new.rstrip("\n") + comment.group(0) + "\n"
        lines[start:end] = [new]
    return "".join(lines)


def merge_imports(source: str) -> str:
    """Top-level `from llmfleet... import` statements of one module merged into the first of them
    (a split module's names, imported once each from the old module, now come from one)."""
    tree = ast.parse(source)
    lines = source.splitlines(keepends=True)
    first: dict[str, ast.ImportFrom] = {}
    merged: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
    drop: list[ast.ImportFrom] = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("llmfleet."):
            if node.module in first:
                drop.append(node)
            else:
                first[node.module] = node
            merged[node.module] += [(a.name, a.asname) for a in node.names]
    if not drop:
        return source
    edits = [(n.lineno - 1, n.end_lineno, "") for n in drop]
    edits += [(n.lineno - 1, n.end_lineno, import_line(m, merged[m])) for m, n in first.items() if any(d.module == m for d in drop)]
    for start, end, new in sorted(edits, reverse=True):
        lines[start:end] = [new]
    return "".join(lines)


def import_lines(source: str) -> set[int]:
    """0-based numbers of the lines that hold import statements (any depth)."""
    return {
        line
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for line in range(node.lineno - 1, node.end_lineno)
    }


def split_sources(symbols: dict[str, dict[str, str]]) -> dict[str, str]:
    """New module -> its source, for every part of every split module."""
    parts: dict[str, list[tuple[str, str]]] = defaultdict(list)
    header_imports: dict[str, list[ast.stmt]] = defaultdict(list)
    texts: dict[str, str] = {}
    for old in SPLITS:
        chunks, _, imports = split_module(old)
        texts[old] = (REPO / "model_store" / f"{old}.py").read_text()
        for destination, body in chunks.items():
            parts[destination] += body
            header_imports[destination] += [(old, node) for node in imports]
    sources = {}
    for destination, body_chunks in parts.items():
        body = ""
        for i, (kind, chunk) in enumerate(body_chunks):
            if i:
                body += "\n\n\n" if kind or body_chunks[i - 1][0] else "\n"
            body += chunk.strip("\n")
        body += "\n"
        used = used_names(body)
        imports: dict[str, list[tuple[str, str | None]]] = defaultdict(list)
        plain: list[str] = []
        future = False
        for old, node in header_imports[destination]:
            if isinstance(node, ast.ImportFrom) and node.module == "__future__":
                future = True
                continue
            if isinstance(node, ast.Import):
                plain += [f"import {a.name}" + (f" as {a.asname}" if a.asname else "") for a in node.names
                          if (a.asname or a.name.split(".")[0]) in used]
                continue
            for alias in node.names:
                if (alias.asname or alias.name) not in used:
                    continue
                module, name = node.module, alias.name
                if module == PKG and (name in MOVES or name in SPLITS):  # from llmfleet.model_store import kv_cache
                    module, _, name = f"{PKG}.{new_module(name, None, symbols)}".rpartition(".")
                elif module.startswith(PKG + "."):
                    moved = new_module(module[len(PKG) + 1 :], name, symbols)
                    module = f"{PKG}.{moved}" if moved else module
                if module != f"{PKG}.{destination}":
                    imports[module].append((name, alias.asname))
        # what this part uses from its sibling parts (a name it defines itself is its own)
        own = {n for _, chunk in body_chunks for node in ast.parse(chunk).body for n in defined_names(node)}
        for old, owned in symbols.items():
            for name, where in owned.items():
                imported = {a or n for ns in imports.values() for n, a in ns}
                if where != destination and name in used and name not in own and name not in imported:
                    imports[f"{PKG}.{where}"].append((name, None))
        stdlib = sorted(m for m in imports if not m.startswith("llmfleet") and m.split(".")[0] in sys.stdlib_module_names)
        third = sorted(m for m in imports if not m.startswith("llmfleet") and m not in stdlib)
        ours = sorted(m for m in imports if m.startswith("llmfleet"))
        blocks = [
            "".join(f"{line}\n" for line in sorted(set(plain))) + "".join(import_line(m, imports[m]) for m in stdlib),
            "".join(import_line(m, imports[m]) for m in third),
            "".join(import_line(m, imports[m]) for m in ours),
        ]
        head = f'"""{DOCSTRINGS[destination]}\n"""\n\n' + ("from __future__ import annotations\n\n" if future else "")
        source = head + "\n".join(b for b in blocks if b) + "\n\n" + body
        sources[destination] = source
    return sources


def text_files() -> list[Path]:
    found = []
    for path in REPO.rglob("*"):
        if any(part in SKIP_DIRS for part in path.relative_to(REPO).parts) or not path.is_file() or path.resolve() == SELF:
            continue
        if path.suffix in TEXT_SUFFIXES and (path.suffix or path.name in ("Dockerfile", "Makefile")):
            found.append(path)
    return found


def rewrite_names(text: str, symbols: dict[str, dict[str, str]]) -> str:
    """Dotted names and paths of moved modules in any text (code after its imports, prose, config)."""
    olds = sorted({*MOVES, *SPLITS}, key=len, reverse=True)
    dotted = re.compile(r"(?<![\w./])((?:llmfleet\.)?model_store)\.(" + "|".join(olds) + r")(?![\w])((?:\.\w+)?)")

    def dotted_sub(match: re.Match) -> str:
        prefix, old, rest = match.groups()
        symbol = rest[1:] if rest else None
        if old in SPLITS:
            where = symbols[old].get(symbol, PRIMARY[old]) if symbol else PRIMARY[old]
        else:
            where = MOVES[old]
        return f"{prefix}.{where}{rest}"

    # `from llmfleet.model_store.plan import plan_model` in prose: the first name picks the part
    prose_import = re.compile(r"from ((?:llmfleet\.)?model_store)\.(" + "|".join(SPLITS) + r") import (\w+)")
    text = prose_import.sub(
        lambda m: f"from {m.group(1)}.{symbols[m.group(2)].get(m.group(3), SPLITS[m.group(2)][0])} import {m.group(3)}", text
    )
    text = dotted.sub(dotted_sub, text)
    pathed = re.compile(r"(?<![\w/])model_store/(" + "|".join(olds) + r")((?:\.py)|/)")

    def path_sub(match: re.Match) -> str:
        old, tail = match.groups()
        where = PRIMARY_PATH[old] if old in SPLITS else MOVES[old]
        if tail == "/" and old in SPLITS:
            return match.group(0)
        return f"model_store/{where.replace('.', '/')}{tail}"

    return pathed.sub(path_sub, text)


def main() -> int:
    if not (REPO / "model_store" / "plan.py").is_file() or (REPO / "model_store" / "contract").exists():
        print("model_store/ is not in its flat layout (no plan.py, or contract/ exists): nothing to do")
        return 1
    missing = [old for old in MOVES if not (module_path(old).with_suffix(".py").is_file() or module_path(old).is_dir())]
    if missing:
        print(f"not found, skipped: {missing}")
    unplaced = sorted(
        p.stem for p in (REPO / "model_store").glob("*.py")
        if p.stem not in MOVES and p.stem not in SPLITS and p.stem not in ("__init__", "errors")
    )
    if unplaced:
        print(f"note: model_store modules this script does not place (they stay at the top): {unplaced}")
    symbols = {old: split_module(old)[1] for old in SPLITS}
    sources = split_sources(symbols)

    sources_of = {old: module_path(old) if module_path(old).is_dir() else module_path(old).with_suffix(".py") for old in MOVES}
    used = {new.split(".")[0] for old, new in MOVES.items() if sources_of[old].exists()}
    used |= {d.split(".")[0] for _, mapping in SPLITS.values() for d in mapping.values()}
    for room, doc in ROOMS.items():
        if room not in used:
            continue
        (REPO / "model_store" / room).mkdir(exist_ok=True)
        (REPO / "model_store" / room / "__init__.py").write_text(f'"""{doc}"""\n')
        run("git", "add", f"model_store/{room}/__init__.py")
    for old, new in MOVES.items():
        source = sources_of[old]
        if not source.exists():
            continue
        target = module_path(new) if source.suffix != ".py" else module_path(new).with_suffix(".py")
        run("git", "mv", str(source.relative_to(REPO)), str(target.relative_to(REPO)))
    for old in SPLITS:
        run("git", "rm", "-q", f"model_store/{old}.py")
    for destination, source in sources.items():
        path = module_path(destination).with_suffix(".py")
        path.write_text(source)
        run("git", "add", str(path.relative_to(REPO)))

    for path in text_files():
        text = path.read_text()
        new = text
        if path.suffix == ".py":
            try:
                skip = import_lines(text)
            except SyntaxError:
                print(f"note: {path.relative_to(REPO)} does not parse; only its names rewritten")
                skip = set()
            lines = text.splitlines(keepends=True)
            new = "".join(line if i in skip else rewrite_names(line, symbols) for i, line in enumerate(lines))
            if skip:
                new = merge_imports(rewrite_imports(new, symbols))
        else:
            new = rewrite_names(text, symbols)
            if path.suffix == ".md":  # prose that names the families package by its own path
                new = re.sub(r"(?<![\w/])families/(?=\w+\.py)", "facts/families/", new)
        if new != text:
            path.write_text(new)

    for path in (REPO / "model_store").rglob("*.py"):
        text = path.read_text()
        if "__file__" in text and path.parent != REPO / "model_store":
            fixed = text.replace('Path(__file__).parent / "known_configs"', 'Path(__file__).parent.parent / "known_configs"')
            if fixed != text:
                path.write_text(fixed)
            else:
                print(f"note: {path.relative_to(REPO)} uses __file__; check its relative paths")

    for relpath, old_text, new_text in SPECIAL:
        path = REPO / relpath
        text = path.read_text() if path.is_file() else ""
        if old_text in text:
            path.write_text(text.replace(old_text, new_text))
        else:
            print(f"note: {relpath}: {old_text!r} not found; check it by hand")

    pyproject = REPO / "pyproject.toml"
    text = pyproject.read_text()
    block = re.search(r"^packages = \[\n(.*?)^\]", text, re.S | re.M)
    entries = set(block.group(1).splitlines(keepends=True)) | {f'    "{PKG}.{room}",\n' for room in ROOMS if room in used}
    text = text[: block.start(1)] + "".join(sorted(entries)) + text[block.end(1) :]
    pyproject.write_text(text)
    run("git", "add", "-A", "model_store", "pyproject.toml")
    print("moved; review with `git status` and run the tests")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
