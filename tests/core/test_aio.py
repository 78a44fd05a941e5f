"""The event-loop OpenAI client (`aio.openai_chat_async`, used by load levels) reads every answer exactly as the
threaded one (`openai_api.chat`) does, against the protocol-faithful stand-in: the same text, counts, finish reason
and errors, stamps in order; and the `infer_async` hook reaches only the engine's own plugin."""

from __future__ import annotations

import asyncio
import socket

import pytest

from jarvis_core.aio import close_sessions, openai_chat_async, session_for
from jarvis_core.api import ChatRequest, EngineError, InferResult, Message, hookimpl, openai_chat
from jarvis_core.http import make_client
from jarvis_core.load import Level
from jarvis_core.load_async import run_level_async
from engines_fixture import EchoPlugin
from tests.standins.openai_server import OpenAIStandin

FRANCE = [Message("user", "What is the capital of France?")]


def both(url: str, model: str, request: ChatRequest, **options) -> tuple[InferResult, InferResult]:
    with make_client(url) as client:
        threaded = openai_chat(client, model, request, **options)

    async def one() -> InferResult:
        try:
            return await openai_chat_async(url, model, request, **options)
        finally:
            await close_sessions()

    return threaded, asyncio.run(one())


def same_reading(a: InferResult, b: InferResult) -> None:
    assert (b.ok, b.text, b.output_tokens, b.token_source, b.prompt_tokens, b.finish_reason) == \
        (a.ok, a.text, a.output_tokens, a.token_source, a.prompt_tokens, a.finish_reason)
    assert len(b.chunk_times) == len(a.chunk_times)
    if b.ok and b.stream:
        assert b.t_send < b.t_first_byte <= b.t_first_token <= b.t_last_token <= b.t_end


@pytest.mark.parametrize("stream", [True, False])
def test_answers_read_the_same_as_the_threaded_client(stream):
    with OpenAIStandin(models=["m"], comments=2, keepalives=2, empty_chunks=2, role_delay=0.01) as srv:
        threaded, looped = both(srv.url, "m", ChatRequest(FRANCE, stream=stream, max_tokens=32))
    assert looped.ok and "Paris" in looped.text
    same_reading(threaded, looped)


def test_ttft_ends_at_the_first_content_chunk_not_the_role_chunk():
    with OpenAIStandin(models=["m"], role_delay=0.0, first_token_delay=0.3) as srv:
        _, looped = both(srv.url, "m", ChatRequest(FRANCE, stream=True))
    assert looped.ok and (looped.t_first_token - looped.t_send) / 1e9 >= 0.28
    assert (looped.t_first_byte - looped.t_send) / 1e9 < 0.2, "the role chunk came first and was not taken for TTFT"


def test_usage_missing_gives_estimated_counts():
    with OpenAIStandin(models=["m"], honour_include_usage=False) as srv:
        threaded, looped = both(srv.url, "m", ChatRequest(FRANCE, stream=True))
    assert looped.token_source == "estimated" and looped.output_tokens == len(looped.chunk_times)
    same_reading(threaded, looped)


@pytest.mark.parametrize("stream", [True, False])
def test_error_bodies_are_error_results(stream):
    with OpenAIStandin(models=["served"]) as srv:
        threaded, looped = both(srv.url, "unknown", ChatRequest(FRANCE, stream=stream))
    assert not looped.ok and looped.error == threaded.error
    assert looped.error.startswith("HTTP 404: The model `unknown` does not exist")


def test_an_error_inside_the_stream_and_an_engine_dying_mid_answer():
    with OpenAIStandin(models=["m"], error_after_chunks=2, stream_error_message="engine exploded") as srv:
        threaded, looped = both(srv.url, "m", ChatRequest(FRANCE, stream=True))
    assert not looped.ok and "engine exploded" in looped.error and looped.error == threaded.error
    with OpenAIStandin(models=["m"], die_after_chunks=2) as srv:  # dead after one answer: the async client goes first

        async def one() -> InferResult:
            try:
                return await openai_chat_async(srv.url, "m", ChatRequest(FRANCE, stream=True))
            finally:
                await close_sessions()

        looped = asyncio.run(one())
    assert not looped.ok and ("broke" in looped.error or "ended before" in looped.error), looped.error


def test_nothing_listening_and_a_timeout_are_error_results():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, looped = both(f"http://127.0.0.1:{port}", "m", ChatRequest(FRANCE, stream=True, timeout=5))
    assert not looped.ok and looped.error.startswith("cannot reach the engine")
    with OpenAIStandin(models=["m"], first_token_delay=3.0) as srv:
        _, looped = both(srv.url, "m", ChatRequest(FRANCE, stream=True, timeout=0.5))
    assert looped.error == "timed out after 0.5 s"


def test_extra_fields_reach_the_engine_and_connections_are_reused():
    with OpenAIStandin(models=["m"]) as srv:
        async def three() -> list[InferResult]:
            try:
                return [await openai_chat_async(srv.url, "m", ChatRequest(FRANCE, stream=True, max_tokens=5),
                                                extra={"ignore_eos": True}) for _ in range(3)]
            finally:
                connector = session_for(srv.url).connector
                opened = len(connector._conns.get(next(iter(connector._conns)), [])) if connector._conns else 0
                await close_sessions()
                assert opened == 1, "the three requests went over one kept-alive connection"

        results = asyncio.run(three())
        assert all(r.ok for r in results)
        assert srv.requests[-1]["body"]["ignore_eos"] is True and srv.requests[-1]["body"]["max_tokens"] == 5


# --- the infer_async hook -----------------------------------------------------------------------------------------


class AsyncEngine(EchoPlugin):
    """The in-memory engine plus `infer_async`, answering from the stand-in at `url`."""

    def __init__(self, url: str) -> None:
        super().__init__("asyncy", ("as_",))
        self.url = url

    @hookimpl
    def infer_async(self, ctx, model, request):
        self.calls.append(("infer_async", model.name))
        return openai_chat_async(self.url, "m", request)


def test_hook_infer_async(use_plugin, make_session):
    """Load levels use `infer_async` when the engine's plugin has it, and only it."""
    with OpenAIStandin(models=["m"]) as srv:
        plugin = use_plugin(AsyncEngine(srv.url), "asyncy-plugin")
        session = make_session()
        send = session.async_infer(session.resolve("as_m"))
        assert send is not None
        run = run_level_async(send, lambda i: ChatRequest(FRANCE, stream=True), Level(concurrency=3), requests=6,
                              duration=None, warmup=0)
    assert len(run.samples) == 4 + 6 and all(s.result.ok and "Paris" in s.result.text for s in run.samples)
    assert [c[0] for c in plugin.calls] == ["infer_async"] * 10  # the ramp-up's 4 (warm-up), then 6 measured


def test_engines_without_infer_async_get_no_async_sender(use_plugin, make_session):
    use_plugin(EchoPlugin(), "echo-plugin")
    session = make_session()
    assert session.async_infer(session.resolve("echo_m")) is None


def test_an_exception_inside_infer_async_is_blamed_on_the_plugin(use_plugin, make_session):
    class Broken(AsyncEngine):
        @hookimpl
        def infer_async(self, ctx, model, request):
            async def boom():
                raise ValueError("bad parse")
            return boom()

    use_plugin(Broken("http://127.0.0.1:9"), "broken-async")
    session = make_session()
    send = session.async_infer(session.resolve("as_m"))
    with pytest.raises(EngineError, match="infer_async failed in plugin 'broken-async': ValueError: bad parse"):
        asyncio.run(send(ChatRequest(FRANCE)))
