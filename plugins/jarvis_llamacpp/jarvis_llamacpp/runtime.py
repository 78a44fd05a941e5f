"""Is llama-cpp-python's server installed for the configured interpreter, and which version?"""

from __future__ import annotations

import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

# Import the server's app module, not just the package: without the `[server]` extra `llama_cpp.server` imports fine
# while `python -m llama_cpp.server` dies on the missing fastapi/uvicorn.
_PROBE = "import llama_cpp, llama_cpp.server.app; print(llama_cpp.__version__)"


@dataclass(frozen=True)
class Runtime:
    python: str
    installed: bool
    version: str | None = None
    problem: str = ""
    """Why it is not usable (one line), empty when installed."""

    @property
    def fix(self) -> str:
        return install_command(self.python)


def install_command(python: str) -> str:
    return f"{shlex.quote(python)} -m pip install 'llama-cpp-python[server]'"


def not_installed_message(python: str, problem: str) -> str:
    return (f"llama_cpp (llama-cpp-python[server]) is not installed for {python}: {problem}. "
            f"Install it with: {install_command(python)} (it builds llama.cpp: ~6 min on 2 cores), "
            f"or point engines.llamacpp.python in config.yaml at an interpreter that has it.")


_cache: dict[str, Runtime] = {}


def probe(python: str, *, refresh: bool = False, timeout: float = 60.0) -> Runtime:
    """Ask `python` to import the server (in a subprocess: llama.cpp's library stays out of Jarvis's process).

    The answer is remembered per interpreter for the life of the process; `refresh` asks again.
    """
    if not refresh and python in _cache:
        return _cache[python]
    if not Path(python).is_file():
        import shutil

        if shutil.which(python) is None:
            return Runtime(python, False, problem="no such interpreter")
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return Runtime(python, False, problem=f"cannot run it ({type(exc).__name__}: {exc})")
    if done.returncode != 0:
        lines = [line for line in done.stderr.strip().splitlines() if line.strip()]
        runtime = Runtime(python, False, problem=lines[-1].strip() if lines else f"exit code {done.returncode}")
    else:
        out = done.stdout.strip().splitlines()
        runtime = Runtime(python, True, version=out[-1].strip() if out else None)
    _cache[python] = runtime
    return runtime


def forget() -> None:
    """Drop remembered answers (after installing llama-cpp-python, and in tests)."""
    _cache.clear()
