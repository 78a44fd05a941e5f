"""Never leave a mess: `jarvis run` as a real subprocess (installed plugins, restricted by JARVIS_LOAD_PLUGINS) over
engines it starts itself -- the fake `ollama serve` with its runner children, and vLLM's process runtime running the
vLLM-like stand-in. Ctrl-C (SIGINT) and SIGTERM in mid-test stop cleanly with exit code 130, leave no process, a valid
results.jsonl and a report, and `--resume` finishes the run without repeating a sample. SIGKILL leaves the engine
running; `jarvis cleanup` (or the next run) ends it, and only it: foreign processes survive.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import openpyxl
import psutil
import pytest

from jarvis_core.state import StateStore

from tests.run.conftest import (REPO, Campaign, free_port, marked_processes, samples, stop_process,
                                 timed_samples, wait_for)

REPS = 2
OLLAMA = "ol_qwen2.5:0.5b#stream"
VLLM = "vllm:Org/Good#stream"
TESTS = f"""
defaults: {{repetitions: {REPS}, warmup: 1, max_tokens: 32, timeout: 20}}
tests:
  - id: capital
    prompt: What is the capital of France?
    check: {{contains: Paris}}
  - id: week
    prompt: How many days are in a week?
    check: {{contains_any: ["7", seven]}}
"""


def setups(*names: str) -> str:
    models = {"ollama": OLLAMA, "vllm": VLLM}
    return TESTS + "setups:\n" + "".join(f"  {name}: ['{models[name]}']\n" for name in names)


def all_keys(*names: str) -> set[tuple[str, str, str, int]]:
    models = {"ollama": OLLAMA, "vllm": VLLM}
    return {(name, models[name], test, rep) for name in names for test in ("capital", "week")
            for rep in range(1, REPS + 1)}


def prepare(campaign: Campaign, *names: str, token_delay: float = 0.02) -> None:
    """Slow enough engines (about a sixth of a second per answer) that a signal lands in mid-test."""
    campaign.ollama_model("qwen2.5:0.5b")
    campaign.ollama_config(token_delay=token_delay)
    campaign.hf_model("Org/Good")
    # keep_alive 1s: the Ollama stand-in re-arms a model's expiry when a request cut off by the signal ends after
    # the unload (real Ollama keeps the unload's keep_alive 0); a short one keeps such a race to a second
    campaign.config(vllm_models={"Org/Good": ["--token-delay", str(token_delay)]},
                    engines={"ollama": {"keep_alive": "1s"}})
    campaign.setups(setups(*names))


def engine_processes(mark: str) -> list[str]:
    """What is still running of what the run started: fake ollama serve, its runners, the vLLM stand-in."""
    return [" ".join(p.cmdline()[:4]) for p in marked_processes(mark)]


def wait_gone(mark: str, timeout: float = 3.0) -> list[str]:
    deadline = time.monotonic() + timeout
    left = engine_processes(mark)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = engine_processes(mark)
    return left


def keys(results: Path) -> Counter:
    return Counter((r["setup"], r["model"], r["test"], r["repetition"]) for r in samples(results))


def assert_valid_results_and_report(out: Path, interrupted: bool) -> list[dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    recs = [json.loads(line) for line in lines]  # every line is whole JSON
    assert recs[0]["type"] == "run"
    assert recs[-1]["type"] == "end" and recs[-1]["interrupted"] is interrupted
    workbook = openpyxl.load_workbook(out / "report.xlsx")
    summary = list(workbook["Summary"].iter_rows(min_row=2, values_only=True))
    measured = {(r["setup"], r["model"], r["test"]) for r in recs if r["type"] == "sample"}
    assert len(summary) == len(measured)
    return recs


def interrupt(campaign: Campaign, sig: int, samples_first: int = 2) -> tuple[int, str]:
    """Start `jarvis run --output out`, wait until some samples are measured, send `sig`; (exit code, output)."""
    out = campaign.root / "out"
    proc = campaign.spawn("run", "--output", "out")
    try:
        wait_for(lambda: len(timed_samples(out / "results.jsonl")) >= samples_first or proc.poll() is not None,
                 30, "the first samples")
        assert proc.poll() is None, campaign.output()
        assert engine_processes(str(campaign.root)), "the engine runs while the run measures"
        proc.send_signal(sig)
        code = proc.wait(timeout=30)
    finally:
        stop_process(proc)
    return code, campaign.output()


def assert_stopped_cleanly(campaign: Campaign, mark: str, code: int, output: str) -> list[dict]:
    assert code == 130, output
    assert "Interrupted: stopping what Jarvis started and keeping what was measured." in output
    assert wait_gone(mark, 1.0) == [], "a process the run started outlived it"
    assert StateStore(campaign.state_dir).records() == [], "the state file still records what was stopped"
    out = campaign.root / "out"
    recs = assert_valid_results_and_report(out, interrupted=True)
    measured = [r for r in recs if r["type"] == "sample"]
    assert measured and all(r["status"] == "ok" for r in measured), "an interrupted request is not a sample"
    assert max(keys(out / "results.jsonl").values()) == 1
    assert "Results: out/results.jsonl" in output and "Report:  out/report.xlsx" in output
    return measured


def test_sigint_in_mid_test_stops_cleanly_and_resume_finishes(campaign: Campaign, nothing_left_running: str) -> None:
    prepare(campaign, "ollama")
    code, output = interrupt(campaign, signal.SIGINT)
    before = assert_stopped_cleanly(campaign, nothing_left_running, code, output)
    out = campaign.root / "out"
    assert len(before) < len(all_keys("ollama")), "interrupted in mid-test, before the first setup was done"

    resumed = campaign.jarvis("run", "--resume", "out", timeout=60)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    counts = keys(out / "results.jsonl")
    assert set(counts) == all_keys("ollama"), set(counts) ^ all_keys("ollama")
    assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
    after = samples(out / "results.jsonl")
    assert after[:len(before)] == before, "what was measured before the interrupt is kept as it was"
    recs = assert_valid_results_and_report(out, interrupted=False)
    assert [r["type"] for r in recs].count("run") == 2
    assert wait_gone(nothing_left_running, 1.0) == []


def test_sigterm_behaves_like_sigint(campaign: Campaign, nothing_left_running: str) -> None:
    prepare(campaign, "vllm")
    code, output = interrupt(campaign, signal.SIGTERM)
    measured = assert_stopped_cleanly(campaign, nothing_left_running, code, output)
    assert {r["engine"] for r in measured} == {"vllm"}
    assert "stopped vllm: vllm serve (pid " in output


def start_foreign(campaign: Campaign) -> list[subprocess.Popen[bytes]]:
    """Processes Jarvis did not start: a vLLM-like server and an `ollama serve` of the same programs."""
    env = campaign.env()
    log = open(campaign.root / "foreign.log", "ab")
    vllm_like = subprocess.Popen([sys.executable, "-m", "tests.standins.openai_server", "Org/Foreign", "--port",
                                  str(free_port()), "--host", "127.0.0.1"], cwd=REPO, env=env, stdout=log,
                                 stderr=subprocess.STDOUT)
    ollama_env = dict(env, OLLAMA_HOST=f"127.0.0.1:{free_port()}", OLLAMA_MODELS=str(campaign.root / "foreign"))
    ollama_like = subprocess.Popen([str(campaign.bin_dir / "ollama"), "serve"], env=ollama_env, stdout=log,
                                   stderr=subprocess.STDOUT)
    log.close()
    return [vllm_like, ollama_like]


@pytest.mark.parametrize("phase", [pytest.param("ollama", marks=pytest.mark.integration), "vllm"])
def test_sigkill_leaves_the_engine_and_cleanup_ends_only_it(campaign: Campaign, nothing_left_running: str,
                                                             phase: str) -> None:
    prepare(campaign, phase)
    foreign = start_foreign(campaign)
    foreign_pids = {p.pid for p in foreign}
    out = campaign.root / "out"
    proc = campaign.spawn("run", "--output", "out")
    try:
        wait_for(lambda: timed_samples(out / "results.jsonl") or proc.poll() is not None, 30,
                 f"samples of the {phase} setup")
        assert proc.poll() is None, campaign.output()
        proc.kill()
        proc.wait(timeout=10)

        recorded = StateStore(campaign.state_dir).records()
        processes = [r for r in recorded if r.kind == "process"]
        assert [r.engine for r in processes] == [phase], recorded
        engine = psutil.Process(processes[0].pid)
        assert engine.is_running() and engine.status() != psutil.STATUS_ZOMBIE, "SIGKILL leaves the engine running"
        tree = [engine, *engine.children(recursive=True)]
        if phase == "ollama":
            assert len(tree) >= 2, "ollama serve runs a runner for the loaded model"

        if phase == "vllm":
            cleaned = campaign.jarvis("cleanup")
            assert cleaned.returncode == 0, cleaned.stderr
            assert f"vllm: vllm serve (pid {engine.pid}) ended" in cleaned.stdout
            again = campaign.run("cleanup")
            assert again.output.strip() == "Nothing to clean up."
        else:  # the start of the next run removes the leftovers of the crashed one
            campaign.setups(setups("ollama").replace(OLLAMA, "ol_absent:1b"), "other.yaml")
            nxt = campaign.run("run", "--setups", "other.yaml", "--setup", "ollama", "--output", "next")
            assert nxt.exit_code == 0, nxt.output
            assert "cleaned up after a crashed run: ollama: " in nxt.output
            assert f"(pid {engine.pid})" in nxt.output
        psutil.wait_procs(tree, timeout=5)
        assert not any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in tree), "the engine was ended"
        assert StateStore(campaign.state_dir).records() == []
        for p in foreign:
            assert p.poll() is None, f"foreign process {p.args} was ended by the cleanup"
        left = {p.pid for p in marked_processes(nothing_left_running)}
        assert left == foreign_pids, [" ".join(psutil.Process(pid).cmdline()[:4]) for pid in left - foreign_pids]
        # what was measured before the kill is readable, and a report can be built from it
        recs = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
        assert recs[-1]["type"] != "end"
        built = campaign.run("report", str(out / "results.jsonl"))
        assert built.exit_code == 0 and (out / "report.xlsx").is_file()
    finally:
        stop_process(proc)
        for p in foreign:
            p.terminate()
        for p in foreign:
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


# --- what the implementation gets wrong ------------------------------------------------------------------------------


def end_leftovers(campaign: Campaign, mark: str) -> None:
    """Kill what a run left behind and forget its records (the bugs below leave both)."""
    for proc in marked_processes(mark):
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(marked_processes(mark), timeout=5)
    (campaign.state_dir / "state.json").unlink(missing_ok=True)


def test_signal_while_an_engine_is_being_stopped_still_stops_it(campaign: Campaign, nothing_left_running: str) -> None:
    campaign.ollama_model("qwen2.5:0.5b")
    campaign.ollama_config(unload_delay=2)  # the model leaves /api/ps 2 s after the unload: stop() waits for it
    campaign.setups(TESTS.replace(f"repetitions: {REPS}", "repetitions: 1") + "setups: ['ol_qwen2.5:0.5b']\n")
    out = campaign.root / "out"
    proc = campaign.spawn("run", "--output", "out")
    try:
        wait_for(lambda: len(timed_samples(out / "results.jsonl")) == 2 or proc.poll() is not None, 30,
                 "every sample")
        time.sleep(0.3)  # the run is now stopping Ollama, waiting for the model to unload
        assert proc.poll() is None
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=30)
        assert code == 130, campaign.output()
        assert (out / "report.xlsx").is_file()
        assert wait_gone(nothing_left_running, 0.3) == [], "ollama serve and its runner outlived the run"
        assert StateStore(campaign.state_dir).records() == []
    finally:
        stop_process(proc)
        end_leftovers(campaign, nothing_left_running)


def test_an_engine_that_crashes_mid_run_leaves_nothing_behind(campaign: Campaign, nothing_left_running: str) -> None:
    campaign.ollama_model("qwen2.5:0.5b")
    # the load and warmup pass; the first timed request crashes `ollama serve` (exit 2), its runner survives it
    campaign.ollama_config(runner_survives_parent=True, faults=[
        {"kind": "error", "after_chunks": 10_000, "model": "qwen2.5:0.5b", "endpoint": "chat", "times": 2},
        {"kind": "crash", "after_chunks": 2, "model": "qwen2.5:0.5b", "endpoint": "chat", "times": 1}])
    campaign.setups(TESTS + f"setups: ['{OLLAMA}']\n")
    try:
        result = campaign.run("run", "--output", "out")
        assert result.exit_code == 1
        found = samples(campaign.root / "out" / "results.jsonl")
        assert {r["status"] for r in found} == {"error"}
        assert any(r["reason"].startswith("engine stopped responding: ") for r in found)
        assert wait_gone(nothing_left_running, 0.3) == [], "the crashed server's runner outlived the run"
        assert StateStore(campaign.state_dir).records() == [], "the state file still records the dead server"
    finally:
        end_leftovers(campaign, nothing_left_running)
