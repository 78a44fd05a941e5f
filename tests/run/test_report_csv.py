"""The CSV export: the workbook's tables as CSV files with the same column names, values and units, RFC 4180 quoting
(names with commas, quotes and line breaks come back whole), full-precision numbers, empty fields for null, and files
that pandas reads as they are."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from jarvis_core.errors import UsageError
from jarvis_core.report import RESULTS_COLUMNS, SUMMARY_COLUMNS, write_report
from jarvis_core.report_csv import write_csv
from jarvis_core.report_load import load_columns
from jarvis_core.report_tables import SIDE_COLUMNS, SIDE_LOAD_COLUMNS
from jarvis_core.results import BadLines

HOSTILE = 'lab, "one"\nsecond line'  # a comma, quotes and a line break in a setup name
QWEN = "ol_qwen2.5:0.5b#stream"
VLLM = "vllm:Qwen/Qwen2.5-0.5B-Instruct#stream"


def engine(model: str) -> str:
    return "ollama" if model.startswith("ol_") else "vllm"


def sample(setup: str, model: str, test: str, rep: int | None, status: str = "ok", label: str | None = "qwen",
           **figures: Any) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "sample", "setup": setup, "model": model, "engine": engine(model),
                              "test": test, "repetition": rep, "cold": False, "status": status, "reason": "",
                              "time": "2024-06-10T10:00:05+00:00"}
    if label is not None:
        record["label"] = label
    if rep is not None:
        record.update({"engine_model": "m", "stream": True, "answer": "Paris.", "finish_reason": "stop", "server": {},
                       **figures})
    return record


def streamed(setup: str, model: str, test: str, rep: int, ttft: float, **extra: Any) -> dict[str, Any]:
    return sample(setup, model, test, rep, ttft_s=ttft, ttfb_s=ttft / 3, e2e_s=ttft + 0.123456789012345,
                  itl_s=0.0123456789, decode_tps=81.23456789012345, overall_tps=40.1, output_tokens=17,
                  token_source="server", prompt_tokens=12, **extra)


def level(model: str, concurrency: int, tps: float) -> dict[str, Any]:
    return {"type": "load_level", "setup": HOSTILE, "model": model, "engine": engine(model),
            "label": "qwen", "concurrency": concurrency, "rate": None, "requests_ok": 8, "requests_error": 0,
            "output_tps": tps, "request_rate": tps / 17, "goodput_rps": None, "slo_share": 0.875,
            "ttft_s": {"p50": 0.05, "p90": 0.08, "p99": 0.1 / 3}, "itl_s": {"p50": 0.01, "p90": None, "p99": 0.02},
            "e2e_s": {"p50": 0.3, "p90": 0.4, "p99": 0.5}, "client_cpu": 0.25, "window_s": 2.5, "window": "steady",
            "parallelism": {"setting": "--max-num-seqs", "value": 256, "detail": "", "adjustable": True},
            "flags": [], "wall_s": 3.0, "time": "2024-06-10T10:01:00+00:00"}


def run_records(with_load: bool = True, labels: bool = True) -> list[dict[str, Any]]:
    items = [
        {"type": "run", "schema": 2, "run_id": "abc", "started_at": "2024-06-10T10:00:00+00:00"},
        streamed(HOSTILE, QWEN, "capital", 1, 0.1 / 3), streamed(HOSTILE, QWEN, "capital", 2, 0.2),
        streamed(HOSTILE, VLLM, "capital", 1, 0.05, answer="=1+1, \"quoted\"\nnext"),
        sample(HOSTILE, VLLM, "capital", 2, "failed", reason='expected contains "Paris", got "Lyon,\nFrance"',
               ttft_s=0.07),
        sample(HOSTILE, "ol_absent:1b", "capital", None, "missing", label=None, reason="not present; run jarvis pull"),
    ]
    if with_load:
        items += [level(QWEN, 1, 100.0), level(VLLM, 1, 123.456789012345)]
    if not labels:
        items = [{k: v for k, v in r.items() if k != "label"} for r in items]
    return items + [{"type": "end", "ended_at": "2024-06-10T10:02:00+00:00", "interrupted": False}]


def write(path: Path, items: list[dict[str, Any]], tail: str = "") -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in items) + tail, encoding="utf-8")
    return path


def read(path: Path) -> list[list[str]]:
    with open(path, encoding="utf-8", newline="") as fh:
        return list(csv.reader(fh))


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Any, list[Path]]:
    results = write(tmp_path / "results.jsonl", run_records())
    book = openpyxl.load_workbook(write_report(results, tmp_path / "report.xlsx"))
    return tmp_path / "csv", book, write_csv(results, tmp_path / "csv")


SHEETS = {"summary.csv": ("Summary", SUMMARY_COLUMNS), "results.csv": ("Results", RESULTS_COLUMNS),
          "load.csv": ("Load", load_columns()), "side_by_side.csv": ("Side by side", SIDE_COLUMNS),
          "side_by_side_load.csv": ("Side by side (load)", SIDE_LOAD_COLUMNS)}


def test_the_files_written(exported) -> None:
    out, _, paths = exported
    assert [p.name for p in paths] == [*SHEETS, "definitions.csv"]
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in paths), "no temporary file is left"


def sheet_table(ws) -> list[list[Any]]:
    rows = []
    for row in ws.iter_rows(values_only=True):
        if not any(v is not None for v in row):
            break  # the Load sheet's capacity lines follow its table after a blank row
        rows.append(list(row))
    return rows


@pytest.mark.parametrize("name", list(SHEETS))
def test_columns_and_values_equal_the_workbooks(exported, name: str) -> None:
    out, book, _ = exported
    sheet, columns = SHEETS[name]
    got = read(out / name)
    expected = sheet_table(book[sheet])
    assert got[0] == expected[0] == [c.name for c in columns]
    assert len(got) == len(expected) > 1
    for csv_row, book_row in zip(got[1:], expected[1:]):
        assert len(csv_row) == len(book_row)
        for column, text, value in zip(got[0], csv_row, book_row):
            if value is None:
                assert text == "", (name, column, text)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                # the workbook keeps Excel's 15-16 significant digits, the CSV every digit of the number
                assert float(text) == pytest.approx(value, rel=1e-14, abs=0), (name, column, text, value)
            else:
                assert text == value, (name, column, text, value)


def test_numbers_are_unformatted_and_nulls_empty(exported) -> None:
    out, _, _ = exported
    header, *rows = read(out / "results.csv")
    first = dict(zip(header, rows[0]))
    assert first["ttft_s"] == repr(0.1 / 3) and first["repetition"] == "1" and first["stream"] == "yes"
    assert first["decode_tps"] == repr(81.23456789012345) and first["reason"] == ""
    missing = dict(zip(header, rows[-1]))
    assert missing["status"] == "missing" and missing["repetition"] == "" and missing["ttft_s"] == ""
    header, *rows = read(out / "load.csv")
    assert dict(zip(header, rows[0]))["slo_share"] == "0.875", "a share, as in the workbook (formatted there as %)"
    assert dict(zip(header, rows[0]))["goodput_rps"] == ""


def test_text_with_commas_quotes_and_line_breaks_round_trips(exported) -> None:
    out, _, _ = exported
    header, *rows = read(out / "results.csv")
    by_status = {r[header.index("status")]: dict(zip(header, r)) for r in rows}
    assert by_status["failed"]["setup"] == HOSTILE
    assert by_status["failed"]["reason"] == 'expected contains "Paris", got "Lyon,\nFrance"'
    assert '=1+1, "quoted"\nnext' in {r[header.index("answer")] for r in rows}, "text is written as it is"
    raw = (out / "results.csv").read_bytes()
    assert b'"lab, ""one""\nsecond line"' in raw and raw.count(b"\r\n") >= len(rows) + 1, "RFC 4180: CRLF, quotes"
    assert not raw.startswith(b"\xef\xbb\xbf"), "UTF-8 without a byte-order mark"


def test_definitions_give_each_columns_unit(exported) -> None:
    out, _, _ = exported
    header, *rows = read(out / "definitions.csv")
    assert header == ["file", "column", "unit", "definition"]
    units = {(r[0], r[1]): r[2] for r in rows}
    for name, (_, columns) in SHEETS.items():
        for column in columns:
            assert units[(name, column.name)] == column.unit, (name, column.name)
    assert units[("summary.csv", "ttft_s_p50")] == "s" and units[("load.csv", "output_tps")] == "tokens/s"
    assert units[("side_by_side.csv", "ttft_s_p50_ratio")] == "ratio"
    assert all(r[3] for r in rows), "every column is defined"


def test_pandas_reads_the_files_as_they_are(exported) -> None:
    pd = pytest.importorskip("pandas")
    out, _, _ = exported
    results = pd.read_csv(out / "results.csv")
    assert list(results.columns) == [c.name for c in RESULTS_COLUMNS]
    assert results["ttft_s"].dtype.kind == "f" and results["ttft_s"].iloc[0] == 0.1 / 3
    assert results["setup"].iloc[0] == HOSTILE and pd.isna(results["ttft_s"].iloc[-1])
    side = pd.read_csv(out / "side_by_side.csv")
    assert list(side["name"]) == ["qwen (ollama)", "qwen (vllm)"]
    assert side["ttft_s_p50_ratio"].iloc[0] == 1.0
    load = pd.read_csv(out / "load.csv")
    assert load["output_tps"].tolist() == [100.0, 123.456789012345]


def test_without_load_levels_or_labels_only_the_tables_the_run_has(tmp_path: Path) -> None:
    results = write(tmp_path / "results.jsonl", run_records(with_load=False, labels=False))
    paths = write_csv(results, tmp_path / "csv")
    assert [p.name for p in paths] == ["summary.csv", "results.csv", "definitions.csv"]
    assert {r[0] for r in read(tmp_path / "csv" / "definitions.csv")[1:]} == {"summary.csv", "results.csv"}


def test_exporting_again_into_the_same_folder_leaves_no_table_of_the_earlier_run(tmp_path: Path) -> None:
    out = tmp_path / "csv"
    write_csv(write(tmp_path / "a.jsonl", run_records()), out)
    (out / "mine.csv").write_text("a user's own file\n", encoding="utf-8")
    paths = write_csv(write(tmp_path / "b.jsonl", run_records(with_load=False, labels=False)), out)
    assert sorted(p.name for p in out.iterdir()) == sorted([p.name for p in paths] + ["mine.csv"])
    assert (out / "mine.csv").read_text(encoding="utf-8") == "a user's own file\n"


def test_an_empty_results_file_gives_headers_only(tmp_path: Path) -> None:
    results = write(tmp_path / "results.jsonl", [])
    write_csv(results, tmp_path / "csv")
    assert read(tmp_path / "csv" / "summary.csv") == [[c.name for c in SUMMARY_COLUMNS]]


def test_unreadable_lines_are_skipped_and_named(tmp_path: Path) -> None:
    results = write(tmp_path / "results.jsonl", run_records(with_load=False), tail='{"type": "sample", "setu')
    bad = BadLines()
    write_csv(results, tmp_path / "csv", bad)
    assert [n for n, _ in bad] == [len(run_records(with_load=False)) + 1]
    assert len(read(tmp_path / "csv" / "results.csv")) == 1 + 5


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    results = write(tmp_path / "results.jsonl", run_records())
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target in (blocker, blocker / "below"):
        with pytest.raises(UsageError) as caught:
            write_csv(results, target)
        assert "\n" not in str(caught.value) and str(target) in str(caught.value)
        assert "give another folder" in str(caught.value)
    with pytest.raises(UsageError, match="no results file"):
        write_csv(tmp_path / "nothing.jsonl", tmp_path / "csv")
