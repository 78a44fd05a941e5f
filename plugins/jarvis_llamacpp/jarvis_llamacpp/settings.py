"""The `engines: llamacpp:` section of config.yaml, as a dataclass the core type-checks."""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

from jarvis_core.api import bounded, redact_argv

ENGINE = "llamacpp"
MODELS_ENV = "JARVIS_LLAMACPP_MODELS"
"""Environment variable naming the models folder; when set it wins over config.yaml."""


def default_models_dir() -> Path:
    """Jarvis's model cache for GGUF files: `<user cache>/jarvis/models/gguf`."""
    from platformdirs import user_cache_path

    return user_cache_path("jarvis", appauthor=False) / "models" / "gguf"


@dataclass
class LlamaCppSettings:
    """How Jarvis runs llama.cpp. Every field is optional in config.yaml."""

    models_dir: Path = field(default_factory=default_models_dir)
    """Where model names are looked up (`<name>.gguf`, or a known alias's file) and where `pull` puts files."""
    python: str = field(default_factory=lambda: sys.executable)
    """The interpreter that has `llama-cpp-python[server]` installed; the server runs as `python -m llama_cpp.server`."""
    host: str = "127.0.0.1"
    """Address the server listens on. Keep it on loopback: the server has no authentication. With `0.0.0.0` or `::`
    Jarvis still connects to it on 127.0.0.1."""
    n_ctx: int = 2048
    """Context size the server is started with (llama.cpp fixes it per server, not per request)."""
    n_threads: int | None = None
    """Threads for generation; None leaves llama-cpp-python's default."""
    extra_args: list[str] = field(default_factory=list)
    """More `llama_cpp.server` flags, appended as given (`["--n_batch", "256"]`). With `--api_key KEY` the server
    wants the key, and Jarvis sends it; the values of secret-looking flags are never shown."""
    start_timeout: float | None = bounded(300.0, above=0, high=604_800,
                                          expected="seconds above 0, at most 604800 (a week), or null")
    """Seconds the server may take to load its model and answer; None uses `timeouts.start`."""

    def __post_init__(self) -> None:
        if self.n_ctx < 1:
            raise ValueError(f"n_ctx must be a positive number of tokens, found {self.n_ctx}")
        if self.n_threads is not None and self.n_threads < 1 and self.n_threads != -1:
            raise ValueError(f"n_threads must be a positive integer (or -1 for all cores), found {self.n_threads}")
        if not self.host:
            raise ValueError("host must not be empty; use 127.0.0.1")
        if not self.python:
            raise ValueError("python must name an interpreter; leave it out to use the one running Jarvis")
        self.python = os.path.expanduser(self.python)
        self.models_dir = Path(os.path.expanduser(str(self.models_dir)))

    @property
    def connect_host(self) -> str:
        """Where clients connect: the server binds where configured, but one bound to every interface (`0.0.0.0`,
        `::`) is reached on loopback."""
        return "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host

    def api_key(self) -> str | None:
        """The key the server is started with (`--api_key` / `--api-key` in extra_args, the last one winning)."""
        found = None
        args = [str(a) for a in self.extra_args]
        for i, arg in enumerate(args):
            name, sep, value = arg.partition("=")
            if name in ("--api_key", "--api-key"):
                found = value if sep else (args[i + 1] if i + 1 < len(args) else None)
        return found or None

    def secrets(self) -> list[str]:
        """What must never appear in any text the plugin produces: the values of secret-looking flags in extra_args
        (`--api_key KEY`), as the core's `redact_argv` finds them."""
        args = [str(a) for a in self.extra_args]
        found = []
        for original, shown in zip(args, redact_argv(args)):
            if shown == "***":
                found.append(original)
            elif shown != original and shown.endswith("=***") and "=" in original:
                found.append(original.split("=", 1)[1])
        return found

    def apply_environment(self, environ: Mapping[str, str]) -> LlamaCppSettings:
        """Called by the core after building the settings from config.yaml: `JARVIS_LLAMACPP_MODELS` wins."""
        override = environ.get(MODELS_ENV)
        if override:
            return dataclasses.replace(self, models_dir=Path(override))
        return self
