"""`jarvis run --force-download` of a llama.cpp model from a Hugging Face repo, end to end: the Hub stand-in serves
the real SmolLM2 GGUF, Jarvis downloads it into the hub cache (with progress, resuming a dropped connection), and
the REAL llama.cpp server answers from the cached file. Run with `pytest tests/llamacpp -m integration`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner

from jarvis_core.cli import cli

from llamacpp_helpers import REPO, SMOLLM2, missing_prerequisite

if str(REPO) not in sys.path:  # `tests.standins` is imported as a package from the repository root
    sys.path.insert(0, str(REPO))

from tests.standins.hf_hub import HubRepo, serve_hub, use_hub  # noqa: E402

pytestmark = pytest.mark.integration

REPO_ID = "jarvis-test/SmolLM2-135M-Instruct-GGUF"
FILE = "SmolLM2-135M-Instruct-Q4_1.gguf"
MODEL = f"lc_hf.co/{REPO_ID}:Q4_1"


@pytest.fixture(scope="module")
def demo_gguf() -> Path:
    """The demo model: `$JARVIS_TEST_GGUF`, the plugin's own models folder (where `scripts/demo.sh` puts it), or
    `.cache/models` at the repository root."""
    from jarvis_llamacpp.settings import default_models_dir

    override = os.environ.get("JARVIS_TEST_GGUF")
    candidates = [Path(override)] if override else [default_models_dir() / SMOLLM2.filename,
                                                     REPO / ".cache" / "models" / SMOLLM2.filename]
    for path in candidates:
        if path.is_file() and path.stat().st_size == SMOLLM2.size:
            return path
    missing_prerequisite(f"no {SMOLLM2.filename} at {', '.join(map(str, candidates))} (bash scripts/demo.sh or "
                         f"scripts/fetch-smollm2.py puts it there)")
    raise AssertionError("unreachable")


def llama_servers() -> list[psutil.Process]:
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "llama_cpp.server" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def test_run_force_download_from_the_hub_then_llamacpp_answers(llamacpp, real_python, demo_gguf, tmp_path,
                                                               monkeypatch):
    repos = {REPO_ID: HubRepo({"README.md": "# SmolLM2 GGUF", FILE: demo_gguf,
                               "SmolLM2-135M-Instruct-Q8_0.gguf": b"GGUF" + bytes(64)})}
    (tmp_path / "config.yaml").write_text(json.dumps({
        "engines": {"llamacpp": {"python": real_python, "n_threads": 2, "n_ctx": 512}},
        "timeouts": {"start": 120, "stop": 20, "request": 120}}))
    (tmp_path / "test_setups.yaml").write_text(
        "defaults: {repetitions: 1, warmup: 1, max_tokens: 24, temperature: 0, seed: 1, timeout: 120}\n"
        "tests:\n  - id: capital\n    prompt: What is the capital of France?\n    check: {regex: 'Paris'}\n"
        f"setups:\n  hub:\n    models: ['{MODEL}']\n")
    with serve_hub(repos) as hub:
        use_hub(monkeypatch, hub, tmp_path / "hf-home")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub-cache"))
        hub.drop(FILE, at=40_000_000)  # the connection drops once, 40 MB in

        missing = CliRunner().invoke(cli, ["run", "--output", "missing"], catch_exceptions=False)
        assert missing.exit_code == 0, missing.output
        assert "not in the Hugging Face cache" in missing.output and hub.requests == []

        result = CliRunner().invoke(cli, ["run", "--force-download", "--output", "out"], catch_exceptions=False)
        gets = [(r.range, r.status) for r in hub.requests if r.server == "cdn" and r.method == "GET"]

    output = result.output  # stdout and stderr (where the progress goes), as the terminal shows them
    assert result.exit_code == 0, output
    assert gets == [(None, 200), ("bytes=40000000-", 206)]  # resumed, not started again
    label = f"llamacpp: {REPO_ID}/{FILE}"
    assert f"{label}  downloading" in output and f"{label}  verifying sha256" in output
    assert sum(line.startswith(f"{label}: 93.8 MiB in ") for line in output.splitlines()) == 1

    rows = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    samples = [r for r in rows if r.get("type") == "sample"]
    assert [(s["model"], s["status"]) for s in samples] == [(MODEL, "ok")], samples
    assert "Paris" in samples[0]["answer"]
    snapshot = tmp_path / "hub-cache" / "models--jarvis-test--SmolLM2-135M-Instruct-GGUF" / "snapshots" / \
        hub.commit(REPO_ID)
    assert (snapshot / FILE).stat().st_size == SMOLLM2.size
    assert llama_servers() == [], "the llama.cpp server was stopped at the end of the run"
