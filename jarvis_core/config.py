"""config.yaml: where engines live, the default engine, output folder, timeouts and loadouts.

Lookup order: `--config FILE`, then `./config.yaml`, then `config.yaml` in the user config folder (platformdirs);
no file at all means defaults. Each engine plugin owns its section under `engines:` and describes it with a
dataclass (`EngineSpec.settings`); `build_settings` type-checks YAML against such a dataclass and names the key
path of anything wrong.
"""

from __future__ import annotations

import dataclasses
import os
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Union

from .errors import ConfigError

CONFIG_NAME = "config.yaml"
_SECRET_KEY = re.compile(r"token|secret|password|api_?key", re.IGNORECASE)


@dataclass
class Timeouts:
    start: float = 900.0
    """Seconds an engine may take to become ready (big vLLM models load for minutes)."""
    request: float = 300.0
    """Seconds one request may take."""
    stop: float = 60.0
    """Seconds to wait for an engine to stop and its memory to come back."""


@dataclass
class Config:
    default_engine: str = "ollama"
    """Engine for model IDs without a prefix (they must contain ':' or '/')."""
    output_dir: Path = Path("jarvis-results")
    timeouts: Timeouts = field(default_factory=Timeouts)
    engines: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Raw engine sections; each is validated by its plugin's settings dataclass (see `engine_settings`)."""
    loadouts: dict[str, list[str]] = field(default_factory=dict)
    """Named sets of model IDs for `jarvis loadout`."""
    source: str | None = None
    """The file this came from, or None for defaults."""

    def engine_settings(self, name: str, settings_type: type | None, environ: Mapping[str, str] | None = None) -> Any:
        """The engine's section as its plugin's dataclass, with standard environment variables applied."""
        raw = self.engines.get(name) or {}
        if settings_type is None:
            return dict(raw)
        settings = build_settings(settings_type, raw, source=self.source, path=f"engines.{name}")
        apply_env = getattr(settings, "apply_environment", None)
        if callable(apply_env):
            settings = apply_env(os.environ if environ is None else environ) or settings
        return settings


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file that applies, or None when there is none (defaults)."""
    if explicit is not None:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"Config file '{path}' does not exist; pass an existing file to --config.")
        return path
    local = Path.cwd() / CONFIG_NAME
    if local.is_file():
        return local
    from platformdirs import user_config_path

    user = user_config_path("jarvis", appauthor=False) / CONFIG_NAME
    return user if user.is_file() else None


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = find_config(explicit)
    if path is None:
        return Config()
    data = load_yaml(path)
    if data is None:
        data = {}
    config = build_settings(Config, data, source=str(path), path="", exclude=("source",))
    config.source = str(path)
    return config


def load_yaml(path: Path) -> Any:
    """Parse a YAML file; syntax errors become one line naming the file, line and column."""
    import yaml

    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror}", source=str(path)) from None
    except UnicodeDecodeError:
        raise ConfigError("the file is not UTF-8 text", source=str(path)) from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {problem}", source=where) from None


# --- typed building of dataclasses from YAML ---------------------------------------------------------------------


def build_settings(cls: type, data: Any, *, source: str | None, path: str, exclude: tuple[str, ...] = ()) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value; errors name the key path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of settings, found {_describe(data)}", source=source, path=path or None)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in exclude}
    values = {}
    for key, value in data.items():
        key_path = f"{path}.{key}" if path else str(key)
        if key not in known:
            raise ConfigError(f"unknown setting '{key}'; expected one of: {', '.join(sorted(known))}",
                              source=source, path=key_path)
        values[key] = _convert(hints[key], value, source, key_path)
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # a settings class's __post_init__ rejecting a combination
        raise ConfigError(str(exc), source=source, path=path or None) from None


def _convert(tp: Any, value: Any, source: str | None, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        found = "a value (not shown: the key looks secret)" if _SECRET_KEY.search(path) else _describe(value)
        return ConfigError(f"expected {expected}, found {found}", source=source, path=path)

    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _convert(arg, value, source, path)
            except ConfigError as exc:
                errors.append(exc)
        raise fail(" or ".join(_expected(a) for a in args))
    if origin is Literal:
        if value in args:
            return value
        raise fail("one of " + ", ".join(repr(a) for a in args))
    if dataclasses.is_dataclass(tp):
        return build_settings(tp, value, source=source, path=path)
    if origin in (list, tuple):
        if not isinstance(value, list):
            raise fail(_expected(tp))
        item = args[0] if args else Any
        items = [_convert(item, v, source, f"{path}[{i}]") for i, v in enumerate(value)]
        return items if origin is list else tuple(items)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise fail(_expected(tp))
        key_tp, val_tp = args or (Any, Any)
        return {_convert(key_tp, k, source, path): _convert(val_tp, v, source, f"{path}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise fail("true or false")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        raise fail("a number")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise fail("a string")
    if tp is Path:
        if isinstance(value, str) and value:
            return Path(os.path.expanduser(value))
        raise fail("a path")
    if tp is type(None):
        if value is None:
            return None
        raise fail("nothing (null)")
    raise fail(_expected(tp))  # pragma: no cover - a settings dataclass used a type we do not support


def _expected(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        return "a list"
    if origin is dict or dataclasses.is_dataclass(tp):
        return "a mapping"
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(tp))
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path",
            type(None): "null"}.get(tp, getattr(tp, "__name__", str(tp)))


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{value!r} (true/false)"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return f"{text[:60]}…" if len(text) > 60 else text
