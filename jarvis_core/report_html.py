"""The web page (report.html), built from a results.jsonl: one self-contained file to share, that opens offline on a
phone or a desktop.

`write_html(results_path, out_path)` writes these sections:

- **Summary**: one row per setup × model × test, the workbook's Summary (`results.summarize`) with its status colours
  (missing: yellow with bold red text; error: red; ...): the key columns first, every column under "All columns".
- **Latency**: TTFT and E2E p50, p90 and p99 per model and test (warm samples), as bar charts.
- **Under load** (when the run has load levels): output tokens/s and TTFT p99 against concurrency (and against rate),
  one series per model, the capacity lines, and the Load table (`report_load`).
- **Engine against engine** (when models share a `label`): per label, every test and load level two or more of the
  models ran, their figures side by side with the ratio of each to the first model's (`report_tables`, the workbook's
  Side by side sheets), and their load curves on one chart.
- **Definitions** and **Environment**: the workbook's own sheets, written by report.py's writers into a recorder, so
  the texts are the same.

The page is one string written to a temporary file and renamed over `out_path`, as the workbook is.

Charts are drawn by Chart.js (MIT), a pinned copy shipped in `jarvis_core/static/` and embedded once per page. Chosen
over Plotly, whose Python package embeds plotly.js (~4.6 MB per page), and Apache ECharts (~1 MB): Chart.js is 210 KB,
so a typical page stays near 300 KB; it is kept by the chartjs organization with regular releases, draws responsive
canvas charts and loads nothing from the network. No Python dependency is added. To update it: `npm pack
chart.js@VERSION`, copy `package/dist/chart.umd.min.js` into `jarvis_core/static/` and the package's licence file to
`jarvis_core/static/chart.js-LICENSE.md`, and set CHARTJS_VERSION.

Every text from the results (setup, model and test names, reasons, environment values) is HTML-escaped; answers are
not on the page. Chart data travels
as JSON in a `<script type="application/json">` block (`<`, `>` and `&` escaped) and is drawn on canvas, never put
into the page as HTML. Secrets were redacted when results.jsonl was written; the page adds nothing of its own
environment.
"""

from __future__ import annotations

import html
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Iterable

from .errors import JarvisError, UsageError
from .report_cells import cut, status_shown
from .results import BadLines

CHARTJS_VERSION = "4.6.1"
_CHARTJS = "chart.umd.min.js"  # npm chart.js 4.6.1, dist/chart.umd.min.js, unmodified

#: The figures the latency charts show, with a readable name.
LATENCY_FIGURES = (("ttft_s", "TTFT"), ("e2e_s", "E2E"))
PERCENTILES = ("p50", "p90", "p99")

#: Key columns of the summary shown first (every column is under "All columns").
KEY_SUMMARY_COLUMNS = ("setup", "model", "test", "status", "reason", "ok", "failed", "error", "warm_samples",
                       "ttft_s_p50", "ttft_s_p90", "ttft_s_p99", "e2e_s_p50", "e2e_s_p90", "e2e_s_p99",
                       "decode_tps_p50", "output_tokens_mean")

# Series colours (Okabe–Ito, readable by colour-blind people) and the shades of p50, p90, p99.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000", "#F0E442")
PERCENTILE_COLOURS = ("#9ecae1", "#4292c6", "#08306b")

_WRAP = {"reason", "definition", "meaning", "value"}  # columns whose text wraps; the others stay on one line
_IDS = {"setup", "model", "test"}  # wrapped on a phone only, so that the status shows beside them


# ---------------------------------------------------------------------------------------------------------- entry


def write_html(results_path: Path, out_path: Path, bad: BadLines | None = None) -> Path:
    """Build report.html at `out_path` from the results file at `results_path`; returns `out_path`.

    Copes with an empty or torn results file, cells without samples and runs without load levels; lines it cannot
    read are skipped, noted in `bad` (line numbers) and named on the page.
    """
    from .report import cannot_write, check_writable, discard

    results_path, out_path = Path(results_path), Path(out_path)
    if not results_path.is_file():
        raise UsageError(f"no results file at {results_path}: give the results.jsonl a run wrote")
    try:  # asked before the page is built, as report.write_report does: never replace a folder, a device or a pipe
        check_writable(out_path)
    except OSError as exc:
        raise cannot_write("the page", out_path, exc, results_path, "give another path") from None
    page = _Page(results_path, bad).render(_chartjs())
    tmp = out_path.with_name(out_path.name + ".part")
    try:
        tmp.write_text(page, encoding="utf-8")
        tmp.replace(out_path)
    except KeyboardInterrupt:
        discard(tmp)
        raise
    except OSError as exc:
        discard(tmp)
        raise cannot_write("the page", out_path, exc, results_path, "give another path") from None
    return out_path


def _chartjs() -> str:
    """The embedded chart library: its trailing source-map comment dropped (a browser's developer tools would try to
    fetch the map), and refused if it could close the inline script early."""
    from importlib import resources

    try:
        text = (resources.files("jarvis_core") / "static" / _CHARTJS).read_text(encoding="utf-8")
    except (OSError, ValueError) as exc:
        raise JarvisError(f"the chart library jarvis_core/static/{_CHARTJS} is missing or unreadable ({exc}): "
                          f"reinstall jarvis-core") from None
    text = re.sub(r"\n//# sourceMappingURL=\S*\s*$", "\n", text)
    if "</script" in text.lower():
        raise JarvisError(f"jarvis_core/static/{_CHARTJS} cannot be embedded inline: reinstall jarvis-core")
    return text


# ---------------------------------------------------------------------------------------------------------- values


def _e(value: Any) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def _fmt(value: Any, fmt: str | None = None) -> str:
    """A value as the workbook's number format shows it: 0.000 → three decimals, 0% → a percentage."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, float)):
        if fmt == "0%":
            return f"{value:.0%}"
        if fmt and fmt.startswith("0."):
            return f"{value:.{len(fmt) - 2}f}"
        return f"{value:.6g}" if isinstance(value, float) else str(value)
    return str(value)


def _finite(value: Any) -> float | None:
    """A number a chart can plot: None for anything else (text, booleans, NaN and infinities nested in a record)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return value


def _script_json(value: Any) -> str:
    """JSON safe inside a <script> element: nothing in it can close the element or open a comment."""
    text = json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                          ("\u2029", "\\u2029")):
        text = text.replace(char, escaped)
    return text


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"


def _css() -> str:
    from .report import HEADER_FILL, STATUS_STYLES

    rules = []
    for status, style in STATUS_STYLES.items():  # the workbook's row colours
        decl = [f"color:#{style['color']}"]
        if style["fill"]:
            decl.append(f"background:#{style['fill']}")
        if style["bold"]:
            decl.append("font-weight:bold")
        rules.append(f"tr.st-{status}>td,.badge.st-{status}{{{';'.join(decl)}}}")
    return _CSS.replace("HEADER_FILL", HEADER_FILL) + "\n".join(rules) + "\n"


_CSS = """
*{box-sizing:border-box}
html{-webkit-text-size-adjust:100%}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;color:#1b1b1b;
background:#fff;overflow-wrap:anywhere}
header,main,footer{max-width:1280px;margin:0 auto;padding:0 14px}
header{padding-top:14px}
h1{font-size:1.5rem;margin:.2em 0}
h2{font-size:1.25rem;margin:1.6em 0 .5em;padding-bottom:.2em;border-bottom:2px solid #HEADER_FILL}
h3{font-size:1.05rem;margin:1.2em 0 .4em}
p,ul{margin:.4em 0}
.meta{color:#555;font-size:.9rem}
nav{display:flex;flex-wrap:wrap;gap:.3em .9em;margin:.6em 0;font-size:.95rem}
nav a{color:#0b57d0}
.warn{background:#fff4e5;border-left:4px solid #e69f00;padding:.4em .7em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch;max-width:100%;margin:.4em 0 1em}
table{border-collapse:collapse;font-size:.85rem;width:100%;border:1px solid #ddd}
th,td{padding:.25em .5em;border-bottom:1px solid #e5e5e5;text-align:left;vertical-align:top;white-space:nowrap;
overflow-wrap:normal}
th{background:#HEADER_FILL;font-weight:600}
th small{font-weight:normal;color:#555}
td.n{text-align:right;font-variant-numeric:tabular-nums}
table.pairs thead th{white-space:normal;overflow-wrap:anywhere;min-width:7em}
table.pairs tbody th{white-space:normal;min-width:4.5em}
td.wrap{white-space:normal;min-width:16em;max-width:42em;overflow-wrap:anywhere}
.badge{padding:0 .35em;border-radius:3px}
details{margin:.4em 0}
summary{cursor:pointer;color:#0b57d0}
figure{margin:.6em 0 1.4em}
figcaption{font-weight:600;margin-bottom:.3em}
.chart{position:relative;width:100%}
.chart.broken{color:#9c0006}
ul.lines li{margin:.2em 0}
footer{color:#666;font-size:.8rem;margin-top:2em;padding-bottom:2em}
@media (max-width:600px){body{font-size:14px}h1{font-size:1.25rem}table{font-size:.8rem}
td.id{white-space:normal;min-width:7em;max-width:12em;overflow-wrap:anywhere}}
"""

# The page's own script: draws each chart from the JSON block; it never writes data into the page as HTML.
_JS = r"""
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("jarvis-data").textContent);
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.responsive = true;
  Chart.defaults.font.family = 'system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif';
  function num(v) {
    if (v === null || v === undefined) { return "-"; }
    var a = Math.abs(v);
    return a >= 100 ? v.toFixed(1) : a >= 1 ? v.toFixed(2) : v.toFixed(4);
  }
  function wrap(text, max) {
    // a long model ID in lines of at most `max` characters, cut after / : or - where it can
    var out = [];
    while (text.length > max) {
      var cut = -1;
      for (var i = max; i > max / 2; i--) { if ("/:-_.".indexOf(text.charAt(i - 1)) >= 0) { cut = i; break; } }
      if (cut < 0) { cut = max; }
      out.push(text.slice(0, cut));
      text = text.slice(cut);
    }
    out.push(text);
    return out;
  }
  function bars(spec, width) {
    var max = Math.max(12, Math.floor(width / 24));
    var labels = spec.labels.map(function (parts) {
      return [].concat.apply([], parts.map(function (p) { return wrap(String(p), max); }));
    });
    return {
      type: "bar",
      data: {labels: labels, datasets: spec.series.map(function (s) {
        return {label: s.name, data: s.values, backgroundColor: s.color, borderColor: s.color};
      })},
      options: {
        indexAxis: "y",
        plugins: {legend: {position: "top"}, tooltip: {callbacks: {
          label: function (c) { return c.dataset.label + ": " + num(c.parsed.x) + " " + spec.unit; },
          footer: function (items) { var n = spec.counts[items[0].dataIndex]; return n ? "warm samples: " + n : ""; }
        }}},
        scales: {x: {beginAtZero: true, title: {display: true, text: spec.x_title}}, y: {ticks: {autoSkip: false}}}
      }
    };
  }
  function lines(spec) {
    return {
      type: "scatter",
      data: {datasets: spec.series.map(function (s) {
        return {label: s.name, data: s.points, showLine: true, borderColor: s.color, backgroundColor: s.color,
                borderDash: s.dash || [], pointStyle: s.point || "circle", pointRadius: 4, borderWidth: 2};
      })},
      options: {
        plugins: {legend: {position: "top", labels: {boxWidth: 18}}, tooltip: {callbacks: {
          label: function (c) { return c.dataset.label + ": " + num(c.parsed.y) + " " + spec.unit + " at " +
                                       c.parsed.x + " " + spec.x_unit; }
        }}},
        scales: {x: {type: spec.log_x ? "logarithmic" : "linear", title: {display: true, text: spec.x_title}},
                 y: {beginAtZero: true, title: {display: true, text: spec.y_title}}}
      }
    };
  }
  data.charts.forEach(function (spec) {
    var box = document.getElementById(spec.id);
    if (!box) { return; }
    try {
      new Chart(box.querySelector("canvas"), spec.kind === "bars" ? bars(spec, box.clientWidth) : lines(spec));
      box.setAttribute("data-rendered", "yes");
    } catch (err) {
      box.className += " broken";
      box.textContent = "This chart could not be drawn (" + err + "); the tables hold the same figures.";
      console.error(err);
    }
  });
  document.body.setAttribute("data-charts", "done");
})();
"""


# ---------------------------------------------------------------------------------------------------------- recorder


@dataclass
class _Cell:
    value: Any
    style: str | None  # a status, "header", or None


class _Sheet(list):
    """A recorded sheet: its rows, and the filter the workbook would set (ignored)."""

    def __init__(self) -> None:
        super().__init__()
        self.auto_filter = SimpleNamespace(ref=None)


class _Recorder:
    """Stands in for report.py's workbook (`Book`) in the calls its Environment, Side by side and Definitions writers
    make, so the page shows the workbook's own rows and texts (imported, never copied)."""

    HEADER = "header"

    def __init__(self) -> None:
        self.sheets: dict[str, _Sheet] = {}

    def sheet(self, title: str, columns: Iterable[Any], freeze: str | None = None,
              widths: dict[str, float] | None = None) -> _Sheet:
        return self.sheets.setdefault(title, _Sheet())

    def style(self, status: str | None = None, fmt: str | None = None, header: bool = False) -> str | None:
        return self.HEADER if header else status

    def cell(self, ws: Any, value: Any, style: str | None) -> _Cell:
        return _Cell(value, style)

    def header(self, ws: list[list[Any]], columns: Iterable[Any]) -> None:
        ws.append([_Cell(c.name, self.HEADER) for c in columns])

    def row(self, ws: list[list[Any]], columns: Any, values: Iterable[Any], status: str | None) -> None:
        ws.append([_Cell(v, status) for v in values])

    @staticmethod
    def cells(row: list[Any]) -> list[_Cell]:
        return [v if isinstance(v, _Cell) else _Cell(v, None) for v in row]


# ---------------------------------------------------------------------------------------------------------- page


class _Page:
    def __init__(self, results_path: Path, bad: BadLines | None) -> None:
        from .report import scan_results
        from .report_load import load_rows
        from .report_tables import pairs_from, series_names

        self.results_path = results_path
        self.bad = bad if bad is not None else BadLines()
        before = len(self.bad)
        self.scan = scan_results(results_path, self.bad)
        self.skipped = BadLines(self.bad[before:])
        self.levels, self.capacities = load_rows(results_path)
        # engine against engine: the workbook's own comparison (report_tables), models in the order of the file
        self.pairs = pairs_from(self.scan.rows, self.scan.labelled_levels, list(self.scan.order))
        self.names = series_names(self.pairs)  # (setup, model) -> "label (engine)", as the workbook names them
        self.label_of = {m.key: m.label for pair in self.pairs for m in pair.members}
        self.charts: list[dict[str, Any]] = []
        self.setups = list(dict.fromkeys([r.setup for r in self.scan.rows] +
                                         [str(r.get("setup")) for r in self.levels]))

    # --- whole page ------------------------------------------------------------------------------------------------

    def render(self, chartjs: str) -> str:
        sections = [("summary", "Summary", self._summary()), ("latency", "Latency", self._latency())]
        if self.levels:
            sections.append(("load", "Under load", self._load()))
        if self.pairs:
            sections.append(("engines", "Engine against engine", self._engines()))
        sections += [("definitions", "Definitions", self._definitions()),
                     ("environment", "Environment", self._environment())]
        nav = "".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in sections)
        body = "\n".join(f'<section id="{sid}">\n<h2>{_e(title)}</h2>\n{content}\n</section>'
                         for sid, title, content in sections)
        from . import __version__

        return (
            '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f'<meta name="generator" content="Jarvis {_e(__version__)}">\n'
            f"<title>Jarvis report: {_e(self._title())}</title>\n<style>{_css()}</style>\n</head>\n<body>\n"
            f"<header>\n<h1>Jarvis report</h1>\n{self._intro()}\n<nav>{nav}</nav>\n</header>\n"
            f"<main>\n{body}\n</main>\n"
            f"<footer>Written by Jarvis {_e(__version__)} from {_e(self.results_path.name)}. Charts drawn by "
            f"Chart.js {CHARTJS_VERSION} (MIT licence, © Chart.js Contributors), embedded in this page. "
            f"<noscript>JavaScript is off: the charts are not drawn; the tables hold every figure.</noscript>"
            f"</footer>\n"
            f"<script>{chartjs}</script>\n"
            f'<script type="application/json" id="jarvis-data">{_script_json({"charts": self.charts})}</script>\n'
            f"<script>{_JS}</script>\n</body>\n</html>\n"
        )

    def _title(self) -> str:
        run = self.scan.run or {}
        return " · ".join(str(v) for v in (self.results_path.parent.name or self.results_path.name,
                                          run.get("started_at")) if v)

    def _intro(self) -> str:
        run = self.scan.run or {}
        facts = [(k, run.get(k)) for k in ("started_at", "jarvis_version", "host", "gpu") if run.get(k)]
        parts = [f"{_e(k.replace('_', ' '))}: {_e(v if isinstance(v, str) else json.dumps(v, default=str))}"
                 for k, v in facts]
        rows = self.scan.rows
        statuses = defaultdict(int)
        for r in rows:
            statuses[r.status] += 1
        counts = ", ".join(f'<span class="badge st-{_e(s)}">{n} {_e(status_shown(s))}</span>'
                           for s, n in sorted(statuses.items(), key=lambda kv: -kv[1]))
        out = [f'<p class="meta">{_e(Path(self.results_path.parent.name) / self.results_path.name)}</p>']
        if parts:
            out.append(f'<p class="meta">{" · ".join(parts)}</p>')
        out.append(f"<p>{len(rows)} cells ({counts or 'none'}), {self.scan.samples} samples"
                   + (f", {len(self.levels)} load levels" if self.levels else "") + ".</p>")
        if self.scan.end is None and self.scan.run is not None:
            out.append('<p class="warn">No end record: the run is still going or was killed before it could '
                       "finish.</p>")
        elif self.scan.end is not None and self.scan.end.get("interrupted"):
            out.append('<p class="warn">The run was interrupted: some cells may be missing.</p>')
        if self.skipped:
            out.append(f'<p class="warn">{_e(self.skipped.describe(self.results_path.name))}.</p>')
        return "\n".join(out)

    # --- tables ----------------------------------------------------------------------------------------------------

    @staticmethod
    def _table(columns: Iterable[Any], rows: Iterable[tuple[list[Any], str | None]], cls: str = "") -> str:
        """A table of `Column`s (report_cells: name, unit, definition as the header's tooltip, number format)."""
        from .report import REASON_CHARS

        columns = tuple(columns)
        head = "".join(f'<th title="{_e(c.definition)}" scope="col">{_e(c.name)}'
                       + (f"<br><small>{_e(c.unit)}</small>" if c.unit else "") + "</th>" for c in columns)
        lines = []
        for values, status in rows:
            cells = []
            for c, v in zip(columns, values):
                if c.name == "status" and v:
                    cells.append(f'<td><span class="badge st-{_e(v)}">{_e(status_shown(v))}</span></td>')
                elif c.name in _WRAP:
                    cells.append(f'<td class="wrap">{_e(cut(str(v) if v is not None else "", REASON_CHARS))}</td>')
                elif c.name in _IDS:
                    cells.append(f'<td class="id">{_e(_fmt(v, c.fmt))}</td>')
                elif isinstance(v, (int, float)) and not isinstance(v, bool):
                    cells.append(f'<td class="n">{_e(_fmt(v, c.fmt))}</td>')
                else:
                    cells.append(f"<td>{_e(_fmt(v, c.fmt))}</td>")
            lines.append(f'<tr class="st-{_e(status)}">' if status else "<tr>")
            lines.append("".join(cells) + "</tr>")
        return (f'<div class="scroll"><table class="{_e(cls)}"><thead><tr>{head}</tr></thead><tbody>\n'
                + "\n".join(lines) + "\n</tbody></table></div>")

    def _summary(self) -> str:
        from .report import SUMMARY_COLUMNS, summary_values

        if not self.scan.rows:
            return f"<p>No samples in {_e(self.results_path.name)}: the run recorded nothing yet.</p>"
        table = [(summary_values(row), row.status) for row in self.scan.rows]
        names = [c.name for c in SUMMARY_COLUMNS]
        keep = [names.index(n) for n in KEY_SUMMARY_COLUMNS if n in names]
        key_columns = [SUMMARY_COLUMNS[i] for i in keep]
        key_rows = [([values[i] for i in keep], status) for values, status in table]
        return ('<p>One row per setup × model × test; statistics are over the warm samples (cold start excluded). '
                "Hover or tap a column name for its definition. Row colours as in the workbook: "
                + " ".join(f'<span class="badge st-{s}">{_e(status_shown(s))}</span>'
                           for s in ("missing", "error", "failed", "unavailable", "skipped")) + ".</p>\n"
                + self._table(key_columns, key_rows, "summary")
                + f"\n<details><summary>All columns ({len(SUMMARY_COLUMNS)}, as the workbook's Summary sheet)"
                  "</summary>\n" + self._table(SUMMARY_COLUMNS, table, "summary-all") + "\n</details>")

    # --- charts ----------------------------------------------------------------------------------------------------

    def _chart(self, spec: dict[str, Any], caption: str, height: int, note: str = "") -> str:
        spec["id"] = f"chart-{len(self.charts) + 1}-{_slug(caption)[:40]}"
        self.charts.append(spec)
        return (f'<figure><figcaption>{_e(caption)}</figcaption>'
                f'<div class="chart" id="{spec["id"]}" style="height:{height}px">'
                f'<canvas role="img" aria-label="{_e(caption)}"></canvas></div>'
                + (f"<p class=\"meta\">{_e(note)}</p>" if note else "") + "</figure>")

    def _latency(self) -> str:
        out = ["<p>p50, p90 and p99 of each cell's warm samples (the cold start excluded), per model and test. TTFT "
               "exists only for streamed requests. The Summary holds every statistic.</p>"]
        several = len(self.setups) > 1
        drawn = 0
        for figure, name in LATENCY_FIGURES:
            for setup in (self.setups if several else [None]):
                rows = [r for r in self.scan.rows if r.stats.get(figure) is not None and
                        (setup is None or r.setup == setup)]
                if not rows:
                    continue
                stats = [r.stats[figure] for r in rows]
                spec = {"kind": "bars", "unit": "s", "x_title": "seconds",
                        "labels": [[r.model, r.test] for r in rows],
                        "counts": [s.count for s in stats],
                        "series": [{"name": p, "color": colour, "values": [_finite(getattr(s, p)) for s in stats]}
                                   for p, colour in zip(PERCENTILES, PERCENTILE_COLOURS)]}
                caption = f"{name} p50, p90, p99 per model and test" + (f" (setup {setup})" if setup else "")
                out.append(self._chart(spec, caption, 80 + 54 * len(rows)))
                drawn += 1
        if not drawn:
            out.append("<p>No warm samples with timings: nothing to chart.</p>")
        return "\n".join(out)

    def _load_charts(self, keys: list[tuple[str, str]], what: str) -> list[str]:
        """Output tokens/s and TTFT p99 against concurrency (and rate), one series per setup × model; models sharing
        a label next to each other, the second one dashed."""
        from .report_load import series_order

        out = []
        several = len({str(r.get("setup")) for r in self.levels}) > 1
        for open_loop, x_name, x_title, x_unit in ((False, "concurrency", "requests in flight", "in flight"),
                                                   (True, "rate", "requests/s", "req/s")):
            series_points: dict[tuple[str, str], list[tuple[float, dict[str, Any]]]] = defaultdict(list)
            for r in self.levels:
                key = (str(r.get("setup")), str(r.get("model")))
                x = _finite(r.get(x_name))
                if r.get("status") or key not in keys or (r.get("rate") is not None) != open_loop or x is None:
                    continue
                series_points[key].append((float(x), r))
            if not series_points:
                continue
            xs = [x for pts in series_points.values() for x, _ in pts]
            log_x = min(xs) > 0 and max(xs) / min(xs) >= 16
            order = series_order(series_points, self.label_of, self.scan.order)  # as the workbook's Load charts
            for y_name, title, y_title, unit in (("output_tps", "Output tokens/s", "tokens/s", "tokens/s"),
                                                 ("ttft_p99", "TTFT p99", "seconds", "s")):
                series = []
                for index, key in enumerate(order):
                    label = self.label_of.get(key)
                    second = label is not None and any(self.label_of.get(k) == label for k in order[:index])
                    points = []
                    for x, r in sorted(series_points[key], key=lambda p: p[0]):
                        y = _finite(r.get("output_tps") if y_name == "output_tps" else
                                    (r.get("ttft_s") or {}).get("p99"))
                        if y is not None:
                            points.append({"x": x, "y": y})
                    series.append({"name": self.names.get(key) or key[1] + (f" ({key[0]})" if several else ""),
                                   "color": PALETTE[index % len(PALETTE)], "points": points,
                                   "dash": [6, 4] if second else [], "point": "rectRot" if second else "circle"})
                spec = {"kind": "lines", "unit": unit, "x_unit": x_unit, "x_title": x_title, "y_title": y_title,
                        "log_x": log_x, "series": series}
                out.append(self._chart(spec, f"{title} against {x_title}{what}", 340))
        return out

    # --- load ------------------------------------------------------------------------------------------------------

    def _load(self) -> str:
        from .report_load import load_columns, load_values

        out = ["<p>Each level's figures are over its measured window (warm-up requests excluded); see Definitions, "
               "Under load. Models sharing a label are next to each other in the legend, the second one dashed.</p>"]
        lines = [(cap, line) for cap in self.capacities for line in (cap.get("lines") or [])]
        if lines:
            out.append("<h3>Capacity</h3>\n<ul class=\"lines\">" + "".join(
                f"<li><b>{_e(cap.get('model'))}</b> ({_e(cap.get('engine'))}, setup {_e(cap.get('setup'))}): "
                f"{_e(line)}</li>" for cap, line in lines) + "</ul>")
        keys = [(str(r.get("setup")), str(r.get("model"))) for r in self.levels]
        charts = self._load_charts(keys, "")
        out += charts or ["<p>No level served requests: nothing to chart.</p>"]
        columns = load_columns()
        out.append("<h3>Levels</h3>")
        out.append(self._table(columns, [(load_values(r, columns), r.get("status")) for r in self.levels], "load"))
        return "\n".join(out)

    # --- engine against engine -------------------------------------------------------------------------------------

    def _engines(self) -> str:
        from .report_tables import LOAD_FIGURES, SIDE_COLUMNS, SIDE_LOAD_COLUMNS, TEST_FIGURES

        out = ["<p>Models whose entries in the setups file share a <code>label</code>, whatever setup they are in: "
               "every test and load level two or more of them ran, their figures side by side, and after each "
               "figure its ratio to the first model's that ran it (× 1.00 is equal; below 1 is smaller: faster for "
               "TTFT, E2E and ITL, slower for rates). The same figures as the workbook's Side by side sheets.</p>"]
        for pair in self.pairs:
            several = len({m.setup for m in pair.members}) > 1
            out.append(f"<h3>{_e(pair.label)}</h3>\n<ul>" + "".join(
                f"<li><b>{_e(m.name)}</b>: {_e(m.model)}" + (f" (setup {_e(m.setup)})" if several else "") + "</li>"
                for m in pair.members) + "</ul>")
            if pair.tests:
                out.append(self._pair_table(pair, pair.tests, TEST_FIGURES, SIDE_COLUMNS, "test"))
            if pair.levels:
                out.append(self._pair_table(pair, pair.levels, LOAD_FIGURES, SIDE_LOAD_COLUMNS, "load"))
            if not pair.tests and not pair.levels:
                out.append("<p>These models have no test or load level in common.</p>")
            out += self._load_charts([m.key for m in pair.members], f" ({pair.label})")
        return "\n".join(out)

    @staticmethod
    def _pair_table(pair: Any, rows: Iterable[Any], figures: Iterable[str], columns: Iterable[Any], what: str) -> str:
        """One label's tests (or load levels): a row per figure, a column per model, each value with its ratio."""
        by_name = {c.name: c for c in columns}
        figures = [by_name[f] for f in figures if f in by_name]
        rows = list(rows)
        present = {side.member.key for row in rows for side in row.sides}
        members = [m for m in pair.members if m.key in present]  # a model of another setup gets no empty column
        head = (f'<th scope="col">{_e(what)}</th><th scope="col">figure</th>'
                + "".join(f'<th scope="col">{_e(m.name)}</th>' for m in members))
        body = []
        for row in rows:
            sides = {side.member.key: side for side in row.sides}
            where = (row.test if row.test is not None else
                     f"{row.concurrency} in flight" if row.concurrency is not None else f"{row.rate:g} req/s")
            for i, column in enumerate(figures):
                cells = []
                for member in members:
                    side = sides.get(member.key)
                    value = side.values.get(column.name) if side is not None else None
                    if side is not None and value is None and side.status not in ("ok", "failed"):
                        cells.append(f'<td><span class="badge st-{_e(side.status)}">{_e(status_shown(side.status))}'
                                     "</span></td>")
                    elif value is None:
                        cells.append('<td class="n">-</td>')
                    else:
                        ratio = side.ratios.get(column.name) if side is not row.sides[0] else None
                        cells.append(f'<td class="n">{_e(_fmt(value, column.fmt))}'
                                     + (f" <small>× {ratio:.2f}</small>" if ratio is not None else "") + "</td>")
                first = f'<th scope="row" rowspan="{len(figures)}">{_e(where)}</th>' if i == 0 else ""
                unit = f" <small>{_e(column.unit)}</small>" if column.unit else ""
                body.append(f'<tr>{first}<td title="{_e(column.definition)}">{_e(column.name)}{unit}</td>'
                            + "".join(cells) + "</tr>")
        return (f'<div class="scroll"><table class="pairs pairs-{_e(what)}"><thead><tr>{head}</tr></thead><tbody>\n'
                + "\n".join(body) + "\n</tbody></table></div>")

    # --- workbook sheets -------------------------------------------------------------------------------------------

    def _definitions(self) -> str:
        from .report import write_definitions, write_side_by_side
        from .report_load import load_columns

        book = _Recorder()
        side = write_side_by_side(book, self.pairs) if self.pairs else []  # type: ignore[arg-type]
        write_definitions(book, load_columns() if self.levels else None, side)  # type: ignore[arg-type]
        rows = [_Recorder.cells(r) for r in book.sheets.get("Definitions", [])][1:]  # its header row dropped
        out = ["<p>Every column, status and term, as the workbook's Definitions sheet.</p>"]
        by_sheet: dict[str, list[list[_Cell]]] = defaultdict(list)
        i = 0
        while i < len(rows) and rows[i]:
            by_sheet[str(rows[i][0].value)].append(rows[i])
            i += 1
        for sheet, items in by_sheet.items():
            out.append(f"<details><summary>Columns of {_e(sheet)} ({len(items)})</summary>\n"
                       '<div class="scroll"><table><thead><tr><th>column</th><th>unit</th><th>definition</th></tr>'
                       "</thead><tbody>" + "".join(
                           f"<tr><td>{_e(r[1].value)}</td><td>{_e(r[2].value)}</td>"
                           f'<td class="wrap">{_e(r[3].value)}</td></tr>' for r in items)
                       + "</tbody></table></div></details>")
        section: list[str] = []
        for row in rows[i:]:
            if not row:
                continue
            if all(c.style == _Recorder.HEADER for c in row if c.value is not None):
                if section:
                    out.append("".join(section) + "</tbody></table></div>")
                section = [f"<h3>{_e(row[0].value)}</h3>\n<div class=\"scroll\"><table><thead><tr><th>name</th>"
                           "<th>meaning</th></tr></thead><tbody>"]
                continue
            name, meaning = row[1], row[3] if len(row) > 3 else _Cell("", None)
            style = f' class="badge st-{_e(name.style)}"' if name.style else ""
            section.append(f"<tr><td><span{style}>{_e(name.value)}</span></td>"
                           f'<td class="wrap">{_e(meaning.value)}</td></tr>')
        if section:
            out.append("".join(section) + "</tbody></table></div>")
        return "\n".join(out)

    def _environment(self) -> str:
        from .report import write_environment

        book = _Recorder()
        write_environment(book, self.scan, self.results_path)  # type: ignore[arg-type]
        rows = [_Recorder.cells(r) for r in book.sheets.get("Environment", [])][1:]
        return ("<p>The run record (versions, host, GPU, flags, command line), the engines and the end record, as "
                "the workbook's Environment sheet.</p>\n"
                '<div class="scroll"><table class="env"><thead><tr><th>key</th><th>value</th></tr></thead><tbody>\n'
                + "\n".join(f"<tr><td>{_e(r[0].value)}</td><td class=\"wrap\">{_e(_fmt(r[1].value))}</td></tr>"
                            for r in rows if len(r) > 1)
                + "\n</tbody></table></div>")
