"""`jarvis compare`: what changed between two runs, and whether each change is beyond the noise of both.

`compare(path_a, path_b, threshold)` reads two results files (or the folders holding them), matches their cells
(setup × model × test) and load levels (setup × model × concurrency or rate), and for each figure both runs hold
gives the change from A to B and a verdict: `better`, `worse` or `same`. A change is called real only when a
confidence interval computed from the samples themselves excludes "no change" AND the change is larger than the
threshold. The method, the seed and the JSON shape are documented in docs/compare.md; the numbers here and there must
agree (`CONFIDENCE`, `RESAMPLES`, `SEED`, `MIN_SAMPLES`).

- Figures over samples (TTFT, E2E, decode rate, output tokens/s of one request at a time; TTFT, E2E and decode rate
  of a load level's requests): the ratio of medians B / A, with a percentile bootstrap interval. Each resample's
  median is drawn exactly as resampling with replacement would give it, through the order statistics of uniforms
  (`_median_draws`), so the cost does not grow with the number of samples.
- A load level's output tokens/s and goodput (one figure per run): the ratio of the recorded figures; its interval's
  relative width comes from a bootstrap of the level's requests (Little's law: tokens, or requests within the SLO,
  per second of request time in closed loop; per request sent in open loop).
- Shares (pass rate of a test with checks, share of successful requests of a load level): the difference in points
  with Newcombe's hybrid score interval (from two Wilson intervals).

Cells present in one run only are listed as such; cells that could not run (MISSING, unavailable, skipped, errored)
are reported with their status and never compared as numbers. The library never prints; the CLI formats.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Any, Iterable, Sequence

from .errors import UsageError
from .results import RESULTS_SCHEMA, BadLines, cell_status, read_results

CONFIDENCE = 0.95
"""Two-sided confidence of every interval."""
RESAMPLES = 2000
"""Bootstrap resamples per figure."""
SEED = 13
"""Every random draw comes from `random.Random` seeded from this, the side (A or B) and the sample count: the same two
files always give the same verdicts."""
MIN_SAMPLES = 3
"""Fewer samples than this on either side: no confident call (`same`, noted "too few samples")."""
DEFAULT_THRESHOLD = 0.05
"""Smallest change called better or worse: 5 % of the figure (ratio figures), 5 points (shares)."""

BETTER, WORSE, SAME = "better", "worse", "same"
ONLY_A, ONLY_B, NOT_COMPARED = "only in A", "only in B", "not compared"
TOO_FEW = "too few samples"
WITHIN_NOISE = "within the noise"
WITHIN_THRESHOLD = "real but within the threshold"

_RAN = ("ok", "failed")
#: Keys of a `run` record that differ between any two runs and say nothing about the environment.
_RUN_NOISE = frozenset({"type", "run_id", "started_at", "resumed", "time", "label"})
#: Options whose values name the run's own folder: they differ between any two runs.
_PATH_OPTIONS = frozenset({"--output", "--resume"})


@dataclass(frozen=True)
class Figure:
    key: str
    label: str
    unit: str
    higher_is_better: bool
    kind: str
    """`median` (ratio of medians over samples), `level` (a load level's recorded figure), `share` (a proportion)."""

    def show(self, value: float | None) -> str:
        if value is None:
            return "-"
        if self.kind == "share":
            return f"{value:.0%}" if value in (0, 1) else f"{value:.1%}"
        if self.unit == "s":
            return f"{value:.3f} s"
        return f"{value:.2f} {self.unit}" if self.unit == "req/s" else f"{value:.1f} {self.unit}"


TTFT = Figure("ttft_s", "TTFT", "s", False, "median")
E2E = Figure("e2e_s", "E2E", "s", False, "median")
DECODE = Figure("decode_tps", "decode rate", "tok/s", True, "median")
TEST_FIGURES: tuple[Figure, ...] = (
    TTFT, E2E, DECODE,
    Figure("overall_tps", "output tok/s", "tok/s", True, "median"),
    Figure("pass_rate", "pass rate", "", True, "share"),
)
LOAD_FIGURES: tuple[Figure, ...] = (
    TTFT, E2E, DECODE,
    Figure("output_tps", "output tok/s", "tok/s", True, "level"),
    Figure("goodput_rps", "goodput", "req/s", True, "level"),
    Figure("success_rate", "requests ok", "", True, "share"),
)


# --- reading a run ---------------------------------------------------------------------------------------------------


LevelKey = tuple[str, str, "int | None", "float | None"]


@dataclass
class RunData:
    """What `compare` needs from one results file, read once."""

    path: Path
    """The results file."""
    bad: BadLines = field(default_factory=BadLines)
    runs: list[dict[str, Any]] = field(default_factory=list)
    engines: list[dict[str, Any]] = field(default_factory=list)
    tests: dict[tuple[str, str, str], list[dict[str, Any]]] = field(default_factory=dict)
    levels: dict[LevelKey, dict[str, Any]] = field(default_factory=dict)
    level_samples: dict[LevelKey, list[dict[str, Any]]] = field(default_factory=dict)
    facts: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    """Per model: what the records say about it (name on the engine, revision, token source, parallelism, ...)."""

    @property
    def run_ids(self) -> list[str]:
        return [str(r.get("run_id")) for r in self.runs if r.get("run_id")]

    @property
    def started_at(self) -> str | None:
        return next((str(r["started_at"]) for r in self.runs if r.get("started_at")), None)

    @property
    def schema(self) -> int:
        return max((r.get("schema") if isinstance(r.get("schema"), int) else 1 for r in self.runs), default=1)

    def fact(self, model: str, what: str, value: Any) -> None:
        if value is None or value == "":
            return
        values = self.facts.setdefault(model, {}).setdefault(what, [])
        text = _text(value)
        if text not in values:
            values.append(text)


def results_file(path: Path | str) -> Path:
    """The results file a user named: a folder's results.jsonl, or the file itself; one line of why not."""
    path = Path(path)
    if path.is_dir():
        if not (path / "results.jsonl").is_file():
            raise UsageError(f"{path} holds no results.jsonl: give the folder a `jarvis run` wrote, or its "
                             f"results.jsonl.")
        return path / "results.jsonl"
    if not path.exists():
        raise UsageError(f"no results at {path}: give the folder a `jarvis run` wrote, or its results.jsonl.")
    if not path.is_file():
        raise UsageError(f"{path} is not a results file: give the folder a `jarvis run` wrote, or its results.jsonl.")
    return path


def read_run(path: Path | str) -> RunData:
    """Read a results file (or a folder's results.jsonl). Unreadable lines are skipped and kept in `bad`."""
    file = results_file(path)
    data = RunData(file)
    pending: dict[LevelKey, list[dict[str, Any]]] = defaultdict(list)
    count = 0
    try:
        for record in read_results(file, data.bad):
            count += 1
            _take(data, record, pending)
    except OSError as exc:
        raise UsageError(f"cannot read {file}: {exc.strerror or exc}.") from None
    if not count:
        raise UsageError(f"{file} holds no readable results" + (f" ({data.bad.describe(file)})" if data.bad else "")
                         + ": give the results.jsonl a `jarvis run` wrote.")
    return data


def _take(data: RunData, record: dict[str, Any], pending: dict[LevelKey, list[dict[str, Any]]]) -> None:
    kind = record.get("type")
    setup, model = str(record.get("setup") or ""), str(record.get("model") or "")
    if kind == "run":
        data.runs.append(record)
        pending.clear()  # requests of a level that never finished (an interrupted run) are not that level's
    elif kind == "engine":
        data.engines.append(record)
    elif kind == "sample":
        data.tests.setdefault((setup, model, str(record.get("test") or "")), []).append(
            {k: record.get(k) for k in ("status", "reason", "cold", "repetition", *(f.key for f in TEST_FIGURES))})
        data.fact(model, "engine model", record.get("engine_model"))
        data.fact(model, "token source", record.get("token_source"))
        data.fact(model, "revision", record.get("revision"))
    elif kind == "warmup":
        data.fact(model, "revision", record.get("revision"))
    elif kind == "load_sample":
        level = record.get("level") if isinstance(record.get("level"), dict) else {}
        key = _level_key(setup, model, level.get("concurrency"), level.get("rate"))
        if key is not None and not record.get("warmup"):
            pending[key].append(record)
    elif kind == "load_level":
        key = _level_key(setup, model, record.get("concurrency"), record.get("rate"))
        if key is None:
            return
        if "status" in record:
            if key not in data.levels or "status" in data.levels[key]:  # a measured record of the level wins
                data.levels[key] = record
            return
        data.levels[key] = record
        data.level_samples[key] = pending.pop(key, [])
        parallelism = record.get("parallelism")
        if isinstance(parallelism, dict):
            value = parallelism.get("value")
            data.fact(model, "parallelism",
                      f"{value if value is not None else 'unknown'} ({parallelism.get('setting')})")
        if isinstance(record.get("profile"), dict):
            data.fact(model, f"load profile [{setup}]", record["profile"])
        data.fact(model, "revision", record.get("revision"))


def _level_key(setup: str, model: str, concurrency: Any, rate: Any) -> LevelKey | None:
    c, r = _num(concurrency), _num(rate)
    if (c is None) == (r is None):
        return None
    return setup, model, int(c) if c is not None else None, r


def _num(value: Any) -> float | None:
    """A finite number, else None (text, booleans, NaN and infinity are no figures)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)


# --- the environment -------------------------------------------------------------------------------------------------


def environment(run: RunData) -> dict[str, str]:
    """What the records say about where and how the run ran, as `what -> value` (several values of a resumed run
    joined by ' / ')."""
    found: dict[str, list[str]] = {}

    def add(key: str, value: Any) -> None:
        text = _text(value)
        values = found.setdefault(key, [])
        if text not in values:
            values.append(text)

    for record in run.runs:
        for key, value in _flatten("", record):
            if key in _RUN_NOISE:
                continue
            if key == "argv":
                if record.get("resumed"):
                    continue  # `run --resume DIR` says nothing the first command line did not
                value = normalized_argv(value)
            add(key, value)
    for record in run.engines:
        name = record.get("engine")
        for key, value in record.items():
            if key not in ("type", "engine", "address", "time", "label"):
                add(f"engine {name}: {key}", value)
    for model, facts in run.facts.items():
        for what, values in facts.items():
            for value in values:
                add(f"model {model}: {what}", value)
    return {key: " / ".join(values) for key, values in found.items()}


def normalized_argv(argv: Any) -> Any:
    """The command line without the run's own folder (`--output DIR`, `--resume DIR`), which differs every time."""
    if not isinstance(argv, str):
        return argv
    words, out, skip = argv.split(" "), [], False
    for word in words:
        if skip:
            skip = False
            continue
        if word in _PATH_OPTIONS:
            skip = True
            continue
        if word.split("=", 1)[0] in _PATH_OPTIONS:
            continue
        out.append(word)
    return " ".join(out)


def _flatten(prefix: str, record: dict[str, Any]) -> Iterable[tuple[str, Any]]:
    for key, value in record.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            yield from _flatten(name + ".", value)
        elif isinstance(value, list) and all(isinstance(v, str) for v in value):
            yield name, ", ".join(value)
        else:
            yield name, value


def environment_differences(a: RunData, b: RunData) -> list[tuple[str, str | None, str | None]]:
    """(what, value in A, value in B) for everything that differs. What the records say about a model is compared
    only where both runs say it (a model in one run only is listed with its cells; a model without load levels in
    one run has no parallelism there, which is no change)."""
    env_a, env_b = environment(a), environment(b)
    out = []
    for key in list(env_a) + [k for k in env_b if k not in env_a]:
        if key.startswith("model ") and (key not in env_a or key not in env_b):
            continue
        if env_a.get(key) != env_b.get(key):
            out.append((key, env_a.get(key), env_b.get(key)))
    return out


# --- statistics ------------------------------------------------------------------------------------------------------


def median(sorted_values: Sequence[float]) -> float:
    n = len(sorted_values)
    return sorted_values[n // 2] if n % 2 else (sorted_values[n // 2 - 1] + sorted_values[n // 2]) / 2


@lru_cache(maxsize=512)
def _median_draws(n: int, side: str) -> tuple[tuple[int, int], ...]:
    """RESAMPLES draws of the positions (i, j) in n sorted values whose mean is the median of a resample with
    replacement (i == j for odd n).

    A resample takes the values at floor(n·U) for n uniforms U; its k-th smallest value is the sorted values at
    floor(n·U₍ₖ₎), U₍ₖ₎ the k-th order statistic of the uniforms, which is S_k / S_{n+1} for S the running sums of
    n + 1 standard exponentials. So the median comes from two or three gamma draws, exactly as resampling would give
    it, whatever n: the same draws serve every figure with n samples on that side."""
    rng = random.Random(f"jarvis-compare:{SEED}:{side}:{n}")
    k = (n + 1) // 2 if n % 2 else n // 2
    draws = []
    for _ in range(RESAMPLES):
        below = rng.gammavariate(k, 1.0)
        if n % 2:
            i = min(int(below / (below + rng.gammavariate(n + 1 - k, 1.0)) * n), n - 1)
            draws.append((i, i))
        else:
            gap = rng.expovariate(1.0)
            total = below + gap + rng.gammavariate(n - k, 1.0)
            draws.append((min(int(below / total * n), n - 1), min(int((below + gap) / total * n), n - 1)))
    return tuple(draws)


def bootstrap_medians(sorted_values: Sequence[float], side: str) -> list[float]:
    """The medians of RESAMPLES bootstrap resamples of `sorted_values` (seeded by side and sample count)."""
    v = sorted_values
    return [(v[i] + v[j]) / 2 for i, j in _median_draws(len(v), side)]


def _ratio(b: float, a: float) -> float:
    if a == 0:
        return 1.0 if b == 0 else math.inf
    return b / a


def percentile_interval(values: list[float]) -> tuple[float, float]:
    """The central CONFIDENCE interval of bootstrap values, by nearest rank (no interpolation, so an infinite
    resample cannot make it NaN)."""
    values = sorted(values)
    tail = (1 - CONFIDENCE) / 2
    low = values[max(0, math.floor(tail * len(values)))]
    high = values[min(len(values) - 1, math.ceil((1 - tail) * len(values)) - 1)]
    return low, high


def wilson(k: int, n: int) -> tuple[float, float]:
    """Wilson's score interval of a proportion k / n at CONFIDENCE."""
    z = NormalDist().inv_cdf(1 - (1 - CONFIDENCE) / 2)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(k_a: int, n_a: int, k_b: int, n_b: int) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10) of p_B − p_A at CONFIDENCE."""
    p_a, p_b = k_a / n_a, k_b / n_b
    (l_a, u_a), (l_b, u_b) = wilson(k_a, n_a), wilson(k_b, n_b)
    d = p_b - p_a
    return d - math.sqrt((p_b - l_b) ** 2 + (u_a - p_a) ** 2), d + math.sqrt((u_b - p_b) ** 2 + (p_a - l_a) ** 2)


# --- comparing -------------------------------------------------------------------------------------------------------


@dataclass
class FigureChange:
    figure: Figure
    a: float | None
    """A's median (samples), recorded figure (load level) or share."""
    b: float | None
    n_a: int
    n_b: int
    change: float | None = None
    """B against A: ratio − 1 for ratio figures (+0.30: 30 % higher), p_B − p_A for shares."""
    interval: tuple[float, float] | None = None
    """The CONFIDENCE interval of `change`."""
    verdict: str = SAME
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        f = self.figure
        return {"figure": f.key, "label": f.label, "unit": f.unit, "better": "higher" if f.higher_is_better else
                "lower", "statistic": {"median": "median", "level": "level figure", "share": "share"}[f.kind],
                "a": _finite(self.a), "b": _finite(self.b), "n_a": self.n_a, "n_b": self.n_b,
                "change": _finite(self.change),
                "interval": [_finite(x) for x in self.interval] if self.interval else None,
                "verdict": self.verdict, "note": self.note}


@dataclass
class CellChange:
    kind: str
    """`test` (setup × model × test) or `load` (setup × model × level)."""
    setup: str
    model: str
    test: str | None = None
    concurrency: int | None = None
    rate: float | None = None
    status_a: str | None = None
    status_b: str | None = None
    """The cell's status in each run (`ok`, `failed`, `error`, `missing`, ...); None where the run lacks it."""
    verdict: str = SAME
    """`better`, `worse` or `same` (from its figures, or from a status that changed between ran and errored),
    `only in A`, `only in B`, or `not compared` (it did not run on one side or both)."""
    note: str = ""
    figures: list[FigureChange] = field(default_factory=list)

    @property
    def what(self) -> str:
        if self.kind == "test":
            return str(self.test)
        return f"{self.concurrency} in flight" if self.concurrency is not None else f"{self.rate:g} req/s"

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "setup": self.setup, "model": self.model, "test": self.test,
                "concurrency": self.concurrency, "rate": self.rate, "status_a": self.status_a,
                "status_b": self.status_b, "verdict": self.verdict, "note": self.note,
                "figures": [f.to_json() for f in self.figures]}


@dataclass
class Comparison:
    a: RunData
    b: RunData
    threshold: float
    environment: list[tuple[str, str | None, str | None]]
    cells: list[CellChange]

    @property
    def worse(self) -> bool:
        """Anything got worse: the exit code's question."""
        return any(c.verdict == WORSE for c in self.cells)

    def counts(self) -> dict[str, int]:
        figures = [f for c in self.cells for f in c.figures]
        status_cells = [c for c in self.cells if not c.figures]
        return {
            "worse": sum(f.verdict == WORSE for f in figures) + sum(c.verdict == WORSE for c in status_cells),
            "better": sum(f.verdict == BETTER for f in figures) + sum(c.verdict == BETTER for c in status_cells),
            "same": sum(f.verdict == SAME for f in figures),
            "too_few_samples": sum(f.note == TOO_FEW for f in figures),
            "figures": len(figures),
            "cells_compared": sum(1 for c in self.cells if c.figures),
            "only_in_a": sum(c.verdict == ONLY_A for c in self.cells),
            "only_in_b": sum(c.verdict == ONLY_B for c in self.cells),
            "not_compared": sum(c.verdict == NOT_COMPARED for c in self.cells),
        }

    def to_json(self) -> dict[str, Any]:
        def side(run: RunData) -> dict[str, Any]:
            return {"path": str(run.path), "run_ids": run.run_ids, "started_at": run.started_at,
                    "skipped_lines": [{"line": n, "why": why} for n, why in run.bad]}

        return {"a": side(self.a), "b": side(self.b),
                "method": {"threshold": self.threshold, "confidence": CONFIDENCE, "resamples": RESAMPLES,
                           "seed": SEED, "min_samples": MIN_SAMPLES},
                "environment": [{"what": k, "a": a, "b": b} for k, a, b in self.environment],
                "cells": [c.to_json() for c in self.cells], "counts": self.counts(), "worse": self.worse}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def compare(path_a: Path | str, path_b: Path | str, threshold: float = DEFAULT_THRESHOLD) -> Comparison:
    """Compare the run(s) in results file (or folder) A with B. Raises UsageError for a path that holds no results."""
    if not (isinstance(threshold, (int, float)) and math.isfinite(threshold) and threshold >= 0):
        raise UsageError(f"the threshold must be a share of 0 or more (0.05 is 5 %), not {threshold!r}.")
    a, b = read_run(path_a), read_run(path_b)
    cells = _test_cells(a, b, threshold) + _load_cells(a, b, threshold)
    order = {WORSE: 0, BETTER: 1, ONLY_A: 2, ONLY_B: 3, NOT_COMPARED: 4, SAME: 5}
    cells.sort(key=lambda c: order[c.verdict])  # stable: within a verdict, the runs' own order
    return Comparison(a, b, threshold, environment_differences(a, b), cells)


def _keys(a: dict[Any, Any], b: dict[Any, Any]) -> list[Any]:
    return list(a) + [k for k in b if k not in a]


def _status_verdict(cell: CellChange, reason_a: str, reason_b: str) -> None:
    """A cell that did not run on one side (or both): never compared as numbers."""
    sa, sb = cell.status_a, cell.status_b
    shown = {"missing": "MISSING"}
    if sa in _RAN and sb == "error":
        cell.verdict, cell.note = WORSE, f"error in B: {reason_b}"
    elif sa == "error" and sb in _RAN:
        cell.verdict, cell.note = BETTER, f"error in A: {reason_a}"
    else:
        cell.verdict = NOT_COMPARED
        parts = [f"{shown.get(s, s)} in {side}" + (f": {why}" if why else "")
                 for side, s, why in (("A", sa, reason_a), ("B", sb, reason_b)) if s not in _RAN]
        cell.note = "; ".join(parts)


def _cell_verdict(cell: CellChange) -> None:
    verdicts = [f.verdict for f in cell.figures]
    cell.verdict = WORSE if WORSE in verdicts else BETTER if BETTER in verdicts else SAME


def _test_cells(a: RunData, b: RunData, threshold: float) -> list[CellChange]:
    cells = []
    for key in _keys(a.tests, b.tests):
        setup, model, test = key
        cell = CellChange("test", setup, model, test)
        sa = cell_status(a.tests[key]) if key in a.tests else None
        sb = cell_status(b.tests[key]) if key in b.tests else None
        cell.status_a, cell.status_b = sa and sa[0], sb and sb[0]
        cells.append(cell)
        if sa is None or sb is None:
            cell.verdict = ONLY_B if sa is None else ONLY_A
            continue
        if cell.status_a not in _RAN or cell.status_b not in _RAN:
            _status_verdict(cell, sa[1], sb[1])
            continue
        warm_a = [s for s in a.tests[key] if s.get("status") in _RAN and not s.get("cold")]
        warm_b = [s for s in b.tests[key] if s.get("status") in _RAN and not s.get("cold")]
        for figure in TEST_FIGURES:
            if figure.kind == "share":
                found = _share_change(figure, sum(s["status"] == "ok" for s in warm_a), len(warm_a),
                                      sum(s["status"] == "ok" for s in warm_b), len(warm_b), threshold)
            else:
                found = _median_change(figure, [s.get(figure.key) for s in warm_a],
                                       [s.get(figure.key) for s in warm_b], threshold)
            if found is not None:
                cell.figures.append(found)
        _cell_verdict(cell)
    return cells


def _level_status(record: dict[str, Any]) -> tuple[str, str]:
    if "status" in record:
        return str(record.get("status")), str(record.get("reason") or "")
    if not record.get("requests_ok"):
        return "error", "no request of the level succeeded"
    return "ok", ""


def _load_cells(a: RunData, b: RunData, threshold: float) -> list[CellChange]:
    cells = []
    for key in _keys(a.levels, b.levels):
        setup, model, concurrency, rate = key
        cell = CellChange("load", setup, model, concurrency=concurrency, rate=rate)
        la, lb = a.levels.get(key), b.levels.get(key)
        sa, sb = (_level_status(la) if la else None), (_level_status(lb) if lb else None)
        cell.status_a, cell.status_b = sa and sa[0], sb and sb[0]
        cells.append(cell)
        if la is None or lb is None or sa is None or sb is None:
            cell.verdict = ONLY_B if la is None else ONLY_A
            continue
        if cell.status_a != "ok" or cell.status_b != "ok":
            _status_verdict(cell, sa[1], sb[1])
            continue
        ok_a = [s for s in a.level_samples.get(key, []) if s.get("status") == "ok"]
        ok_b = [s for s in b.level_samples.get(key, []) if s.get("status") == "ok"]
        requests_a = _Requests(la, a.level_samples.get(key, []), closed=concurrency is not None, side="A")
        requests_b = _Requests(lb, b.level_samples.get(key, []), closed=concurrency is not None, side="B")
        for figure in LOAD_FIGURES:
            if figure.kind == "median":
                found = _median_change(figure, _request_values(ok_a, figure.key),
                                       _request_values(ok_b, figure.key), threshold)
            elif figure.kind == "level":
                found = _level_change(figure, la, lb, requests_a, requests_b, threshold)
            else:
                found = _share_change(figure, int(la.get("requests_ok") or 0),
                                      int(la.get("requests_ok") or 0) + int(la.get("requests_error") or 0),
                                      int(lb.get("requests_ok") or 0),
                                      int(lb.get("requests_ok") or 0) + int(lb.get("requests_error") or 0),
                                      threshold)
            if found is not None:
                cell.figures.append(found)
        _cell_verdict(cell)
    return cells


def _request_values(samples: list[dict[str, Any]], key: str) -> list[float | None]:
    if key == "decode_tps":  # a load request records its ITL; its decode rate is 1 / ITL (docs/metrics.md)
        return [1 / itl if itl else None for itl in (_num(s.get("itl_s")) for s in samples)]
    return [_num(s.get(key)) for s in samples]


def _verdict(found: FigureChange, threshold: float) -> FigureChange:
    """better/worse only when the interval excludes no change AND the change is beyond the threshold."""
    assert found.change is not None and found.interval is not None
    low, high = found.interval
    real = low > 0 or high < 0
    large = abs(found.change) > threshold + 1e-12
    if real and large:
        found.verdict = BETTER if (found.change > 0) == found.figure.higher_is_better else WORSE
    else:
        found.verdict = SAME
        found.note = WITHIN_THRESHOLD if real else WITHIN_NOISE if large else ""
    return found


def _median_change(figure: Figure, values_a: Iterable[Any], values_b: Iterable[Any],
                   threshold: float) -> FigureChange | None:
    a = sorted(v for v in map(_num, values_a) if v is not None)
    b = sorted(v for v in map(_num, values_b) if v is not None)
    if not a and not b:
        return None  # neither run has the figure (TTFT of a request that was not streamed)
    found = FigureChange(figure, median(a) if a else None, median(b) if b else None, len(a), len(b))
    if not a or not b:
        found.note = f"no values in {'A' if not a else 'B'}"
        return found
    found.change = _ratio(median(b), median(a)) - 1
    if len(a) < MIN_SAMPLES or len(b) < MIN_SAMPLES:
        found.note = TOO_FEW
        return found
    ratios = [_ratio(mb, ma) for ma, mb in zip(bootstrap_medians(a, "A"), bootstrap_medians(b, "B"))]
    low, high = percentile_interval(ratios)
    found.interval = (low - 1, high - 1)
    return _verdict(found, threshold)


def _level_change(figure: Figure, level_a: dict[str, Any], level_b: dict[str, Any], requests_a: _Requests,
                  requests_b: _Requests, threshold: float) -> FigureChange | None:
    """A load level's output tokens/s or goodput: the recorded figures' ratio, with the relative interval of a
    bootstrap over the level's requests."""
    va, vb = _num(level_a.get(figure.key)), _num(level_b.get(figure.key))
    if va is None and vb is None:
        return None  # goodput without an SLO
    found = FigureChange(figure, va, vb, requests_a.count, requests_b.count)
    if va is None or vb is None:
        found.note = f"no value in {'A' if va is None else 'B'}"
        return found
    ratio = _ratio(vb, va)
    found.change = ratio - 1
    if figure.key == "goodput_rps" and requests_a.slo != requests_b.slo:
        found.note = "the SLOs differ"
        return found
    if requests_a.count < MIN_SAMPLES or requests_b.count < MIN_SAMPLES:
        found.note = TOO_FEW
        return found
    point = _ratio(requests_b.rate(figure.key), requests_a.rate(figure.key))
    ratios = [_ratio(rb, ra) for ra, rb in zip(requests_a.resampled(figure.key), requests_b.resampled(figure.key))]
    low, high = percentile_interval(ratios)
    if math.isfinite(ratio) and math.isfinite(point) and point > 0:
        low, high = ratio * low / point, ratio * high / point  # the requests' relative noise, around the figure
    found.interval = (low - 1, high - 1)
    return _verdict(found, threshold)


class _Requests:
    """A level's measured requests as (what each gave, what it cost), so that Σ gave ÷ Σ cost moves as the level's
    figure: closed loop (N in flight, Little's law) output tokens, or requests within the SLO, per second of E2E of
    the successful requests; open loop (the rate is fixed) the same per request sent, a failed one giving nothing."""

    def __init__(self, level: dict[str, Any], samples: list[dict[str, Any]], *, closed: bool, side: str) -> None:
        from .load import Slo

        profile = level.get("profile") if isinstance(level.get("profile"), dict) else {}
        self.slo = profile.get("slo")
        bounds = Slo(**{k: v for k, v in self.slo.items() if k in ("ttft", "itl", "e2e") and _num(v) is not None}) \
            if isinstance(self.slo, dict) else None
        self.side = side
        self.cost: list[float] = []
        self.gave: dict[str, list[float]] = {"output_tps": [], "goodput_rps": []}
        for s in samples:
            ok = s.get("status") == "ok"
            if closed:
                e2e = _num(s.get("e2e_s"))
                if not ok or e2e is None or e2e <= 0:
                    continue
                self.cost.append(e2e)
            else:
                self.cost.append(1.0)
            self.gave["output_tps"].append((_num(s.get("output_tokens")) or 0.0) if ok else 0.0)
            self.gave["goodput_rps"].append(1.0 if ok and bounds is not None and bounds.met(
                _num(s.get("ttft_sched_s")), _num(s.get("itl_s")), _num(s.get("e2e_sched_s"))) else 0.0)
        self._resampled: dict[str, list[float]] | None = None

    @property
    def count(self) -> int:
        return len(self.cost)

    def rate(self, key: str) -> float:
        total = math.fsum(self.cost)
        return math.fsum(self.gave[key]) / total if total > 0 else 0.0

    def resampled(self, key: str) -> list[float]:
        """Σ gave ÷ Σ cost over RESAMPLES resamples of the requests with replacement (seeded by side and count);
        the figures of a level share the resamples."""
        if self._resampled is None:
            rng = random.Random(f"jarvis-compare:{SEED}:{self.side}:pairs:{self.count}")
            positions = range(self.count)
            self._resampled = {k: [] for k in self.gave}
            for _ in range(RESAMPLES):
                picked = rng.choices(positions, k=self.count)
                total = sum(map(self.cost.__getitem__, picked))
                for k, gave in self.gave.items():
                    self._resampled[k].append(sum(map(gave.__getitem__, picked)) / total if total > 0 else 0.0)
        return self._resampled[key]


def _share_change(figure: Figure, k_a: int, n_a: int, k_b: int, n_b: int, threshold: float) -> FigureChange | None:
    """Pass rate (or requests ok): compared only where either run has a failure, with Newcombe's interval of the
    difference; the threshold is in points (0.05: five points)."""
    if (k_a == n_a and k_b == n_b) or not n_a or not n_b:
        return None  # every answer passed (or nothing timed) on both sides: nothing to compare
    found = FigureChange(figure, k_a / n_a, k_b / n_b, n_a, n_b, change=k_b / n_b - k_a / n_a)
    if n_a < MIN_SAMPLES or n_b < MIN_SAMPLES:
        found.note = TOO_FEW
        return found
    found.interval = newcombe(k_a, n_a, k_b, n_b)
    return _verdict(found, threshold)


def schema_warnings(cmp: Comparison) -> list[str]:
    """A file written by a newer Jarvis may mean something else by the keys this one reads."""
    return [f"{run.path} has results schema {run.schema}, newer than this Jarvis knows ({RESULTS_SCHEMA}); "
            f"figures may be misread" for run in (cmp.a, cmp.b) if run.schema > RESULTS_SCHEMA]
