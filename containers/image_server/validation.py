"""Image requests, checked before anything reaches the pipeline: pure functions, one 400 per problem.

Two bodies are accepted: OpenAI's images API (`POST /v1/images/generations`: prompt, n, size
"WxH", response_format b64_json, seed, num_inference_steps, guidance_scale) and SageMaker's
`{"inputs": prompt, "parameters": {...}}` on `/invocations`. Both become one `ImageRequest`;
every refusal names the field, the value and what the plan allows.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError
from llmfleet.model_store.contract.plan import ImageSettings
from llmfleet.model_store.contract.request_limits import MAX_JSON_DEPTH, parse_json, RequestRefused

MAX_PROMPT_CHARS = 4000
# The largest body a valid request can be: the longest prompt with every character a 6-byte
# \uXXXX escape, and room for the other fields; the front door refuses larger ones unread.
MAX_BODY_BYTES = 6 * MAX_PROMPT_CHARS + 8 * 1024
MAX_SEED = 2**63 - 1
MAX_GUIDANCE = 30.0
OPENAI_FIELDS = ("prompt", "model", "n", "size", "response_format", "seed", "num_inference_steps", "guidance_scale", "user")
SAGEMAKER_FIELDS = ("inputs", "parameters")
SAGEMAKER_PARAMETERS = ("num_images_per_prompt", "width", "height", "num_inference_steps", "guidance_scale", "seed")
SIZE = re.compile(r"^(\d{1,5})x(\d{1,5})$")


class ImageRequestError(LlmfleetError):
    """A request the server refuses with 400; `field` is OpenAI's `param`."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True)
class ImageRequest:
    prompt: str
    n: int
    width: int
    height: int
    steps: int
    guidance_scale: float
    seed: int | None

    @property
    def shape(self) -> tuple[int, int, int, float]:
        """Requests of one shape can share a pipeline call."""
        return (self.width, self.height, self.steps, self.guidance_scale)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        payload = parse_json(body, MAX_JSON_DEPTH)
    except RequestRefused as exc:
        raise ImageRequestError("body", exc.reason) from None
    if payload is None:
        raise ImageRequestError("body", "not valid JSON; send a JSON object")
    if not isinstance(payload, dict):
        raise ImageRequestError("body", f"must be a JSON object, got {type(payload).__name__}")
    return payload


def _unknown(payload: dict[str, Any], allowed: tuple[str, ...], where: str = "") -> None:
    extra = sorted(set(payload) - set(allowed))
    if extra:
        raise ImageRequestError(f"{where}{extra[0]}", f"unsupported field; allowed: {list(allowed)}")


def _integer(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ImageRequestError(field, f"must be an integer from {low} to {high}, got {value!r}")
    if not low <= value <= high:
        raise ImageRequestError(field, f"must be from {low} to {high}, got {value}")
    return value


def _prompt(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ImageRequestError(field, "must be a non-empty string")
    if len(value) > MAX_PROMPT_CHARS:
        raise ImageRequestError(field, f"must be at most {MAX_PROMPT_CHARS} characters, got {len(value)}")
    return value


def _side(value: Any, field: str, settings: ImageSettings) -> int:
    side = _integer(value, field, settings.size_multiple, settings.max_size)
    if side % settings.size_multiple:
        raise ImageRequestError(field, f"must be a multiple of {settings.size_multiple}, got {side}")
    return side


def _guidance(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= MAX_GUIDANCE:
        raise ImageRequestError(field, f"must be a number from 0 to {MAX_GUIDANCE:g}, got {value!r}")
    return float(value)


def _common(fields: dict[str, Any], names: dict[str, str], settings: ImageSettings, prefix: str = "") -> dict[str, Any]:
    """n, steps, guidance and seed, each read from its field name in this body's dialect."""
    steps = fields.get(names["steps"], settings.steps)
    seed = fields.get(names["seed"])
    return {
        "n": _integer(fields.get(names["n"], 1), prefix + names["n"], 1, settings.max_images),
        "steps": _integer(steps, prefix + names["steps"], 1, settings.max_steps),
        "guidance_scale": _guidance(fields.get(names["guidance"], settings.guidance_scale), prefix + names["guidance"]),
        "seed": None if seed is None else _integer(seed, prefix + names["seed"], 0, MAX_SEED),
    }


def openai_request(body: bytes, settings: ImageSettings, model_name: str) -> ImageRequest:
    """`POST /v1/images/generations` as an ImageRequest; ImageRequestError names the field."""
    payload = _json_object(body)
    _unknown(payload, OPENAI_FIELDS)
    if "model" in payload and payload["model"] != model_name:
        raise ImageRequestError("model", f"this server serves {model_name!r}, got {payload['model']!r}")
    if payload.get("response_format", "b64_json") != "b64_json":
        raise ImageRequestError("response_format", f"only 'b64_json' is served (no image hosting), got {payload['response_format']!r}")
    size = payload.get("size", f"{settings.size}x{settings.size}")
    match = SIZE.match(size) if isinstance(size, str) else None
    if match is None:
        raise ImageRequestError("size", f"must be 'WIDTHxHEIGHT' in pixels, e.g. '{settings.size}x{settings.size}', got {size!r}")
    names = {"n": "n", "steps": "num_inference_steps", "guidance": "guidance_scale", "seed": "seed"}
    return ImageRequest(
        prompt=_prompt(payload.get("prompt"), "prompt"),
        width=_side(int(match[1]), "size", settings),
        height=_side(int(match[2]), "size", settings),
        **_common(payload, names, settings),
    )


def sagemaker_request(body: bytes, settings: ImageSettings) -> ImageRequest:
    """SageMaker's `{"inputs": prompt, "parameters": {...}}` as an ImageRequest."""
    payload = _json_object(body)
    _unknown(payload, SAGEMAKER_FIELDS)
    parameters = payload.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise ImageRequestError("parameters", f"must be an object, got {type(parameters).__name__}")
    _unknown(parameters, SAGEMAKER_PARAMETERS, "parameters.")
    names = {"n": "num_images_per_prompt", "steps": "num_inference_steps", "guidance": "guidance_scale", "seed": "seed"}
    return ImageRequest(
        prompt=_prompt(payload.get("inputs"), "inputs"),
        width=_side(parameters.get("width", settings.size), "parameters.width", settings),
        height=_side(parameters.get("height", settings.size), "parameters.height", settings),
        **_common(parameters, names, settings, "parameters."),
    )
