"""infer: /api/chat streamed and not, stamps as metrics.md defines them, the server's figures, and every failure
as an error result (never a raise). The stand-in runs in this process, so its emission stamps and ours share a clock."""

from __future__ import annotations

import json
import struct
import time
import zlib

import pytest
from jarvis_core.api import ChatRequest, Message, shared_client

from jarvis_ollama import client
from tests.standins.ollama_server import MID_STREAM_ERROR

FRANCE = [Message("user", "What is the capital of France?")]


def png(width: int = 3, height: int = 2) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 10)) + \
        chunk(b"IEND", b"")


@pytest.fixture
def served(session_for, standin, ref):
    """(session, server, model) with qwen2.5:0.5b on a running stand-in."""
    server = standin(models=["qwen2.5:0.5b", {"name": "llava:7b", "vision": True},
                             {"name": "qwen3:0.6b", "thinking": True}], token_delay=0.003)
    session = session_for(port=server.port)
    return session, server, ref(session, "qwen2.5:0.5b")


def test_streamed_answer_with_stamps(served):
    session, server, model = served
    result = session.infer(model, ChatRequest(messages=FRANCE, stream=True))
    assert result.ok, result.error
    assert result.text == "The capital of France is Paris."
    assert result.finish_reason == "stop"
    emission = [e for e in server.emissions if e.path == "/api/chat"][-1]
    content_chunks = [c for c in emission.chunks if isinstance(c, dict) and c.get("message", {}).get("content")]
    assert len(result.chunk_times) == len(content_chunks)
    # every stamp is taken after the server wrote the bytes, and in order
    assert result.t_send < emission.chunk_times[0] < result.t_first_byte <= result.t_first_token
    assert result.t_first_token == result.chunk_times[0]
    for sent, arrived in zip(emission.chunk_times, result.chunk_times):
        assert arrived > sent
    assert result.t_last_token == result.chunk_times[-1] <= result.t_end
    assert result.chunk_times == sorted(result.chunk_times)
    # the server's figures, and token counts from the server
    final = emission.chunks[-1]
    assert result.output_tokens == final["eval_count"] and result.token_source == "server"
    assert result.prompt_tokens == final["prompt_eval_count"]
    assert set(result.server) == set(client.SERVER_FIELDS)
    assert result.server["eval_duration"] == final["eval_duration"] > 0
    assert result.server["total_duration"] == final["total_duration"]


def test_non_streamed_answer(served):
    session, server, model = served
    result = session.infer(model, ChatRequest(messages=FRANCE, stream=False))
    assert result.ok, result.error
    assert result.text == "The capital of France is Paris."
    assert result.t_first_token is None and result.chunk_times == []
    assert result.t_send < result.t_first_byte <= result.t_last_token == result.t_end
    assert result.output_tokens and result.token_source == "server"
    assert result.server["eval_count"] == result.output_tokens


def test_thinking_counts_as_the_first_token():
    """A reasoning model streams `message.thinking` before its answer: TTFT ends at the first thinking piece, and
    the thinking is not part of the answer's text."""
    think = json.dumps({"message": {"role": "assistant", "content": "", "thinking": "Hmm."}, "done": False})
    lines = [think.encode() + b"\n", line("Paris"), final(eval_count=2)]
    result = client.chat(mock_server(lines), "qwen3:0.6b", ChatRequest(messages=FRANCE, stream=True))
    assert result.ok, result.error
    assert result.t_first_token == result.chunk_times[0] and len(result.chunk_times) == 2
    assert result.text == "Paris" and result.output_tokens == 2


def test_options_keep_alive_and_context(session_for, standin, ref):
    """The request's sampling settings go into `options`; the context size and keep_alive come from the engine's
    settings (engines.ollama.num_ctx and keep_alive), not from the request."""
    server = standin()
    session = session_for(port=server.port, num_ctx=2048, keep_alive="1m")
    model = ref(session, "qwen2.5:0.5b")
    request = ChatRequest(messages=[Message("user", "count to 50")], stream=True, max_tokens=5, temperature=0.0,
                          seed=7)
    body = client.chat_body(model.name, request, keep_alive="1m", num_ctx=2048)
    assert body["options"] == {"temperature": 0.0, "num_predict": 5, "seed": 7, "num_ctx": 2048}
    assert body["keep_alive"] == "1m"
    result = session.infer(model, request)
    assert result.ok and result.finish_reason == "length" and result.output_tokens == 5
    with client.client_for(server.url) as http:
        loaded = {m["name"]: m for m in client.ps(http)}
    assert loaded["qwen2.5:0.5b"]["context_length"] == 2048


def test_configured_num_ctx_and_keep_alive(session_for, standin, ref):
    server = standin()
    session = session_for(port=server.port, num_ctx=1024, keep_alive=0)
    result = session.infer(ref(session, "qwen2.5:0.5b"), ChatRequest(messages=FRANCE))
    assert result.ok
    deadline = time.monotonic() + 5  # keep_alive 0: unloaded right after the answer (just after it was sent)
    while server.loaded and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.loaded == []
    body = client.chat_body("m", ChatRequest(messages=FRANCE), keep_alive=0, num_ctx=1024)
    assert body["options"] == {"num_ctx": 1024} and body["keep_alive"] == 0


def test_images_are_sent_as_plain_base64(served, ref):
    session, server, _ = served
    image = png(3, 2)
    request = ChatRequest(messages=[Message("user", "What is in this picture?", images=(image,))], stream=True)
    body = client.chat_body("llava:7b", request, keep_alive=None)
    encoded = body["messages"][0]["images"][0]
    assert not encoded.startswith("data:")
    result = session.infer(ref(session, "llava:7b"), request)
    assert result.ok, result.error
    assert "3x2 PNG" in result.text


def test_unknown_model_is_an_error_result(served, ref):
    session, _, _ = served
    result = session.infer(ref(session, "nope:1b"), ChatRequest(messages=FRANCE, stream=True))
    assert not result.ok
    assert "404" in result.error and "nope:1b" in result.error
    assert result.t_end is not None


@pytest.mark.parametrize("stream", [True, False])
def test_error_line_inside_the_stream(served, stream):
    session, server, model = served
    server.add_fault("error", after_chunks=3, endpoint="chat")
    result = session.infer(model, ChatRequest(messages=FRANCE, stream=stream))
    assert not result.ok
    assert MID_STREAM_ERROR in result.error
    if stream:
        assert len(result.chunk_times) == 3 and result.text


@pytest.mark.parametrize("stream", [True, False])
def test_engine_dying_mid_stream(served, stream):
    session, server, model = served
    server.add_fault("die", after_chunks=2, endpoint="chat")
    result = session.infer(model, ChatRequest(messages=FRANCE, stream=stream))
    assert not result.ok
    assert "died" in result.error or "broke" in result.error or "unreadable" in result.error
    assert result.t_end is not None


def test_hung_stream_times_out(served):
    session, server, model = served
    server.add_fault("hang", after_chunks=2, endpoint="chat", seconds=5)
    result = session.infer(model, ChatRequest(messages=FRANCE, stream=True, timeout=0.5))
    assert not result.ok and "timed out" in result.error
    assert len(result.chunk_times) == 2


def test_busy_server_is_an_error_result(served):
    session, server, model = served
    server.add_fault("status", status=503, endpoint="chat")
    result = session.infer(model, ChatRequest(messages=FRANCE, stream=True))
    assert not result.ok and "503" in result.error and "busy" in result.error


def test_server_down_is_an_error_result(session_for, ref):
    session = session_for()
    result = session.infer(ref(session, "qwen2.5:0.5b"), ChatRequest(messages=FRANCE, stream=True))
    assert not result.ok and "cannot reach Ollama" in result.error


def mock_server(lines: list[bytes]):
    """An httpx client whose every request is answered 200 with these NDJSON lines (a stream)."""
    import httpx

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=iter(lines), headers={"Content-Type": "application/x-ndjson"})
    return httpx.Client(base_url="http://ollama.test", transport=httpx.MockTransport(handler))


def line(content: str) -> bytes:
    return json.dumps({"message": {"role": "assistant", "content": content}, "done": False}).encode() + b"\n"


def final(**fields) -> bytes:
    return json.dumps({"message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "stop",
                       **fields}).encode() + b"\n"


def test_stream_parsing_of_odd_lines():
    """Blank lines are skipped; an unreadable line and a stream without its `done` line are errors."""
    request = ChatRequest(messages=FRANCE, stream=True)
    ok = client.chat(mock_server([line(""), b"\n", line("Hi"), final(eval_count=1)]), "m", request)
    assert ok.ok and ok.text == "Hi" and len(ok.chunk_times) == 1 and ok.server["load_duration"] == 0
    assert ok.t_first_token == ok.chunk_times[0]  # the empty chunk did not count as the first token
    cut = client.chat(mock_server([line("Hi")]), "m", request)
    assert not cut.ok and "ended before" in cut.error
    assert cut.output_tokens == 1 and cut.token_source == "estimated"
    garbage = client.chat(mock_server([line("Hi"), b"{oops\n"]), "m", request)
    assert not garbage.ok and "unreadable" in garbage.error


@pytest.fixture
def connects(monkeypatch):
    """`connects(port)`: how many TCP connections were opened to that port; each one is made 0.2 s slow."""
    import socket

    original = socket.create_connection
    made: list[int] = []

    def slow_connect(address, *args, **kwargs):
        made.append(address[1])
        time.sleep(0.2)
        return original(address, *args, **kwargs)

    monkeypatch.setattr(socket, "create_connection", slow_connect)
    return lambda port: made.count(port)


def test_t_send_leaves_out_the_connect_and_connections_are_reused(session_for, standin, ref, connects):
    """t_send is "request written" (httpx's trace, as jarvis_core.openai_api stamps it): a slow TCP connect is not
    part of TTFT. One client per address: warmup and the requests after it share one warm connection."""
    server = standin(token_delay=0.001)
    session = session_for(port=server.port)
    model = ref(session, "qwen2.5:0.5b")
    began = time.perf_counter_ns()
    first = session.infer(model, ChatRequest(messages=FRANCE, stream=True))
    assert first.ok, first.error
    assert first.t_send - began >= 200_000_000  # stamped after the (slow) connect, not before it
    assert first.t_first_token - first.t_send < 200_000_000
    for stream in (True, False, True):
        assert session.infer(model, ChatRequest(messages=FRANCE, stream=stream)).ok
    session.warmup(model)
    assert session.infer(model, ChatRequest(messages=FRANCE, stream=True)).ok
    assert connects(server.port) == 1
    pooled = shared_client(server.url)
    session.stop("ollama")
    assert pooled.is_closed  # stop closes the shared client
    assert shared_client(server.url) is not pooled
