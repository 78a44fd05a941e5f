"""What an Ollama server Jarvis did not start serves at once, read from its own log.

Ollama's API does not tell OLLAMA_NUM_PARALLEL, but the server logs its settings when it starts, a line such as

    time=... level=INFO source=routes.go:1259 msg="server config" env="map[... OLLAMA_NUM_PARALLEL:4 ...]"
    2024/06/05 04:57:07 routes.go:1008: INFO server config env="map[... OLLAMA_NUM_PARALLEL:4 ...]"   (older builds)

followed by `Listening on 127.0.0.1:11434 (version 0.5.7)`. The desktop apps write that log where Jarvis can read it
(Windows: %LOCALAPPDATA%\\Ollama\\server.log, macOS: ~/.ollama/logs/server.log); a Linux service logs to the
journal, and a server started by hand to its terminal: then it stays unknown. A log is believed only when its last
start listened on the same port and reported the same version as the server that answers.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

_CONFIG = re.compile(r'server config"? env="map\[(?P<env>[^"]*)\]"')
_PARALLEL = re.compile(r"(?:^|\s)OLLAMA_NUM_PARALLEL:(?P<n>\d+)(?:\s|$)")
_LISTENING = re.compile(r"Listening on (?P<host>\S+?):(?P<port>\d+) \(version (?P<version>[^)\s]+)\)")
#: Only the end of a long log is read: each start writes its settings anew.
TAIL_BYTES = 1 << 20


def log_files() -> list[Path]:
    """Where the desktop apps write the running server's log, on this machine."""
    found = []
    if os.environ.get("LOCALAPPDATA"):
        found.append(Path(os.environ["LOCALAPPDATA"]) / "Ollama" / "server.log")
    found.append(Path.home() / ".ollama" / "logs" / "server.log")
    return found


def num_parallel_from_log(path: Path, *, port: int, version: str | None) -> int | None:
    """OLLAMA_NUM_PARALLEL of the last start logged in `path` (0: not set, Ollama's default), or None when the file
    cannot be read, has no such start, or that start listened on another port or reported another version."""
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - TAIL_BYTES))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return None
    configs = list(_CONFIG.finditer(text))
    if not configs:
        return None
    last = configs[-1]
    parallel = _PARALLEL.search(last.group("env"))
    listening = _LISTENING.search(text, last.end())
    if parallel is None or listening is None or int(listening.group("port")) != port:
        return None
    if version is not None and listening.group("version").lstrip("v") != version.lstrip("v"):
        return None
    return int(parallel.group("n"))
