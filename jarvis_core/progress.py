"""Console progress for long steps (downloads, engines loading): notes and one-line bars with rate and time left.

On a terminal a bar redraws in place; otherwise (CI, a log file) it prints a line every 10 %, so logs stay short.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from .console import safe


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


def human_duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


class Task:
    """One bar. `update(completed, total)` with byte counts (or steps when `unit` is not "B")."""

    def __init__(self, progress: Progress, description: str, total: int | None, unit: str) -> None:
        self._progress = progress
        self.description = description
        self.total = total
        self.unit = unit
        self.completed = 0
        self._start = time.monotonic()
        self._last_draw = 0.0
        self._last_decile = -1

    def update(self, completed: int, total: int | None = None) -> None:
        if total is not None:
            self.total = total
        self.completed = completed
        self._progress._draw(self)

    def render(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        amount = human_bytes if self.unit == "B" else (lambda n: f"{n:.0f} {self.unit}")
        parts = [self.description]
        if self.total:
            parts.append(f"{100 * self.completed / self.total:5.1f}%")
            parts.append(f"{amount(self.completed)}/{amount(self.total)}")
        else:
            parts.append(amount(self.completed))
        rate = self.completed / elapsed
        if rate > 0:
            parts.append(f"{amount(rate)}/s")
            if self.total and self.completed < self.total:
                parts.append(f"{human_duration((self.total - self.completed) / rate)} left")
        return "  ".join(parts)

    def close(self, message: str | None = None) -> None:
        self._progress._finish(self, message)


class Progress:
    def __init__(self, stream: TextIO | None = None, *, enabled: bool = True) -> None:
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = enabled
        self.interactive = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()
        self._open: Task | None = None

    def note(self, message: str) -> None:
        if not self.enabled:
            return
        self._clear_line()
        print(safe(message), file=self.stream, flush=True)

    def task(self, description: str, total: int | None = None, unit: str = "B") -> Task:
        task = Task(self, description, total, unit)
        self._open = task
        return task

    def _draw(self, task: Task) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.interactive:
            if now - task._last_draw >= 0.1:
                task._last_draw = now
                self.stream.write("\r\x1b[2K" + safe(task.render()))  # our own control codes, then safe text
                self.stream.flush()
            return
        decile = int(10 * task.completed / task.total) if task.total else -1
        if decile > task._last_decile:
            task._last_decile = decile
            print(safe(task.render()), file=self.stream, flush=True)

    def _finish(self, task: Task, message: str | None) -> None:
        if self._open is task:
            self._open = None
        if not self.enabled:
            return
        self._clear_line()
        print(safe(message or task.render()), file=self.stream, flush=True)

    def _clear_line(self) -> None:
        if self.interactive and self._open is not None:
            self.stream.write("\r\x1b[2K")
