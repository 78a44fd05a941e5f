"""The Hugging Face hub cache: where it is on each platform, whether a model is completely in it, and downloads.

Resolution (first match wins), as huggingface_hub itself does, plus Jarvis's `hf_cache` setting:
`HF_HUB_CACHE` -> `HUGGINGFACE_HUB_CACHE` -> `$HF_HOME/hub` -> `engines.vllm.hf_cache` -> `$XDG_CACHE_HOME/huggingface/hub`
-> `~/.cache/huggingface/hub` (Windows: `%USERPROFILE%\\.cache\\huggingface\\hub`).

Completeness is checked offline and never downloads: huggingface_hub finds the snapshot (and, on versions that keep a
cached tree listing, reports a partial one), then Jarvis checks what any version misses: no `blobs/*.incomplete`,
`config.json` present, and the weights (`model.safetensors`, or every shard that `model.safetensors.index.json`
lists; the `pytorch_model.bin` equivalents are accepted too).

`download` fetches a whole repo (at a revision) with one progress task, and resumes after a dropped connection,
Ctrl-C or a full disk instead of starting again: see the comment above it for how it shares the work with
huggingface_hub.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, Iterator, Mapping

if TYPE_CHECKING:
    from jarvis_core.api import Progress, Task

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


# --- where the cache is ----------------------------------------------------------------------------------------------


def _path_type(platform: str) -> type[PurePath]:
    if platform == "win32":
        return PureWindowsPath if os.name != "nt" else Path
    return Path if os.name != "nt" else PurePosixPath


def _home(environ: Mapping[str, str], platform: str) -> PurePath:
    cls = _path_type(platform)
    if platform == "win32":
        if environ.get("USERPROFILE"):
            return cls(environ["USERPROFILE"])
        if environ.get("HOMEDRIVE") and environ.get("HOMEPATH"):
            return cls(environ["HOMEDRIVE"] + environ["HOMEPATH"])
    elif environ.get("HOME"):
        return cls(environ["HOME"])
    return cls(os.path.expanduser("~"))


def _expand(value: str, environ: Mapping[str, str], platform: str) -> PurePath:
    cls = _path_type(platform)
    if value == "~" or value.startswith(("~/", "~\\")):
        return _home(environ, platform) / value[2:] if len(value) > 1 else _home(environ, platform)
    return cls(value)


def hf_home_dir(environ: Mapping[str, str], *, platform: str) -> PurePath:
    """`HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (`%USERPROFILE%` on Windows)."""
    if environ.get("HF_HOME"):
        return _expand(environ["HF_HOME"], environ, platform)
    if environ.get("XDG_CACHE_HOME"):
        return _expand(environ["XDG_CACHE_HOME"], environ, platform) / "huggingface"
    return _home(environ, platform) / ".cache" / "huggingface"


def hub_cache_dir(environ: Mapping[str, str], *, platform: str, configured: PurePath | None = None) -> PurePath:
    """The hub cache folder (the one holding `models--Org--Name`); environment variables win over `configured`."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(var):
            return _expand(environ[var], environ, platform)
    if environ.get("HF_HOME"):
        return hf_home_dir(environ, platform=platform) / "hub"
    if configured is not None:
        return _expand(str(configured), environ, platform)
    return hf_home_dir(environ, platform=platform) / "hub"


# --- is a model complete in it ---------------------------------------------------------------------------------------


@dataclass
class CacheCheck:
    present: bool
    detail: str
    """Where the model was found, or why it is missing (one line)."""
    path: Path | None = None
    """The snapshot folder (or the local model folder)."""
    revision: str | None = None
    local_folder: bool = False
    partial: bool = False


def looks_like_path(name: str) -> bool:
    return (name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", name))
            or name.count("/") > 1 or "\\" in name)


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def check_model(name: str, hub_cache: PurePath, *, revision: str | None = None) -> CacheCheck:
    """Is `name` (a hub repo ID or a local model folder) completely present? Never touches the network."""
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        return _check_folder(local.resolve(), f"local folder {local.resolve()}", local_folder=True)
    if looks_like_path(name):
        return CacheCheck(False, f"no model folder at {name}")
    if not is_repo_id(name):
        return CacheCheck(False, f"'{name}' is neither a Hugging Face repo ID (Org/Name) nor an existing folder")
    return _check_repo(name, Path(hub_cache), revision)


def repo_dir(repo_id: str, hub_cache: PurePath) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return Path(hub_cache) / repo_folder_name(repo_id=repo_id, repo_type="model")


def _check_repo(repo_id: str, hub_cache: Path, revision: str | None) -> CacheCheck:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    folder = repo_dir(repo_id, hub_cache)
    if not folder.is_dir():
        return CacheCheck(False, f"{repo_id} is not in the Hugging Face cache at {hub_cache}")
    incomplete = sorted(p.name for p in (folder / "blobs").glob("*.incomplete")) if (folder / "blobs").is_dir() else []
    if incomplete:
        return CacheCheck(False, f"{repo_id} is only partly downloaded ({len(incomplete)} unfinished file"
                                 f"{'s' if len(incomplete) != 1 else ''} in {folder / 'blobs'})", partial=True)
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(hub_cache),
                                          local_files_only=True))
    except LocalEntryNotFoundError as exc:  # IncompleteSnapshotError is a subclass (huggingface_hub >= 1.22)
        if hasattr(exc, "snapshot_path"):
            return CacheCheck(False, f"{repo_id} is only partly downloaded (files missing from "
                                     f"{getattr(exc, 'snapshot_path')})", partial=True)
        what = f"revision {revision} of {repo_id}" if revision else f"{repo_id} (no snapshot for refs/main)"
        return CacheCheck(False, f"{what} is not in the Hugging Face cache at {hub_cache}")
    except (OSError, ValueError) as exc:  # corrupted ref files, bad revision names
        return CacheCheck(False, f"{repo_id}: cannot read its cache folder {folder}: {exc}")
    return _check_folder(snapshot, f"{repo_id} at {snapshot}", revision=snapshot.name)


def _check_folder(folder: Path, where: str, *, revision: str | None = None, local_folder: bool = False) -> CacheCheck:
    def missing(what: str) -> CacheCheck:
        return CacheCheck(False, f"{where} is incomplete: {what}", path=folder, revision=revision,
                          local_folder=local_folder, partial=True)

    if not (folder / "config.json").is_file():  # is_file() follows the snapshot's symlink: a dangling one is missing
        return missing("config.json is missing")
    for index_name in WEIGHT_INDEXES:
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
                shards = sorted({str(v) for v in weight_map.values()})
            except (OSError, ValueError, AttributeError) as exc:
                return missing(f"{index_name} is unreadable ({exc})")
            if not shards:
                return missing(f"{index_name} lists no weight files")
            absent = [s for s in shards if not (folder / s).is_file()]
            if absent:
                return missing(f"{len(absent)} of {len(shards)} weight shards are missing (first: {absent[0]})")
            return CacheCheck(True, where, path=folder, revision=revision, local_folder=local_folder)
    if any((folder / w).is_file() for w in WEIGHT_FILES):
        return CacheCheck(True, where, path=folder, revision=revision, local_folder=local_folder)
    return missing("no weights (model.safetensors or model.safetensors.index.json)")


# --- downloading, resumable, with progress ---------------------------------------------------------------------------
#
# huggingface_hub (1.x and later) downloads each file under a temporary name of its own and deletes it when the
# download fails, so an interrupted download starts again from zero; `snapshot_download` also runs worker threads that
# Ctrl-C does not stop. So Jarvis moves the bytes itself and leaves everything else to huggingface_hub:
#   1. `HfApi.model_info` (the commit, the files and their sizes) and `get_hf_file_metadata` (each file's ETag and where
#      its content is: the CDN for LFS files), the calls huggingface_hub makes itself;
#   2. each file's content into `blobs/<etag>.incomplete`, continued with an HTTP Range request after a dropped
#      connection, Ctrl-C or a full disk, then renamed to `blobs/<etag>`, the blob huggingface_hub would have written
#      (under huggingface_hub's own lock for it, so a concurrent `hf download` waits instead of mixing bytes in);
#   3. `snapshot_download`, which finds every blob in place and only writes the rest of the cache: the snapshot's
#      links, the tree listing, and `refs/<revision>`.
# huggingface_hub's own logging, warnings and progress bars are silenced meanwhile: the core's display shows one task.

ENGINE = "vllm"
DOWNLOAD_WORKERS = 4
"""Files downloaded at once."""
RETRY_DELAYS = (1.0, 2.0, 4.0)
"""Seconds before each new try of a file after a dropped connection, a timeout or a 429/5xx answer; the count starts
again whenever bytes arrive."""
READ_TIMEOUT = 60.0
PARTIAL = ".incomplete"
DEFAULT_ENDPOINT = "https://huggingface.co"
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


@dataclass
class _HubFile:
    path: str
    size: int | None
    etag: str = ""
    url: str = ""
    present: bool = False  # already in the snapshot
    counted: int = 0  # bytes of it the task holds


class _Retry(Exception):
    """A failure worth another try (a dropped connection, a timeout, a 429 or 5xx answer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Cancelled(Exception):
    """Ends a download thread after Ctrl-C or another thread's failure."""


class _Run:
    """One download's shared state: bytes and files done (reported to the task), the first failure, cancellation."""

    def __init__(self, task: Task, files: list[_HubFile], done_files: int) -> None:
        self.task = task
        self.lock = threading.Lock()
        self.bytes = sum(f.counted for f in files)
        self.files_done = done_files
        self.files_total = len(files)
        self.cancel = threading.Event()
        self.failure: BaseException | None = None

    def moved(self, f: _HubFile, n: int) -> None:
        if n:
            with self.lock:
                f.counted += n
                self.bytes += n
                done = self.bytes
            self.task.update(done)

    def file_done(self) -> None:
        with self.lock:
            self.files_done += 1
            done = self.files_done
        self.task.files(done, self.files_total)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc
        self.cancel.set()


def download(repo_id: str, hub_cache: PurePath, *, progress: Progress, token: str | None,
             revision: str | None = None, endpoint: str | None = None, label: str | None = None) -> Path:
    """Download a whole repo (at `revision`, default the main branch) into the hub cache, resuming what an earlier
    try left, with one progress task (bytes, rate, files) whose final line is printed once, at the end. Returns the
    snapshot folder. Raises ModelMissingError (no such repo or revision, gated) or EngineError (unreachable, disk
    full, broken off), one line each; KeyboardInterrupt goes through once the threads have stopped, and what was
    downloaded is kept for the next try. `token` None: the one `hf auth login` saved, if any."""
    cache = Path(hub_cache)
    endpoint = (endpoint or DEFAULT_ENDPOINT).rstrip("/")
    label = label or (f"{repo_id}@{revision}" if revision else repo_id)
    task: Task | None = None
    with _quiet_hub():
        try:
            commit, files = _plan(repo_id, cache, revision, token, endpoint)
            todo = _missing(repo_id, cache, files)
            task = progress.task(label, total=sum(f.size or 0 for f in files) or None, unit="B")
            _transfer(repo_id, commit, cache, files, todo, task, token=token, endpoint=endpoint)
            path = _complete(repo_id, cache, revision, commit, token, endpoint)
        except KeyboardInterrupt:
            if task is not None:
                task.close(f"{label}: stopped at {_done(task)}; what was downloaded is kept: rerun with "
                           f"--force-download to resume")
            raise
        except Exception as exc:
            if task is not None:
                progress.close()  # the bar goes without a line: the error is the one line
            raise _failure(exc, repo_id, revision, endpoint, cache, task) from None
    task.close()
    return path


def _done(task: Task) -> str:
    from jarvis_core.api import human_bytes

    if task.total:
        return f"{human_bytes(task.completed)} of {human_bytes(task.total)}"
    return human_bytes(task.completed)


def _plan(repo_id: str, cache: Path, revision: str | None, token: str | None,
          endpoint: str) -> tuple[str, list[_HubFile]]:
    """The commit `revision` resolves to, and the repo's files: present in its snapshot already, or with the ETag
    and address of their content."""
    from concurrent.futures import ThreadPoolExecutor

    from huggingface_hub import HfApi

    info = HfApi(endpoint=endpoint, token=token).model_info(repo_id, revision=revision, files_metadata=True)
    commit = str(info.sha)
    snapshot = repo_dir(repo_id, cache) / "snapshots" / commit
    files = [_HubFile(s.rfilename, s.size) for s in info.siblings or []]
    todo = []
    for f in files:
        if (snapshot / f.path).is_file():
            f.present = True
            f.counted = f.size or 0
        else:
            todo.append(f)

    def locate(f: _HubFile) -> None:
        f.etag, f.url, size = _locate(repo_id, commit, f.path, token, endpoint)
        f.size = size if size is not None else f.size

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(locate, todo))
    return commit, files


def _locate(repo_id: str, commit: str, path: str, token: str | None, endpoint: str) -> tuple[str, str, int | None]:
    """(ETag, content address, size) of one file, from the Hub's HEAD answer as huggingface_hub reads it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from jarvis_core.api import EngineError

    meta = get_hf_file_metadata(hf_hub_url(repo_id, path, revision=commit, endpoint=endpoint), token=token)
    if not meta.etag:
        raise EngineError(f"The Hugging Face Hub at {endpoint} sent no ETag for {path} of {repo_id}; check "
                          f"HF_ENDPOINT.", engine=ENGINE)
    return meta.etag, meta.location, meta.size


def _missing(repo_id: str, cache: Path, files: list[_HubFile]) -> list[_HubFile]:
    """The files whose blob is not in the cache yet (each counted with what its partial file holds); an OSError
    (ENOSPC) when the disk has not room enough for the rest."""
    import shutil

    from jarvis_core.api import human_bytes

    blobs = repo_dir(repo_id, cache) / "blobs"
    todo = []
    for f in files:
        if f.present:
            continue
        if (blobs / f.etag).is_file():
            f.counted = f.size or 0
        else:
            f.counted = _size(blobs / (f.etag + PARTIAL))
            todo.append(f)
    if todo:
        blobs.mkdir(parents=True, exist_ok=True)
        needed = sum(max(0, (f.size or 0) - f.counted) for f in todo)
        free = shutil.disk_usage(blobs).free
        if free < needed:
            raise OSError(errno.ENOSPC, f"{human_bytes(needed)} are needed, {human_bytes(free)} are free")
    return todo


def _transfer(repo_id: str, commit: str, cache: Path, files: list[_HubFile], todo: list[_HubFile], task: Task, *,
              token: str | None, endpoint: str) -> None:
    """Every missing blob, a few files at once; the task shows bytes (with what is on disk already) and files."""
    import queue
    import time

    run = _Run(task, files, len(files) - len(todo))
    task.update(run.bytes)  # the starting point: what is there already is no part of this run's rate
    task.files(run.files_done, run.files_total)
    task.phase("downloading")
    waiting: queue.Queue[_HubFile] = queue.Queue()
    for f in sorted(todo, key=lambda f: -(f.size or 0)):  # the big ones first: they decide when it ends
        waiting.put(f)
    context = _Fetch(repo_id, commit, cache, token, endpoint, run)
    threads = [threading.Thread(target=context.work, args=(waiting,), daemon=True, name=f"jarvis-download-{i}")
               for i in range(min(DOWNLOAD_WORKERS, len(todo)))]
    for thread in threads:
        thread.start()
    try:
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(0.2)
    except KeyboardInterrupt:
        run.cancel.set()
        deadline = time.monotonic() + 2.0  # a thread stuck in a read is left behind (daemon): its file stays a prefix
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        raise
    if run.failure is not None:
        raise run.failure


class _Fetch:
    """What the download threads share: where, with which token, and the run."""

    def __init__(self, repo_id: str, commit: str, cache: Path, token: str | None, endpoint: str, run: _Run) -> None:
        from huggingface_hub.utils import build_hf_headers

        self.repo_id = repo_id
        self.commit = commit
        self.folder = repo_dir(repo_id, cache)
        self.locks = cache / ".locks" / self.folder.name
        self.token = token
        self.endpoint = endpoint
        self.run = run
        self.headers = {**build_hf_headers(token=token), "Accept-Encoding": "identity"}

    def work(self, waiting: Any) -> None:
        import queue

        import httpx

        with httpx.Client(follow_redirects=True, trust_env=True,
                          timeout=httpx.Timeout(READ_TIMEOUT, connect=15.0)) as client:
            while not self.run.cancel.is_set():
                try:
                    f = waiting.get_nowait()
                except queue.Empty:
                    return
                try:
                    self.file(client, f)
                except _Cancelled:
                    return
                except BaseException as exc:  # noqa: BLE001  (reported by the main thread)
                    self.run.fail(exc)
                    return
                self.run.file_done()

    def file(self, client: Any, f: _HubFile) -> None:
        from huggingface_hub.utils import WeakFileLock

        blob = self.folder / "blobs" / f.etag
        partial = blob.with_name(f.etag + PARTIAL)
        self.locks.mkdir(parents=True, exist_ok=True)
        with WeakFileLock(self.locks / f"{f.etag}.lock"):
            if not blob.is_file():  # else another process finished it while this one waited for the lock
                resumed = self.fetch(client, f, partial)
                self.verify(f, partial, resumed)
                os.replace(partial, blob)
        self.run.moved(f, (f.size or _size(blob)) - f.counted)

    def fetch(self, client: Any, f: _HubFile, partial: Path) -> bool:
        """Bring `partial` to the whole file, continuing what is there; True when a Range request was needed."""
        failures = 0
        resumed = False
        while True:
            if self.run.cancel.is_set():
                raise _Cancelled
            have = _size(partial)
            if f.size is not None and have > f.size:
                partial.unlink()
                have = 0
            self.run.moved(f, have - f.counted)
            if f.size is not None and have == f.size:
                return resumed
            resumed = resumed or have > 0
            try:
                self.get(client, f, partial, have)
                if f.size is None or _size(partial) == f.size:
                    return resumed
                raise _Retry(f"the answer ended at {_size(partial)} of {f.size} bytes")
            except _Retry as retry:
                failures = 1 if _size(partial) > have else failures + 1  # bytes arrived: a new count
                if failures > len(RETRY_DELAYS):
                    raise _BrokenOff(f, retry.reason, failures) from None
                if self.run.cancel.wait(RETRY_DELAYS[failures - 1]):
                    raise _Cancelled from None
                try:  # a fresh address: the CDN's signed links expire
                    f.url = _locate(self.repo_id, self.commit, f.path, self.token, self.endpoint)[1]
                except Exception:  # noqa: BLE001  (the Hub's HEAD fails too: the old address is tried again)
                    pass

    def get(self, client: Any, f: _HubFile, partial: Path, have: int) -> None:
        import httpx

        headers = dict(self.headers)
        if _origin(f.url) != _origin(self.endpoint):
            headers.pop("authorization", None)  # never to the CDN, as huggingface_hub does
        if have:
            headers["Range"] = f"bytes={have}-"
        try:
            with client.stream("GET", f.url, headers=headers) as response:
                status = response.status_code
                if status == 416 and f.size is not None and have >= f.size:
                    return
                if status == 429 or status >= 500 or status == 416:
                    if status == 416:
                        partial.unlink(missing_ok=True)
                    raise _Retry(f"the server answered HTTP {status} {response.reason_phrase}".rstrip())
                if status >= 400:
                    raise _http_failure(self.repo_id, f.path, response, self.endpoint)
                if have and not (status == 206 and (response.headers.get("Content-Range") or "")
                                 .startswith(f"bytes {have}-")):
                    have = 0  # the server sent the whole file: start the partial file again
                    self.run.moved(f, -f.counted)
                with open(partial, "ab" if have else "wb", buffering=0) as out:
                    for chunk in response.iter_bytes():
                        if self.run.cancel.is_set():
                            raise _Cancelled
                        _write_all(out, chunk)
                        self.run.moved(f, len(chunk))
        except httpx.TransportError as exc:
            raise _Retry(f"{type(exc).__name__}: {(str(exc) or 'connection lost').splitlines()[0]}") from None

    def verify(self, f: _HubFile, partial: Path, resumed: bool) -> None:
        """A resumed LFS file must hash to its ETag (its sha256): a mismatch removes it, to be fetched again."""
        from jarvis_core.api import EngineError

        if not resumed or not re.fullmatch(r"[0-9a-f]{64}", f.etag):
            return
        digest = hashlib.sha256()
        with open(partial, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != f.etag:
            partial.unlink(missing_ok=True)
            raise EngineError(f"{f.path} of {self.repo_id} did not match its checksum after resuming and was removed; "
                              f"rerun with --force-download to fetch it again.", engine=ENGINE)


class _BrokenOff(Exception):
    """A file whose download kept failing without progress."""

    def __init__(self, f: _HubFile, reason: str, tries: int) -> None:
        super().__init__(reason)
        self.path = f.path
        self.reason = reason
        self.tries = tries


def _complete(repo_id: str, cache: Path, revision: str | None, commit: str, token: str | None,
              endpoint: str) -> Path:
    """The snapshot's links, the tree listing and the ref, by huggingface_hub (every blob is in place already)."""
    from huggingface_hub import snapshot_download

    path = Path(snapshot_download(repo_id, revision=commit, cache_dir=str(cache), token=token, endpoint=endpoint,
                                  tqdm_class=_silent_tqdm()))
    ref = revision or "main"
    if ref != commit:  # a branch or tag: remembered as huggingface_hub does, so an offline look-up finds the commit
        target = repo_dir(repo_id, cache) / "refs" / ref
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        scratch.write_text(commit)
        os.replace(scratch, target)
    return path


def _silent_tqdm() -> type:
    from tqdm.auto import tqdm

    class Silent(tqdm):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            kwargs.pop("name", None)
            super().__init__(*args, **kwargs)

    return Silent


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's log lines ("Trying to resume download..."), warnings and progress bars, off for a while."""
    import logging
    import warnings

    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    logger = logging.getLogger("huggingface_hub")
    level = logger.level
    bars_were_off = are_progress_bars_disabled()
    logger.setLevel(logging.CRITICAL + 1)
    disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)
        if not bars_were_off:
            enable_progress_bars()


def _gated(repo_id: str, status: int | None, endpoint: str) -> Exception:
    from jarvis_core.api import ModelMissingError

    page = f"{endpoint}/{repo_id}"
    if status == 403:
        return ModelMissingError(f"{repo_id} is a gated model and the Hugging Face token in use (HF_TOKEN, or the one "
                                 f"`hf auth login` saved) has no access to it: accept its terms at {page} with that "
                                 f"account, or use a token of an account that has.", engine=ENGINE)
    return ModelMissingError(f"{repo_id} is a gated model: accept its terms at {page}, then set HF_TOKEN to a token "
                             f"of that account (or run `hf auth login`) and rerun with --force-download.",
                             engine=ENGINE)


def _http_failure(repo_id: str, path: str, response: Any, endpoint: str = DEFAULT_ENDPOINT) -> Exception:
    from jarvis_core.api import EngineError

    if response.status_code in (401, 403) and response.headers.get("X-Error-Code") == "GatedRepo":
        return _gated(repo_id, response.status_code, endpoint)
    why = response.headers.get("X-Error-Message") or response.reason_phrase or ""
    return EngineError(f"Downloading {path} of {repo_id} failed: HTTP {response.status_code} {why}".rstrip() + ".",
                       engine=ENGINE)


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _network(exc: BaseException) -> bool:
    """A connection failure of one of the HTTP stacks huggingface_hub versions use."""
    return any(c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")
               for c in type(exc).__mro__) and _status(exc) is None


def _failure(exc: BaseException, repo_id: str, revision: str | None, endpoint: str, cache: Path,
             task: Task | None) -> BaseException:
    """One line for what stopped a download."""
    from huggingface_hub import errors as hf
    from jarvis_core.api import EngineError, JarvisError, ModelMissingError

    if isinstance(exc, JarvisError):
        return exc
    kept = (f": the {_done(task)} downloaded so far are kept and the download resumes"
            if task is not None and task.completed else "")
    status = _status(exc)
    if isinstance(exc, hf.GatedRepoError):
        return _gated(repo_id, status, endpoint)
    if isinstance(exc, hf.RevisionNotFoundError):
        return ModelMissingError(f"{repo_id} has no revision '{revision}' on the Hugging Face Hub; check the "
                                 f"`revision` set for it in config.yaml.", engine=ENGINE)
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelMissingError(f"{repo_id} does not exist on the Hugging Face Hub at {endpoint}, or it is private: "
                                 f"set HF_TOKEN (or run `hf auth login`) for an account that can see it.",
                                 engine=ENGINE)
    if isinstance(exc, getattr(hf, "OfflineModeIsEnabled", ())):
        return EngineError(f"Cannot download {repo_id}: HF_HUB_OFFLINE is set in the environment; unset it to "
                           f"download.", engine=ENGINE)
    if isinstance(exc, _BrokenOff):
        return EngineError(f"Downloading {repo_id} broke off: {exc.path} failed {exc.tries} times in a row "
                           f"({exc.reason}); rerun with --force-download{kept or ' to try again'}.", engine=ENGINE)
    if isinstance(exc, hf.LocalEntryNotFoundError) or _network(exc):
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return EngineError(f"Cannot download {repo_id}: the Hugging Face Hub at {endpoint} cannot be reached "
                           f"({reason}); check the network, the proxy settings or HF_ENDPOINT.", engine=ENGINE)
    if isinstance(exc, hf.HfHubHTTPError):
        if status == 401:
            return EngineError(f"The Hugging Face Hub rejected the token (HF_TOKEN, or the one `hf auth login` "
                               f"saved): it is invalid or has expired; create a new one at {endpoint}/settings/tokens.",
                               engine=ENGINE)
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        why = headers.get("X-Error-Message") or str(exc).strip().splitlines()[0]
        return EngineError(f"Downloading {repo_id} failed: the Hugging Face Hub answered HTTP {status}: {why}",
                           engine=ENGINE)
    if isinstance(exc, OSError):
        if exc.errno == errno.EFBIG:
            return EngineError(f"Writing {repo_id} into {cache} stopped: {exc.strerror} (a file-size limit: "
                               f"`ulimit -f`, or the largest file the filesystem takes); once it allows the file, "
                               f"rerun with --force-download{kept}.", engine=ENGINE)
        if exc.errno in _DISK_FULL:
            return EngineError(f"Not enough disk space for {repo_id} in {cache} ({exc.strerror}); free some space and "
                               f"rerun with --force-download{kept}.", engine=ENGINE)
        return EngineError(f"Downloading {repo_id} into {cache} failed: {exc}{kept}.", engine=ENGINE)
    return exc


def _write_all(out: Any, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = out.write(view)
        view = view[written:]


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _origin(url: str) -> tuple[str, str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
