"""Domain exceptions. The CLI layer turns them into one-line click errors; the library never imports click for them."""

from __future__ import annotations


class JarvisError(Exception):
    """Base class of every error Jarvis reports to a user as one line."""

    #: Process exit code the CLI uses for this error.
    exit_code = 1


class UsageError(JarvisError):
    """The user asked for something Jarvis cannot do as written (bad argument, unknown name)."""

    exit_code = 2


class ConfigError(UsageError):
    """A configuration or setups file is wrong: names the file, the key path, what was found and what is expected."""

    def __init__(self, message: str, *, source: str | None = None, path: str | None = None) -> None:
        self.source = source
        self.path = path
        where = ", ".join(part for part in (source, path and f"at '{path}'") if part)
        super().__init__(f"{where}: {message}" if where else message)


class ModelIdError(UsageError):
    """A model ID does not follow the grammar (prefix, name, #flags)."""


class UnknownFlagError(ModelIdError):
    """A `#flag` after a model ID is not one Jarvis knows, or its value has the wrong type."""


class PluginError(JarvisError):
    """A plugin is broken or two plugins conflict (for example over a prefix)."""


class DuplicatePrefixError(PluginError):
    """Two plugins claim the same model-ID prefix."""


class EngineNotInstalledError(ModelIdError):
    """A model ID names an engine whose plugin is not installed."""


class EngineError(JarvisError):
    """An engine failed: not installed, not reachable, would not start, died, or answered with an error."""

    def __init__(self, message: str, *, engine: str | None = None) -> None:
        self.engine = engine
        super().__init__(message)


class EngineUnavailableError(EngineError):
    """The engine or its runtime (executable, Docker, GPU) is not there, so nothing can run on it."""


class ModelMissingError(EngineError):
    """The model is not present locally and downloads were not forced."""


class EngineTimeoutError(EngineError):
    """The engine did not become ready (or answer) before its deadline."""


class Interrupted(JarvisError):
    """The run was interrupted by Ctrl-C or SIGTERM; what was measured is kept."""

    exit_code = 130
