"""Architecture facts read offline: a local checkpoint directory, or the bundled known configs.

The Hub and the store are read by `model_store.facts.lock` (`llmfleet lock`), which records what
it read; planning reads that record, these two offline sources, and nothing else.
`known_configs/` holds copies of public config.json files (source in `_source`), the
fallback when neither a checkpoint nor the network is at hand.
"""

from __future__ import annotations

import json
import struct
from functools import cache
from pathlib import Path

from llmfleet.model_store.facts.families import ArchitectureFacts, ConfigError, facts_from_config

KNOWN_CONFIGS = Path(__file__).parent.parent / "known_configs"
SAFETENSORS_INDEX = "model.safetensors.index.json"
# A safetensors header is a little-endian u64 length then that much JSON; 100 MB is far
# past any real header (a 1,000-shard index has ~1 MB) and stops a corrupt length early.
MAX_SAFETENSORS_HEADER = 100 * 2**20

__all__ = [
    "ArchitectureFacts",
    "bytes_by_dtype",
    "facts_from_config",
    "known_architecture",
    "known_architecture_ids",
    "parse_safetensors_header",
    "read_checkpoint_architecture",
    "read_checkpoint_weights",
    "safetensors_header_length",
    "weight_files",
]


def known_architecture_ids() -> list[str]:
    return sorted(path.stem.replace("__", "/") for path in KNOWN_CONFIGS.glob("*.json"))


def known_config(hf_id: str) -> dict:
    path = KNOWN_CONFIGS / (hf_id.replace("/", "__") + ".json")
    if not path.is_file():
        raise ConfigError(f"architecture {hf_id!r} has no bundled config; bundled: {known_architecture_ids()}")
    return json.loads(path.read_text())


@cache
def known_architecture(hf_id: str) -> ArchitectureFacts:
    """Facts of a well-known model from the copies in known_configs/."""
    config = known_config(hf_id)
    return facts_from_config(config, total_size=config.get("_total_size"), source=config.get("_source", hf_id))


def safetensors_header_length(first_bytes: bytes, where: str) -> int:
    """The JSON header's length from a safetensors file's first 8 bytes, checked."""
    if len(first_bytes) < 8:
        raise ConfigError(f"{where}: not a safetensors file (shorter than its 8-byte header length)")
    (length,) = struct.unpack("<Q", first_bytes[:8])
    if not 2 <= length <= MAX_SAFETENSORS_HEADER:
        raise ConfigError(f"{where}: not a safetensors file (header length {length})")
    return length


def bytes_by_dtype(header: dict, where: str) -> dict[str, int]:
    """Tensor bytes per safetensors dtype (BF16, F8_E4M3, U8, ...) from one file's header."""
    totals: dict[str, int] = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            start, end = entry["data_offsets"]
            totals[entry["dtype"]] = totals.get(entry["dtype"], 0) + int(end) - int(start)
        except (KeyError, TypeError, ValueError):
            raise ConfigError(f"{where}: safetensors header entry {name!r} has no dtype/data_offsets") from None
    return totals


def parse_safetensors_header(raw: bytes, where: str) -> dict:
    """A safetensors file's JSON header (the bytes after its length), checked."""
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ConfigError(f"{where}: safetensors header is not JSON") from None
    if not isinstance(header, dict):
        raise ConfigError(f"{where}: safetensors header is not an object")
    return header


def _read_header(path: Path) -> dict:
    with path.open("rb") as handle:
        length = safetensors_header_length(handle.read(8), str(path))
        return parse_safetensors_header(handle.read(length), str(path))


def weight_files(names: list[str], index: object) -> list[str]:
    """The safetensors files vLLM loads: those the index maps tensors to, when there is an
    index (Mistral repositories also ship a consolidated copy), else every one."""
    if isinstance(index, dict) and isinstance(index.get("weight_map"), dict):
        mapped = set(index["weight_map"].values())
        return sorted(name for name in names if name.rsplit("/", 1)[-1] in mapped)
    return sorted(name for name in names if name.endswith(".safetensors"))


def read_checkpoint_weights(directory: Path) -> dict[str, int] | None:
    """Bytes per dtype of a local checkpoint's safetensors files (their headers), or None."""
    totals: dict[str, int] = {}
    index = read_json_file(directory / SAFETENSORS_INDEX) if (directory / SAFETENSORS_INDEX).is_file() else None
    names = weight_files([p.name for p in directory.glob("*.safetensors")], index)
    for path in (directory / name for name in names):
        for dtype, size in bytes_by_dtype(_read_header(path), str(path)).items():
            totals[dtype] = totals.get(dtype, 0) + size
    return totals or None


def read_json_file(path: Path) -> dict:
    """A JSON object from `path`; every failure is one ConfigError line naming the file."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise ConfigError(f"{path}: missing") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not valid JSON: {exc}") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a config") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must be a JSON object, got {type(data).__name__}")
    return data


def read_checkpoint(directory: str | Path) -> tuple[dict, dict[str, int] | None]:
    """A local checkpoint's config.json and its weight bytes per dtype (None without safetensors)."""
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{directory}: no config.json (a model source must hold one)")
    return read_json_file(directory / "config.json"), read_checkpoint_weights(directory)


def read_checkpoint_architecture(directory: str | Path) -> ArchitectureFacts:
    """Facts of a local checkpoint: its config.json and the bytes of its safetensors."""
    config, weights = read_checkpoint(directory)
    total = sum(weights.values()) if weights else None
    return facts_from_config(config, total_size=total, source=str(Path(directory) / "config.json"))
