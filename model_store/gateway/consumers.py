"""The gateway's consumers file: who may call which models, how fast, and for how much.

It sits beside the fleet file (`gateway.consumers` in fleet.yaml names it). Keys are not here:
`llmfleet gateway keys` keeps only their hashes, in Secrets Manager.
"""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import Field, field_validator

from llmfleet.model_store.contract.manifest import (
    require_unique,
    CONSUMER_NAME,
    FleetManifest,
    ManifestError,
    read_text,
    read_yaml_mapping,
    SAFE_SEGMENT,
    Strict,
    validate_document,
)

ALL_MODELS = "*"
ADAPTER_SEPARATOR = ":"  # "<model>:<adapter>", as `llmfleet invoke` and the gateway's routes name an adapter


class Consumer(Strict):
    """One team or application calling the fleet with its own keys."""

    name: str = Field(pattern=CONSUMER_NAME, description="Lowercase letters, digits and '-', 1-64 characters; unique.")
    models: list[str] = Field(
        min_length=1,
        description="What it may call: model names, alias names, '<model>:<adapter>', '<model>:*' (every adapter "
        "of the model, promoted later too) or '*' (everything).",
    )
    rpm: int | None = Field(default=None, ge=1, le=1_000_000, description="Requests per minute, over all gateway tasks.")
    tpm: int | None = Field(
        default=None, ge=1, le=1_000_000_000, description="Tokens (prompt + completion) per minute, over all gateway tasks."
    )
    monthly_budget_usd: float | None = Field(
        default=None, gt=0, le=10_000_000, description="USD per calendar month (UTC) at the fleet's token prices."
    )

    @field_validator("models")
    @classmethod
    def _no_repeat(cls, value: list[str]) -> list[str]:
        repeated = sorted({m for m in value if value.count(m) > 1})
        if repeated:
            raise ValueError(f"models repeat {repeated}")
        return value


class ConsumersFile(Strict):
    consumers: list[Consumer] = Field(default_factory=list, description="The fleet's consumers.")

    @field_validator("consumers")
    @classmethod
    def _unique(cls, value: list[Consumer]) -> list[Consumer]:
        require_unique("consumer", [c.name for c in value])
        return value

    def peak_requests_per_second(self) -> float | None:
        """The most requests per second the consumers may send together, when every one has an rpm."""
        if not self.consumers or any(c.rpm is None for c in self.consumers):
            return None
        return sum(c.rpm for c in self.consumers) / 60

    def consumer(self, name: str) -> Consumer:
        for consumer in self.consumers:
            if consumer.name == name:
                return consumer
        raise ManifestError(f"no consumer {name!r}; the consumers file has {[c.name for c in self.consumers]}")


def allowed_model_names(fleet: FleetManifest) -> dict[str, str]:
    """Each name a consumer may list, with what it names (for the error that lists them)."""
    names: dict[str, str] = {ALL_MODELS: "every model"}
    for spec in fleet.models:
        names[spec.name] = "model"
        for alias in spec.aliases:
            names.setdefault(alias, f"alias of {spec.name}")
        if spec.lora is not None:
            names[f"{spec.name}{ADAPTER_SEPARATOR}*"] = f"every adapter of {spec.name}"
            for adapter in spec.lora.adapters:
                names[f"{spec.name}{ADAPTER_SEPARATOR}{adapter.name}"] = f"adapter of {spec.name}"
    return names


def _model_name_known(name: str, fleet: FleetManifest, known: dict[str, str]) -> bool:
    """Listed names, and '<model>:<adapter>' for any adapter name a LoRA model may be promoted later."""
    if name in known:
        return True
    model, separator, adapter = name.partition(ADAPTER_SEPARATOR)
    lora_models = {spec.name for spec in fleet.models if spec.lora is not None}
    return bool(separator) and model in lora_models and re.match(SAFE_SEGMENT, adapter) is not None


def check_consumers(consumers: ConsumersFile, fleet: FleetManifest, origin: str) -> None:
    """Refuse a consumer's model that the fleet does not serve, naming what it does."""
    known = allowed_model_names(fleet)
    for consumer in consumers.consumers:
        for name in consumer.models:
            if not _model_name_known(name, fleet, known):
                lora = [s.name for s in fleet.models if s.lora is not None]
                raise ManifestError(
                    f"{origin}: consumer {consumer.name!r}, field 'models': {name!r} is not served by fleet "
                    f"{fleet.name!r}; allowed: {sorted(known)}"
                    + (f", or '<model>:<adapter>' for {lora}" if lora else "")
                )


def parse_consumers(text: str, fleet: FleetManifest, origin: str = "<consumers>") -> ConsumersFile:
    """Parse and validate a consumers file against the fleet it belongs to."""
    document = read_yaml_mapping(text, origin, "a consumers file")
    if not isinstance(document, dict):
        raise ManifestError(f"{origin}: a consumers file is a mapping with 'consumers'")
    consumers = validate_document(ConsumersFile, document, origin)
    check_consumers(consumers, fleet, origin)
    return consumers


def consumers_path(fleet: FleetManifest, fleet_path: Path) -> Path | None:
    """Where the fleet's consumers file is, or None when its gateway names none."""
    if fleet.gateway.consumers is None:
        return None
    return fleet_path.parent / fleet.gateway.consumers


def load_consumers(fleet: FleetManifest, fleet_path: Path) -> ConsumersFile:
    """The fleet's consumers (none when its gateway names no file)."""
    path = consumers_path(fleet, fleet_path)
    if path is None:
        return ConsumersFile()
    return parse_consumers(read_text(path, "consumers file"), fleet, origin=str(path))


def consumers_json_schema() -> dict:
    """JSON Schema of the consumers file, for editors."""
    schema = ConsumersFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "llmfleet gateway consumers"
    return schema
