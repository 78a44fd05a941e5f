"""Load levels through `jarvis run` and `jarvis bench`, over an engine Jarvis starts itself (vLLM's process runtime
running the vLLM-like stand-in): the same lifecycle as tests, every request a record, the Load sheet, MISSING rows,
the JSON of `jarvis bench`, and Ctrl-C in the middle of a level."""

from __future__ import annotations

import json
import signal

import openpyxl

from jarvis_core.state import StateStore

from tests.run.conftest import Campaign, marked_processes, records, stop_process, wait_for

MODEL = "vllm:Org/Good"
TESTS = """
defaults: {repetitions: 1, warmup: 1, max_tokens: 16, timeout: 20}
tests:
  - id: capital
    prompt: What is the capital of France?
    check: {contains: Paris}
"""


def prepare(campaign: Campaign, load: str, models: str = f"['{MODEL}']", token_delay: float = 0.002) -> None:
    campaign.hf_model("Org/Good")
    campaign.config(vllm_models={"Org/Good": ["--token-delay", str(token_delay)]})
    campaign.setups(TESTS + f"setups:\n  cap:\n    models: {models}\n    load: {load}\n")


def of_type(out, kind: str) -> list[dict]:
    return [r for r in records(out / "results.jsonl") if r["type"] == kind]


def test_load_levels_run_after_the_tests_on_the_engine_jarvis_started(campaign: Campaign,
                                                                      nothing_left_running: str) -> None:
    prepare(campaign, "{concurrency: [1, 3], requests: 6, warmup: 1, slo: {ttft: 5s}}")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    out = campaign.root / "out"
    kinds = [r["type"] for r in records(out / "results.jsonl")]
    assert kinds.index("sample") < kinds.index("load_sample"), "the tests run first, then the load levels"
    levels = of_type(out, "load_level")
    assert [(lv["concurrency"], lv["requests_ok"], lv["requests_error"]) for lv in levels] == [(1, 6, 0), (3, 6, 0)]
    assert all(lv["output_tps"] > 0 and lv["ttft_s"]["p50"] > 0 and lv["slo_share"] == 1.0 for lv in levels)
    by_level = [(s["level"]["concurrency"], s["warmup"]) for s in of_type(out, "load_sample")]
    # warm-up: at least the ramp-up (one request alone, then each user's first), so 2 at one in flight, 4 at three
    assert (by_level.count((1, True)), by_level.count((3, True))) == (2, 4)
    assert by_level.count((1, False)) == by_level.count((3, False)) == 6
    assert "load 3 in flight: 6 ok, 0 errors" in result.output
    assert "capacity: 3 users at once with 90% of requests within TTFT ≤ 5 s" in result.output
    assert "stopped vllm: vllm serve (pid" in result.output, "torn down like any run"

    sheet = openpyxl.load_workbook(out / "report.xlsx")["Load"]
    rows = list(sheet.iter_rows(values_only=True))
    header = rows[0]
    assert [(r[header.index("concurrency")], r[header.index("status")]) for r in rows[1:3]] == [(1, "ok"), (3, "ok")]
    definitions = [r[1] for r in openpyxl.load_workbook(out / "report.xlsx")["Definitions"].iter_rows(values_only=True)]
    assert "output_tps" in definitions and "measured window" in definitions


def test_a_missing_model_gets_a_load_row_per_level(campaign: Campaign) -> None:
    prepare(campaign, "{concurrency: [1, 4], requests: 4}", models="['vllm:Org/Absent']")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    assert "MISSING" in result.output
    levels = of_type(campaign.root / "out", "load_level")
    assert [(lv["concurrency"], lv["status"]) for lv in levels] == [(1, "missing"), (4, "missing")]
    assert of_type(campaign.root / "out", "load_sample") == []
    sheet = openpyxl.load_workbook(campaign.root / "out" / "report.xlsx")["Load"]
    statuses = [row[5] for row in sheet.iter_rows(min_row=2, max_row=3, values_only=True)]
    assert statuses == ["missing", "missing"]


def test_bench_prints_one_json_object(campaign: Campaign) -> None:
    campaign.hf_model("Org/Good")
    campaign.config(vllm_models={"Org/Good": ["--token-delay", "0.002"]})
    result = campaign.run("bench", MODEL, "--concurrency", "1,2", "--requests", "4", "--output", "b",
                          "--slo", "ttft=5s,itl=1s", "--json")
    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert (found["model"], found["engine"]) == (MODEL, "vllm")
    assert [(lv["concurrency"], lv["rate"], lv["requests_ok"]) for lv in found["levels"]] == [(1, None, 4), (2, None, 4)]
    level = found["levels"][0]
    assert set(level["ttft_s"]) == set(level["itl_s"]) == set(level["e2e_s"]) == {"p50", "p90", "p99"}
    assert isinstance(level["output_tps"], float) and isinstance(level["client_cpu"], float)
    assert found["capacity"]["concurrency"] == 2 and found["capacity"]["slo"] == {"ttft": 5.0, "itl": 1.0}
    assert (campaign.root / "b" / "report.xlsx").is_file()


def test_bench_of_a_missing_model_says_so_and_exits_1(campaign: Campaign) -> None:
    result = campaign.run("bench", "vllm:Org/Absent", "--concurrency", "1", "--requests", "2")
    assert result.exit_code == 1
    assert "MISSING: " in result.output and "jarvis bench vllm:Org/Absent --force-download" in result.output


def test_bad_bench_options_are_one_line(campaign: Campaign) -> None:
    for args, fragment in ((["--concurrency", "0"], "--concurrency: expected a whole number from 1 to 1024"),
                           (["--rate", "x"], "--rate takes numbers separated by commas"),
                           (["--slo", "ttft"], "--slo takes name=duration pairs"),
                           (["--slo", "ttft=soon"], "--ttft: expected a duration such as 500ms")):
        result = campaign.run("bench", MODEL, *args)
        assert result.exit_code == 2 and fragment in result.output, (args, result.output)
        assert len(result.output.strip().splitlines()) == 1


def test_ctrl_c_in_a_level_cancels_what_is_in_flight_and_keeps_what_was_measured(campaign: Campaign,
                                                                                  nothing_left_running: str) -> None:
    # Answers of 16 tokens 0.2 s apart (over 3 s each) with 4 in flight: the interrupt lands with requests in flight.
    prepare(campaign, "{concurrency: [4], requests: 40, warmup: 0}", token_delay=0.2)
    out = campaign.root / "out"
    proc = campaign.spawn("run", "--output", "out")
    try:
        # the ramp-up's 5 are warm-up (one alone, then each user's first): wait for measured ones too
        wait_for(lambda: (out / "results.jsonl").is_file() and len(of_type(out, "load_sample")) >= 7
                 or proc.poll() is not None, 60, "the first load samples")
        assert proc.poll() is None, campaign.output()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=20)  # in flight for seconds more: cancelled, not waited for
    finally:
        stop_process(proc)
    output = campaign.output()
    assert code == 130, output
    assert "interrupted; the requests in flight were cancelled" in output
    kept = of_type(out, "load_sample")
    assert len(kept) >= 7 and all(s["status"] == "ok" for s in kept), "cancelled requests are not recorded"
    # The level keeps its row, from what was answered before the interrupt; --resume measures it again.
    [level] = of_type(out, "load_level")
    measured = [s for s in kept if not s["warmup"]]
    assert (level["status"], level["requests_ok"], level["requests_error"]) == ("interrupted", len(measured), 0)
    assert level["reason"].startswith(f"Ctrl-C after {len(kept)} answers")
    sheet = openpyxl.load_workbook(out / "report.xlsx")["Load"]
    header = [c.value for c in sheet[1]]
    assert [row[header.index("status")] for row in sheet.iter_rows(min_row=2, max_row=2, values_only=True)] == \
        ["interrupted"]
    assert records(out / "results.jsonl")[-1] == {**records(out / "results.jsonl")[-1], "type": "end",
                                                   "interrupted": True}
    assert StateStore(campaign.state_dir).records() == [], "the engine was stopped"
    deadline_left = [p for p in marked_processes(nothing_left_running)]
    assert deadline_left == [] or all(not p.is_running() for p in deadline_left)
