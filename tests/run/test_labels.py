"""Engine against engine: a model entry's `label:` in the setups file, carried into every record written for the
model, and models sharing a label side by side: the console summary, the workbook's "Side by side" sheets (figures and
ratios), and the Load sheet's charts (one series per model, same-label models adjacent, named `label (engine)`)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any, Iterator

import openpyxl
import pytest

from jarvis_core.errors import ConfigError
from jarvis_core.report import SUMMARY_COLUMNS, write_report
from jarvis_core.report_tables import SIDE_COLUMNS, SIDE_LOAD_COLUMNS, label_pairs, pairs_from
from jarvis_core.results import read_results, summarize
from jarvis_core.runner import summary_table
from jarvis_core.setups import MAX_LABEL, load_suite

from tests.run.conftest import Campaign, module_campaign, records

TESTS = "tests:\n  - {id: t1, prompt: Hi}\n"


def suite_file(tmp_path: Path, models: str) -> Path:
    path = tmp_path / "test_setups.yaml"
    path.write_text(TESTS + f"setups:\n  s:\n    models: {models}\n")
    return path


# --- the setups file --------------------------------------------------------------------------------------------------


def test_a_label_is_read_trimmed_and_absent_without_one(tmp_path: Path) -> None:
    suite = load_suite(suite_file(tmp_path, "[{id: ol_a:1b, label: '  qwen 0.5b '}, ol_b:1b, "
                                            "{id: 'vllm:Org/A', label: qwen 0.5b, capabilities: [vision]}, "
                                            "{id: ol_c:1b, label: qwen 0.5b}]"))
    first, plain, vllm, same_engine = suite.setups[0].models
    assert first.label == "qwen 0.5b" and plain.label is None
    assert (vllm.label, vllm.capabilities) == ("qwen 0.5b", ("vision",))
    assert same_engine.label == "qwen 0.5b", "two models of one engine may share a label"


BAD_LABELS = [
    ("a number", "7", "quote it if it looks like a number"),
    ("a list", "[a, b]", "expected a text such as qwen2.5-0.5b"),
    ("null", "null", "found nothing"),
    ("empty", "'  '", f"1 to {MAX_LABEL} printable characters"),
    ("two lines", '"a\\nb"', "expected one line"),
    ("too long", "x" * (MAX_LABEL + 1), f"1 to {MAX_LABEL} printable characters"),
]


@pytest.mark.parametrize("case, label, fix", BAD_LABELS, ids=[b[0] for b in BAD_LABELS])
def test_a_bad_label_is_one_line_naming_the_place(tmp_path: Path, case: str, label: str, fix: str) -> None:
    path = suite_file(tmp_path, f"[ol_a:1b, {{id: ol_b:1b, label: {label}}}]")
    with pytest.raises(ConfigError) as caught:
        load_suite(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path)), message
    assert caught.value.path == "setups.s.models[1].label" and fix in message, message


def test_an_unknown_key_of_a_model_entry_names_label_among_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_suite(suite_file(tmp_path, "[{id: ol_a:1b, lable: x}]"))
    assert caught.value.path == "setups.s.models[0].lable" and "'label'" in str(caught.value)


def test_the_plan_carries_the_label_into_the_records_identity(tmp_path: Path) -> None:
    from jarvis_core.plan import PlannedModel

    suite = load_suite(suite_file(tmp_path, "[{id: ol_a:1b, label: small}, ol_b:1b]"))
    labelled, plain = (PlannedModel(setup="s", entry=e, ref=None, unresolved="", label=e.id, repetitions=1, warmups=0,
                                    tests=()) for e in suite.setups[0].models)
    assert labelled.compare_label == "small" and plain.compare_label is None
    assert labelled.identity() == {"setup": "s", "model": "ol_a:1b", "engine": "", "label": "small"}
    assert plain.identity() == {"setup": "s", "model": "ol_b:1b", "engine": ""}


# --- a real run: every record carries the label; side by side everywhere ----------------------------------------------

OLLAMA = "ol_qwen2.5:0.5b#stream"
VLLM = "vllm:Org/Good#stream"
PLAIN = "ol_smollm2:135m#stream"
RUN_SETUPS = f"""
defaults: {{repetitions: 2, warmup: 1, max_tokens: 16, timeout: 20}}
tests:
  - id: capital
    prompt: What is the capital of France?
    check: {{contains: Paris}}
  - id: hello
    prompt: Say hello.
setups:
  engines:
    models:
      - {{id: "{OLLAMA}", label: qwen}}
      - {{id: "{PLAIN}"}}
      - {{id: "{VLLM}", label: qwen}}
    load: {{concurrency: [1, 2], requests: 3, warmup: 1}}
"""


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Campaign, Any]]:
    """One run for the module: Ollama and vLLM (stand-ins Jarvis starts) sharing a label, and a model without one."""
    root = tmp_path_factory.mktemp("labels")
    with module_campaign(root) as campaign:
        campaign.ollama_model("qwen2.5:0.5b")
        campaign.ollama_model("smollm2:135m")
        campaign.hf_model("Org/Good")
        campaign.config(vllm_models={"Org/Good": ["--token-delay", "0.001"]})
        campaign.setups(RUN_SETUPS)
        result = campaign.run("run", "--output", "out")
        assert result.exit_code == 0, result.output
        yield campaign, result


def test_a_run_writes_the_label_on_every_record_of_a_labelled_model_and_nowhere_else(labelled_run) -> None:
    campaign, result = labelled_run
    written = records(campaign.root / "out" / "results.jsonl")
    per_model: dict[str, set[str]] = {}
    for record in written:
        if "model" in record:
            assert ("label" in record) == (record["model"] != PLAIN), record
            if "label" in record:
                assert record["label"] == "qwen"
            per_model.setdefault(record["model"], set()).add(record["type"])
    kinds = {"warmup", "sample", "load_sample", "load_level", "load_capacity"}
    assert per_model[OLLAMA] == per_model[VLLM] == per_model[PLAIN] == kinds


def test_the_console_summary_shows_the_labelled_models_side_by_side(labelled_run) -> None:
    campaign, result = labelled_run
    out = result.output
    assert "Side by side: qwen (×: the ratio to the first model of the row)" in out, out
    side = out[out.index("Side by side: qwen"):]
    assert re.search(r"capital\s+qwen \(ollama\)\s+ok", side) and re.search(r"\n\s+qwen \(vllm\)\s+ok\s+\S+ ×\d", side)
    assert "smollm2" not in side, "a model without a label is not compared"


def test_the_summary_table_itself_puts_load_levels_side_by_side_only_with_the_results_file(labelled_run) -> None:
    campaign, _ = labelled_run
    results = campaign.root / "out" / "results.jsonl"
    rows = summarize(read_results(results))
    assert "in flight" not in summary_table(rows) and "Side by side: qwen" in summary_table(rows)
    assert "2 in flight" in summary_table(rows, results)


def test_the_workbook_compares_the_labelled_models_with_ratios(labelled_run) -> None:
    campaign, _ = labelled_run
    book = openpyxl.load_workbook(campaign.root / "out" / "report.xlsx")
    assert book.sheetnames[:3] == ["Summary", "Side by side", "Side by side (load)"]
    summary = {(r["model"], r["test"]): r for r in sheet_rows(book["Summary"])}
    side = sheet_rows(book["Side by side"])
    assert [c.value for c in book["Side by side"][1]] == [c.name for c in SIDE_COLUMNS]
    assert [(r["test"], r["name"], r["model"]) for r in side] == [
        ("capital", "qwen (ollama)", OLLAMA), ("capital", "qwen (vllm)", VLLM),
        ("hello", "qwen (ollama)", OLLAMA), ("hello", "qwen (vllm)", VLLM)]
    for row in side:
        first = summary[(OLLAMA, row["test"])]
        mine = summary[(row["model"], row["test"])]
        assert row["versus"] == "qwen (ollama)" and row["status"] == mine["status"] == "ok"
        for figure in ("ttft_s_p50", "e2e_s_p50", "decode_tps_p50", "output_tokens_mean"):
            assert row[figure] == pytest.approx(mine[figure])
            assert row[f"{figure}_ratio"] == pytest.approx(mine[figure] / first[figure])
        assert row["pass_rate"] == pytest.approx(mine["ok"] / (mine["ok"] + mine["failed"] + mine["error"]))
    assert all(r["ttft_s_p50_ratio"] == pytest.approx(1.0) for r in side if r["model"] == OLLAMA)

    load = sheet_rows(book["Side by side (load)"])
    assert [c.value for c in book["Side by side (load)"][1]] == [c.name for c in SIDE_LOAD_COLUMNS]
    assert [(r["concurrency"], r["name"]) for r in load] == [(1, "qwen (ollama)"), (1, "qwen (vllm)"),
                                                             (2, "qwen (ollama)"), (2, "qwen (vllm)")]
    levels = {(r["model"], r["concurrency"]): r for r in sheet_rows(book["Load"]) if r["model"]}
    for row in load:
        mine, first = levels[(row["model"], row["concurrency"])], levels[(OLLAMA, row["concurrency"])]
        assert row["output_tps"] == pytest.approx(mine["output_tps"])
        assert row["output_tps_ratio"] == pytest.approx(mine["output_tps"] / first["output_tps"])
        assert row["ttft_p99_ratio"] == pytest.approx(mine["ttft_p99"] / first["ttft_p99"])

    defined = {(r[0], r[1]) for r in book["Definitions"].iter_rows(values_only=True) if r and r[0]}
    assert ("Side by side", "ttft_s_p50_ratio") in defined and ("Side by side (load)", "output_tps_ratio") in defined
    assert ("Side by side", "label") in defined


def test_the_load_charts_have_one_series_per_model_with_the_labelled_ones_adjacent(labelled_run) -> None:
    campaign, _ = labelled_run
    charts = chart_series(campaign.root / "out" / "report.xlsx")
    assert len(charts) == 2, "output tokens/s and TTFT p99 against concurrency"
    for titles in charts:
        # rows are sorted by model (ol_qwen, ol_smollm, vllm); the label's models sit together at its first one's place
        assert titles == ["qwen (ollama)", "qwen (vllm)", f"{PLAIN} (engines)"], titles


# --- the same from crafted results: across setups, same engine, resumed levels ----------------------------------------


def sample(setup: str, model: str, label: str | None, test: str, rep: int, ttft: float, status: str = "ok",
           **extra: Any) -> dict[str, Any]:
    record = {"type": "sample", "setup": setup, "model": model, "engine": model.split("_")[0].split(":")[0],
              "test": test, "repetition": rep, "cold": False, "status": status, "reason": "", "stream": True,
              "engine_model": "m", "ttft_s": ttft, "e2e_s": ttft * 4, "decode_tps": 1 / ttft,
              "output_tokens": 10, "time": "2024-06-10T10:00:05+00:00", **extra}
    if label is not None:
        record["label"] = label
    return record


def level(setup: str, model: str, label: str | None, concurrency: int, tps: float | None,
          status: str | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "load_level", "setup": setup, "model": model,
                              "engine": model.split("_")[0].split(":")[0], "concurrency": concurrency, "rate": None}
    if status:
        record.update(status=status, reason="not present")
    else:
        record.update(requests_ok=4, requests_error=0, output_tps=tps, request_rate=tps / 10,
                      ttft_s={"p50": 1 / tps, "p90": 1 / tps, "p99": 2 / tps}, itl_s={"p50": 0.01},
                      e2e_s={"p99": 3 / tps}, client_cpu=0.1, window="steady")
    if label is not None:
        record["label"] = label
    return record


def write(path: Path, items: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    return path


CRAFTED = [
    # setup "ol" runs Ollama, setup "vl" runs vLLM: one label joins them across setups
    sample("ol", "ol_q4", "q", "t1", 1, 0.2), sample("ol", "ol_q4", "q", "t1", 2, 0.4),
    sample("ol", "ol_q8", "q", "t1", 1, 0.5, status="failed", reason="no"),
    sample("ol", "ol_other", None, "t1", 1, 9.0),
    sample("vl", "vllm:q", "q", "t1", 1, 0.1), sample("vl", "vllm:q", "q", "t1", 2, 0.15, status="error"),
    sample("vl", "vllm:q", "q", "t2", 1, 0.1),  # only one model of the label ran t2: nothing to compare
    sample("vl", "vllm:alone", "solo", "t1", 1, 0.1),
    level("ol", "ol_q4", "q", 1, 100.0), level("ol", "ol_q4", "q", 4, 300.0),
    level("vl", "vllm:q", "q", 1, 150.0), level("vl", "vllm:q", "q", 4, None, status="missing"),
    level("vl", "vllm:q", "q", 4, 600.0),  # measured after --resume: it wins over the missing one
    level("ol", "ol_other", None, 1, 50.0), level("p", "p_x", None, 1, 70.0),
]


def test_label_pairs_join_setups_name_same_engine_models_apart_and_skip_lone_tests() -> None:
    (pair,) = label_pairs(CRAFTED)
    assert pair.label == "q"
    assert [m.name for m in pair.members] == ["q (ol_q4)", "q (ol_q8)", "q (vllm:q)"], \
        "two Ollama models: the engine does not tell them apart, the model ID does"
    (t1,) = pair.tests
    assert [s.member.model for s in t1.sides] == ["ol_q4", "ol_q8", "vllm:q"] and t1.versus.model == "ol_q4"
    first, q8, vllm = t1.sides
    assert first.values["ttft_s_p50"] == pytest.approx(0.3) and first.ratios["ttft_s_p50"] == pytest.approx(1.0)
    assert q8.status == "failed" and q8.values["pass_rate"] == 0 and q8.ratios["pass_rate"] == 0
    assert vllm.status == "error" and vllm.values["ttft_s_p50"] == pytest.approx(0.1)
    assert vllm.ratios["ttft_s_p50"] == pytest.approx(0.1 / 0.3) and vllm.values["pass_rate"] == 0.5
    assert vllm.ratios["decode_tps_p50"] == pytest.approx(10 / ((5 + 2.5) / 2))
    one, four = pair.levels
    assert (one.concurrency, [s.member.model for s in one.sides]) == (1, ["ol_q4", "vllm:q"])
    assert one.sides[1].ratios["output_tps"] == pytest.approx(1.5)
    assert four.sides[1].status == "ok" and four.sides[1].ratios["output_tps"] == pytest.approx(2.0)


def test_pairs_from_summary_rows_equal_label_pairs_from_records() -> None:
    rows = summarize(CRAFTED)
    levels = [r for r in CRAFTED if r["type"] == "load_level"]
    assert pairs_from(rows, levels) == label_pairs(CRAFTED)
    assert pairs_from([r for r in rows if r.label is None], []) == []


def test_a_workbook_without_labels_has_no_side_by_side_sheet(tmp_path: Path) -> None:
    unlabelled = [{k: v for k, v in r.items() if k != "label"} for r in CRAFTED]
    book = openpyxl.load_workbook(write_report(write(tmp_path / "r.jsonl", unlabelled), tmp_path / "r.xlsx"))
    assert not [s for s in book.sheetnames if s.startswith("Side by side")]
    assert "Side by side" not in summary_table(summarize(unlabelled))


def test_crafted_workbook_orders_and_names_chart_series_by_label(tmp_path: Path) -> None:
    out = write_report(write(tmp_path / "r.jsonl", CRAFTED), tmp_path / "r.xlsx")
    book = openpyxl.load_workbook(out)
    side = sheet_rows(book["Side by side"])
    assert [(r["name"], r["setup"], r["versus"]) for r in side] == [
        ("q (ol_q4)", "ol", "q (ol_q4)"), ("q (ol_q8)", "ol", "q (ol_q4)"), ("q (vllm:q)", "vl", "q (ol_q4)")]
    assert side[2]["status"] == "error" and side[1]["pass_rate"] == 0
    series = chart_series(out)[0]
    # Load rows are sorted by setup and model (ol/ol_other, ol/ol_q4, p/p_x, vl/vllm:q): the chart puts the label's
    # two models together, at the place of its first one
    assert series == ["ol_other (ol)", "q (ol_q4)", "q (vllm:q)", "p_x (p)"], series


def test_a_label_on_one_model_only_compares_nothing(tmp_path: Path) -> None:
    only = [r for r in CRAFTED if r.get("label") == "solo"]
    assert label_pairs(only) == []


# --- helpers ----------------------------------------------------------------------------------------------------------


def sheet_rows(ws) -> list[dict[str, Any]]:
    rows = list(ws.iter_rows(values_only=True))
    header = rows[0]
    out = []
    for row in rows[1:]:
        if not any(v is not None for v in row):
            break  # the capacity lines below the Load table
        out.append(dict(zip(header, row)))
    return out


def chart_series(workbook: Path) -> list[list[str]]:
    """The series titles of each scatter chart (the Load sheet's), in order; openpyxl does not read charts back."""
    from xml.etree import ElementTree

    c = "{http://schemas.openxmlformats.org/drawingml/2006/chart}"
    with zipfile.ZipFile(workbook) as zf:
        names = sorted((n for n in zf.namelist() if re.match(r"xl/charts/chart\d+\.xml$", n)),
                       key=lambda n: int(re.findall(r"\d+", n)[-1]))
        roots = [ElementTree.fromstring(zf.read(n)) for n in names]
    found = [[ser.findtext(f"{c}tx/{c}v") for ser in chart.iter(f"{c}ser")]
             for root in roots for chart in root.iter(f"{c}scatterChart")]
    assert found, "the Load sheet has charts"
    return found


def test_models_of_a_label_without_a_test_in_common_are_named_in_the_console() -> None:
    apart = [sample("ol", "ol_a", "apart", "t1", 1, 0.2), sample("vl", "vllm:a", "apart", "t2", 1, 0.1)]
    (pair,) = label_pairs(apart)
    assert pair.tests == () and pair.levels == ()
    assert "Side by side: apart: apart (ol), apart (vllm) have no test or load level in common" in \
        summary_table(summarize(apart))
