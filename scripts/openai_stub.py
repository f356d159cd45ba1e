"""An OpenAI-compatible server that answers at once with a fixed number of tokens: the upstream the
gateway benchmark measures against, so that what it reports is the gateway's own cost, not a
model's. `python -m llmfleet.scripts.openai_stub --port N [--tokens N]`; 127.0.0.1 only.

Every model name is served; the answer's usage counts one prompt token per 4 characters.
`GET /stub/last` returns the last request's body and headers: what the gateway forwarded.
"""

from __future__ import annotations

import argparse
import json
import time

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, StreamingResponse
from starlette.routing import Route


def _usage(body: dict, completion: int) -> dict:
    prompt = max(1, len(json.dumps(body.get("messages") or body.get("prompt") or "")) // 4)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def make_app(tokens: int) -> Starlette:
    last: dict = {}

    async def chat(request: Request):
        body = await request.json()
        last.update(body=body, headers={k: v for k, v in request.headers.items() if k in ("authorization",)})
        wanted = min(int(body.get("max_tokens") or tokens), tokens)
        model = body.get("model", "stub")
        created = int(time.time())
        if not body.get("stream"):
            return JSONResponse(
                {
                    "id": "chatcmpl-stub",
                    "object": "chat.completion",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": "x " * wanted}, "finish_reason": "length"}],
                    "usage": _usage(body, wanted),
                }
            )

        async def chunks():
            for _ in range(wanted):
                delta = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model,
                         "choices": [{"index": 0, "delta": {"content": "x "}, "finish_reason": None}]}
                yield f"data: {json.dumps(delta)}\n\n"
            last = {"id": "chatcmpl-stub", "object": "chat.completion.chunk", "created": created, "model": model,
                    "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
            if (body.get("stream_options") or {}).get("include_usage"):
                last["usage"] = _usage(body, wanted)
            yield f"data: {json.dumps(last)}\n\n"
            yield "data: [DONE]\n\n"

        return StreamingResponse(chunks(), media_type="text/event-stream")

    async def models(request: Request):
        return JSONResponse({"object": "list", "data": [{"id": "stub", "object": "model"}]})

    async def last_request(request: Request):
        return JSONResponse(last)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/models", models),
            Route("/stub/last", last_request),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--tokens", type=int, default=32)
    args = parser.parse_args()
    uvicorn.run(make_app(args.tokens), host="127.0.0.1", port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
