"""Finding the processes a test started, by a marker in their environment (inherited by every child), so a test can
fail on leftovers without ever touching a process it did not start. Imported by the folders' conftests."""

from __future__ import annotations

import os

import psutil


def marked_processes(variable: str, mark: str) -> list[psutil.Process]:
    """Live processes whose environment has `variable` set to `mark` (started during the test, by anyone)."""
    found = []
    for proc in psutil.process_iter():
        if proc.pid == os.getpid():
            continue
        try:
            if proc.environ().get(variable) == mark and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except (psutil.Error, OSError):
            continue
    return found
