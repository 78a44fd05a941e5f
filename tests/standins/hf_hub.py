"""A protocol-faithful stand-in for the Hugging Face Hub (standard library only), for tests that download models.

Point `HF_ENDPOINT` at it and `huggingface_hub` (so `hf download`, vLLM, transformers, Jarvis's own download) talks to
it as to huggingface.co. What it serves, as the Hub does:

    GET  /api/models/{repo_id}                      model info: `sha` (the commit of the default branch), `gated`,
    GET  /api/models/{repo_id}/revision/{rev}       `private`, `siblings` (with `?blobs=true`: size, blobId, lfs)
    GET  /api/models/{repo_id}/tree/{rev}[/{dir}]   the file tree (`list_repo_tree`, `list_repo_files`), with
                                                    `?recursive=true`
    GET  /api/models/{repo_id}/refs                 branches
    POST /api/models/{repo_id}/paths-info/{rev}     entries of the paths asked for (`get_paths_info`)
    HEAD|GET /{repo_id}/resolve/{rev}/{path}        a file. Regular files: 200 (206 for a `Range`) with `ETag` (the
                                                    git blob id), `X-Repo-Commit`, `Content-Length`, `Accept-Ranges`.
                                                    LFS files (weights: *.safetensors, *.gguf, *.bin, ...): 302 to
                                                    the CDN with `X-Linked-Size`, `X-Linked-Etag` (the sha256),
                                                    `X-Repo-Commit` and the pointer's `ETag`
    HEAD|GET {cdn_url}/repos/{folder}/{sha256}?...  LFS content, on a second origin (its own port), so the client
                                                    drops `Authorization` there as it does for the real CDN; 200 or
                                                    206 + `Content-Range` (416 past the end)

`rev` is a branch name (`main`, or a key of `HubRepo.revisions`) or a full 40-hex commit id. Errors carry the Hub's
headers, which `huggingface_hub` turns into its exceptions: an unknown (or private) repo is 401 without a token and
404 with one (`X-Error-Code: RepoNotFound`); an unknown revision 404 `RevisionNotFound`; a missing file 404
`EntryNotFound` (with `X-Repo-Commit`); a gated repo's files 401 without a token and 403 with a token that has no
access (`GatedRepo`), while its info and tree stay public; a token the Hub does not know is 401 "Invalid credentials
in Authorization header" on every endpoint.

Usage (the files of a repo are bytes, text, or a path whose file is read when served)::

    from tests.standins.hf_hub import HubRepo, serve_hub, use_hub

    repos = {"org/tiny": HubRepo({"config.json": b"{}", "model.safetensors": Path("weights.safetensors")},
                                 revisions={"v1": {"config.json": b'{"old": 1}', "model.safetensors": b"..."}}),
             "org/gated": HubRepo({"model-Q4_K_M.gguf": Path("tiny.gguf")}, gated=True, tokens=["hf_good"])}
    with serve_hub(repos) as hub:
        use_hub(monkeypatch, hub, tmp_path)     # HF_ENDPOINT + huggingface_hub's import-time constants
        hf_hub_download("org/tiny", "config.json", cache_dir=tmp_path / "hub")
        hub.commit("org/tiny", "v1")            # the commit id a revision resolves to
        hub.requests                            # the log: server, method, path, range, status, bytes sent, file
        hub.drop("model.safetensors", at=4096)  # the next response cuts the connection after byte 4096 ...
        hub.drop("model.safetensors", at=4096, then_status=503)  # ... and every request after it answers 503
        reached = hub.stall("model.safetensors", at=4096)         # a response pauses at byte 4096 (reached.wait())
        hub.heal()                              # faults off, stalled responses go on

Everything listens on 127.0.0.1 only; nothing here imports anything outside the standard library (`use_hub`
imports huggingface_hub when called).
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import mimetypes
import os
import re
import socket
import threading
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Collection, Iterator, Mapping, Union
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = ["HubRepo", "Hub", "HubRequest", "serve_hub", "use_hub", "LFS_PATTERNS"]

Content = Union[bytes, str, "os.PathLike[str]"]
"""A file's content: bytes, text (UTF-8), or a path to a file read when served."""

#: Files stored in Git LFS (and so served through the CDN), as the Hub's default `.gitattributes` has them.
LFS_PATTERNS = ("*.safetensors", "*.bin", "*.gguf", "*.pt", "*.pth", "*.ckpt", "*.h5", "*.onnx", "*.msgpack",
                "*.model", "*.npy", "*.npz", "*.pkl", "*.tflite", "*.zip", "*.tar.*", "*.gz", "*.xz", "*.zst")

_CHUNK = 64 * 1024
_DATE = "2024-05-01T12:00:00.000Z"


@dataclass
class HubRepo:
    """One model repository: `files` is its default branch (`main`), `revisions` more branches by name."""

    files: Mapping[str, Content]
    revisions: Mapping[str, Mapping[str, Content]] = field(default_factory=dict)
    gated: bool | str = False
    """True (shown as "auto") or "manual": the files need a token listed in `tokens`; info and tree stay public."""
    private: bool = False
    """The repo exists only for a token listed in `tokens` (else it answers as an unknown repo does)."""
    tokens: Collection[str] = ()
    """Tokens with access to a gated or private repo."""
    lfs: Collection[str] = LFS_PATTERNS
    """fnmatch patterns of the files kept in LFS (served by redirect to the CDN)."""


@dataclass
class HubRequest:
    """One request as the stand-in saw it; `sent` counts the body bytes written so far (it grows while streaming)."""

    server: str  # "hub" or "cdn"
    method: str
    path: str  # the URL path, still quoted
    query: str
    range: str | None
    authorization: bool  # an Authorization header came with it
    status: int = 0
    sent: int = 0
    repo: str | None = None
    file: str | None = None  # the repo-relative path of a file request (resolve or CDN)
    # Set once the handler has finished the request: the client can hold its last byte before `sent` counts it.
    done: threading.Event = field(default_factory=threading.Event, repr=False, compare=False)


class _File:
    def __init__(self, repo: str, path: str, content: Content, lfs: bool) -> None:
        self.repo = repo
        self.path = path
        self.source: bytes | Path
        if isinstance(content, bytes):
            self.source = content
        elif isinstance(content, str):
            self.source = content.encode("utf-8")
        else:
            self.source = Path(content)
        sha256, git, size = hashlib.sha256(), hashlib.sha1(), 0
        data = self.source if isinstance(self.source, bytes) else None
        if data is None:
            size = self.source.stat().st_size  # type: ignore[union-attr]
        else:
            size = len(data)
        git.update(b"blob %d\0" % size)
        for chunk in self.read(0, size):
            sha256.update(chunk)
            git.update(chunk)
        self.size = size
        self.sha256 = sha256.hexdigest()
        self.lfs = lfs
        if lfs:  # git holds a pointer; the pointer's blob id is what the tree and ETag show
            pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\nsize {size}\n".encode()
            self.pointer_size = len(pointer)
            self.oid = hashlib.sha1(b"blob %d\0" % len(pointer) + pointer).hexdigest()
        else:
            self.pointer_size = 0
            self.oid = git.hexdigest()

    def read(self, start: int, end: int) -> Iterator[bytes]:
        """The bytes [start, end) in chunks."""
        if isinstance(self.source, bytes):
            for pos in range(start, end, _CHUNK):
                yield self.source[pos:min(end, pos + _CHUNK)]
            return
        with open(self.source, "rb") as fh:
            fh.seek(start)
            pos = start
            while pos < end:
                chunk = fh.read(min(_CHUNK, end - pos))
                if not chunk:
                    return
                pos += len(chunk)
                yield chunk

    def sibling(self, blobs: bool) -> dict[str, Any]:
        if not blobs:
            return {"rfilename": self.path}
        entry: dict[str, Any] = {"rfilename": self.path, "size": self.size, "blobId": self.oid}
        if self.lfs:
            entry["lfs"] = {"size": self.size, "sha256": self.sha256, "pointerSize": self.pointer_size}
        return entry

    def tree_entry(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"type": "file", "oid": self.oid, "size": self.size, "path": self.path}
        if self.lfs:
            entry["lfs"] = {"oid": self.sha256, "size": self.size, "pointerSize": self.pointer_size}
        return entry


class _Repo:
    def __init__(self, repo_id: str, spec: HubRepo) -> None:
        self.id = repo_id
        self.spec = spec
        self.branches: dict[str, tuple[str, dict[str, _File]]] = {}
        for name, files in {"main": spec.files, **dict(spec.revisions)}.items():
            built = {path: _File(repo_id, path, content, any(fnmatch.fnmatch(path.rsplit("/", 1)[-1], p)
                                                                  for p in spec.lfs))
                     for path, content in files.items()}
            digest = hashlib.sha1(f"{repo_id}\0{name}\0".encode())
            for path in sorted(built):
                digest.update(f"{path}\0{built[path].sha256}\n".encode())
            self.branches[name] = (digest.hexdigest(), built)
        self.commits = {commit: files for commit, files in self.branches.values()}

    def revision(self, rev: str) -> tuple[str, dict[str, _File]] | None:
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.commits:
            return rev, self.commits[rev]
        return None


@dataclass
class _Fault:
    repo: str | None
    path: str
    at: int
    kind: str  # "drop" or "stall"
    times: int = 1
    then_status: int | None = None
    tripped: int = 0
    reached: threading.Event = field(default_factory=threading.Event)

    def matches(self, f: _File) -> bool:
        return f.path == self.path and (self.repo is None or self.repo == f.repo)


class Hub:
    """A running stand-in: `url` (give it as HF_ENDPOINT), `cdn_url`, the request log and the fault switches."""

    def __init__(self, repos: Mapping[str, HubRepo], tokens: Collection[str] = ()) -> None:
        self.repos = {repo_id: _Repo(repo_id, spec) for repo_id, spec in repos.items()}
        self.tokens = set(tokens) | {t for spec in repos.values() for t in spec.tokens}
        self.url = ""
        self.cdn_url = ""
        self._lock = threading.Lock()
        self._log: list[HubRequest] = []
        self._faults: list[_Fault] = []
        self._released = threading.Event()
        self._by_sha: dict[str, _File] = {}
        for repo in self.repos.values():
            for _, files in repo.branches.values():
                for f in files.values():
                    if f.lfs:
                        self._by_sha.setdefault(f.sha256, f)
        self._connections: set[socket.socket] = set()

    def __str__(self) -> str:
        return self.url

    # --- what tests look at -----------------------------------------------------------------------------------------

    @property
    def requests(self) -> list[HubRequest]:
        with self._lock:
            return list(self._log)

    def clear_log(self) -> None:
        with self._lock:
            self._log.clear()

    def commit(self, repo_id: str, revision: str = "main") -> str:
        """The commit id `revision` of `repo_id` resolves to."""
        found = self.repos[repo_id].revision(revision)
        if found is None:
            raise KeyError(f"{repo_id} has no revision {revision}")
        return found[0]

    def file(self, repo_id: str, path: str, revision: str = "main") -> tuple[int, str]:
        """(size, sha256) of a file as served."""
        f = self.repos[repo_id].revision(revision)[1][path]  # type: ignore[index]
        return f.size, f.sha256

    def downloads(self, path: str, *, finished: bool = True) -> list[HubRequest]:
        """The GET requests that sent (some of) the content of the file `path`, in order. With `finished` (the
        default) each is waited for until the stand-in has finished answering it, so that `sent` is final: a client
        can hold the last byte before the handler's thread counts it. Pass False to look at a stalled response."""
        found = [r for r in self.requests if r.file == path and r.method == "GET" and r.status in (200, 206)]
        for request in found if finished else ():
            request.done.wait(timeout=30)
        return found

    # --- faults -----------------------------------------------------------------------------------------------------

    def drop(self, path: str, *, at: int, repo: str | None = None, times: int = 1,
             then_status: int | None = None) -> None:
        """The next `times` responses with the content of `path` that pass byte `at` of the file send the bytes
        before it and then cut the connection. With `then_status`, every request for the file after the (last) cut
        answers that status (503: the Hub is down) until `heal()`."""
        with self._lock:
            self._faults.append(_Fault(repo, path, at, "drop", times=times, then_status=then_status))

    def stall(self, path: str, *, at: int, repo: str | None = None) -> threading.Event:
        """Responses with the content of `path` stop sending at byte `at` of the file until `heal()` (or the end of
        `serve_hub`); the event returned is set when one gets there."""
        fault = _Fault(repo, path, at, "stall", times=1_000_000)
        with self._lock:
            self._faults.append(fault)
        return fault.reached

    def heal(self) -> None:
        """All faults off; stalled responses go on."""
        with self._lock:
            self._faults.clear()
        self._released.set()
        self._released = threading.Event()

    # --- serving ----------------------------------------------------------------------------------------------------

    def _record(self, entry: HubRequest) -> HubRequest:
        with self._lock:
            self._log.append(entry)
        return entry

    def _fault(self, f: _File, kind: str | None = None) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(f) and (kind is None or fault.kind == kind):
                    return fault
        return None

    def _outage(self, f: _File) -> int | None:
        with self._lock:
            for fault in self._faults:
                if fault.matches(f) and fault.then_status and fault.tripped >= fault.times:
                    return fault.then_status
        return None


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "hf-hub-standin/1.0"
    hub: Hub
    role: str  # "hub" or "cdn"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002  (quiet)
        pass

    def setup(self) -> None:
        super().setup()
        with self.hub._lock:
            self.hub._connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass
        with self.hub._lock:
            self.hub._connections.discard(self.connection)

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        length = int(self.headers.get("Content-Length") or 0)
        self.form = parse_qs(self.rfile.read(length).decode("utf-8", "replace")) if length else {}
        self._dispatch("POST")

    # --- routing ----------------------------------------------------------------------------------------------------

    def _dispatch(self, method: str) -> None:
        parts = urlsplit(self.path)
        self.entry = self.hub._record(HubRequest(
            server=self.role, method=method, path=parts.path, query=parts.query, range=self.headers.get("Range"),
            authorization=bool(self.headers.get("Authorization"))))
        self.method = method
        try:
            if self.role == "cdn":
                self._cdn(parts.path)
            else:
                self._hub(method, parts.path, parse_qs(parts.query))
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        finally:
            self.entry.done.set()

    def _hub(self, method: str, path: str, query: dict[str, list[str]]) -> None:
        token = self._token()
        if token is not None and token not in self.hub.tokens:
            return self._error(401, None, "Invalid credentials in Authorization header")
        segments = [unquote(s) for s in path.strip("/").split("/")]
        if len(segments) >= 3 and segments[:2] == ["api", "models"]:
            repo_id, rest = self._repo_id(segments[2:])
            if method == "POST" and len(rest) == 2 and rest[0] == "paths-info":
                return self._paths_info(repo_id, rest[1], token)
            if method in ("GET", "HEAD"):
                return self._api(repo_id, rest, token, query)
        for at in (2, 1):
            if len(segments) > at + 2 and segments[at] == "resolve" and method in ("GET", "HEAD"):
                return self._resolve("/".join(segments[:at]), segments[at + 1], "/".join(segments[at + 2:]), token)
        self._error(404, None, "Not Found")

    def _repo_id(self, rest: list[str]) -> tuple[str, list[str]]:
        if len(rest) >= 2 and f"{rest[0]}/{rest[1]}" in self.hub.repos:
            return f"{rest[0]}/{rest[1]}", rest[2:]
        if rest[0] in self.hub.repos:
            return rest[0], rest[1:]
        return "/".join(rest[:2]), rest[2:]

    def _repo(self, repo_id: str, token: str | None) -> _Repo | None:
        repo = self.hub.repos.get(repo_id)
        if repo is None or (repo.spec.private and token not in repo.spec.tokens):
            self._error(401 if token is None else 404, "RepoNotFound", "Repository not found")
            return None
        return repo

    def _revision(self, repo: _Repo, rev: str) -> tuple[str, dict[str, _File]] | None:
        found = repo.revision(rev)
        if found is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {rev}")
        return found

    def _api(self, repo_id: str, rest: list[str], token: str | None, query: dict[str, list[str]]) -> None:
        repo = self._repo(repo_id, token)
        if repo is None:
            return
        if not rest or (len(rest) == 2 and rest[0] == "revision"):
            found = self._revision(repo, rest[1] if rest else "main")
            if found is not None:
                self._json(self._info(repo, *found, blobs=query.get("blobs", [""])[0].lower() == "true"))
        elif len(rest) >= 2 and rest[0] == "tree":
            found = self._revision(repo, rest[1])
            if found is not None:
                recursive = query.get("recursive", [""])[0].lower() == "true"
                entries = _tree(found[1], "/".join(rest[2:]).strip("/"), recursive)
                if entries is None:
                    self._error(404, "EntryNotFound", f"{'/'.join(rest[2:])} does not exist on \"{rest[1]}\"",
                                commit=found[0])
                else:
                    self._json(entries)
        elif rest == ["refs"]:
            self._json({"branches": [{"name": name, "ref": f"refs/heads/{name}", "targetCommit": commit}
                                     for name, (commit, _) in repo.branches.items()],
                        "converts": [], "tags": []})
        else:
            self._error(404, None, "Not Found")

    def _paths_info(self, repo_id: str, rev: str, token: str | None) -> None:
        """POST paths-info (`get_paths_info`, HfFileSystem): the entries of the paths asked for that exist."""
        repo = self._repo(repo_id, token)
        found = self._revision(repo, rev) if repo is not None else None
        if found is None:
            return
        entries = []
        for path in self.form.get("paths", []):
            path = path.strip("/")
            if path in found[1]:
                entries.append(found[1][path].tree_entry())
            elif any(p.startswith(path + "/") for p in found[1]):
                entries.append({"type": "directory", "oid": hashlib.sha1(path.encode()).hexdigest(), "size": 0,
                                "path": path})
        self._json(entries)

    def _info(self, repo: _Repo, commit: str, files: dict[str, _File], *, blobs: bool) -> dict[str, Any]:
        gated = repo.spec.gated
        return {"_id": hashlib.md5(repo.id.encode()).hexdigest()[:24], "id": repo.id, "modelId": repo.id,
                "author": repo.id.split("/")[0] if "/" in repo.id else None, "sha": commit,
                "lastModified": _DATE, "createdAt": _DATE, "private": repo.spec.private,
                "gated": ("auto" if gated is True else gated) or False, "disabled": False, "downloads": 0, "likes": 0,
                "library_name": "transformers", "tags": [], "usedStorage": sum(f.size for f in files.values()),
                "siblings": [f.sibling(blobs) for f in sorted(files.values(), key=lambda f: f.path)]}

    def _resolve(self, repo_id: str, rev: str, path: str, token: str | None) -> None:
        repo = self._repo(repo_id, token)
        if repo is None:
            return
        found = self._revision(repo, rev)
        if found is None:
            return
        commit, files = found
        self.entry.repo, self.entry.file = repo.id, path
        if repo.spec.gated and token not in repo.spec.tokens:
            if token is None:
                message = (f"Access to model {repo.id} is restricted. You must have access to it and be "
                           f"authenticated to access it. Please log in.")
            else:
                message = (f"Access to model {repo.id} is restricted and you are not in the authorized list. "
                           f"Visit https://huggingface.co/{repo.id} to ask for access.")
            return self._error(401 if token is None else 403, "GatedRepo", message)
        f = files.get(path)
        if f is None:
            return self._error(404, "EntryNotFound", "Entry not found", commit=commit)
        status = self.hub._outage(f)
        if status is not None:
            return self._error(status, None, "Service Unavailable")
        headers = {"X-Repo-Commit": commit, "Content-Disposition": _disposition(f.path),
                   "Access-Control-Expose-Headers": "X-Repo-Commit,X-Linked-Size,X-Linked-ETag,ETag,X-Error-Code,"
                                                    "X-Error-Message,Content-Range,Accept-Ranges"}
        if f.lfs:
            folder = "models--" + repo.id.replace("/", "--")
            location = (f"{self.hub.cdn_url}/repos/{folder}/{f.sha256}?response-content-disposition="
                        f"{quote(_disposition(f.path), safe='')}&Expires=4102444800&Signature=standin")
            body = f"Found. Redirecting to {location}".encode()
            headers.update({"Location": location, "ETag": f'"{f.oid}"', "X-Linked-Size": str(f.size),
                            "X-Linked-ETag": f'"{f.sha256}"', "Content-Type": "text/plain; charset=utf-8"})
            return self._send(302, headers, body)
        headers["ETag"] = f'"{f.oid}"'
        self._content(f, headers)

    def _cdn(self, path: str) -> None:
        match = re.match(r"^/repos/[^/]+/([0-9a-f]{64})$", path)
        f = self.hub._by_sha.get(match.group(1)) if match else None
        if f is None:
            return self._send(404, {"Content-Type": "application/xml"}, b"<Error><Code>NoSuchKey</Code></Error>")
        self.entry.repo, self.entry.file = f.repo, f.path
        status = self.hub._outage(f)
        if status is not None:
            return self._error(status, None, "Service Unavailable")
        self._content(f, {"ETag": f'"{f.sha256}"', "Content-Disposition": _disposition(f.path)})

    # --- responses --------------------------------------------------------------------------------------------------

    def _content(self, f: _File, headers: dict[str, str]) -> None:
        """The file's bytes: all of them (200), or the `Range` asked for (206; 416 when it starts past the end)."""
        start, end = 0, f.size
        status = 200
        asked = re.match(r"^bytes=(\d*)-(\d*)$", (self.headers.get("Range") or "").strip())
        if asked and (asked.group(1) or asked.group(2)):
            if asked.group(1):
                start = int(asked.group(1))
                end = min(f.size, int(asked.group(2)) + 1) if asked.group(2) else f.size
            else:  # bytes=-N: the last N bytes
                start = max(0, f.size - int(asked.group(2)))
            if start >= f.size:
                headers["Content-Range"] = f"bytes */{f.size}"
                return self._send(416, headers, b"")
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{f.size}"
        headers.update({"Content-Type": _content_type(f.path), "Accept-Ranges": "bytes",
                        "Content-Length": str(end - start)})
        self._head(status, headers)
        if self.method == "HEAD":
            return
        pos = start
        for chunk in f.read(start, end):
            stall = self.hub._fault(f, "stall")
            if stall is not None and pos <= stall.at < pos + len(chunk):
                cut = stall.at - pos
                self._write(chunk[:cut])
                pos += cut
                chunk = chunk[cut:]
                released = self.hub._released
                stall.reached.set()
                released.wait(timeout=300)
            drop = self.hub._fault(f, "drop")
            if drop is not None and drop.tripped < drop.times and pos <= drop.at < pos + len(chunk):
                self._write(chunk[:drop.at - pos])
                with self.hub._lock:
                    drop.tripped += 1
                self._cut()
                return
            self._write(chunk)
            pos += len(chunk)

    def _write(self, data: bytes) -> None:
        if data:
            self.wfile.write(data)
            self.wfile.flush()
            self.entry.sent += len(data)

    def _cut(self) -> None:
        self.close_connection = True
        try:
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

    def _head(self, status: int, headers: dict[str, str]) -> None:
        self.entry.status = status
        self.send_response(status)
        self.send_header("X-Request-Id", f"Root=1-standin-{id(self.entry):x}")
        self.send_header("Vary", "Origin")
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send(self, status: int, headers: dict[str, str], body: bytes) -> None:
        headers = {**headers, "Content-Length": str(len(body))}
        self._head(status, headers)
        if self.method != "HEAD" and body:
            self._write(body)

    def _json(self, data: Any) -> None:
        self._send(200, {"Content-Type": "application/json; charset=utf-8"}, json.dumps(data).encode())

    def _error(self, status: int, code: str | None, message: str, *, commit: str | None = None) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        if commit:
            headers["X-Repo-Commit"] = commit
        self._send(status, headers, json.dumps({"error": message}).encode())

    def _token(self) -> str | None:
        value = self.headers.get("Authorization") or ""
        return value[7:].strip() or None if value.lower().startswith("bearer ") else (value.strip() or None)


def _tree(files: dict[str, _File], folder: str, recursive: bool) -> list[dict[str, Any]] | None:
    prefix = f"{folder}/" if folder else ""
    inside = [f for path, f in sorted(files.items()) if path.startswith(prefix)]
    if folder and not inside:
        return None
    entries: list[dict[str, Any]] = []
    seen: set[str] = set()
    for f in inside:
        rest = f.path[len(prefix):].split("/")
        for depth in range(1, len(rest)):
            directory = prefix + "/".join(rest[:depth])
            if directory not in seen and (recursive or depth == 1):
                seen.add(directory)
                entries.append({"type": "directory", "oid": hashlib.sha1(directory.encode()).hexdigest(), "size": 0,
                                "path": directory})
        if recursive or len(rest) == 1:
            entries.append(f.tree_entry())
    return entries


def _disposition(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    return f"inline; filename*=UTF-8''{quote(name)}; filename=\"{name}\";"


def _content_type(path: str) -> str:
    guessed = mimetypes.guess_type(path)[0]
    if guessed and guessed.startswith(("text/", "application/json")):
        return f"{guessed}; charset=utf-8"
    return guessed or "application/octet-stream"


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):  # a client gone is no error
            super().handle_error(request, client_address)


@contextmanager
def serve_hub(repos: Mapping[str, HubRepo], *, tokens: Collection[str] = ()) -> Iterator[Hub]:
    """Serve `repos` (repo ID -> HubRepo) on two free ports of 127.0.0.1, the Hub and its CDN; yields the `Hub`
    (`hub.url` is what HF_ENDPOINT takes). `tokens`: more tokens the Hub knows (valid, without access to gated or
    private repos unless listed there too)."""
    hub = Hub(repos, tokens)
    servers = []
    for role in ("hub", "cdn"):
        handler = type(f"_{role.title()}Handler", (_Handler,), {"hub": hub, "role": role})
        server = _Server(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True,
                                  name=f"hf-hub-standin-{role}")
        thread.start()
        servers.append((server, thread))
    hub.url = f"http://127.0.0.1:{servers[0][0].server_address[1]}"
    hub.cdn_url = f"http://127.0.0.1:{servers[1][0].server_address[1]}"
    try:
        yield hub
    finally:
        hub.heal()
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)
        with hub._lock:
            connections = list(hub._connections)
        for connection in connections:  # idle keep-alive connections of clients that are gone
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


def use_hub(monkeypatch: Any, hub: Hub | str, hf_home: Path) -> None:
    """Point `huggingface_hub` in this process (and the subprocesses it starts) at the stand-in for one test:
    HF_ENDPOINT, no offline mode, and its import-time constants (the endpoint, the offline flag, where `hf auth
    login` keeps its token: under `hf_home`, so no token of the machine's own is sent)."""
    import huggingface_hub.constants as constants

    url = str(hub).rstrip("/")
    monkeypatch.setenv("HF_ENDPOINT", url)
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_IMPLICIT_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", url)
    monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", url + "/{repo_id}/resolve/{revision}/{filename}")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(Path(hf_home) / "token"))
    monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(Path(hf_home) / "stored_tokens"))
