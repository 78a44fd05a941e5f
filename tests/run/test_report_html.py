"""report.html as a user opens it: the sections, MISSING and error rows coloured as in the workbook, hostile names
escaped, nothing fetched from the network, pages with and without load levels, models sharing a label side by side,
the workbook's definitions and environment; and, in a real headless Chromium, the page loads without console errors,
every chart draws, no request leaves the page, and it reads on a phone (screenshots kept as test artifacts)."""

from __future__ import annotations

import html
import json
import os
import re
import shutil
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from jarvis_core.engine import InferResult
from jarvis_core.errors import JarvisError, UsageError
from jarvis_core.load import Capacity, Level, LevelSummary, Slo
from jarvis_core.metrics import figures
from jarvis_core.report import SIDE_BY_SIDE_NOTE, STATUS_MEANINGS, STATUS_STYLES, SUMMARY_COLUMNS
from jarvis_core.report_html import write_html
from jarvis_core.report_load import LOAD_TERMS
from jarvis_core.report_tables import SIDE_COLUMNS, SIDE_LOAD_COLUMNS
from jarvis_core.results import BadLines, ResultsWriter, Sample, Status, read_results, summarize

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")

OLLAMA = "ol_qwen2.5:0.5b"
VLLM = "vllm:Qwen/Qwen2.5-0.5B-Instruct"
LLAMA = "ol_llama3.1:70b"
LABEL = "qwen2.5-0.5b"
HOSTILE = '</script><script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


# ------------------------------------------------------------------------------------------------ a realistic run


def timed(setup: str, model: str, engine: str, test: str, rep: int, ttft: float, decode: float, n: int = 33,
          status: Status = Status.OK, reason: str = "", answer: str = "Paris is the capital of France.") -> Sample:
    """A streamed sample whose figures come from metrics.figures over real-looking stamps."""
    t_send = 5_000_000_000
    first = t_send + int(ttft * 1e9)
    chunks = [first + int(i / decode * 1e9) for i in range(n)]
    result = InferResult(stream=True, t_send=t_send, text=answer, t_first_byte=first - 3_000_000, t_first_token=first,
                         t_last_token=chunks[-1], t_end=chunks[-1] + 200_000, chunk_times=chunks, output_tokens=n,
                         prompt_tokens=24, finish_reason="stop")
    return Sample(setup=setup, model=model, engine=engine, test=test, repetition=rep, status=status, reason=reason,
                  engine_model=model.split(":", 1)[-1], stream=True, answer=answer, finish_reason="stop",
                  figures=figures(result), server={"eval_count": n} if engine == "ollama" else {})


def level(conc: int | None, rate: float | None, tps: float, ttft_p50: float, share: float) -> LevelSummary:
    p = {"p50": ttft_p50, "p90": ttft_p50 * 1.6, "p99": ttft_p50 * 2.2}
    return LevelSummary(
        level=Level(concurrency=conc, rate=rate), requests_ok=16, requests_error=0, output_tps=tps,
        request_rate=tps / 64, goodput_rps=tps / 64 * share, slo_share=share, ttft_s=p,
        itl_s={"p50": 0.011, "p90": 0.013, "p99": 0.02}, e2e_s={"p50": 0.9, "p90": 1.2, "p99": 1.6},
        ttft_sched_s=p, queue_wait_s={"p50": 0.0, "p90": 0.0, "p99": 0.001},
        send_lag_s={"p50": 0.0, "p90": 0.0, "p99": 0.001}, client_cpu=0.12, window_s=9.5, window="steady",
        achieved_rate=rate)


def write_run(path: Path, *, load: bool = True, labels: bool = True, hostile: bool = False) -> Path:
    """A run as `jarvis run` writes it: run and engine records, warmups, streamed samples (one answer failing its
    check, one request erroring), a MISSING model, and (with `load`) load samples, levels and capacities; the Ollama
    and vLLM Qwen share a label (with `labels`)."""
    writer = ResultsWriter(path)
    label = {"label": LABEL} if labels else {}
    setup = HOSTILE if hostile else "chat"
    writer.write({"type": "run", "schema": 2, "run_id": "0123456789ab", "started_at": "2026-05-02T15:28:57+02:00",
                  "jarvis_version": "0.4.0", "plugins": {"ollama": "jarvis-ollama 0.2.0", "vllm": "jarvis-vllm 0.3.1"},
                  "python": "3.11.9", "os": "Linux-6.8.0-x86_64-with-glibc2.36", "host": "bench-01",
                  "cpu": "AMD EPYC 9454", "gpu": "NVIDIA H100 80GB HBM3 (81559 MiB)",
                  "setups_file": "test_setups.yaml", "config_file": "config.yaml", "force_download": False,
                  "argv": "run --setups test_setups.yaml --api-key *** --output results",
                  "selected_setups": [setup, "capacity"],
                  "defaults": {"repetitions": 4, "warmup": 1, "timeout": 120, "max_tokens": None,
                               "temperature": 0, "seed": 42}, "repeat": None, "resumed": False})
    writer.write({"type": "engine", "engine": "ollama", "version": "0.6.2", "address": "http://127.0.0.1:11434",
                  "started_by_jarvis": True})
    writer.write({"type": "engine", "engine": "vllm", "version": "0.8.4", "address": "http://127.0.0.1:41665",
                  "started_by_jarvis": True})
    for model, engine, base in ((OLLAMA, "ollama", 0.25), (VLLM, "vllm", 0.05)):
        writer.write({"type": "warmup", "setup": setup, "model": model, "engine": engine, "cold_start_s": 2.5,
                      "load_s": 2.1 if engine == "ollama" else None, "detail": "warmed", **label})
        for rep in range(1, 5):
            writer.write({**timed(setup, model, engine, "capital", rep, base + rep * 0.01, 60 + rep).to_record(),
                          **label})
        test = HOSTILE if hostile else "json"
        for rep in range(1, 5):
            if engine == "ollama" and rep == 2:
                sample = timed(setup, model, engine, test, rep, base, 70, status=Status.FAILED,
                               reason="answer is not valid JSON", answer="{not json")
            elif engine == "vllm" and rep == 3:
                sample = Sample(setup=setup, model=model, engine=engine, test=test, repetition=rep,
                                status=Status.ERROR, reason=f"HTTP 500 from the engine: {HOSTILE}",
                                engine_model=model.split(":", 1)[-1], stream=True)
            else:
                sample = timed(setup, model, engine, test, rep, base * 1.2, 65, answer=HOSTILE)
            writer.write({**sample.to_record(), **label})
    for test in ("capital", HOSTILE if hostile else "json"):
        writer.write(Sample(setup=setup, model=LLAMA, engine="ollama", test=test, repetition=None,
                            status=Status.MISSING, reason="not present on the engine (use --force-download)"
                            ).to_record())
    if load:
        slo = Slo(ttft=0.5, itl=0.05)
        for model, engine, speed in ((OLLAMA, "ollama", 1.0), (VLLM, "vllm", 3.0)):
            identity = {"setup": "capacity", "model": model, "engine": engine, **label}
            summaries = [level(c, None, 60 * c * speed / (1 + c / 8), 0.05 * c / speed, 1.0 if c <= 4 * speed
                               else 0.5) for c in (1, 2, 4, 8, 16)]
            if engine == "vllm":
                summaries += [level(None, r, 55 * r, 0.06 * r, 1.0 if r < 4 else 0.6) for r in (1.0, 2.0, 4.0)]
            for index in range(3):
                writer.write({"type": "load_sample", **identity, "level": {"concurrency": 1, "rate": None},
                              "index": index, "warmup": index == 0, "ttft_s": 0.05, "e2e_s": 0.9, "status": "ok",
                              "reason": "", "time": "2026-05-02T15:30:00+02:00"})
            for s in summaries:
                writer.write({"type": "load_level", **identity, **s.to_json(), "wall_s": 11.0,
                              "parallelism": {"value": 4, "setting": "OLLAMA_NUM_PARALLEL"},
                              "time": "2026-05-02T15:31:00+02:00"})
            users = Capacity(next(s.level for s in reversed(summaries) if s.level.concurrency and s.slo_share == 1),
                             slo, 0.9)
            writer.write({"type": "load_capacity", **identity, "users": users.to_json(), "rate": None,
                          "saturation": None, "lines": [users.sentence()], "parallelism": None,
                          "time": "2026-05-02T15:32:00+02:00"})
        writer.write({"type": "load_level", "setup": "capacity", "model": LLAMA, "engine": "ollama",
                      "concurrency": 1, "rate": None, "status": "missing",
                      "reason": "not present on the engine (use --force-download)", "time": "2026-05-02T15:33:00"})
    writer.write({"type": "end", "ended_at": "2026-05-02T15:40:00+02:00", "interrupted": False})
    writer.close()
    return path


# ------------------------------------------------------------------------------------------------ reading the page


class Tables(HTMLParser):
    """Every table of a page: its class, and its rows as (row class, [cell texts])."""

    def __init__(self, page: str) -> None:
        super().__init__()
        self.tables: list[tuple[str, list[tuple[str, list[str]]]]] = []
        self._cell: list[str] | None = None
        self.feed(page)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "table":
            self.tables.append((a.get("class") or "", []))
        elif tag == "tr" and self.tables:
            self.tables[-1][1].append((a.get("class") or "", []))
        elif tag in ("td", "th") and self.tables and self.tables[-1][1]:
            self._cell = []
        elif tag == "br" and self._cell is not None:
            self._cell.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][1][-1][1].append("".join(self._cell).strip())
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)

    def rows(self, cls: str) -> list[tuple[str, list[str]]]:
        return next(rows for c, rows in self.tables if cls in c.split())


def page_of(tmp_path: Path, **kw: Any) -> tuple[str, Path]:
    results = write_run(tmp_path / "results.jsonl", **kw)
    out = write_html(results, tmp_path / "report.html")
    return out.read_text(encoding="utf-8"), results


def chart_specs(page: str) -> list[dict[str, Any]]:
    block = re.search(r'<script type="application/json" id="jarvis-data">(.*?)</script>', page, re.S)
    assert block, "the chart data block is missing"
    return json.loads(block.group(1))["charts"]


# ------------------------------------------------------------------------------------------------ quick tests


def test_sections_and_status_colours_as_in_the_workbook(tmp_path: Path) -> None:
    page, _ = page_of(tmp_path)
    for section in ("summary", "latency", "load", "engines", "definitions", "environment"):
        assert f'<section id="{section}">' in page
        assert f'href="#{section}"' in page
    summary = Tables(page).rows("summary")
    header, body = summary[0][1], summary[1:]
    assert header[:4] == ["setup", "model", "test", "status"]
    by_cell = {(cells[1], cells[2]): (cls, cells) for cls, cells in body}
    assert by_cell[(LLAMA, "capital")][0] == "st-missing" and by_cell[(LLAMA, "capital")][1][3] == "MISSING"
    assert by_cell[(VLLM, "json")][0] == "st-error"
    assert by_cell[(VLLM, "json")][1][4].startswith("1 of 4 error: HTTP 500")
    assert by_cell[(OLLAMA, "json")][0] == "st-failed"
    assert by_cell[(OLLAMA, "capital")][0] == "st-ok"
    # the colours are the workbook's: MISSING yellow with bold red text, errors red
    missing, error = STATUS_STYLES["missing"], STATUS_STYLES["error"]
    assert re.search(rf"tr\.st-missing>td[^{{]*\{{[^}}]*background:#{missing['fill']}[^}}]*font-weight:bold", page)
    assert re.search(rf"tr\.st-error>td[^{{]*\{{color:#{error['color']};background:#{error['fill']}", page)
    # every column of the workbook's Summary is there too
    full = Tables(page).rows("summary-all")
    assert full[0][1] == [f"{c.name} {c.unit}".strip() for c in SUMMARY_COLUMNS]  # names, units below them
    assert len(full) == len(body) + 1


def test_summary_figures_are_the_summarized_ones(tmp_path: Path) -> None:
    page, results = page_of(tmp_path)
    rows = {(r.model, r.test): r for r in summarize(read_results(results))}
    summary = Tables(page).rows("summary")
    names = [h.split()[0] for h in summary[0][1]]
    cells = next(c for _, c in summary[1:] if c[1] == VLLM and c[2] == "capital")
    stats = rows[(VLLM, "capital")].stats
    assert cells[names.index("ttft_s_p99")] == f"{stats['ttft_s'].p99:.3f}"
    assert cells[names.index("decode_tps_p50")] == f"{stats['decode_tps'].p50:.1f}"
    assert cells[names.index("warm_samples")] == "4"
    missing = next(c for _, c in summary[1:] if c[1] == LLAMA)
    assert missing[names.index("ttft_s_p50")] == ""  # nothing ran: no figure, never 0


def test_hostile_names_and_answers_are_escaped(tmp_path: Path) -> None:
    page, _ = page_of(tmp_path, hostile=True)
    assert HOSTILE not in page
    assert "<script>alert" not in page and "<img" not in page
    assert html.escape(HOSTILE, quote=True) in page  # shown as text in the tables
    assert page.count("<script") == 3  # Chart.js, the data block, the page's own script: nothing else
    specs = chart_specs(page)  # the JSON block parses back to the very names
    assert any(HOSTILE in label for spec in specs if spec["kind"] == "bars" for pair in spec["labels"]
               for label in pair)
    block = re.search(r'id="jarvis-data">(.*?)</script>', page, re.S).group(1)
    assert "<" not in block and ">" not in block


def test_self_contained_no_network_references(tmp_path: Path) -> None:
    page, _ = page_of(tmp_path)
    assert not re.search(r"<(link|img|iframe|object|embed|audio|video|source)\b", page, re.I)
    assert not re.search(r"<script[^>]*\bsrc\s*=", page, re.I)
    assert not re.search(r"\b(src|href|action|poster)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    style = re.search(r"<style>(.*?)</style>", page, re.S).group(1)
    assert not re.search(r"url\(|@import|@font-face", style, re.I)
    library = (REPO / "jarvis_core" / "static" / "chart.umd.min.js").read_text()
    assert not re.search(r"\bfetch\(|XMLHttpRequest|importScripts|new Worker", library)  # it loads nothing
    assert "sourceMappingURL" not in page
    # the only http(s) strings are in Chart.js's licence banner and in values recorded by the run (engine addresses)
    for url in re.findall(r"https?://[^\s\"'<)]*", page):
        assert url in ("https://www.chartjs.org", "https://github.com/kurkle/color#readme") or "127.0.0.1" in url, url
    assert "Chart.js v4.6.1" in page and "MIT" in page  # the licence notice travels with the library


def test_without_load_data_or_labels(tmp_path: Path) -> None:
    page, _ = page_of(tmp_path, load=False, labels=False)
    assert '<section id="load">' not in page and '<section id="engines">' not in page
    assert 'href="#load"' not in page
    specs = chart_specs(page)
    assert [s["kind"] for s in specs] == ["bars", "bars"]  # TTFT and E2E
    assert LOAD_TERMS[0][1] not in page  # no load terms without load levels, as the workbook
    ttft = specs[0]
    assert [s["name"] for s in ttft["series"]] == ["p50", "p90", "p99"]
    assert [OLLAMA, "capital"] in ttft["labels"] and all(LLAMA not in pair for pair in ttft["labels"])


def test_load_curves_and_capacity(tmp_path: Path) -> None:
    page, _ = page_of(tmp_path)
    specs = [s for s in chart_specs(page) if s["kind"] == "lines"]
    closed = [s for s in specs if s["x_title"] == "requests in flight"]
    opened = [s for s in specs if s["x_title"] == "requests/s"]
    assert closed and opened
    main_tps = closed[0]  # the first one: every model, output tokens/s
    names = [s["name"] for s in main_tps["series"]]
    assert len(names) == 2 and all(LLAMA not in n for n in names)  # the missing model has no curve
    assert [p["x"] for p in main_tps["series"][0]["points"]] == [1, 2, 4, 8, 16]
    assert [s["name"] for s in opened[0]["series"]] == [f"{LABEL} (vllm, capacity)"]  # as the workbook names it
    assert [s["dash"] for s in main_tps["series"]] == [[], [6, 4]]  # label mates: the second one dashed
    levels = Tables(page).rows("load")
    assert [h.split()[0] for h in levels[0][1][:4]] == ["setup", "model", "engine", "concurrency"]
    assert any(cls == "st-missing" and cells[1] == LLAMA for cls, cells in levels[1:])
    assert "capacity: 4 users at once with 90% of requests within TTFT ≤ 500 ms" in page
    assert "capacity: 8 users at once" in page


def test_a_level_without_figures_is_left_off_the_curve(tmp_path: Path) -> None:
    results = write_run(tmp_path / "results.jsonl")
    writer = ResultsWriter(results)
    odd = level(32, None, float("nan"), 0.5, 0.0).to_json()
    odd["ttft_s"] = {"p50": float("nan"), "p90": float("inf"), "p99": float("nan")}  # as json.dumps writes them
    writer.write({"type": "load_level", "setup": "capacity", "model": OLLAMA, "engine": "ollama", **odd})
    writer.close()
    page = write_html(results, tmp_path / "report.html").read_text()
    curves = [s for s in chart_specs(page) if s["kind"] == "lines" and s["x_title"] == "requests in flight"]
    ollama = next(s for s in curves[0]["series"] if s["name"] == f"{LABEL} (ollama, capacity)")
    assert [p["x"] for p in ollama["points"]] == [1, 2, 4, 8, 16]  # 32 has no figure: no point, and no NaN in JSON


def test_models_sharing_a_label_side_by_side(tmp_path: Path) -> None:
    page, results = page_of(tmp_path)
    rows = {(r.model, r.test): r for r in summarize(read_results(results))}
    # named as in the workbook's Side by side sheets: the same models are in two setups
    ollama, vllm = f"{LABEL} (ollama, capacity)", f"{LABEL} (vllm, capacity)"
    tests = Tables(page).rows("pairs-test")
    assert tests[0][1] == ["test", "figure", f"{LABEL} (ollama, chat)", f"{LABEL} (vllm, chat)"]
    ttft = next(cells for _, cells in tests if cells[0] == "capital")  # the first row of a test names it
    a, b = rows[(OLLAMA, "capital")].stats["ttft_s"].p50, rows[(VLLM, "capital")].stats["ttft_s"].p50
    assert ttft[1:] == ["ttft_s_p50 s", f"{a:.3f}", f"{b:.3f} × {b / a:.2f}"]
    pass_rate = [cells for _, cells in tests if cells and cells[0] == "pass_rate"]
    assert pass_rate[-1] == ["pass_rate", "75%", "75% × 1.00"]  # json: one failed of four, one error of four
    levels = Tables(page).rows("pairs-load")
    assert levels[0][1] == ["load", "figure", ollama, vllm]
    first = next(cells for _, cells in levels if cells[0] == "16 in flight")
    assert first[1] == "output_tps tokens/s" and first[2] == "320.0" and first[3] == "960.0 × 3.00"
    assert not any(re.fullmatch(r"[\d.]+ req/s", cells[0]) for _, cells in levels)  # only vLLM ran rates
    # and on one load chart, the label's two models only
    engines = page[page.index('<section id="engines">'):page.index('<section id="definitions">')]
    ids = re.findall(r'<div class="chart" id="([^"]+)"', engines)
    label_charts = [s for s in chart_specs(page) if s["id"] in ids]
    assert [(s["x_title"], [x["name"] for x in s["series"]]) for s in label_charts] == [
        ("requests in flight", [ollama, vllm])] * 2 + [("requests/s", [vllm])] * 2


def test_definitions_and_environment_are_the_workbooks(tmp_path: Path) -> None:
    page, _ = page_of(tmp_path)
    text = html_unescaped_text(page)
    for column in SUMMARY_COLUMNS:
        assert column.definition in text, column.name
    for meaning in STATUS_MEANINGS.values():
        assert meaning in text
    for _, meaning in LOAD_TERMS:
        assert meaning in text
    for column in SIDE_COLUMNS + SIDE_LOAD_COLUMNS:
        assert column.definition in text, column.name
    assert SIDE_BY_SIDE_NOTE in text
    env = {cells[0]: cells[1] for _, cells in Tables(page).rows("env")[1:]}
    assert env["gpu"] == "NVIDIA H100 80GB HBM3 (81559 MiB)"
    assert env["argv"] == "run --setups test_setups.yaml --api-key *** --output results"  # redacted, kept so
    assert env["engines.ollama"].startswith("engine=ollama; version=0.6.2")
    assert env["interrupted"] == "no"
    assert env["report.cells.missing"] == "2"


def html_unescaped_text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", "", page))


def test_empty_torn_and_bad_lines(tmp_path: Path) -> None:
    empty = tmp_path / "empty" / "results.jsonl"
    empty.parent.mkdir()
    empty.write_text("")
    page = write_html(empty, tmp_path / "empty" / "report.html").read_text()
    assert "No samples in results.jsonl" in page and "<section id=\"environment\">" in page
    results = write_run(tmp_path / "results.jsonl", load=False)
    with results.open("a") as fh:
        fh.write('{"type": "sample", "setup": "chat", "mod')  # a torn last line
    bad = BadLines()
    page = write_html(results, tmp_path / "report.html", bad).read_text()
    assert len(bad) == 1
    assert "skipped 1 unreadable line of results.jsonl" in page


def test_written_atomically_and_bad_paths_are_one_line(tmp_path: Path) -> None:
    results = write_run(tmp_path / "results.jsonl", load=False)
    out = tmp_path / "report.html"
    out.write_text("old page")
    assert write_html(results, out) == out
    assert out.read_text().startswith("<!DOCTYPE html>")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html", "results.jsonl"]  # no .part left
    with pytest.raises(UsageError, match="is a folder"):
        write_html(results, tmp_path)
    with pytest.raises(UsageError, match="no results file"):
        write_html(tmp_path / "nothing.jsonl", out)
    (tmp_path / "file").write_text("")
    with pytest.raises(UsageError, match="a folder on its path is a file"):
        write_html(results, tmp_path / "file" / "report.html")


def test_the_chart_library_ships_with_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject.get("tool", {}).get("setuptools", {}).get("package-data", {}).get("jarvis_core", [])
    assert all(any(fnmatch(f"static/{name}", pattern) for pattern in patterns)
               for name in ("chart.umd.min.js", "chart.js-LICENSE.md")), \
        'pyproject.toml must ship the chart library: [tool.setuptools.package-data] jarvis_core = ["static/*"]'

    import jarvis_core.report_html as report_html

    monkeypatch.setattr(report_html, "_CHARTJS", "gone.js")  # an installation that lost it: one line, no page
    results = write_run(tmp_path / "results.jsonl", load=False)
    with pytest.raises(JarvisError, match="gone.js is missing or unreadable .*: reinstall jarvis-core"):
        write_html(results, tmp_path / "report.html")
    assert not (tmp_path / "report.html").exists()


def test_page_size_stays_small(tmp_path: Path) -> None:
    page, _ = page_of(tmp_path)
    size = len(page.encode("utf-8"))
    library = (REPO / "jarvis_core" / "static" / "chart.umd.min.js").stat().st_size
    assert size < library + 150_000, size  # the library once, and the run's own tables and data


# ------------------------------------------------------------------------------------------------ in a real browser


def missing_prerequisite(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (under CI=true a missing prerequisite fails instead of skipping)")
    pytest.skip(why)


def artifacts_dir() -> Path:
    folder = Path(os.environ.get("JARVIS_TEST_ARTIFACTS") or REPO / "tests" / "artifacts") / "report_html"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


CHARTS_JS = """() => Array.from(document.querySelectorAll('.chart')).map(box => {
  const c = box.querySelector('canvas');
  const chart = c ? Chart.getChart(c) : undefined;
  let painted = 0;
  if (c && c.width && c.height) {
    const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    for (let i = 3; i < d.length; i += 4) { if (d[i]) { painted++; } }
  }
  return {id: box.id, rendered: box.dataset.rendered === 'yes', chart: !!chart,
          datasets: chart ? chart.data.datasets.length : 0,
          width: c ? c.clientWidth : 0, height: c ? c.clientHeight : 0, painted: painted};
})"""


@pytest.mark.integration
def test_page_in_headless_chromium(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        from playwright.sync_api import TimeoutError as PlaywrightTimeout
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing_prerequisite("playwright is not installed (pip install -e '.[test]')")
    if not CHROMIUM.exists() or shutil.which(str(CHROMIUM)) is None:
        missing_prerequisite(f"{CHROMIUM} is not installed (apt-get install chromium)")
    page_path = write_html(write_run(tmp_path / "results.jsonl", hostile=False), tmp_path / "report.html")
    expected = chart_specs(page_path.read_text(encoding="utf-8"))
    artifacts = artifacts_dir()
    viewports = {
        "desktop": {"viewport": {"width": 1366, "height": 900}},
        "phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True,
                  "has_touch": True},
    }
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            for name, options in viewports.items():
                context = browser.new_context(**options)
                requests: list[str] = []
                errors: list[str] = []

                def route(r: Any) -> None:
                    if r.request.url.startswith("file:"):
                        r.continue_()
                    else:
                        requests.append(r.request.url)
                        r.abort()

                context.route("**/*", route)
                page = context.new_page()
                page.on("request", lambda req: None if req.url.startswith("file:") else requests.append(req.url))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.goto(page_path.as_uri(), wait_until="load")
                try:
                    page.wait_for_function("document.body.dataset.charts === 'done'", timeout=10_000)
                except PlaywrightTimeout:
                    pytest.fail(f"{name}: the page's script did not finish; console errors: {errors}")
                charts = page.evaluate(CHARTS_JS)
                assert errors == [], f"{name}: console errors {errors}"
                assert requests == [], f"{name}: the page asked the network for {requests}"
                assert [c["id"] for c in charts] == [s["id"] for s in expected]
                for chart, spec in zip(charts, expected):
                    assert chart["rendered"] and chart["chart"], f"{name}: {chart['id']} did not draw"
                    assert chart["width"] > 100 and chart["height"] > 100, f"{name}: {chart}"
                    assert chart["painted"] > 1000, f"{name}: {chart['id']} is blank"
                    assert chart["datasets"] == len(spec["series"])
                overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                assert overflow <= 0, f"{name}: the page is {overflow} px wider than the screen"
                missing = page.locator("#summary table.summary tr.st-missing td").first
                assert missing.evaluate("td => getComputedStyle(td).backgroundColor") == "rgb(255, 255, 0)"
                assert missing.evaluate("td => getComputedStyle(td).fontWeight") in ("700", "bold")
                error = page.locator("#summary table.summary tr.st-error td").first
                assert error.evaluate("td => getComputedStyle(td).backgroundColor") == "rgb(255, 199, 206)"
                page.screenshot(path=str(artifacts / f"report-{name}.png"), full_page=True)
                context.close()
        finally:
            browser.close()
    shutil.copy(page_path, artifacts / "report.html")
    with capsys.disabled():
        print(f"\nreport.html screenshots (desktop, phone) and the page: {artifacts}")
