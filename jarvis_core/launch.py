"""Starting an engine's server the one way every plugin does, and ending it again.

`launch` runs the whole start sequence: write a header to the log, spawn the command in its own process group,
record it in the state file (before waiting, so a crash during start-up is still cleaned up), wait until it is ready
or has died, and on any failure (a timeout, an early exit, Ctrl-C) end its process tree, drop its record and raise
one error with the command and the log's last lines. `await_ready` is the waiting part alone, for servers that are
not a local process (a container). `end` ends what a record names.
"""

from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

from . import processes
from .errors import EngineError, EngineTimeoutError, EngineUnavailableError
from .http import close_shared
from .redact import redact as redact_text
from .redact import redact_argv

if TYPE_CHECKING:
    import subprocess

    from .engine import EngineContext
    from .state import Record

#: Seconds between "still waiting" notes while a server starts.
NOTE_EVERY_S = 10.0

# The Popen objects of servers this Jarvis process started, so their exit code can be read and they are reaped.
_children: dict[int, subprocess.Popen[bytes]] = {}


@dataclass(frozen=True)
class Launched:
    """A server `launch` started and found ready."""

    record: Record
    waited_s: float
    """Seconds from spawning until it was ready."""

    @property
    def pid(self) -> int:
        assert self.record.pid is not None
        return self.record.pid

    @property
    def log(self) -> Path:
        return Path(self.record.log or "")


def launch(ctx: EngineContext, command: Sequence[str], *, what: str, log_name: str, ready: Callable[[], bool],
           address: str | None = None, env: Mapping[str, str] | None = None, kind: str = "process",
           timeout: float | None = None, redact: Callable[[str], str] = redact_text,
           explain: Callable[[str], str | None] | None = None, progress_line: Callable[[], str] | None = None,
           **data: Any) -> Launched:
    """Start `command` as `what` and wait until `ready()` is true; the record carries `address` and `data`.

    `timeout` defaults to the engine's `start_timeout` setting, else `timeouts.start`. `redact` (default: the core's, which removes secret-looking flag values,
    URL user-info and secret-named environment values) is applied to every text quoted from the command or the log;
    `explain(log_tail)` may return a hint for a failure (a known error in the log); `progress_line()` adds a word
    to the "still waiting" notes (the log's last line, say).
    """
    command = [str(part) for part in command]
    log = ctx.state.log_path(log_name)
    log.write_text(f"--- jarvis {time.strftime('%Y-%m-%d %H:%M:%S')}: {redact(shlex.join(command))}\n",
                   encoding="utf-8")  # one start per log: a failure's tail is this start's
    ctx.progress.note(f"Starting {what} (log: {log})")
    try:
        proc = processes.spawn(command, log_path=log, env=env)
    except OSError as exc:
        raise EngineUnavailableError(f"{what} could not be started: cannot run {command[0]}: {exc}",
                                     engine=ctx.engine) from None
    _children[proc.pid] = proc
    record = ctx.state.add(ctx.engine, kind, run_id=ctx.run_id, pid=proc.pid,
                           create_time=processes.create_time(proc.pid), address=address, log=log,
                           command=redact_argv(command), **data)  # the state file is written by Jarvis too
    shown_line = (lambda: redact(progress_line())) if progress_line is not None else None
    try:
        waited = await_ready(ctx, what=what, ready=ready, alive=lambda: exit_reason(record), timeout=timeout,
                             progress_line=shown_line)
    except EngineError as exc:
        end(ctx, record)
        # The header line (the command) is left out of the tail: a flag there must not read as an engine's error.
        lines = [line for line in processes.tail(log, 13).splitlines() if not line.startswith("--- jarvis ")]
        raise start_failure(exc, command=command, log=log, tail="\n".join(lines[-12:]), explain=explain,
                            redact=redact) from None
    except BaseException:  # Ctrl-C while it loads: leave nothing behind
        end(ctx, record)
        raise
    return Launched(record, waited)


def start_failure(exc: EngineError, *, command: Sequence[str], log: Path | str, tail: str,
                  explain: Callable[[str], str | None] | None = None,
                  redact: Callable[[str], str] = redact_text, engine: str | None = None) -> EngineError:
    """The one error of a failed start, for a process or a container alike: the reason, a hint the log gives, the
    command and the log file, then the log's last lines; everything passed through `redact`."""
    tail = redact(tail.strip())
    hint = explain(tail) if explain is not None else None
    message = (f"{exc}{'; ' + hint if hint else ''} (command: {shlex.join(list(command))}; log: {log})"
               + (f"\nLast lines of {log}:\n{tail}" if tail else ""))
    return type(exc)(redact(message), engine=engine or exc.engine)


def await_ready(ctx: EngineContext, *, what: str, ready: Callable[[], bool], alive: Callable[[], str | None],
                timeout: float | None = None, progress_line: Callable[[], str] | None = None,
                alive_every: float = 0.0) -> float:
    """Wait until `ready()`; `alive()` returns why the server died (ends the wait at once), else None, and is asked
    at most every `alive_every` seconds (a container's check is an API call). Notes progress every NOTE_EVERY_S
    seconds; raises EngineTimeoutError or EngineError. Returns the seconds waited."""
    limit = timeout if timeout is not None else start_timeout(ctx)
    next_note = [NOTE_EVERY_S]
    last_check = [float("-inf")]

    def checked_alive() -> str | None:
        now = time.monotonic()
        if now - last_check[0] < alive_every:
            return None
        last_check[0] = now
        return alive()

    def on_wait(elapsed: float) -> None:
        if elapsed >= next_note[0]:
            next_note[0] += NOTE_EVERY_S
            extra = progress_line().strip() if progress_line is not None else ""
            ctx.progress.note(f"{ctx.engine}: waiting for {what} ({elapsed:.0f} s)" + (f": {extra[:160]}" if extra
                                                                                          else ""))

    try:
        return processes.wait_until_ready(ready, timeout=limit, what=what, alive=checked_alive, on_wait=on_wait)
    except EngineTimeoutError:
        key = f"engines.{ctx.engine}.start_timeout" if getattr(ctx.settings, "start_timeout", None) and \
            timeout is None else "timeouts.start"
        raise EngineTimeoutError(f"{what} was not ready after {limit:g} s; raise {key} in config.yaml if it needs "
                                 f"longer.", engine=ctx.engine) from None
    except EngineError as exc:
        exc.engine = ctx.engine
        raise


def start_timeout(ctx: EngineContext) -> float:
    """How long an engine may take to start: its own `start_timeout` setting where it has one (Ollama binds in
    seconds, vLLM may load for minutes), else `timeouts.start`."""
    own = getattr(ctx.settings, "start_timeout", None)
    return float(own) if isinstance(own, (int, float)) and not isinstance(own, bool) and own > 0 else \
        ctx.config.timeouts.start


def exit_reason(record: Record) -> str | None:
    """Why the recorded process is no longer running ("exited with code 1"), or None while it runs."""
    child = _children.get(record.pid) if record.pid is not None else None
    if child is not None:
        code = child.poll()
        return None if code is None else f"exited with code {code}"
    return None if record.pid is not None and processes.is_running(record.pid, record.create_time) else "exited"


def end(ctx: EngineContext, record: Record, *, timeout: float | None = None, remove_log: bool = False) -> bool:
    """End the recorded process tree (only if pid and create time still match), close the shared client of its
    address and drop the record. True when it was still running. `remove_log` deletes its log after a clean end."""
    import subprocess

    ended = False
    if record.pid is not None:
        ended = processes.end_tree(record.pid, record.create_time,
                                   timeout=timeout if timeout is not None else ctx.config.timeouts.stop)
        child = _children.pop(record.pid, None)
        if child is not None:
            try:
                child.wait(timeout=5)  # reap it: no zombie left in our process table
            except subprocess.TimeoutExpired:
                pass
    if record.address:
        close_shared(record.address)
    ctx.state.remove(record.id)
    log = Path(record.log) if record.log else None
    if remove_log and ended and log is not None and log.parent == ctx.state.logs_dir:
        log.unlink(missing_ok=True)
    return ended


def running(ctx: EngineContext, kind: str = "process", *, any_run: bool = False) -> list[Record]:
    """The engine's recorded processes that still run (`any_run`: other runs' and loadouts' too, to be left alone)."""
    return [r for r in ctx.state.records(ctx.engine, kind, any_run=any_run)
            if r.pid is not None and processes.is_running(r.pid, r.create_time)]
