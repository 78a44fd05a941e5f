"""config.yaml: where engines live, the default engine, output folder, timeouts and loadouts.

Lookup order: `--config FILE`, then `./config.yaml`, then `config.yaml` in the user config folder (platformdirs);
no file at all means defaults. Each engine plugin owns its section under `engines:` and describes it with a
dataclass (`EngineSpec.settings`); `build_settings` type-checks YAML against such a dataclass and names the key
path of anything wrong.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import types
import typing
from dataclasses import MISSING, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Literal, Mapping, Union

from .errors import ConfigError
from .redact import is_secret_name

CONFIG_NAME = "config.yaml"

#: Limits on every YAML file Jarvis reads (config.yaml, test_setups.yaml).
MAX_YAML_BYTES = 1 << 20
MAX_YAML_DEPTH = 64
#: How many values aliases (`*name`) may add to a file beyond those written in it: plenty for sharing a block of
#: settings, and a "billion laughs" file ends here instead of taking the memory.
MAX_ALIAS_EXPANSION = 100_000
#: Integers in settings fit in 64 bits.
_INT_LIMIT = 2**63


# --- bounds on numbers: a field's metadata, checked by build_settings ----------------------------------------------


@dataclass(frozen=True)
class Bounds:
    """The range a number setting (or each number of a list setting) must lie in."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    """The value must be above `low`, not equal to it."""
    expected: str = ""
    """How the error says what is expected (default: built from the bounds)."""

    def allows(self, value: float) -> bool:
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or value <= self.high

    def describe(self) -> str:
        if self.expected:
            return self.expected
        if self.low is not None and self.high is not None and not self.low_open:
            return f"a number from {self.low:g} to {self.high:g}"
        parts = []
        if self.low is not None:
            parts.append(f"{'above' if self.low_open else 'at least'} {self.low:g}")
        if self.high is not None:
            parts.append(f"at most {self.high:g}")
        return "a number " + " and ".join(parts)


#: The metadata key of a field's `Bounds`.
BOUNDS = "jarvis.bounds"
#: Bounds of a TCP port; given automatically to any int setting named `port` or `*_port`.
PORT = Bounds(1, 65535, expected="a port from 1 to 65535")


def bounded(default: Any = MISSING, *, low: float | None = None, high: float | None = None,
            above: float | None = None, expected: str = "", **kwargs: Any) -> Any:
    """A dataclass field whose number (or each number of its list) `build_settings` checks: `low <= value <= high`,
    or `value > above`. For plugins' settings too: `port: int = bounded(8300, low=1, high=65535)`,
    `stop_timeout: float = bounded(30.0, above=0)`."""
    if above is not None and low is not None:
        raise ValueError("give `low` or `above`, not both")
    bounds = Bounds(above if above is not None else low, high, low_open=above is not None, expected=expected)
    metadata = {**kwargs.pop("metadata", {}), BOUNDS: bounds}
    return field(default=default, metadata=metadata, **kwargs)


def field_bounds(f: dataclasses.Field, tp: Any) -> Bounds | None:
    """The bounds `build_settings` checks for a field: its own, or a port's for an int named `port`/`*_port`."""
    bounds = f.metadata.get(BOUNDS) if f.metadata else None
    if bounds is not None:
        return bounds
    if (f.name == "port" or f.name.endswith("_port")) and int in (tp, *typing.get_args(tp)):
        return PORT
    return None


_SECONDS = "seconds above 0, at most 604800 (a week)"


@dataclass
class Timeouts:
    start: float = bounded(900.0, above=0, high=604_800, expected=_SECONDS)
    """Seconds an engine may take to become ready (big vLLM models load for minutes)."""
    request: float = bounded(300.0, above=0, high=604_800, expected=_SECONDS)
    """Seconds one request may take."""
    stop: float = bounded(60.0, above=0, high=604_800, expected=_SECONDS)
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

    def check_engines(self, installed: Iterable[str]) -> None:
        """Refuse a section under `engines:` or a `default_engine` that names no engine: neither an installed one
        nor one of the engines published with Jarvis (whose plugin may be switched off). The error names the
        installed engines."""
        from .registry import WELL_KNOWN_PREFIXES

        installed = sorted(installed)
        known = set(installed) | {dist.removeprefix("jarvis-") for dist in WELL_KNOWN_PREFIXES.values()}

        def unknown(name: str, path: str) -> ConfigError:
            close = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            return ConfigError(f"unknown engine '{_shown(name)}'{hint}; installed engines: "
                               f"{', '.join(installed) or 'none (no engine plugin is installed)'}",
                               source=self.source, path=path)

        for name in self.engines:
            if name not in known:
                raise unknown(str(name), f"engines.{_shown(str(name))}")
        if self.default_engine not in known:
            raise unknown(self.default_engine, "default_engine")


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
    """Parse a YAML file safely; every problem becomes one line naming the file (and line and column where there
    is one): a file over `MAX_YAML_BYTES`, not UTF-8 text, a syntax error, a duplicate key, aliases that expand past
    `MAX_ALIAS_EXPANSION` values or refer to themselves, nesting deeper than `MAX_YAML_DEPTH`, an invalid value."""
    import yaml

    source = str(path)
    try:
        with open(path, "rb") as fh:
            raw = fh.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read the file: {exc.strerror or exc}", source=source) from None
    if len(raw) > MAX_YAML_BYTES:
        raise ConfigError(f"the file is larger than {MAX_YAML_BYTES // 2**20} MiB, the limit for a YAML file "
                          f"Jarvis reads; is it the right file?", source=source)
    text = _decode(raw, source)
    loader = _loader()(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_nodes(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        position = getattr(exc, "position", None)
        if mark is not None:
            where = f"{path}:{mark.line + 1}:{mark.column + 1}"
        elif isinstance(position, int):  # a reader error: a character YAML does not allow
            line = text.count("\n", 0, position) + 1
            where = f"{path}:{line}:{position - (text.rfind(chr(10), 0, position) + 1) + 1}"
        else:
            where = source
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"invalid YAML: {_shown(problem)}", source=where) from None
    except RecursionError:
        raise ConfigError(f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels", source=source) from None
    except (ValueError, TypeError, LookupError, ArithmeticError) as exc:  # a constructor's bug on a strange value
        raise ConfigError(f"invalid YAML: {_shown(str(exc) or type(exc).__name__)}", source=source) from None
    finally:
        loader.dispose()


def _decode(raw: bytes, source: str) -> str:
    import codecs

    if raw.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ConfigError("the file is UTF-32 text; save it as UTF-8", source=source)
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise ConfigError("the file is UTF-16 text; save it as UTF-8", source=source)
    if b"\x00" in raw:
        line = raw.count(b"\n", 0, raw.index(b"\x00")) + 1
        raise ConfigError(f"the file is binary, not YAML text (a NUL byte on line {line})", source=source)
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"the file is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); save it as "
                          f"UTF-8", source=source) from None


_LOADER: type | None = None


def _loader() -> type:
    """A safe loader (libyaml's when there is one) that turns a bad scalar (`2001-13-01`, `!!int x`) into an error
    with its line, and, in the pure-Python parser, stops nesting at `MAX_YAML_DEPTH` (libyaml has its own limit)."""
    global _LOADER
    if _LOADER is not None:
        return _LOADER
    import yaml
    from yaml.composer import ComposerError
    from yaml.constructor import ConstructorError

    base = getattr(yaml, "CSafeLoader", None) or yaml.SafeLoader

    class Loader(base):  # type: ignore[valid-type, misc]
        _depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:  # pure-Python parser only
            self._depth += 1
            try:
                if self._depth > MAX_YAML_DEPTH:
                    raise ComposerError(None, None, f"nested deeper than {MAX_YAML_DEPTH} levels",
                                        self.peek_event().start_mark)
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

        def construct_object(self, node: Any, deep: bool = False) -> Any:
            try:
                return super().construct_object(node, deep)
            except yaml.YAMLError:
                raise
            except Exception as exc:  # PyYAML's constructors let ValueError, IndexError, ... through on bad scalars
                raise ConstructorError(None, None, f"invalid value: {exc or type(exc).__name__}",
                                       node.start_mark) from None

    _LOADER = Loader
    return Loader


_MERGE_TAG = "tag:yaml.org,2002:merge"


def _check_nodes(root: Any, source: str) -> None:
    """Walk the parsed node graph once (each node once, however many aliases share it): duplicate keys, aliases
    that refer to themselves or expand past `MAX_ALIAS_EXPANSION` values, nesting past `MAX_YAML_DEPTH`."""
    from yaml.nodes import MappingNode, ScalarNode

    def at(node: Any) -> str:
        mark = node.start_mark
        return f"{source}:{mark.line + 1}:{mark.column + 1}"

    def children(node: Any) -> list[Any]:
        if type(node) is MappingNode:
            return [n for pair in node.value for n in pair]
        return node.value  # a sequence

    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_nodes: set[int] = set()
    written = 0
    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            total, deepest = 1, 0
            for kid in children(node):
                if type(kid) is ScalarNode:
                    total += 1
                    deepest = deepest or 1
                else:
                    total += size[id(kid)]
                    deepest = max(deepest, depth[id(kid)])
            size[key], depth[key] = total, deepest + 1
            open_nodes.discard(key)
            if total > written + MAX_ALIAS_EXPANSION:
                raise ConfigError(f"invalid YAML: aliases expand to more than {MAX_ALIAS_EXPANSION} values (a "
                                  f"'billion laughs' file?); write the values out, or use fewer aliases",
                                  source=at(node))
            if deepest + 1 > MAX_YAML_DEPTH:
                raise ConfigError(f"invalid YAML: nested deeper than {MAX_YAML_DEPTH} levels", source=at(node))
            continue
        if type(node) is ScalarNode:
            written += 1
            continue
        if key in size:
            continue
        if key in open_nodes:
            raise ConfigError("invalid YAML: an alias refers to the block that contains it", source=at(node))
        open_nodes.add(key)
        kids = children(node)
        written += 1
        if type(node) is MappingNode:
            seen: dict[tuple[str, str], Any] = {}
            for key_node, _ in node.value:
                if type(key_node) is not ScalarNode or key_node.tag == _MERGE_TAG:
                    continue
                first = seen.setdefault((key_node.tag, key_node.value), key_node)
                if first is not key_node:
                    raise ConfigError(f"invalid YAML: duplicate key '{_shown(key_node.value)}' (first on line "
                                      f"{first.start_mark.line + 1}); keep one", source=at(key_node))
        stack.append((node, True))
        stack.extend((kid, False) for kid in kids if type(kid) is not ScalarNode)
        written += sum(1 for kid in kids if type(kid) is ScalarNode)


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _shown(text: str, limit: int = 80) -> str:
    """Text from a file, safe to print in a one-line error: control and bidi characters escaped, cut short."""
    shown = _UNSAFE.sub(lambda m: m.group(0).encode("unicode_escape", "backslashreplace").decode("ascii"),
                        text[:limit])
    return shown + "…" if len(text) > limit else shown


# --- typed building of dataclasses from YAML ---------------------------------------------------------------------


def build_settings(cls: type, data: Any, *, source: str | None, path: str, exclude: tuple[str, ...] = ()) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and value; errors name the key path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of settings, found {_describe(data)}", source=source, path=path or None)
    hints = typing.get_type_hints(cls)
    known = {f.name: f for f in dataclasses.fields(cls) if f.init and f.name not in exclude}
    values = {}
    for key, value in data.items():
        key_path = f"{path}.{_shown(str(key))}" if path else _shown(str(key))
        if key not in known:
            raise ConfigError(f"unknown setting '{_shown(str(key))}'; expected one of: {', '.join(sorted(known))}",
                              source=source, path=key_path)
        values[key] = _convert(hints[key], value, source, key_path)
        bounds = field_bounds(known[key], hints[key])
        if bounds is not None:
            _check_bounds(bounds, values[key], source, key_path)
    try:
        return cls(**values)
    except (ValueError, TypeError) as exc:  # a settings class's __post_init__ rejecting a combination
        raise ConfigError(_shown(str(exc), 300), source=source, path=path or None) from None


def _check_bounds(bounds: Bounds, value: Any, source: str | None, path: str) -> None:
    numbers = value if isinstance(value, (list, tuple)) else [value]
    for number in numbers:
        if isinstance(number, (int, float)) and not isinstance(number, bool) and not bounds.allows(number):
            raise ConfigError(f"expected {bounds.describe()}, found {_describe(number)}", source=source, path=path)


def _convert(tp: Any, value: Any, source: str | None, path: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)

    def fail(expected: str) -> ConfigError:
        found = "a value (not shown: the key looks secret)" if is_secret_name(path) else _describe(value)
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
            if -_INT_LIMIT <= value < _INT_LIMIT:
                return value
            raise fail("an integer of at most 64 bits")
        raise fail("an integer")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                number = float(value)
            except OverflowError:  # an integer too large for a float
                raise fail("a finite number") from None
            if math.isfinite(number):
                return number
            raise fail("a finite number")
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
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 200:
        return f"a number of about {int(value.bit_length() * 0.30103) + 1} digits"
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return f"{value!r} (true/false)"
    if isinstance(value, (dict, list)):
        return f"a {'mapping' if isinstance(value, dict) else 'list'}"
    text = repr(value)
    return f"{text[:60]}…" if len(text) > 60 else text
