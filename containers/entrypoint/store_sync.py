"""Every call the container makes to the model store and the adapter registry: the executor of
the boot decision (`model_store/store/boot.py`), which decides what to fetch, from where, into which path.

Downloads are verified by the store against each version's `_manifest.json`. Transient S3 errors
(throttling, a network blip during boot) are retried by botocore itself, with `STORE_ATTEMPTS`;
what stays broken becomes one EntrypointError that names the store and what was being done.
What the store returns is input: an adapter is validated again before vLLM loads it, and a
document that fails a check is refused at once.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from botocore.exceptions import BotoCoreError, ClientError

from llmfleet.containers.entrypoint.settings import EntrypointError, EntrypointSettings, EnvironmentRefused
from llmfleet.model_store.store.adapters import accepted_bases_for, AdapterRejected, validate_adapter
from llmfleet.model_store.facts.architectures import ArchitectureFacts
from llmfleet.model_store.store.boot import (
    adapter_path,
    AdapterFetch,
    Boot,
    decide_boot,
    desired_adapters,
    Weights,
    weights,
)
from llmfleet.model_store.store.compile_cache import CompileCacheKey
from llmfleet.model_store.contract.container import STORE_ENV
from llmfleet.model_store.contract.targets import DEFAULT_TARGET
from llmfleet.model_store.contract.plan import DeploymentPlan
from llmfleet.model_store.store.registry import (
    AdapterRegistry,
    adapters_for_server,
    RegistryError,
    RegistryRefused,
    RegistryState,
)
from llmfleet.model_store.store.store import (
    MANIFEST_NAME,
    ModelStore,
    StoreError,
    StoreRefused,
    verify_model_directory,
    VersionManifest,
)

# botocore's standard mode backs off exponentially with jitter (1, 2, 4, 8 s at most): five
# attempts ride out a throttled or briefly unreachable S3 and still fail a misconfigured
# container within ~15 s.
STORE_ATTEMPTS = 5

T = TypeVar("T")
log = logging.getLogger(__name__)
STORE_FAILURES = (StoreError, RegistryError, BotoCoreError, ClientError)


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
    ):
        self.store, self.plan, self.server_id, self.target = store, plan, server_id, target
        self.preloaded_model_dir = Path(preloaded_model_dir) if preloaded_model_dir else None
        self.registry = AdapterRegistry(store)
        self.model_root = model_root
        self._adapter_base: tuple[ArchitectureFacts, str] | None = None

    @classmethod
    def connect(cls, settings: EntrypointSettings) -> StoreGateway:
        """The gateway to the store and registry the container's settings name."""
        try:
            store = ModelStore.from_uri(settings.store_uri, endpoint_url=settings.endpoint_url, attempts=STORE_ATTEMPTS)
        except StoreError as exc:
            raise EnvironmentRefused(f"{STORE_ENV}: {exc}") from None
        return cls(
            store,
            settings.plan,
            model_root=settings.model_root,
            server_id=settings.server_id,
            target=settings.target,
            preloaded_model_dir=settings.preloaded_model_dir,
        )

    def _call(self, call: Callable[[], T], what: str) -> T:
        """`call()`, its failure as one EntrypointError naming the store. A registry document's
        refusal goes to the caller as is, which keeps serving what it serves."""
        try:
            return call()
        except RegistryRefused:
            raise
        except StoreRefused as exc:
            raise EntrypointError(f"{what} refused: {exc}") from exc
        except STORE_FAILURES as exc:
            raise EntrypointError(f"{what} (store {self.store.location.uri}) failed: {exc}") from exc

    def _preloaded_copy(self) -> str | None:
        """SageMaker's copy of the revision, when one with its `_manifest.json` is on this disk."""
        preloaded = self.preloaded_model_dir
        return str(preloaded) if preloaded is not None and (preloaded / MANIFEST_NAME).is_file() else None

    def fetch_weights(self, decided: Weights) -> str:
        """Carry out the weights decision; returns the path or URI the server loads."""
        plan = self.plan
        if decided.how == "verify":
            try:
                verify_model_directory(Path(decided.path), model=plan.model_name, revision=plan.revision)
            except StoreError as exc:
                raise EntrypointError(f"the model copy in {decided.path} failed verification: {exc}") from None
            log.info("serving the verified model copy in %s (no download)", decided.path)
        elif decided.how == "download":
            dest = Path(decided.path)
            dest.mkdir(parents=True, exist_ok=True)
            self._call(
                lambda: self.store.download_model(plan.model_name, plan.revision, dest),
                f"download of model {plan.model_name!r} revision {plan.revision!r}",
            )
        return decided.path

    def model_location(self) -> str:
        """Decide and fetch the weights (an image server's whole boot): where the server reads them."""
        decided = weights(self.plan, self.store.location, model_root=self.model_root, preloaded_copy=self._preloaded_copy())
        return self.fetch_weights(decided)

    def registry_state(self) -> RegistryState:
        plan = self.plan
        return self._call(lambda: self.registry.state(plan.model_name, plan.stage), "registry read")

    def poll(self, etag: str | None) -> RegistryState | None:
        """The registry's state if it changed since `etag` (a conditional GET), else None."""
        plan = self.plan
        return self._call(lambda: self.registry.poll(plan.model_name, plan.stage, etag), "registry poll")

    def desired(self, state: RegistryState) -> dict[str, str]:
        return desired_adapters(self.plan, adapters_for_server(state, self.server_id))

    def boot(self, state: RegistryState) -> Boot:
        """The boot decision for a text server, from its settings, its disk and the registry's `state`."""
        return decide_boot(
            self.plan,
            self.store.location,
            model_root=self.model_root,
            preloaded_copy=self._preloaded_copy(),
            promoted=adapters_for_server(state, self.server_id),
        )

    def fetch_adapter(self, name: str, version: str) -> Path:
        """One adapter version fetched into its place in the cache (`download_adapter`); names that
        cannot become a path are an EntrypointError."""
        try:
            fetch = AdapterFetch(name, version, adapter_path(self.model_root, self.plan.model_name, name, version))
        except StoreRefused as exc:
            raise EntrypointError(str(exc)) from None
        return self.download_adapter(fetch)

    def download_adapter(self, fetch: AdapterFetch) -> Path:
        """Download and verify one adapter version into its emptied directory of the cache, then
        validate it as publish did (safetensors only, fits this base model); returns its directory."""
        dest, name, version = fetch.path, fetch.name, fetch.version
        shutil.rmtree(dest, ignore_errors=True)  # vLLM loads exactly the files checked below
        self._call(
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
            self._adapter_base = self._call(
                lambda: self.store.adapter_base(plan.model_name, plan.revision),
                f"read of model {plan.model_name!r} revision {plan.revision!r}'s config.json",
            )
        return self._adapter_base

    def discard_adapter(self, name: str, version: str) -> None:
        """Delete one adapter version's files; names that fail the checks delete nothing."""
        try:
            path = adapter_path(self.model_root, self.plan.model_name, name, version)
        except StoreRefused as exc:
            log.error("%s; nothing deleted", exc)
            return
        shutil.rmtree(path, ignore_errors=True)

    def compile_cache_versions(self, key: str) -> list[str]:
        return self._call(
            lambda: self.store.compile_cache_versions(self.plan.model_name, self.plan.stage, self.target, key),
            f"listing of compile cache {key}",
        )

    def download_compile_cache(self, key: str, version: str, dest: Path) -> Path:
        plan = self.plan
        return self._call(
            lambda: self.store.download_compile_cache(plan.model_name, plan.stage, self.target, key, version, dest),
            f"download of compile cache {key} version {version}",
        )

    def publish_compile_cache(self, key: CompileCacheKey, directory: Path, *, repair: bool) -> VersionManifest:
        plan = self.plan
        return self._call(
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
