"""A small Hugging Face Hub over real HTTP on 127.0.0.1, for `huggingface_hub`'s own client.

It answers what `HfApi.model_info`, `hf_hub_download` and `get_safetensors_metadata`
(huggingface_hub 2.4.0) ask, the way huggingface.co answers it:

- `GET /api/models/{repo}[/revision/{rev}]`: JSON with `id`, `sha` and `siblings` (with
  `?blobs=true`, as `model_info(files_metadata=True)` asks: each file's `size`, `blobId`, and for
  LFS files `lfs` with their sha256);
- `HEAD`/`GET /{repo}/resolve/{rev}/{file}`: the bytes, with `X-Repo-Commit`, a quoted `ETag`
  and `Content-Length`; a `Range: bytes=a-b` GET answers 206 (how safetensors headers are read);
- errors in `X-Error-Code`, which the client turns into its typed errors: `RepoNotFound` 404,
  `RevisionNotFound` 404, `EntryNotFound` 404 (with `X-Repo-Commit`), `GatedRepo` 401 without
  a token and 403 with a wrong one. As on the Hub, a gated repo's metadata is public and its
  files are not.

Repos are plain data: {repo_id: {"commits": {sha: {filename: bytes or Path}}, "refs": {"main": sha,
"v1.0": sha}, "gated": bool}}. Refs hold branches and tags alike; a Path's bytes are read from
disk as they are sent (large files for benchmarks). A file is LFS, as the Hub's default
`.gitattributes` makes it, when its suffix is a weights format or it is over 10 MiB. Every
request is logged in `requests` so tests can say what the client did (e.g. that weights were
only read in ranges). `stall_after[filename] = n` makes a download of that file stop after
n bytes and hang, as a dropped connection does, until the hub stops (tests interrupt there).

`python -m tests.integration.hub_server REPO_ID DIRECTORY` serves DIRECTORY's files as REPO_ID's
`main` from its own process and prints the endpoint (benchmarks).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
import threading
from dataclasses import dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from llmfleet.model_store.store.store import sha256_file

REPO = r"(?P<repo>[^/]+/[^/]+)"
API_MODEL = re.compile(rf"^/api/models/{REPO}(?:/revision/(?P<rev>[^/]+))?$")
RESOLVE = re.compile(rf"^/{REPO}/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")
RANGE = re.compile(r"^bytes=(?P<start>\d+)-(?P<end>\d*)$")
LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".msgpack", ".h5", ".onnx")
LFS_THRESHOLD = 10 << 20  # the Hub refuses larger files outside LFS
SEND_BLOCK = 1 << 20

Content = bytes | Path


def _size(content: Content) -> int:
    return len(content) if isinstance(content, bytes) else content.stat().st_size


_path_sha256 = cache(sha256_file)  # a large file is hashed once, not on every listing


def sha256_of(content: Content) -> str:
    return hashlib.sha256(content).hexdigest() if isinstance(content, bytes) else _path_sha256(content)


def sibling(name: str, content: Content) -> dict[str, Any]:
    """A file as `?blobs=true` lists it: LFS files with their sha256, git files with their blob id."""
    size = _size(content)
    if name.endswith(LFS_SUFFIXES) or size > LFS_THRESHOLD:
        return {"rfilename": name, "size": size, "blobId": "0" * 40, "lfs": {"sha256": sha256_of(content), "size": size, "pointerSize": 134}}
    data = content if isinstance(content, bytes) else content.read_bytes()
    blob = hashlib.sha1(b"blob %d\0" % size + data).hexdigest()  # git's object id
    return {"rfilename": name, "size": size, "blobId": blob}


@dataclass(frozen=True)
class HubRequest:
    method: str
    path: str
    range: str | None
    authorization: str | None


class HubRefusal(Exception):
    def __init__(self, status: int, code: str, message: str, commit: str | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.commit = status, code, message, commit


class LocalHub:
    """The Hub for `repos`, served from a thread: `with LocalHub(repos) as hub: hub.endpoint`."""

    def __init__(self, repos: dict[str, dict[str, Any]], *, token: str = "hf_local_test_token") -> None:
        self.repos = repos
        self.token = token
        self.requests: list[HubRequest] = []
        self.stall_after: dict[str, int] = {}
        self.stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> LocalHub:
        hub = self

        class Handler(_Handler):
            pass

        Handler.hub = hub
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="local-hub", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the port: a later request is refused, as with no network."""
        if self._server is not None:
            self.stopping.set()  # stalled downloads end (their connections close)
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = None

    def __enter__(self) -> LocalHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def endpoint(self) -> str:
        assert self._server is not None, "the hub is not running"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- what it knows --------------------------------------------------------------------

    def commit(self, repo_id: str, revision: str | None) -> str:
        """The commit sha `revision` (branch, tag or full sha; None is main) names in `repo_id`."""
        repo = self.repos[repo_id]
        revision = revision or "main"
        if revision in repo["commits"]:
            return revision
        if revision in repo.get("refs", {}):
            return repo["refs"][revision]
        raise HubRefusal(404, "RevisionNotFound", f"Invalid rev id: {revision}")

    def _repo(self, repo_id: str) -> dict[str, Any]:
        if repo_id not in self.repos:
            raise HubRefusal(404, "RepoNotFound", "Repository not found")
        return self.repos[repo_id]

    def _check_access(self, repo: dict[str, Any], authorization: str | None) -> None:
        if not repo.get("gated"):
            return
        if authorization is None:
            raise HubRefusal(401, "GatedRepo", "Access to model is restricted. You must have access to it and be authenticated to access it. Please log in.")
        if authorization != f"Bearer {self.token}":
            raise HubRefusal(403, "GatedRepo", "Access to model is restricted and you are not in the authorized list.")

    def model_info(self, repo_id: str, revision: str | None, *, blobs: bool = False) -> dict[str, Any]:
        repo = self._repo(repo_id)
        sha = self.commit(repo_id, revision)
        files = repo["commits"][sha]
        return {
            "id": repo_id,
            "modelId": repo_id,
            "sha": sha,
            "private": False,
            "gated": "manual" if repo.get("gated") else False,
            "siblings": [sibling(name, files[name]) if blobs else {"rfilename": name} for name in sorted(files)],
        }

    def file(self, repo_id: str, revision: str, filename: str, authorization: str | None) -> tuple[str, Content]:
        repo = self._repo(repo_id)
        sha = self.commit(repo_id, revision)
        self._check_access(repo, authorization)
        files = repo["commits"][sha]
        if filename not in files:
            raise HubRefusal(404, "EntryNotFound", f"{filename} does not exist on {revision!r}", commit=sha)
        return sha, files[filename]


class _Handler(BaseHTTPRequestHandler):
    hub: LocalHub
    server_version = "LocalHub/1"
    protocol_version = "HTTP/1.0"  # one request a connection: stopping the hub leaves no open sockets

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # tests read `hub.requests`, not stderr

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _answer(self, *, send_body: bool) -> None:
        url = urlsplit(self.path)
        path = url.path
        self.hub.requests.append(HubRequest(self.command, path, self.headers.get("Range"), self.headers.get("Authorization")))
        try:
            if (match := API_MODEL.match(path)) and self.command == "GET":
                rev = match["rev"]
                blobs = "blobs=true" in url.query.lower()
                body = json.dumps(self.hub.model_info(unquote(match["repo"]), unquote(rev) if rev else None, blobs=blobs)).encode()
                self._send(200, body, {"Content-Type": "application/json"}, send_body)
            elif match := RESOLVE.match(path):
                sha, content = self.hub.file(
                    unquote(match["repo"]), unquote(match["rev"]), unquote(match["file"]), self.headers.get("Authorization")
                )
                self._send_file(sha, unquote(match["file"]), content, send_body)
            else:
                raise HubRefusal(404, "RepoNotFound", f"no route for {self.command} {path}")
        except HubRefusal as error:
            headers = {"Content-Type": "application/json", "X-Error-Code": error.code, "X-Error-Message": error.message}
            if error.commit:
                headers["X-Repo-Commit"] = error.commit
            self._send(error.status, json.dumps({"error": error.message}).encode(), headers, send_body)

    def _send_file(self, sha: str, filename: str, content: Content, send_body: bool) -> None:
        size = _size(content)
        headers = {
            "Content-Type": "application/octet-stream",
            "X-Repo-Commit": sha,
            "ETag": f'"{sha256_of(content)}"',
            "Accept-Ranges": "bytes",
        }
        wanted = self.headers.get("Range") if send_body else None
        start, end, status = 0, size - 1, 200
        if wanted is not None:
            match = RANGE.match(wanted.strip())
            start = int(match["start"]) if match else size
            if start >= size:
                self._send(416, b"", {**headers, "Content-Range": f"bytes */{size}"}, send_body)
                return
            end = min(int(match["end"]) if match["end"] else size - 1, size - 1)
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            status = 206
        if isinstance(content, bytes) and filename not in self.hub.stall_after:
            self._send(status, content[start : end + 1], headers, send_body)
            return
        self.send_response(status)
        for key, value in {**headers, "Content-Length": str(end + 1 - start)}.items():
            self.send_header(key, value)
        self.end_headers()
        if send_body:
            self._stream(content, start, end + 1, self.hub.stall_after.get(filename))

    def _stream(self, content: Content, start: int, stop: int, stall_after: int | None) -> None:
        """Send content[start:stop] in blocks; past `stall_after` bytes, hang until the hub stops."""
        with (content.open("rb") if isinstance(content, Path) else io.BytesIO(content)) as handle:
            handle.seek(start)
            position = start
            while position < stop:
                if stall_after is not None and position >= stall_after:
                    self.wfile.flush()
                    self.hub.stopping.wait()
                    return
                limit = stop if stall_after is None else min(stop, max(stall_after, position + 1))
                block = handle.read(min(SEND_BLOCK, limit - position))
                self.wfile.write(block)
                position += len(block)

    def _send(self, status: int, body: bytes, headers: dict[str, str], send_body: bool) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if send_body:
            self.wfile.write(body)


def serve_directory(repo_id: str, directory: Path) -> None:
    """Serve `directory`'s files as `repo_id`@main until killed; prints the endpoint first."""
    files = {p.relative_to(directory).as_posix(): p for p in sorted(directory.rglob("*")) if p.is_file()}
    for path in files.values():
        sha256_of(path)  # hashed before the endpoint is announced: the first listing answers at once
    hub = LocalHub({repo_id: {"commits": {"f" * 40: files}, "refs": {"main": "f" * 40}}}).start()
    print(hub.endpoint, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    serve_directory(sys.argv[1], Path(sys.argv[2]))
