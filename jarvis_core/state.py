"""The state file: what Jarvis started (processes, containers, loaded models), so that it, and only it, can be
cleaned up later, even after a crash. Lives in the user state folder (platformdirs), or `JARVIS_STATE_DIR`.

A record (`Record`) names what was started: `engine`, `kind` (`process`, `container`, `model`, or a plugin's own kind),
`run_id`, who started it (`owner_pid`, `owner_create_time`), and how to find it again: `pid` and `create_time` for a
process (so a reused PID is never mistaken for ours), `address`, `log`, `command`, plus the plugin's own fields in
`data` (a container's name, a model's alias). Records are typed here and become JSON only in the file.

The file also keeps GPU-memory baselines per run ID (what the GPU used before a loadout started anything), which
are Jarvis's own bookkeeping, not any engine's.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

from .processes import same_create_time


#: Run IDs of loadouts start with this: they outlive the `jarvis loadout up` that recorded them, so they are never
#: taken for a crashed run's leftovers.
LOADOUT_RUN_PREFIX = "loadout:"

@dataclass(frozen=True)
class Record:
    """One thing Jarvis started, as kept in the state file."""

    id: str
    engine: str
    kind: str
    run_id: str = ""
    started_at: float = 0.0
    owner_pid: int | None = None
    """The Jarvis process that started it: a record whose owner is gone is a crashed run's leftover."""
    owner_create_time: float | None = None
    pid: int | None = None
    create_time: float | None = None
    address: str | None = None
    log: str | None = None
    command: tuple[str, ...] | None = None
    data: Mapping[str, Any] = field(default_factory=dict)
    """The plugin's own fields (JSON values)."""

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items() if k != "data" and v is not None}
        if self.command is not None:
            out["command"] = list(self.command)
        return {**out, "data": dict(self.data)}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Record | None:
        """A record from the file, or None when it is malformed (it is then dropped, never trusted)."""
        if not isinstance(raw.get("id"), str) or not isinstance(raw.get("engine"), str) or \
                not isinstance(raw.get("kind"), str):
            return None
        known = {f.name for f in fields(cls)} - {"data"}
        values: dict[str, Any] = {k: raw[k] for k in known if k in raw}
        data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
        data = {**{k: v for k, v in raw.items() if k not in known and k != "data"}, **data}  # files of version 1
        try:
            record = cls(**values, data=data)
        except TypeError:
            return None
        checks = ((record.pid, int), (record.owner_pid, int), (record.create_time, (int, float)),
                  (record.owner_create_time, (int, float)), (record.run_id, str), (record.address, str),
                  (record.log, str))
        if any(value is not None and (not isinstance(value, kind) or isinstance(value, bool)) for value, kind in checks):
            return None
        if record.command is not None:
            if not isinstance(record.command, (list, tuple)):
                return None
            record = replace(record, command=tuple(str(part) for part in record.command))
        return record


def _create_time(pid: Any) -> float | None:
    """create_time of a live process; None when it is gone (a zombie, never reaped, counts as gone)."""
    import psutil

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
                any_run: bool = False) -> list[Record]:
        """The records in scope; `any_run=True` also shows other runs' (to tell "another Jarvis run started it"
        from "Jarvis did not start it"), which a plugin must still leave alone."""
        return [r for r in self._read().records if (engine is None or r.engine == engine)
                and (kind is None or r.kind == kind)
                and (any_run or self.run_ids is None or r.run_id in self.run_ids)]

    def add(self, engine: str, kind: str, *, run_id: str = "", pid: int | None = None,
            create_time: float | None = None, address: str | None = None, log: str | Path | None = None,
            command: list[str] | tuple[str, ...] | None = None, **data: Any) -> Record:
        """Record something Jarvis started; keyword arguments beyond the typed fields go to `data`. The record also
        names the Jarvis process that started it, so a later run can tell the leftovers of a crashed run (owner
        gone) from the work of a live one."""
        if not run_id and self.run_ids is not None and len(self.run_ids) == 1:
            run_id = next(iter(self.run_ids))
        owner = os.getpid()
        record = Record(id=uuid.uuid4().hex[:12], engine=engine, kind=kind, run_id=run_id, started_at=time.time(),
                        owner_pid=owner, owner_create_time=_create_time(owner), pid=pid, create_time=create_time,
                        address=address, log=str(log) if log is not None else None,
                        command=tuple(command) if command is not None else None, data=dict(data))
        with self._update() as content:
            content.records.append(record)
        return record

    def remove(self, record_id: str) -> None:
        with self._update() as content:
            content.records[:] = [r for r in content.records if r.id != record_id]

    def orphaned_run_ids(self) -> set[str]:
        """Run IDs whose Jarvis process is gone (a crash, a kill), except persistent ones such as loadouts."""
        orphaned = set()
        for record in self._read().records:
            if record.run_id.startswith(LOADOUT_RUN_PREFIX):
                continue
            if not same_create_time(_create_time(record.owner_pid), record.owner_create_time):
                orphaned.add(record.run_id)
        return orphaned

    # --- GPU baselines ----------------------------------------------------------------------------------------

    def set_baseline(self, run_id: str, used_mib: int) -> None:
        """Remember the GPU memory used before `run_id` started anything (kept only if none is set yet)."""
        with self._update() as content:
            content.baselines.setdefault(run_id, int(used_mib))

    def baseline(self, run_id: str) -> int | None:
        return self._read().baselines.get(run_id)

    def clear_baseline(self, run_id: str) -> None:
        with self._update() as content:
            content.baselines.pop(run_id, None)

    def log_path(self, name: str) -> Path:
        """A log file for something Jarvis starts (`ollama-serve.log`), in the state folder."""
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        return self.logs_dir / name

    def _read(self) -> _Content:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return _Content()
        except (OSError, ValueError):
            # A corrupt state file must not stop Jarvis; keep it aside for inspection and start afresh.
            self.path.replace(self.path.with_suffix(f".corrupt-{int(time.time())}"))
            return _Content()
        if not isinstance(data, dict):
            return _Content()
        raw = data.get("records")
        records = [Record.from_json(r) for r in raw if isinstance(r, dict)] if isinstance(raw, list) else []
        baselines = data.get("baselines")
        return _Content([r for r in records if r is not None],
                        {k: v for k, v in baselines.items() if isinstance(v, int) and not isinstance(v, bool)}
                        if isinstance(baselines, dict) else {})

    @contextmanager
    def _update(self) -> Iterator[_Content]:
        """Read-modify-write under a lock, so a `jarvis run` and a `jarvis loadout up` side by side never lose each
        other's records."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / "state.lock"):
            content = self._read()
            yield content
            fd, tmp = tempfile.mkstemp(dir=self.dir, prefix=".state-", suffix=".json")
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump({"version": 2, "records": [r.to_json() for r in content.records],
                               "baselines": content.baselines}, fh, indent=2)
                _replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


@dataclass
class _Content:
    records: list[Record] = field(default_factory=list)
    baselines: dict[str, int] = field(default_factory=dict)


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
