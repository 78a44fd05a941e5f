"""test_setups.yaml: the tests, their defaults, and the setups (named lists of model IDs) to run them on.

The format is documented in docs/test-setups.md and in the comments of the shipped test_setups.yaml. Errors name
the file, the place (`tests[2].check`) and what to write instead.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .config import load_yaml
from .errors import ConfigError

if TYPE_CHECKING:
    from .load import LoadProfile

SETUPS_NAME = "test_setups.yaml"
#: The most repetitions of a test: `defaults.repetitions` and `--repeat` share it.
MAX_REPETITIONS = 10_000
CHECK_KINDS = ("contains", "contains_any", "contains_all", "regex", "equals", "json")
CAPABILITIES = ("vision",)


@dataclass(frozen=True)
class Check:
    kind: str
    value: Any

    def describe(self) -> str:
        return f"{self.kind} {self.value!r}" if self.kind != "json" else "valid JSON"

    def passes(self, answer: str) -> tuple[bool, str]:
        """(passed, reason when not). Text comparisons ignore case; `equals` also ignores surrounding whitespace."""
        text = answer.casefold()
        if self.kind == "contains":
            ok = str(self.value).casefold() in text
        elif self.kind == "contains_any":
            ok = any(str(v).casefold() in text for v in self.value)
        elif self.kind == "contains_all":
            ok = all(str(v).casefold() in text for v in self.value)
        elif self.kind == "regex":
            ok = re.search(self.value, answer, re.IGNORECASE | re.DOTALL) is not None
        elif self.kind == "equals":
            ok = answer.strip().casefold() == str(self.value).strip().casefold()
        else:
            try:
                json.loads(_strip_code_fence(answer))
                ok = True
            except ValueError:
                ok = False
        if ok:
            return True, ""
        shown = answer.strip().replace("\n", " ")
        return False, f"expected {self.describe()}, got {shown[:120]!r}"


def _strip_code_fence(text: str) -> str:
    match = re.match(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", text, re.DOTALL)
    return match.group(1) if match else text


@dataclass(frozen=True)
class TestCase:
    id: str
    messages: tuple[tuple[str, str], ...]
    """(role, content) pairs; the last is the user's prompt."""
    images: tuple[Path, ...] = ()
    checks: tuple[Check, ...] = ()
    requires: tuple[str, ...] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    seed: int | None = None


@dataclass(frozen=True)
class Defaults:
    repetitions: int = 3
    warmup: int = 1
    """Warmup requests per model before timing; 0 makes the first timed sample the cold one."""
    timeout: float = 300.0
    max_tokens: int | None = 128
    temperature: float | None = 0.0
    seed: int | None = 42


@dataclass(frozen=True)
class ModelEntry:
    id: str
    capabilities: tuple[str, ...] | None = None
    """Declared capabilities; None leaves it to the engine (e.g. Ollama's /api/show)."""
    label: str | None = None
    """The setups file's `label:`: models sharing one are compared side by side (written as `label` in results)."""


@dataclass(frozen=True)
class Setup:
    name: str
    models: tuple[ModelEntry, ...]
    tests: tuple[str, ...] | None = None
    """Restrict the setup to these test IDs; None runs every test, () none (a load-only setup)."""
    load: LoadProfile | None = None
    """Load levels run on each model after its tests (docs/load.md)."""


@dataclass
class Suite:
    source: str
    defaults: Defaults = field(default_factory=Defaults)
    tests: dict[str, TestCase] = field(default_factory=dict)
    setups: list[Setup] = field(default_factory=list)

    def tests_for(self, setup: Setup) -> list[TestCase]:
        names = setup.tests if setup.tests is not None else tuple(self.tests)
        return [self.tests[n] for n in names]


def find_setups(explicit: str | Path | None) -> Path:
    path = Path(explicit) if explicit is not None else Path.cwd() / SETUPS_NAME
    if not path.is_file():
        hint = "pass an existing file to --setups" if explicit is not None else \
            f"create {SETUPS_NAME} here (see docs/test-setups.md) or pass --setups FILE"
        raise ConfigError(f"Test setups file '{path}' does not exist; {hint}.")
    return path


def load_suite(path: Path) -> Suite:
    data = load_yaml(path)
    return parse_suite(data, str(path), base_dir=path.parent)


def parse_suite(data: Any, source: str, base_dir: Path) -> Suite:
    def err(where: str, message: str) -> ConfigError:
        return ConfigError(message, source=source, path=where)

    if not isinstance(data, dict):
        raise err("", "expected a mapping with 'tests' and 'setups' (see docs/test-setups.md)")
    unknown = set(data) - {"defaults", "tests", "setups"}
    if unknown:
        raise err(str(sorted(unknown, key=str)[0]), "unknown section; expected 'defaults', 'tests' and 'setups'")
    suite = Suite(source=source, defaults=_defaults(data.get("defaults") or {}, err))

    tests = data.get("tests", [])
    if not isinstance(tests, list):
        raise err("tests", "expected a list of tests, each with an 'id' and a 'prompt'")
    for i, raw in enumerate(tests):
        test = _test(raw, f"tests[{i}]", err, base_dir)
        if test.id in suite.tests:
            raise err(f"tests[{i}].id", f"test id '{test.id}' is used twice; give each test its own id")
        suite.tests[test.id] = test

    setups = data.get("setups")
    if isinstance(setups, list):  # a plain list of model IDs: each model its own setup, running every test
        if not setups:
            raise err("setups", "expected at least one model ID")
        if not suite.tests:
            raise err("tests", "expected a non-empty list of tests, each with an 'id' and a 'prompt'")
        for i, entry in enumerate(setups):
            model = _model_entry(entry, f"setups[{i}]", err)
            suite.setups.append(Setup(model.id, (model,)))
    elif isinstance(setups, dict) and setups:
        for name, raw in setups.items():
            suite.setups.append(_setup(str(name), raw, f"setups.{name}", err, suite))
    else:
        raise err("setups", "expected a mapping of setup names to model lists, or a plain list of model IDs")
    return suite


def _defaults(raw: Any, err) -> Defaults:
    from .config import build_settings

    if not isinstance(raw, dict):
        raise err("defaults", "expected a mapping (repetitions, warmup, timeout, max_tokens, temperature, seed)")
    try:
        defaults = build_settings(Defaults, raw, source=None, path="defaults")
    except ConfigError as exc:
        raise err(exc.path or "defaults", str(exc).split(": ", 1)[-1]) from None
    if not 1 <= defaults.repetitions <= MAX_REPETITIONS:
        raise err("defaults.repetitions", f"expected 1 to {MAX_REPETITIONS} (as --repeat), found {defaults.repetitions}")
    if not 0 <= defaults.warmup <= 100:
        raise err("defaults.warmup", f"expected 0 to 100, found {defaults.warmup}")
    if not 0 < defaults.timeout <= 604_800:
        raise err("defaults.timeout", f"expected seconds above 0 (at most a week), found {defaults.timeout}")
    if defaults.max_tokens is not None and not 1 <= defaults.max_tokens <= 1_000_000:
        raise err("defaults.max_tokens", f"expected 1 to 1000000 tokens, found {defaults.max_tokens}")
    if defaults.temperature is not None and not 0 <= defaults.temperature <= 10:
        raise err("defaults.temperature", f"expected 0 to 10, found {defaults.temperature}")
    return defaults


def _test(raw: Any, where: str, err, base_dir: Path) -> TestCase:
    if not isinstance(raw, dict):
        raise err(where, "expected a mapping with 'id' and 'prompt' (or 'messages')")
    known = {"id", "prompt", "system", "messages", "images", "check", "requires", "max_tokens", "temperature", "seed"}
    for key in raw:
        if key not in known:
            raise err(f"{where}.{key}", f"unknown key; expected one of: {', '.join(sorted(known))}")
    test_id = raw.get("id")
    if not isinstance(test_id, (str, int)) or not str(test_id).strip():
        raise err(f"{where}.id", "every test needs an 'id' (a short name such as capital-france)")
    messages: list[tuple[str, str]] = []
    if isinstance(raw.get("system"), str):
        messages.append(("system", raw["system"]))
    elif raw.get("system") is not None:
        raise err(f"{where}.system", "expected text")
    if "messages" in raw:
        if "prompt" in raw:
            raise err(where, "give either 'prompt' or 'messages', not both")
        if not isinstance(raw["messages"], list) or not raw["messages"]:
            raise err(f"{where}.messages", "expected a list of {role, content} mappings")
        for j, m in enumerate(raw["messages"]):
            if not (isinstance(m, dict) and m.get("role") in ("system", "user", "assistant")
                    and isinstance(m.get("content"), str)):
                raise err(f"{where}.messages[{j}]", "expected {role: system|user|assistant, content: text}")
            messages.append((m["role"], m["content"]))
    elif isinstance(raw.get("prompt"), str) and raw["prompt"].strip():
        messages.append(("user", raw["prompt"]))
    else:
        raise err(f"{where}.prompt", "every test needs a 'prompt' (text) or 'messages'")
    images = []
    for j, img in enumerate(_as_list(raw.get("images"))):
        path = (base_dir / str(img)) if not Path(str(img)).is_absolute() else Path(str(img))
        if not path.is_file():
            raise err(f"{where}.images[{j}]", f"image file '{img}' not found (paths are relative to the setups file)")
        images.append(path)
    requires = tuple(str(r) for r in _as_list(raw.get("requires")))
    for r in requires:
        if r not in CAPABILITIES:
            raise err(f"{where}.requires", f"unknown capability '{r}'; known: {', '.join(CAPABILITIES)}")
    if images and "vision" not in requires:
        requires += ("vision",)
    for key, kind, low, high in (("max_tokens", int, 1, 1_000_000), ("seed", int, 0, 2**63 - 1),
                                 ("temperature", (int, float), 0, 10)):
        value = raw.get(key)
        if value is not None and (not isinstance(value, kind) or isinstance(value, bool) or not low <= value <= high):
            raise err(f"{where}.{key}", f"expected a number from {low} to {high}, found {value!r}")
    return TestCase(id=str(test_id), messages=tuple(messages), images=tuple(images),
                    checks=_checks(raw.get("check"), f"{where}.check", err), requires=requires,
                    max_tokens=raw.get("max_tokens"), temperature=raw.get("temperature"), seed=raw.get("seed"))


def _checks(raw: Any, where: str, err) -> tuple[Check, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, dict) or not raw:
        raise err(where, f"expected a mapping such as {{contains: Paris}}; kinds: {', '.join(CHECK_KINDS)}")
    checks = []
    for kind, value in raw.items():
        if kind not in CHECK_KINDS:
            raise err(f"{where}.{kind}", f"unknown check; expected one of: {', '.join(CHECK_KINDS)}")
        if kind in ("contains_any", "contains_all"):
            if not isinstance(value, list) or not value:
                raise err(f"{where}.{kind}", "expected a non-empty list of texts")
        elif kind == "regex":
            try:
                re.compile(str(value))
            except re.error as exc:
                raise err(f"{where}.regex", f"invalid regular expression: {exc}") from None
        elif kind == "json":
            if value is not True:
                raise err(f"{where}.json", "write 'json: true'")
        elif not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise err(f"{where}.{kind}", "expected a text")
        checks.append(Check(kind, value))
    return tuple(checks)


#: The longest `label:` of a model entry: it names rows, chart series and console lines.
MAX_LABEL = 80


def _model_entry(raw: Any, where: str, err) -> ModelEntry:
    if isinstance(raw, str) and raw.strip():
        return ModelEntry(raw.strip())
    if isinstance(raw, dict) and isinstance(raw.get("id"), str):
        caps = raw.get("capabilities")
        if caps is not None and (not isinstance(caps, list) or any(c not in CAPABILITIES for c in caps)):
            raise err(f"{where}.capabilities", f"expected a list of: {', '.join(CAPABILITIES)}")
        extra = set(raw) - {"id", "capabilities", "label"}
        if extra:
            raise err(f"{where}.{sorted(extra, key=str)[0]}",
                      "unknown key; a model entry has 'id' and 'capabilities', and 'label' (see docs/test-setups.md)")
        return ModelEntry(raw["id"].strip(), tuple(caps) if caps is not None else None,
                          _label(raw.get("label"), f"{where}.label", err) if "label" in raw else None)
    raise err(where, "expected a model ID such as 'ol_qwen2.5:0.5b#stream' (or {id: ..., capabilities: [vision]})")


def _label(raw: Any, where: str, err) -> str:
    """A model entry's `label:`: one line of text, up to MAX_LABEL characters."""
    if not isinstance(raw, str):
        shown = "nothing" if raw is None else repr(raw)
        raise err(where, f"expected a text such as qwen2.5-0.5b (quote it if it looks like a number), found {shown}")
    label = raw.strip()
    if not label or len(label) > MAX_LABEL or any(not c.isprintable() for c in label):
        raise err(where, f"expected one line of 1 to {MAX_LABEL} printable characters such as qwen2.5-0.5b, "
                         f"found {raw[:MAX_LABEL + 10]!r}")
    return label


def _setup(name: str, raw: Any, where: str, err, suite: Suite) -> Setup:
    if isinstance(raw, list):
        raw = {"models": raw}
    if not isinstance(raw, dict):
        raise err(where, "expected a list of model IDs, or a mapping with 'models' (and optionally 'tests')")
    extra = set(raw) - {"models", "tests", "load"}
    if extra:
        raise err(f"{where}.{sorted(extra)[0]}", "unknown key; a setup has 'models', and optionally 'tests' and 'load'")
    models = raw.get("models")
    if not isinstance(models, list) or not models:
        raise err(f"{where}.models", "expected a non-empty list of model IDs")
    entries = tuple(_model_entry(m, f"{where}.models[{i}]", err) for i, m in enumerate(models))
    load = parse_load(raw["load"], f"{where}.load", err) if raw.get("load") is not None else None
    tests = raw.get("tests")
    if tests is not None:
        if not isinstance(tests, list) or (not tests and load is None):
            raise err(f"{where}.tests", "expected a list of test ids (an empty list only in a setup with 'load')")
        for i, t in enumerate(tests):
            if str(t) not in suite.tests:
                raise err(f"{where}.tests[{i}]", f"no test with id '{t}'; known: {', '.join(suite.tests)}")
        tests = tuple(str(t) for t in tests)
    if load is None and (tests == () or not suite.tests):
        raise err(where, "this setup has nothing to run: add tests (under 'tests:') or a 'load:' block")
    if load is not None and (tests == () or not suite.tests) and load.prompt_tokens is None:
        raise err(f"{where}.load", "a setup without tests needs 'prompt_tokens' for its load requests")
    return Setup(name, entries, tests, load)


LOAD_KEYS = ("concurrency", "rate", "arrival", "max_concurrency", "sweep", "requests", "duration", "warmup",
             "prompt_tokens", "output_tokens", "slo", "share", "seed")


def parse_load(raw: Any, where: str, err: Any) -> LoadProfile:
    """A setup's `load:` block (or `jarvis bench`'s options) as a LoadProfile; every value checked for range."""
    from .load import MAX_IN_FLIGHT, LoadProfile, Slo

    if not isinstance(raw, dict):
        raise err(where, f"expected a mapping with concurrency, rate or sweep (keys: {', '.join(LOAD_KEYS)})")
    for key in raw:
        if key not in LOAD_KEYS:
            raise err(f"{where}.{key}", f"unknown key; expected one of: {', '.join(LOAD_KEYS)}")

    def count(key: str, low: int, high: int, value: Any = None) -> int | None:
        value = raw.get(key) if value is None else value
        if value is None:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
            raise err(f"{where}.{key}", f"expected a whole number from {low} to {high}, found {value!r}")
        return value

    concurrency = tuple(count("concurrency", 1, MAX_IN_FLIGHT, c) or 0 for c in _as_list(raw.get("concurrency")))
    rates = []
    for r in _as_list(raw.get("rate")):
        if not isinstance(r, (int, float)) or isinstance(r, bool) or not 0 < r <= 10_000 or r != r:
            raise err(f"{where}.rate", f"expected requests per second above 0 (up to 10000), found {r!r}")
        rates.append(float(r))
    sweep = raw.get("sweep", False)
    if not isinstance(sweep, bool):
        raise err(f"{where}.sweep", "expected true or false")
    if not concurrency and not rates and not sweep:
        raise err(where, "give 'concurrency' (requests in flight), 'rate' (requests per second) or 'sweep: true'")
    arrival = raw.get("arrival", "poisson")
    if arrival not in ("poisson", "constant"):
        raise err(f"{where}.arrival", f"expected poisson or constant, found {arrival!r}")
    slo = None
    if raw.get("slo") is not None:
        if not isinstance(raw["slo"], dict) or not raw["slo"] or set(raw["slo"]) - {"ttft", "itl", "e2e"}:
            raise err(f"{where}.slo", "expected a mapping of ttft, itl and/or e2e to durations (500ms, 10s)")
        slo = Slo(**{k: parse_duration(v, f"{where}.slo.{k}", err) for k, v in raw["slo"].items()})
    share = raw.get("share", 0.9)
    if not isinstance(share, (int, float)) or isinstance(share, bool) or not 0 < share <= 1:
        raise err(f"{where}.share", f"expected a share above 0 and at most 1 (0.9 for 90 %), found {share!r}")
    duration = parse_duration(raw["duration"], f"{where}.duration", err) if raw.get("duration") is not None else None
    return LoadProfile(concurrency=concurrency, rate=tuple(rates), arrival=arrival,
                       max_concurrency=count("max_concurrency", 1, MAX_IN_FLIGHT), sweep=sweep,
                       requests=count("requests", 1, 1_000_000), duration=duration,
                       warmup=count("warmup", 0, 10_000) if raw.get("warmup") is not None else 2,
                       prompt_tokens=count("prompt_tokens", 1, 1_000_000),
                       output_tokens=count("output_tokens", 1, 1_000_000), slo=slo, share=float(share),
                       seed=count("seed", 0, 2**63) if raw.get("seed") is not None else 42)


_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m)?\s*$")


def parse_duration(value: Any, where: str, err: Any) -> float:
    """Seconds from `500ms`, `2s`, `1.5m` or a plain number of seconds; above 0 and finite."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise err(where, f"expected a duration such as 500ms, 10s or 2m, found {value!r}")
        seconds = float(match.group(1)) * {"ms": 0.001, "s": 1.0, "m": 60.0, None: 1.0}[match.group(2)]
    if not 0 < seconds < 10**7:
        raise err(where, f"expected a duration above 0, found {value!r}")
    return seconds


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return value if isinstance(value, list) else [value]
