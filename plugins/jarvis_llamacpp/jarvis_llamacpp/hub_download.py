"""Download a GGUF file (or the parts of a split one) from the Hugging Face Hub into the hub cache, resumably.

huggingface_hub (1.x and later) downloads a file under a temporary name of its own and deletes it when the download
fails, so a connection that drops for good (or Ctrl-C) would start the next try from zero; it also reads 10 MiB at a
time, which is as fine as its progress gets. So the work is shared, as the vLLM plugin shares it:
  1. huggingface_hub asks the Hub: `HfApi.model_info` (the commit and the files, to pick the quantization) and
     `get_hf_file_metadata` (each file's ETag, size and content address: the CDN for LFS files);
  2. Jarvis moves the bytes into `blobs/<etag>.incomplete`, a file kept between tries, continued with an HTTP Range
     request after a dropped connection (in the same pull, and by the next pull after one that gave up or was
     stopped), then renames it to `blobs/<etag>`, the blob huggingface_hub would have written, under
     huggingface_hub's own lock for it (a concurrent `hf download` waits instead of mixing bytes in);
  3. `hf_hub_download` finds the blob in place and writes the rest of the cache (the snapshot's link); Jarvis records
     the branch's commit in `refs/`, so an offline look-up finds it.
The bytes go to one task of the core's progress display (bytes, rate, time left; the parts of a split file as
files); huggingface_hub's own log lines, warnings and progress bars are silenced meanwhile.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import shutil
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

from jarvis_core.api import (
    Availability,
    EngineError,
    JarvisError,
    ModelMissingError,
    Progress,
    Task,
    human_bytes,
)

from .hub import PARTIAL, HubRef, NoMatch, choose, hub_cache_dir, lookup, repo_folder

ENGINE = "llamacpp"
DEFAULT_ENDPOINT = "https://huggingface.co"
RETRY_DELAYS = (1.0, 2.0, 4.0)
"""Seconds before each new try of a file after a dropped connection, a timeout or a 429/5xx answer; the count starts
again whenever bytes arrive."""
READ_TIMEOUT = 60.0
_DISK_FULL = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def endpoint() -> str:
    """The Hub downloads come from: HF_ENDPOINT (read now), else huggingface_hub's own setting."""
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or getattr(constants, "ENDPOINT", None) or DEFAULT_ENDPOINT).rstrip("/")


def offline() -> bool:
    return (os.environ.get("HF_HUB_OFFLINE") or "").strip().lower() in ("1", "on", "yes", "true")


@dataclass
class _File:
    path: str
    size: int
    commit: str
    etag: str = ""
    url: str = ""
    done: bool = False  # its blob is in the cache already


def pull(ref: HubRef, progress: Progress) -> Availability:
    """Put `ref` into the hub cache (a no-op when it is there) and say where it is. Raises ModelMissingError (no such
    repo, revision or file; gated; no file matches) or EngineError (unreachable, broken off, disk full), one line
    each; KeyboardInterrupt goes through, and what was downloaded is kept for the next try."""
    cache = hub_cache_dir()
    found = lookup(ref, cache)
    if found.path is None:
        if offline():
            raise EngineError(f"Cannot download {ref.what}: HF_HUB_OFFLINE is set in the environment; unset it to "
                              f"download.", engine=ENGINE)
        _download(ref, cache, progress)
        found = lookup(ref, cache)
        if found.path is None:
            raise ModelMissingError(f"After downloading, {found.detail}.", engine=ENGINE)
    return Availability(present=True, detail=found.detail, revision=found.revision)


def _download(ref: HubRef, cache: Path, progress: Progress) -> None:
    hub = endpoint()
    task: Task | None = None
    with _quiet_hub():
        try:
            commit, files = _plan(ref, hub)
            task = progress.task(f"llamacpp: {ref.repo_id}/{files[0].path}", total=sum(f.size for f in files) or None)
            _transfer(ref, cache, files, task, hub)
            _complete(ref, cache, commit, files, hub)
        except KeyboardInterrupt:
            if task is not None:
                task.close(f"{task.description}: stopped at {_done(task)}; what was downloaded is kept: rerun with "
                           f"--force-download to resume")
            raise
        except Exception as exc:
            if task is not None:
                progress.close()  # the bar goes without a line: the error is the one line
            raise _failure(exc, ref, hub, cache, task) from None
    task.close()


def _plan(ref: HubRef, hub: str) -> tuple[str, list[_File]]:
    """The commit the revision is at, and the file(s) to download, with their ETag, size and content address."""
    from huggingface_hub import HfApi

    info = HfApi(endpoint=hub).model_info(ref.repo_id, revision=ref.revision, files_metadata=True)
    commit = str(info.sha)
    sizes = {s.rfilename: s.size for s in info.siblings or []}
    names = choose(ref, sizes, where=f"{ref.repo_id}" + (f" at revision {ref.revision}" if ref.revision else ""))
    files = []
    for name in names:
        etag, url, size = _locate(ref, name, commit, hub)
        files.append(_File(name, int(size if size is not None else sizes.get(name) or 0), commit, etag, url))
    return commit, files


def _transfer(ref: HubRef, cache: Path, files: list[_File], task: Task, hub: str) -> None:
    """Every blob not in the cache yet, one after the other, continuing what an earlier try left."""
    from huggingface_hub.utils import WeakFileLock

    folder = repo_folder(cache, ref.repo_id)
    blobs = folder / "blobs"
    locks = cache / ".locks" / folder.name
    blobs.mkdir(parents=True, exist_ok=True)
    locks.mkdir(parents=True, exist_ok=True)
    have = {f.path: f.size if (blobs / f.etag).is_file() else _size(blobs / (f.etag + PARTIAL)) for f in files}
    for f in files:
        f.done = (blobs / f.etag).is_file()
    needed = sum(max(0, f.size - have[f.path]) for f in files if not f.done)
    free = shutil.disk_usage(blobs).free
    if free < needed:
        raise OSError(errno.ENOSPC, f"{human_bytes(needed)} are needed, {human_bytes(free)} are free")
    task.update(sum(have.values()))  # the starting point: what is there already is no part of this run's rate
    several = len(files) > 1
    if several:
        task.files(sum(f.done for f in files), len(files))
    for index, f in enumerate(files):
        if f.done:
            continue
        others = sum(have[g.path] for g in files if g is not f)  # the other parts: done, or partly there
        task.phase(f"downloading part {index + 1}/{len(files)}" if several else "downloading")
        with WeakFileLock(locks / f"{f.etag}.lock"):
            blob = blobs / f.etag
            if not blob.is_file():  # else another process finished it while this one waited for the lock
                partial = blobs / (f.etag + PARTIAL)
                resumed = _fetch(ref, f, partial, lambda n, base=others: task.update(base + n), hub)
                if resumed:
                    task.phase("verifying sha256")
                    _verify(ref, f, partial)
                os.replace(partial, blob)
        have[f.path] = f.size
        f.done = True
        task.update(sum(have.values()))
        if several:
            task.files(sum(g.done for g in files), len(files))


def _fetch(ref: HubRef, f: _File, partial: Path, report: Callable[[int], None], hub: str) -> bool:
    """Bring `partial` to the whole file, continuing what is there with a Range request, and again after a dropped
    connection, a timeout or a 429/5xx answer (RETRY_DELAYS apart; the count starts again whenever bytes arrive).
    True when bytes that were there already were continued."""
    import time

    import httpx

    failures = 0
    resumed = False
    with httpx.Client(follow_redirects=True, trust_env=True,
                      timeout=httpx.Timeout(READ_TIMEOUT, connect=15.0)) as client:
        while True:
            have = _size(partial)
            if have > f.size:  # not this file's beginning: start again
                partial.unlink()
                have = 0
            report(have)
            if have == f.size:
                return resumed
            resumed = resumed or have > 0
            try:
                _get(client, ref, f, partial, have, report, hub)
                if _size(partial) == f.size:
                    return resumed
                raise _Retry(f"the answer ended at {_size(partial)} of {f.size} bytes")
            except _Retry as retry:
                failures = 1 if _size(partial) > have else failures + 1
                if failures > len(RETRY_DELAYS):
                    raise _BrokenOff(f.path, retry.reason, failures) from None
                time.sleep(RETRY_DELAYS[failures - 1])
                try:  # a fresh address: the CDN's signed links expire
                    f.url = _locate(ref, f.path, f.commit, hub)[1]
                except Exception:  # noqa: BLE001  (the Hub's HEAD fails too: the old address is tried again)
                    pass


def _get(client: Any, ref: HubRef, f: _File, partial: Path, have: int, report: Callable[[int], None],
         hub: str) -> None:
    """One GET of the file's content from byte `have` on, written to `partial` as it arrives."""
    import httpx
    from huggingface_hub.utils import build_hf_headers

    headers = {**build_hf_headers(), "Accept-Encoding": "identity"}
    if _origin(f.url) != _origin(hub):  # never the token to the CDN, as huggingface_hub does
        headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        with client.stream("GET", f.url, headers=headers) as response:
            status = response.status_code
            if status == 416 and have >= f.size:
                return
            if status == 429 or status >= 500 or status == 416:
                if status == 416:
                    partial.unlink(missing_ok=True)
                raise _Retry(f"the server answered HTTP {status} {response.reason_phrase}".rstrip())
            if status >= 400:
                raise _http_failure(ref, f.path, response, hub)
            if have and not (status == 206 and (response.headers.get("Content-Range") or "")
                             .startswith(f"bytes {have}-")):
                have = 0  # the server sent the whole file: the partial file starts again
            written = have
            with open(partial, "ab" if have else "wb") as out:
                for chunk in response.iter_bytes():
                    out.write(chunk)
                    written += len(chunk)
                    report(written)
    except httpx.TransportError as exc:
        raise _Retry(f"{type(exc).__name__}: {(str(exc) or 'connection lost').splitlines()[0]}") from None


def _locate(ref: HubRef, path: str, commit: str, hub: str) -> tuple[str, str, int | None]:
    """(ETag, content address, size) of one file, from the Hub's HEAD answer as huggingface_hub reads it."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url

    meta = get_hf_file_metadata(hf_hub_url(ref.repo_id, path, revision=commit, endpoint=hub))
    if not meta.etag:
        raise EngineError(f"The Hugging Face Hub at {hub} sent no ETag for {path} of {ref.repo_id}; check "
                          f"HF_ENDPOINT.", engine=ENGINE)
    return meta.etag, meta.location, meta.size


class _Retry(Exception):
    """A failure worth another try (a dropped connection, a timeout, a 429 or 5xx answer)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _BrokenOff(Exception):
    """A file whose download kept failing without progress."""

    def __init__(self, path: str, reason: str, tries: int) -> None:
        super().__init__(reason)
        self.path = path
        self.reason = reason
        self.tries = tries


def _http_failure(ref: HubRef, path: str, response: Any, hub: str) -> Exception:
    if response.status_code in (401, 403) and response.headers.get("X-Error-Code") == "GatedRepo":
        return _gated(ref, hub, response.status_code)
    why = response.headers.get("X-Error-Message") or response.reason_phrase or ""
    return EngineError(f"Downloading {path} of {ref.repo_id} failed: HTTP {response.status_code} {why}".rstrip()
                       + ".", engine=ENGINE)


def _verify(ref: HubRef, f: _File, partial: Path) -> None:
    """A resumed LFS file must hash to its ETag (its sha256): a mismatch removes it, to be fetched again."""
    if not re.fullmatch(r"[0-9a-f]{64}", f.etag):
        return
    digest = hashlib.sha256()
    with open(partial, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != f.etag:
        partial.unlink(missing_ok=True)
        raise EngineError(f"{f.path} of {ref.repo_id} did not match its sha256 after resuming and was removed; "
                          f"rerun with --force-download to fetch it again.", engine=ENGINE)


def _complete(ref: HubRef, cache: Path, commit: str, files: list[_File], hub: str) -> None:
    """The snapshot's links by huggingface_hub (every blob is in place, nothing is downloaded), then the ref."""
    from huggingface_hub import hf_hub_download

    for f in files:
        hf_hub_download(ref.repo_id, f.path, revision=commit, cache_dir=str(cache), endpoint=hub)
    name = ref.revision or "main"
    if name != commit:  # a branch or tag: remembered as huggingface_hub does, so an offline look-up finds the commit
        target = repo_folder(cache, ref.repo_id) / "refs" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        scratch.write_text(commit)
        os.replace(scratch, target)


@contextmanager
def _quiet_hub() -> Iterator[None]:
    """huggingface_hub's log lines ("Trying to resume download..."), warnings and progress bars, off for a while."""
    import logging
    import warnings

    # Imported first: huggingface_hub sets its logger's level (to WARNING) when its logging module is first imported,
    # which a lazy import inside the block would do, and its warnings would be back.
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


# --- one line for what went wrong -----------------------------------------------------------------------------------


def _done(task: Task) -> str:
    if task.total:
        return f"{human_bytes(task.completed)} of {human_bytes(task.total)}"
    return human_bytes(task.completed)


def _status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _network(exc: BaseException) -> bool:
    """A connection failure of one of the HTTP stacks huggingface_hub versions use."""
    return any(c.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "httpcore2", "requests", "urllib3")
               for c in type(exc).__mro__) and _status(exc) is None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _gated(ref: HubRef, hub: str, status: int | None) -> ModelMissingError:
    page = f"{hub}/{ref.repo_id}"
    if status == 403:
        return ModelMissingError(f"{ref.repo_id} is a gated model and the Hugging Face token in use (HF_TOKEN, or the "
                                 f"one `hf auth login` saved) has no access to it: accept its terms at {page} with "
                                 f"that account, or use a token of an account that has.", engine=ENGINE)
    return ModelMissingError(f"{ref.repo_id} is a gated model: accept its terms at {page}, then set HF_TOKEN to a "
                             f"token of that account (or run `hf auth login`) and rerun with --force-download.",
                             engine=ENGINE)


def _failure(exc: BaseException, ref: HubRef, hub: str, cache: Path, task: Task | None) -> BaseException:
    from huggingface_hub import errors as hf

    if isinstance(exc, JarvisError):
        return exc
    if isinstance(exc, NoMatch):
        return ModelMissingError(f"{exc}.", engine=ENGINE)
    kept = (f"; the {_done(task)} downloaded so far are kept and the next --force-download resumes from there"
            if task is not None and task.completed else "")
    status = _status(exc)
    if isinstance(exc, hf.GatedRepoError):
        return _gated(ref, hub, status)
    if isinstance(exc, hf.RevisionNotFoundError):
        return ModelMissingError(f"{ref.repo_id} has no revision '{ref.revision}' on the Hugging Face Hub at {hub}; "
                                 f"check what follows '@' in the model ID.", engine=ENGINE)
    if isinstance(exc, hf.RepositoryNotFoundError):
        return ModelMissingError(f"{ref.repo_id} does not exist on the Hugging Face Hub at {hub}, or it is private: "
                                 f"check the name, or set HF_TOKEN (or run `hf auth login`) for an account that can "
                                 f"see it.", engine=ENGINE)
    if isinstance(exc, hf.EntryNotFoundError) and not isinstance(exc, hf.LocalEntryNotFoundError):
        return ModelMissingError(f"{ref.what} is not on the Hugging Face Hub at {hub} (HTTP 404).", engine=ENGINE)
    if isinstance(exc, getattr(hf, "OfflineModeIsEnabled", ())):
        return EngineError(f"Cannot download {ref.what}: HF_HUB_OFFLINE is set; unset it to download.", engine=ENGINE)
    if isinstance(exc, hf.HfHubHTTPError):
        if status == 401:
            return EngineError(f"The Hugging Face Hub rejected the token (HF_TOKEN, or the one `hf auth login` "
                               f"saved): it is invalid or has expired; create a new one at {hub}/settings/tokens.",
                               engine=ENGINE)
        if task is not None and task.completed:
            return EngineError(f"Downloading {ref.what} broke off: the server answered HTTP {status}{kept}.",
                               engine=ENGINE)
        return EngineError(f"Downloading {ref.what} failed: the Hugging Face Hub at {hub} answered HTTP {status}: "
                           f"{_first_line(exc)}", engine=ENGINE)
    if isinstance(exc, _BrokenOff):
        return EngineError(f"Downloading {ref.what} broke off: {exc.path} failed {exc.tries} times in a row "
                           f"({exc.reason}){kept or '; rerun with --force-download to try again'}.", engine=ENGINE)
    if isinstance(exc, OSError) and exc.errno in _DISK_FULL:
        return EngineError(f"Not enough disk space for {ref.what} in {cache} ({exc.strerror}); free some space and "
                           f"rerun with --force-download{kept}.", engine=ENGINE)
    if _network(exc) or isinstance(exc, (hf.LocalEntryNotFoundError, ConnectionError, TimeoutError)) or (
            isinstance(exc, OSError) and "Consistency check failed" in str(exc)):
        if task is not None and task.completed:
            return EngineError(f"Downloading {ref.what} broke off ({_first_line(exc)}){kept}.", engine=ENGINE)
        return EngineError(f"Cannot download {ref.what}: the Hugging Face Hub at {hub} cannot be reached "
                           f"({_first_line(exc)}); check the network, the proxy settings or HF_ENDPOINT.",
                           engine=ENGINE)
    if isinstance(exc, OSError):
        return EngineError(f"Downloading {ref.what} into {cache} failed: {exc}{kept}.", engine=ENGINE)
    return exc


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _origin(url: str) -> tuple[str, str, int]:
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(parts.scheme, 0)
