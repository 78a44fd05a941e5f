"""Load runs against the stand-in server: `start` reports that llama-cpp-python's server generates one request at a
time (`StartResult.parallelism`), `exact_tokens` sends `min_tokens`, and `infer` is safe from many threads at once."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from jarvis_core.api import ChatRequest, Message, Parallelism

from llamacpp_helpers import write_gguf

FRANCE = [Message("user", "What is the capital of France?")]
ONE_AT_A_TIME = Parallelism("llama-cpp-python's server (one request at a time)", 1,
                            "its server has a single slot; requests queue", adjustable=False)


@pytest.fixture
def fake(session_for, fake_python, tmp_path):
    write_gguf(tmp_path / "models" / "tiny.gguf")
    return session_for(python=fake_python, extra_args=["--fake_word_delay", "0.01"])


def bodies(session) -> list[dict]:
    """The request bodies the stand-in server saw, from its log."""
    [record] = session.state.records("llamacpp")
    lines = Path(record.log).read_text().splitlines()
    return [json.loads(line[len("request: "):]) for line in lines if line.startswith("request: ")]


def test_start_says_one_request_at_a_time_also_when_reused(fake):
    ref = fake.resolve("lc_tiny")
    started = fake.start(ref)
    assert started.started and started.parallelism == ONE_AT_A_TIME
    again = fake.start(ref)
    assert not again.started and again.parallelism == ONE_AT_A_TIME


@pytest.mark.parametrize("stream", [False, True])
def test_exact_tokens_sends_min_tokens(fake, stream):
    ref = fake.resolve("lc_tiny")
    fake.start(ref)
    exact = fake.infer(ref, ChatRequest(FRANCE, stream=stream, max_tokens=20, exact_tokens=True))
    assert exact.ok and exact.output_tokens == 20 and exact.finish_reason == "length"
    assert bodies(fake)[-1]["min_tokens"] == 20 and bodies(fake)[-1]["max_tokens"] == 20
    assert "ignore_eos" not in bodies(fake)[-1]  # llama-cpp-python has no such field
    plain = fake.infer(ref, ChatRequest(FRANCE, stream=stream, max_tokens=20))
    assert plain.ok and plain.output_tokens == 6 and "min_tokens" not in bodies(fake)[-1]
    unbounded = fake.infer(ref, ChatRequest(FRANCE, stream=stream, exact_tokens=True))
    assert unbounded.ok and "min_tokens" not in bodies(fake)[-1]


def test_infer_from_many_threads_at_once_queues_in_the_server(fake):
    ref = fake.resolve("lc_tiny")
    fake.start(ref)
    go = threading.Barrier(4)
    results = []

    def ask() -> None:
        go.wait()
        results.append(fake.infer(ref, ChatRequest(FRANCE, stream=True, max_tokens=10, exact_tokens=True)))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 4 and all(r.ok and r.output_tokens == 10 for r in results)
    served = sorted((r.t_first_token, r.t_last_token) for r in results)
    assert all(a[1] < b[0] for a, b in zip(served, served[1:]))  # one after the other
    assert len(fake.state.records("llamacpp")) == 1
