"""What every benchmark shares: result rows, statistics, a stand-in server in a child process, resource sampling."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
MODEL = "bench-model"


@dataclass
class Row:
    """One line of the results table."""

    item: str
    figure: str
    value: str
    target: str = ""
    status: str = ""
    """'met', 'MISSED' or '' (a figure shown for information)."""


@dataclass
class Outcome:
    """What one benchmark returns: table rows, free-form notes (diagnosis), raw numbers for --json."""

    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def row(self, figure: str, value: str, target: str = "", ok: bool | None = None, item: str = "") -> None:
        status = "" if ok is None else ("met" if ok else "MISSED")
        self.rows.append(Row(item, figure, value, target, status))


def percentile(values: Sequence[float], p: float) -> float:
    """Linearly interpolated percentile (the definition Jarvis reports, metrics.md)."""
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


def fmt_ms(seconds: float, digits: int = 3) -> str:
    return f"{seconds * 1e3:.{digits}f} ms"


def fmt_us(ns: float) -> str:
    return f"{ns / 1e3:.0f} µs"


class StandinProcess:
    """`OpenAIStandin` in a child process (benchmarks/standin_proc.py), with its stamps fetched on demand."""

    def __init__(self, max_life_s: float = 600.0, **kwargs: Any) -> None:
        kwargs.setdefault("models", [MODEL])
        kwargs["max_life_s"] = max_life_s
        self.kwargs = kwargs
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "StandinProcess":
        self.proc = subprocess.Popen([PYTHON, "-m", "benchmarks.standin_proc", json.dumps(self.kwargs)],
                                     cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.close()
            raise RuntimeError("the stand-in server process did not start")
        self.port = json.loads(line)["port"]
        return self

    def _command(self, line: str) -> str:
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        return self.proc.stdout.readline().strip()

    def records(self) -> list[dict[str, Any]]:
        """Every request the server has seen since the last `clear`: index, prompt, status, emissions."""
        with tempfile.TemporaryDirectory(prefix="jarvis-bench-") as tmp:
            path = Path(tmp) / "emissions.json"
            if self._command(f"dump {path}") != "ok":
                raise RuntimeError("the stand-in server process did not dump its records")
            return json.loads(path.read_text(encoding="utf-8"))

    def clear(self) -> None:
        self._command("clear")

    def close(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin is not None:
                proc.stdin.write("quit\n")
                proc.stdin.close()
        except (OSError, ValueError):
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()

    def __exit__(self, *exc: object) -> None:
        self.close()


class RssSampler:
    """Peak resident memory of this process, sampled every `every` seconds on a thread (psutil)."""

    def __init__(self, every: float = 0.02) -> None:
        import psutil

        self._proc = psutil.Process()
        self.every = every
        self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(1.0)
        self.peak = max(self.peak, self._proc.memory_info().rss)


def peak_rss_mb() -> float:
    """This process's peak resident memory: VmHWM (Linux), else getrusage.

    Not `ru_maxrss` where VmHWM exists: on Linux a child started with fork+exec inherits in ru_maxrss the parent's
    resident size at the fork, so a small child of a big parent reports the parent's size.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_seconds() -> float:
    """CPU time of this process, all threads, user and system (CLOCK_PROCESS_CPUTIME_ID: ns resolution)."""
    return time.process_time()


#: Starts its arguments as a command from a process that is itself small, so the command's ru_maxrss does not
#: inherit this (large) process's resident size (see peak_rss_mb).
SMALL_PARENT = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


def run_json(cmd: Sequence[str], *, timeout: float, env: dict[str, str] | None = None) -> Any:
    """Run a child (through a small parent) whose stdout is one JSON document; return it."""
    proc = subprocess.run([PYTHON, "-c", SMALL_PARENT, *cmd], cwd=REPO, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout)


def machine() -> dict[str, str]:
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": str(os.cpu_count()), "python": platform.python_version(),
            "os": platform.platform()}

