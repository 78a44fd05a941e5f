"""report.xlsx as a user opens it: sheets, Summary figures, status colours, frozen headers, filters, the charts, the
Definitions and Environment sheets, and awkward inputs (empty, torn, statuses without samples, hostile answers)."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from jarvis_core.metrics import STAT_FIGURES
from jarvis_core.report import RESULTS_COLUMNS, SUMMARY_COLUMNS, write_report
from jarvis_core.results import read_results, summarize

REPO = Path(__file__).resolve().parents[2]
SHEETS = ["Summary", "Charts", "Results", "Environment", "Definitions"]

QWEN = "ol_qwen2.5:0.5b#stream"
LLAMA = "ol_llama3.1:70b"
VLLM = "vllm:Qwen/Qwen2.5-0.5B-Instruct"
VISION = "vllm:Org/Text-Only"
LLAMACPP = "lc_tiny"


def sample(setup: str, model: str, test: str, status: str = "ok", **extra: Any) -> dict[str, Any]:
    engine = {"ol": "ollama", "vl": "vllm", "lc": "llamacpp"}[model[:2]]
    record: dict[str, Any] = {
        "type": "sample", "setup": setup, "model": model, "engine": engine, "engine_model": model.split(":", 1)[-1],
        "test": test, "repetition": None, "cold": False, "status": status, "reason": "", "stream": None,
        "answer": None, "ttfb_s": None, "ttft_s": None, "e2e_s": None, "output_tokens": None, "token_source": None,
        "prompt_tokens": None, "itl_s": None, "decode_tps": None, "overall_tps": None, "server_decode_tps": None,
        "load_s": None, "server": {}, "time": "2024-06-10T10:00:05+00:00",
    }
    record.update(extra)
    return record


def streamed(setup: str, model: str, test: str, rep: int, ttft: float, decode: float, n: int = 33,
             status: str = "ok", **extra: Any) -> dict[str, Any]:
    itl = 1 / decode
    e2e = ttft + itl * (n - 1)
    figures: dict[str, Any] = dict(
        repetition=rep, stream=True, answer="Paris is the capital of France.", ttfb_s=ttft - 0.004, ttft_s=ttft,
        e2e_s=e2e, output_tokens=n, token_source="server", prompt_tokens=24, itl_s=itl, decode_tps=decode,
        overall_tps=n / e2e, server_decode_tps=decode * 1.02,
        server={"eval_count": n, "eval_duration": int((n / (decode * 1.02)) * 1e9)})
    figures.update(extra)
    return sample(setup, model, test, status, **figures)


def campaign() -> list[dict[str, Any]]:
    """Two setups, five models, three tests, every status; streamed and not; a warmup and a cold sample."""
    records: list[dict[str, Any]] = [
        {"type": "run", "jarvis_version": "0.1.0",
         "versions": {"jarvis-core": "0.1.0", "plugins": {"jarvis-ollama": "0.2.0", "jarvis-vllm": "0.3.1"}},
         "host": {"os": "Linux 6.8.0-x86_64", "cpu": "AMD EPYC 9454", "python": "3.11.9"},
         "gpu": {"name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15"},
         "flags": {"repeat": 4, "force_download": False, "strict": False},
         "argv": ["jarvis", "run", "--setups", "test_setups.yaml"], "start_time": "2024-06-10T10:00:00+00:00"},
        {"type": "engine", "name": "ollama", "version": "0.3.12", "address": "http://127.0.0.1:11434"},
        {"type": "warmup", "setup": "fast", "model": QWEN, "cold_start_s": 2.5, "load_s": 2.125},
    ]
    # fast / qwen / capital: four warm streamed samples, TTFT 0.1..0.4 s, decode 50..80 tokens/s
    for rep, (ttft, decode) in enumerate([(0.4, 50.0), (0.1, 80.0), (0.3, 60.0), (0.2, 70.0)]):
        records.append(streamed("fast", QWEN, "capital", rep, ttft, decode))
    # fast / qwen / json: one answer fails its check, another is missing its figures entirely
    records.append(streamed("fast", QWEN, "json", 0, 0.15, 90.0))
    records.append(streamed("fast", QWEN, "json", 1, 0.25, 100.0, status="failed",
                            reason="answer is not valid JSON", answer="{not json"))
    records.append(sample("fast", QWEN, "json", "ok", repetition=2, stream=True, answer="{}"))
    # fast / llama: not present, downloads not forced
    for test in ("capital", "json"):
        records.append(sample("fast", LLAMA, test, "missing", reason="model not present (use --force-download)"))
    records.append({"type": "engine", "name": "vllm", "version": "0.6.3", "address": "http://127.0.0.1:8000"})
    # big / vllm: not streamed; first sample is the cold one; one request errors
    records.append(sample("big", VLLM, "capital", "ok", repetition=0, cold=True, stream=False, e2e_s=9.5,
                          output_tokens=12, token_source="server", overall_tps=12 / 9.5, load_s=None,
                          answer="Paris"))
    for rep, e2e in ((1, 0.5), (2, 0.7)):
        records.append(sample("big", VLLM, "capital", "ok", repetition=rep, stream=False, e2e_s=e2e, ttfb_s=e2e,
                              output_tokens=12, token_source="server", overall_tps=12 / e2e, answer="Paris"))
    records.append(sample("big", VLLM, "capital", "error", repetition=3, stream=False,
                          reason="HTTP 500: CUDA out of memory"))
    records.append(sample("big", VISION, "vision", "skipped", reason="test needs vision; model is text-only"))
    records.append(sample("big", LLAMACPP, "capital", "unavailable", reason="llama-server not installed"))
    # hostile answers: a formula, control characters, a very long text, a NaN figure
    records.append(streamed("big", QWEN, "capital", 0, 0.2, 40.0, answer="=HYPERLINK(\"http://x\")",
                            overall_tps=float("nan")))
    records.append(streamed("big", QWEN, "capital", 1, 0.4, 60.0, answer="bell\x07 and nul\x00 " + "x" * 2000))
    records.append({"type": "end", "time": "2024-06-10T10:05:00+00:00", "interrupted": False})
    return records


def write_jsonl(path: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    with open(path, "w", encoding="utf-8") as fh:
        for record in records:
            fh.write(json.dumps(record) + "\n")
        fh.write(tail)
    return path


def table(ws) -> tuple[list[str], list[dict[str, Any]]]:
    rows = list(ws.iter_rows(values_only=True))
    header = list(rows[0])
    return header, [dict(zip(header, row)) for row in rows[1:]]


def find_row(ws, **match: Any) -> tuple[int, dict[str, Any]]:
    header, rows = table(ws)
    hits = [(i + 2, r) for i, r in enumerate(rows) if all(r.get(k) == v for k, v in match.items())]
    assert len(hits) == 1, (match, hits)
    return hits[0]


@pytest.fixture
def report(tmp_path: Path):
    results = write_jsonl(tmp_path / "results.jsonl", campaign())
    out = write_report(results, tmp_path / "out" / "report.xlsx")
    assert out == tmp_path / "out" / "report.xlsx"
    return openpyxl.load_workbook(out)


def test_sheets(report) -> None:
    assert report.sheetnames == SHEETS


def test_summary_rows_and_figures(report) -> None:
    ws = report["Summary"]
    header, rows = table(ws)
    assert header == [c.name for c in SUMMARY_COLUMNS]
    # fast: qwen × 2 tests, llama × 2; big: vllm, vision, llamacpp, qwen
    assert len(rows) == 8
    _, row = find_row(ws, setup="fast", model=QWEN, test="capital")
    assert row["status"] == "ok" and row["reason"] is None
    assert (row["ok"], row["failed"], row["error"], row["warm_samples"]) == (4, 0, 0, 4)
    assert row["stream"] == "yes" and row["token_source"] == "server" and row["engine"] == "ollama"
    assert row["cold_start_s"] == 2.5 and row["load_s"] == 2.125
    # TTFT 0.1, 0.2, 0.3, 0.4: p50 = 0.25, p90 = 0.3 + 0.7 × 0.1 = 0.37, sd = sqrt(0.05 / 3)
    assert row["ttft_s_mean"] == pytest.approx(0.25)
    assert row["ttft_s_p50"] == pytest.approx(0.25)
    assert row["ttft_s_p90"] == pytest.approx(0.37)
    assert row["ttft_s_sd"] == pytest.approx(math.sqrt(0.05 / 3))
    assert (row["ttft_s_min"], row["ttft_s_max"]) == (pytest.approx(0.1), pytest.approx(0.4))
    assert row["decode_tps_p50"] == pytest.approx(65.0)
    assert row["decode_tps_p99"] == pytest.approx(70 + 0.97 * 10)
    assert row["itl_s_mean"] == pytest.approx((1 / 50 + 1 / 80 + 1 / 60 + 1 / 70) / 4)
    assert row["output_tokens_mean"] == 33

    _, failed = find_row(ws, setup="fast", model=QWEN, test="json")
    assert failed["status"] == "failed" and "not valid JSON" in failed["reason"]
    assert failed["ttft_s_mean"] == pytest.approx(0.2)  # failed answers keep their timings; the empty one adds none

    _, vllm = find_row(ws, model=VLLM)
    assert vllm["status"] == "error" and "CUDA out of memory" in vllm["reason"]
    assert vllm["stream"] == "no" and vllm["ttft_s_mean"] is None  # no TTFT without streaming
    assert vllm["e2e_s_mean"] == pytest.approx(0.6)  # the cold 9.5 s sample stays out
    assert vllm["cold_start_s"] == 9.5 and vllm["warm_samples"] == 2

    assert find_row(ws, model=LLAMA, test="json")[1]["status"] == "missing"
    assert find_row(ws, model=VISION)[1]["status"] == "skipped"
    assert find_row(ws, model=LLAMACPP)[1]["reason"] == "llama-server not installed"


def _rgb(color) -> str:
    return (color.rgb or "")[-6:].upper() if color is not None else ""


def test_status_colours(report) -> None:
    ws = report["Summary"]
    width = len(SUMMARY_COLUMNS)
    for test in ("capital", "json"):
        index, _ = find_row(ws, model=LLAMA, test=test)
        for cell in ws[index][:width]:  # the whole row, empty statistics included
            assert cell.fill.fill_type == "solid" and _rgb(cell.fill.fgColor) == "FFFF00", cell.coordinate
            assert _rgb(cell.font.color) == "FF0000" and cell.font.bold, cell.coordinate
    index, _ = find_row(ws, model=VLLM)
    for cell in ws[index][:width]:
        assert _rgb(cell.fill.fgColor) == "FFC7CE" and _rgb(cell.font.color) == "9C0006"
    index, _ = find_row(ws, setup="fast", model=QWEN, test="json")
    assert _rgb(ws[index][0].fill.fgColor) == "FFE0B2"
    for model in (VISION, LLAMACPP):
        index, _ = find_row(ws, model=model)
        assert _rgb(ws[index][0].font.color) == "808080" and ws[index][0].fill.fill_type is None
    index, _ = find_row(ws, setup="fast", model=QWEN, test="capital")
    assert ws[index][0].fill.fill_type is None and not ws[index][0].font.bold

    results = report["Results"]
    index, _ = find_row(results, model=VLLM, status="error")
    assert _rgb(results[index][0].fill.fgColor) == "FFC7CE"
    index, _ = find_row(results, model=LLAMA, test="json")
    assert _rgb(results[index][0].fill.fgColor) == "FFFF00"


def test_layout_frozen_filters_formats(report) -> None:
    summary, results = report["Summary"], report["Results"]
    assert summary.freeze_panes == "D2" and results.freeze_panes == "D2"
    assert report["Definitions"].freeze_panes == "A2" and report["Environment"].freeze_panes == "A2"
    assert summary.auto_filter.ref == f"A1:{summary.cell(1, len(SUMMARY_COLUMNS)).column_letter}9"
    assert results.auto_filter.ref == f"A1:{results.cell(1, len(RESULTS_COLUMNS)).column_letter}18"
    assert summary["A1"].font.bold
    header = [c.value for c in summary[1]]
    index, _ = find_row(summary, setup="fast", model=QWEN, test="capital")
    row = summary[index]
    assert row[header.index("ttft_s_p50")].number_format == "0.000"
    assert row[header.index("decode_tps_mean")].number_format == "0.0"
    assert row[header.index("itl_s_p50")].number_format == "0.0000"
    # readable widths: the model column fits the longest model ID, the reason column is wide
    assert summary.column_dimensions["B"].width >= len(VLLM)
    assert summary.column_dimensions[summary.cell(1, header.index("reason") + 1).column_letter].width >= 40
    rheader = [c.value for c in results[1]]
    index, _ = find_row(results, setup="fast", model=QWEN, test="capital", repetition=0)
    assert results[index][rheader.index("ttft_s")].number_format == "0.000"


def test_results_rows(report) -> None:
    ws = report["Results"]
    header, rows = table(ws)
    assert header == [c.name for c in RESULTS_COLUMNS]
    assert len(rows) == sum(r["type"] == "sample" for r in campaign())
    _, cold = find_row(ws, model=VLLM, repetition=0)
    assert cold["cold"] == "yes" and cold["e2e_s"] == 9.5 and cold["ttft_s"] is None and cold["stream"] == "no"
    _, first = find_row(ws, setup="fast", model=QWEN, test="capital", repetition=1)
    assert first["ttft_s"] == 0.1 and first["decode_tps"] == 80.0 and first["output_tokens"] == 33
    assert first["answer"] == "Paris is the capital of France." and first["time"] == "2024-06-10T10:00:05+00:00"
    assert first["engine"] == "ollama" and first["token_source"] == "server"
    _, missing = find_row(ws, model=LLAMA, test="capital")
    assert missing["repetition"] is None and missing["status"] == "missing" and missing["e2e_s"] is None
    assert missing["cold"] is None
    # hostile answers: text, never a formula; control characters replaced; cut at 500 characters; NaN left blank
    index, formula = find_row(ws, setup="big", model=QWEN, repetition=0)
    cell = ws.cell(index, header.index("answer") + 1)
    assert formula["answer"] == "=HYPERLINK(\"http://x\")" and cell.data_type == "s"
    assert formula["overall_tps"] is None
    _, long = find_row(ws, setup="big", model=QWEN, repetition=1)
    assert len(long["answer"]) == 500 and long["answer"].endswith("…") and "\x07" not in long["answer"]


def test_charts(report, tmp_path: Path) -> None:
    ws = report["Charts"]
    header, rows = table(ws)
    by_model = {r["model"]: r for r in rows if r["model"]}
    # QWEN pooled over its cells: fast/capital 4 × mean 0.25, fast/json 2 × mean 0.2, big/capital 2 × mean 0.3
    assert by_model[QWEN]["ttft_s_mean"] == pytest.approx((4 * 0.25 + 2 * 0.2 + 2 * 0.3) / 8)
    assert by_model[QWEN]["ttft_samples"] == 8
    assert by_model[VLLM]["ttft_s_mean"] is None and by_model[VLLM]["decode_tps_mean"] is None
    assert set(by_model) == {QWEN, LLAMA, VLLM, VISION, LLAMACPP}
    assert len(ws._charts) == 2
    with zipfile.ZipFile(tmp_path / "out" / "report.xlsx") as zf:
        charts = sorted(n for n in zf.namelist() if n.startswith("xl/charts/chart"))
        xml = "".join(zf.read(n).decode() for n in charts)
    assert len(charts) == 2
    assert "Mean TTFT per model" in xml and "Mean decode rate per model" in xml
    assert "'Charts'!$C$2:$C$6" in xml and "'Charts'!$E$2:$E$6" in xml and "'Charts'!$A$2:$A$6" in xml


def test_definitions_cover_every_column(report) -> None:
    rows = list(report["Definitions"].iter_rows(values_only=True))
    assert rows[0] == ("sheet", "column", "unit", "definition")
    defined = {(r[0], r[1]): (r[2], r[3]) for r in rows[1:] if r and r[0]}
    for sheet, columns in (("Summary", report["Summary"][1]), ("Results", report["Results"][1])):
        for cell in columns:
            assert (sheet, cell.value) in defined, (sheet, cell.value)
            assert defined[(sheet, cell.value)][1], (sheet, cell.value)
    assert defined[("Summary", "ttft_s_p50")][0] == "s"
    assert "t_first_token − t_send" in defined[("Results", "ttft_s")][1]
    assert "warm" in defined[("Summary", "decode_tps_mean")][1]
    statuses = {r[1]: r[3] for r in rows if r and r[0] == "Statuses" and r[1] != "name"}
    assert set(statuses) == {"ok", "failed", "error", "missing", "unavailable", "skipped"}
    assert "force-download" in statuses["missing"]
    sources = {r[1]: r[3] for r in rows if r and r[0] == "Token source" and r[1] != "name"}
    assert set(sources) == {"server", "estimated"}


def test_environment(report) -> None:
    env = {k: v for k, v in report["Environment"].iter_rows(min_row=2, values_only=True)}
    assert env["versions.jarvis-core"] == "0.1.0"
    assert env["versions.plugins.jarvis-vllm"] == "0.3.1"
    assert env["gpu.name"] == "NVIDIA H100 80GB HBM3" and env["gpu.driver"] == "550.54.15"
    assert env["host.os"].startswith("Linux")
    assert env["argv"] == "jarvis run --setups test_setups.yaml"
    assert env["flags.repeat"] == 4 and env["flags.force_download"] == "no"
    assert "0.3.12" in env["engines.ollama"] and "127.0.0.1:8000" in env["engines.vllm"]
    assert env["start_time"] == "2024-06-10T10:00:00+00:00" and env["end.time"] == "2024-06-10T10:05:00+00:00"
    assert env["interrupted"] == "no"
    assert env["report.samples"] == 17 and env["report.cells"] == 8
    assert env["report.samples.ok"] == 11 and env["report.samples.missing"] == 2


def test_slimmed_summary_matches_the_full_one(tmp_path: Path) -> None:
    """The report drops answers and server figures before summarizing; the summary must not change."""
    from jarvis_core.report import scan_results

    results = write_jsonl(tmp_path / "results.jsonl", campaign())
    assert scan_results(results).rows == summarize(read_results(results))


def test_empty_results_file(tmp_path: Path) -> None:
    results = write_jsonl(tmp_path / "results.jsonl", [])
    wb = openpyxl.load_workbook(write_report(results, tmp_path / "report.xlsx"))
    assert wb.sheetnames == SHEETS
    rows = list(wb["Summary"].iter_rows(values_only=True))
    assert list(rows[0]) == [c.name for c in SUMMARY_COLUMNS]
    assert "No samples" in rows[1][0]
    assert any("nothing to chart" in str(r[0]) for r in wb["Charts"].iter_rows(values_only=True))
    assert wb["Results"].max_row == 1
    env = {k: v for k, v in wb["Environment"].iter_rows(min_row=2, values_only=True)}
    assert env["report.samples"] == 0 and "no run record" in env["run"]


def test_torn_results_file_without_end(tmp_path: Path) -> None:
    records = [r for r in campaign() if r["type"] != "end"]
    results = write_jsonl(tmp_path / "results.jsonl", records, tail='{"type": "sample", "setup": "big", "mod')
    wb = openpyxl.load_workbook(write_report(results, tmp_path / "report.xlsx"))
    assert wb["Results"].max_row == 1 + 17
    assert len(table(wb["Summary"])[1]) == 8
    env = {k: v for k, v in wb["Environment"].iter_rows(min_row=2, values_only=True)}
    assert env["interrupted"].startswith("unknown") and "no end record" in env["end"]


def test_interrupted_run(tmp_path: Path) -> None:
    records = campaign()[:-1] + [{"type": "end", "time": 1718013900.0, "interrupted": True, "signal": "SIGINT"}]
    wb = openpyxl.load_workbook(write_report(write_jsonl(tmp_path / "r.jsonl", records), tmp_path / "r.xlsx"))
    env = {k: v for k, v in wb["Environment"].iter_rows(min_row=2, values_only=True)}
    assert env["interrupted"] == "yes" and env["end.signal"] == "SIGINT"
    assert env["end.time"].startswith("2024-06-10T10:05:00")


def test_statuses_without_samples(tmp_path: Path) -> None:
    records = [
        sample("s", LLAMA, "capital", "missing", reason="model not present"),
        sample("s", LLAMACPP, "capital", "unavailable", reason="engine not reachable"),
        sample("s", VISION, "vision", "skipped", reason="text-only model"),
        {"type": "sample", "setup": "s", "model": VLLM, "test": "capital", "status": "error"},  # bare minimum
    ]
    wb = openpyxl.load_workbook(write_report(write_jsonl(tmp_path / "r.jsonl", records), tmp_path / "r.xlsx"))
    _, rows = table(wb["Summary"])
    assert [r["status"] for r in rows] == ["missing", "unavailable", "skipped", "error"]
    assert all(r["ttft_s_mean"] is None and r["warm_samples"] == 0 for r in rows)
    assert any("nothing to chart" in str(r[0]) for r in wb["Charts"].iter_rows(values_only=True))
    assert not wb["Charts"]._charts
    assert wb["Results"].max_row == 5


def test_no_results_file(tmp_path: Path) -> None:
    from jarvis_core.errors import UsageError

    with pytest.raises(UsageError, match="no results file"):
        write_report(tmp_path / "nope.jsonl", tmp_path / "r.xlsx")
    assert not (tmp_path / "r.xlsx").exists()


def test_report_module_does_not_import_openpyxl() -> None:
    code = "import sys, jarvis_core.report; assert 'openpyxl' not in sys.modules, 'openpyxl imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def scale_records(n: int, seed: int = 7):
    """n samples over 2 setups × 5 models × 10 tests, with realistic answers and a few errors."""
    rng = random.Random(seed)
    words = "the of a model token latency answer capital Paris France JSON test stream decode".split()
    yield {"type": "run", "versions": {"jarvis-core": "0.1.0"}, "host": {"os": "Linux"}}
    cells = [(s, m, t) for s in ("a", "b") for m in (QWEN, "ol_m1", "ol_m2", "ol_m3", "ol_m4")
             for t in [f"t{i}" for i in range(10)]]
    for i in range(n):
        setup, model, test = cells[i % len(cells)]
        rep = i // len(cells)
        if i % 97 == 0:
            yield sample(setup, model, test, "error", repetition=rep, stream=True, reason="HTTP 500: boom")
            continue
        answer = " ".join(rng.choice(words) for _ in range(rng.randint(20, 120)))
        yield streamed(setup, model, test, rep, rng.uniform(0.05, 0.5), rng.uniform(20, 120),
                       n=rng.randint(16, 256), answer=answer, cold=rep == 0)
    yield {"type": "end", "interrupted": False}


@pytest.mark.integration
def test_scale_100k_samples(tmp_path: Path) -> None:
    results = tmp_path / "results.jsonl"
    with open(results, "w", encoding="utf-8") as fh:
        for record in scale_records(100_000):
            fh.write(json.dumps(record) + "\n")
    out = write_report(results, tmp_path / "report.xlsx")
    wb = openpyxl.load_workbook(out, read_only=True)
    assert wb.sheetnames == SHEETS
    summary = list(wb["Summary"].iter_rows(values_only=True))
    assert len(summary) == 1 + 100
    rows = wb["Results"].iter_rows(values_only=True)
    assert next(rows)[:3] == ("setup", "model", "test")
    assert sum(1 for _ in rows) == 100_000
    wb.close()
    assert set(STAT_FIGURES) <= {c.name.rsplit("_", 1)[0] for c in SUMMARY_COLUMNS}
