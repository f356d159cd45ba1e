"""The vLLM command line: built from the plan, checked by vLLM's own parser before start.

vLLM is imported lazily (its import costs seconds and pulls torch); only the parser is
used here, so an argv vLLM would reject fails the container before any weight is read.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

from llmfleet.model_store.contract.container import DEFAULT_HOST, EXIT_ARGV, PLAN_ENV, STATE_DIR_ENV
from llmfleet.model_store.errors import LlmfleetError
from llmfleet.model_store.contract.plan import ServingPlan, vllm_argv

# `python -m vllm.entrypoints.openai.api_server` runs in both the vllm/vllm-openai image
# and the CPU build, whose `vllm` console script cannot find its distribution.
VLLM_MODULE = "vllm.entrypoints.openai.api_server"
MIDDLEWARE = "llmfleet.containers.entrypoint.middleware.LlmfleetMiddleware"
# vLLM's CLI starts its engine process with `spawn` unless this is set: a second Python start-up
# that imports vLLM again, ~15 s of an 8B model's warm start on an H200. Forked from the API
# server, which has not touched CUDA, the engine starts at once (39 s instead of 53 s,
# docs/planner.md). vLLM still spawns where fork is unsafe (CUDA already initialised in the
# parent), and its CPU build sets spawn for itself.
START_METHOD_ENV = "VLLM_WORKER_MULTIPROC_METHOD"
ENGINE_START_METHOD = "fork"
# LoRA resolver plugins would let a request name fetch an adapter from outside the store.
RESOLVER_ENV = ("VLLM_LORA_RESOLVER_CACHE_DIR", "VLLM_LORA_RESOLVER_HF_REPO_LIST")


class ArgvRejected(LlmfleetError):
    """vLLM's parser refused the argv built from the plan; the message carries its reason."""

    exit_code = EXIT_ARGV


def serve_argv(
    plan: ServingPlan, *, model: str, port: int, lora_modules: Mapping[str, str], host: str = DEFAULT_HOST
) -> list[str]:
    """The flags after `python -m vllm.entrypoints.openai.api_server` for this plan."""
    return [
        *vllm_argv(plan.vllm, model=model, port=port, host=host, lora_modules=dict(lora_modules) or None),
        "--middleware",
        MIDDLEWARE,
    ]


def serve_command(argv: list[str]) -> list[str]:
    return [sys.executable, "-m", VLLM_MODULE, *argv]


def serve_environment(base: Mapping[str, str], *, state_dir: str, plan: ServingPlan) -> dict[str, str]:
    """The child's environment: the container's, plus the plan it serves (the middleware
    derives every request bound from it), the middleware's state directory and
    runtime LoRA updating when the plan serves adapters (the middleware limits those routes
    to localhost); resolver plugins removed; vLLM's engine process forked unless the
    container says otherwise (ENGINE_START_METHOD)."""
    env = {key: value for key, value in base.items() if key not in RESOLVER_ENV}
    env[PLAN_ENV] = plan.to_json()
    env[STATE_DIR_ENV] = state_dir
    env.setdefault(START_METHOD_ENV, ENGINE_START_METHOD)
    if plan.vllm.enable_lora:
        env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] = "True"
    return env


def _serve_cli_args():
    """vLLM's serve-argument module: `entrypoints.launchers.cli_args` since 0.3x,
    `entrypoints.openai.cli_args` before (0.26, the newest build on torch 2.11 that
    `llmfleet verify` measures with)."""
    try:
        from vllm.entrypoints.launchers import cli_args
    except ImportError:
        from vllm.entrypoints.openai import cli_args
    return cli_args


def import_vllm_parser() -> None:
    """Import the parser modules (seconds); call early in a thread to overlap with the sync."""
    import vllm.config.lora  # noqa: F401
    import vllm.lora.peft_helper  # noqa: F401
    import vllm.model_executor.layers.quantization  # noqa: F401
    import vllm.model_executor.model_loader  # noqa: F401
    import vllm.reasoning  # noqa: F401
    import vllm.utils.argparse_utils  # noqa: F401

    _serve_cli_args()


def validate_argv(argv: list[str]) -> None:
    """Parse `argv` with vLLM's own serve parser and its pre-load checks; raise ArgvRejected.

    The parser takes any string for --quantization, --reasoning-parser and --load-format
    (they are checked only while the engine starts), so those are looked up in vLLM's
    registries here.
    """
    import contextlib
    import io
    from typing import get_args

    from vllm.model_executor.layers.quantization import QUANTIZATION_METHODS
    from vllm.model_executor.model_loader import LoadFormats
    from vllm.reasoning import ReasoningParserManager
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    cli_args = _serve_cli_args()
    make_arg_parser, validate_parsed_serve_args = cli_args.make_arg_parser, cli_args.validate_parsed_serve_args
    parser = make_arg_parser(FlexibleArgumentParser())
    stderr = io.StringIO()
    try:
        with contextlib.redirect_stderr(stderr):
            args = parser.parse_args(argv)
    except SystemExit:
        reason = stderr.getvalue().strip().splitlines()
        raise ArgvRejected(f"vLLM's parser rejected the argv: {reason[-1] if reason else 'no reason given'}") from None
    if args.quantization is not None and args.quantization not in QUANTIZATION_METHODS:
        raise ArgvRejected(f"--quantization {args.quantization!r} is not one of vLLM's methods {QUANTIZATION_METHODS}")
    parsers = ReasoningParserManager.list_registered()
    if args.reasoning_parser and args.reasoning_parser not in parsers:
        raise ArgvRejected(f"--reasoning-parser {args.reasoning_parser!r} is not registered in vLLM; registered: {parsers}")
    load_formats = get_args(LoadFormats)
    if args.load_format not in load_formats:
        raise ArgvRejected(f"--load-format {args.load_format!r} is not one of vLLM's {list(load_formats)}")
    try:
        validate_parsed_serve_args(args)
    except (TypeError, ValueError) as exc:
        raise ArgvRejected(f"vLLM's serve checks rejected the argv: {exc}") from None


def adapter_refusal(path: str, plan: ServingPlan) -> str | None:
    """Why vLLM would refuse the adapter in `path` at startup (its own PEFT checks), or None.

    An adapter in `--lora-modules` that vLLM refuses stops the whole server from starting;
    checked first, it is left out and the base model and the other adapters still serve.
    """
    from vllm.config.lora import LoRAConfig
    from vllm.lora.peft_helper import PEFTHelper

    lora_config = LoRAConfig(max_lora_rank=plan.vllm.max_lora_rank, max_loras=plan.vllm.max_loras)
    try:
        PEFTHelper.from_local_dir(path, plan.vllm.max_model_len).validate_legal(lora_config)
    except (OSError, ValueError, TypeError) as exc:
        return str(exc)
    return None
