"""The Excel report (report.xlsx), built from a results.jsonl.

`write_report(results_path, out_path)` writes five sheets, more with load levels or labels:

- **Summary**: one row per setup × model × test (`results.summarize`): status, reason, counts, stream, token source,
  cold start and the statistics of every figure over the cell's warm samples. Rows are coloured by status (missing:
  yellow with bold red text; error: red; failed: orange; unavailable and skipped: grey text).
- **Side by side** and **Side by side (load)** (when models share a `label:` in the setups file): engine against
  engine, one row per label × test (or load level) × model, each figure with its ratio to the first model's
  (`report_tables.py`).
- **Charts**: a table of per-model means (pooled over the model's cells) and two bar charts fed from it: mean TTFT of
  streamed requests and mean decode rate.
- **Results**: one row per sample record, in file order.
- **Load** (when the run has load levels): one row per setup × model × level, capacities, and charts of output
  tokens/s and TTFT p99 against load (`report_load.py`).
- **Environment**: the `run` record (versions, host, GPU, flags, argv), the engines, and the `end` record.
- **Definitions**: every column of Summary, Charts and Results with its unit and definition, the statuses, the token
  source and the statistics.

Built for large runs: the workbook is written in openpyxl's write-only mode and the results file is read twice, once
to summarize (answers and server figures dropped on the way) and once streaming samples into the Results sheet, so
time grows linearly with the number of samples and memory stays flat apart from the summary's per-sample figures.
openpyxl is imported inside `write_report` only, so that the command line does not pay for it at start-up.
"""

from __future__ import annotations

import datetime as _dt
import sys
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import JarvisError, UsageError
from .metrics import DEFINITIONS, STAT_FIGURES, STAT_NAMES, Stats
from .report_cells import COUNT, RATE, SEC3, SEC4, TOKENS, Column, cut, number, plain, yes_no
from .results import STATUSES, BadLines, SummaryRow, read_results, summarize

#: Statistics shown in Summary per figure (all for TTFT and decode rate; a figure missing here gets DEFAULT_STATS).
SUMMARY_STATS: dict[str, tuple[str, ...]] = {
    "ttft_s": STAT_NAMES,
    "e2e_s": ("mean", "sd", "p50", "p90", "p99", "max"),
    "itl_s": ("mean", "p50", "p90", "p99"),
    "decode_tps": STAT_NAMES,
    "overall_tps": ("mean", "p50"),
    "output_tokens": ("mean", "min", "max"),
}
DEFAULT_STATS = ("mean", "p50", "p90", "p99")

ANSWER_CHARS = 500
"""Answers are cut to this many characters in the Results sheet (the full answer stays in results.jsonl)."""
REASON_CHARS = 2000
"""Reasons are cut to this many characters in Summary and Results (the page cuts its wrapped texts there too)."""
TEXT_CHARS = 32000  # Excel's limit per cell is 32,767 characters

STATUS_MEANINGS: dict[str, str] = {
    "ok": "The request succeeded and the answer met the test's checks (or the test has none).",
    "failed": "The request succeeded but the answer did not meet the test's check; its timings still count.",
    "error": "The request or the engine failed; the message is kept in reason. No figures.",
    "missing": "The model is not present on the engine and downloads were not forced (--force-download); "
               "nothing ran.",
    "unavailable": "The engine is not installed or not reachable, or its runtime (Docker, GPU) is absent; "
                   "nothing ran.",
    "skipped": "The test does not apply to the model (e.g. a vision test on a text-only model); nothing ran.",
}

TOKEN_SOURCES: dict[str, str] = {
    "server": "output_tokens is the count the engine reported (OpenAI-compatible usage.completion_tokens; Ollama "
              "eval_count). ITL, decode rate and overall rate use it.",
    "estimated": "The engine reported no count, so output_tokens is the number of content chunks received; one "
                 "chunk may hold several tokens, so rates derived from it may be low. Treat as an estimate.",
}

STAT_MEANINGS: dict[str, str] = {
    "mean": "arithmetic mean",
    "sd": "sample standard deviation (n − 1; 0 for a single value)",
    "min": "smallest value",
    "p50": "median (50th percentile)",
    "p90": "90th percentile",
    "p95": "95th percentile",
    "p99": "99th percentile",
    "max": "largest value",
}
PERCENTILE_NOTE = "Percentiles interpolate linearly between closest ranks (numpy's default)."
WARM_NOTE = ("over the cell's warm samples: status ok or failed, the cold sample excluded; errored samples have no "
             "figures")

STATUS_STYLES: dict[str, dict[str, Any]] = {
    "missing": {"fill": "FFFF00", "color": "FF0000", "bold": True},
    "error": {"fill": "FFC7CE", "color": "9C0006", "bold": False},
    "failed": {"fill": "FFE0B2", "color": "9C5700", "bold": False},
    "unavailable": {"fill": None, "color": "808080", "bold": False},
    "skipped": {"fill": None, "color": "808080", "bold": False},
}
"""Status → its rows' colours (RGB fill, RGB text colour, bold), in the workbook and on the page."""
HEADER_FILL = "DDEBF7"
"""Fill (RGB) of header rows, in the workbook and on the page."""


def _fmt_for(name: str) -> str | None:
    unit = DEFINITIONS.get(name, ("", ""))[0]
    if name == "itl_s":
        return SEC4
    return {"s": SEC3, "tokens/s": RATE, "tokens": COUNT}.get(unit)


def _figure(name: str, width: float = 10.0) -> Column:
    unit, definition = DEFINITIONS[name]
    return Column(name, unit, definition, _fmt_for(name), width)


def _stat_column(figure: str, stat: str) -> Column:
    unit, definition = DEFINITIONS.get(figure, ("", figure))
    fmt = _fmt_for(figure)
    if unit == "s" and stat == "sd":
        fmt = SEC4
    elif unit == "tokens" and stat not in ("min", "max"):
        fmt = TOKENS
    text = f"{STAT_MEANINGS.get(stat, stat).capitalize()} of {figure} {WARM_NOTE}."
    if stat.startswith("p"):
        text += " " + PERCENTILE_NOTE
    return Column(f"{figure}_{stat}", unit, f"{text} {figure}: {definition}", fmt, max(10.0, len(figure) + 6))


SETUP_COLUMN = Column("setup", "", "The test setup (test_setups.yaml) the row belongs to.", None, 14)
"""The setup column of Summary, Results and the side-by-side tables."""
MODEL_COLUMN = Column("model", "", "Canonical model ID: engine prefix, name and runtime flags (e.g. "
                                   "ol_qwen2.5:0.5b#stream).", None, 24)
"""The model column of Summary, Results, Charts and the side-by-side tables."""
TEST_COLUMN = Column("test", "", "Test ID from the setups file.", None, 14)
"""The test column of Summary, Results and the side-by-side tables."""
ENGINE_COLUMN = Column("engine", "", "The engine that served the model (the plugin's engine name).", None, 10)
"""The engine column of Summary, Results and the side-by-side tables."""
_STREAM = Column("stream", "", "yes when requests were streamed (SSE), no when not. TTFT and ITL (and so decode "
                               "rate) exist only for streamed requests.", None, 8)
_TOKEN_SOURCE = Column("token_source", "", "Where output_tokens comes from: server (the engine's count) or estimated "
                                           "(counted content chunks). See Token source below.", None, 12)

SUMMARY_COLUMNS: tuple[Column, ...] = (
    SETUP_COLUMN, MODEL_COLUMN, TEST_COLUMN,
    Column("status", "", "The cell's status: error if any sample errored, else failed if any answer failed its check, "
                         "else ok; cells that did not run keep their own status (missing, unavailable, skipped). "
                         "See Statuses below.", None, 11),
    Column("reason", "", "Why the cell is not ok: the count and first message of errors or failed checks, or why it "
                         "did not run.", None, 40),
    ENGINE_COLUMN,
    Column("ok", "samples", "Samples with status ok (the cold sample included).", COUNT, 6),
    Column("failed", "samples", "Samples whose answer did not meet the test's check.", COUNT, 7),
    Column("error", "samples", "Samples whose request or engine failed.", COUNT, 7),
    Column("skipped", "samples", "Samples skipped.", COUNT, 8),
    Column("warm_samples", "samples", "Warm samples behind the statistics (ok or failed, cold excluded): the largest "
                                      "count of values over the figures; a figure undefined for some samples (TTFT "
                                      "when not streamed) is over fewer.", COUNT, 9),
    _STREAM, _TOKEN_SOURCE,
    Column("cold_start_s", *DEFINITIONS["cold_start_s"], SEC3, 11),
    Column("load_s", "s", "The engine's own model-load time at the cold start (Ollama load_duration), from the warmup "
                          "request or else the cold sample.", SEC3, 9),
) + tuple(_stat_column(figure, stat) for figure in STAT_FIGURES for stat in SUMMARY_STATS.get(figure, DEFAULT_STATS))
"""The columns of Summary (summary.csv, the page's Summary), in the order of `summary_values`."""

RESULTS_COLUMNS: tuple[Column, ...] = (
    SETUP_COLUMN, MODEL_COLUMN, TEST_COLUMN,
    Column("repetition", "", "The repetition this timed sample belongs to; blank for a cell that did not run.",
           COUNT, 10),
    Column("cold", "", "yes for the cold sample, the first request after the model loaded (when warmup is 0); its "
                       "TTFT includes loading, so it is kept out of the warm statistics.", None, 6),
    Column("status", "", "The sample's status; see Statuses below.", None, 11),
    Column("reason", "", "Why the sample is not ok: the error message, the check that failed, or why it did not run.",
           None, 40),
    _STREAM,
    _figure("ttfb_s"), _figure("ttft_s"), _figure("e2e_s"), _figure("itl_s"), _figure("decode_tps", 11),
    _figure("overall_tps", 11), _figure("output_tokens", 13), _TOKEN_SOURCE, _figure("prompt_tokens", 13),
    _figure("server_decode_tps", 17), _figure("load_s"),
    ENGINE_COLUMN,
    Column("engine_model", "", "The model's name as the engine knows it (e.g. an Ollama tag or a Hugging Face "
                               "repository).", None, 20),
    Column("answer", "", f"The model's answer, cut to its first {ANSWER_CHARS} characters (… marks a cut; "
                         "results.jsonl keeps it whole).", None, 50),
    Column("time", "", "When the sample was recorded (as written in results.jsonl).", None, 20),
)
"""The columns of Results (results.csv), in the order of `result_values`."""

_RESULTS_FIGURES = tuple(c.name for c in RESULTS_COLUMNS[RESULTS_COLUMNS.index(_STREAM) + 1:
                                                      RESULTS_COLUMNS.index(ENGINE_COLUMN)])

CHART_COLUMNS: tuple[Column, ...] = (
    MODEL_COLUMN,
    Column("cells", "cells", "Setup × test cells of the model that have warm samples.", COUNT, 7),
    Column("ttft_s_mean", "s", "Mean TTFT over all warm streamed samples of the model (pooled over its cells). "
                               + DEFINITIONS["ttft_s"][1], SEC3, 12),
    Column("ttft_samples", "samples", "Warm samples behind ttft_s_mean.", COUNT, 12),
    Column("decode_tps_mean", "tokens/s", "Mean decode rate over all warm streamed samples of the model (pooled over "
                                          "its cells). " + DEFINITIONS["decode_tps"][1], RATE, 15),
    Column("decode_samples", "samples", "Warm samples behind decode_tps_mean.", COUNT, 14),
)

ENV_COLUMNS: tuple[Column, ...] = (
    Column("key", "", "What is recorded (nested values as dotted keys).", None, 34),
    Column("value", "", "Its value as recorded in results.jsonl.", None, 100),
)

_NOT_RUN = ("missing", "unavailable", "skipped")

# Keys a sample record may carry that the summary never reads; dropped while summarizing to keep memory flat.
_SUMMARY_DROP = ("answer", "server", "engine_model", "time", "messages", "prompt", "chunk_gaps", "chunk_times")


# ---------------------------------------------------------------------------------------------------------- values


def _epoch(value: Any) -> str | None:
    """An ISO time for a Unix timestamp, so that 1718000000.0 reads as a date."""
    if isinstance(value, (int, float)) and not isinstance(value, bool) and 1e9 < value < 1e11:
        return _dt.datetime.fromtimestamp(value, _dt.timezone.utc).isoformat(timespec="seconds")
    return None


def _flatten(prefix: str, value: Any, out: list[tuple[str, Any]]) -> None:
    if isinstance(value, dict) and value:
        for key, item in value.items():
            _flatten(f"{prefix}.{key}" if prefix else str(key), item, out)
    else:
        iso = _epoch(value) if any(w in prefix.lower() for w in ("time", "start", "end", "_at")) else None
        out.append((prefix, f"{iso} (Unix {value})" if iso else plain(value)))


def _pooled_mean(stats: Iterable[Stats | None]) -> tuple[float | None, int]:
    total, count = 0.0, 0
    for s in stats:
        if s is not None and s.count:
            total += s.mean * s.count
            count += s.count
    return (total / count if count else None), count


# ---------------------------------------------------------------------------------------------------------- writer


class Book:
    """The workbook being written: write-only, with cached styles; openpyxl is imported here, not at module import.

    The sheet writers take it as `book`; report_html's recorder stands in for it in the writers the page runs
    (Environment, Side by side, Definitions), which call sheet, style, cell, header and row only."""

    def __init__(self) -> None:
        import openpyxl
        from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE, Cell
        from openpyxl.styles import Alignment, Font, PatternFill

        self.Cell = Cell
        self.Font, self.PatternFill, self.Alignment = Font, PatternFill, Alignment
        self.illegal = ILLEGAL_CHARACTERS_RE
        self.wb = openpyxl.Workbook(write_only=True)
        self._styles: dict[tuple[str | None, str | None, bool], Any] = {}
        self._probe = None

    def sheet(self, title: str, columns: Iterable[Column], freeze: str | None = "A2", widths: dict[str, float] | None
              = None):
        from openpyxl.utils import get_column_letter

        ws = self.wb.create_sheet(title)
        columns = tuple(columns)
        for i, column in enumerate(columns, 1):
            width = (widths or {}).get(column.name, column.width)
            ws.column_dimensions[get_column_letter(i)].width = max(width, len(column.name) + 2)
        if freeze:
            ws.freeze_panes = freeze
        if self._probe is None:
            self._probe = ws
        return ws

    def style(self, status: str | None = None, fmt: str | None = None, header: bool = False):
        """A shared StyleArray for a status colour and number format (None: no style at all)."""
        key = (status if status in STATUS_STYLES else None, fmt, header)
        if key not in self._styles:
            cell = self.Cell(self._probe)
            colours = STATUS_STYLES.get(key[0])
            if header:
                cell.font = self.Font(bold=True)
                cell.fill = self.PatternFill("solid", fgColor=HEADER_FILL)
                cell.alignment = self.Alignment(wrap_text=True, vertical="top")
            elif colours:
                cell.font = self.Font(bold=colours["bold"], color=colours["color"])
                if colours["fill"]:
                    cell.fill = self.PatternFill("solid", fgColor=colours["fill"])
            if fmt:
                cell.number_format = fmt
            self._styles[key] = cell._style if cell.has_style else None
        return self._styles[key]

    def text(self, value: str, limit: int = TEXT_CHARS) -> str:
        return self.illegal.sub("\ufffd", cut(value, limit))

    def cell(self, ws, value: Any, style) -> Any:
        """What to append for one value: the value itself when unstyled, else a write-only cell sharing `style`."""
        if isinstance(value, str):
            value = self.text(value)
            formula_like = value.startswith("=")
        else:
            formula_like = False
        if style is None and not formula_like:
            return value
        cell = self.Cell(ws, row=1, column=1, value=value)
        if formula_like:
            cell.data_type = "s"  # an answer such as "=42" is text, never a formula
        if style is not None:
            cell._style = style
        return cell

    def header(self, ws, columns: Iterable[Column]) -> None:
        style = self.style(header=True)
        ws.append([self.cell(ws, c.name, style) for c in columns])

    def row(self, ws, columns: tuple[Column, ...], values: Iterable[Any], status: str | None) -> None:
        """Append one row; a status with colours paints its empty cells too, so the whole row stands out."""
        paint = status in STATUS_STYLES
        ws.append([self.cell(ws, v, self.style(status, c.fmt)) if v is not None or paint else None
                   for c, v in zip(columns, values)])

    def save(self, path: Path) -> None:
        self.wb.save(path)


def _filter(ws, columns: tuple[Column, ...], rows: int) -> None:
    from openpyxl.utils import get_column_letter

    ws.auto_filter.ref = f"A1:{get_column_letter(len(columns))}{max(rows, 1) + 1}"


# ---------------------------------------------------------------------------------------------------------- sheets


@dataclass
class Scan:
    """What the first pass over results.jsonl gathers (`scan_results`): the summary rows, the run, engine and end
    records, the sample counts, and the labelled models and load levels."""

    rows: list[SummaryRow]
    run: dict[str, Any] | None
    engines: list[dict[str, Any]]
    end: dict[str, Any] | None
    samples: int
    statuses: Counter
    labelled_levels: list[dict[str, Any]] = field(default_factory=list)
    """`load_level` records carrying a `label` (the side-by-side comparison of load levels)."""
    order: dict[tuple[str, str], None] = field(default_factory=dict)
    """(setup, model) of every labelled model, in the order of the file."""


class _Slim(Mapping):
    """A sample record without its answer and server figures, held as a shared key layout and a tuple of values.

    About a quarter of a dict's memory (100,000 samples: ~40 MB instead of ~230 MB), read as `summarize` reads
    records: through the mapping interface.
    """

    __slots__ = ("_layout", "_values")

    def __init__(self, layout: dict[str, int], values: tuple[Any, ...]) -> None:
        self._layout = layout
        self._values = values

    def get(self, key: str, default: Any = None) -> Any:
        index = self._layout.get(key)
        return default if index is None else self._values[index]

    def __getitem__(self, key: str) -> Any:
        return self._values[self._layout[key]]

    def __iter__(self) -> Iterator[str]:
        return iter(self._layout)

    def __len__(self) -> int:
        return len(self._layout)


def scan_results(results_path: Path, bad: BadLines | None = None) -> Scan:
    """First pass over results.jsonl: the summary rows, plus the run, engine and end records and sample counts; lines
    that cannot be read are skipped and noted in `bad`."""
    return scan_records(read_results(results_path, bad))


def scan_records(records: Iterable[Mapping[str, Any]]) -> Scan:
    """What `scan_results` gathers, from records already read (each sample slimmed as it is summarized)."""
    scan = Scan([], None, [], None, 0, Counter())
    layouts: dict[tuple[str, ...], dict[str, int]] = {}
    intern = sys.intern

    def slim() -> Iterator[Mapping[str, Any]]:
        for record in records:
            kind = record.get("type")
            if isinstance(record.get("label"), str) and kind in ("sample", "warmup", "load_level"):
                scan.order.setdefault((str(record.get("setup")), str(record.get("model"))), None)
                if kind == "load_level":
                    scan.labelled_levels.append(record)
            if kind == "sample":
                scan.samples += 1
                scan.statuses[str(record.get("status"))] += 1
                keys = tuple(k for k in record if k not in _SUMMARY_DROP)
                layout = layouts.get(keys)
                if layout is None:
                    layout = layouts[keys] = {intern(k): i for i, k in enumerate(keys)}
                yield _Slim(layout, tuple(intern(v) if isinstance(v, str) and len(v) < 200 else v
                                          for v in map(record.__getitem__, keys)))
            elif kind == "warmup":
                yield record
            elif kind == "run" and scan.run is None:
                scan.run = record
            elif kind == "engine":
                scan.engines.append(record)
            elif kind == "end":
                scan.end = record

    scan.rows = summarize(slim())  # type: ignore[arg-type]  # summarize reads records through .get only
    return scan


def summary_values(row: SummaryRow) -> list[Any]:
    """A summary row as a Summary row, in the order of SUMMARY_COLUMNS (the workbook, the CSV and the page show it)."""
    counts = [s.count for s in row.stats.values() if s is not None]
    values: list[Any] = [
        row.setup, row.model, row.test, row.status, cut(row.reason, REASON_CHARS) if row.reason else None,
        row.engine, row.ok, row.failed, row.error, row.skipped, max(counts) if counts else 0, yes_no(row.stream),
        row.token_source,
        number(row.cold_start_s), number(row.load_s),
    ]
    for figure in STAT_FIGURES:
        stats = row.stats.get(figure)
        for stat in SUMMARY_STATS.get(figure, DEFAULT_STATS):
            values.append(number(getattr(stats, stat)) if stats is not None else None)
    return values


def _width(values: Iterable[Any], floor: float, cap: float = 60) -> float:
    longest = max((len(str(v)) for v in values if v is not None), default=0)
    return min(max(floor, longest + 2), cap)


def _write_summary(book: Book, scan: Scan, results_path: Path) -> dict[str, float]:
    table = [(summary_values(row), row.status) for row in scan.rows]
    widths = {c.name: _width((v[i] for v, _ in table), c.width, 60 if c.name != "reason" else 50)
              for i, c in enumerate(SUMMARY_COLUMNS) if c.fmt is None}
    ws = book.sheet("Summary", SUMMARY_COLUMNS, freeze="D2", widths=widths)
    book.header(ws, SUMMARY_COLUMNS)
    for values, status in table:
        book.row(ws, SUMMARY_COLUMNS, values, status)
    if not table:
        ws.append([f"No samples in {results_path}: the run recorded nothing yet."])
    _filter(ws, SUMMARY_COLUMNS, len(table))
    return widths


def _write_charts(book: Book, scan: Scan) -> None:
    from openpyxl.chart import BarChart, Reference

    models: dict[str, list[SummaryRow]] = {}
    for row in scan.rows:
        models.setdefault(row.model, []).append(row)
    table = []
    for model, rows in models.items():
        ttft, ttft_n = _pooled_mean(r.stats.get("ttft_s") for r in rows)
        decode, decode_n = _pooled_mean(r.stats.get("decode_tps") for r in rows)
        cells = sum(1 for r in rows if any(s is not None for s in r.stats.values()))
        table.append([model, cells, ttft, ttft_n, decode, decode_n])
    ws = book.sheet("Charts", CHART_COLUMNS, widths={"model": _width((t[0] for t in table), 24)})
    book.header(ws, CHART_COLUMNS)
    for values in table:
        book.row(ws, CHART_COLUMNS, values, None)
    n = len(table)
    if not any(t[3] or t[5] for t in table):
        ws.append([])
        ws.append(["No warm streamed samples: nothing to chart."])
        return
    categories = Reference(ws, min_col=1, min_row=2, max_row=n + 1)
    height = max(7.5, 2.5 + 0.6 * n)
    for title, col, axis, anchor in (
        ("Mean TTFT per model (warm streamed samples)", 3, "seconds", "H2"),
        ("Mean decode rate per model (warm streamed samples)", 5, "tokens/s", f"H{int(height * 2) + 5}"),
    ):
        chart = BarChart()
        chart.type = "bar"  # horizontal: long model IDs stay readable
        chart.title = title
        chart.y_axis.title = axis
        chart.x_axis.title = "model"
        chart.legend = None
        chart.height, chart.width = height, 18
        chart.add_data(Reference(ws, min_col=col, min_row=1, max_row=n + 1), titles_from_data=True)
        chart.set_categories(categories)
        chart.x_axis.delete = False
        chart.y_axis.delete = False
        ws.add_chart(chart, anchor)


def _write_results(book: Book, results_path: Path, widths: dict[str, float]) -> None:
    ws = book.sheet("Results", RESULTS_COLUMNS, freeze="D2", widths={k: widths[k] for k in ("setup", "model", "test")
                                                                      if k in widths})
    book.header(ws, RESULTS_COLUMNS)
    count = 0
    for record in read_results(results_path):
        if record.get("type") != "sample":
            continue
        count += 1
        book.row(ws, RESULTS_COLUMNS, result_values(record), record.get("status"))
    _filter(ws, RESULTS_COLUMNS, count)


def result_values(record: dict[str, Any]) -> list[Any]:
    """A sample record as a Results row, in the order of RESULTS_COLUMNS (the workbook and the CSV both write it)."""
    answer = record.get("answer")
    reason = record.get("reason")
    status = record.get("status")
    time = record.get("time")
    values: list[Any] = [
        plain(record.get("setup")), plain(record.get("model")), plain(record.get("test")),
        number(record.get("repetition")), yes_no(record.get("cold")) if status not in _NOT_RUN else None,
        plain(status), cut(str(reason), REASON_CHARS) if reason else None, yes_no(record.get("stream")),
    ]
    for name in _RESULTS_FIGURES:
        values.append(plain(record.get(name)) if name == "token_source" else number(record.get(name)))
    values += [
        plain(record.get("engine")), plain(record.get("engine_model")),
        cut(answer if isinstance(answer, str) else str(plain(answer)), ANSWER_CHARS) if answer else None,
        (_epoch(time) or str(time)) if time is not None else None,
    ]
    return values


def write_side_by_side(book: Book, pairs: list[Any]) -> list[tuple[str, tuple[Column, ...]]]:
    """The engine-against-engine sheets (models sharing a `label:`), when the run has such models; returns the
    sheets written and their columns (for Definitions)."""
    from openpyxl.utils import get_column_letter

    from .report_tables import SIDE_COLUMNS, SIDE_LOAD_COLUMNS, side_load_table, side_table

    written = []
    for title, columns, rows in (("Side by side", SIDE_COLUMNS, side_table(pairs)),
                                 ("Side by side (load)", SIDE_LOAD_COLUMNS, side_load_table(pairs))):
        if not rows:
            continue
        names = [c.name for c in columns]
        widths = {c.name: _width((r[i] for r in rows), c.width) for i, c in enumerate(columns) if c.fmt is None}
        ws = book.sheet(title, columns, freeze=f"{get_column_letter(names.index('name') + 2)}2", widths=widths)
        book.header(ws, columns)
        for values in rows:
            book.row(ws, columns, values, values[names.index("status")])
        _filter(ws, columns, len(rows))
        written.append((title, columns))
    return written


SIDE_BY_SIDE_NOTE = (
    "Models whose entries in the setups file share a `label:` (the same model on two engines, say) are compared "
    "whatever setup they are in: for every test, and every load level, that two or more of them ran, one row per "
    "model, adjacent, with each figure and its ratio to the first model's (the first in the order of the setups file "
    "that has the row). Test figures are the Summary's, over warm samples; load figures the Load sheet's. A ratio "
    "below 1 means smaller: faster for TTFT, E2E and ITL, slower for rates.")


def write_environment(book: Book, scan: Scan, results_path: Path) -> None:
    """The Environment sheet: the report's own counts, the run record, the engines and the end record."""
    ws = book.sheet("Environment", ENV_COLUMNS)
    book.header(ws, ENV_COLUMNS)
    items: list[tuple[str, Any]] = [
        ("report.results_file", str(results_path)),
        ("report.written", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")),
        ("report.samples", scan.samples),
        ("report.cells", len(scan.rows)),
    ]
    items += [(f"report.cells.{status}", n) for status, n in
              Counter(r.status for r in scan.rows).most_common()]
    items += [(f"report.samples.{status}", n) for status, n in scan.statuses.most_common()]
    if scan.run is None:
        items.append(("run", "no run record in the results file"))
    else:
        _flatten("", {k: v for k, v in scan.run.items() if k != "type"}, items)
    seen = set()
    for record in scan.engines:
        name = record.get("name") or record.get("engine") or "engine"
        rest = {k: v for k, v in record.items() if k not in ("type", "name")}
        value = "; ".join(f"{k}={plain(v)}" for k, v in rest.items())
        if (name, value) not in seen:
            seen.add((name, value))
            items.append((f"engines.{name}", value))
    if scan.end is None:
        items.append(("end", "no end record: the run is still going or was killed before it could finish"))
        items.append(("interrupted", "unknown (no end record)"))
    else:
        end = {k: v for k, v in scan.end.items() if k != "type"}
        items.append(("interrupted", yes_no(bool(end.pop("interrupted", False)))))
        _flatten("end", end, items)
    for key, value in items:
        book.row(ws, ENV_COLUMNS, [key, value], None)


def write_definitions(book: Book, load_columns: tuple[Column, ...] | None = None,
                      side: Iterable[tuple[str, tuple[Column, ...]]] = ()) -> None:
    """The Definitions sheet: every column of the sheets written (the Load sheet's and the side-by-side sheets' when
    given), then the statuses, token sources, statistics and other terms."""
    columns = (
        Column("sheet", "", "", None, 12), Column("column", "", "", None, 20), Column("unit", "", "", None, 10),
        Column("definition", "", "", None, 120),
    )
    ws = book.sheet("Definitions", columns)
    book.header(ws, columns)
    side = list(side)
    for sheet, cols in (("Summary", SUMMARY_COLUMNS), ("Results", RESULTS_COLUMNS), ("Charts", CHART_COLUMNS),
                        ("Environment", ENV_COLUMNS), ("Load", load_columns or ()), *side):
        for c in cols:
            book.row(ws, columns, [sheet, c.name, c.unit or None, c.definition], None)
    heading = book.style(header=True)

    def section(title: str, rows: Iterable[tuple[str, str, str | None]]) -> None:
        ws.append([])
        ws.append([book.cell(ws, title, heading), book.cell(ws, "name", heading), None,
                   book.cell(ws, "meaning", heading)])
        for name, meaning, status in rows:
            ws.append([title, book.cell(ws, name, book.style(status)), None, meaning])

    section("Statuses", ((s, STATUS_MEANINGS.get(s, ""), s) for s in STATUSES))
    section("Token source", ((k, v, None) for k, v in TOKEN_SOURCES.items()))
    section("Statistics", [(k, v.capitalize() + ".", None) for k, v in STAT_MEANINGS.items()] + [
        ("warm samples", f"Statistics in Summary are {WARM_NOTE}. Cold start is reported on its own "
                         "(cold_start_s), never mixed into them.", None),
        ("percentiles", PERCENTILE_NOTE, None),
        ("chosen columns", "Summary shows " + "; ".join(
            f"{f}: {', '.join(SUMMARY_STATS.get(f, DEFAULT_STATS))}" for f in STAT_FIGURES) + ".", None),
    ])
    section("Clock", [("perf_counter_ns", "One monotonic clock (time.perf_counter_ns) for every stamp; a chunk is "
                                          "stamped the moment its bytes arrive, before JSON parsing.", None)])
    if load_columns:
        from .report_load import LOAD_TERMS

        section("Under load", ((name, meaning, None) for name, meaning in LOAD_TERMS))
    if side:
        section("Side by side", [("label", SIDE_BY_SIDE_NOTE, None)])
    section("Row colours", [
        ("missing", "Yellow fill, bold red text.", "missing"), ("error", "Red fill, dark red text.", "error"),
        ("failed", "Orange fill, brown text.", "failed"), ("unavailable", "Grey text.", "unavailable"),
        ("skipped", "Grey text.", "skipped"),
    ])


# ---------------------------------------------------------------------------------------------------------- entry


def check_writable(path: Path, folder: bool = False) -> None:
    """Raise OSError unless a file (with `folder`: files in a folder) can be written at `path`; creates its folder."""
    if folder:
        if path.exists() and not path.is_dir():
            raise NotADirectoryError(20, "is a file, not a folder")
    elif path.is_dir():
        raise IsADirectoryError(21, "is a folder")
    elif path.exists() and not path.is_file():
        raise OSError(22, "is not a regular file (a device or a pipe)")
    if any(p.exists() and not p.is_dir() for p in path.parents):
        raise NotADirectoryError(20, "a folder on its path is a file")
    (path if folder else path.parent).mkdir(parents=True, exist_ok=True)
    probe = path / ".jarvis-csv-probe" if folder else path.with_name(path.name + ".part")
    probe.open("wb").close()
    probe.unlink()  # writable: the output is written there once it is built


def discard(tmp: Path, book: Book | None = None) -> None:
    """Remove the half-written file `tmp` (never a folder or a device) after a failed save, closing `book` first."""
    # the workbook's write-only sheets: their row writers closed now, else each complains on the way out ("Exception
    # ignored in ...")
    for ws in book.wb.worksheets if book is not None else ():
        try:
            ws.close()  # finishes the sheet's own temporary file; never touches the report's path
        except Exception:  # noqa: BLE001 - closing after a failed save may fail in any way; nothing is lost
            pass
    if tmp.parent.is_dir() and (tmp.is_file() or not tmp.exists()):
        tmp.unlink(missing_ok=True)


def cannot_write(what: str, where: Path, exc: OSError, results_path: Path, instead: str) -> UsageError:
    """The one line for an output that cannot be written (`what` to `where`), saying what to give `instead`."""
    return UsageError(f"Cannot write {what} to {where}: {exc.strerror or exc}; {instead} (the results in "
                      f"{results_path} are safe).")


def write_report(results_path: Path, out_path: Path, bad: BadLines | None = None) -> Path:
    """Build report.xlsx at `out_path` from the results file at `results_path`; returns `out_path`.

    Copes with an empty or torn results file, records whose figures are None, and cells without samples; lines it
    cannot read are skipped and noted in `bad` (line numbers).
    """
    from .report_load import write_load_sheet

    results_path, out_path = Path(results_path), Path(out_path)
    if not results_path.is_file():
        raise UsageError(f"no results file at {results_path}: give the results.jsonl a run wrote")
    tmp = out_path.with_name(out_path.name + ".part")
    try:  # can we write there at all? Asked before the workbook is built
        check_writable(out_path)
    except OSError as exc:
        raise cannot_write("the report", out_path, exc, results_path, "give another path with -o") from None
    from .report_tables import pairs_from, series_names

    scan = scan_results(results_path, bad)
    pairs = pairs_from(scan.rows, scan.labelled_levels, list(scan.order))
    book = Book()
    try:
        widths = _write_summary(book, scan, results_path)
        side = write_side_by_side(book, pairs)
        _write_charts(book, scan)
        _write_results(book, results_path, widths)
        load_columns = write_load_sheet(book, results_path, names=series_names(pairs), order=list(scan.order))
        write_environment(book, scan, results_path)
        write_definitions(book, load_columns, side)
        book.save(tmp)
    except KeyboardInterrupt:
        discard(tmp, book)  # Ctrl-C while building or saving: no half-written workbook, no noise on the way out
        raise
    except OSError as exc:
        discard(tmp, book)
        raise cannot_write("the report", out_path, exc, results_path, "give another path with -o") from None
    try:
        tmp.replace(out_path)
    except PermissionError:  # Windows: the old workbook is open in Excel
        tmp.unlink(missing_ok=True)
        raise JarvisError(f"Cannot write {out_path}: the file is in use (open in Excel?). Close it and run "
                          f"`jarvis report {results_path} -o {out_path}`; the results themselves are safe.") from None
    return out_path
