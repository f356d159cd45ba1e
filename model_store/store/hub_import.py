"""`llmfleet model import`: a Hugging Face Hub checkpoint into the store, never whole on local disk.

Each file streams from the Hub in parts (TRANSFER_CONFIG's part size, or larger where S3's
10,000-part limit needs it) into an S3 multipart upload; its sha256 is computed on the way
and checked against the sha256 the Hub lists for LFS files before the object is completed.
The version's manifest is written last, exactly as `model upload` writes it, so the store
never shows half an import.

Resuming needs no local state: S3 keeps an unfinished multipart upload and lists its parts
with their sha256, and a finished file carries its sha256 in its metadata. A rerun skips
finished files without reading them; for an unfinished one it reads the file from the start
again (a sha256 cannot be resumed from the middle) but sends only the parts S3 lacks, each
part it already holds checked against the bytes just read.

The decisions (which files, part sizes, what a rerun may reuse) are the pure functions
here; `import_model` only moves bytes.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
from collections.abc import Iterator
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import PurePosixPath

from llmfleet.model_store.store.adapters import check_model_name, check_segment
from llmfleet.model_store.facts.hub import HubClient, HubFile, HubNotFound
from llmfleet.model_store.store.store import (
    _safe_relative,
    FileEntry,
    MANIFEST_NAME,
    MODEL_CONFIG,
    ModelStore,
    PartRecord,
    PIPELINE_INDEX,
    ProgressCallback,
    StoreError,
    TRANSFER_CONFIG,
    VersionManifest,
)

MIB = 1 << 20
# S3 multipart limits (Amazon S3 User Guide, "Multipart upload limits", 2026-10): at most
# 10,000 parts, each 5 MiB..5 GiB except the last.
S3_MAX_PARTS = 10_000
S3_MIN_PART = 5 * MIB
S3_MAX_PART = 5 << 30
DEFAULT_PART_SIZE = TRANSFER_CONFIG.multipart_chunksize  # the store's own part size (16 MiB)
FILE_WORKERS = 4  # files streamed at once
# Parts on their way to S3 at once; memory is bounded by (FILE_WORKERS + this) parts.
PARTS_IN_FLIGHT = TRANSFER_CONFIG.max_concurrency

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
HUB_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,254}$")
# Other serialisations of weights a safetensors checkpoint also ships (pickled PyTorch, the
# original Meta `original/consolidated.*.pth`, TF/Flax, GGUF, ONNX): vLLM loads the
# safetensors, so when there are any these are left out (often as large again).
OTHER_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf", ".onnx", ".tflite", ".ot")


@dataclass(frozen=True)
class HubRef:
    repo_id: str
    revision: str | None  # None: the repo's default branch

    @property
    def requested(self) -> str:
        return self.revision or "main"


def parse_hub_ref(ref: str) -> HubRef:
    """`org/name[@revision]` -> HubRef; anything else is HubNotFound (exit 2) naming the form."""
    repo_id, at, revision = ref.removeprefix("hf://").partition("@")
    if not REPO_ID.fullmatch(repo_id) or (at and not HUB_REVISION.fullmatch(revision)):
        raise HubNotFound(
            f"{ref!r} is not a Hugging Face model: give org/name or org/name@revision (a branch, tag or commit sha)"
        )
    return HubRef(repo_id=repo_id, revision=revision or None)


def select_files(files: list[HubFile]) -> tuple[list[HubFile], list[str]]:
    """(the files to import, the paths left out): hidden files (`.gitattributes`) never, and
    other weight formats when the checkpoint has safetensors. Refuses a repo that is no
    model (no config.json, nor a diffusers pipeline's model_index.json) or whose paths could
    not be stored as a version's files."""
    visible = [f for f in files if not any(part.startswith(".") for part in PurePosixPath(f.path).parts)]
    has_safetensors = any(f.path.endswith(".safetensors") for f in visible)
    kept = [f for f in visible if not (has_safetensors and f.path.lower().endswith(OTHER_WEIGHT_SUFFIXES))]
    paths = {f.path for f in kept}
    if not paths & {MODEL_CONFIG, PIPELINE_INDEX}:
        raise StoreError(
            f"the repo has no {MODEL_CONFIG} (nor {PIPELINE_INDEX} of an image pipeline) at its root; "
            "a model in the store must hold one"
        )
    if MANIFEST_NAME in paths:
        raise StoreError(f"the repo holds a file named {MANIFEST_NAME}, which the store reserves")
    for f in kept:
        _safe_relative(f.path, "the Hub's file list")
    left_out = sorted({f.path for f in files} - paths)
    return sorted(kept, key=lambda f: f.path), left_out


def part_size_for(size: int, preferred: int = DEFAULT_PART_SIZE) -> int:
    """The part size for a file of `size` bytes: `preferred`, or the smallest whole number of
    MiB that keeps it within S3's 10,000 parts (a 160 GiB file: 17 MiB parts)."""
    needed = math.ceil(size / S3_MAX_PARTS / MIB) * MIB
    part = max(preferred, needed, S3_MIN_PART)
    if part > S3_MAX_PART:
        raise StoreError(f"a file of {size} bytes exceeds S3's limit of {S3_MAX_PARTS} parts of {S3_MAX_PART} bytes")
    return part


def part_lengths(size: int, part_size: int) -> list[int]:
    """The byte length of each part (number = index + 1); an empty file is one empty part."""
    count = max(1, math.ceil(size / part_size))
    return [min(part_size, size - index * part_size) for index in range(count)]


@dataclass(frozen=True)
class FilePlan:
    """What to do for one file: `stored` (skip: it is in the store), `put` (one request),
    `multipart` (parts of `part_size`; `reuse`: parts S3 already holds, by number, each
    checked against the bytes read before it is kept; `upload_id`: their unfinished upload)."""

    file: HubFile
    key: str
    action: str
    part_size: int = 0
    upload_id: str | None = None
    reuse: dict[int, PartRecord] = field(default_factory=dict)


def plan_file(
    file: HubFile,
    key: str,
    *,
    stored: bool,
    in_progress: tuple[str, dict[int, PartRecord]] | None,
    preferred_part: int = DEFAULT_PART_SIZE,
) -> FilePlan:
    """Decide one file's transfer from what the store holds for its key.

    A file without a Hub sha256 (kept in git: at most 10 MiB on the Hub) must fit one part:
    it is read whole, hashed and sent with its sha256 in one request. A larger file goes in
    parts, reusing those of an unfinished upload that have the length this plan gives them
    (a part of another length was cut for another part size and is sent again)."""
    part_size = part_size_for(file.size, preferred_part)
    if stored:
        return FilePlan(file, key, "stored")
    if file.size <= part_size:
        return FilePlan(file, key, "put")
    if file.sha256 is None:
        raise StoreError(
            f"{file.path}: {file.size} bytes and the Hub lists no sha256 for it (not an LFS file); "
            f"only files up to {part_size} bytes can be imported without one"
        )
    if in_progress is None:
        return FilePlan(file, key, "multipart", part_size)
    upload_id, parts = in_progress
    lengths = part_lengths(file.size, part_size)
    reuse = {
        number: part
        for number, part in parts.items()
        if 1 <= number <= len(lengths) and part.size == lengths[number - 1]
    }
    return FilePlan(file, key, "multipart", part_size, upload_id, reuse)


def import_source_details(ref: HubRef, commit: str, left_out: list[str]) -> dict:
    """What the manifest records of where an import came from (`details`)."""
    return {"hub": {"repo": ref.repo_id, "revision": ref.requested, "commit": commit, "left_out": left_out}}


# --- moving bytes -------------------------------------------------------------------------------


def _parts(blocks: Iterator[bytes], lengths: list[int]) -> Iterator[bytes]:
    """Cut a stream of blocks into parts of `lengths`; a short or long stream is a StoreError."""
    buffer = bytearray()
    for length in lengths:
        while len(buffer) < length:
            block = next(blocks, None)
            if block is None:
                raise StoreError(f"the Hub's stream ended early: {len(buffer)} bytes where a part needs {length}")
            buffer += block
        part, buffer = bytes(buffer[:length]), buffer[length:]
        yield part
    if buffer or next(blocks, None):
        raise StoreError("the Hub sent more bytes than the size it lists")


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode()


def part_holds(part: PartRecord, data: bytes, sha256_b64: str) -> bool:
    """Whether a part S3 holds has exactly `data`: by the sha256 S3 lists for it, else by its
    ETag, which is the part's MD5 unless the bucket encrypts with KMS (then it never matches,
    and the part is sent again)."""
    if part.sha256_b64:
        return part.sha256_b64 == sha256_b64
    return part.etag.strip('"') == hashlib.md5(data, usedforsecurity=False).hexdigest()


@dataclass
class _Importer:
    store: ModelStore
    hub: HubClient
    ref: HubRef
    commit: str
    progress: ProgressCallback
    total: int
    uploads: ThreadPoolExecutor
    in_flight: threading.BoundedSemaphore
    stopping: threading.Event = field(default_factory=threading.Event)

    def transfer(self, plan: FilePlan) -> FileEntry:
        """Store one file; returns its manifest entry (sha256 as read from the Hub)."""
        if plan.action == "stored":
            self.progress(plan.file.size, self.total)
            return FileEntry(path=plan.file.path, key=plan.key, size=plan.file.size, sha256=plan.file.sha256)
        if plan.action == "put":
            return self._put(plan)
        entry = self._multipart(plan)
        if entry is None:  # a part the unfinished upload holds differs from the Hub's bytes: start afresh
            self.store.abort_multipart(plan.key, plan.upload_id)
            entry = self._multipart(FilePlan(plan.file, plan.key, "multipart", plan.part_size))
        return entry

    def _put(self, plan: FilePlan) -> FileEntry:
        with self.hub.read_file(self.ref.repo_id, self.commit, plan.file.path) as blocks:
            body = b"".join(_parts(blocks, [plan.file.size]))
        entry = FileEntry(path=plan.file.path, key=plan.key, size=len(body), sha256=hashlib.sha256(body).hexdigest())
        self._check_sha256(plan.file, entry.sha256)
        if not self.store.already_stored(entry):  # a small file is read again rather than trusted unread
            self.store.put_file(entry, body)
        self.progress(entry.size, self.total)
        return entry

    def _multipart(self, plan: FilePlan) -> FileEntry | None:
        """Stream the file into its multipart upload; None when a part to reuse holds other bytes."""
        entry = FileEntry(path=plan.file.path, key=plan.key, size=plan.file.size, sha256=plan.file.sha256)
        digest = hashlib.sha256()
        parts: dict[int, PartRecord] = {}
        sending: dict[int, Future] = {}
        try:
            with self.hub.read_file(self.ref.repo_id, self.commit, entry.path) as blocks:
                # Only once the Hub has answered: a refused read (gated, missing) leaves nothing in S3.
                upload_id = plan.upload_id or self.store.start_multipart(entry)
                for number, part in enumerate(_parts(blocks, part_lengths(entry.size, plan.part_size)), start=1):
                    digest.update(part)
                    checksum = _b64_sha256(part)
                    if number in plan.reuse:
                        if not part_holds(plan.reuse[number], part, checksum):
                            return None
                        parts[number] = PartRecord(len(part), plan.reuse[number].etag, checksum)
                        self.progress(len(part), self.total)
                        continue
                    if self.stopping.is_set():  # another file failed or the user interrupted: leave it to resume
                        raise StoreError(f"{entry.path}: stopped after {number - 1} parts; rerun the import to resume")
                    self.in_flight.acquire()
                    sending[number] = self.uploads.submit(self._send, entry.key, upload_id, number, part, checksum)
                    if any(f.done() and f.exception() for f in sending.values()):
                        break  # a failed part ends the file; its error is raised below
        finally:
            parts |= {number: future.result() for number, future in sending.items()}
        try:
            self._check_sha256(plan.file, digest.hexdigest())
        except StoreError:
            self.store.abort_multipart(entry.key, upload_id)  # its parts hold the wrong bytes: a rerun starts afresh
            raise
        self.store.complete_multipart(entry.key, upload_id, parts)
        return entry

    def _send(self, key: str, upload_id: str, number: int, part: bytes, sha256_b64: str) -> PartRecord:
        try:
            sent = self.store.send_part(key, upload_id, number, part, sha256_b64)
            self.progress(len(part), self.total)
            return sent
        finally:
            self.in_flight.release()

    def _check_sha256(self, file: HubFile, sha256: str) -> None:
        if file.sha256 is not None and sha256 != file.sha256:
            raise StoreError(
                f"{self.ref.repo_id}@{self.commit[:12]}: {file.path} read from the Hub has sha256 {sha256}, "
                f"the Hub lists {file.sha256}; the file was not stored: rerun the import"
            )


def import_model(
    store: ModelStore,
    hub: HubClient,
    ref: HubRef,
    model: str,
    revision: str | None = None,
    *,
    progress: ProgressCallback | None = None,
    uploader: str = "unknown",
    part_size: int = DEFAULT_PART_SIZE,
) -> VersionManifest:
    """Import `ref` as models/<model>/<revision> (default revision: the commit the Hub
    resolved `ref` to, so the store's name says exactly which bytes it holds).

    Rerunning after an interruption resumes it (see the module's docstring). The manifest
    records the repo id as `source` (adapters trained on it may name it as their base) and
    the requested revision, the commit and the files left out in `details`."""
    commit, listed = hub.repo_files(ref.repo_id, ref.revision)
    files, left_out = select_files(listed)
    revision = revision or commit
    check_model_name(model)
    check_segment("revision", revision, rule="version")
    prefix = store.model_prefix(model, revision)
    store.refuse_existing(prefix)
    plans = []
    for file in files:
        key = f"{prefix}/{file.path}"
        stored = file.sha256 is not None and store.already_stored(FileEntry(file.path, key, file.size, file.sha256))
        in_progress = None if stored or file.size <= part_size else store.multipart_in_progress(key)
        plans.append(plan_file(file, key, stored=stored, in_progress=in_progress, preferred_part=part_size))
    total = sum(f.size for f in files)
    progress = progress or (lambda done, total: None)
    with ThreadPoolExecutor(PARTS_IN_FLIGHT) as uploads, ThreadPoolExecutor(FILE_WORKERS) as readers:
        importer = _Importer(
            store, hub, ref, commit, progress, total, uploads, threading.BoundedSemaphore(PARTS_IN_FLIGHT)
        )
        futures = [readers.submit(importer.transfer, plan) for plan in plans]
        try:
            done, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((future.exception() for future in done if future.exception()), None)
            if failed is not None:
                raise failed
        except BaseException:  # a failure or Ctrl-C: files in flight stop at their next part, resumable
            importer.stopping.set()
            for future in futures:
                future.cancel()
            raise
        entries = [future.result() for future in futures]
    manifest = VersionManifest(
        kind="model",
        model=model,
        version=revision,
        adapter=None,
        files=tuple(sorted(entries, key=lambda e: e.path)),
        uploader=uploader,
        created=datetime.now(UTC).isoformat(timespec="milliseconds"),
        source=ref.repo_id,
        details=import_source_details(ref, commit, left_out),
    )
    return store.commit_version(prefix, manifest)
