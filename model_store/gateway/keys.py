"""Consumers' keys in Secrets Manager: only their sha256 hashes are stored, {consumer: [hash, ...]};
a new key is returned once, to be printed once. The gateway re-reads the secret within
KEYS_REFRESH_SECONDS, so a created key works and a rotated-out one stops within a minute.

Secrets Manager has no conditional write: two operators changing keys of the same fleet stage at
the same instant may lose one change (the last write wins); each command re-reads before writing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from llmfleet.model_store.gateway.consumers import ConsumersFile
from llmfleet.model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.gateway.policy import key_hash, new_key, parse_keys_secret


class GatewayKeysError(LlmfleetError):
    exit_code = EXIT_REFUSED


class UnknownConsumer(GatewayKeysError):
    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class KeyListing:
    consumer: str
    keys: int
    key_ids: list[str]  # the first 8 hex digits of each hash: enough to tell keys apart, nothing to use


class GatewayKeys:
    """The keys secret of one fleet stage (`secretsmanager` is a boto3 client)."""

    def __init__(self, secretsmanager, secret_id: str, consumers: ConsumersFile):
        self.client = secretsmanager
        self.secret_id = secret_id
        self.consumers = consumers

    def _read(self) -> dict[str, list[str]] | None:
        """The stored hashes; None when the secret does not exist."""
        try:
            text = self.client.get_secret_value(SecretId=self.secret_id)["SecretString"]
        except self.client.exceptions.ResourceNotFoundException:
            return None
        return parse_keys_secret(text)

    def _write(self, secret: dict[str, list[str]], exists: bool) -> None:
        """A new version of the secret the stack made (its KMS key and policy kept); made here only
        when absent, as for the local fleet, whose emulated Secrets Manager has no stack."""
        text = json.dumps(secret, sort_keys=True)
        if exists:
            self.client.put_secret_value(SecretId=self.secret_id, SecretString=text)
        else:
            self.client.create_secret(Name=self.secret_id, SecretString=text)

    def _known(self, consumer: str) -> None:
        names = [c.name for c in self.consumers.consumers]
        if consumer not in names:
            raise UnknownConsumer(f"--consumer {consumer!r} is not in the consumers file; its consumers are {names}")

    def create(self, consumer: str) -> str:
        """A new key for `consumer`, beside its others (to roll keys over without a gap)."""
        self._known(consumer)
        stored = self._read()
        key = new_key()
        secret = stored or {}
        secret[consumer] = [*secret.get(consumer, []), key_hash(key)]
        self._write(secret, stored is not None)
        return key

    def rotate(self, consumer: str) -> str:
        """A new key for `consumer` replacing all of its others."""
        self._known(consumer)
        stored = self._read()
        key = new_key()
        self._write({**(stored or {}), consumer: [key_hash(key)]}, stored is not None)
        return key

    def list(self) -> list[KeyListing]:
        """Every consumer of the file, with its keys' short ids (consumers no longer in the file too)."""
        secret = self._read()
        if secret is None:
            raise GatewayKeysError(
                f"keys secret {self.secret_id!r} does not exist: deploy the fleet's gateway stack "
                "(or run `llmfleet local up` for the local fleet)"
            )
        names = [c.name for c in self.consumers.consumers] + sorted(set(secret) - {c.name for c in self.consumers.consumers})
        return [KeyListing(n, len(secret.get(n, [])), [h[:8] for h in secret.get(n, [])]) for n in names]
