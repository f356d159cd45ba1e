"""The S3 model store: layout, verified transfers, immutable versions.

Layout under `s3://bucket/prefix`:

    models/<model>/<revision>/...                 weights, config.json, tokenizer files
    adapters/<model>/<adapter>/<version>/...      a peft LoRA directory
    registry/<model>/<stage>.json                 which adapter versions a stage serves (registry.py)
    compile-cache/<model>/<stage>/<target>/<key>/<version>/...
                                                  vLLM's compile cache, written by the servers (compile_cache.py)

Every version ends with `_manifest.json` (each file's key, size and sha256; uploader,
time, source), written last with `If-None-Match: *`: a version exists only once it is
complete, and it can never be overwritten. Readers trust nothing without it; downloads
check every byte against it. Files already in S3 with the recorded size and sha256 are
not sent again, so rerunning an interrupted upload finishes it.

What a server reads back is input (another writer may have put it there): a manifest is
checked against the key it was asked for, its entries must sit under their version with
safe relative paths, and its sizes and document length are bounded, before a byte is
written locally (`checked_manifest`); local paths built from stored names are resolved
inside their root first (`contained`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

import boto3
from boto3.s3.transfer import TransferConfig, create_transfer_manager
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from s3transfer.subscribers import BaseSubscriber

from llmfleet.model_store.store.adapters import (
    AdapterInfo,
    check_model_name,
    check_segment,
    DEFAULT_MAX_RANK,
    file_size_limit,
    MAX_FILES,
    validate_adapter,
)
from llmfleet.model_store.facts.architectures import (
    ArchitectureFacts,
    bytes_by_dtype,
    facts_from_config,
    parse_safetensors_header,
    safetensors_header_length,
    SAFETENSORS_INDEX,
    weight_files,
)
from llmfleet.model_store.contract.container import TARGET_PORTS
from llmfleet.model_store.errors import EXIT_REFUSED, LlmfleetError
from llmfleet.model_store.contract.layout import ADAPTERS, COMPILE_CACHE, MODELS, REGISTRY
from llmfleet.model_store.contract.manifest import ManifestError

MANIFEST_NAME = "_manifest.json"
MANIFEST_FORMAT = 1
MODEL_CONFIG = "config.json"
PIPELINE_INDEX = "model_index.json"  # a diffusers pipeline (kind: image) instead of config.json

MIB = 1 << 20
# boto3's managed transfer: parallel multipart above the threshold. `aws s3 cp` uses 8 MiB
# parts and 10 threads (AWS CLI S3 configuration docs, 2026-10); larger parts halve the
# request count for multi-GiB weights at the same parallelism.
TRANSFER_CONFIG = TransferConfig(
    multipart_threshold=16 * MIB,
    multipart_chunksize=16 * MIB,
    max_concurrency=10,
    use_threads=True,
)
# Connections for the transfer threads plus the HEAD/GET calls beside them.
MAX_POOL_CONNECTIONS = 32
HASH_BLOCK = 4 * MIB
HASH_THREADS = 4

STAGE_PATTERN = r"^[a-z][a-z0-9-]{0,19}$"  # the fleet manifest's `stage` field
# Bounds on what a server reads back. A manifest entry takes ~250 bytes: 16 MiB is ~60k
# files, where a model or a compile cache holds hundreds to a few thousand.
MAX_MANIFEST_BYTES = 16 * MIB
MAX_FILE_BYTES = 1 << 50  # far above any S3 object: refuses only nonsense sizes
# vLLM's compile cache (code, kernels) is tens of MiB to a few hundred for 8B-70B models
# (the CPU stand-in's is 2.5 MiB); more is not a cache this server should unpickle.
MAX_COMPILE_CACHE_BYTES = 4 << 30
MAX_PATH_CHARS = 1024  # S3's key limit; one path segment may hold at most 255 bytes (ext4, xfs)
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
MANIFEST_KINDS = ("model", "adapter", "compile-cache")

log = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int], None]
"""Called with (bytes just transferred or found already stored, total bytes of the version)."""


class StoreError(LlmfleetError):
    """A store operation that cannot proceed; the message names the bucket/key and what to do."""

    exit_code = EXIT_REFUSED


class VersionExists(StoreError):
    """The version is already complete in the store; versions are immutable."""


class StoreRefused(StoreError):
    """Something read from the store fails the checks a server makes before trusting it (a
    manifest, a name, a local path built from one). Reading it again returns the same bytes,
    so callers do not retry it."""


@dataclass(frozen=True)
class StoreLocation:
    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> StoreLocation:
        """`s3://bucket[/prefix]` -> StoreLocation; anything else is a StoreError."""
        if not isinstance(uri, str) or not uri.startswith("s3://"):
            raise StoreError(f"store {uri!r} is not an s3://bucket/prefix URI (set --store or LLMFLEET_STORE)")
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        if not bucket or not all(c.islower() or c.isdigit() or c in ".-" for c in bucket):
            raise StoreError(
                f"store {uri!r}: {bucket!r} is not an S3 bucket name (lowercase letters, digits, '.', '-')"
            )
        return cls(bucket=bucket, prefix=prefix.strip("/"))

    def key(self, *parts: str) -> str:
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p and p.strip("/"))

    @property
    def uri(self) -> str:
        """`s3://bucket[/prefix]`, as `--store` and LLMFLEET_STORE take it."""
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative to the version, POSIX
    key: str  # full S3 key
    size: int
    sha256: str


@dataclass(frozen=True)
class PartRecord:
    """A part of an unfinished multipart upload, as S3 lists it."""

    size: int
    etag: str
    sha256_b64: str | None  # the part's sha256 (base64), as S3 checked it on receipt


@dataclass(frozen=True)
class VersionManifest:
    """The `_manifest.json` of one model revision or adapter version."""

    kind: str  # "model", "adapter" or "compile-cache"
    model: str
    version: str  # the model's revision or the adapter's version
    files: tuple[FileEntry, ...]
    uploader: str
    created: str  # ISO 8601, UTC
    source: str
    adapter: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> str:
        return json.dumps({"format": MANIFEST_FORMAT, **asdict(self)}, indent=2, sort_keys=True) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes, where: str) -> VersionManifest:
        """Parse a manifest, every field of the type and shape the store writes (StoreRefused
        otherwise): a wrong type is refused here, never a TypeError later."""
        if len(text) > MAX_MANIFEST_BYTES:
            raise StoreRefused(f"{where}: {len(text)} bytes; a {MANIFEST_NAME} holds at most {MAX_MANIFEST_BYTES}")
        try:
            data = json.loads(text)
        except (ValueError, RecursionError) as exc:
            raise StoreRefused(f"{where}: not a valid {MANIFEST_NAME}: {exc}") from None
        problem = _manifest_problem(data)
        if problem:
            raise StoreRefused(f"{where}: not a valid {MANIFEST_NAME}: {problem}")
        fields = {name: value for name, value in data.items() if name not in ("format", "files")}
        return cls(**fields, files=tuple(FileEntry(**entry) for entry in data["files"]))


# Every field of a manifest and the JSON types it holds, as `to_json` writes them.
_MANIFEST_FIELDS: dict[str, tuple[type, ...]] = {
    "format": (int,),
    "kind": (str,),
    "model": (str,),
    "version": (str,),
    "adapter": (str, type(None)),
    "files": (list,),
    "uploader": (str,),
    "created": (str,),
    "source": (str,),
    "details": (dict,),
}
_ENTRY_FIELDS: dict[str, tuple[type, ...]] = {"path": (str,), "key": (str,), "size": (int,), "sha256": (str,)}


def _wrong_types(data: object, fields: dict[str, tuple[type, ...]], what: str) -> str | None:
    """Why `data` is not an object with exactly `fields` of their types (JSON true is no number), or None."""
    if not isinstance(data, dict):
        return f"{what} must be a JSON object, got {type(data).__name__}"
    if set(data) != set(fields):
        return f"{what} has fields {sorted(data)!r:.200}; expected {sorted(fields)}"
    for name, allowed in fields.items():
        value = data[name]
        if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in allowed)
            return f"{what}: {name} must be {names}, got {value!r:.80}"
    return None


def _manifest_problem(data: object) -> str | None:
    """What is wrong with a parsed manifest document, or None."""
    problem = _wrong_types(data, _MANIFEST_FIELDS, "the manifest")
    if problem:
        return problem
    if data["format"] != MANIFEST_FORMAT:
        return f"format {data['format']!r} is not {MANIFEST_FORMAT}"
    if data["kind"] not in MANIFEST_KINDS:
        return f"kind {data['kind']!r:.80} is not one of {list(MANIFEST_KINDS)}"
    for index, entry in enumerate(data["files"]):
        problem = _wrong_types(entry, _ENTRY_FIELDS, f"files[{index}]")
        if problem:
            return problem
        if not 0 <= entry["size"] <= MAX_FILE_BYTES:
            return f"files[{index}]: size {entry['size']} is outside 0..{MAX_FILE_BYTES}"
        if not SHA256_HEX.fullmatch(entry["sha256"]):
            return f"files[{index}]: sha256 {entry['sha256']!r:.80} is not 64 lowercase hex digits"
    return None


def checked_manifest(
    manifest: VersionManifest, *, prefix: str, identity: tuple[str, str, str, str | None], where: str
) -> VersionManifest:
    """`manifest`, read from `<prefix>/_manifest.json`, if a server may trust it; else StoreRefused.

    It must describe what was asked for (`identity`: kind, model, version, adapter), list
    each file once under a safe relative path whose key is exactly `<prefix>/<path>` (a
    version never points at another version's or model's objects, nor at its own manifest),
    and stay within its kind's bounds: an adapter is a flat directory of at most MAX_FILES
    files within the sizes publish allows, a compile cache at most MAX_COMPILE_CACHE_BYTES.
    """
    found = (manifest.kind, manifest.model, manifest.version, manifest.adapter)
    if found != identity:
        raise StoreRefused(f"{where}: describes {_describe(found)}, expected {_describe(identity)}; refusing it")
    paths = set()
    for entry in manifest.files:
        relative = _safe_relative(entry.path, where)
        if entry.path == MANIFEST_NAME or entry.path in paths:
            raise StoreRefused(f"{where}: file {entry.path!r:.80} is listed twice or names the manifest itself")
        if entry.key != f"{prefix}/{entry.path}":
            raise StoreRefused(
                f"{where}: file {entry.path!r:.80} points at {entry.key!r:.200}, outside its version; "
                f"every file of this version is stored at {prefix}/<path>"
            )
        paths.add(entry.path)
        if manifest.kind == "adapter":
            _check_adapter_entry(entry, relative, where)
    if manifest.kind == "adapter" and len(manifest.files) > MAX_FILES:
        raise StoreRefused(f"{where}: {len(manifest.files)} files; an adapter holds at most {MAX_FILES}")
    if manifest.kind == "compile-cache" and manifest.total_bytes > MAX_COMPILE_CACHE_BYTES:
        raise StoreRefused(
            f"{where}: {manifest.total_bytes} bytes; a compile cache holds at most {MAX_COMPILE_CACHE_BYTES}"
        )
    return manifest


def _check_adapter_entry(entry: FileEntry, relative: PurePosixPath, where: str) -> None:
    """An adapter's file: directly in its directory, within the size publish allows for that name."""
    limit = file_size_limit(entry.path)
    if len(relative.parts) != 1 or entry.size > limit:
        raise StoreRefused(
            f"{where}: adapter file {entry.path!r:.80} ({entry.size} bytes); an adapter is a flat "
            f"directory and this file may hold at most {limit} bytes"
        )


def _describe(identity: tuple[str, str, str, str | None]) -> str:
    kind, model, version, adapter = identity
    return f"{kind} {'/'.join(repr(n) for n in (model, adapter) if n is not None)} version {version!r:.80}"


def content_version(entries: Iterable[tuple[str, int, str]]) -> str:
    """A version name from the content: identical adapter directories get the same version."""
    digest = hashlib.sha256()
    for path, size, sha in sorted(entries):
        digest.update(f"{path}\0{size}\0{sha}\n".encode())
    return digest.hexdigest()[:12]


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _hash_file(directory: Path, relpath: str) -> tuple[str, int, str]:
    path = directory / relpath
    return relpath, path.stat().st_size, sha256_file(path)


def _version_files(directory: Path) -> list[str]:
    """The files a version of `directory` holds: all but hidden ones, relative, sorted."""
    relpaths = [
        path.relative_to(directory).as_posix()
        for path in sorted(directory.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(directory).parts)
    ]
    if MANIFEST_NAME in relpaths:
        raise StoreError(f"{directory}: holds a file named {MANIFEST_NAME}, which the store reserves")
    return relpaths


def _safe_relative(path: str, where: str) -> PurePosixPath:
    """A manifest path that stays inside the destination directory, in the one form
    `_version_files` writes (no '.', '..', '//', control characters; bounded lengths)."""
    relative = PurePosixPath(path)
    if (
        relative.is_absolute()
        or not relative.parts
        or relative.as_posix() != path
        or len(path) > MAX_PATH_CHARS
        or any(p in (".", "..") or len(p.encode()) > 255 for p in relative.parts)
        or any(ord(c) < 32 for c in path)
    ):
        raise StoreRefused(f"{where}: file path {path!r:.80} escapes the version directory; refusing to write it")
    return relative


def contained(root: str | Path, *parts: str) -> Path:
    """`root/parts...` with symlinks resolved, if it lies strictly inside `root` (resolved too);
    else StoreRefused. The one check before a server writes or deletes a path built from names
    it read: an absolute part, '..', an empty part or a symlink out of `root` is refused."""
    base = Path(root).resolve()
    if not parts or any(not isinstance(p, str) or not p or "\0" in p for p in parts):
        raise StoreRefused(f"{base}: path parts {parts!r:.200} must be non-empty strings without NUL")
    path = base.joinpath(*parts).resolve()
    if path == base or not path.is_relative_to(base):
        raise StoreRefused(f"{base.joinpath(*parts)!s:.300} resolves to {path!s:.300}, outside {base}; refusing it")
    return path


def versions_by_upload(listing: Iterable[dict], parent: str) -> list[str]:
    """The complete versions directly under `parent` (those with a `_manifest.json`) in a
    `list_objects_v2` listing, oldest first by when the store received their manifest (S3's
    own LastModified; ties by name). Never by the `created` a manifest claims: its writer
    chose that date. A name that is not a safe segment is skipped (logged)."""
    prefix = parent + "/"
    uploaded = {}
    for obj in listing:
        relative = obj["Key"][len(prefix) :].split("/")
        if len(relative) != 2 or relative[1] != MANIFEST_NAME:
            continue
        try:
            check_segment("version", relative[0], rule="version")
        except ValueError as exc:
            log.warning("s3 listing of %s: skipped: %s", parent, exc)
            continue
        uploaded[relative[0]] = obj["LastModified"]
    return sorted(uploaded, key=lambda version: (uploaded[version], version))


class _ProgressSubscriber(BaseSubscriber):
    def __init__(self, progress: ProgressCallback, total: int):
        self._progress, self._total = progress, total

    def on_progress(self, future, bytes_transferred: int, **kwargs) -> None:
        self._progress(bytes_transferred, self._total)


def verify_model_directory(directory: Path, *, model: str, revision: str) -> VersionManifest:
    """Check a model revision someone else copied out of the store (SageMaker's ModelDataSource
    into /opt/ml/model) against the `_manifest.json` copied with it: the manifest is for
    `model`@`revision` and every file it lists is there with its size and sha256. Reads
    only; StoreError naming the first file that differs."""
    directory = Path(directory)
    manifest_path = directory / MANIFEST_NAME
    try:
        manifest = VersionManifest.from_json(manifest_path.read_bytes(), str(manifest_path))
    except OSError as exc:
        raise StoreError(f"{manifest_path}: cannot read the version's manifest: {exc.strerror}") from None
    if (manifest.kind, manifest.model, manifest.version) != ("model", model, revision):
        raise StoreRefused(
            f"{manifest_path}: describes {manifest.kind} {manifest.model!r} revision {manifest.version!r}, "
            f"expected model {model!r} revision {revision!r}; point the model data source at "
            f"models/{model}/{revision}/"
        )
    for entry in manifest.files:
        path = directory / _safe_relative(entry.path, str(manifest_path))
        if not path.is_file():
            raise StoreError(f"{path}: missing; {manifest_path} lists it ({entry.size} bytes)")
        size = path.stat().st_size
        sha256 = sha256_file(path) if size == entry.size else ""
        if size != entry.size or sha256 != entry.sha256:
            raise StoreError(
                f"checksum mismatch for {path}: got {size} bytes sha256 {sha256 or '(not computed)'}, "
                f"{MANIFEST_NAME} records {entry.size} bytes sha256 {entry.sha256}; the copy was altered or is incomplete"
            )
    return manifest


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def is_missing_error(exc: ClientError) -> bool:
    return _error_code(exc) in ("404", "NoSuchKey", "NotFound")


def is_precondition_failed(exc: ClientError) -> bool:
    # 412 when the condition fails; 409 when a concurrent conditional write is in flight.
    return _error_code(exc) in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409")


def base_revision(model: str, *, given: str | None, fleet_revision: str | None, stored: list[str]) -> str:
    """The base model revision an adapter is validated against: the one given, else the
    fleet's, else the store's only complete revision; otherwise a StoreError listing them."""
    if given or fleet_revision:
        return given or fleet_revision
    if len(stored) == 1:
        return stored[0]
    if not stored:
        raise StoreError(f"model {model!r} has no complete revision in the store; upload it first (llmfleet model upload)")
    raise StoreError(f"model {model!r} has revisions {stored} in the store; choose one with --model-revision (or --fleet)")


class ModelStore:
    """Models and adapters in one bucket. Pass a boto3 S3 client (its endpoint decides where)."""

    def __init__(self, location: StoreLocation, s3_client):
        self.location = location
        self.client = s3_client

    @classmethod
    def from_uri(cls, uri: str, *, endpoint_url: str | None = None, attempts: int | None = None) -> ModelStore:
        """A store for `s3://bucket/prefix`; boto3 also honours AWS_ENDPOINT_URL by itself.
        `attempts`: botocore's total attempts per call (standard mode; its default when None)."""
        location = StoreLocation.parse(uri)
        retries = {"mode": "standard"} | ({"total_max_attempts": attempts} if attempts else {})
        client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            config=Config(max_pool_connections=MAX_POOL_CONNECTIONS, retries=retries),
        )
        return cls(location, client)

    # --- keys -----------------------------------------------------------------------------

    def model_prefix(self, model: str, revision: str) -> str:
        return self.location.key(MODELS, model, revision)

    def adapter_prefix(self, model: str, name: str, version: str) -> str:
        return self.location.key(ADAPTERS, model, name, version)

    def registry_key(self, model: str, stage: str) -> str:
        return self.location.key(REGISTRY, model, f"{stage}.json")

    def compile_cache_prefix(self, model: str, stage: str, target: str, key: str = "", version: str = "") -> str:
        """`compile-cache/<model>/<stage>/<target>/<key>/<version>` (key and version may be left
        out for the prefixes above them): each stage's and target's servers write and read only
        their own, so nothing one writes is unpickled by another's. Every name is checked here,
        the one place this key is built."""
        if target not in TARGET_PORTS:
            raise StoreError(f"target {target!r:.80} is not one of {sorted(TARGET_PORTS)}")
        names = (("compile cache key", key), ("version", version))
        self._check_names(model, *(pair for pair in names if pair[1]), stage=stage)
        return self.location.key(COMPILE_CACHE, model, stage, target, key, version)

    # --- models ---------------------------------------------------------------------------

    def upload_model(
        self,
        directory: str | Path,
        model: str,
        revision: str,
        *,
        progress: ProgressCallback | None = None,
        uploader: str = "unknown",
        source: str | None = None,
    ) -> VersionManifest:
        """Upload a checkpoint directory (config.json, or a diffusers pipeline's model_index.json)
        as models/<model>/<revision>."""
        directory = Path(directory)
        self._check_names(model, ("revision", revision))
        if not any((directory / name).is_file() for name in (MODEL_CONFIG, PIPELINE_INDEX)):
            raise StoreError(f"{directory}: no {MODEL_CONFIG} (or {PIPELINE_INDEX} for an image pipeline); a model directory must hold one")
        relpaths = _version_files(directory)
        return self._upload_version(
            directory,
            relpaths,
            self.model_prefix(model, revision),
            header={"kind": "model", "model": model, "version": revision, "adapter": None},
            uploader=uploader,
            source=source or str(directory.resolve()),
            details={},
            progress=progress,
        )

    def model_manifest(self, model: str, revision: str) -> VersionManifest:
        identity = ("model", model, revision, None)
        return self._read_manifest(self.model_prefix(model, revision), f"model {model!r} revision {revision!r}", identity)

    def download_model(
        self, model: str, revision: str, dest: Path, *, progress: ProgressCallback | None = None
    ) -> Path:
        """Download a model revision into `dest`, every file verified, its manifest recorded beside
        them (as SageMaker's copy has it); returns `dest`."""
        return self._download_version(self.model_manifest(model, revision), Path(dest), progress, record=True)

    def read_model_config(self, model: str, revision: str) -> dict:
        """The config.json of an uploaded model revision (verified against its manifest)."""
        manifest = self.model_manifest(model, revision)
        entry = next((f for f in manifest.files if f.path == MODEL_CONFIG), None)
        if entry is None:
            raise StoreError(f"{self._s3_uri(self.model_prefix(model, revision))}: the version holds no {MODEL_CONFIG}")
        body = self._get_bytes(entry.key)
        self._verify_bytes(entry, len(body), hashlib.sha256(body).hexdigest())
        try:
            return json.loads(body)
        except ValueError as exc:
            raise StoreError(f"{self._s3_uri(entry.key)}: not valid JSON: {exc}") from None

    def read_model_weights(self, model: str, revision: str) -> dict[str, int] | None:
        """Bytes per dtype of an uploaded revision's safetensors, read from their headers
        (two ranged GETs a file, no weights); None when the revision holds no safetensors."""
        totals: dict[str, int] = {}
        files = {entry.path: entry for entry in self.model_manifest(model, revision).files}
        index_entry = files.get(SAFETENSORS_INDEX)
        try:
            index = json.loads(self._get_bytes(index_entry.key)) if index_entry else None
        except ValueError:
            raise StoreError(f"{self._s3_uri(index_entry.key)}: not valid JSON") from None
        for entry in (files[name] for name in weight_files(list(files), index)):
            where = self._s3_uri(entry.key)
            length = safetensors_header_length(self._get_range(entry.key, 0, 8), where)
            header = parse_safetensors_header(self._get_range(entry.key, 8, length), where)
            for dtype, size in bytes_by_dtype(header, where).items():
                totals[dtype] = totals.get(dtype, 0) + size
        return totals or None

    # --- adapters -------------------------------------------------------------------------

    def publish_adapter(
        self,
        directory: str | Path,
        model: str,
        name: str,
        *,
        version: str | None = None,
        progress: ProgressCallback | None = None,
        model_revision: str = "main",
        max_rank: int = DEFAULT_MAX_RANK,
        accepted_bases: tuple[str, ...] = (),
        uploader: str = "unknown",
        source: str | None = None,
    ) -> VersionManifest:
        """Validate a peft LoRA directory against the stored base model, then upload it as a new version.

        Nothing is written unless validation passes (AdapterRejected). Without `version`, the
        version is derived from the content, so rerunning an interrupted publish resumes it.
        """
        directory = Path(directory)
        check_segment("adapter name", name)
        if version is not None:
            check_segment("version", version, rule="version")
        info = self.check_adapter(
            directory, model, model_revision=model_revision, max_rank=max_rank, accepted_bases=accepted_bases
        )
        hashed = self._hash_files(directory, list(info.files))
        derived = version is None
        version = version or content_version(hashed)
        try:
            return self._upload_version(
                directory,
                list(info.files),
                self.adapter_prefix(model, name, version),
                header={"kind": "adapter", "model": model, "version": version, "adapter": name},
                uploader=uploader,
                source=source or str(directory.resolve()),
                details={"adapter": asdict(info), "model_revision": model_revision},
                progress=progress,
                hashed=hashed,
            )
        except VersionExists as exc:
            if derived:
                raise VersionExists(f"{exc} (this content is already published as version {version})") from None
            raise

    def check_adapter(
        self,
        directory: str | Path,
        model: str,
        *,
        model_revision: str = "main",
        max_rank: int = DEFAULT_MAX_RANK,
        accepted_bases: tuple[str, ...] = (),
    ) -> AdapterInfo:
        """What `publish_adapter` checks before writing anything (AdapterRejected on the first
        fault): the directory against the stored base revision; writes nothing."""
        check_model_name(model)
        arch, recorded_source = self.adapter_base(model, model_revision)
        return validate_adapter(
            directory,
            model_name=model,
            accepted_bases=(*accepted_bases, recorded_source),
            max_rank=max_rank,
            arch=arch,
        )

    def adapter_base(self, model: str, revision: str) -> tuple[ArchitectureFacts, str]:
        """What adapters of `model` are validated against, at publish and again on each server:
        the revision's architecture (from its verified config.json) and the source recorded when
        it was uploaded (a name adapters trained from that copy give as their base)."""
        recorded_source = self.model_manifest(model, revision).source
        try:
            arch = facts_from_config(self.read_model_config(model, revision), source=f"model {model!r}")
        except ManifestError as exc:
            raise StoreError(str(exc)) from None
        return arch, recorded_source

    def adapter_manifest(self, model: str, name: str, version: str) -> VersionManifest:
        self._check_names(model, ("adapter name", name), ("version", version))
        return self._read_manifest(
            self.adapter_prefix(model, name, version),
            f"adapter {name!r} version {version!r} of model {model!r}",
            ("adapter", model, version, name),
        )

    def adapter_version_exists(self, model: str, name: str, version: str) -> bool:
        try:
            self.client.head_object(
                Bucket=self.location.bucket, Key=f"{self.adapter_prefix(model, name, version)}/{MANIFEST_NAME}"
            )
        except ClientError as exc:
            if is_missing_error(exc):
                return False
            raise self._wrap(exc, self.adapter_prefix(model, name, version)) from None
        return True

    def download_adapter(
        self, model: str, name: str, version: str, dest: Path, *, progress: ProgressCallback | None = None
    ) -> Path:
        """Download an adapter version into `dest`, every file verified; returns `dest`."""
        return self._download_version(self.adapter_manifest(model, name, version), Path(dest), progress)

    def model_revisions(self, model: str) -> list[str]:
        """Complete revisions of a model (those whose _manifest.json was written), by name."""
        prefix = self.location.key("models", model) + "/"
        return sorted(
            parts[0]
            for obj in self._list(prefix)
            if len(parts := obj["Key"][len(prefix) :].split("/")) == 2 and parts[1] == MANIFEST_NAME
        )

    def adapter_versions(self, model: str, name: str) -> list[str]:
        """Complete versions of an adapter, oldest first (by their manifest's creation time)."""
        return self._versions_by_creation(
            self.location.key("adapters", model, name), lambda v: self.adapter_manifest(model, name, v)
        )

    # --- compile caches -------------------------------------------------------------------

    def publish_compile_cache(
        self,
        directory: Path,
        model: str,
        stage: str,
        target: str,
        key: str,
        *,
        factors: dict[str, Any],
        uploader: str,
        repair: bool = False,
    ) -> VersionManifest:
        """Upload vLLM's compile cache directory as a version named by its content; the same
        content published twice (two servers racing) is one version.

        `repair`: the stored version of this content failed verification; the files of its
        manifest that this copy holds with the same size and sha256 are sent again (data
        objects only: its manifest stays true and is never rewritten).
        """
        self.compile_cache_prefix(model, stage, target, key)  # every name checked before a file is hashed
        relpaths = _version_files(directory)
        if not relpaths:
            raise StoreError(f"{directory}: empty; vLLM wrote no compile cache there")
        total = sum((directory / relpath).stat().st_size for relpath in relpaths)
        if total > MAX_COMPILE_CACHE_BYTES:  # servers refuse to restore it: not worth storing
            raise StoreError(f"{directory}: {total} bytes; a compile cache holds at most {MAX_COMPILE_CACHE_BYTES}")
        hashed = self._hash_files(directory, relpaths)
        version = content_version(hashed)
        try:
            return self._upload_version(
                directory,
                relpaths,
                self.compile_cache_prefix(model, stage, target, key, version),
                header={"kind": "compile-cache", "model": model, "version": version, "adapter": None},
                uploader=uploader,
                source=str(directory),
                details={"key": key, "factors": factors},
                progress=None,
                hashed=hashed,
            )
        except VersionExists:
            stored = self.compile_cache_manifest(model, stage, target, key, version)
            if repair:
                self._send_again(directory, stored)
            return stored

    def compile_cache_manifest(self, model: str, stage: str, target: str, key: str, version: str) -> VersionManifest:
        return self._read_manifest(
            self.compile_cache_prefix(model, stage, target, key, version),
            f"compile cache {key} version {version} of model {model!r} ({stage}, {target})",
            ("compile-cache", model, version, None),
        )

    def compile_cache_versions(self, model: str, stage: str, target: str, key: str) -> list[str]:
        """Complete versions of a compile cache, oldest first by when the store received them."""
        parent = self.compile_cache_prefix(model, stage, target, key)
        return versions_by_upload(self._list(parent + "/"), parent)

    def download_compile_cache(self, model: str, stage: str, target: str, key: str, version: str, dest: Path) -> Path:
        """Download a compile cache version into `dest`, every file verified; returns `dest`."""
        manifest = self.compile_cache_manifest(model, stage, target, key, version)
        return self._download_version(manifest, Path(dest), None)

    def _versions_by_creation(self, parent: str, manifest: Callable[[str], VersionManifest]) -> list[str]:
        """The complete versions directly under `parent`, oldest first by the time their manifest
        records (milliseconds, where S3's LastModified has seconds): for listings, not trust."""
        versions = versions_by_upload(self._list(parent + "/"), parent)
        created = {v: manifest(v).created for v in versions}
        return sorted(versions, key=lambda v: (created[v], v))

    # --- transfers ------------------------------------------------------------------------

    def _check_names(self, model: str, *segments: tuple[str, str], stage: str | None = None) -> None:
        try:
            check_model_name(model)
            for kind, value in segments:
                check_segment(kind, value)
            if stage is not None:
                check_segment("stage", stage, rule="stage", pattern=STAGE_PATTERN)
        except ValueError as exc:
            raise StoreError(str(exc)) from None

    def _hash_files(self, directory: Path, relpaths: list[str]) -> list[tuple[str, int, str]]:
        with ThreadPoolExecutor(HASH_THREADS) as pool:  # hashlib releases the GIL on large blocks
            return list(pool.map(lambda relpath: _hash_file(directory, relpath), relpaths))

    def _upload_version(
        self,
        directory: Path,
        relpaths: list[str],
        prefix: str,
        *,
        header: dict[str, Any],
        uploader: str,
        source: str,
        details: dict[str, Any],
        progress: ProgressCallback | None,
        hashed: list[tuple[str, int, str]] | None = None,
    ) -> VersionManifest:
        self.refuse_existing(prefix)
        total = sum((directory / p).stat().st_size for p in relpaths)
        progress = progress or (lambda done, total: None)
        entries = []
        with (
            ThreadPoolExecutor(HASH_THREADS) as hashers,
            create_transfer_manager(self.client, TRANSFER_CONFIG) as manager,
        ):
            # A file starts uploading as soon as its sha256 is known, while later ones are still hashed.
            hashing = [hashers.submit(_hash_file, directory, p) for p in relpaths] if hashed is None else []
            ready = hashed if hashed is not None else (future.result() for future in as_completed(hashing))
            uploads = []
            for path, size, sha256 in ready:
                entry = FileEntry(path=path, key=f"{prefix}/{path}", size=size, sha256=sha256)
                entries.append(entry)
                if self.already_stored(entry):
                    progress(entry.size, total)  # left by an interrupted run: resume past it
                    continue
                uploads.append(
                    manager.upload(
                        str(directory / entry.path),
                        self.location.bucket,
                        entry.key,
                        extra_args={"Metadata": {"sha256": entry.sha256}},
                        subscribers=[_ProgressSubscriber(progress, total)],
                    )
                )
            for upload in uploads:
                self._result(upload, prefix)
        manifest = VersionManifest(
            **header,
            files=tuple(sorted(entries, key=lambda e: e.path)),
            uploader=uploader,
            created=datetime.now(UTC).isoformat(timespec="milliseconds"),
            source=source,
            details=details,
        )
        return self.commit_version(prefix, manifest)

    def commit_version(self, prefix: str, manifest: VersionManifest) -> VersionManifest:
        """Write the version's manifest, once (`If-None-Match: *`): call it after every file it
        lists is stored; from then on the version exists and can never change."""
        manifest_key = f"{prefix}/{MANIFEST_NAME}"
        try:
            self.client.put_object(
                Bucket=self.location.bucket,
                Key=manifest_key,
                Body=manifest.to_json().encode(),
                ContentType="application/json",
                IfNoneMatch="*",
            )
        except ClientError as exc:
            if is_precondition_failed(exc):
                raise VersionExists(f"{self._s3_uri(prefix)} was completed by another upload meanwhile") from None
            raise self._wrap(exc, manifest_key) from None
        return manifest

    def refuse_existing(self, prefix: str) -> None:
        """VersionExists when the version under `prefix` is complete: versions are immutable."""
        if self._exists(f"{prefix}/{MANIFEST_NAME}"):
            raise VersionExists(f"{self._s3_uri(prefix)} already exists; versions are immutable, publish a new one")

    def _send_again(self, directory: Path, manifest: VersionManifest) -> None:
        """Send again the objects of a stored version whose bytes `directory` holds.

        The manifest came from the store (checked: entries under their version, safe paths),
        and only regular files inside `directory` whose size and sha256 equal its entry's are
        sent: a planted manifest can neither make this server upload a file from elsewhere
        nor change what the version holds."""
        where = f"compile cache {manifest.model}@{manifest.version}"
        sendable = []
        for entry in manifest.files:
            local = contained(directory, *_safe_relative(entry.path, where).parts)
            if local.is_file() and local.stat().st_size == entry.size and sha256_file(local) == entry.sha256:
                sendable.append((entry, local))
        with create_transfer_manager(self.client, TRANSFER_CONFIG) as manager:
            uploads = [
                (
                    entry,
                    manager.upload(
                        str(local), self.location.bucket, entry.key, extra_args={"Metadata": {"sha256": entry.sha256}}
                    ),
                )
                for entry, local in sendable
            ]
            for entry, upload in uploads:
                self._result(upload, entry.key)

    def already_stored(self, entry: FileEntry) -> bool:
        """Whether `entry`'s object is in the store with its size and sha256 (left by an
        interrupted upload): such a file is not sent again."""
        try:
            head = self.client.head_object(Bucket=self.location.bucket, Key=entry.key)
        except ClientError as exc:
            if is_missing_error(exc):
                return False
            raise self._wrap(exc, entry.key) from None
        return head["ContentLength"] == entry.size and head.get("Metadata", {}).get("sha256") == entry.sha256

    # --- streamed uploads: files that are never on local disk (model_store.store.hub_import) --------

    def put_file(self, entry: FileEntry, body: bytes) -> None:
        """One whole small file, its sha256 in the object's metadata (as `already_stored` reads it)."""
        try:
            self.client.put_object(
                Bucket=self.location.bucket, Key=entry.key, Body=body, Metadata={"sha256": entry.sha256}
            )
        except ClientError as exc:
            raise self._wrap(exc, entry.key) from None

    def multipart_in_progress(self, key: str) -> tuple[str, dict[int, PartRecord]] | None:
        """The newest unfinished multipart upload of `key` and its parts (S3 keeps them until
        completed or aborted: this is the resume record), or None."""
        try:
            uploads = [
                upload
                for page in self.client.get_paginator("list_multipart_uploads").paginate(
                    Bucket=self.location.bucket, Prefix=key
                )
                for upload in page.get("Uploads", [])
                if upload["Key"] == key
            ]
            if not uploads:
                return None
            newest = max(uploads, key=lambda upload: upload["Initiated"])
            for stale in uploads:
                if stale is not newest:
                    self.abort_multipart(key, stale["UploadId"])
            parts = {
                part["PartNumber"]: PartRecord(size=part["Size"], etag=part["ETag"], sha256_b64=part.get("ChecksumSHA256"))
                for page in self.client.get_paginator("list_parts").paginate(
                    Bucket=self.location.bucket, Key=key, UploadId=newest["UploadId"]
                )
                for part in page.get("Parts", [])
            }
        except ClientError as exc:
            raise self._wrap(exc, key) from None
        return newest["UploadId"], parts

    def start_multipart(self, entry: FileEntry) -> str:
        """A new multipart upload of `entry` (sha256 known in advance); each part's sha256 is
        checked by S3 on receipt and listed by `multipart_in_progress`."""
        try:
            return self.client.create_multipart_upload(
                Bucket=self.location.bucket, Key=entry.key, Metadata={"sha256": entry.sha256}, ChecksumAlgorithm="SHA256"
            )["UploadId"]
        except ClientError as exc:
            raise self._wrap(exc, entry.key) from None

    def send_part(self, key: str, upload_id: str, number: int, body: bytes, sha256_b64: str) -> PartRecord:
        try:
            etag = self.client.upload_part(
                Bucket=self.location.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body,
                ChecksumSHA256=sha256_b64,
            )["ETag"]
            return PartRecord(size=len(body), etag=etag, sha256_b64=sha256_b64)
        except ClientError as exc:
            raise self._wrap(exc, f"{key} (part {number})") from None

    def complete_multipart(self, key: str, upload_id: str, parts: dict[int, PartRecord]) -> None:
        """Join the parts (by number) into the object."""
        try:
            self.client.complete_multipart_upload(
                Bucket=self.location.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={
                    "Parts": [
                        {"PartNumber": n, "ETag": parts[n].etag, "ChecksumSHA256": parts[n].sha256_b64}
                        for n in sorted(parts)
                    ]
                },
            )
        except ClientError as exc:
            raise self._wrap(exc, key) from None

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.location.bucket, Key=key, UploadId=upload_id)
        except ClientError as exc:
            if not is_missing_error(exc) and _error_code(exc) != "NoSuchUpload":
                raise self._wrap(exc, key) from None

    def _download_version(
        self, manifest: VersionManifest, dest: Path, progress: ProgressCallback | None, *, record: bool = False
    ) -> Path:
        """Every file of a checked manifest into `dest` (each path resolved inside it first),
        verified; `record`: the manifest is written beside them once all are in place."""
        where = f"{manifest.kind} {'/'.join(filter(None, (manifest.model, manifest.adapter)))}@{manifest.version}"
        targets = [(entry, contained(dest, *_safe_relative(entry.path, where).parts)) for entry in manifest.files]
        dest.mkdir(parents=True, exist_ok=True)
        progress = progress or (lambda done, total: None)
        total = manifest.total_bytes
        pending = []
        with create_transfer_manager(self.client, TRANSFER_CONFIG) as manager:
            for entry, target in targets:
                if target.is_file() and target.stat().st_size == entry.size and sha256_file(target) == entry.sha256:
                    progress(entry.size, total)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                # A hidden, unique temporary name: a failed download never looks like a file.
                partial = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.partial")
                future = manager.download(
                    self.location.bucket, entry.key, str(partial), subscribers=[_ProgressSubscriber(progress, total)]
                )
                pending.append((entry, target, partial, future))
            try:
                for entry, target, partial, future in pending:
                    self._result(future, entry.key)
                    self._verify_bytes(entry, partial.stat().st_size, sha256_file(partial))
                    os.replace(partial, target)
            finally:
                for _, _, partial, _ in pending:
                    partial.unlink(missing_ok=True)
        if record:
            (dest / MANIFEST_NAME).write_text(manifest.to_json())
        return dest

    def _verify_bytes(self, entry: FileEntry, size: int, sha256: str) -> None:
        if size != entry.size or sha256 != entry.sha256:
            raise StoreError(
                f"checksum mismatch for s3://{self.location.bucket}/{entry.key}: got {size} bytes sha256 {sha256}, "
                f"the manifest records {entry.size} bytes sha256 {entry.sha256}; the object was altered or corrupted"
            )

    def _result(self, future, where: str) -> None:
        try:
            future.result()
        except ClientError as exc:
            raise self._wrap(exc, where) from None
        except BotoCoreError as exc:
            raise StoreError(f"{self._s3_uri(where)}: transfer failed: {exc}") from None

    # --- small S3 helpers -----------------------------------------------------------------

    def _read_manifest(self, prefix: str, what: str, identity: tuple[str, str, str, str | None]) -> VersionManifest:
        """The version's manifest, checked against what was asked for (`checked_manifest`)."""
        key = f"{prefix}/{MANIFEST_NAME}"
        try:
            body = self._get_bytes(key, limit=MAX_MANIFEST_BYTES)
        except StoreError as exc:
            if isinstance(exc.__cause__, ClientError) and is_missing_error(exc.__cause__):
                raise StoreError(
                    f"{what}: no complete version at {self._s3_uri(prefix)} (no {MANIFEST_NAME}; "
                    "never uploaded, or an upload was interrupted: rerun it)"
                ) from None
            raise
        where = self._s3_uri(key)
        return checked_manifest(VersionManifest.from_json(body, where), prefix=prefix, identity=identity, where=where)

    def _get_bytes(self, key: str, *, limit: int | None = None) -> bytes:
        """An object's bytes; one larger than `limit` is refused before its body is read."""
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            raise self._wrap(exc, key) from exc
        if limit is not None and response["ContentLength"] > limit:
            response["Body"].close()
            raise StoreRefused(f"{self._s3_uri(key)}: {response['ContentLength']} bytes; at most {limit} allowed")
        return response["Body"].read()

    def _get_range(self, key: str, start: int, length: int) -> bytes:
        try:
            response = self.client.get_object(Bucket=self.location.bucket, Key=key, Range=f"bytes={start}-{start + length - 1}")
            return response["Body"].read()
        except ClientError as exc:
            raise self._wrap(exc, key) from exc

    def _exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.location.bucket, Key=key)
        except ClientError as exc:
            if is_missing_error(exc):
                return False
            raise self._wrap(exc, key) from None
        return True

    def _list(self, prefix: str) -> Iterable[dict]:
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.location.bucket, Prefix=prefix
            ):
                yield from page.get("Contents", [])
        except ClientError as exc:
            raise self._wrap(exc, prefix) from None

    def _s3_uri(self, key: str) -> str:
        return f"s3://{self.location.bucket}/{key}"

    def _wrap(self, exc: ClientError, key: str) -> StoreError:
        code = _error_code(exc)
        hint = {
            "NoSuchBucket": "create the bucket (the store stack does) or fix --store",
            "AccessDenied": "the credentials lack permission on this prefix",
            "403": "the credentials lack permission on this prefix",
        }.get(code, "")
        return StoreError(f"{self._s3_uri(key)}: S3 {code or 'error'}: {exc}" + (f" ({hint})" if hint else ""))


__all__ = [
    "MANIFEST_NAME",
    "TRANSFER_CONFIG",
    "FileEntry",
    "ModelStore",
    "PartRecord",
    "ProgressCallback",
    "StoreError",
    "StoreLocation",
    "StoreRefused",
    "VersionExists",
    "VersionManifest",
    "checked_manifest",
    "contained",
    "content_version",
    "versions_by_upload",
]
