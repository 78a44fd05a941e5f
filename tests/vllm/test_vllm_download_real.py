"""`--force-download` end to end: the tiny model (scripts/make-tiny-hf-model.py) downloaded from the Hugging Face Hub
stand-in at a pinned revision, then served by real vLLM (CPU build, process runtime). One vLLM start: it is the
expensive part."""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import pytest

from jarvis_core.engine import ChatRequest, Message
from jarvis_core.processes import free_port
from jarvis_core.progress import Progress

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CACHE

from tests.standins.hf_hub import HubRepo, serve_hub, use_hub

pytestmark = pytest.mark.integration

MODEL = "jarvis-test/tiny-llama"
HELLO = [Message("user", "Hello, how are you today?")]


def tiny_model_files() -> dict[str, Path]:
    """The tiny model's files, as make-tiny-hf-model.py put them into .cache/hf-hub."""
    folder = CACHE / "hf-hub" / "models--jarvis-test--tiny-llama"
    snapshot = folder / "snapshots" / (folder / "refs" / "main").read_text().strip()
    return {p.relative_to(snapshot).as_posix(): p.resolve() for p in sorted(snapshot.rglob("*")) if p.is_file()}


def test_force_download_of_a_pinned_revision_then_real_vllm_serves_it(real_vllm, scratch, vllm_plugin,  # noqa: F811
                                                                     make_session, tmp_path, monkeypatch):
    main = tiny_model_files()
    config = json.loads(main["config.json"].read_text())
    assert config["max_position_embeddings"] == 2048
    v1 = {**main, "config.json": json.dumps({**config, "max_position_embeddings": 1024}, indent=2).encode()}
    with serve_hub({MODEL: HubRepo(main, revisions={"v1": v1})}) as hub:
        use_hub(monkeypatch, hub, tmp_path / "hf-home")
        monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))  # empty: everything comes from the stand-in
        out = io.StringIO()
        session = make_session({
            "timeouts": {"start": 300},
            "engines": {"vllm": {
                "runtime": "process", "executable": str(real_vllm), "port": free_port(), "gpus": "none",
                "models": {MODEL: {"served_name": "tiny", "revision": "v1", "extra_args": ["--enforce-eager"]}},
                "environment": {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                                "VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(scratch),
                                "VLLM_CACHE_ROOT": str(scratch / "c"), "HF_HOME": str(tmp_path / "hf-home")}}}},
            force_download=True, progress=Progress(out))
        ref = session.resolve(f"vllm:{MODEL}")
        assert not session.is_available(ref).present

        pulled = session.pull(ref)
        assert pulled.present and pulled.revision == hub.commit(MODEL, "v1")
        summaries = [line for line in out.getvalue().splitlines() if line.startswith(f"vllm: {MODEL}@v1: ")]
        assert len(summaries) == 1 and f"{len(main)}/{len(main)} files" in summaries[0]
        assert [g.sent for g in hub.downloads("model.safetensors")] == [main["model.safetensors"].stat().st_size]

        asked = len(hub.requests)
        try:
            started = session.start(ref)
            served = httpx.get(f"{started.address}/v1/models", timeout=30).json()["data"]
            # v1's config says 1024 positions (main's 2048): vLLM derived its context length from the revision.
            assert [(m["id"], m["max_model_len"]) for m in served] == [("tiny", 1024)], served
            answer = session.infer(ref, ChatRequest(HELLO, max_tokens=5, temperature=0.0, timeout=120))
            assert answer.ok and answer.output_tokens == 5, answer.error
            [record] = session.state.records("vllm", "process")
            assert record.command[record.command.index("--revision") + 1] == "v1"
            # Jarvis downloaded everything, so vLLM ran offline (HF_HUB_OFFLINE=1): it asked the Hub nothing.
            assert hub.requests[asked:] == [], hub.requests[asked:]
        finally:
            stopped = session.stop("vllm")
        assert stopped.stopped and session.state.records("vllm") == []
    # Served from the download: the weights crossed the wire once, and the summary line was not printed again.
    [whole] = hub.downloads("model.safetensors")
    assert whole.range is None and whole.sent == main["model.safetensors"].stat().st_size
    assert len([line for line in out.getvalue().splitlines() if line.startswith(f"vllm: {MODEL}@v1: ")]) == 1
