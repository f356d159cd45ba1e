"""Architecture facts from the Hugging Face Hub, through `huggingface_hub` (its cache,
`HF_TOKEN` and `HF_ENDPOINT` are the caller's to pass): config.json at a pinned commit and
the exact bytes of every safetensors tensor, read from the files' headers (range requests,
no weights downloaded)."""

from __future__ import annotations

import json
from dataclasses import dataclass

from model_store.errors import EXIT_REFUSED
from model_store.families import ConfigError

HUB_QUANT_CONFIG = "hf_quant_config.json"  # NVIDIA ModelOpt checkpoints keep it beside config.json


class HubError(ConfigError):
    """The Hub answered, and what it said stops the lock; the message says what to set or fix."""

    exit_code = EXIT_REFUSED


class HubUnreachable(HubError):
    """The Hub could not be asked (offline mode, no network): bundled facts may stand in."""


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
        from httpx2 import HTTPError  # huggingface_hub 2.x's transport: its connect errors are no OSError
        from huggingface_hub import HfApi, errors

        api = HfApi(endpoint=self.endpoint, token=self.token)
        name = f"{repo_id}@{revision}" if revision else repo_id
        try:
            info = api.model_info(repo_id, revision=revision)
            files = {sibling.rfilename for sibling in info.siblings or []}
            config = self._json(api, repo_id, info.sha, "config.json")
            if "quantization_config" not in config and HUB_QUANT_CONFIG in files:
                modelopt = self._json(api, repo_id, info.sha, HUB_QUANT_CONFIG)
                config["quantization_config"] = {"quant_method": "modelopt", **modelopt.get("quantization", modelopt)}
            weights = self._weights(api, repo_id, info.sha) if any(f.endswith(".safetensors") for f in files) else None
        except errors.HFValidationError as exc:
            raise HubError(f"{name}: not a Hugging Face repository id or revision ({exc})") from None
        except errors.GatedRepoError:
            raise HubError(f"{name}: gated on the Hub: accept its licence on the model page and set HF_TOKEN to a token with access") from None
        except errors.RevisionNotFoundError:
            raise HubError(f"{name}: revision {revision!r} does not exist (give a branch, tag or commit sha after '@')") from None
        except errors.RemoteEntryNotFoundError:
            raise HubError(f"{name}: has no config.json, so it is not a transformers checkpoint vLLM can serve") from None
        except errors.RepositoryNotFoundError:
            raise HubError(f"{name}: no such model on the Hub (or it is private: set HF_TOKEN)") from None
        except errors.OfflineModeIsEnabled:
            raise HubUnreachable(f"{name}: the Hub is not asked in offline mode (HF_HUB_OFFLINE)") from None
        except (HTTPError, OSError) as exc:
            if isinstance(exc, errors.HfHubHTTPError) and exc.response is not None:
                raise HubError(f"{name}: the Hub answered HTTP {exc.response.status_code}") from None
            raise HubUnreachable(f"{name}: the Hub cannot be reached ({type(exc).__name__})") from None
        return HubCheckpoint(repo_id=repo_id, commit=info.sha, config=config, weights=weights)

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
