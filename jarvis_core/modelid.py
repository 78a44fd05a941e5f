"""The model-ID grammar: `[prefix]name[#flag[=value]]...`.

- A prefix claimed by an engine plugin (`ol_`, `vllm:`, ...) forces that engine; prefixes ignore case.
- Without a prefix, an ID containing `:` or `/` goes to the default engine; anything else is an error.
- Runtime flags follow `#` (`#stream`, `#repeat=5`); they change how Jarvis runs tests, never what the engine loads.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable

from .errors import EngineNotInstalledError, ModelIdError, UnknownFlagError
from .registry import WELL_KNOWN_PREFIXES, EngineRegistry

_NAME_FORBIDDEN = re.compile(r"[\s\x00-\x1f\x7f]")
#: Characters no model ID may hold anywhere: C0 and C1 controls and DEL (they move the cursor, ring, forge lines),
#: line and paragraph separators, bidi controls (they reorder what the terminal shows) and unpaired surrogates
#: (they cannot be written as UTF-8).
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
MAX_ID_LENGTH = 1024
_TRUE = {"", "1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


@dataclass(frozen=True)
class FlagSpec:
    name: str
    type: type
    help: str
    check: Callable[[Any], bool] = lambda value: True
    expected: str = ""


def _finite(low: float, high: float) -> Callable[[Any], bool]:
    return lambda v: math.isfinite(v) and low <= v <= high


FLAG_SPECS: tuple[FlagSpec, ...] = (
    FlagSpec("stream", bool, "stream the answers and measure time to first token"),
    FlagSpec("repeat", int, "timed repetitions of each test", lambda v: 1 <= v <= 10_000, "an integer from 1 to 10000"),
    FlagSpec("warmup", int, "warmup requests before timing", lambda v: 0 <= v <= 100, "an integer from 0 to 100"),
    FlagSpec("max_tokens", int, "cap on generated tokens", lambda v: 1 <= v <= 10_000_000, "a positive integer"),
    FlagSpec("temperature", float, "sampling temperature", _finite(0.0, 2.0), "a number from 0 to 2"),
    FlagSpec("seed", int, "sampling seed", lambda v: -(2**63) <= v < 2**63, "a 64-bit integer"),
    FlagSpec("timeout", float, "seconds allowed per request", _finite(0.001, 86_400.0), "seconds, above 0"),
)
_SPECS = {spec.name: spec for spec in FLAG_SPECS}


@dataclass(frozen=True)
class Flags:
    """Runtime flags of one model ID. `None` means "not given": the test setup's defaults apply."""

    stream: bool = False
    repeat: int | None = None
    warmup: int | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None
    timeout: float | None = None

    def given(self) -> dict[str, Any]:
        """The flags that differ from their defaults, in the canonical order."""
        defaults = Flags()
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) != getattr(defaults, f.name)}

    def render(self) -> str:
        parts = []
        for name, value in self.given().items():
            parts.append(f"#{name}" if value is True else f"#{name}={_render_value(value)}")
        return "".join(parts)


def _render_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return repr(value) if isinstance(value, float) else str(value)


@dataclass(frozen=True)
class ModelRef:
    """A resolved model ID: which engine, the name its loader gets, and the runtime flags kept apart."""

    engine: str
    name: str
    flags: Flags = field(default_factory=Flags)
    canonical: str = ""
    """The one spelling of this ID, used in reports: canonical prefix, name, flags that differ from defaults."""

    def to_json(self) -> dict[str, Any]:
        return {"engine": self.engine, "model": self.name, "flags": self.flags.given(), "canonical": self.canonical}


def parse_flags(parts: list[str], model_id: str) -> Flags:
    values: dict[str, Any] = {}
    for part in parts:
        key, _, raw = part.partition("=")
        key = key.strip().lower()
        if not key:
            raise ModelIdError(f"Empty flag in '{model_id}': write flags as '#name' or '#name=value'.")
        spec = _SPECS.get(key)
        if spec is None:
            raise UnknownFlagError(f"Unknown flag '#{key}' in '{model_id}'. Known flags: {known_flags()}.")
        if key in values:
            raise UnknownFlagError(f"Flag '#{key}' is given twice in '{model_id}'.")
        has_value = "=" in part
        values[key] = _convert(spec, raw.strip(), has_value, model_id)
    return Flags(**values)


def _convert(spec: FlagSpec, raw: str, has_value: bool, model_id: str) -> Any:
    bad = UnknownFlagError(
        f"Flag '#{spec.name}' in '{model_id}' expects {spec.expected or spec.type.__name__}, found '{raw}'."
    )
    if spec.type is bool:
        lowered = raw.lower()
        if not has_value or lowered in _TRUE - {""}:
            return True
        if lowered in _FALSE:
            return False
        raise UnknownFlagError(f"Flag '#{spec.name}' in '{model_id}' is a switch: write '#{spec.name}' or "
                               f"'#{spec.name}=false', found '{raw}'.")
    if not has_value or not raw:
        raise UnknownFlagError(f"Flag '#{spec.name}' in '{model_id}' needs a value: '#{spec.name}=...'.")
    try:
        value = spec.type(raw)
    except (ValueError, OverflowError):
        raise bad from None
    if not spec.check(value):
        raise bad
    return value


def known_flags() -> str:
    return ", ".join(
        f"#{s.name}" if s.type is bool else f"#{s.name}=<{s.type.__name__}>" for s in FLAG_SPECS
    )


def escape_unsafe(text: str, limit: int = 120) -> str:
    """`text` with every character `_UNSAFE` matches written as an escape (`\\x1b`, `\\u202e`, `\\ud800`), cut
    to `limit` characters: safe to show on a terminal as one line."""
    shown = _UNSAFE.sub(lambda m: _escape_char(m.group(0)), text[:limit])
    return shown + "…" if len(text) > limit else shown


def _escape_char(char: str) -> str:
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def _describe_unsafe(char: str) -> str:
    code = ord(char)
    if 0xD800 <= code <= 0xDFFF:
        kind = "an unpaired surrogate"
    elif code < 0x20 or 0x7F <= code <= 0x9F:
        kind = "a control character"
    elif code in (0x2028, 0x2029):
        kind = "a line separator"
    else:
        kind = "a bidirectional-text control"
    return f"{kind} ({_escape_char(char)}, U+{code:04X})"


def check_text(model_id: str) -> None:
    """Refuse IDs no engine could mean and no terminal should show: too long, or holding a control, bidi or
    unpaired-surrogate character anywhere (flags included). The message shows such characters escaped."""
    if len(model_id) > MAX_ID_LENGTH:
        raise ModelIdError(f"Model ID '{escape_unsafe(model_id, 60)}' is {len(model_id)} characters long; "
                           f"model IDs have at most {MAX_ID_LENGTH}.")
    bad = _UNSAFE.search(model_id)
    if bad is not None:
        raise ModelIdError(f"Model ID '{escape_unsafe(model_id)}' contains {_describe_unsafe(bad.group(0))} at "
                           f"position {bad.start() + 1}; model IDs are printable text: retype the ID.")


def resolve(model_id: str, registry: EngineRegistry, default_engine: str | None) -> ModelRef:
    """Resolve a model ID against the installed engines. Raises only `ModelIdError` (and its subclasses)."""
    if isinstance(model_id, str):
        check_text(model_id)
    if not isinstance(model_id, str) or not model_id.strip():
        raise ModelIdError("Empty model ID: expected '[prefix]name[#flag...]', for example 'ol_qwen2.5:0.5b#stream'.")
    text = model_id.strip()
    base, *flag_parts = text.split("#")
    flags = parse_flags(flag_parts, text)

    matched = registry.match_prefix(base)
    if matched is not None:
        prefix, engine = matched
        name = base[len(prefix):]
    else:
        _raise_if_known_prefix(base, registry)
        if ":" not in base and "/" not in base:
            raise ModelIdError(
                f"Cannot tell which engine serves '{text}': expected '[prefix]name[#flag...]' with a prefix "
                f"(known: {registry.describe_prefixes()}) or a name containing ':' or '/' for the default engine, "
                f"for example 'ol_qwen2.5:0.5b' or 'qwen2.5:0.5b#stream'."
            )
        if not default_engine or default_engine not in registry.engines:
            raise EngineNotInstalledError(
                f"'{text}' has no prefix and goes to the default engine '{default_engine}', which no installed "
                f"plugin provides. Install its plugin, or set 'default_engine' in config.yaml to one of: "
                f"{', '.join(sorted(registry.engines)) or 'none installed'}."
            )
        engine, name = default_engine, base

    if not name:
        raise ModelIdError(f"'{text}' has a prefix but no model name after it.")
    if _NAME_FORBIDDEN.search(name):
        raise ModelIdError(f"Model name in '{text}' contains whitespace or control characters.")
    canonical = registry.canonical_prefix(engine) + name + flags.render()
    return ModelRef(engine=engine, name=name, flags=flags, canonical=canonical)


def _raise_if_known_prefix(base: str, registry: EngineRegistry) -> None:
    lowered = base.lower()
    for prefix, dist in sorted(WELL_KNOWN_PREFIXES.items(), key=lambda item: -len(item[0])):
        if lowered.startswith(prefix) and prefix not in registry.prefixes:
            raise EngineNotInstalledError(
                f"'{base}' uses prefix '{prefix}' of the plugin {dist}, which is not installed or is switched off: "
                f"pip install {dist} (and check JARVIS_LOAD_PLUGINS)."
            )
