"""Every call the container makes to the model store and the adapter registry.

Downloads are verified by the store against each version's `_manifest.json`; this module
adds retries with exponential backoff (S3 throttling, a network blip during boot) and turns
what stays broken into one EntrypointError that names the store and what to check.

What the store returns is input: adapter names and versions become local paths only once
checked as publish checks them and resolved inside the adapter cache, an adapter is
validated again before vLLM loads it, and a document that fails a check is not retried.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from llmfleet.model_store.adapters import AdapterRejected, accepted_bases_for, check_segment, validate_adapter
from llmfleet.model_store.architectures import ArchitectureFacts
from llmfleet.model_store.container_contract import DEFAULT_TARGET, STORE_ENV
from llmfleet.containers.entrypoint.settings import EntrypointError, EntrypointSettings
from llmfleet.model_store.compile_cache import CompileCacheKey
from llmfleet.model_store.plan import DeploymentPlan, ServingPlan
from llmfleet.model_store.registry import AdapterRegistry, RegistryError, RegistryRefused, RegistryState, adapters_for_server
from llmfleet.model_store.store import (
    MANIFEST_NAME,
    ModelStore,
    StoreError,
    StoreRefused,
    VersionManifest,
    contained,
    verify_model_directory,
)

# Four tries 1 s, 2 s, 4 s apart, on top of botocore's own retries: rides out a throttled
# or briefly unreachable S3 and still fails a misconfigured container within ~10 s.
ATTEMPTS = 4
FIRST_DELAY_SECONDS = 1.0
ADAPTER_CACHE = "_adapters"  # under the model root; model names are DNS labels, never "_..."

T = TypeVar("T")
log = logging.getLogger(__name__)
STORE_FAILURES = (StoreError, RegistryError, BotoCoreError, ClientError)


def with_retries(
    call: Callable[[], T],
    *,
    what: str,
    attempts: int = ATTEMPTS,
    first_delay: float = FIRST_DELAY_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """`call()`, retried on store failures with delays doubling from `first_delay`.

    A refused document is not retried (the same bytes would be refused again): a registry
    document's refusal goes to the caller as is, which keeps serving what it serves."""
    for attempt in range(1, attempts + 1):
        try:
            return call()
        except RegistryRefused:
            raise
        except StoreRefused as exc:
            raise EntrypointError(f"{what} refused: {exc}") from exc
        except STORE_FAILURES as exc:
            if attempt == attempts:
                raise EntrypointError(f"{what} failed after {attempts} attempts: {exc}") from exc
            delay = first_delay * 2 ** (attempt - 1)
            log.warning("%s failed (attempt %d/%d, retrying in %.0f s): %s", what, attempt, attempts, delay, exc)
            sleep(delay)
    raise AssertionError("unreachable")


def desired_adapters(plan: ServingPlan, promoted: Mapping[str, str]) -> dict[str, str]:
    """Adapter name -> version this server should serve: the registry's choice for it,
    except adapters the fleet manifest pins to a version, which keep their pin."""
    pinned = {ref.name: ref.version for ref in plan.adapters if ref.version}
    return {**promoted, **pinned}


class StoreGateway:
    """The store and registry as the entrypoint and its adapter agent use them."""

    def __init__(
        self,
        store: ModelStore,
        plan: DeploymentPlan,
        *,
        model_root: str,
        server_id: str,
        target: str = DEFAULT_TARGET,
        preloaded_model_dir: str | None = None,
        attempts: int = ATTEMPTS,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store, self.plan, self.server_id, self.target = store, plan, server_id, target
        self.preloaded_model_dir = Path(preloaded_model_dir) if preloaded_model_dir else None
        self.registry = AdapterRegistry(store)
        self.model_root = Path(model_root)
        self.adapter_root = self.model_root / ADAPTER_CACHE / plan.model_name
        self.attempts, self.sleep = attempts, sleep
        self._adapter_base: tuple[ArchitectureFacts, str] | None = None

    @classmethod
    def connect(cls, settings: EntrypointSettings) -> StoreGateway:
        """The gateway to the store and registry the container's settings name."""
        try:
            store = ModelStore.from_uri(settings.store_uri, endpoint_url=settings.endpoint_url)
        except StoreError as exc:
            raise EntrypointError(f"{STORE_ENV}: {exc}") from None
        return cls(
            store,
            settings.plan,
            model_root=settings.model_root,
            server_id=settings.server_id,
            target=settings.target,
            preloaded_model_dir=settings.preloaded_model_dir,
        )

    def _retried(self, call: Callable[[], T], what: str) -> T:
        where = f"s3://{self.store.location.bucket}/{self.store.location.prefix}".rstrip("/")
        return with_retries(call, what=f"{what} (store {where})", attempts=self.attempts, sleep=self.sleep)

    def model_location(self) -> str:
        """Where vLLM reads the weights: the store's S3 prefix when the plan streams them
        (`--load-format runai_streamer`); the copy SageMaker made, verified, when there is
        one; else synced and verified on local disk."""
        plan = self.plan
        if plan.streams_weights:
            return f"s3://{self.store.location.bucket}/{self.store.model_prefix(plan.model_name, plan.revision)}"
        preloaded = self.preloaded_model_dir
        if preloaded is not None and (preloaded / MANIFEST_NAME).is_file():
            try:
                verify_model_directory(preloaded, model=plan.model_name, revision=plan.revision)
            except StoreError as exc:
                raise EntrypointError(f"the model copy in {preloaded} failed verification: {exc}") from None
            log.info("serving the verified model copy in %s (no download)", preloaded)
            return str(preloaded)
        dest = Path(plan.model_location(str(self.model_root)))
        dest.mkdir(parents=True, exist_ok=True)
        self._retried(
            lambda: self.store.download_model(plan.model_name, plan.revision, dest),
            f"download of model {plan.model_name!r} revision {plan.revision!r}",
        )
        return str(dest)

    def registry_state(self) -> RegistryState:
        plan = self.plan
        return self._retried(lambda: self.registry.state(plan.model_name, plan.stage), "registry read")

    def poll(self, etag: str | None) -> RegistryState | None:
        """The registry's state if it changed since `etag` (a conditional GET), else None."""
        plan = self.plan
        return self._retried(lambda: self.registry.poll(plan.model_name, plan.stage, etag), "registry poll")

    def desired(self, state: RegistryState) -> dict[str, str]:
        return desired_adapters(self.plan, adapters_for_server(state, self.server_id))

    def adapter_dir(self, name: str, version: str) -> Path:
        """Where one adapter version lives: both names checked as publish checks them and the
        path resolved inside this model's adapter cache; EntrypointError otherwise."""
        try:
            check_segment("adapter name", name)
            check_segment("version", version, rule="version")
            return contained(self.adapter_root, name, version)
        except (ValueError, StoreError) as exc:
            raise EntrypointError(f"adapter {name!r:.80} version {version!r:.80} refused: {exc}") from None

    def fetch_adapter(self, name: str, version: str) -> Path:
        """Download and verify one adapter version into an emptied directory of the cache, then
        validate it as publish did (safetensors only, fits this base model); returns its directory."""
        dest = self.adapter_dir(name, version)
        shutil.rmtree(dest, ignore_errors=True)  # vLLM loads exactly the files checked below
        self._retried(
            lambda: self.store.download_adapter(self.plan.model_name, name, version, dest),
            f"download of adapter {name!r} version {version!r}",
        )
        self.check_adapter(dest, name, version)
        return dest

    def check_adapter(self, directory: Path, name: str, version: str) -> None:
        """Publish's validation again on this server, against the base it serves: whoever
        wrote the store may have skipped it (vLLM checks neither the base nor the format)."""
        plan = self.plan
        arch, recorded_source = self.adapter_base()
        try:
            validate_adapter(
                directory,
                model_name=plan.model_name,
                accepted_bases=accepted_bases_for(None, plan.model_name, plan.source, *plan.aliases, recorded_source),
                max_rank=plan.vllm.max_lora_rank or 0,  # without LoRA nothing fits
                arch=arch,
            )
        except AdapterRejected as exc:
            raise EntrypointError(f"adapter {name!r} version {version!r} refused on this server: {exc}") from None

    def adapter_base(self) -> tuple[ArchitectureFacts, str]:
        """The served revision's architecture and recorded source (read once, verified)."""
        if self._adapter_base is None:
            plan = self.plan
            self._adapter_base = self._retried(
                lambda: self.store.adapter_base(plan.model_name, plan.revision),
                f"read of model {plan.model_name!r} revision {plan.revision!r}'s config.json",
            )
        return self._adapter_base

    def discard_adapter(self, name: str, version: str) -> None:
        """Delete one adapter version's files; names that fail the checks delete nothing."""
        try:
            path = self.adapter_dir(name, version)
        except EntrypointError as exc:
            log.error("%s; nothing deleted", exc)
            return
        shutil.rmtree(path, ignore_errors=True)

    def compile_cache_versions(self, key: str) -> list[str]:
        return self._retried(
            lambda: self.store.compile_cache_versions(self.plan.model_name, self.plan.stage, self.target, key),
            f"listing of compile cache {key}",
        )

    def download_compile_cache(self, key: str, version: str, dest: Path) -> Path:
        plan = self.plan
        return self._retried(
            lambda: self.store.download_compile_cache(plan.model_name, plan.stage, self.target, key, version, dest),
            f"download of compile cache {key} version {version}",
        )

    def publish_compile_cache(self, key: CompileCacheKey, directory: Path, *, repair: bool) -> VersionManifest:
        plan = self.plan
        return self._retried(
            lambda: self.store.publish_compile_cache(
                directory,
                plan.model_name,
                plan.stage,
                self.target,
                key.key,
                factors=key.factors,
                uploader=self.server_id,
                repair=repair,
            ),
            f"upload of compile cache {key.key}",
        )
