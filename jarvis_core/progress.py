"""The core's one progress display (downloads, extraction, pulls): plugins report bytes, files and phases; this draws.

    task = ctx.progress.task("vllm: org/model", total=None, unit="B")
    task.phase("downloading")          # shown on the line; on a non-terminal, printed at once
    task.update(completed, total)      # absolute figures (not deltas), from any thread
    task.files(done, total)            # optional: "3/7 files"
    task.close(message=None)           # the final line, once

On a terminal one bar is redrawn in place by `rich` (imported only then, so `jarvis --help` and CI runs never load
it): label, phase, bar, percent, sizes in binary units, rate, time left, files. Elsewhere (CI logs, a file) a plain
line is printed every LINE_EVERY_S seconds and on every phase change, then the final line; never a carriage return.
`Progress(enabled=False)` (`--quiet`) prints nothing at all, notes included.

Rate and time left count only what moved in this run: the first figure a task reports is its starting point, so a
download resumed at 40 % does not claim the 40 % as speed; the rate is taken over the last RATE_WINDOW_S seconds.
Every text from outside (labels, phases, notes) passes through `console.safe`.
"""

from __future__ import annotations

import atexit
import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Callable, TextIO

from .console import safe

__all__ = ["Progress", "Task", "human_bytes", "human_duration", "LINE_EVERY_S", "RATE_WINDOW_S"]

#: Seconds between two plain lines of one task when output is not a terminal.
LINE_EVERY_S = 5.0
#: The rate (and so the time left) is measured over this many recent seconds.
RATE_WINDOW_S = 10.0
#: At most this often an update redraws the bar itself; rich's own thread redraws too (for stalls and the pulse).
REDRAW_EVERY_S = 0.1
#: On the bar: the label keeps at least MIN_LABEL cells; the bar is MIN_BAR to MAX_BAR cells wide, or left out.
MIN_LABEL, MIN_BAR, MAX_BAR = 20, 8, 30
#: The rate window keeps one sample per this many seconds.
WINDOW_STEP_S = 0.5


def human_bytes(n: float) -> str:
    """`n` bytes in binary units: "512 B", "1.5 KiB", "3.2 GiB"."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        shown = f"{n:.0f}" if unit == "B" else f"{n:.1f}"
        if abs(float(shown)) < 1024 or unit == "TiB":  # compare what is shown: 1023.96 KiB is 1.0 MiB
            return f"{shown} {unit}"
        n /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def _amount(n: float, unit: str) -> str:
    if unit == "B":
        return human_bytes(n)
    return f"{n:.0f} {unit}" if n >= 10 or n == int(n) else f"{n:.1f} {unit}"


@dataclass(frozen=True)
class _State:
    """What one task shows, frozen: the drawing thread reads it without a lock (a task swaps in a new one)."""

    label: str  # already safe
    phase: str  # already safe; "" when none
    unit: str
    completed: int
    total: int | None
    files: tuple[int, int | None] | None
    window: tuple[tuple[float, int], tuple[float, int]] | None  # (time, completed) at the window's start and newest

    def rate(self, now: float) -> float | None:
        """Units a second over the recent window, up to `now` (so a stall brings it down); None before it is known."""
        if self.window is None or self.window[0] == self.window[1]:
            return None
        (t0, c0), (t1, c1) = self.window
        if now - t1 >= RATE_WINDOW_S:  # nothing moved for a whole window: stalled
            return 0.0
        return (c1 - c0) / (now - t0) if now > t0 else None

    def stats(self, now: float) -> str:
        """Percent, amounts, rate, time left, files: what follows the label (and the bar)."""
        parts = []
        if self.total:
            parts.append(f"{100 * self.completed / self.total:5.1f}%")
            parts.append(f"{_amount(self.completed, self.unit)}/{_amount(self.total, self.unit)}")
        else:
            parts.append(_amount(self.completed, self.unit))
        rate = self.rate(now)
        if rate is not None:
            parts.append(f"{_amount(rate, self.unit)}/s")
            if rate > 0 and self.total and self.completed < self.total:
                parts.append(f"{human_duration((self.total - self.completed) / rate)} left")
        if self.files is not None:
            done, total = self.files
            parts.append(f"{done}/{total} files" if total is not None else f"{done} files")
        return "  ".join(parts)

    def line(self, now: float) -> str:
        return "  ".join(p for p in (self.label, self.phase, self.stats(now)) if p)


class Task:
    """One download (or any long step): `update(completed, total)` with byte counts (or steps when `unit` is not
    "B"), `phase(text)`, `files(done, total)`, then `close(message)`. Safe to call from several threads. Also a
    context manager: leaving the block closes the task (with a "stopped at" line when an exception leaves it)."""

    def __init__(self, progress: Progress, description: str, total: int | None, unit: str) -> None:
        self._progress = progress
        self.description = description
        self.unit = unit
        self._created = progress._clock()
        self._window: deque[tuple[float, int]] = deque()
        self._high = 0  # the highest figure reported (threads may report out of order)
        self._run: tuple[tuple[float, int], tuple[float, int]] | None = None  # first and newest high of this run
        self._new_phase = False  # a phase began and no figure came since
        self._state = _State(safe(description), "", unit, 0, total if total and total > 0 else None, None, None)
        self._last_line = self._created  # non-terminal: when this task last printed a line
        self._last_redraw = float("-inf")
        self._closed = False
        self._bar_id: Any = None  # the rich task id while on the bar

    # the figures, as attributes (read by plugins and tests)
    @property
    def completed(self) -> int:
        return self._state.completed

    @property
    def total(self) -> int | None:
        return self._state.total

    @property
    def closed(self) -> bool:
        return self._closed

    def update(self, completed: int, total: int | None = None) -> None:
        """`completed` so far (absolute, not a delta), and the total when known (None keeps the last one)."""
        progress = self._progress
        with progress._lock:
            if self._closed:
                return
            now = progress._clock()
            completed = int(completed)
            new_total = self._state.total if total is None else (int(total) if total > 0 else None)
            self._sample(now, completed)
            self._state = replace(self._state, completed=completed, total=new_total,
                                   window=(self._window[0], self._window[-1]))
            progress._changed(self, now, forced=False)

    def phase(self, text: str) -> None:
        """What the task is doing now ("downloading", "extracting"): on the line; on a non-terminal printed at once."""
        with self._progress._lock:
            shown = safe(text)
            if self._closed or shown == self._state.phase:
                return
            now = self._progress._clock()
            self._state = replace(self._state, phase=shown)
            self._restart_count(now)
            self._progress._changed(self, now, forced=True)

    def files(self, done: int, total: int | None = None) -> None:
        """Files done out of `total` (shown as "3/7 files")."""
        with self._progress._lock:
            if self._closed:
                return
            self._state = replace(self._state, files=(int(done), None if total is None else int(total)))
            self._progress._changed(self, self._progress._clock(), forced=False)

    def render(self) -> str:
        """The plain line for this task now (label, phase, percent, sizes, rate, time left, files)."""
        return self._state.line(self._progress._clock())

    def summary(self) -> str:
        """The default final line: "<label>: <amount> in <duration> (<rate>)", the rate over this run's part."""
        state = self._state
        now = self._progress._clock()
        text = f"{state.label}: {_amount(state.completed, state.unit)} in {human_duration(now - self._created)}"
        if self._run is not None:
            (t0, c0), (t1, c1) = self._run
            if t1 > t0 and c1 > c0:
                text += f" ({_amount((c1 - c0) / (t1 - t0), state.unit)}/s)"
        if state.files is not None:
            done, total = state.files
            text += f", {done}/{total} files" if total is not None else f", {done} files"
        return text

    def close(self, message: str | None = None) -> None:
        """Print the final line (`message`, or the summary) exactly once and take the task off the bar."""
        self._progress._finish(self, message)

    def __enter__(self) -> Task:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.close()
        else:
            self.close(f"{self._state.label}: stopped at {self._state.stats(self._progress._clock())}")

    # --- the rate window --------------------------------------------------------------------------------------------

    def _sample(self, now: float, completed: int) -> None:
        # The rate counts from the first figure reported, and only what goes beyond the highest figure so far: a
        # thread reporting late (a lower figure) neither resets nor inflates it. A lower figure that comes with a
        # new phase (downloaded, then extracted) starts the count again from there.
        if self._run is None or (self._new_phase and completed < self._high):
            self._run = ((now, completed), (now, completed))
            self._high = completed
            self._window.clear()
            self._window.append((now, completed))
            self._new_phase = False
            return
        self._new_phase = False
        if completed > self._high:
            self._high = completed
            self._run = (self._run[0], (now, completed))
        # one sample per WINDOW_STEP_S (the newest is moved along within a step), so the window stays short
        if len(self._window) > 1 and now - self._window[-2][0] < WINDOW_STEP_S:
            self._window[-1] = (now, self._high)
        else:
            self._window.append((now, self._high))
        # keep the newest sample at or before the window's start, so the window spans RATE_WINDOW_S
        while len(self._window) > 2 and self._window[1][0] <= now - RATE_WINDOW_S:
            self._window.popleft()

    def _restart_count(self, now: float) -> None:
        """A new phase whose figure is below the old high (extraction after download): count from here."""
        self._new_phase = True
        if self._run is not None and self._state.completed < self._high:
            self._sample(now, self._state.completed)
            self._state = replace(self._state, window=(self._window[0], self._window[-1]))


def _is_terminal(stream: TextIO) -> bool:
    try:
        return bool(stream.isatty()) and os.environ.get("TERM") != "dumb"
    except (AttributeError, ValueError, OSError):  # no isatty, or a closed stream
        return False


class Progress:
    """The console progress of one Jarvis run: `note()` lines and `task()` bars, on `stream` (stderr by default).

    `enabled=False` (`--quiet`) silences everything. `clock` is injectable for tests (monotonic seconds)."""

    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = enabled and _is_terminal(self.stream)
        self._clock = clock
        self._lock = threading.RLock()
        self._open: list[Task] = []  # open tasks, oldest first; the last one is shown
        self._bar: Any = None  # the rich Progress while a bar is on the terminal
        self._atexit = False

    def note(self, message: str) -> None:
        """One line (above the bar when one is drawn)."""
        if not self.enabled:
            return
        with self._lock:
            self._write(safe(message))

    def task(self, description: str, total: int | None = None, unit: str = "B") -> Task:
        """A new task, shown from now on (it replaces an open one on the bar until it is closed)."""
        with self._lock:
            task = Task(self, description, total, unit)
            self._open.append(task)
            if self.interactive:
                self._show(task)
            return task

    def close(self) -> None:
        """End the display: open tasks are dropped without a line (an error is on its way) and the bar is erased.
        Safe to call more than once; called at exit too, so a terminal never keeps a hidden cursor."""
        with self._lock:
            for task in self._open:
                task._closed = True
            self._open.clear()
            self._stop_bar()

    # --- drawing ----------------------------------------------------------------------------------------------------

    def _current(self) -> Task | None:
        return self._open[-1] if self._open else None

    def _changed(self, task: Task, now: float, *, forced: bool) -> None:
        """Called under the lock after `task` changed: draw when it is due."""
        if not self.enabled or task is not self._current():
            return
        if self.interactive:
            if self._bar is not None and (forced or now - task._last_redraw >= REDRAW_EVERY_S):
                task._last_redraw = now
                self._bar.refresh()
            return
        if forced or now - task._last_line >= LINE_EVERY_S:
            task._last_line = now
            print(task._state.line(now), file=self.stream, flush=True)

    def _finish(self, task: Task, message: str | None) -> None:
        with self._lock:
            if task._closed:
                return
            task._closed = True
            line = safe(message) if message is not None else task.summary()
            was_shown = task is self._current()
            if task in self._open:
                self._open.remove(task)
            if self._bar is not None:
                if not self._open:
                    self._stop_bar()
                else:
                    if task._bar_id is not None:
                        self._bar.remove_task(task._bar_id)
                        task._bar_id = None
                    if was_shown:
                        self._show(self._open[-1])
            if self.enabled:
                self._write(line)

    def _write(self, line: str) -> None:
        """One line of already safe text: above the bar when one is drawn."""
        if self._bar is not None:
            self._bar.console.out(line, highlight=False)
        else:
            print(line, file=self.stream, flush=True)

    def _show(self, task: Task) -> None:
        """Put `task` on the bar (alone: other open tasks are hidden)."""
        if self._bar is None:
            try:
                self._bar = _start_bar(self.stream)
            except ImportError:  # rich missing (a broken install): plain lines rather than no progress at all
                self.interactive = False
                return
            if not self._atexit:
                self._atexit = True
                atexit.register(self._at_exit)
        for other in self._open:
            if other._bar_id is not None and other is not task:
                self._bar.update(other._bar_id, visible=False)
        if task._bar_id is None:
            task._bar_id = self._bar.add_task("", jarvis=task)
        else:
            self._bar.update(task._bar_id, visible=True)
        task._last_redraw = self._clock()
        self._bar.refresh()

    def _at_exit(self) -> None:
        # A task left open (an exception went past it) must not leave the terminal with a hidden cursor; a thread
        # stuck holding the lock must not hang the exit either.
        if self._lock.acquire(timeout=1):
            try:
                self.close()
            finally:
                self._lock.release()

    def _stop_bar(self) -> None:
        bar, self._bar = self._bar, None
        if bar is not None:
            for task in self._open:
                task._bar_id = None
            bar.stop()  # transient: the bar is erased, the cursor shown again


def _start_bar(stream: TextIO) -> Any:
    """A started rich Progress drawing our tasks on `stream` (a terminal), one custom column for the whole line.

    The column reads each task's frozen state without our lock, so rich's refresh thread never waits on a plugin's
    thread. stdout and stderr are not redirected: a task left open must not swallow the command's output."""
    from rich.console import Console, RenderableType
    from rich.progress import Progress as RichProgress
    from rich.progress import ProgressColumn
    from rich.progress_bar import ProgressBar
    from rich.table import Column, Table
    from rich.text import Text

    console = Console(file=stream, force_terminal=True, highlight=False, emoji=False, markup=False)

    class Line(ProgressColumn):
        """The whole line of one task: label and phase (cut to fit), the bar, the figures. The figures come first,
        then at least MIN_LABEL cells of label, then the bar (left out when it would be too thin to read)."""

        def render(self, task: Any) -> RenderableType:
            ours: Task = task.fields["jarvis"]
            s = ours._state
            figures = Text(s.stats(ours._progress._clock()), overflow="ellipsis", no_wrap=True)
            label = Text(s.label, overflow="ellipsis", no_wrap=True)
            if s.phase:
                label.append("  " + s.phase, style="cyan")
            room = console.width - 2 - figures.cell_len  # two one-cell gaps
            label.truncate(max(1, min(label.cell_len, max(MIN_LABEL, room - MIN_BAR))), overflow="ellipsis")
            bar_width = min(MAX_BAR, room - label.cell_len)
            row = Table.grid(padding=(0, 1))
            if bar_width < MIN_BAR:
                row.add_row(label, figures)
            else:
                row.add_row(label, ProgressBar(total=s.total, completed=s.completed, width=bar_width,
                                               pulse=not s.total, animation_time=task.get_time()), figures)
            return row

    bar = RichProgress(Line(table_column=Column(no_wrap=True, overflow="ellipsis")), console=console,
                       transient=True, auto_refresh=True, refresh_per_second=4, redirect_stdout=False,
                       redirect_stderr=False)
    bar.start()
    return bar
