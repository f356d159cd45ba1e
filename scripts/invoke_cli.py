"""`llmfleet invoke`: one prompt to a model or adapter, through the load balancer (OpenAI SDK),
the local fleet, or a SageMaker endpoint (boto3's sagemaker-runtime client)."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

import boto3
import typer
from botocore.exceptions import BotoCoreError, ClientError
from rich.markup import escape

from llmfleet.model_store.ops.aws_errors import AwsError
from llmfleet.model_store.ops.chat import (
    answered_by_adapter,
    chat_request,
    invoke_sagemaker,
    reasoning_and_content,
    stream_sagemaker,
)
from llmfleet.model_store.contract.container import API_KEY_ENV
from llmfleet.model_store.contract.inference_components import inference_component_of
from llmfleet.scripts import local_fleet
from llmfleet.scripts.cli_common import EXIT_BAD_INPUT, EXIT_REFUSED, JsonOpt, errors, fail


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


def _from_adapter(response: dict[str, Any], adapter: str | None, endpoint: str) -> dict[str, Any]:
    """`response` (a completion or a chunk), refused when it came from another model than the adapter asked for."""
    if adapter and not answered_by_adapter(response, adapter):
        raise fail(
            f"SageMaker endpoint {endpoint!r} answered with model {response.get('model')!r}, not adapter {adapter!r}: "
            "its /invocations did not select the adapter named in the body",
            EXIT_REFUSED,
        )
    return response


def _endpoint_failed(endpoint: str, exc: BotoCoreError | ClientError) -> AwsError:
    """The endpoint call's failure; the root group says instead what to set when credentials,
    region or token are the cause."""
    return AwsError(f"SageMaker endpoint {endpoint!r}: {type(exc).__name__}: {exc}")


def _fleet_url_and_key(url: str | None, api_key: str | None, target: str) -> tuple[str, str, bool]:
    """--url and --api-key, or the local fleet's when it is up (its gateway and a consumer's key
    allowed `target`, when it runs one); and whether the URL is a gateway."""
    if url is None:
        state = local_fleet.find_state_dir().load()
        if state is None:
            raise fail("no --url and no local fleet (`llmfleet local up`); pass the ALB's URL with --url", EXIT_BAD_INPUT)
        if state.gateway_url:
            from llmfleet.scripts.local_gateway import key_for

            return state.gateway_url, api_key or key_for(Path(state.gateway_keys_file), target), True
        url, api_key = state.server_url, api_key or local_fleet.find_state_dir().api_key()
    if not api_key:
        raise fail(f"no API key: pass --api-key or set {API_KEY_ENV}", EXIT_BAD_INPUT)
    return url, api_key, False


def image_body_openai(model: str, prompt: str, *, size: str | None, steps: int | None, seed: int | None, n: int) -> dict[str, Any]:
    """The OpenAI images request the image server reads; unset options take the plan's defaults."""
    extra = {key: value for key, value in (("num_inference_steps", steps), ("seed", seed)) if value is not None}
    body: dict[str, Any] = {"model": model, "prompt": prompt, "n": n, "response_format": "b64_json", "extra_body": extra}
    if size:
        body["size"] = size
    return body


def image_body_sagemaker(prompt: str, *, size: str | None, steps: int | None, seed: int | None, n: int) -> dict[str, Any]:
    """SageMaker's `{"inputs", "parameters"}` form of the same request."""
    parameters: dict[str, Any] = {"num_images_per_prompt": n}
    if size:
        width, _, height = size.partition("x")
        if not (width.isdigit() and height.isdigit()):
            raise fail(f"--size {size!r}: give WIDTHxHEIGHT in pixels, e.g. 1024x1024", EXIT_BAD_INPUT)
        parameters.update(width=int(width), height=int(height))
    parameters.update({key: value for key, value in (("num_inference_steps", steps), ("seed", seed)) if value is not None})
    return {"inputs": prompt, "parameters": parameters}


def write_images(images_b64: list[str], out: Path) -> list[Path]:
    """Decode base64 PNGs to `out` (one image) or out-1.png, out-2.png... (several)."""
    paths = [out] if len(images_b64) == 1 else [out.with_name(f"{out.stem}-{i}{out.suffix}") for i in range(1, len(images_b64) + 1)]
    for path, image in zip(paths, images_b64, strict=True):
        path.write_bytes(base64.b64decode(image))
    return paths


def _images_openai(base_url: str, api_key: str, body: dict[str, Any]) -> list[str]:
    import openai

    client = openai.OpenAI(base_url=base_url, api_key=api_key, max_retries=0)
    try:
        return [item.b64_json for item in client.images.generate(**body).data]
    except openai.APIConnectionError as exc:
        raise fail(f"cannot reach {base_url}: {exc}", EXIT_REFUSED) from None
    except openai.APIStatusError as exc:
        raise fail(f"{base_url} answered {exc.status_code}: {exc.message}", EXIT_REFUSED) from None


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
    out: Annotated[Path | None, typer.Option("--out", help="An image model: write the PNG here (several: OUT-1.png, ...).")] = None,
    size: Annotated[str | None, typer.Option("--size", help="With --out: WIDTHxHEIGHT (default: the plan's).")] = None,
    steps: Annotated[int | None, typer.Option("--steps", min=1, help="With --out: denoising steps (default: the plan's).")] = None,
    seed: Annotated[int | None, typer.Option("--seed", min=0, help="With --out: the same seed gives the same image.")] = None,
    images: Annotated[int, typer.Option("-n", "--images", min=1, help="With --out: how many images.")] = 1,
    gateway: Annotated[
        bool, typer.Option("--gateway", help="--url is the fleet's gateway: send MODEL:ADAPTER as the model (the local fleet's: automatic).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Send one prompt and stream the answer as it arrives (reasoning models: reasoning shown apart);
    with --out, ask an image model for a picture and write it as PNG."""
    model, adapter = _split_target(target)
    served_name = adapter or model  # vLLM serves an adapter under its own name
    if out is not None:
        if sagemaker:
            runtime = boto3.client("sagemaker-runtime", region_name=region)
            body = image_body_sagemaker(prompt, size=size, steps=steps, seed=seed, n=images)
            try:
                with errors.status(f"waiting for {images} image(s) from {sagemaker}"):
                    component = inference_component_of(boto3.client("sagemaker", region_name=region), sagemaker)
                    encoded = invoke_sagemaker(runtime, sagemaker, body, component)["images"]
            except (BotoCoreError, ClientError) as exc:
                raise _endpoint_failed(sagemaker, exc) from exc
            except (KeyError, TypeError) as exc:
                raise fail(f"SageMaker endpoint {sagemaker!r}: {type(exc).__name__}: {exc}", EXIT_REFUSED) from None
        else:
            url, api_key, _ = _fleet_url_and_key(url, api_key, target)
            with errors.status(f"waiting for {images} image(s) from {url}"):
                encoded = _images_openai(url.rstrip("/").removesuffix("/v1") + "/v1", api_key, image_body_openai(model, prompt, size=size, steps=steps, seed=seed, n=images))
        written = [str(path) for path in write_images(encoded, out)]
        if as_json:
            print(json.dumps({"model": model, "images": written}, indent=2))
        else:
            errors.print(f"wrote {', '.join(written)}")
        return
    if sagemaker:
        runtime = boto3.client("sagemaker-runtime", region_name=region)
        body = chat_request(served_name, prompt, max_tokens=max_tokens, temperature=temperature, stream=stream)
        try:
            component = inference_component_of(boto3.client("sagemaker", region_name=region), sagemaker)
            if stream:
                answers = stream_sagemaker(runtime, sagemaker, body, component)
                chunks = (_from_adapter(chunk, adapter, sagemaker) for chunk in answers)
                deltas = (chunk["choices"][0]["delta"] for chunk in chunks if chunk.get("choices"))
            else:
                with errors.status(f"waiting for {sagemaker}"):
                    response = _from_adapter(invoke_sagemaker(runtime, sagemaker, body, component), adapter, sagemaker)
                deltas = [response["choices"][0]["message"]]
            reasoning, answer = print_stream(deltas, as_json)
        except (BotoCoreError, ClientError) as exc:
            raise _endpoint_failed(sagemaker, exc) from exc
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            # the body is not a chat completion
            raise fail(f"SageMaker endpoint {sagemaker!r}: {type(exc).__name__}: {exc}", EXIT_REFUSED) from None
        result = {"model": served_name, "reasoning": reasoning, "content": answer}
    else:
        url, api_key, via_gateway = _fleet_url_and_key(url, api_key, target)
        # A gateway routes MODEL:ADAPTER itself; a model's own server knows the adapter by its name.
        body = chat_request(target if via_gateway or gateway else served_name, prompt, max_tokens=max_tokens,
                            temperature=temperature, stream=True)
        result = _stream_openai(url.rstrip("/").removesuffix("/v1") + "/v1", api_key, body, as_json)
    if as_json:
        print(json.dumps(result, indent=2))
