"""What the entrypoint tells the middleware inside vLLM: adapter routes and the drain flag.

The entrypoint (adapter agent, signal handler) and the middleware live in different
processes. They share a state directory (`LLMFLEET_STATE_DIR`): `routes.json` maps each
public adapter name to the vLLM LoRA name of the version currently serving it, and the
file `draining` exists once SIGTERM arrived; `boot.json` records how the start went. Files are replaced atomically, so a reader
sees the old table or the new one, never half of one.

Each adapter version is loaded into vLLM under its own name (`name@version`); switching
`name` over is one atomic write here, which is what makes a swap invisible to clients.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from llmfleet.model_store.ops.boot_log import BootRecord

ROUTES_FILE = "routes.json"
DRAIN_FLAG = "draining"
BOOT_FILE = "boot.json"
VERSION_SEPARATOR = "@"


def lora_name(name: str, version: str) -> str:
    """vLLM's name for one adapter version; adapter names and versions never contain '@'."""
    return f"{name}{VERSION_SEPARATOR}{version}"


@dataclass(frozen=True)
class RouteTable:
    """Who this server is and which adapter versions it serves under their public names."""

    model: str
    server_id: str
    adapters: dict[str, str] = field(default_factory=dict)  # public name -> version

    def lora_name_for(self, public_name: str) -> str | None:
        version = self.adapters.get(public_name)
        return None if version is None else lora_name(public_name, version)

    def public_name_of(self, vllm_name: str) -> str | None:
        name, separator, version = vllm_name.partition(VERSION_SEPARATOR)
        if separator and self.adapters.get(name) == version:
            return name
        return None

    def with_adapter(self, name: str, version: str | None) -> RouteTable:
        """A copy that routes `name` to `version` (None: no longer served)."""
        adapters = {k: v for k, v in self.adapters.items() if k != name}
        if version is not None:
            adapters[name] = version
        return RouteTable(self.model, self.server_id, adapters)

    def to_json(self) -> str:
        return json.dumps({"model": self.model, "server_id": self.server_id, "adapters": self.adapters}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RouteTable:
        data = json.loads(text)
        return cls(model=data["model"], server_id=data["server_id"], adapters=dict(data["adapters"]))


class StateDir:
    """The state directory, seen from either side."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def routes_path(self) -> Path:
        return self.path / ROUTES_FILE

    @property
    def drain_path(self) -> Path:
        return self.path / DRAIN_FLAG

    def _replace(self, name: str, text: str) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        temporary = self.path / f".{name}.{os.getpid()}"
        temporary.write_text(text)
        os.replace(temporary, self.path / name)

    def write_routes(self, table: RouteTable) -> None:
        self._replace(ROUTES_FILE, table.to_json())

    def write_boot(self, record: BootRecord) -> None:
        self._replace(BOOT_FILE, record.model_dump_json())

    def read_boot(self) -> BootRecord | None:
        """How this server started; None while it is still starting."""
        try:
            return BootRecord.model_validate_json((self.path / BOOT_FILE).read_text())
        except FileNotFoundError:
            return None

    def read_routes(self) -> RouteTable:
        return RouteTable.from_json(self.routes_path.read_text())

    def start_draining(self) -> None:
        self.drain_path.touch()

    def is_draining(self) -> bool:
        return self.drain_path.exists()


class RoutesWatcher:
    """The middleware's cached view of `routes.json`, reloaded when the file is replaced.

    One `stat` per request: replacing the file changes its inode, so no write is missed.
    """

    def __init__(self, state: StateDir):
        self.state = state
        self._identity: tuple[int, int] | None = None
        self._table: RouteTable | None = None

    def current(self) -> RouteTable | None:
        try:
            stat = self.state.routes_path.stat()
        except FileNotFoundError:
            return self._table
        identity = (stat.st_ino, stat.st_mtime_ns)
        if identity != self._identity:
            self._table = self.state.read_routes()
            self._identity = identity
        return self._table
