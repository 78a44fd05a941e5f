"""infer_async (load levels drive it from one event loop) reads every Ollama answer exactly as infer does: the same
text, counts, server figures and error results, with stamps in order; and it is what load levels use."""

from __future__ import annotations

import pytest
from jarvis_core.api import ChatRequest, Message
from jarvis_core.load import Level
from jarvis_core.load_async import run_level_async
from jarvis_core.testing import infer_async

from tests.standins.ollama_server import MID_STREAM_ERROR

FRANCE = [Message("user", "What is the capital of France?")]


@pytest.fixture
def served(session_for, standin, ref):
    server = standin(models=["qwen2.5:0.5b", {"name": "qwen3:0.6b", "thinking": True}], token_delay=0.003)
    session = session_for(port=server.port)
    return session, server, ref(session, "qwen2.5:0.5b")


def same(a, b) -> None:
    # prompt_eval_count and the durations differ between two calls: Ollama (and its stand-in) caches the prompt
    assert (b.ok, b.text, b.output_tokens, b.token_source, b.finish_reason, set(b.server)) == \
        (a.ok, a.text, a.output_tokens, a.token_source, a.finish_reason, set(a.server))
    assert b.prompt_tokens == b.server.get("prompt_eval_count", b.prompt_tokens) is not None
    assert len(b.chunk_times) == len(a.chunk_times)


@pytest.mark.parametrize("stream", [True, False])
def test_hook_infer_async_answers_as_infer_does(served, stream):
    session, server, model = served
    request = ChatRequest(messages=FRANCE, stream=stream)
    threaded, async_result = session.infer(model, request), infer_async(session, model, request)
    assert async_result.ok and async_result.text == "The capital of France is Paris."
    same(threaded, async_result)
    if stream:
        emission = [e for e in server.emissions if e.path == "/api/chat"][-1]
        assert async_result.t_send < emission.chunk_times[0] < async_result.t_first_byte <= \
            async_result.t_first_token <= async_result.t_last_token <= async_result.t_end


def test_thinking_counts_as_the_first_token(served, ref):
    session, _, _ = served
    model = ref(session, "qwen3:0.6b")
    request = ChatRequest(messages=FRANCE, stream=True)
    same(session.infer(model, request), infer_async(session, model, request))


@pytest.mark.parametrize("fault", ["error", "die", "status"])
def test_failures_are_the_same_error_results(served, fault):
    session, server, model = served
    options = {"error": dict(after_chunks=3), "die": dict(after_chunks=2), "status": dict(status=503)}[fault]
    server.add_fault(fault, endpoint="chat", **options)
    result = infer_async(session, model, ChatRequest(messages=FRANCE, stream=True))
    assert not result.ok and result.t_end is not None
    expected = {"error": MID_STREAM_ERROR, "die": "", "status": "503"}[fault]
    assert expected in result.error
    if fault == "die":
        assert "died" in result.error or "broke" in result.error


def test_a_hung_stream_times_out_and_an_unknown_model_is_a_404(served, ref):
    session, server, model = served
    server.add_fault("hang", after_chunks=2, endpoint="chat", seconds=5)
    result = infer_async(session, model, ChatRequest(messages=FRANCE, stream=True, timeout=0.5))
    assert not result.ok and "timed out" in result.error and len(result.chunk_times) == 2
    result = infer_async(session, ref(session, "nope:1b"), ChatRequest(messages=FRANCE, stream=True))
    assert not result.ok and "404" in result.error and "nope:1b" in result.error


def test_a_load_level_runs_on_the_event_loop(served):
    session, server, model = served
    run = run_level_async(session.async_infer(model), lambda i: ChatRequest(messages=FRANCE, stream=True),
                          Level(concurrency=4), requests=8, duration=None, warmup=0)
    assert len(run.samples) == 5 + 8 and all(s.result.ok and s.ttft_s for s in run.samples)  # the ramp-up's 5, then 8
