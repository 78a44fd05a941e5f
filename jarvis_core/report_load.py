"""The workbook's Load sheet: one row per setup × model × load level, the capacity of each model, and native Excel
charts of output tokens/s and TTFT p99 against concurrency (and against rate), one series per setup × model, so the
same model on two engines sits side by side: models sharing a `label:` are adjacent series named `label (engine)`
(report_tables.py). Definitions of every column and of the load terms go to Definitions."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence, TypeVar

from .report_cells import RATE, SEC3, SEC4, Column, number, plain
from .results import read_results

if TYPE_CHECKING:
    from .report import Book

LOAD_TERMS: tuple[tuple[str, str], ...] = (
    ("closed loop", "concurrency N: N requests always in flight; a new one is sent the moment one ends. The N users "
                    "start one after another (the ramp-up: one request alone, then the users spread evenly over its "
                    "answer time), so their answers do not end, and their next requests go out, all at once."),
    ("open loop", "rate R: requests sent at times drawn in advance (constant spacing, or Poisson arrivals: "
                  "exponential gaps with mean 1/R, seeded), whatever happens to earlier ones; at most max_concurrency "
                  "in flight (default 512), the others wait in the client."),
    ("warm-up", "The first requests of every level (load.warmup, default 2; in closed loop at least the ramp-up's "
                "N + 1) are sent and discarded."),
    ("measured window", "From the first measured request sent (or the last warm-up one, if that was later) to the "
                        "last request sent (window = steady): ramp-up and drain excluded; in open loop it starts "
                        "later by the answers' E2E p90, while the requests in flight build up. Streamed answers count "
                        "only their chunks that arrived inside it. When every request was sent at once, or the "
                        "answers are as long as the level, the window runs to the last answer (window = with drain)."),
    ("TTFT from the schedule", "In open loop TTFT and E2E are also measured from the scheduled send time, as a user "
                               "experiences them (ttft_sched_*); ttft_* is from the moment the request was written."),
    ("SLO and goodput", "An SLO bounds TTFT (from the schedule), ITL and E2E (from the schedule) per request; goodput "
                        "is the requests done inside the window that met every bound, per second."),
    ("capacity", "The largest level at which at least `share` (default 90 %) of the level's requests met the SLO; "
                 "'not reached' when none did."),
    ("saturation", "Output tokens/s growing by less than a tenth of the growth in requests in flight from one "
                   "concurrency to the next (N to 2N: under 10 %; 1 to 4: under 30 %) while TTFT p50 grows by more "
                   "than 20 %: named in the console and the results with the engine's parallelism setting."),
    ("client health", "client_cpu is the CPU the Jarvis process used during the level, as a share of one core: above "
                      "80 % the level is flagged (the client may be the bottleneck); so is an open-loop level whose "
                      "achieved rate fell below 95 % of the schedule."),
)
"""The load terms and their meanings (the workbook's Definitions, section Under load, and the page's)."""


def load_columns() -> tuple[Column, ...]:
    """The columns of the Load sheet (load.csv, the page's Levels table), one row per `load_level` record."""

    def pct(figure: str, meaning: str) -> list[Column]:
        return [Column(f"{figure}_{p}", "s", f"{p} of {meaning} over the level's successful measured requests.",
                       SEC3 if figure != "itl" else SEC4, 11) for p in ("p50", "p90", "p99")]

    return (
        Column("setup", "", "The test setup the level belongs to.", None, 14),
        Column("model", "", "Canonical model ID (engine prefix, name, flags).", None, 24),
        Column("engine", "", "The engine that served the model.", None, 10),
        Column("concurrency", "requests", "Closed loop: requests always in flight (empty for an open-loop level).",
               None, 11),
        Column("rate", "req/s", "Open loop: scheduled requests per second (empty for a closed-loop level).", RATE, 8),
        Column("status", "", "ok when the level ran; error when every request failed; interrupted when Ctrl-C cut "
               "it short (the figures of what was answered before); missing or unavailable when it could not run.",
               None, 10),
        Column("reason", "", "Why the level did not run, or what the client flagged about it.", None, 40),
        Column("requests_ok", "requests", "Measured requests that succeeded (warm-up ones excluded).", None, 10),
        Column("requests_error", "requests", "Measured requests that failed.", None, 10),
        Column("output_tps", "tokens/s", "Output tokens that arrived inside the measured window ÷ its length, all "
                                         "requests together.", RATE, 11),
        Column("request_rate", "req/s", "Requests completed inside the measured window ÷ its length.", "0.00", 10),
        Column("goodput_rps", "req/s", "Requests completed inside the window that met every SLO bound ÷ its length "
                                       "(empty without an SLO).", "0.00", 10),
        Column("slo_share", "", "Share of the level's measured requests that met the SLO.", "0%", 9),
        *pct("ttft", "TTFT (first non-empty token − request written)"),
        *pct("ttft_sched", "TTFT from the scheduled send time (includes any client-side wait)"),
        *pct("itl", "ITL per request: (last token − first token) ÷ (N − 1), vLLM's TPOT"),
        *pct("e2e", "E2E latency (last token − request written)"),
        Column("queue_wait_p99", "s", "p99 of the client-side wait: scheduled → a worker began sending.", SEC3, 11),
        Column("send_lag_p99", "s", "p99 of scheduled → request written (open loop: lateness against the schedule).",
               SEC3, 11),
        Column("achieved_rate", "req/s", "Open loop: requests actually sent per second.", "0.00", 10),
        Column("client_cpu", "", "CPU the Jarvis process used during the level, as a share of one core.", "0%", 9),
        Column("window_s", "s", "Length of the measured window.", SEC3, 9),
        Column("window", "", "steady (ramp-up and drain excluded) or with drain.", None, 10),
        Column("stopped_early", "requests", "Answers shorter than the pinned output length (load.output_tokens): the "
                                            "engine cannot pin it or ignored the request.", None, 10),
        Column("parallelism", "", "Requests the engine serves at once, and the setting that changes it.", None, 30),
    )


def load_rows(results_path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The `load_level` and `load_capacity` records of a results file, levels sorted by setup, model and load. A level
    recorded twice (interrupted or not run, then measured by --resume) is shown once: measured wins, else the last;
    a model's capacity is its last record."""
    by_level: dict[tuple[Any, ...], dict[str, Any]] = {}
    by_model: dict[tuple[Any, ...], dict[str, Any]] = {}  # the last capacity: a resumed run's weighs every level
    for record in read_results(results_path):
        if record.get("type") == "load_level":
            key = (record.get("setup"), record.get("model"), record.get("concurrency"), record.get("rate"))
            if key not in by_level or "status" in by_level[key]:
                by_level[key] = record
        elif record.get("type") == "load_capacity":
            by_model[(record.get("setup"), record.get("model"))] = record
    levels, capacities = list(by_level.values()), list(by_model.values())
    levels.sort(key=lambda r: (str(r.get("setup")), str(r.get("model")), r.get("rate") is not None,
                               float(r.get("concurrency") or r.get("rate") or 0)))
    return levels, capacities


def load_values(record: dict[str, Any], columns: Iterable[Column]) -> list[Any]:
    """A `load_level` record as a row of `columns` (all or some of `load_columns`), as the Load sheet shows it."""
    out: list[Any] = []
    for c in columns:
        name = c.name
        if name == "status":
            out.append(record.get("status") or "ok")
        elif name == "reason":
            out.append(record.get("reason") or ("; ".join(record.get("flags") or []) or None))
        elif name == "parallelism":
            p = record.get("parallelism") or {}
            out.append(f"{p.get('value') if p.get('value') is not None else 'unknown'} ({p.get('setting')})"
                       if p else None)
        elif name[-4:] in ("_p50", "_p90", "_p99"):  # ttft_p90 is record["ttft_s"]["p90"]
            figure, stat = name[:-4], name[-3:]
            out.append(number((record.get(figure + "_s") or {}).get(stat)))
        elif name in ("setup", "model", "engine", "window"):
            out.append(plain(record.get(name)))
        else:
            out.append(number(record.get(name)))
    return out


def write_load_sheet(book: Book, results_path: Path, names: Mapping[tuple[str, str], str] | None = None,
                     order: Sequence[tuple[str, str]] | None = None) -> tuple[Column, ...] | None:
    """The Load sheet, when the run has load levels; returns its columns (for Definitions), else None. `names`
    ((setup, model) → name, `report_tables.series_names`) names the chart series of models compared under a label,
    and `order` ((setup, model) pairs) orders those series within their label."""
    levels, capacities = load_rows(results_path)
    if not levels:
        return None
    columns = load_columns()
    ws = book.sheet("Load", columns, freeze="D2")
    book.header(ws, columns)
    for record in levels:
        status = record.get("status")
        book.row(ws, columns, load_values(record, columns), status)
    if capacities:
        ws.append([])
        for cap in capacities:
            for line in cap.get("lines") or []:  # "capacity: 4 users at once with 90% of requests within ..."
                ws.append([plain(cap.get("setup")), plain(cap.get("model")), plain(cap.get("engine")),
                           book.text(str(line))])
    _charts(ws, levels, columns, names or {}, order or ())
    return columns


_Key = TypeVar("_Key", bound=tuple)


def series_order(keys: Iterable[_Key], labels: Mapping[tuple[str, str], str],
                 order: Iterable[tuple[str, str]]) -> list[_Key]:
    """Series keys, (setup, model, ...), once each, the models of a label adjacent at the place of its first one.

    `labels` maps (setup, model) to its label; within a label the models follow `order` (the file's), and other models
    keep their place. The workbook's Load charts and the page's load charts order their series so."""
    rank = {key: i for i, key in enumerate(order)}
    groups: dict[Any, list[_Key]] = {}
    for key in dict.fromkeys(keys):
        label = labels.get(key[:2])
        groups.setdefault(("label", label) if label is not None else ("model", key[:2]), []).append(key)
    return [key for members in groups.values() for key in sorted(members, key=lambda k: rank.get(k[:2], len(rank)))]


def _charts(ws: Any, levels: list[dict[str, Any]], columns: tuple[Column, ...],
            names: Mapping[tuple[str, str], str], order: Sequence[tuple[str, str]]) -> None:
    """Scatter charts with lines (Excel's line chart over numeric x): one series per setup × model; models compared
    under a label are adjacent and named as in the side-by-side views."""
    from openpyxl.chart import Reference, ScatterChart, Series

    headers = [c.name for c in columns]
    runs: dict[tuple[str, str, bool], list[int]] = {}
    labels: dict[tuple[str, str], str] = {}
    for row, record in enumerate(levels, start=2):
        key = (str(record.get("setup")), str(record.get("model")))
        if key in names and isinstance(record.get("label"), str):
            labels[key] = record["label"]
        if record.get("status"):
            continue
        runs.setdefault((*key, record.get("rate") is not None), []).append(row)
    anchor_row = len(levels) + 6
    for open_loop, x_name, x_title in ((False, "concurrency", "requests in flight"), (True, "rate", "requests/s")):
        series_rows = {k: v for k, v in runs.items() if k[2] == open_loop}
        if not series_rows:
            continue
        for y_name, title, y_title in (("output_tps", "Output tokens/s", "tokens/s"),
                                       ("ttft_p99", "TTFT p99", "seconds")):
            chart = ScatterChart()
            chart.title = f"{title} against {x_title}"
            chart.style = 13
            chart.x_axis.title, chart.y_axis.title = x_title, y_title
            chart.x_axis.delete = chart.y_axis.delete = False
            chart.height, chart.width = 9, 18
            # a series spans its model's rows from first to last, so a failed level sorted between two measured ones
            # is an empty cell inside it: drawn as a gap (no point, the line broken), never as a zero
            chart.display_blanks = "gap"
            for key in series_order(series_rows, labels, order):
                setup, model, _ = key
                rows = series_rows[key]
                x = Reference(ws, min_col=headers.index(x_name) + 1, min_row=rows[0], max_row=rows[-1])
                y = Reference(ws, min_col=headers.index(y_name) + 1, min_row=rows[0], max_row=rows[-1])
                series = Series(y, x, title=names.get((setup, model)) or f"{model} ({setup})")
                series.marker.symbol = "circle"
                chart.series.append(series)
            ws.add_chart(chart, f"C{anchor_row}")
            anchor_row += 20
