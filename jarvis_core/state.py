"""The state file: what Jarvis started (processes, containers, loaded models), so that it, and only it, can be
cleaned up later, even after a crash. Lives in the user state folder (platformdirs), or `JARVIS_STATE_DIR`.

A record is a small JSON object: `id`, `engine`, `kind` (`process`, `container`, `model`, or a plugin's own kind),
`run_id`, `started_at`, plus the fields its plugin needs to find the thing again (`pid` and `create_time` for a
process, so a reused PID is never mistaken for ours; `container` for a container).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import psutil

from .processes import same_create_time


#: Run IDs of loadouts start with this: they outlive the `jarvis loadout up` that recorded them, so they are never
#: taken for a crashed run's leftovers.
LOADOUT_RUN_PREFIX = "loadout:"

#: Keys every record has, set by `StateStore.add`; a plugin's own fields must use other names.
RESERVED_KEYS = frozenset({"id", "engine", "kind", "run_id", "started_at", "owner_pid", "owner_create_time"})


def _create_time(pid: Any) -> float | None:
    """create_time of a live process; None when it is gone (a zombie, never reaped, counts as gone)."""
    try:
        proc = psutil.Process(int(pid))
        return None if proc.status() == psutil.STATUS_ZOMBIE else proc.create_time()
    except (psutil.Error, TypeError, ValueError):
        return None


def default_state_dir() -> Path:
    override = os.environ.get("JARVIS_STATE_DIR")
    if override:
        return Path(override)
    from platformdirs import user_state_path

    return user_state_path("jarvis", appauthor=False)


class StateStore:
    """Records in `<dir>/state.json`, each write atomic (write a temp file, then replace).

    A store may be scoped to some run IDs: it then sees only their records, so a plugin's `stop` (which works on
    "every record of my engine") never touches what another run or a loadout started.
    """

    def __init__(self, directory: Path | None = None, *, run_ids: set[str] | None = None) -> None:
        self.dir = Path(directory) if directory is not None else default_state_dir()
        self.path = self.dir / "state.json"
        self.logs_dir = self.dir / "logs"
        self.run_ids = run_ids

    def scoped(self, run_ids: set[str]) -> StateStore:
        return StateStore(self.dir, run_ids=set(run_ids))

    def records(self, engine: str | None = None, kind: str | None = None, *,
                any_run: bool = False) -> list[dict[str, Any]]:
        """The records in scope; `any_run=True` also shows other runs' (to tell "another Jarvis run started it"
        from "Jarvis did not start it"), which a plugin must still leave alone."""
        return [r for r in self._read() if (engine is None or r.get("engine") == engine)
                and (kind is None or r.get("kind") == kind)
                and (any_run or self.run_ids is None or r.get("run_id") in self.run_ids)]

    def add(self, engine: str, kind: str, *, run_id: str = "", **fields: Any) -> dict[str, Any]:
        """Record something Jarvis started. The record also names the Jarvis process that started it, so a later
        run can tell the leftovers of a crashed run (owner gone) from the work of a live one."""
        clash = RESERVED_KEYS & fields.keys()
        if clash:
            raise ValueError(f"state record fields {sorted(clash)} are reserved; use other names")
        if not run_id and self.run_ids is not None and len(self.run_ids) == 1:
            run_id = next(iter(self.run_ids))
        owner = os.getpid()
        record = {"id": uuid.uuid4().hex[:12], "engine": engine, "kind": kind, "run_id": run_id,
                  "started_at": time.time(), "owner_pid": owner, "owner_create_time": _create_time(owner), **fields}
        with self._update() as records:
            records.append(record)
        return record

    def remove(self, record_id: str) -> None:
        with self._update() as records:
            records[:] = [r for r in records if r.get("id") != record_id]

    def orphaned_run_ids(self) -> set[str]:
        """Run IDs whose Jarvis process is gone (a crash, a kill), except persistent ones such as loadouts."""
        orphaned = set()
        for record in self._read():
            run_id = record.get("run_id", "")
            if run_id.startswith(LOADOUT_RUN_PREFIX):
                continue
            if not same_create_time(_create_time(record.get("owner_pid")), record.get("owner_create_time")):
                orphaned.add(run_id)
        return orphaned

    def log_path(self, name: str) -> Path:
        """A log file for something Jarvis starts (`ollama-serve.log`), in the state folder."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return self.logs_dir / name

    def _read(self) -> list[dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError):
            # A corrupt state file must not stop Jarvis; keep it aside for inspection and start afresh.
            self.path.replace(self.path.with_suffix(f".corrupt-{int(time.time())}"))
            return []
        records = data.get("records") if isinstance(data, dict) else None
        return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []

    @contextmanager
    def _update(self) -> Iterator[list[dict[str, Any]]]:
        """Read-modify-write under a lock, so a `jarvis run` and a `jarvis loadout up` side by side never lose each
        other's records."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / "state.lock"):
            records = self._read()
            yield records
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"version": 1, "records": records}, fh, indent=2)
                _replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


@contextmanager
def _locked(lock: Path, timeout: float = 10.0, stale_after: float = 60.0) -> Iterator[None]:
    """A lock file created exclusively (works the same on Windows and POSIX). A lock left by a crashed process is
    taken over once older than `stale_after` seconds; nobody holds it for more than a file write."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            try:
                if time.time() - lock.stat().st_mtime > stale_after:
                    lock.unlink(missing_ok=True)
                    continue
            except FileNotFoundError:
                continue
            if time.monotonic() >= deadline:
                raise OSError(f"the state file is locked by another Jarvis ({lock}); if none runs, delete that file")
            time.sleep(0.01)
    try:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        yield
    finally:
        lock.unlink(missing_ok=True)


def _replace(src: str, dst: Path) -> None:
    # On Windows a reader holding the file open makes the replace fail for a moment: retry briefly.
    for attempt in range(50):
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if attempt == 49:
                raise
            time.sleep(0.02)
