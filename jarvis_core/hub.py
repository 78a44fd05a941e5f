"""Files of Hugging Face Hub model repos, downloaded into the Hugging Face hub cache: resumable, on one progress task.

The one Hub downloader the engine plugins share (`hub_files` and `hub_download` in `jarvis_core.api`); what counts as
present, which files a model needs and the plugin's own fix hints stay in each plugin.

huggingface_hub (1.x and later) downloads each file under a process-unique temporary name and deletes it when the
download fails, so an interrupted download starts again from zero; `snapshot_download` also runs worker threads that
Ctrl-C does not stop, and draws bars of its own. So Jarvis moves the bytes itself and leaves the rest to
huggingface_hub:
  1. `HfApi.model_info` (the commit a revision is at, the files and their sizes) and `get_hf_file_metadata` (each
     file's ETag and where its content is: the CDN for LFS files), the calls huggingface_hub makes itself;
  2. each file's content, a few files at once, into `blobs/<etag>.incomplete`, continued with an HTTP Range request
     after a dropped connection (in the same call) and by the next call after Ctrl-C, a connection that stayed down
     or a full disk; a resumed LFS file must hash to its ETag (its sha256). Then it is renamed to `blobs/<etag>`, the
     blob huggingface_hub would have written, under huggingface_hub's own lock for it (a concurrent `hf download`
     waits instead of mixing bytes in);
  3. `snapshot_download` (a whole repo) or `hf_hub_download` (named files) finds every blob in place and writes the
     rest of the cache: the snapshot's links and the tree listing; Jarvis records a branch's commit in `refs/`, so
     an offline look-up finds it.
huggingface_hub's own log lines, warnings and progress bars are off meanwhile. Every failure is one line: a
ModelMissingError (no such repo, revision or file; gated) or an EngineError (offline, unreachable, broken off, disk
full), naming the engine that asked.

huggingface_hub is an optional dependency of the core (`pip install 'jarvis-core[hub]'`); it and httpx are imported
inside the functions that use them, so `jarvis --help` stays fast.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Sequence

from .errors import EngineError, JarvisError, ModelMissingError
from .progress import human_bytes

if TYPE_CHECKING:
    from .progress import Progress, Task

__all__ = ["HubFiles", "hub_files", "hub_download", "DEFAULT_ENDPOINT", "PARTIAL"]

DEFAULT_ENDPOINT = "https://huggingface.co"
DOWNLOAD_WORKERS = 4
"""Files downloaded at once."""
RETRY_DELAYS = (1.0, 2.0, 4.0)
"""Seconds before each new try of a file after a dropped connection, a timeout or a 429/5xx answer; the count starts
again whenever bytes arrive."""
READ_TIMEOUT = 60.0
PARTIAL = ".incomplete"
"""Suffix of a blob being downloaded (`blobs/<etag>.incomplete`), kept after an interruption to be resumed."""
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_SHA256 = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class HubFiles:
    """A revision of a Hub model repo: the commit it is at and its files."""

    repo_id: str
    revision: str | None
    """As asked (a branch, tag or commit; None is the main branch)."""
    commit: str
    sizes: Mapping[str, int | None]
    """Each file's path in the repo and its size in bytes (None when the Hub does not say)."""


def hub_files(repo_id: str, *, engine: str, revision: str | None = None, token: str | None = None,
              endpoint: str | None = None, revision_hint: str | None = None) -> HubFiles:
    """The files of `repo_id` at `revision` (default the main branch), asked of the Hub (`endpoint`, default
    HF_ENDPOINT, else huggingface.co), for a plugin to pick what to download. `token` None: HF_TOKEN, else the one
    `hf auth login` saved. Raises ModelMissingError or EngineError, one line each, with `engine` on them;
    `revision_hint` ends the line for a revision the repo does not have (where the user set it)."""
    job = _Job(repo_id, None, revision, None, token, _endpoint(endpoint), engine, revision_hint)
    job.refuse_offline()
    with _quiet_hub():
        try:
            info = _model_info(job)
        except Exception as exc:
            raise _failure(exc, job, None) from None
    return HubFiles(repo_id, revision, str(info.sha), {s.rfilename: s.size for s in info.siblings or []})


def hub_download(repo_id: str, filenames: Sequence[str] | None = None, *, cache_dir: PurePath, progress: Progress,
                 engine: str, revision: str | None = None, token: str | None = None, endpoint: str | None = None,
                 label: str | None = None, revision_hint: str | None = None) -> Path:
    """Download `filenames` of `repo_id` (None: every file of the repo) at `revision` (default the main branch) into
    the hub cache `cache_dir`, continuing what an earlier try left, with one progress task (bytes, rate, and files
    when there are several) whose final line is printed once, at the end. Returns the snapshot folder
    (`cache_dir/models--Org--Name/snapshots/<commit>`). `label` names the task (default
    `"<engine>: <repo_id>[/<first file>][@<revision>]"`). Raises ModelMissingError or EngineError (one line each,
    with `engine` on them, see `hub_files`); KeyboardInterrupt goes through once the download threads have stopped,
    and what was downloaded is kept for the next call."""
    names = list(dict.fromkeys(filenames)) if filenames is not None else None
    job = _Job(repo_id, names, revision, Path(cache_dir), token, _endpoint(endpoint), engine, revision_hint)
    if label is None:
        label = f"{engine}: {repo_id}" + (f"/{names[0]}" if names else "") + (f"@{revision}" if revision else "")
    job.refuse_offline()
    task: Task | None = None
    with _quiet_hub():
        try:
            commit, files = _plan(job)
            todo = _missing(job, files)
            task = progress.task(label, total=sum(f.size or 0 for f in files) or None, unit="B")
            _transfer(job, commit, files, todo, task)
            path = _complete(job, commit)
        except KeyboardInterrupt:
            if task is not None:
                task.close(f"{label}: stopped at {_done(task)}; what was downloaded is kept: rerun with "
                           f"--force-download to resume")
            raise
        except Exception as exc:
            if task is not None:
                progress.close()  # the bar goes without a line: the error is the one line
            raise _failure(exc, job, task) from None
    task.close()
    return path


# --- what one call is about ------------------------------------------------------------------------------------------


@dataclass
class _Job:
    repo_id: str
    filenames: list[str] | None
    revision: str | None
    cache: Path | None
    token: str | None
    endpoint: str
    engine: str
    revision_hint: str | None

    @property
    def what(self) -> str:
        """What is downloaded, in words: `org/repo`, `x.gguf of org/repo (revision v1)`."""
        text = self.repo_id
        if self.filenames:
            more = f" (and {len(self.filenames) - 1} more)" if len(self.filenames) > 1 else ""
            text = f"{self.filenames[0]}{more} of {self.repo_id}"
        return text + (f" (revision {self.revision})" if self.revision else "")

    @property
    def folder(self) -> Path:
        from huggingface_hub.file_download import repo_folder_name

        assert self.cache is not None
        return self.cache / repo_folder_name(repo_id=self.repo_id, repo_type="model")

    def refuse_offline(self) -> None:
        """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, at import), refuses before anything is asked;
        also the check that huggingface_hub is there."""
        try:
            import huggingface_hub  # noqa: F401
        except ImportError:
            raise EngineError(f"Cannot download {self.what}: downloading from the Hugging Face Hub needs the "
                              f"huggingface_hub package: pip install 'jarvis-core[hub]'.", engine=self.engine) from None
        if (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in ("1", "on", "yes", "true"):
            raise EngineError(f"Cannot download {self.what}: HF_HUB_OFFLINE is set in the environment; unset it to "
                              f"download.", engine=self.engine)


def _endpoint(given: str | None) -> str:
    """`given`, else HF_ENDPOINT (read now), else huggingface_hub's own setting, else huggingface.co."""
    if given:
        return given.rstrip("/")
    try:
        from huggingface_hub import constants

        configured = getattr(constants, "ENDPOINT", None)
    except ImportError:
        configured = None
    return (os.environ.get("HF_ENDPOINT") or configured or DEFAULT_ENDPOINT).rstrip("/")


def _model_info(job: _Job) -> Any:
    from huggingface_hub import HfApi

    return HfApi(endpoint=job.endpoint, token=job.token).model_info(job.repo_id, revision=job.revision,
                                                                    files_metadata=True)


# --- planning --------------------------------------------------------------------------------------------------------


@dataclass
class _HubFile:
    path: str
    size: int | None
    etag: str = ""
    url: str = ""
    present: bool = False  # already in the snapshot
    counted: int = 0  # bytes of it the task holds


def _plan(job: _Job) -> tuple[str, list[_HubFile]]:
    """The commit the revision is at, and the files to have: present in its snapshot already, or with the ETag and
    address of their content."""
    from concurrent.futures import ThreadPoolExecutor

    info = _model_info(job)
    commit = str(info.sha)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    if job.filenames is not None:
        absent = [name for name in job.filenames if name not in sizes]
        if absent:
            at = f" at revision {job.revision}" if job.revision else ""
            raise ModelMissingError(f"{job.repo_id}{at} has no file {absent[0]} on the Hugging Face Hub at "
                                    f"{job.endpoint}.", engine=job.engine)
    files = [_HubFile(name, sizes[name]) for name in (job.filenames if job.filenames is not None else sizes)]
    snapshot = job.folder / "snapshots" / commit
    todo = []
    for f in files:
        if (snapshot / f.path).is_file():
            f.present = True
            f.counted = f.size or 0
        else:
            todo.append(f)

    def locate(f: _HubFile) -> None:
        f.etag, f.url, size = _locate(job, commit, f.path)
        f.size = size if size is not None else f.size

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(locate, todo))
    return commit, files


def _locate(job: _Job, commit: str, path: str) -> tuple[str, str, int | None]:
    """(ETag, content address, size) of one file, from the Hub's HEAD answer as huggingface_hub reads it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(job.repo_id, path, revision=commit, endpoint=job.endpoint),
                                token=job.token)
    if not meta.etag:
        raise EngineError(f"The Hugging Face Hub at {job.endpoint} sent no ETag for {path} of {job.repo_id}; check "
                          f"HF_ENDPOINT.", engine=job.engine)
    return meta.etag, meta.location, meta.size


def _missing(job: _Job, files: list[_HubFile]) -> list[_HubFile]:
    """The files whose blob is not in the cache yet (each counted with what its partial file holds); an OSError
    (ENOSPC) when the disk has not room enough for the rest."""
    import shutil

    blobs = job.folder / "blobs"
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


# --- moving the bytes ------------------------------------------------------------------------------------------------


class _Retry(Exception):
    """A failure worth another try (a dropped connection, a timeout, a 429 or 5xx answer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _Cancelled(Exception):
    """Ends a download thread after Ctrl-C or another thread's failure."""


class _BrokenOff(Exception):
    """A file whose download kept failing without progress."""

    def __init__(self, path: str, reason: str, tries: int) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.tries = tries


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
        self.show_files(done)

    def show_files(self, done: int) -> None:
        if self.files_total > 1:  # "1/1 files" says nothing
            self.task.files(done, self.files_total)

    def fail(self, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None:
                self.failure = exc
        self.cancel.set()


def _transfer(job: _Job, commit: str, files: list[_HubFile], todo: list[_HubFile], task: Task) -> None:
    """Every missing blob, DOWNLOAD_WORKERS files at once, the biggest first; the task shows bytes (with what is on
    disk already) and files."""
    import queue
    import time

    run = _Run(task, files, len(files) - len(todo))
    task.update(run.bytes)  # the starting point: what is there already is no part of this run's rate
    run.show_files(run.files_done)
    task.phase("downloading")
    waiting: queue.Queue[_HubFile] = queue.Queue()
    for f in sorted(todo, key=lambda f: -(f.size or 0)):  # the big ones first: they decide when it ends
        waiting.put(f)
    context = _Fetch(job, commit, run)
    threads = [threading.Thread(target=context.work, args=(waiting,), daemon=True, name=f"jarvis-download-{i}")
               for i in range(min(DOWNLOAD_WORKERS, len(todo)))]
    for thread in threads:
        thread.start()
    try:
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(0.2)  # with a timeout, so Ctrl-C reaches this thread
    except KeyboardInterrupt:
        run.cancel.set()
        deadline = time.monotonic() + 2.0  # a thread stuck in a read is left behind (daemon): its file stays a prefix
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        raise
    if run.failure is not None:
        raise run.failure


class _Fetch:
    """What the download threads share: the job, the commit, and the run."""

    def __init__(self, job: _Job, commit: str, run: _Run) -> None:
        from huggingface_hub.utils import build_hf_headers

        self.job = job
        self.commit = commit
        self.folder = job.folder
        assert job.cache is not None
        self.locks = job.cache / ".locks" / self.folder.name
        self.run = run
        self.headers = {**build_hf_headers(token=job.token), "Accept-Encoding": "identity"}

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
                if self.fetch(client, f, partial):
                    self.verify(f, partial)
                os.replace(partial, blob)
        self.run.moved(f, (f.size or _size(blob)) - f.counted)

    def fetch(self, client: Any, f: _HubFile, partial: Path) -> bool:
        """Bring `partial` to the whole file, continuing what is there; True when bytes already there were
        continued (so the file is checked against its sha256)."""
        failures = 0
        resumed = False
        while True:
            if self.run.cancel.is_set():
                raise _Cancelled
            have = _size(partial)
            if f.size is not None and have > f.size:  # not this file's beginning: start again
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
                    raise _BrokenOff(f.path, retry.reason, failures) from None
                if self.run.cancel.wait(RETRY_DELAYS[failures - 1]):
                    raise _Cancelled from None
                try:  # a fresh address: the CDN's signed links expire
                    f.url = _locate(self.job, self.commit, f.path)[1]
                except Exception:  # noqa: BLE001  (the Hub's HEAD fails too: the old address is tried again)
                    pass

    def get(self, client: Any, f: _HubFile, partial: Path, have: int) -> None:
        """One GET of the file's content from byte `have` on, written to `partial` as it arrives."""
        import httpx

        headers = dict(self.headers)
        if _origin(f.url) != _origin(self.job.endpoint):
            headers.pop("authorization", None)  # never the token to the CDN, as huggingface_hub does
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
                    raise _http_failure(self.job, f.path, response)
                if have and not (status == 206 and (response.headers.get("Content-Range") or "")
                                 .startswith(f"bytes {have}-")):
                    have = 0  # the server sent the whole file: the partial file starts again
                    self.run.moved(f, -f.counted)
                with open(partial, "ab" if have else "wb", buffering=0) as out:
                    for chunk in response.iter_bytes():
                        if self.run.cancel.is_set():
                            raise _Cancelled
                        _write_all(out, chunk)
                        self.run.moved(f, len(chunk))
        except httpx.TransportError as exc:
            raise _Retry(f"{type(exc).__name__}: {(str(exc) or 'connection lost').splitlines()[0]}") from None

    def verify(self, f: _HubFile, partial: Path) -> None:
        """A resumed LFS file must hash to its ETag (its sha256): a mismatch removes it, to be fetched again."""
        if not _SHA256.fullmatch(f.etag):
            return
        self.run.task.phase("verifying sha256")
        digest = hashlib.sha256()
        with open(partial, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        if digest.hexdigest() != f.etag:
            partial.unlink(missing_ok=True)
            raise EngineError(f"{f.path} of {self.job.repo_id} did not match its checksum (sha256) after resuming and "
                              f"was removed; rerun with --force-download to fetch it again.", engine=self.job.engine)
        with self.run.lock:
            others = self.run.files_done + 1 < self.run.files_total
        if others:
            self.run.task.phase("downloading")


def _complete(job: _Job, commit: str) -> Path:
    """The snapshot's links (and tree listing) by huggingface_hub, every blob being in place, then the ref."""
    from huggingface_hub import hf_hub_download, snapshot_download

    assert job.cache is not None
    if job.filenames is None:
        path = Path(snapshot_download(job.repo_id, revision=commit, cache_dir=str(job.cache), token=job.token,
                                      endpoint=job.endpoint, tqdm_class=_silent_tqdm()))
    else:
        for name in job.filenames:
            hf_hub_download(job.repo_id, name, revision=commit, cache_dir=str(job.cache), token=job.token,
                            endpoint=job.endpoint)
        path = job.folder / "snapshots" / commit
    ref = job.revision or "main"
    if ref != commit:  # a branch or tag: remembered as huggingface_hub does, so an offline look-up finds the commit
        target = job.folder / "refs" / ref
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

    # Imported before the level is lowered: huggingface_hub sets its logger's level (WARNING, or HF_HUB_VERBOSITY)
    # and adds a stderr handler when its logging module is first imported, which its lazy imports would otherwise do
    # inside the block, bringing its log lines back.
    import huggingface_hub.file_download  # noqa: F401
    import huggingface_hub.hf_api  # noqa: F401
    import huggingface_hub.utils.logging  # noqa: F401
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


# --- one line for what went wrong ------------------------------------------------------------------------------------


def _done(task: Task) -> str:
    if task.total:
        return f"{human_bytes(task.completed)} of {human_bytes(task.total)}"
    return human_bytes(task.completed)


def _gated(job: _Job, status: int | None) -> ModelMissingError:
    page = f"{job.endpoint}/{job.repo_id}"
    if status == 403:
        return ModelMissingError(f"{job.repo_id} is a gated model and the Hugging Face token in use (HF_TOKEN, or the "
                                 f"one `hf auth login` saved) has no access to it: accept its terms at {page} with "
                                 f"that account, or use a token of an account that has.", engine=job.engine)
    return ModelMissingError(f"{job.repo_id} is a gated model: accept its terms at {page}, then set HF_TOKEN to a "
                             f"token of that account (or run `hf auth login`) and rerun with --force-download.",
                             engine=job.engine)


def _http_failure(job: _Job, path: str, response: Any) -> Exception:
    if response.status_code in (401, 403) and response.headers.get("X-Error-Code") == "GatedRepo":
        return _gated(job, response.status_code)
    why = response.headers.get("X-Error-Message") or response.reason_phrase or ""
    return EngineError(f"Downloading {path} of {job.repo_id} failed: HTTP {response.status_code} {why}".rstrip() + ".",
                       engine=job.engine)


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _network(exc: BaseException) -> bool:
    """A connection failure of one of the HTTP stacks huggingface_hub versions use."""
    return any(c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")
               for c in type(exc).__mro__) and _status(exc) is None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _failure(exc: BaseException, job: _Job, task: Task | None) -> BaseException:
    """One line for what stopped a listing or a download."""
    from huggingface_hub import errors as hf

    if isinstance(exc, JarvisError):
        return exc
    engine, what, hub = job.engine, job.what, job.endpoint
    kept = (f": the {_done(task)} downloaded so far are kept and the download resumes from there"
            if task is not None and task.completed else "")
    again = f"; rerun with --force-download{kept or ' to try again'}."
    status = _status(exc)
    if isinstance(exc, hf.GatedRepoError):
        return _gated(job, status)
    if isinstance(exc, hf.RevisionNotFoundError):
        return ModelMissingError(f"{job.repo_id} has no revision '{job.revision}' on the Hugging Face Hub at {hub}; "
                                 f"{job.revision_hint or 'check the branch, tag or commit name'}.", engine=engine)
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelMissingError(f"{job.repo_id} does not exist on the Hugging Face Hub at {hub}, or it is private: "
                                 f"check the name, or set HF_TOKEN (or run `hf auth login`) for an account that can "
                                 f"see it.", engine=engine)
    if isinstance(exc, hf.EntryNotFoundError) and not isinstance(exc, hf.LocalEntryNotFoundError):
        return ModelMissingError(f"{what} is not on the Hugging Face Hub at {hub} (HTTP 404).", engine=engine)
    if isinstance(exc, getattr(hf, "OfflineModeIsEnabled", ())):
        return EngineError(f"Cannot download {what}: HF_HUB_OFFLINE is set in the environment; unset it to "
                           f"download.", engine=engine)
    if isinstance(exc, _BrokenOff):
        which = f"{exc.path} failed" if not job.filenames or len(job.filenames) > 1 else "it failed"
        return EngineError(f"Downloading {what} broke off: {which} {exc.tries} times in a row ({exc.reason})"
                           f"{again}", engine=engine)
    if isinstance(exc, hf.HfHubHTTPError):
        if status == 401:
            return EngineError(f"The Hugging Face Hub rejected the token (HF_TOKEN, or the one `hf auth login` "
                               f"saved): it is invalid or has expired; create a new one at {hub}/settings/tokens.",
                               engine=engine)
        if kept:
            return EngineError(f"Downloading {what} broke off: the Hugging Face Hub answered HTTP {status}{again}",
                               engine=engine)
        headers = getattr(getattr(exc, "response", None), "headers", None) or {}
        why = headers.get("X-Error-Message") or _first_line(exc)
        return EngineError(f"Downloading {what} failed: the Hugging Face Hub at {hub} answered HTTP {status}: {why}",
                           engine=engine)
    if _network(exc) or isinstance(exc, (hf.LocalEntryNotFoundError, ConnectionError, TimeoutError)):
        if kept:
            return EngineError(f"Downloading {what} broke off ({_first_line(exc)}){again}", engine=engine)
        return EngineError(f"Cannot download {what}: the Hugging Face Hub at {hub} cannot be reached "
                           f"({_first_line(exc)}); check the network, the proxy settings or HF_ENDPOINT.",
                           engine=engine)
    if isinstance(exc, OSError):
        into = f" into {job.cache}" if job.cache is not None else ""
        if exc.errno == errno.EFBIG:
            return EngineError(f"Writing {what}{into} stopped: {exc.strerror} (a file-size limit: "
                               f"`ulimit -f`, or the largest file the filesystem takes); once it allows the file, "
                               f"rerun with --force-download{kept}.", engine=engine)
        if exc.errno in _DISK_FULL:
            return EngineError(f"Not enough disk space for {what} in {job.cache} ({exc.strerror}); free some space "
                               f"and rerun with --force-download{kept}.", engine=engine)
        return EngineError(f"Downloading {what}{into} failed: {exc}{kept}.", engine=engine)
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
