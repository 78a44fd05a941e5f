"""`jarvis run` over the REAL llama.cpp engine (llama-cpp-python's server) and the real SmolLM2-135M-Instruct GGUF.

Run with `pytest tests/run -m integration`. The GGUF is `$JARVIS_TEST_GGUF`, or `.cache/models/` at the repository root
(fetched there once with scripts/fetch-smollm2.py). A missing prerequisite skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import openpyxl
import pytest

from jarvis_core.results import read_results, summarize
from jarvis_core.state import StateStore

from tests.run.conftest import REPO, Campaign, marked_processes, samples, stop_process, timed_samples, wait_for

pytestmark = pytest.mark.integration

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SIZE = 98_362_432


def missing_prerequisite(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (under CI=true a missing prerequisite fails instead of skipping)")
    pytest.skip(why)


@pytest.fixture(scope="module")
def gguf_dir() -> Path:
    """A folder holding the real SmolLM2 GGUF under the name the `smollm2-135m` alias looks for."""
    from jarvis_llamacpp import runtime

    found = runtime.probe(sys.executable, refresh=True)
    if not found.installed:
        missing_prerequisite(f"llama_cpp.server is not importable by {sys.executable}: {found.problem}")
    override = os.environ.get("JARVIS_TEST_GGUF")
    if override:
        path = Path(override)
        if not path.is_file() or path.name != GGUF_NAME:
            missing_prerequisite(f"JARVIS_TEST_GGUF={override} is not a file named {GGUF_NAME}")
        return path.parent
    folder = REPO / ".cache" / "models"
    path = folder / GGUF_NAME
    if not (path.is_file() and path.stat().st_size == GGUF_SIZE):
        try:
            subprocess.run([sys.executable, str(REPO / "scripts" / "fetch-smollm2.py"), str(folder)], check=True,
                           capture_output=True, text=True, timeout=900)
        except (OSError, subprocess.SubprocessError) as exc:
            missing_prerequisite(f"could not fetch {GGUF_NAME}: {exc} {getattr(exc, 'stderr', '') or ''}"[-600:])
    if not path.is_file():
        missing_prerequisite(f"scripts/fetch-smollm2.py did not produce {path}")
    return folder


SETUPS = """
defaults: {repetitions: 2, warmup: 1, max_tokens: 16, temperature: 0, seed: 1, timeout: 120}
tests:
  - id: capital
    prompt: What is the capital of France?
    check: {regex: '\\w'}
  - id: impossible
    prompt: Name a colour.
    check: {equals: "this answer cannot be given"}
  - id: picture
    prompt: Describe this picture.
    images: [pixel.png]
setups:
  real:
    models:
      - lc_smollm2-135m#stream
      - lc_smollm2-135m
      - lc_not-downloaded
"""


def use_real_engine(campaign: Campaign, gguf_dir: Path) -> None:
    campaign.image("pixel.png")
    campaign.config(engines={"llamacpp": {"python": sys.executable, "models_dir": str(gguf_dir), "n_threads": 2,
                                          "n_ctx": 512}},
                    timeouts={"start": 120, "stop": 20, "request": 120})
    campaign.setups(SETUPS)


def test_run_over_real_llamacpp(campaign: Campaign, gguf_dir: Path, nothing_left_running: str) -> None:
    use_real_engine(campaign, gguf_dir)
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 1, result.output  # `impossible` fails its check
    out = campaign.root / "out"
    rows = {row.key: row for row in summarize(read_results(out / "results.jsonl"))}
    status = {(m, t): row.status for (_, m, t), row in rows.items()}
    assert status == {
        ("lc_smollm2-135m#stream", "capital"): "ok", ("lc_smollm2-135m#stream", "impossible"): "failed",
        ("lc_smollm2-135m#stream", "picture"): "skipped",
        ("lc_smollm2-135m", "capital"): "ok", ("lc_smollm2-135m", "impossible"): "failed",
        ("lc_smollm2-135m", "picture"): "skipped",
        ("lc_not-downloaded", "capital"): "missing", ("lc_not-downloaded", "impossible"): "missing",
        ("lc_not-downloaded", "picture"): "missing",
    }
    assert "not-downloaded.gguf" in rows[("real", "lc_not-downloaded", "capital")].reason
    timed = [r for r in samples(out / "results.jsonl") if r["repetition"] is not None]
    assert len(timed) == 2 * 2 * 2
    for r in timed:
        assert r["answer"] and r["e2e_s"] > 0 and r["output_tokens"] >= 1 and not r["cold"]
        if r["stream"]:
            assert 0 < r["ttfb_s"] <= r["ttft_s"] <= r["e2e_s"]
            # llama-cpp-python's server sends no usage chunk while streaming: the count is estimated
            assert r["token_source"] in ("estimated", "server")
            if r["output_tokens"] > 1:
                assert r["decode_tps"] == pytest.approx(1 / r["itl_s"])
        else:
            assert r["ttft_s"] is None and r["itl_s"] is None and r["token_source"] == "server"
    warmups = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
               if '"type": "warmup"' in line]
    assert [w["model"] for w in warmups] == ["lc_smollm2-135m#stream", "lc_smollm2-135m"]
    engines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()
               if '"type": "engine"' in line]
    assert len(engines) == 1 and engines[0]["started_by_jarvis"] is True, "one server for both IDs of the model"

    workbook = openpyxl.load_workbook(out / "report.xlsx")
    header = [c.value for c in next(workbook["Summary"].iter_rows(max_row=1))]
    body = list(workbook["Summary"].iter_rows(min_row=2))
    assert len(body) == len(rows)
    col = header.index("status")
    for row in body:
        if row[col].value == "missing":
            assert row[col].fill.fgColor.rgb.endswith("FFFF00") and row[col].font.color.rgb.endswith("FF0000")
    assert [c for ws in workbook.worksheets for c in ws._charts]
    assert StateStore(campaign.state_dir).records() == []
    assert marked_processes(nothing_left_running) == [], "the llama.cpp server was stopped"


def test_sigint_stops_the_real_server(campaign: Campaign, gguf_dir: Path, nothing_left_running: str) -> None:
    use_real_engine(campaign, gguf_dir)
    campaign.setups(SETUPS.replace("repetitions: 2", "repetitions: 3").replace("max_tokens: 16", "max_tokens: 32"))
    out = campaign.root / "out"
    proc = campaign.spawn("run", "--output", "out")
    try:
        wait_for(lambda: len(timed_samples(out / "results.jsonl")) >= 2 or proc.poll() is not None, 180,
                 "the first samples from llama.cpp")
        assert proc.poll() is None, campaign.output()
        servers = [p for p in marked_processes(nothing_left_running) if "llama_cpp.server" in p.cmdline()]
        assert servers, "the real server runs while the run measures"
        proc.send_signal(signal.SIGINT)
        code = proc.wait(timeout=60)
    finally:
        stop_process(proc)
    assert code == 130, campaign.output()
    assert marked_processes(nothing_left_running) == [], "the llama.cpp server outlived the interrupted run"
    assert StateStore(campaign.state_dir).records() == []
    lines = (out / "results.jsonl").read_text().splitlines()
    assert json.loads(lines[-1]) == {**json.loads(lines[-1]), "type": "end", "interrupted": True}
    assert (out / "report.xlsx").is_file()
    resumed = campaign.jarvis("run", "--resume", "out", timeout=300)
    assert resumed.returncode == 1, resumed.stdout + resumed.stderr  # `impossible` fails
    keys = [(r["model"], r["test"], r["repetition"]) for r in samples(out / "results.jsonl")]
    assert len(keys) == len(set(keys)) == 2 * 2 * 3 + 2 + 3  # timed samples, two skipped and three missing cells
    assert marked_processes(nothing_left_running) == []
