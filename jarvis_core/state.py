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
import logging
import math
import os
import tempfile
import time
import uuid
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterator, Mapping

from .errors import JarvisError
from .processes import same_create_time

log = logging.getLogger("jarvis")

#: Seconds a writer waits for another Jarvis to finish its write of the state file.
LOCK_TIMEOUT = 10.0
#: Limits a record must keep to be trusted: a PID is a positive 32-bit number, `data` nests at most this deep.
MAX_PID = 2**32 - 1
MAX_DATA_DEPTH = 32
_MAX_INT_DIGITS = 40  # longer integers in the file are garbage: read as infinity, so their record is dropped


class StateLockedError(JarvisError, OSError):
    """Another Jarvis holds the state file's lock for longer than a write takes."""


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
    def from_json(cls, raw: Any) -> Record | None:
        """A record from the file, or None when it is malformed (it is then dropped, never trusted): any field of the
        wrong type, a PID that cannot be one, a time that is not a finite number, `data` nested absurdly deep."""
        try:
            return cls._from_json(raw)
        except (TypeError, ValueError, OverflowError, RecursionError):
            return None

    @classmethod
    def _from_json(cls, raw: Any) -> Record | None:
        if not isinstance(raw, Mapping) or not all(isinstance(raw.get(k), str) and raw[k]
                                                   for k in ("id", "engine", "kind")):
            return None
        known = {f.name for f in fields(cls)} - {"data"}
        values: dict[str, Any] = {k: raw[k] for k in known if k in raw}
        if values.get("run_id") is None:
            values["run_id"] = ""
        if values.get("started_at") is None:
            values["started_at"] = 0.0
        for name in ("run_id", "address", "log"):
            if values.get(name) is not None and not isinstance(values[name], str):
                return None
        for name in ("pid", "owner_pid"):
            value = values.get(name)
            if value is not None and (not _is_int(value) or not 1 <= value <= MAX_PID):
                return None
        for name in ("started_at", "create_time", "owner_create_time"):
            value = values.get(name)
            if value is not None and (not _is_number(value) or not math.isfinite(value)):
                return None
        command = values.get("command")
        if command is not None:
            if not isinstance(command, (list, tuple)) or \
                    not all(isinstance(part, str) or _is_number(part) for part in command):
                return None
            values["command"] = tuple(str(part) for part in command)
        data = raw.get("data") if isinstance(raw.get("data"), Mapping) else {}
        data = {**{k: v for k, v in raw.items() if k not in known and k != "data"}, **data}  # files of version 1
        if _depth(data, MAX_DATA_DEPTH) > MAX_DATA_DEPTH:
            return None
        return cls(**values, data=data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _depth(value: Any, limit: int) -> int:
    """How deep lists and mappings nest in `value`, counting no further than just past `limit`."""
    deepest, stack = 0, [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            level += 1
            deepest = max(deepest, level)
            if level > limit:
                return level
            stack.extend((child, level) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _parse_int(text: str) -> int | float:
    return int(text) if len(text.lstrip("-")) <= _MAX_INT_DIGITS else math.inf


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

    def _read(self, *, locked: bool = False) -> _Content:
        """The file's content; whatever in it is malformed is dropped (never trusted, never fatal), with one notice
        on the "jarvis" logger naming the state file. A file that is unusable as a whole is set aside, but only by
        a writer holding the lock (`locked`), so a reader never moves a file another Jarvis has just written."""
        try:
            text = self.path.read_bytes()
        except FileNotFoundError:
            return _Content()
        except OSError as exc:
            return self._corrupt(f"cannot be read ({exc.strerror or exc})", b"", locked)
        try:
            data = json.loads(text, parse_int=_parse_int)
        except (ValueError, RecursionError):  # not UTF-8, not JSON, nested too deep to parse
            return self._corrupt("is not valid JSON", text, locked)
        if not isinstance(data, dict):
            return self._corrupt("does not hold a JSON object", text, locked)
        dropped = 0
        raw = data.get("records", [])
        if not isinstance(raw, list):
            raw, dropped = [], 1
        records = []
        for entry in raw:
            record = Record.from_json(entry)
            if record is None:
                dropped += 1
            else:
                records.append(record)
        baselines: dict[str, int] = {}
        raw_baselines = data.get("baselines", {})
        if isinstance(raw_baselines, dict):
            for run_id, used in raw_baselines.items():
                if _is_int(used) and 0 <= used < 2**40:
                    baselines[run_id] = used
                else:
                    dropped += 1
        else:
            dropped += 1
        if dropped:
            self._notice(f"state file {self.path}: dropped {dropped} malformed "
                         f"{'entry' if dropped == 1 else 'entries'} (ignored, and left out when the file is next "
                         f"written)", text)
        return _Content(records, baselines)

    def _corrupt(self, problem: str, content: bytes, locked: bool) -> _Content:
        """A state file that cannot be used at all: ignored; a writer keeps it aside for inspection and starts
        afresh."""
        if not locked:
            self._notice(f"state file {self.path} {problem}; it is ignored, and set aside when Jarvis next "
                         f"records something", content)
            return _Content()
        aside = self.path.with_name(f"{self.path.stem}.corrupt-{int(time.time())}{self.path.suffix}")
        try:
            self.path.replace(aside)
            kept = f"kept as {aside.name}"
        except OSError:
            kept = "left in place"
        log.warning("state file %s %s; it is %s, and Jarvis starts a new one", self.path, problem, kept)
        return _Content()

    def _notice(self, message: str, content: bytes) -> None:
        """Warn once for a given file content, so a run reading the same file many times says it once."""
        key = (str(self.path), hash(content))
        if key not in _noticed:
            _noticed.add(key)
            log.warning("%s", message)

    @contextmanager
    def _update(self) -> Iterator[_Content]:
        """Read-modify-write under a lock, so a `jarvis run` and a `jarvis loadout up` side by side never lose each
        other's records."""
        self.dir.mkdir(parents=True, exist_ok=True)
        with _locked(self.dir / "state.lock"):
            content = self._read(locked=True)
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


_noticed: set[tuple[str, int]] = set()


@dataclass
class _Content:
    records: list[Record] = field(default_factory=list)
    baselines: dict[str, int] = field(default_factory=dict)


@contextmanager
def _locked(lock: Path, timeout: float | None = None) -> Iterator[None]:
    """An OS lock on `lock` (filelock: flock on POSIX, msvcrt on Windows), released by the OS when its holder dies,
    so a crashed Jarvis never leaves it taken. Nobody holds it for more than a file write."""
    from filelock import FileLock, Timeout

    timeout = LOCK_TIMEOUT if timeout is None else timeout
    file_lock = FileLock(str(lock), timeout=timeout)
    try:
        file_lock.acquire()
    except Timeout:
        raise StateLockedError(f"the state file {lock.parent / 'state.json'} stayed locked by another Jarvis for "
                               f"{timeout:g} s; let it finish (or end it) and try again") from None
    try:
        yield
    finally:
        file_lock.release()


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
