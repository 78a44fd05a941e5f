"""`jarvis compare` over results files written the way a run writes them (`ResultsWriter`, `Sample.to_record`,
`LevelSummary.to_json`): a clear regression is worse and exits 1, noise is same, a real change inside the threshold
is same, cells in one run only are listed, unreadable lines are named, the environment comes first, load levels are
compared, and the JSON has the documented shape."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from jarvis_core import compare as cmp
from jarvis_core.cli import cli
from jarvis_core.load import Level, LevelSummary
from jarvis_core.results import RESULTS_SCHEMA, ResultsWriter, Sample, Status

MODEL = "lc_smollm2-135m#stream"
OTHER = "lc_qwen-0.5b#stream"


def run_record(**changes: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "type": "run", "schema": RESULTS_SCHEMA, "run_id": f"{random.getrandbits(48):012x}",
        "started_at": "2026-05-01T09:00:00+02:00", "jarvis_version": "0.2.0",
        "plugins": {"llamacpp": "jarvis-llamacpp 0.2.0"}, "python": "3.11.7", "os": "Linux-6.8.0-x86_64",
        "host": "lab1", "cpu": "AMD EPYC 9454", "gpu": "NVIDIA H100 (81559 MiB)", "setups_file": "test_setups.yaml",
        "config_file": "(defaults)", "force_download": False, "argv": "run --output results/a",
        "defaults": {"repetitions": 20, "warmup": 1, "timeout": 300.0, "max_tokens": 64, "temperature": 0.0,
                     "seed": 1},
        "selected_setups": ["smoke"], "repeat": None, "resumed": False}
    record.update(changes)
    return record


def engine_record(version: str = "0.3.8") -> dict[str, Any]:
    return {"type": "engine", "engine": "llamacpp", "version": version, "address": "http://127.0.0.1:41665",
            "started_by_jarvis": True}


def timed(model: str, test: str, rep: int, ttft: float, decode: float, *, n: int = 32, status: Status = Status.OK,
          cold: bool = False, setup: str = "smoke") -> dict[str, Any]:
    itl = 1 / decode
    e2e = ttft + itl * (n - 1)
    figures = {"ttfb_s": ttft * 0.9, "ttft_s": ttft, "e2e_s": e2e, "output_tokens": n, "token_source": "server",
               "prompt_tokens": 20, "itl_s": itl, "decode_tps": decode, "overall_tps": n / e2e,
               "server_decode_tps": None, "load_s": None}
    return Sample(setup=setup, model=model, engine="llamacpp", test=test, repetition=rep, status=status,
                  reason="" if status is Status.OK else "answer does not contain Paris", cold=cold,
                  engine_model="smollm2-135m", stream=True, answer="Paris", finish_reason="stop", figures=figures,
                  server={}).to_record()


def not_run(model: str, test: str, status: Status, reason: str, setup: str = "smoke") -> dict[str, Any]:
    return Sample(setup=setup, model=model, engine="llamacpp", test=test, repetition=None, status=status,
                  reason=reason).to_record()


def cell(model: str, test: str, *, seed: int, reps: int = 20, ttft: float = 0.05, decode: float = 80.0,
         noise: float = 0.05, failed: int = 0) -> list[dict[str, Any]]:
    """`reps` warm samples around `ttft` and `decode`, each off by a seeded lognormal of sd `noise`."""
    rng = random.Random(seed)
    return [timed(model, test, rep, ttft * rng.lognormvariate(0, noise), decode * rng.lognormvariate(0, noise),
                  status=Status.FAILED if rep <= failed else Status.OK) for rep in range(1, reps + 1)]


def write(path: Path, *records: dict[str, Any] | list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = ResultsWriter(path)
    for item in records:
        for record in item if isinstance(item, list) else [item]:
            writer.write(record)
    writer.write({"type": "end", "ended_at": "2026-05-01T09:10:00+02:00", "interrupted": False})
    writer.close()
    return path


def invoke(*args: str) -> Any:
    return CliRunner().invoke(cli, ["compare", *map(str, args)], catch_exceptions=False)


def strict_json(text: str) -> Any:
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def figure(found: cmp.Comparison, test: str, key: str, model: str = MODEL) -> cmp.FigureChange:
    c = next(c for c in found.cells if c.kind == "test" and c.test == test and c.model == model)
    return next(f for f in c.figures if f.figure.key == key)


# --- verdicts --------------------------------------------------------------------------------------------------------


def test_a_clear_30_percent_regression_is_worse_and_exits_1(tmp_path: Path) -> None:
    a = write(tmp_path / "a" / "results.jsonl", run_record(), engine_record(), cell(MODEL, "capital", seed=1),
              cell(MODEL, "json", seed=2))
    b = write(tmp_path / "b" / "results.jsonl", run_record(), engine_record(),
              cell(MODEL, "capital", seed=3, ttft=0.05 * 1.3, decode=80 / 1.3), cell(MODEL, "json", seed=4))
    found = cmp.compare(a, b)
    ttft = figure(found, "capital", "ttft_s")
    assert ttft.verdict == "worse" and ttft.change == pytest.approx(0.3, abs=0.06)
    assert ttft.interval is not None and ttft.interval[0] > 0.05
    assert figure(found, "capital", "decode_tps").verdict == "worse"
    assert figure(found, "capital", "e2e_s").verdict == "worse"
    assert figure(found, "capital", "overall_tps").verdict == "worse"
    assert {f.verdict for c in found.cells if c.test == "json" for f in c.figures} == {"same"}

    result = invoke(tmp_path / "a", tmp_path / "b")  # folders work as well as files
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("Changes")) + 1
    table = lines[start:lines.index("", start)]
    assert table[0].split()[:4] == ["VERDICT", "SETUP", "MODEL", "TEST/LEVEL"]
    assert [row.split()[4] for row in table[1:]] == ["TTFT", "E2E", "decode", "output"], result.output
    assert all(row.split()[:4] == ["worse", "smoke", MODEL, "capital"] for row in table[1:])
    assert "4 worse, 0 better, 4 same over 8 figures in 2 cells" in result.output


def test_an_improvement_is_better_and_exits_0(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2, ttft=0.05 / 1.5, decode=80 * 1.5))
    result = invoke(a, b)
    assert result.exit_code == 0, result.output
    assert {f.verdict for f in cmp.compare(a, b).cells[0].figures} == {"better"}


def test_noise_only_differences_are_same(tmp_path: Path) -> None:
    """Two runs drawn from the same distributions (5 % spread per sample): every figure is the same."""
    tests = ["capital", "json", "week", "story", "math"]
    a = write(tmp_path / "a.jsonl", run_record(), *[cell(m, t, seed=i) for i, (m, t) in
                                                     enumerate((m, t) for m in (MODEL, OTHER) for t in tests)])
    b = write(tmp_path / "b.jsonl", run_record(), *[cell(m, t, seed=100 + i) for i, (m, t) in
                                                     enumerate((m, t) for m in (MODEL, OTHER) for t in tests)])
    found = cmp.compare(a, b)
    verdicts = [f.verdict for c in found.cells for f in c.figures]
    assert len(verdicts) == 10 * 4 and set(verdicts) == {"same"}
    changes = [abs(f.change) for c in found.cells for f in c.figures]
    assert max(changes) > 0.005, "the two runs do differ, by noise"
    result = invoke(a, b)
    assert result.exit_code == 0
    assert "No figure changed beyond the noise and the threshold." in result.output
    assert "0 worse, 0 better, 40 same over 40 figures in 10 cells" in result.output


def test_a_real_change_inside_the_threshold_is_same_and_a_lower_threshold_calls_it(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1, noise=0.002))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2, noise=0.002, ttft=0.05 * 1.03))
    ttft = figure(cmp.compare(a, b), "capital", "ttft_s")
    assert ttft.interval is not None and ttft.interval[0] > 0, "the 3 % change is beyond the noise"
    assert ttft.verdict == "same" and ttft.note == cmp.WITHIN_THRESHOLD
    assert invoke(a, b).exit_code == 0
    assert figure(cmp.compare(a, b, threshold=0.01), "capital", "ttft_s").verdict == "worse"
    strict = invoke(a, b, "--threshold", "1%")
    assert strict.exit_code == 1 and "threshold 1%" in strict.output
    assert invoke(a, b, "--threshold", "2").exit_code == 1, "a bare number is a percentage too"


def test_a_large_change_within_the_noise_is_same(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1, reps=4, noise=0.6))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2, reps=4, noise=0.6, ttft=0.065))
    ttft = figure(cmp.compare(a, b), "capital", "ttft_s")
    assert abs(ttft.change) > 0.05 and ttft.verdict == "same" and ttft.note == cmp.WITHIN_NOISE


def test_too_few_samples_is_never_a_confident_call(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1, reps=2))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2, reps=2, ttft=0.5, decode=8))
    found = cmp.compare(a, b)
    ttft = figure(found, "capital", "ttft_s")
    assert ttft.change == pytest.approx(9, rel=0.2) and ttft.verdict == "same" and ttft.note == "too few samples"
    assert ttft.interval is None
    result = invoke(a, b)
    assert result.exit_code == 0 and "(4 with too few samples)" in result.output


def test_the_cold_sample_and_errored_samples_stay_out(tmp_path: Path) -> None:
    """A cold sample 10 times slower in B is not a regression: it is kept out of the statistics."""
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1))
    b = write(tmp_path / "b.jsonl", run_record(), timed(MODEL, "capital", 0, 0.5, 8, cold=True),
              cell(MODEL, "capital", seed=2))
    ttft = figure(cmp.compare(a, b), "capital", "ttft_s")
    assert ttft.verdict == "same" and ttft.n_b == 20


def test_pass_rate_is_compared_with_newcombes_interval(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1, failed=1))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2, failed=12))
    found = cmp.compare(a, b)
    rate = figure(found, "capital", "pass_rate")
    assert (rate.a, rate.b) == (pytest.approx(19 / 20), pytest.approx(8 / 20))
    assert rate.change == pytest.approx(-0.55) and rate.verdict == "worse"
    assert rate.interval == pytest.approx(cmp.newcombe(19, 20, 8, 20))
    assert figure(found, "capital", "ttft_s").verdict == "same", "failed answers' timings still count"
    result = invoke(a, b)
    assert result.exit_code == 1 and "-55.0 pts" in result.output
    # one more failure in 20 is within the noise; every answer passing on both sides gives no pass-rate row
    c = write(tmp_path / "c.jsonl", run_record(), cell(MODEL, "capital", seed=3, failed=2))
    assert figure(cmp.compare(a, c), "capital", "pass_rate").verdict == "same"
    clean = write(tmp_path / "clean.jsonl", run_record(), cell(MODEL, "capital", seed=4))
    assert [f.figure.key for f in cmp.compare(clean, clean).cells[0].figures] == [
        "ttft_s", "e2e_s", "decode_tps", "overall_tps"]


def test_newcombes_interval_matches_his_published_example() -> None:
    """Newcombe (1998), Table II, example (a): 56/70 against 48/80, method 10: 0.0524 to 0.3339."""
    low, high = cmp.newcombe(48, 80, 56, 70)
    assert (low, high) == (pytest.approx(0.0524, abs=1e-4), pytest.approx(0.3339, abs=1e-4))


def test_resampled_medians_follow_the_bootstrap_distribution() -> None:
    """The order-statistic draws give each resample median the probability resampling with replacement gives it:
    for three values, 7/27, 13/27, 7/27."""
    values = [1.0, 2.0, 3.0]
    draws = [m for side in range(20) for m in cmp.bootstrap_medians(values, f"check{side}")]
    shares = [draws.count(v) / len(draws) for v in values]
    assert shares == [pytest.approx(7 / 27, abs=0.01), pytest.approx(13 / 27, abs=0.01),
                      pytest.approx(7 / 27, abs=0.01)]
    # four values (even: the mean of the two middle ones): P(median = 1.5) = P(two draws of 1 or 2, ...) by brute force
    four = [1.0, 2.0, 3.0, 4.0]
    exact: dict[float, int] = {}
    for i in range(4):
        for j in range(4):
            for k in range(4):
                for m in range(4):
                    pick = sorted(four[x] for x in (i, j, k, m))
                    exact[(pick[1] + pick[2]) / 2] = exact.get((pick[1] + pick[2]) / 2, 0) + 1
    draws = [m for side in range(20) for m in cmp.bootstrap_medians(four, f"check{side}")]
    for value, count in exact.items():
        assert draws.count(value) / len(draws) == pytest.approx(count / 256, abs=0.01)


def test_the_same_files_give_the_same_answer(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1, reps=7))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2, reps=9))
    first = invoke(a, b, "--json").output
    cmp._median_draws.cache_clear()
    assert invoke(a, b, "--json").output == first


# --- cells that did not run, or ran on one side only -----------------------------------------------------------------


def test_cells_in_one_run_only_are_listed(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1), cell(MODEL, "json", seed=2))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=3), cell(OTHER, "capital", seed=4))
    found = cmp.compare(a, b)
    by_verdict = {(c.model, c.test): c.verdict for c in found.cells}
    assert by_verdict == {(MODEL, "capital"): "same", (MODEL, "json"): "only in A", (OTHER, "capital"): "only in B"}
    result = invoke(a, b)
    assert result.exit_code == 0, "a cell in one run only is listed, not a regression"
    rows = [line.split() for line in result.output.splitlines()]
    assert ["only", "in", "A", "smoke", MODEL, "json", "status", "ok", "-"] == rows[[r[:3] for r in rows].index(
        ["only", "in", "A"])][:9]
    assert any(r[:6] == ["only", "in", "B", "smoke", OTHER, "capital"] for r in rows)
    assert "1 only in A, 1 only in B" in result.output


def test_missing_and_errored_cells_are_reported_never_compared_as_numbers(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1), cell(MODEL, "json", seed=2),
              [not_run(OTHER, "capital", Status.MISSING, "not-downloaded.gguf is not in models_dir")],
              cell(MODEL, "week", seed=5))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=3),
              [not_run(MODEL, "json", Status.MISSING, "not-downloaded.gguf is not in models_dir")],
              [not_run(OTHER, "capital", Status.MISSING, "not-downloaded.gguf is not in models_dir")],
              cell(MODEL, "week", seed=6)[:10] + [timed(MODEL, "week", 11, 0.05, 80, status=Status.ERROR)])
    found = cmp.compare(a, b)
    cells = {(c.model, c.test): c for c in found.cells}
    assert cells[(MODEL, "json")].verdict == "not compared" and cells[(MODEL, "json")].figures == []
    assert cells[(MODEL, "json")].note.startswith("MISSING in B: not-downloaded.gguf")
    assert cells[(OTHER, "capital")].verdict == "not compared"
    assert cells[(OTHER, "capital")].note.startswith("MISSING in A") and "MISSING in B" in cells[
        (OTHER, "capital")].note
    week = cells[(MODEL, "week")]
    assert (week.status_a, week.status_b, week.verdict, week.figures) == ("ok", "error", "worse", [])
    assert week.note.startswith("error in B: 1 of 11 error")
    result = invoke(a, b)
    assert result.exit_code == 1, "a cell that ran and now errors got worse"
    row = next(line for line in result.output.splitlines() if " week " in line)
    assert row.split()[:7] == ["worse", "smoke", MODEL, "week", "status", "ok", "error"]
    assert any(line.split()[:2] == ["not", "compared"] and "MISSING" in line for line in result.output.splitlines())
    # the other way round it got better
    assert next(c for c in cmp.compare(b, a).cells if c.test == "week").verdict == "better"


# --- input -------------------------------------------------------------------------------------------------------------


def test_unreadable_lines_are_named_and_the_rest_compared(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2))
    lines = b.read_text(encoding="utf-8").splitlines(keepends=True)
    lines.insert(3, '{"type": "sample", "setup": "smoke", "model": "x", "test": "capital", "status": "weird"}\n')
    b.write_text("".join(lines) + '{"type": "sample", "setup": "sm', encoding="utf-8")  # and a torn last line
    result = invoke(a, b)
    assert result.exit_code == 0
    assert result.stderr.strip() == (f"Warning: skipped 2 unreadable lines of {b}: 4 (unknown status), "
                                     f"{len(lines) + 1} (not JSON (torn or edited))")
    assert "capital" not in result.stderr
    data = strict_json(invoke(a, b, "--json").stdout)
    assert data["b"]["skipped_lines"] == [{"line": 4, "why": "unknown status"},
                                          {"line": len(lines) + 1, "why": "not JSON (torn or edited)"}]
    assert data["a"]["skipped_lines"] == []


def file_holding(content: bytes):
    def make(folder: Path) -> Path:
        (folder / "given.jsonl").write_bytes(content)
        return folder / "given.jsonl"
    return make


@pytest.mark.parametrize("make, fragment", [
    (lambda d: d / "nowhere", "no results at"),
    (lambda d: d, "holds no results.jsonl"),
    (file_holding(b""), "holds no readable results"),
    (file_holding(b"\xff\xfe\n[1]\n"), "holds no readable results (skipped 2 unreadable lines"),
])
def test_inputs_that_are_not_results_are_one_line_and_exit_2(tmp_path: Path, make, fragment: str) -> None:
    good = write(tmp_path / "good.jsonl", run_record(), cell(MODEL, "capital", seed=1))
    folder = tmp_path / "other"
    folder.mkdir()
    result = invoke(good, make(folder))
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1 and fragment in result.output
    assert "Traceback" not in result.output


@pytest.mark.parametrize("value", ["abc", "-5%", "nan", "5%%"])
def test_a_bad_threshold_is_a_usage_error(tmp_path: Path, value: str) -> None:
    good = write(tmp_path / "good.jsonl", run_record(), cell(MODEL, "capital", seed=1))
    result = invoke(good, good, "--threshold", value)
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1
    assert "is not a percentage" in result.output and "jarvis compare --help" in result.output


def test_a_resumed_run_is_read_as_one(tmp_path: Path) -> None:
    """`run --resume` appends a second run record and the rest of the samples; an interrupted load level's requests
    belong to no level, and the level measured again after the resume has only its own."""
    samples = cell(MODEL, "capital", seed=1)
    level = Level(concurrency=2)
    resumed = write(tmp_path / "r.jsonl", run_record(argv="run --setup smoke --output out"), samples[:8],
                    load_samples(level, seed=9, ttft=5.0),  # cut short: its level record was never written
                    run_record(resumed=True, argv="run --resume out"), samples[8:],
                    load_samples(level, seed=10), level_record(level, seed=10))
    whole = write(tmp_path / "w.jsonl", run_record(argv="run --setup smoke --output elsewhere"), samples,
                  load_samples(level, seed=11), level_record(level, seed=11))
    found = cmp.compare(whole, resumed)
    assert found.environment == [], "same command line but the folder; the resume's own argv is not compared"
    assert figure(found, "capital", "ttft_s").n_b == 20
    load = next(c for c in found.cells if c.kind == "load")
    ttft = next(f for f in load.figures if f.figure.key == "ttft_s")
    assert ttft.n_b == 16 and ttft.verdict == "same", "the cut-short level's slow requests are not counted"


# --- the environment -------------------------------------------------------------------------------------------------


def test_environment_differences_are_shown_first(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(argv="run --output results/a"), engine_record("0.3.8"),
              cell(MODEL, "capital", seed=1))
    b = write(tmp_path / "b.jsonl",
              run_record(argv="run --output=results/b", jarvis_version="0.3.0", gpu="NVIDIA L40S (46068 MiB)",
                         plugins={"llamacpp": "jarvis-llamacpp 0.3.0"}), engine_record("0.3.9"),
              cell(MODEL, "capital", seed=2, ttft=0.1))
    found = cmp.compare(a, b)
    assert found.environment == [
        ("jarvis_version", "0.2.0", "0.3.0"),
        ("plugins.llamacpp", "jarvis-llamacpp 0.2.0", "jarvis-llamacpp 0.3.0"),
        ("gpu", "NVIDIA H100 (81559 MiB)", "NVIDIA L40S (46068 MiB)"),
        ("engine llamacpp: version", "0.3.8", "0.3.9"),
    ]
    out = invoke(a, b).output
    assert out.index("Environment: what differs") < out.index("Changes") < out.index("worse, ")
    env_rows = out[out.index("Environment"):out.index("Changes")].splitlines()
    assert any(row.split() == ["engine", "llamacpp:", "version", "0.3.8", "0.3.9"] for row in env_rows)
    same = invoke(a, a).output
    assert "Environment: no differences" in same


def test_model_revisions_and_names_are_compared_where_records_carry_them(tmp_path: Path) -> None:
    def with_revision(records: list[dict[str, Any]], revision: str) -> list[dict[str, Any]]:
        return [{**r, "revision": revision} for r in records]

    a = write(tmp_path / "a.jsonl", run_record(),
              {"type": "warmup", "setup": "smoke", "model": MODEL, "engine": "llamacpp", "cold_start_s": 0.4,
               "load_s": None, "detail": "", "revision": "sha256:aaa"}, cell(MODEL, "capital", seed=1),
              cell(OTHER, "capital", seed=2))
    b = write(tmp_path / "b.jsonl", run_record(), with_revision(cell(MODEL, "capital", seed=3), "sha256:bbb"),
              [{**r, "engine_model": "qwen-0.5b-q8"} for r in cell(OTHER, "capital", seed=4)],
              cell("lc_new", "capital", seed=5))
    env = {what: (x, y) for what, x, y in cmp.compare(a, b).environment}
    assert env == {f"model {MODEL}: revision": ("sha256:aaa", "sha256:bbb"),
                   f"model {OTHER}: engine model": ("smollm2-135m", "qwen-0.5b-q8")}, "lc_new is only in B"


# --- load levels -----------------------------------------------------------------------------------------------------


def load_samples(level: Level, *, seed: int, requests: int = 16, ttft: float = 0.2, itl: float = 0.02,
                 tokens: int = 32, noise: float = 0.05, setup: str = "cap", model: str = MODEL) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for index in range(requests + 1):
        t, i = ttft * rng.lognormvariate(0, noise), itl * rng.lognormvariate(0, noise)
        e2e = t + i * (tokens - 1)
        out.append({"type": "load_sample", "setup": setup, "model": model, "engine": "llamacpp",
                    "level": level.to_json(), "index": index, "warmup": index == 0, "scheduled_s": index * 0.1,
                    "t_send_s": index * 0.1, "queue_wait_s": 0.0, "send_lag_s": 0.0, "ttft_s": t,
                    "ttft_sched_s": t, "itl_s": i, "e2e_s": e2e, "e2e_sched_s": e2e, "output_tokens": tokens,
                    "token_source": "server", "finish_reason": "length", "stopped_early": False, "status": "ok",
                    "reason": "", "time": "2026-05-01T09:05:00+02:00"})
    return out


def level_record(level: Level, *, seed: int, requests: int = 16, ttft: float = 0.2, itl: float = 0.02,
                 tokens: int = 32, noise: float = 0.05, slo: dict | None = None, setup: str = "cap",
                 model: str = MODEL) -> dict[str, Any]:
    """The level's record as the runner writes it, its throughput computed from the same requests (Little's law)."""
    samples = [s for s in load_samples(level, seed=seed, requests=requests, ttft=ttft, itl=itl, tokens=tokens,
                                       noise=noise) if not s["warmup"]]
    in_flight = level.concurrency or 1
    output_tps = in_flight * sum(s["output_tokens"] for s in samples) / sum(s["e2e_s"] for s in samples)
    request_rate = in_flight * len(samples) / sum(s["e2e_s"] for s in samples)
    met = sum(1 for s in samples if slo is None or s["ttft_sched_s"] <= slo.get("ttft", math.inf))
    p = {"p50": ttft, "p90": ttft, "p99": ttft}
    summary = LevelSummary(level=level, requests_ok=requests, requests_error=0, output_tps=output_tps,
                           request_rate=request_rate, goodput_rps=request_rate * met / len(samples) if slo else None,
                           slo_share=met / len(samples) if slo else None, ttft_s=p, itl_s=p, e2e_s=p, ttft_sched_s=p,
                           queue_wait_s=p, send_lag_s=p, client_cpu=0.1, window_s=10.0, window="steady")
    return {"type": "load_level", "setup": setup, "model": model, "engine": "llamacpp", **summary.to_json(),
            "wall_s": 11.0, "parallelism": {"setting": "llama.cpp slots", "value": 4, "detail": "",
                                            "adjustable": True},
            "profile": {"concurrency": [4], "rate": [], "slo": slo}, "time": "2026-05-01T09:06:00+02:00"}


def test_load_levels_are_compared(tmp_path: Path) -> None:
    four, rate = Level(concurrency=4), Level(rate=2.0)
    slo = {"ttft": 0.25}
    a = write(tmp_path / "a.jsonl", run_record(),
              load_samples(four, seed=1), level_record(four, seed=1, slo=slo),
              load_samples(rate, seed=2), level_record(rate, seed=2, slo=slo))
    b = write(tmp_path / "b.jsonl", run_record(),
              load_samples(four, seed=3, ttft=0.26, itl=0.026), level_record(four, seed=3, ttft=0.26, itl=0.026, slo=slo),
              load_samples(Level(concurrency=8), seed=4), level_record(Level(concurrency=8), seed=4, slo=slo))
    found = cmp.compare(a, b)
    cells = {(c.concurrency, c.rate): c for c in found.cells if c.kind == "load"}
    assert cells[(None, 2.0)].verdict == "only in A" and cells[(8, None)].verdict == "only in B"
    level = cells[(4, None)]
    verdicts = {f.figure.key: (f.verdict, round(f.change, 2)) for f in level.figures}
    assert verdicts["ttft_s"][0] == "worse" and verdicts["ttft_s"][1] == pytest.approx(0.3, abs=0.05)
    assert verdicts["decode_tps"][0] == "worse" and verdicts["e2e_s"][0] == "worse"
    assert verdicts["output_tps"][0] == "worse" and verdicts["output_tps"][1] == pytest.approx(-0.23, abs=0.03)
    assert verdicts["goodput_rps"][0] == "worse", "fewer requests meet TTFT ≤ 250 ms"
    assert "success_rate" not in verdicts, "no request failed on either side"
    output_tps = next(f for f in level.figures if f.figure.key == "output_tps")
    recorded = [r["output_tps"] for r in map(json.loads, a.read_text().splitlines()) if r["type"] == "load_level"]
    assert output_tps.a == recorded[0] > 0, "A and B are the levels' recorded figures"
    assert output_tps.interval is not None and output_tps.interval[0] < output_tps.change < output_tps.interval[1]
    result = invoke(a, b)
    assert result.exit_code == 1
    assert any(line.split()[:5] == ["worse", "cap", MODEL, "4", "in"] and "output tok/s" in line
               for line in result.output.splitlines())
    # the same level measured again, unchanged: same, and a different SLO is not compared as goodput
    again = write(tmp_path / "c.jsonl", run_record(), load_samples(four, seed=5),
                  level_record(four, seed=5, slo={"ttft": 0.5}))
    level = next(c for c in cmp.compare(a, again).cells if c.concurrency == 4)
    assert {f.figure.key: f.verdict for f in level.figures} == {
        "ttft_s": "same", "e2e_s": "same", "decode_tps": "same", "output_tps": "same", "goodput_rps": "same"}
    assert next(f for f in level.figures if f.figure.key == "goodput_rps").note == "the SLOs differ"


def test_a_load_level_that_could_not_run_is_not_compared(tmp_path: Path) -> None:
    four = Level(concurrency=4)
    a = write(tmp_path / "a.jsonl", run_record(), load_samples(four, seed=1), level_record(four, seed=1))
    b = write(tmp_path / "b.jsonl", run_record(),
              {"type": "load_level", "setup": "cap", "model": MODEL, "engine": "llamacpp", **four.to_json(),
               "status": "missing", "reason": "smollm2 is not in models_dir", "time": "2026-05-01T09:06:00+02:00"})
    level = cmp.compare(a, b).cells[0]
    assert (level.verdict, level.status_a, level.status_b) == ("not compared", "ok", "missing")
    assert level.note == "MISSING in B: smollm2 is not in models_dir"


def test_failed_requests_under_load_are_compared_as_a_share(tmp_path: Path) -> None:
    four = Level(concurrency=4)
    broken = load_samples(four, seed=3)
    for s in broken[1:9]:
        s.update(status="error", reason="HTTP 500", ttft_s=None, e2e_s=None, itl_s=None, output_tokens=None)
    record = level_record(four, seed=3)
    record.update(requests_ok=8, requests_error=8)
    a = write(tmp_path / "a.jsonl", run_record(), load_samples(four, seed=1), level_record(four, seed=1))
    b = write(tmp_path / "b.jsonl", run_record(), broken, record)
    share = next(f for f in cmp.compare(a, b).cells[0].figures if f.figure.key == "success_rate")
    assert (share.a, share.b, share.verdict) == (1.0, 0.5, "worse")


# --- JSON ------------------------------------------------------------------------------------------------------------


def test_json_is_one_object_of_the_documented_shape(tmp_path: Path) -> None:
    four = Level(concurrency=4)
    a = write(tmp_path / "a.jsonl", run_record(), engine_record("0.3.8"), cell(MODEL, "capital", seed=1),
              cell(MODEL, "json", seed=2), load_samples(four, seed=1), level_record(four, seed=1))
    b = write(tmp_path / "b.jsonl", run_record(), engine_record("0.3.9"),
              cell(MODEL, "capital", seed=3, ttft=0.1), cell(OTHER, "json", seed=4))
    result = invoke(a, b, "--json")
    assert result.exit_code == 1
    data = strict_json(result.stdout)
    assert set(data) == {"a", "b", "method", "environment", "cells", "counts", "worse"}
    assert data["worse"] is True
    assert data["a"]["path"] == str(a) and len(data["a"]["run_ids"]) == 1
    assert data["method"] == {"threshold": 0.05, "confidence": 0.95, "resamples": 2000, "seed": 13, "min_samples": 3}
    assert data["environment"] == [{"what": "engine llamacpp: version", "a": "0.3.8", "b": "0.3.9"}]
    first = data["cells"][0]
    assert set(first) == {"kind", "setup", "model", "test", "concurrency", "rate", "status_a", "status_b", "verdict",
                          "note", "figures"}
    assert (first["kind"], first["test"], first["verdict"]) == ("test", "capital", "worse")
    ttft = first["figures"][0]
    assert set(ttft) == {"figure", "label", "unit", "better", "statistic", "a", "b", "n_a", "n_b", "change",
                         "interval", "verdict", "note"}
    assert (ttft["figure"], ttft["better"], ttft["statistic"], ttft["n_a"]) == ("ttft_s", "lower", "median", 20)
    assert ttft["interval"][0] < ttft["change"] < ttft["interval"][1]
    assert [c["verdict"] for c in data["cells"]] == ["worse", "only in A", "only in A", "only in B"]
    load = next(c for c in data["cells"] if c["kind"] == "load")
    assert (load["concurrency"], load["rate"], load["test"], load["status_b"]) == (4, None, None, None)
    assert data["counts"] == {"worse": 3, "better": 0, "same": 1, "too_few_samples": 0, "figures": 4,
                              "cells_compared": 1, "only_in_a": 2, "only_in_b": 1, "not_compared": 0}


def test_all_lists_the_same_figures_too(tmp_path: Path) -> None:
    a = write(tmp_path / "a.jsonl", run_record(), cell(MODEL, "capital", seed=1))
    b = write(tmp_path / "b.jsonl", run_record(), cell(MODEL, "capital", seed=2))
    plain, every = invoke(a, b).output, invoke(a, b, "--all").output
    assert not [line for line in plain.splitlines() if line.strip().startswith("same ")]
    rows = [line.split() for line in every.splitlines() if line.strip().startswith("same ")]
    assert [r[4] for r in rows] == ["TTFT", "E2E", "decode", "output"]


def test_the_documented_method_is_the_one_the_code_uses() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "compare.md").read_text(encoding="utf-8")
    assert (cmp.CONFIDENCE, cmp.RESAMPLES, cmp.MIN_SAMPLES, cmp.DEFAULT_THRESHOLD) == (0.95, 2000, 3, 0.05)
    for stated in ("95 % confidence interval", "2,000 resamples", "fewer than 3 samples", "default 5 %",
                   f"`jarvis-compare:{cmp.SEED}:<side>:<n>`", "Newcombe's hybrid score interval"):
        assert stated in docs, stated
