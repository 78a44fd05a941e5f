"""results.jsonl: one JSON object per line, appended and flushed the moment it is known, so a crash loses nothing.

Record types (the `type` key):
- `run`: the environment at the start (versions, host, GPU, flags, argv, files).
- `engine`: an engine brought up (name, version, address).
- `warmup`: a model's cold start (setup, model, cold_start_s, load_s).
- `sample`: one timed request, or one cell that could not run (status missing/unavailable/skipped/error, with
  `repetition` null). Keys: setup, model (canonical ID), engine, label (the model entry's `label:`, only when it has
  one), engine_model, test, repetition, cold, status, reason, stream, answer, the figures of `metrics.figures`, server
  (the engine's own figures), time.
- `end`: the run finished or was interrupted.

`summarize` folds samples into one row per setup × model × test: the cell's status and the statistics of each figure
over its warm samples.
"""

from __future__ import annotations

import json
import math
import os
import threading
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Iterator

from .metrics import STAT_FIGURES, Stats, stats
from .redact import redact, redact_data


class Status(str, Enum):
    """A sample's or a cell's status. Written as its value (`missing`); `shown` is how the console and the report
    show it (`MISSING`, so that a missing model stands out)."""

    OK = "ok"
    FAILED = "failed"
    ERROR = "error"
    MISSING = "missing"
    UNAVAILABLE = "unavailable"
    SKIPPED = "skipped"

    def __str__(self) -> str:
        return self.value

    @property
    def shown(self) -> str:
        return self.value.upper() if self is Status.MISSING else self.value


STATUSES = tuple(s.value for s in Status)

#: The layout of results.jsonl (docs/results.md), in the `run` record's `schema`. Files without it are version 1.
RESULTS_SCHEMA = 2


def now_iso() -> str:
    return datetime.now(timezone.utc).astimezone().isoformat(timespec="seconds")


@dataclass
class Sample:
    """One timed request, or one cell that could not run (`repetition` None, no answer or figures)."""

    setup: str
    model: str
    """The canonical model ID."""
    engine: str
    test: str
    repetition: int | None
    status: Status
    reason: str = ""
    cold: bool = False
    engine_model: str | None = None
    """The name the engine got (measured samples only)."""
    stream: bool | None = None
    answer: str | None = None
    finish_reason: str | None = None
    figures: dict[str, Any] = field(default_factory=dict)
    """`metrics.figures` of the answer."""
    server: dict[str, Any] = field(default_factory=dict)
    time: str = field(default_factory=now_iso)
    label: str | None = None
    """The setups file's `label:` of the model entry; written only when set."""

    @property
    def measured(self) -> bool:
        return self.engine_model is not None

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {"type": "sample", "setup": self.setup, "model": self.model, "engine": self.engine}
        if self.label is not None:
            record["label"] = self.label
        if self.measured:
            record["engine_model"] = self.engine_model
        record.update({"test": self.test, "repetition": self.repetition, "cold": self.cold,
                       "status": self.status.value, "reason": self.reason})
        if self.measured:
            record.update({"stream": self.stream, "answer": self.answer, "finish_reason": self.finish_reason,
                           **self.figures, "server": self.server})
        record["time"] = self.time
        return record


class ResultsWriter:
    """Appends records to results.jsonl. One by one, each line is on disk (fsync) before `write` returns. Under load
    (`grouped()`), lines are collected and written with one fsync every GROUP_EVERY_S seconds, so that writing never
    slows the load generator: a crash then loses at most the last GROUP_EVERY_S seconds of records."""

    GROUP_EVERY_S = 0.1

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(path, "a", encoding="utf-8")
        if self._fh.tell() > 0 and not _ends_with_newline(path):
            self._fh.write("\n")  # a torn last line (a crash mid-write) is never glued to the next record
        self._lock = threading.Lock()
        self._pending: list[str] | None = None

    def write(self, record: dict[str, Any]) -> None:
        # Redacted as a whole line: a credential in any field (an engine's error quoting its command line, a URL
        # with user-info) never reaches the file, nor the workbook built from it.
        text = json.dumps(record, ensure_ascii=False, default=str)
        line = redact(text)
        if line != text:  # something was masked: the mask must not have cut into the JSON (redact_data's docstring)
            try:
                json.loads(line)
            except ValueError:
                line = json.dumps(redact_data(json.loads(text)), ensure_ascii=False)
        line += "\n"
        with self._lock:
            if self._pending is not None:
                self._pending.append(line)
                return
            self._fh.write(line)
            self._fh.flush()
            os.fsync(self._fh.fileno())

    @contextmanager
    def grouped(self) -> Iterator[None]:
        """Group the writes of the block (thread-safe), flushed every GROUP_EVERY_S seconds and at its end."""
        done = threading.Event()
        with self._lock:
            self._pending = []

        def flush_now() -> None:
            with self._lock:
                lines, self._pending = self._pending or [], [] if not done.is_set() else None
                if lines:
                    self._fh.write("".join(lines))
                    self._fh.flush()
                    os.fsync(self._fh.fileno())

        def flusher() -> None:
            while not done.wait(self.GROUP_EVERY_S):
                flush_now()

        thread = threading.Thread(target=flusher, name="jarvis-results-flush", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            flush_now()

    def close(self) -> None:
        self._fh.close()


def _ends_with_newline(path: Path) -> bool:
    with open(path, "rb") as fh:
        fh.seek(-1, os.SEEK_END)
        return fh.read(1) == b"\n"


class BadLines(list):
    """Line numbers (and why) of the lines `read_results` skipped."""

    def describe(self, path: Path | str) -> str:
        shown = ", ".join(f"{n} ({why})" for n, why in self[:5]) + (f" and {len(self) - 5} more" if len(self) > 5 else "")
        return f"skipped {len(self)} unreadable line{'s' if len(self) != 1 else ''} of {path}: {shown}"


#: Record fields whose values must be numbers (or null) where present; anything else makes the line unreadable.
_NUMERIC = ("repetition", "ttfb_s", "ttft_s", "e2e_s", "itl_s", "decode_tps", "overall_tps", "output_tokens",
            "prompt_tokens", "cold_start_s", "load_s", "output_tps", "request_rate", "goodput_rps", "client_cpu",
            "requests_ok", "requests_error", "concurrency", "rate", "queue_wait_s", "send_lag_s")
_TEXT = ("type", "setup", "model", "engine", "test", "status", "reason", "label")


def _problem(record: Any) -> str | None:
    """Why a parsed line cannot be used as a record, or None."""
    if not isinstance(record, dict):
        return "not a JSON object"
    if not isinstance(record.get("type"), str):
        return "no record type"
    for key in _TEXT:
        if key in record and record[key] is not None and not isinstance(record[key], str):
            return f"{key} is not text"
    for key in _NUMERIC:
        value = record.get(key)
        if isinstance(value, dict) and record["type"] == "load_level":  # percentiles: {"p50": ..., "p90": ...}
            values = list(value.values())
        elif value is None:
            continue
        else:
            values = [value]
        for item in values:
            if item is None:
                continue
            if isinstance(item, bool) or not isinstance(item, (int, float)):
                return f"{key} is not a number"
            if isinstance(item, float) and not math.isfinite(item):
                if value is item:
                    record[key] = None  # NaN or infinity: a figure that could not be computed, shown as none
                continue
            if abs(item) > 1e15:
                return f"{key} is out of range"
    if record["type"] == "sample" and record.get("status") not in STATUSES:
        return "unknown status"
    return None


def read_results(path: Path, bad: BadLines | None = None) -> Iterator[dict[str, Any]]:
    """The records of a results file. A line that is not a readable record (a torn last line after a crash, invalid
    UTF-8, wrong types, absurd numbers, nesting too deep) is skipped and, when `bad` is given, noted there with its
    line number."""
    with open(path, "rb") as fh:
        for number, raw in enumerate(fh, start=1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                why: str | None = "not UTF-8"
            except (ValueError, RecursionError):
                why = "not JSON (torn or edited)"
            else:
                why = _problem(record)
            if why is None:
                yield record
            elif bad is not None:
                bad.append((number, why))


@dataclass
class SummaryRow:
    setup: str
    model: str
    engine: str
    test: str
    status: str
    reason: str = ""
    ok: int = 0
    failed: int = 0
    error: int = 0
    skipped: int = 0
    stream: bool | None = None
    token_source: str | None = None
    cold_start_s: float | None = None
    load_s: float | None = None
    stats: dict[str, Stats | None] = field(default_factory=dict)
    label: str | None = None
    """The model entry's `label:` (models sharing one are compared side by side), when its samples carry one."""

    @property
    def key(self) -> tuple[str, str, str]:
        return self.setup, self.model, self.test


def cell_status(samples: list[dict[str, Any]]) -> tuple[str, str]:
    """One status and reason for a cell from its samples: error beats failed beats ok; non-run statuses as they are."""
    counts = {s: sum(1 for r in samples if r.get("status") == s) for s in STATUSES}
    timed = counts["ok"] + counts["failed"] + counts["error"]
    for status in ("error", "failed"):
        if counts[status]:
            first = next(r for r in samples if r.get("status") == status)
            return status, f"{counts[status]} of {timed} {status}: {first.get('reason', '')}".strip()
    if counts["ok"]:
        return "ok", ""
    first = samples[0] if samples else {}
    return first.get("status", "error"), first.get("reason", "")


def summarize(records: Iterable[dict[str, Any]]) -> list[SummaryRow]:
    cells: dict[tuple[str, str, str], list[dict[str, Any]]] = defaultdict(list)
    warmups: dict[tuple[str, str], dict[str, Any]] = {}
    for record in records:
        if record.get("type") == "sample":
            cells[(record.get("setup", ""), record.get("model", ""), record.get("test", ""))].append(record)
        elif record.get("type") == "warmup":
            warmups[(record.get("setup", ""), record.get("model", ""))] = record
    rows = []
    for (setup, model, test), samples in cells.items():
        status, reason = cell_status(samples)
        warm = [r for r in samples if r.get("status") in ("ok", "failed") and not r.get("cold")]
        cold = next((r for r in samples if r.get("cold")), None)
        warmup = warmups.get((setup, model))
        row = SummaryRow(
            setup=setup, model=model, engine=samples[0].get("engine", ""), test=test, status=status, reason=reason,
            ok=sum(r.get("status") == "ok" for r in samples), failed=sum(r.get("status") == "failed" for r in samples),
            error=sum(r.get("status") == "error" for r in samples),
            skipped=sum(r.get("status") == "skipped" for r in samples),
            label=next((r["label"] for r in samples if isinstance(r.get("label"), str)), None),
            stream=samples[0].get("stream"),
            token_source=next((r.get("token_source") for r in warm if r.get("token_source")), None),
            cold_start_s=(warmup or {}).get("cold_start_s") if warmup else (cold or {}).get("e2e_s"),
            load_s=(warmup or cold or {}).get("load_s"),
            stats={name: stats(r.get(name) for r in warm) for name in STAT_FIGURES},
        )
        rows.append(row)
    return rows
