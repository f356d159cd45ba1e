"""What one request may ask of a server, derived from its plan. Pure.

The middleware inside vLLM (containers/entrypoint/middleware.py) and the image server apply
these at the door, after the API key and before the engine sees anything: a body larger than
the model could ever use, a body that arrives too slowly, JSON nested past any real request,
a name no server serves, sampling figures that would make one request cost many, and media
URLs that would make the server fetch from the internet. Every refusal names the field, the
value and what is allowed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from urllib3.exceptions import LocationParseError
from urllib3.util import parse_url

from llmfleet.model_store.errors import EXIT_BAD_INPUT, LlmfleetError
from llmfleet.model_store.contract.plan import ImageSettings, MIB, ServingPlan

# A context token written as JSON: ~4 characters of text, each up to 6 bytes as a \uXXXX
# escape, rounded up; a token-id prompt (`[1234, ...]`) takes ~7.
BODY_BYTES_PER_TOKEN = 32
# Everything else a request carries besides its tokens: tool definitions, JSON schemas for
# structured output, sampling fields.
BODY_ENVELOPE_BYTES = 1 * MIB
# A multimodal model's inline media (`data:` URLs, base64): a few high-resolution images or a
# short clip. Media fetched by URL costs no body bytes, and is refused unless allowlisted.
MEDIA_BODY_BYTES = 32 * MIB
# The slowest upload a client may make: the body must arrive within a base plus its size at
# this rate (a trickling client holds a connection and a buffer as long as it likes otherwise).
BODY_BASE_SECONDS = 10
MIN_UPLOAD_BYTES_PER_SECOND = 256 * 1024
# Real requests nest a handful of levels (messages > content > part > image_url > url); JSON
# schemas for structured output a few dozen.
MAX_JSON_DEPTH = 64
# The longest name a server answers to: an adapter version's vLLM name, name@version, each
# part a SAFE_SEGMENT of at most 64 characters (model_store/contract/manifest.py).
MAX_NAME_CHARS = 64 + 1 + 64
# Parallel sequences of one request (n, best_of): at most a quarter of what a server
# schedules at once (max_num_seqs), so one request cannot take a whole batch, and never more
# than this.
MAX_N = 16
N_SHARE_OF_SEQS = 4
# vLLM's own default for --max-logprobs (vllm/config/model.py, ModelConfig.max_logprobs,
# v0.32, 2026-11); -1 there means the whole vocabulary, which is refused here.
MAX_LOGPROBS = 20
# Bodies above this are parsed in a worker thread: json.loads of a 1 MiB body holds the event
# loop 3 ms (one long string) to 28 ms (a token-id list), measured on this project's 2-vCPU
# test machine (2026-12); every other request and health check waits that long.
INLINE_PARSE_BYTES = 256 * 1024
# Keys under `messages` whose string value vLLM fetches as media (vllm/renderers/chat_utils.py
# MM_PARSER_MAP and its typeless forms, v0.32).
MEDIA_URL_KEYS = frozenset({"url", "image_url", "audio_url", "video_url"})
MAX_SHOWN_CHARS = 80
# An image server queues this many pipeline calls' worth of images; beyond that a client is
# better served by another server (503 and Retry-After) than by waiting minutes here.
QUEUED_BATCHES = 4


class RequestRefused(LlmfleetError):
    """A request the server answers with `status` before the engine sees it; `field` is
    OpenAI's `param` (None for the whole request)."""

    exit_code = EXIT_BAD_INPUT

    def __init__(self, status: int, field: str | None, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.status, self.field, self.reason = status, field, message


@dataclass(frozen=True)
class RequestLimits:
    """The bounds of one server's requests; `text_limits` derives them from a plan."""

    max_body_bytes: int
    body_seconds: float
    max_n: int
    max_tokens: int
    max_logprobs: int = MAX_LOGPROBS
    media_domains: tuple[str, ...] = ()
    max_json_depth: int = MAX_JSON_DEPTH
    max_name_chars: int = MAX_NAME_CHARS
    inline_parse_bytes: int = INLINE_PARSE_BYTES


def body_seconds(max_body_bytes: int) -> float:
    """How long a body of the largest allowed size may take to arrive."""
    return BODY_BASE_SECONDS + max_body_bytes / MIN_UPLOAD_BYTES_PER_SECOND


def takes_media(plan: ServingPlan) -> bool:
    """Whether the server accepts images: a vision encoder the plan serves."""
    return "vision" in plan.family.split(" + ") and not plan.vllm.language_model_only


def text_limits(plan: ServingPlan) -> RequestLimits:
    """The bounds for a vLLM server of `plan`: the body from the context (and inline media for
    a multimodal model), tokens up to the context, parallel sequences from the batch size."""
    settings = plan.vllm
    max_body = BODY_ENVELOPE_BYTES + settings.max_model_len * BODY_BYTES_PER_TOKEN
    if takes_media(plan):
        max_body += MEDIA_BODY_BYTES
    return RequestLimits(
        max_body_bytes=max_body,
        body_seconds=body_seconds(max_body),
        max_n=max(1, min(MAX_N, settings.max_num_seqs // N_SHARE_OF_SEQS)),
        max_tokens=settings.max_model_len,
        media_domains=tuple(settings.allowed_media_domains or ()),
    )


def declared_length(value: str | None, limit: int) -> int | None:
    """The body length a Content-Length header declares (None: none declared); 413 above `limit`."""
    if value is None:
        return None
    if not value.isascii() or not value.isdigit():
        raise RequestRefused(400, "content-length", f"must be a number of bytes, got {shown(value)}")
    length = int(value)
    if length > limit:
        raise RequestRefused(413, None, f"request body of {length} bytes exceeds this server's limit of {limit} bytes")
    return length


def parse_json(body: bytes, max_depth: int) -> Any:
    """The JSON value of `body`; None when it is not JSON (vLLM answers that with its own 400);
    RequestRefused when it nests deeper than `max_depth`."""
    try:
        value = json.loads(body)
    except RecursionError:
        raise RequestRefused(400, "body", f"JSON nests deeper than {max_depth} levels") from None
    except ValueError:
        return None
    level, depth = [value], 0
    while level := [item for item in level if isinstance(item, dict | list)]:
        depth += 1
        if depth > max_depth:
            raise RequestRefused(400, "body", f"JSON nests deeper than {max_depth} levels")
        level = [child for item in level for child in (item.values() if isinstance(item, dict) else item)]
    return value


def shown(value: Any) -> str:
    """`value` for an error message, cut short: a client's own input, not an echo chamber."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN_CHARS else text[:MAX_SHOWN_CHARS] + "...'"


def check_name(value: Any, field: str, limits: RequestLimits) -> None:
    """A model or adapter name no longer than any name a server serves."""
    if isinstance(value, str) and len(value) > limits.max_name_chars:
        raise RequestRefused(
            400, field, f"must be at most {limits.max_name_chars} characters (the longest model or adapter name), got {len(value)}"
        )


def _integer(payload: dict[str, Any], field: str, low: int, high: int, why: str) -> None:
    value = payload.get(field)
    if value is None:
        return
    number = value
    if isinstance(value, float) and value.is_integer():
        number = int(value)
    if not isinstance(number, int) or not low <= number <= high:
        raise RequestRefused(400, field, f"must be an integer from {low} to {high} ({why}), got {shown(value)}")


def check_sampling(payload: dict[str, Any], limits: RequestLimits) -> None:
    """n, best_of, max_tokens, max_completion_tokens and the logprobs fields within the plan's bounds."""
    for field in ("n", "best_of"):
        _integer(payload, field, 1, limits.max_n, "parallel sequences one request may ask for on this server")
    for field in ("max_tokens", "max_completion_tokens"):
        _integer(payload, field, 1, limits.max_tokens, "the model's context, max_model_len")
    logprobs = "log probabilities per token, vLLM's --max-logprobs"
    if not isinstance(payload.get("logprobs"), bool):  # chat's logprobs is a switch; completions' a count
        _integer(payload, "logprobs", 0, limits.max_logprobs, logprobs)
    for field in ("top_logprobs", "prompt_logprobs"):
        _integer(payload, field, 0, limits.max_logprobs, logprobs)


def media_url_refusal(url: str, domains: tuple[str, ...]) -> str | None:
    """Why the server must not fetch `url` (None: it may). Inline `data:` media is always
    allowed; http(s) only from a host in `domains`, matched as vLLM matches it (urllib3's
    hostname, exactly); nothing else."""
    if url[:5].lower() == "data:":
        return None
    if domains:
        allowed = f"allowed: data: URLs, or http(s) URLs of {list(domains)}"
    else:
        allowed = "allowed: data: URLs only (the manifest's serving.media_domains is empty)"
    try:
        spec = parse_url(url)
    except (LocationParseError, ValueError):
        return f"{shown(url)} is not a URL this server reads; {allowed}"
    if spec.scheme in ("http", "https") and spec.hostname in domains:
        return None
    return f"{shown(url)} is not fetched by this server; {allowed}"


def _media_urls(messages: Any) -> list[tuple[str, str]]:
    """(where, url) for each string under a media key anywhere in `messages`."""
    found, pending = [], [("messages", messages)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, list):
            pending += [(f"{where}[{i}]", item) for i, item in enumerate(value)]
        elif isinstance(value, dict):
            for key, item in value.items():
                if key in MEDIA_URL_KEYS and isinstance(item, str):
                    found.append((f"{where}.{key}", item))
                else:
                    pending.append((f"{where}.{key}", item))
    return found


def check_media(payload: dict[str, Any], limits: RequestLimits) -> None:
    """No media URL in `messages` the server would fetch from a host the manifest did not allowlist."""
    for where, url in sorted(_media_urls(payload.get("messages"))):
        refusal = media_url_refusal(url, limits.media_domains)
        if refusal is not None:
            raise RequestRefused(400, where, refusal)


def check_request(payload: Any, limits: RequestLimits) -> None:
    """Every bound of a JSON request body (after any SageMaker translation); a body that is
    not an object is left to vLLM."""
    if not isinstance(payload, dict):
        return
    check_name(payload.get("model"), "model", limits)
    check_sampling(payload, limits)
    check_media(payload, limits)


def queue_images(settings: ImageSettings) -> int:
    """Images an image server holds waiting: QUEUED_BATCHES pipeline calls' worth, and at least
    one request of the most images allowed."""
    return max(settings.max_batch * QUEUED_BATCHES, settings.max_images)


__all__ = [
    "MAX_JSON_DEPTH",
    "RequestLimits",
    "RequestRefused",
    "body_seconds",
    "check_name",
    "check_request",
    "declared_length",
    "media_url_refusal",
    "parse_json",
    "queue_images",
    "takes_media",
    "text_limits",
]
