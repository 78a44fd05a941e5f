"""Starting, watching and ending the processes Jarvis launches, the same way on Windows and POSIX.

Everything here identifies a process by (pid, create_time), so a PID reused by the system after a crash is never
mistaken for one of ours.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import time
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

from .errors import EngineError, EngineTimeoutError

if TYPE_CHECKING:  # psutil and subprocess are imported where used: `jarvis --help` never needs them
    import subprocess

    import psutil

IS_WINDOWS = sys.platform == "win32"


def spawn(cmd: Sequence[str], *, log_path: Path, env: Mapping[str, str] | None = None,
          cwd: Path | None = None, append: bool = True) -> subprocess.Popen[bytes]:
    """Start `cmd` in its own process group with stdout and stderr going to `log_path`: appended (a plugin may
    write a header first), or into an emptied file with `append=False`, so a failure's tail is this start's."""
    import subprocess

    log_path.parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict = {}
    if IS_WINDOWS:
        kwargs["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP  # so CTRL_BREAK reaches only this tree
    else:
        kwargs["start_new_session"] = True  # its own process group: orphans of the tree stay findable
    with open(log_path, "ab" if append else "wb") as log:
        proc = subprocess.Popen(list(cmd), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=dict(env) if env is not None else None, cwd=cwd, **kwargs)
    _spawned.add(proc.pid)
    return proc


#: PIDs this Jarvis process spawned in their own process group: only those may get a Windows CTRL_BREAK, which
#: reaches a whole console process group (sent to anything else, it could reach Jarvis's own console).
_spawned: set[int] = set()


def create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


#: How far two create_time readings of one process may differ. psutil derives create_time from the boot time,
#: which moves when the system clock is stepped (NTP); a PID reused within a second is not a practical risk.
CREATE_TIME_TOLERANCE = 1.0


def same_create_time(a: float | None, b: float | None) -> bool:
    return a is not None and b is not None and abs(a - b) <= CREATE_TIME_TOLERANCE


def _same_process(pid: int, created: float | None) -> psutil.Process | None:
    """The process, if it is still the one that had `created` as its create_time; a record without one is never
    trusted (the PID may have been reused)."""
    import psutil

    try:
        proc = psutil.Process(pid)
        if not same_create_time(proc.create_time(), created):
            return None  # the PID was reused, or we cannot tell: not ours
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def is_running(pid: int, created: float | None) -> bool:
    return _same_process(pid, created) is not None


def end_tree(pid: int, created: float | None, *, timeout: float = 10.0) -> bool:
    """End the process and all its descendants: gracefully first, forcefully after `timeout` seconds.

    Returns True when something of ours was running. The root is asked first, so a server can stop its own
    children cleanly; whatever of the snapshot taken beforehand is still alive afterwards is killed.
    """
    import psutil

    root = _same_process(pid, created)
    if root is None:
        # Only a root that is really gone leaves orphans of ours; a PID now held by another process is not ours,
        # and neither is the group it may lead.
        return _end_orphans(pid, created) if _gone(pid) else False
    try:
        tree = root.children(recursive=True)  # snapshot first: a dead parent hides its children
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        tree = []
    group = _process_group(pid)
    _ask_to_stop(root)
    _, alive = psutil.wait_procs([root], timeout=timeout)
    alive_children = [p for p in tree if p.is_running()]
    for proc in alive_children:
        _quietly(proc.terminate)
    _, alive_children = psutil.wait_procs(alive_children, timeout=min(timeout, 5.0))
    for proc in alive + alive_children:
        _quietly(proc.kill)
    psutil.wait_procs(alive + alive_children, timeout=5.0)
    if group is not None:  # orphans that left the tree but stayed in the group we created
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    return True


def _gone(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True
    except psutil.AccessDenied:
        return False


def _end_orphans(pid: int, created: float | None) -> bool:
    """The root died (a crash): end what is left of its process group — processes in the group it led, born after
    it — so that, say, a crashed server's model runners do not keep holding memory. POSIX only: on Windows orphans
    are found by their recorded parent PID, which psutil keeps (`ppid`)."""
    import psutil

    if created is None:
        return False
    orphans = []
    for proc in psutil.process_iter(["pid", "ppid", "create_time"]):
        try:
            if proc.info["create_time"] is None or proc.info["create_time"] < created - CREATE_TIME_TOLERANCE:
                continue
            if IS_WINDOWS:
                mine = proc.info["ppid"] == pid
            else:
                mine = os.getpgid(proc.pid) == pid and proc.pid != pid
            if mine and proc.status() != psutil.STATUS_ZOMBIE:
                orphans.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
            continue
    for proc in orphans:
        _quietly(proc.terminate)
    _, alive = psutil.wait_procs(orphans, timeout=5.0)
    for proc in alive:
        _quietly(proc.kill)
    return bool(orphans)


def _process_group(pid: int) -> int | None:
    if IS_WINDOWS:
        return None
    try:
        group = os.getpgid(pid)
    except ProcessLookupError:
        return None
    # Only a group this process leads (we started it with start_new_session) is ours to end.
    return group if group == pid and group != os.getpgrp() else None


def _ask_to_stop(proc: psutil.Process) -> None:
    import psutil

    if IS_WINDOWS and proc.pid in _spawned:
        try:
            proc.send_signal(signal.CTRL_BREAK_EVENT)  # graceful, reaches only our own process group
            return
        except (OSError, ValueError, psutil.Error):
            pass
    _quietly(proc.terminate)


def _quietly(action: Callable[[], object]) -> None:
    import psutil

    try:
        action()
    except (psutil.NoSuchProcess, psutil.AccessDenied, ProcessLookupError):
        pass


def tail(path: Path, lines: int = 15) -> str:
    """The last lines of a log file, for error messages."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip()
    except OSError:
        return ""


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def listener_pid(port: int) -> int | None:
    """The PID listening on a TCP port, when the system tells (it may not, without privileges)."""
    import psutil

    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                return conn.pid
    except (psutil.AccessDenied, OSError):
        pass
    return None


def process_name(pid: int | None) -> str | None:
    import psutil

    if pid is None:
        return None
    try:
        return " ".join(psutil.Process(pid).cmdline()[:3]) or psutil.Process(pid).name()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


def wait_port_closed(host: str, port: int, timeout: float = 10.0) -> bool:
    """Poll until nothing accepts connections on host:port; False if it is still open after `timeout` s."""
    deadline = time.monotonic() + timeout
    while port_open(host, port, timeout=0.2):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def wait_until_ready(probe: Callable[[], bool], *, timeout: float, what: str,
                     alive: Callable[[], str | None] | None = None, on_wait: Callable[[float], None] | None = None,
                     interval: float = 0.025, max_interval: float = 0.05) -> float:
    """Poll `probe` until it returns True; returns the seconds waited.

    `alive` returns None while the thing being waited for still runs, or a one-line reason once it has died, which
    ends the wait at once (fail fast). `on_wait(elapsed)` is called about once a second, for progress. The probe
    interval starts short and grows to `max_interval`, so readiness is noticed within tens of milliseconds without
    flooding a loading engine.
    """
    start = time.monotonic()
    deadline = start + timeout
    last_note = start
    while True:
        if probe():
            return time.monotonic() - start
        if alive is not None:
            reason = alive()
            if reason is not None:
                raise EngineError(f"{what} stopped before it was ready: {reason}")
        now = time.monotonic()
        if now >= deadline:
            raise EngineTimeoutError(f"{what} was not ready after {timeout:g} s; raise timeouts.start in config.yaml "
                                     f"if it needs longer.")
        if on_wait is not None and now - last_note >= 1.0:
            on_wait(now - start)
            last_note = now
        time.sleep(min(interval, max(0.0, deadline - now)))
        interval = min(interval * 1.5, max_interval)
