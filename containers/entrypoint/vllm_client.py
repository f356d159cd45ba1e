"""The entrypoint's HTTP calls to its own vLLM child on localhost."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx2

from llmfleet.containers.entrypoint.middleware import ADAPTERS_PATH
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError

# Runtime LoRA loads take tens of milliseconds for small adapters (measured 25 ms on the
# CPU build); large ones read hundreds of MiB from local disk.
LOAD_TIMEOUT_SECONDS = 120.0
CALL_TIMEOUT_SECONDS = 10.0


class VllmRefused(LlmfleetError):
    """vLLM answered a runtime LoRA call with an error; the message carries its answer."""

    exit_code = EXIT_REFUSED


class LocalVllm:
    def __init__(self, address: str, port: int, api_key: str | None = None):
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.http = httpx2.Client(base_url=f"http://{address}:{port}", headers=headers, timeout=CALL_TIMEOUT_SECONDS)

    def is_healthy(self) -> bool:
        try:
            return self.http.get("/health").status_code == 200
        except httpx2.HTTPError:
            return False

    def wait_healthy(self, still_running: Callable[[], bool], stop: Callable[[], bool], poll: float = 0.5) -> bool:
        """Block until `/health` answers 200; False if the child exited or `stop()` first."""
        while still_running() and not stop():
            if self.is_healthy():
                return True
            time.sleep(poll)
        return False

    def metrics_text(self) -> str:
        response = self.http.get("/metrics")
        response.raise_for_status()
        return response.text

    def _post(self, path: str, body: dict, timeout: float) -> None:
        try:
            response = self.http.post(path, json=body, timeout=timeout)
        except httpx2.HTTPError as exc:
            raise VllmRefused(f"POST {path} {body}: no answer from vLLM: {exc}") from None
        if response.status_code != 200:
            raise VllmRefused(f"POST {path} {body}: HTTP {response.status_code}: {response.text.strip()}")

    def load_adapter(self, lora_name: str, path: str) -> None:
        self._post("/v1/load_lora_adapter", {"lora_name": lora_name, "lora_path": path}, LOAD_TIMEOUT_SECONDS)

    def unload_adapter(self, lora_name: str) -> None:
        self._post("/v1/unload_lora_adapter", {"lora_name": lora_name}, CALL_TIMEOUT_SECONDS)

    def requests_in_flight(self, lora_name: str) -> int:
        response = self.http.get(ADAPTERS_PATH)
        response.raise_for_status()
        return int(response.json().get("in_flight", {}).get(lora_name, 0))

    def wait_idle(self, lora_name: str, timeout: float, poll: float = 0.1) -> bool:
        """Block until no request uses `lora_name` (True) or `timeout` passes (False)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                if self.requests_in_flight(lora_name) == 0:
                    return True
            except httpx2.HTTPError:
                pass
            if time.monotonic() >= deadline:
                return False
            time.sleep(poll)
