"""The plugin against the REAL llama.cpp server (llama-cpp-python) and the real SmolLM2-135M-Instruct GGUF.

Run with `pytest tests/llamacpp -m integration`. Prerequisites: see conftest.py (`real_python`, `real_gguf`).
"""

from __future__ import annotations

import shutil
import time

import psutil
import pytest

from jarvis_core.api import ChatRequest, Message
from jarvis_core.errors import EngineError
from jarvis_core.processes import port_open

pytestmark = pytest.mark.integration

FRANCE = [Message("user", "What is the capital of France?")]


def llama_servers() -> list[psutil.Process]:
    """The llama_cpp.server processes this test process started (others on the machine are none of our business)."""
    found = []
    for proc in psutil.Process().children(recursive=True):
        try:
            if "llama_cpp.server" in proc.cmdline() and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.NoSuchProcess:
            pass
    return found


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def real(session_for, real_python, real_gguf):
    """A session over the real engine, with the model folder holding the real GGUF under its alias."""
    session = session_for(python=real_python, models_dir=str(real_gguf.parent), n_threads=1)
    yield session
    session.stop("llamacpp")
    assert llama_servers() == [], "a llama.cpp server was left running"


def test_real_lifecycle(real, real_gguf):
    ref = real.resolve("lc_smollm2-135m") if real_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf" \
        else real.resolve(f"lc_{real_gguf}")
    assert real.is_available(ref).present

    began = time.monotonic()
    started = real.start(ref)
    assert started.started, started.detail
    assert time.monotonic() - began < 60
    [record] = real.state.records("llamacpp")
    server = psutil.Process(record.pid)
    assert "llama_cpp.server" in server.cmdline()

    detected = real.detect("llamacpp")
    assert detected.installed and detected.reachable and detected.started_by_jarvis
    assert detected.version and detected.version[0].isdigit()

    warm = real.warmup(ref)
    assert 0 < warm.cold_start_s < 60

    streamed = real.infer(ref, ChatRequest(FRANCE, stream=True, temperature=0.0, max_tokens=48, timeout=60))
    assert streamed.ok, streamed.error
    assert "Paris" in streamed.text
    assert streamed.t_first_token is not None and streamed.t_first_token > streamed.t_send  # TTFT present
    assert streamed.t_first_byte <= streamed.t_first_token <= streamed.t_last_token <= streamed.t_end
    assert streamed.token_source == "estimated"  # this server sends no usage in streams
    assert streamed.output_tokens == len(streamed.chunk_times) > 1
    assert streamed.finish_reason in ("stop", "length")

    whole = real.infer(ref, ChatRequest(FRANCE, stream=False, temperature=0.0, max_tokens=48, timeout=60))
    assert whole.ok, whole.error
    assert "Paris" in whole.text
    assert whole.output_tokens and whole.output_tokens > 1

    again = real.start(ref)
    assert not again.started and again.address == started.address

    stopped = real.stop("llamacpp")
    assert stopped.stopped and stopped.memory_released is True
    assert gone(record.pid) and not port_open("127.0.0.1", record.data["port"])
    assert real.state.records("llamacpp") == []
    assert llama_servers() == []


def test_real_switch_to_another_model_stops_the_first(real, real_gguf, tmp_path):
    copy = tmp_path / "copy-of-smollm2.gguf"
    shutil.copyfile(real_gguf, copy)
    first = real.start(real.resolve(f"lc_{real_gguf}"))
    [old] = real.state.records("llamacpp")
    second = real.start(real.resolve(f"lc_{copy}"))
    assert second.started and second.address != first.address
    assert gone(old.pid)
    answer = real.infer(real.resolve(f"lc_{copy}"), ChatRequest(FRANCE, temperature=0.0, max_tokens=48))
    assert answer.ok and "Paris" in answer.text


def test_real_server_rejects_a_file_that_is_not_gguf_fast_with_its_log(real, tmp_path):
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"this is not a GGUF file\n" * 100)
    began = time.monotonic()
    with pytest.raises(EngineError) as caught:
        real.start(real.resolve(f"lc_{bad}"))
    assert time.monotonic() - began < 30
    message = str(caught.value)
    assert "stopped before it was ready" in message
    assert "Failed to load model from file" in message
    assert "Last lines of" in message
    assert real.state.records("llamacpp") == []


def test_real_exact_tokens_and_one_request_at_a_time(real, real_gguf):
    """`min_tokens` (what exact_tokens sends) makes the real server generate exactly max_tokens tokens, where the same
    request without it stops early; and two requests in flight are generated one after the other."""
    import threading

    from jarvis_core.api import Parallelism

    ref = real.resolve(f"lc_{real_gguf}")
    started = real.start(ref)
    assert started.parallelism == Parallelism("llama-cpp-python's server (one request at a time)", 1,
                                              "its server has a single slot; requests queue", adjustable=False)
    real.warmup(ref)
    wanted = 64
    plain = real.infer(ref, ChatRequest(FRANCE, temperature=0.0, max_tokens=wanted, timeout=120))
    assert plain.ok and plain.token_source == "server" and plain.output_tokens < wanted  # it stops by itself
    exact = real.infer(ref, ChatRequest(FRANCE, temperature=0.0, max_tokens=wanted, exact_tokens=True, timeout=120))
    assert exact.ok, exact.error
    assert exact.token_source == "server" and exact.output_tokens == wanted and exact.finish_reason == "length"

    go = threading.Barrier(2)
    results: list = []

    def ask() -> None:
        go.wait()
        results.append(real.infer(ref, ChatRequest(FRANCE, stream=True, temperature=0.0, max_tokens=24,
                                                   exact_tokens=True, timeout=120)))

    threads = [threading.Thread(target=ask) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(180)
    assert len(results) == 2 and all(r.ok for r in results), results
    first, second = sorted(results, key=lambda r: r.t_first_token)
    assert second.t_first_token > first.t_last_token  # one after the other: the server's single slot
    print(f"llama.cpp exact_tokens: {exact.output_tokens} tokens ({exact.finish_reason}), without: "
          f"{plain.output_tokens} ({plain.finish_reason}); streamed chunks {[len(r.chunk_times) for r in results]}")
