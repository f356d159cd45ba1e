"""The adapter agent: keeps the adapters vLLM serves in line with the registry, live.

Every `interval` seconds it polls the registry with a conditional GET (one cheap request
when nothing changed). For each adapter whose version changes it:
1. downloads and verifies the new version into its own directory;
2. loads it into vLLM under a new LoRA name (`name@version`) — if vLLM refuses, the old
   version keeps serving and the refusal is logged;
3. switches the public name over (one atomic write the middleware picks up);
4. waits until no request uses the old LoRA name, unloads it and deletes its files.
A request for `name` therefore always finds a loaded version: no request fails in a swap.
A registry document that fails the checks changes nothing: it is logged once and the
adapters served stay as they are until the document changes again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from llmfleet.containers.entrypoint.routing import RouteTable, StateDir, lora_name
from llmfleet.containers.entrypoint.settings import EntrypointError
from llmfleet.containers.entrypoint.store_sync import StoreGateway
from llmfleet.containers.entrypoint.vllm_client import LocalVllm, VllmRefused
from llmfleet.model_store.store.registry import RegistryRefused

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AdapterChange:
    name: str
    old: str | None  # version served now (None: not served yet)
    new: str | None  # version to serve (None: retire the adapter)


def adapter_changes(
    serving: Mapping[str, str], desired: Mapping[str, str], refused: Mapping[str, str]
) -> list[AdapterChange]:
    """What to load, swap and retire to go from `serving` to `desired`, by name.

    A version in `refused` (download or load failed) is not tried again until the
    registry asks for another version of that adapter.
    """
    changes = []
    for name in sorted(set(serving) | set(desired)):
        old, new = serving.get(name), desired.get(name)
        if old != new and not (new is not None and refused.get(name) == new):
            changes.append(AdapterChange(name, old, new))
    return changes


class AdapterAgent(threading.Thread):
    def __init__(
        self,
        gateway: StoreGateway,
        vllm: LocalVllm,
        state: StateDir,
        routes: RouteTable,
        *,
        etag: str | None,
        refused: Mapping[str, str],
        interval: float,
        unload_wait: float,
        stop: threading.Event,
    ):
        super().__init__(name="adapter-agent", daemon=True)
        self.gateway, self.vllm, self.state = gateway, vllm, state
        self.routes, self.etag, self.refused = routes, etag, dict(refused)
        self.interval, self.unload_wait, self.stop_event = interval, unload_wait, stop

    def serving(self) -> dict[str, str]:
        return dict(self.routes.adapters)

    def run(self) -> None:
        while not self.stop_event.wait(self.interval):
            try:
                self.check_once()
            except EntrypointError as exc:  # the store is unreachable: keep serving, try again
                log.error("adapter agent: %s", exc)
            except Exception:  # anything else must not end live updates either; try again next poll
                log.exception("adapter agent: unexpected failure; retrying at the next poll")

    def check_once(self) -> None:
        try:
            state = self.gateway.poll(self.etag)
        except RegistryRefused as exc:
            log.error("adapter agent: %s; still serving %s", exc, self.routes.adapters or "no adapters")
            self.etag = exc.etag  # polled past: not read (nor logged) again until it changes
            return
        if state is None:
            return
        desired = self.gateway.desired(state)
        # Names whose desired version moved on get another chance.
        self.refused = {n: v for n, v in self.refused.items() if desired.get(n) == v}
        for change in adapter_changes(self.routes.adapters, desired, self.refused):
            if self.stop_event.is_set():
                return
            self.apply(change)
        self.etag = state.etag

    def apply(self, change: AdapterChange) -> None:
        name = change.name
        if change.new is not None:
            try:
                path = self.gateway.fetch_adapter(name, change.new)
                self.vllm.load_adapter(lora_name(name, change.new), str(path))
            except (EntrypointError, VllmRefused) as exc:
                log.error("adapter %s: version %s not served, %s still is: %s", name, change.new, change.old, exc)
                self.refused[name] = change.new
                self.gateway.discard_adapter(name, change.new)
                return
        self.routes = self.routes.with_adapter(name, change.new)
        self.state.write_routes(self.routes)
        log.info("adapter %s: now serving %s (was %s)", name, change.new, change.old)
        if change.old is not None:
            self.retire(name, change.old)

    def retire(self, name: str, version: str) -> None:
        retired = lora_name(name, version)
        if not self.vllm.wait_idle(retired, self.unload_wait):
            log.warning("adapter %s: requests still use %s after %.0f s; unloading it", name, retired, self.unload_wait)
        try:
            self.vllm.unload_adapter(retired)
        except VllmRefused as exc:
            log.error("adapter %s: could not unload %s: %s", name, retired, exc)
            return
        self.gateway.discard_adapter(name, version)
