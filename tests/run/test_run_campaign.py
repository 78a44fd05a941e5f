"""`jarvis run` end to end, in-process, over engines Jarvis starts itself: the fake `ollama` (the Ollama stand-in with
runner child processes, models on disk) and the fake `vllm` (vLLM's process runtime running the vLLM-like stand-in,
models in a Hugging Face cache). One shared campaign produces every status -- ok, failed (a check that cannot pass),
error (injected faults), missing (a model not on disk), unavailable (llama.cpp without its interpreter), skipped
(vision) -- and the tests below read its console output, results.jsonl and report.xlsx.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from jarvis_core.state import StateStore

from tests.run.conftest import Campaign, cells, module_campaign, records, samples

QWEN = "ol_qwen2.5:0.5b#stream"
LLAVA = "ol_llava:7b"
FAULTY_OL = "ol_smollm2:135m#stream"
ABSENT = "ol_absent:1b"
GOOD_STREAM = "vllm:Org/Good#stream"
GOOD = "vllm:Org/Good"
FAULTY_VL = "vllm:Org/Faulty#stream"
LLAMACPP = "lc_smollm2-135m"
REPS = 2

SETUPS = f"""
defaults: {{repetitions: {REPS}, warmup: 1, max_tokens: 32, timeout: 20}}
tests:
  - id: capital
    prompt: What is the capital of France?
    check: {{contains: Paris}}
  - id: impossible
    prompt: What is the capital of Japan?
    check: {{equals: Atlantis}}
  - id: picture
    prompt: Describe this picture.
    images: [pixel.png]
setups:
  ollama:
    models:
      - {QWEN}
      - {LLAVA}
      - {FAULTY_OL}
      - {ABSENT}
  vllm:
    models:
      - {{id: "{GOOD_STREAM}", capabilities: []}}
      - "{GOOD}"
      - "{FAULTY_VL}"
  vllm-again:
    models: ["{GOOD_STREAM}"]
    tests: [capital]
  mixed:
    models: [{QWEN}, "{GOOD_STREAM}"]
    tests: [capital]
  llamacpp:
    models: [{LLAMACPP}]
    tests: [capital]
"""

# setup, model, test -> status
EXPECTED = {
    ("ollama", QWEN, "capital"): "ok",
    ("ollama", QWEN, "impossible"): "failed",
    ("ollama", QWEN, "picture"): "skipped",
    ("ollama", LLAVA, "capital"): "ok",
    ("ollama", LLAVA, "impossible"): "failed",
    ("ollama", LLAVA, "picture"): "ok",
    ("ollama", FAULTY_OL, "capital"): "error",
    ("ollama", FAULTY_OL, "impossible"): "error",
    ("ollama", FAULTY_OL, "picture"): "skipped",
    ("ollama", ABSENT, "capital"): "missing",
    ("ollama", ABSENT, "impossible"): "missing",
    ("ollama", ABSENT, "picture"): "missing",
    ("vllm", GOOD_STREAM, "capital"): "ok",
    ("vllm", GOOD_STREAM, "impossible"): "failed",
    ("vllm", GOOD_STREAM, "picture"): "skipped",
    ("vllm", GOOD, "capital"): "ok",
    ("vllm", GOOD, "impossible"): "failed",
    ("vllm", GOOD, "picture"): "skipped",
    ("vllm", FAULTY_VL, "capital"): "error",
    ("vllm", FAULTY_VL, "impossible"): "error",
    ("vllm", FAULTY_VL, "picture"): "skipped",
    ("vllm-again", GOOD_STREAM, "capital"): "ok",
    ("llamacpp", LLAMACPP, "capital"): "unavailable",
    ("mixed", QWEN, "capital"): "ok",
    ("mixed", GOOD_STREAM, "capital"): "ok",
}
TIMED = {"ok", "failed", "error"}


def prepare(camp: Campaign) -> None:
    camp.image("pixel.png")
    camp.ollama_model("qwen2.5:0.5b")
    camp.ollama_model("llava:7b", vision=True)
    camp.ollama_model("smollm2:135m")
    # smollm2: the load and the warmup go through (a fault that never fires absorbs them), then every timed request
    # breaks off with an error line after two chunks
    camp.ollama_config(faults=[
        {"kind": "error", "after_chunks": 10_000, "model": "smollm2:135m", "endpoint": "chat", "times": 2},
        {"kind": "error", "after_chunks": 2, "model": "smollm2:135m", "endpoint": "chat", "times": None},
    ])
    camp.hf_model("Org/Good")
    camp.hf_model("Org/Faulty")
    # Org/Faulty: its non-streamed warmup works; every streamed answer gets an SSE error event after two chunks
    camp.config(vllm_models={"Org/Good": ["--token-delay", "0.001"],
                             "Org/Faulty": ["--error-after-chunks", "2"]})
    camp.setups(SETUPS)


@dataclass
class Outcome:
    camp: Campaign
    exit_code: int
    output: str
    out: Path
    states_after: list[dict[str, Any]]

    @property
    def results(self) -> Path:
        return self.out / "results.jsonl"

    @property
    def report(self) -> Path:
        return self.out / "report.xlsx"


@pytest.fixture(scope="module")
def outcome(tmp_path_factory) -> Any:
    root = tmp_path_factory.mktemp("campaign")
    with module_campaign(root) as camp:
        prepare(camp)
        result = camp.run("run", "--output", "out")
        states = StateStore(camp.state_dir).records()
        yield Outcome(camp, result.exit_code, result.output, root / "out", states)


# --- statuses and reasons --------------------------------------------------------------------------------------------


def test_exit_code_is_1_because_cells_failed_and_errored(outcome: Outcome) -> None:
    assert outcome.exit_code == 1, outcome.output


def test_every_cell_has_its_status(outcome: Outcome) -> None:
    found = cells(outcome.results)
    assert set(found) == set(EXPECTED), set(found) ^ set(EXPECTED)
    from jarvis_core.results import read_results, summarize

    rows = {row.key: row for row in summarize(read_results(outcome.results))}
    assert {key: row.status for key, row in rows.items()} == EXPECTED
    for key, status in EXPECTED.items():
        if status != "ok":
            assert rows[key].reason, f"{key} ({status}) has no reason"


def test_timed_cells_have_one_sample_per_repetition_and_no_duplicates(outcome: Outcome) -> None:
    for key, found in cells(outcome.results).items():
        if EXPECTED[key] in TIMED and key[1] != LLAMACPP:
            assert sorted(r["repetition"] for r in found) == list(range(1, REPS + 1)), key
        else:
            assert [r["repetition"] for r in found] == [None], f"{key}: one record for a cell that did not run"
    keys = [(r["setup"], r["model"], r["test"], r["repetition"]) for r in samples(outcome.results)]
    assert len(keys) == len(set(keys))


def test_reasons_say_why_and_how_to_fix(outcome: Outcome) -> None:
    found = cells(outcome.results)

    def reason(setup: str, model: str, test: str) -> str:
        return found[(setup, model, test)][0]["reason"]

    assert "ollama pull absent:1b" in reason("ollama", ABSENT, "capital")
    assert "no-such-python" in reason("llamacpp", LLAMACPP, "capital")
    assert "pip install" in reason("llamacpp", LLAMACPP, "capital")
    assert reason("vllm", GOOD_STREAM, "picture") == f"{GOOD_STREAM} lacks vision", "declared without vision"
    assert reason("ollama", QWEN, "picture") == f"{QWEN} lacks vision", "Ollama tells what a model can do"
    assert "capabilities: [vision]" in reason("vllm", GOOD, "picture"), "says how to declare the capability"
    assert "expected equals 'Atlantis'" in reason("ollama", QWEN, "impossible")
    assert "Tokyo" in reason("ollama", QWEN, "impossible"), "the failed check quotes the answer"
    assert "unexpected EOF" in reason("ollama", FAULTY_OL, "capital"), "the engine's own message is kept"
    assert "The engine failed while generating" in reason("vllm", FAULTY_VL, "capital")


def test_console_shows_progress_and_a_summary_marking_missing(outcome: Outcome) -> None:
    out = outcome.output
    assert f"[ollama] {QWEN}" in out and f"[vllm] {GOOD_STREAM}" in out
    assert "  capital 1: ok TTFT" in out and "  capital 2: ok TTFT" in out
    assert "  capital 1: ok E2E" in out, "non-streamed samples show their end-to-end time"
    assert "MISSING: " in out and "fix: jarvis run --force-download, or ollama pull absent:1b" in out
    table = out[out.index("SETUP"):]
    missing_rows = [line for line in table.splitlines() if ABSENT in line]
    assert len(missing_rows) == 3 and all(" MISSING " in line for line in missing_rows)
    assert f"Results: {Path('out') / 'results.jsonl'}" in out and "Report:  " in out


# --- figures ---------------------------------------------------------------------------------------------------------


def test_streamed_samples_have_ttft_and_decode_figures(outcome: Outcome) -> None:
    streamed = [r for r in samples(outcome.results) if r["status"] in ("ok", "failed") and r["stream"]]
    assert {r["engine"] for r in streamed} == {"ollama", "vllm"}
    for r in streamed:
        assert 0 < r["ttfb_s"] <= r["ttft_s"] <= r["e2e_s"], r
        assert r["output_tokens"] > 1 and r["token_source"] == "server"
        assert math.isclose(r["itl_s"], (r["e2e_s"] - r["ttft_s"]) / (r["output_tokens"] - 1), rel_tol=1e-6)
        assert math.isclose(r["decode_tps"], 1 / r["itl_s"], rel_tol=1e-9)
        assert math.isclose(r["overall_tps"], r["output_tokens"] / r["e2e_s"], rel_tol=1e-9)
        assert r["answer"] and r["cold"] is False
        if r["engine"] == "ollama":
            server = r["server"]
            assert r["output_tokens"] == server["eval_count"]
            assert math.isclose(r["server_decode_tps"], server["eval_count"] / server["eval_duration"] * 1e9)
            assert r["load_s"] is not None


def test_non_streamed_samples_have_no_ttft(outcome: Outcome) -> None:
    plain = [r for r in samples(outcome.results) if r["status"] in ("ok", "failed") and r["stream"] is False]
    assert {r["model"] for r in plain} == {LLAVA, GOOD}
    for r in plain:
        assert r["ttft_s"] is None and r["itl_s"] is None and r["decode_tps"] is None, r
        assert r["e2e_s"] > 0 and r["output_tokens"] > 0
        assert math.isclose(r["overall_tps"], r["output_tokens"] / r["e2e_s"], rel_tol=1e-9)


def test_cells_that_did_not_run_have_no_figures(outcome: Outcome) -> None:
    for r in samples(outcome.results):
        if r["status"] in ("missing", "unavailable", "skipped"):
            assert r["repetition"] is None
            assert all(r.get(k) is None for k in ("ttft_s", "e2e_s", "output_tokens", "answer")), r


def test_cold_start_is_apart_from_warm_samples(outcome: Outcome) -> None:
    warmups = {(r["setup"], r["model"]): r for r in records(outcome.results) if r["type"] == "warmup"}
    assert set(warmups) == {("ollama", QWEN), ("ollama", LLAVA), ("ollama", FAULTY_OL), ("vllm", GOOD_STREAM),
                            ("vllm", GOOD), ("vllm", FAULTY_VL), ("vllm-again", GOOD_STREAM), ("mixed", QWEN),
                            ("mixed", GOOD_STREAM)}
    for warm in warmups.values():
        assert warm["cold_start_s"] > 0
    assert warmups[("ollama", QWEN)]["load_s"] is not None, "Ollama reports its own load time"
    assert not any(r.get("cold") for r in samples(outcome.results)), "with a warmup no timed sample is cold"
    from jarvis_core.results import read_results, summarize

    rows = {row.key: row for row in summarize(read_results(outcome.results))}
    row = rows[("ollama", QWEN, "capital")]
    assert row.cold_start_s == warmups[("ollama", QWEN)]["cold_start_s"]
    assert row.stats["ttft_s"].count == REPS, "every timed sample is warm"
    assert row.stats["e2e_s"].max < row.cold_start_s + 10  # a sanity bound, not a timing


# --- engines: one GPU, teardown ------------------------------------------------------------------------------------------


def test_engines_are_brought_up_once_and_recorded(outcome: Outcome) -> None:
    engines = [r for r in records(outcome.results) if r["type"] == "engine"]
    assert [e["engine"] for e in engines] == ["ollama", "vllm"]
    assert all(e["started_by_jarvis"] for e in engines)
    assert engines[0]["version"] == "0.12.3" and engines[1]["version"] == "0.11.0"


def test_gpu_heavy_engine_is_stopped_before_another_starts(outcome: Outcome) -> None:
    lines = outcome.output.splitlines()
    ollama_header = lines.index(f"[mixed] {QWEN}")
    vllm_header = lines.index(f"[mixed] {GOOD_STREAM}")
    stops = [i for i, line in enumerate(lines) if line.startswith("  stopped ")]
    assert any(ollama_header < i < vllm_header and lines[i].startswith("  stopped vllm:") for i in stops), \
        "vLLM (GPU-heavy) is stopped before Ollama starts"
    assert any(i > vllm_header and lines[i].startswith("  stopped ollama:") for i in stops)
    # between setups: ollama is torn down before the vllm setup, since the next setup does not use it
    first_vllm = lines.index(f"[vllm] {GOOD_STREAM}")
    assert any(i < first_vllm and lines[i].startswith("  stopped ollama:") for i in stops)


def test_everything_jarvis_started_is_gone_and_unrecorded(outcome: Outcome) -> None:
    assert outcome.states_after == [], "the state file still records things Jarvis started"


# --- results.jsonl -------------------------------------------------------------------------------------------------------


def test_results_file_layout(outcome: Outcome) -> None:
    recs = records(outcome.results)
    assert recs[0]["type"] == "run" and recs[-1]["type"] == "end"
    assert recs[-1]["interrupted"] is False
    run = recs[0]
    for key in ("run_id", "started_at", "jarvis_version", "plugins", "python", "os", "host", "cpu", "gpu",
                "setups_file", "config_file", "force_download"):
        assert key in run, key
    assert run["setups_file"].endswith("test_setups.yaml")
    assert set(run["plugins"]) == {"ollama", "vllm", "llamacpp"}
    assert {r["type"] for r in recs} == {"run", "engine", "warmup", "sample", "end"}
    for r in samples(outcome.results):
        assert r["status"] in ("ok", "failed", "error", "missing", "unavailable", "skipped")
        for key in ("setup", "model", "engine", "test", "repetition", "cold", "status", "reason", "time"):
            assert key in r, (key, r)


def test_report_rebuilds_from_results(outcome: Outcome, tmp_path: Path) -> None:
    rebuilt = tmp_path / "again.xlsx"
    result = outcome.camp.run("report", str(outcome.results), "-o", str(rebuilt))
    assert result.exit_code == 0 and f"Report: {rebuilt}" in result.output
    original = [r for r in openpyxl.load_workbook(outcome.report)["Summary"].iter_rows(values_only=True)]
    again = [r for r in openpyxl.load_workbook(rebuilt)["Summary"].iter_rows(values_only=True)]
    assert original == again


# --- report.xlsx ---------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def workbook(outcome: Outcome):
    return openpyxl.load_workbook(outcome.report)


def summary_rows(workbook) -> tuple[list[str], list[tuple]]:
    ws = workbook["Summary"]
    rows = list(ws.iter_rows())
    header = [c.value for c in rows[0]]
    return header, rows[1:]


def test_workbook_sheets(workbook) -> None:
    for name in ("Summary", "Results", "Environment", "Definitions"):
        assert name in workbook.sheetnames


def test_summary_has_one_row_per_cell_with_status(workbook) -> None:
    header, rows = summary_rows(workbook)
    col = {name: i for i, name in enumerate(header)}
    found = {(r[col["setup"]].value, r[col["model"]].value, r[col["test"]].value): r[col["status"]].value
             for r in rows}
    assert len(rows) == len(EXPECTED)
    assert found == EXPECTED
    by_key = {(r[col["setup"]].value, r[col["model"]].value, r[col["test"]].value): r for r in rows}
    ok = by_key[("ollama", QWEN, "capital")]
    assert ok[col["ok"]].value == REPS and isinstance(ok[col["ttft_s_p50"]].value, float)
    assert ok[col["cold_start_s"]].value > 0
    plain = by_key[("vllm", GOOD, "capital")]
    assert plain[col["ttft_s_p50"]].value is None and isinstance(plain[col["e2e_s_p50"]].value, float)


def test_missing_rows_are_yellow_with_red_text_and_errors_red(workbook) -> None:
    header, rows = summary_rows(workbook)
    col = {name: i for i, name in enumerate(header)}
    missing = [r for r in rows if r[col["status"]].value == "missing"]
    assert len(missing) == 3
    for row in missing:
        for cell in row[:5]:
            assert cell.fill.fill_type == "solid"
            assert cell.fill.fgColor.rgb.endswith("FFFF00"), cell.fill.fgColor.rgb
            assert cell.font.color is not None and cell.font.color.rgb.endswith("FF0000"), cell.font.color
    errors = [r for r in rows if r[col["status"]].value == "error"]
    assert errors
    for row in errors:
        assert row[col["status"]].fill.fill_type == "solid"
        assert not row[col["status"]].fill.fgColor.rgb.endswith("FFFF00")
    ok = next(r for r in rows if r[col["status"]].value == "ok")
    assert ok[col["status"]].fill.fill_type in (None, "none")


def test_results_sheet_has_a_row_per_sample(workbook, outcome: Outcome) -> None:
    ws = workbook["Results"]
    assert ws.max_row - 1 == len(samples(outcome.results))


def test_a_chart_compares_models(workbook, outcome: Outcome) -> None:
    charts = [chart for ws in workbook.worksheets for chart in ws._charts]
    assert charts, "the workbook has a chart"
    import zipfile

    with zipfile.ZipFile(outcome.report) as zf:
        assert any(name.startswith("xl/charts/chart") for name in zf.namelist())


def test_environment_sheet_records_the_run(workbook) -> None:
    values = {row[0]: row[1] for row in workbook["Environment"].iter_rows(min_row=2, values_only=True)}
    assert "jarvis_version" in values and "interrupted" in values
    assert values["interrupted"] == "no"
    assert any(str(k).startswith("engines.") for k in values)
