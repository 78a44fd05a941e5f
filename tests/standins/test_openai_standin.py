"""The vLLM-style stand-in speaks the protocol the official `openai` client expects."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import openai
import pytest

try:
    from .openai_server import OpenAIStandin, answer_for, tokenize
except ImportError:  # collected without the package context
    from tests.standins.openai_server import OpenAIStandin, answer_for, tokenize

REPO = Path(__file__).resolve().parents[2]
SERVER_FILE = Path(__file__).resolve().with_name("openai_server.py")
FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


def client_for(server: OpenAIStandin, api_key: str = "x") -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url + "/v1", api_key=api_key, max_retries=0, timeout=10)


def sse_events(raw: str) -> list[str]:
    """The `data:` payloads of an SSE body, skipping comments and blank lines."""
    return [line[6:] for line in raw.splitlines() if line.startswith("data: ")]


@pytest.fixture
def server():
    with OpenAIStandin(models=["qwen-7b"], root="Qwen/Qwen2.5-7B-Instruct", max_model_len=4096) as s:
        yield s


def test_tokenize_round_trips_and_answers_are_deterministic():
    for text in ("The capital of France is Paris.", "2 + 2 = 4.", "  odd  spacing\n", "é, ü!"):
        assert "".join(tokenize(text)) == text
    assert tokenize("The capital of France is Paris.") == ["The", " capital", " of", " France", " is", " Paris", "."]
    assert answer_for("What is the Capital of  France?") == "The capital of France is Paris."
    assert answer_for("what is 2+2") == "2 + 2 = 4."
    assert answer_for("tell me a story") == answer_for("tell me a story") != answer_for("another one")


def test_operational_endpoints(server):
    h = httpx.get(server.url + "/health")
    assert (h.status_code, h.content) == (200, b"")
    assert httpx.get(server.url + "/version").json() == {"version": "0.11.0"}
    models = client_for(server).models.list().data
    assert [m.id for m in models] == ["qwen-7b"]
    assert models[0].root == "Qwen/Qwen2.5-7B-Instruct" and models[0].max_model_len == 4096
    assert httpx.get(server.url + "/nope").status_code == 404


def test_chat_stream_with_usage_chunk(server):
    stream = client_for(server).chat.completions.create(
        model="qwen-7b", messages=FRANCE, stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    content = [c.choices[0].delta.content for c in chunks[1:] if c.choices and c.choices[0].delta.content]
    assert "".join(content) == "The capital of France is Paris."
    assert chunks[-2].choices[0].finish_reason == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == len(content) == 7
    assert chunks[-1].usage.total_tokens == chunks[-1].usage.prompt_tokens + 7
    kinds = [k for k, _ in server.emissions[0]]
    assert kinds == ["received", "headers", "role"] + ["token"] * 7 + ["finish", "usage", "done"]
    metrics = httpx.get(server.url + "/metrics").text
    assert 'vllm:generation_tokens_total{engine="0",model_name="qwen-7b"} 7.0' in metrics
    assert re.search(r'vllm:request_success_total\{[^}]*finished_reason="stop"[^}]*\} 1\.0', metrics)
    assert 'vllm:time_to_first_token_seconds_count{engine="0",model_name="qwen-7b"} 1.0' in metrics


def test_chat_stream_without_usage_and_raw_wire_format(server):
    with httpx.stream("POST", server.url + "/v1/chat/completions", json={
            "model": "qwen-7b", "stream": True, "messages": [{"role": "user", "content": "2+2?"}]}) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["transfer-encoding"] == "chunked"
        events = sse_events(r.read().decode())
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert all(p["choices"] for p in parsed) and not any("usage" in p for p in parsed)
    assert "".join(p["choices"][0]["delta"].get("content") or "" for p in parsed) == "2 + 2 = 4."
    assert parsed[0]["object"] == "chat.completion.chunk" and parsed[0]["id"].startswith("chatcmpl-")


def test_chat_non_stream_and_max_tokens(server):
    c = client_for(server)
    r = c.chat.completions.create(model="qwen-7b", messages=FRANCE)
    assert r.choices[0].message.content == "The capital of France is Paris."
    assert r.choices[0].finish_reason == "stop" and r.usage.completion_tokens == 7
    r = c.chat.completions.create(model="qwen-7b", messages=FRANCE, max_tokens=3)
    assert r.choices[0].message.content == "The capital of" and r.choices[0].finish_reason == "length"
    r = c.chat.completions.create(model="qwen-7b", messages=FRANCE, max_tokens=50,
                                  extra_body={"ignore_eos": True})
    assert r.usage.completion_tokens == 50 and r.choices[0].finish_reason == "length"


def test_completions_stream_and_not(server):
    c = client_for(server)
    r = c.completions.create(model="qwen-7b", prompt="The capital of France is", max_tokens=64)
    assert r.choices[0].text == "The capital of France is Paris." and r.usage.completion_tokens == 7
    chunks = list(c.completions.create(model="qwen-7b", prompt="2+2=", max_tokens=64, stream=True,
                                       stream_options={"include_usage": True}))
    assert "".join(ch.choices[0].text for ch in chunks if ch.choices) == "2 + 2 = 4."
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 6


@pytest.mark.parametrize("stream", [False, True])
def test_unknown_model_nested_error(server, stream):
    with pytest.raises(openai.NotFoundError) as ei:
        client_for(server).chat.completions.create(model="qwen-8b", messages=FRANCE, stream=stream)
    assert ei.value.status_code == 404
    r = httpx.post(server.url + "/v1/chat/completions",
                   json={"model": "qwen-8b", "stream": stream, "messages": FRANCE})
    assert r.status_code == 404 and r.headers["content-type"] == "application/json"
    assert r.json() == {"error": {"message": "The model `qwen-8b` does not exist.", "type": "NotFoundError",
                                  "param": "model", "code": 404}}


def test_unknown_model_legacy_flat_error():
    with OpenAIStandin(models=["qwen-7b"], error_shape="flat") as s:
        with pytest.raises(openai.NotFoundError) as ei:
            client_for(s).chat.completions.create(model="x", messages=FRANCE)
        assert "does not exist" in ei.value.message
        body = httpx.post(s.url + "/v1/chat/completions", json={"model": "x", "messages": FRANCE}).json()
        assert body == {"object": "error", "message": "The model `x` does not exist.", "type": "NotFoundError",
                        "param": None, "code": 404}


def test_bad_requests(server):
    url = server.url + "/v1/chat/completions"
    r = httpx.post(url, content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["type"] == "BadRequestError"
    r = httpx.post(url, json={"model": "qwen-7b"})
    assert r.status_code == 400 and r.json()["error"]["code"] == 400 and "messages" in r.json()["error"]["message"]
    c = client_for(server)
    with pytest.raises(openai.BadRequestError):
        c.chat.completions.create(model="qwen-7b", messages=FRANCE, max_tokens=10_000)
    image = {"role": "user", "content": [{"type": "text", "text": "What is this?"},
                                         {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]}
    with pytest.raises(openai.BadRequestError, match="multimodal"):
        c.chat.completions.create(model="qwen-7b", messages=[image])
    with OpenAIStandin(models=["qwen-vl"], vision=True) as vs:
        r = client_for(vs).chat.completions.create(model="qwen-vl", messages=[image])
        assert r.choices[0].message.content and r.usage.prompt_tokens > 64


def test_error_event_after_streaming_began():
    with OpenAIStandin(models=["m"], error_after_chunks=3) as s:
        stream = client_for(s).chat.completions.create(model="m", messages=FRANCE, stream=True)
        got = []
        with pytest.raises(openai.APIError, match="engine failed"):
            for chunk in stream:
                got.append(chunk)
        assert len(got) == 3
        with httpx.stream("POST", s.url + "/v1/chat/completions",
                          json={"model": "m", "stream": True, "messages": FRANCE}) as r:
            events = sse_events(r.read().decode())
        assert json.loads(events[-2])["error"]["code"] == 500 and events[-1] == "[DONE]"


def test_engine_dies_mid_stream_then_server_exits():
    with OpenAIStandin(models=["m"], die_after_chunks=2, exit_on_die=True) as s:
        with pytest.raises(httpx.RemoteProtocolError):
            with httpx.stream("POST", s.url + "/v1/chat/completions",
                              json={"model": "m", "stream": True, "messages": FRANCE}) as r:
                r.read()
        assert s.exited.wait(2) and s.exit_code == 1
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/health")
        assert [k for k, _ in s.emissions[0]][-1] == "close"


def test_engine_dies_and_server_stays_up():
    with OpenAIStandin(models=["m"], die_after_chunks=1, die_after_requests=1) as s:
        c = client_for(s)
        assert c.chat.completions.create(model="m", messages=FRANCE).choices[0].message.content
        with pytest.raises(openai.APIConnectionError):
            list(c.chat.completions.create(model="m", messages=FRANCE, stream=True))
        assert httpx.get(s.url + "/health").status_code == 503
        with pytest.raises(openai.InternalServerError):
            c.chat.completions.create(model="m", messages=FRANCE)


def test_api_key():
    with OpenAIStandin(models=["m"], api_key="sekrit") as s:
        r = httpx.get(s.url + "/v1/models")
        assert r.status_code == 401 and r.json() == {"error": "Unauthorized"}
        with pytest.raises(openai.AuthenticationError):
            client_for(s, "wrong").chat.completions.create(model="m", messages=FRANCE)
        assert httpx.get(s.url + "/health").status_code == 200
        assert httpx.get(s.url + "/metrics").status_code == 200
        assert client_for(s, "sekrit").chat.completions.create(model="m", messages=FRANCE).choices


def test_ready_after_refuses_connections_until_bound():
    with OpenAIStandin(models=["m"], ready_after=0.4) as s:
        t0 = time.monotonic()
        with pytest.raises(httpx.ConnectError):
            httpx.get(s.url + "/v1/models", timeout=1)
        while True:
            try:
                r = httpx.get(s.url + "/v1/models", timeout=1)
                break
            except httpx.ConnectError:
                assert time.monotonic() - t0 < 3
                time.sleep(0.02)
        assert r.json()["data"][0]["id"] == "m" and time.monotonic() - t0 >= 0.35


def test_ready_mode_503_and_manual_ready():
    with OpenAIStandin(models=["m"], ready_after=float("inf"), ready_mode="503") as s:
        assert httpx.get(s.url + "/health").status_code == 503
        assert httpx.get(s.url + "/v1/models").json()["data"] == []
        assert httpx.post(s.url + "/v1/chat/completions", json={"model": "m", "messages": FRANCE}).status_code == 503
        s.make_ready()
        assert s.wait_ready(2)
        assert httpx.get(s.url + "/health").status_code == 200
        assert httpx.get(s.url + "/v1/models").json()["data"][0]["id"] == "m"


def test_ready_mode_reset_drops_connections():
    with OpenAIStandin(models=["m"], ready_after=30, ready_mode="reset") as s:
        with pytest.raises(httpx.TransportError):
            httpx.get(s.url + "/v1/models", timeout=2)


def test_llamacpp_flavour():
    with OpenAIStandin(models=["smol"], flavour="llamacpp", token_delay=0.01) as s:
        assert httpx.get(s.url + "/health").status_code == 404
        c = client_for(s)
        r = c.chat.completions.create(model="anything-at-all", messages=FRANCE)
        assert r.choices[0].message.content == "The capital of France is Paris."
        chunks = list(c.chat.completions.create(model="smol", messages=FRANCE, stream=True,
                                                stream_options={"include_usage": True}))
        assert all(ch.choices for ch in chunks) and all(ch.usage is None for ch in chunks)
        assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content is None
        bad = httpx.post(s.url + "/v1/chat/completions", content=b"{")
        assert bad.status_code == 500
        # served one at a time: the second request starts after the first one ended
        threads = [threading.Thread(target=c.chat.completions.create,
                                    kwargs={"model": "smol", "messages": FRANCE}) for _ in range(2)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        a, b = (dict((k, t) for k, t in s.requests[i]["emissions"]) for i in (-2, -1))
        first, second = sorted((a, b), key=lambda e: e["response"])
        assert second["scheduled"] >= first["response"]


def test_scripted_timing_and_emission_stamps():
    with OpenAIStandin(models=["m"], tokens=["Hel", "lo", "!"], role_delay=0.05, first_token_delay=0.15,
                       token_delay=0.02, comments=1, keepalives=1, empty_chunks=1) as s:
        t_send = time.perf_counter_ns()
        stamps = []
        with httpx.stream("POST", s.url + "/v1/chat/completions",
                          json={"model": "m", "stream": True, "messages": FRANCE}) as r:
            for line in r.iter_lines():
                stamps.append((time.perf_counter_ns(), line))
        em = s.emissions[0]
        kinds = [k for k, _ in em]
        assert kinds == ["received", "headers", "role", "empty", "comment", "keepalive", "token",
                         "comment", "keepalive", "token", "comment", "keepalive", "token",
                         "finish", "done"]
        at = {}
        for k, t in em:
            at.setdefault(k, t)
        t0 = at["received"]
        assert 0.05e9 <= at["role"] - t0 < 0.12e9
        tokens = [t for k, t in em if k == "token"]
        for i, t in enumerate(tokens):   # absolute deadlines: t0 + 0.15 + i * 0.02
            assert 0 <= t - (t0 + 150_000_000 + i * 20_000_000) < 60_000_000
        first_token_line = next(t for t, line in stamps if '"content":"Hel"' in line)
        assert first_token_line >= tokens[0] >= t0 >= t_send
        assert [line for _, line in stamps if line.startswith(":")] == [": ping"] * 3


def _free_port() -> int:
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        return sk.getsockname()[1]


def _start_cli(args: list[str], as_script: bool = False) -> tuple[subprocess.Popen, int, list[str]]:
    cmd = [sys.executable, str(SERVER_FILE)] if as_script else [sys.executable, "-m", "tests.standins.openai_server"]
    proc = subprocess.Popen(cmd + args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    deadline = time.monotonic() + 10
    port = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        m = re.search(r"Uvicorn running on http://[\d.]+:(\d+)", line)
        if m:
            port = int(m.group(1))
            break
    assert port is not None, f"no startup line; got {lines!r}; stderr {proc.stderr.read() if proc.poll() is not None else ''}"
    return proc, port, lines


def test_cli_serves_and_exits_on_sigterm():
    port = _free_port()
    proc, got, lines = _start_cli(["Qwen/Qwen2.5-0.5B-Instruct", "--host", "127.0.0.1", "--port", str(port),
                                   "--served-model-name", "qwen-small", "--max-model-len", "2048",
                                   "--gpu-memory-utilization", "0.5", "--enforce-eager", "--dtype", "half",
                                   "--some-future-flag", "value", "--ready-after", "0.2"])
    try:
        assert got == port
        assert any("Application startup complete." in line for line in lines)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models").json()["data"]
        assert (models[0]["id"], models[0]["root"], models[0]["max_model_len"]) == \
            ("qwen-small", "Qwen/Qwen2.5-0.5B-Instruct", 2048)
        c = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="x", max_retries=0)
        assert c.chat.completions.create(model="qwen-small", messages=FRANCE).choices[0].message.content == \
            "The capital of France is Paris."
        t = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(5) == 0 and time.monotonic() - t < 2
        with pytest.raises(httpx.ConnectError):
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_as_script_exits_after_requests():
    proc, port, _ = _start_cli(["m", "--host", "127.0.0.1", "--port", "0", "--exit-after-requests", "1"],
                               as_script=True)
    try:
        r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", json={"model": "m", "prompt": "2+2="})
        assert r.json()["choices"][0]["text"] == "2 + 2 = 4."
        assert proc.wait(5) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def test_cli_fails_when_port_taken():
    with socket.socket() as sk:
        sk.bind(("127.0.0.1", 0))
        sk.listen()
        port = sk.getsockname()[1]
        r = subprocess.run([sys.executable, str(SERVER_FILE), "m", "--host", "127.0.0.1", "--port", str(port)],
                           capture_output=True, text=True, timeout=10)
    assert r.returncode == 1 and "address already in use" in r.stderr
