"""Architecture facts from the Hugging Face Hub, through `huggingface_hub` (its cache,
`HF_TOKEN` and `HF_ENDPOINT` are the caller's to pass): config.json at a pinned commit and
the exact bytes of every safetensors tensor, read from the files' headers (range requests,
no weights downloaded); and, for `llmfleet model import` (model_store.store.hub_import), a repo's
file list with sizes and LFS sha256s at a commit, and each file's bytes as a stream."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass

from llmfleet.model_store.errors import EXIT_BAD_INPUT, EXIT_REFUSED
from llmfleet.model_store.facts.families import ConfigError

HUB_QUANT_CONFIG = "hf_quant_config.json"  # NVIDIA ModelOpt checkpoints keep it beside config.json
STREAM_BLOCK = 1 << 20  # bytes handed over per read of a Hub download
READ_TIMEOUT_S = 60.0  # a stalled download fails (and the import can be resumed) rather than hang


class HubError(ConfigError):
    """The Hub answered, and what it said stops the lock; the message says what to set or fix."""

    exit_code = EXIT_REFUSED


class HubUnreachable(HubError):
    """The Hub could not be asked (offline mode, no network): bundled facts may stand in."""


class HubNotFound(HubError):
    """The repository, revision or file named does not exist on the Hub (or is private)."""

    exit_code = EXIT_BAD_INPUT


@dataclass(frozen=True)
class HubFile:
    """One file of a repo at a commit, as the Hub lists it: LFS files carry their sha256."""

    path: str
    size: int
    sha256: str | None  # None for a file kept in git itself (the Hub caps those at 10 MiB)


def _name(repo_id: str, revision: str | None) -> str:
    return f"{repo_id}@{revision}" if revision else repo_id


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """huggingface_hub's (and its transport's) errors as one-line HubErrors saying what to do."""
    from httpx2 import HTTPError  # huggingface_hub 2.x's transport: its connect errors are no OSError
    from huggingface_hub import errors

    name = _name(repo_id, revision)
    try:
        yield
    except errors.HFValidationError as exc:
        raise HubNotFound(f"{name}: not a Hugging Face repository id or revision ({exc})") from None
    except errors.GatedRepoError:
        raise HubError(f"{name}: gated on the Hub: accept its licence on the model page and set HF_TOKEN to a token with access") from None
    except errors.RevisionNotFoundError:
        raise HubNotFound(f"{name}: revision {revision!r} does not exist (give a branch, tag or commit sha after '@')") from None
    except errors.RemoteEntryNotFoundError as exc:
        raise HubNotFound(f"{name}: a file is missing on the Hub ({exc.response.url.path if exc.response else exc})") from None
    except errors.RepositoryNotFoundError:
        raise HubNotFound(f"{name}: no such model on the Hub (or it is private: set HF_TOKEN)") from None
    except errors.OfflineModeIsEnabled:
        raise HubUnreachable(f"{name}: the Hub is not asked in offline mode (HF_HUB_OFFLINE)") from None
    except (HTTPError, OSError) as exc:
        if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
            status = exc.response.status_code
            hint = " (set HF_TOKEN to a token with access, and accept the licence on the model page)" if status in (401, 403) else ""
            raise HubError(f"{name}: the Hub answered HTTP {status}{hint}") from None
        raise HubUnreachable(f"{name}: the Hub cannot be reached ({type(exc).__name__})") from None


@dataclass(frozen=True)
class HubCheckpoint:
    repo_id: str
    commit: str
    config: dict
    weights: dict[str, int] | None  # bytes per safetensors dtype; None for a repo without safetensors


@dataclass(frozen=True)
class HubClient:
    """One Hub to read from; `endpoint` None means huggingface.co (or HF_ENDPOINT as read by the library)."""

    endpoint: str | None = None
    token: str | None = None
    cache_dir: str | None = None
    offline: bool = False

    def checkpoint(self, repo_id: str, revision: str | None) -> HubCheckpoint:
        """config.json and weight bytes of `repo_id` at `revision` (branch, tag or sha; default main)."""
        if self.offline:
            raise HubUnreachable(f"{repo_id}: the Hub is not asked in offline mode (HF_HUB_OFFLINE)")
        from huggingface_hub import HfApi, errors

        api = HfApi(endpoint=self.endpoint, token=self.token)
        with hub_errors(repo_id, revision):
            info = api.model_info(repo_id, revision=revision)
            files = {sibling.rfilename for sibling in info.siblings or []}
            try:
                config = self._json(api, repo_id, info.sha, "config.json")
            except errors.RemoteEntryNotFoundError:
                raise HubError(f"{_name(repo_id, revision)}: has no config.json, so it is not a transformers checkpoint vLLM can serve") from None
            if "quantization_config" not in config and HUB_QUANT_CONFIG in files:
                modelopt = self._json(api, repo_id, info.sha, HUB_QUANT_CONFIG)
                config["quantization_config"] = {"quant_method": "modelopt", **modelopt.get("quantization", modelopt)}
            weights = self._weights(api, repo_id, info.sha) if any(f.endswith(".safetensors") for f in files) else None
        return HubCheckpoint(repo_id=repo_id, commit=info.sha, config=config, weights=weights)

    def repo_files(self, repo_id: str, revision: str | None) -> tuple[str, list[HubFile]]:
        """The commit `revision` (branch, tag or sha; default main) resolves to, and every file
        there with its size and, for LFS files, sha256: one metadata request, no file read."""
        if self.offline:
            raise HubUnreachable(f"{repo_id}: the Hub is not asked in offline mode (HF_HUB_OFFLINE)")
        from huggingface_hub import HfApi

        with hub_errors(repo_id, revision):
            info = HfApi(endpoint=self.endpoint, token=self.token).model_info(repo_id, revision=revision, files_metadata=True)
        files = [
            HubFile(path=s.rfilename, size=s.lfs.size if s.lfs else s.size, sha256=s.lfs.sha256 if s.lfs else None)
            for s in info.siblings or []
        ]
        unsized = [f.path for f in files if f.size is None]
        if unsized:
            raise HubError(f"{_name(repo_id, revision)}: the Hub gave no size for {unsized[:3]}; cannot plan the transfer")
        return info.sha, files

    @contextlib.contextmanager
    def read_file(self, repo_id: str, commit: str, path: str) -> Iterator[Iterator[bytes]]:
        """The bytes of `path` at `commit`, as the Hub streams them
        (HF_TOKEN sent; redirects to the Hub's CDN followed); nothing is written to disk."""
        from huggingface_hub import get_session, hf_hub_url
        from huggingface_hub.utils import build_hf_headers, hf_raise_for_status

        url = hf_hub_url(repo_id, path, revision=commit, endpoint=self.endpoint)
        headers = build_hf_headers(token=self.token)
        with contextlib.ExitStack() as stack:
            with hub_errors(repo_id, commit[:12]):  # only the Hub's answer: the caller's errors pass untouched
                response = stack.enter_context(
                    get_session().stream("GET", url, headers=headers, follow_redirects=True, timeout=READ_TIMEOUT_S)
                )
                if response.status_code >= 400:
                    response.read()  # the error's body and headers name the cause (gated, missing...)
                    hf_raise_for_status(response)
            yield _transport_errors(response.iter_bytes(STREAM_BLOCK), repo_id, commit)

    def _json(self, api, repo_id: str, commit: str, filename: str) -> dict:
        path = api.hf_hub_download(repo_id, filename, revision=commit, cache_dir=self.cache_dir)
        try:
            with open(path, "rb") as handle:
                data = json.loads(handle.read())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise HubError(f"{repo_id}@{commit[:12]}: {filename} is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise HubError(f"{repo_id}@{commit[:12]}: {filename} is not a JSON object")
        return data

    @staticmethod
    def _weights(api, repo_id: str, commit: str) -> dict[str, int] | None:
        from huggingface_hub import errors

        try:
            metadata = api.get_safetensors_metadata(repo_id, revision=commit)
        except errors.NotASafetensorsRepoError:
            return None  # safetensors under other names (e.g. consolidated.safetensors): size from config
        except errors.SafetensorsParsingError as exc:
            raise HubError(f"{repo_id}@{commit[:12]}: a safetensors header cannot be read: {exc}") from None
        totals: dict[str, int] = {}
        for file in metadata.files_metadata.values():
            for tensor in file.tensors.values():
                start, end = tensor.data_offsets
                totals[tensor.dtype] = totals.get(tensor.dtype, 0) + end - start
        return totals


def _transport_errors(blocks: Iterator[bytes], repo_id: str, commit: str) -> Iterator[bytes]:
    """A download's blocks; a connection lost midway is a HubUnreachable naming the repo."""
    with hub_errors(repo_id, commit[:12]):
        yield from blocks
