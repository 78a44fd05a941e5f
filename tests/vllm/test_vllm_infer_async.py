"""infer_async (load levels drive it from one event loop) reads every vLLM answer exactly as infer does, sends the
same engine fields (exact token counts) and the server's authentication."""

from __future__ import annotations

import base64
import http.server
import json

import pytest

from jarvis_core.engine import ChatRequest, Message
from jarvis_core.load import Level, LoadProfile, workload
from jarvis_core.load_async import run_level_async
from jarvis_core.testing import infer_async
from jarvis_core.testing import serve

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.standins.openai_server import OpenAIStandin

FRANCE = [Message("user", "What is the capital of France?")]
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def server():
    with OpenAIStandin(models=["qwen-small"], root=MODEL, token_delay=0.002) as srv:
        yield srv


@pytest.fixture
def remote(session_for, server):
    return session_for(url=server.url, models={MODEL: {"served_name": "qwen-small"}})


@pytest.mark.parametrize("stream", [True, False])
def test_hook_infer_async_answers_as_infer_does(remote, stream):
    ref = remote.resolve(f"vllm:{MODEL}")
    request = ChatRequest(FRANCE, stream=stream, max_tokens=32)
    a, b = remote.infer(ref, request), infer_async(remote, ref, request)
    assert b.ok and "Paris" in b.text
    assert (b.text, b.output_tokens, b.token_source, b.prompt_tokens, b.finish_reason) == \
        (a.text, a.output_tokens, a.token_source, a.prompt_tokens, a.finish_reason)
    if stream:
        assert b.t_send < b.t_first_byte <= b.t_first_token <= b.t_last_token <= b.t_end


def test_a_pinned_load_level_sends_vllms_fields(remote, server):
    ref = remote.resolve(f"vllm:{MODEL}")
    make = workload([], LoadProfile(prompt_tokens=16, output_tokens=6), max_tokens=None, timeout=10)
    run = run_level_async(remote.async_infer(ref), make, Level(concurrency=3), requests=6, duration=None, warmup=0)
    assert len(run.samples) == 4 + 6 and all(s.result.ok for s in run.samples)  # the ramp-up's 4, then 6
    body = server.requests[-1]["body"]
    assert (body["model"], body["ignore_eos"], body["min_tokens"], body["max_tokens"]) == ("qwen-small", True, 6, 6)


def test_user_information_in_the_url_is_sent_as_basic_auth(session_for):
    wanted = "Basic " + base64.b64encode(b"jarvis:s3cret-pw").decode()
    seen = []

    class Guarded(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            seen.append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == wanted
            body = json.dumps({"choices": [{"message": {"content": "Paris."}, "finish_reason": "stop"}],
                               "usage": {"completion_tokens": 2, "prompt_tokens": 7}} if ok
                              else {"error": {"message": "unauthorized"}}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    with serve(Guarded) as url:
        session = session_for(url=url.replace("http://", "http://jarvis:s3cret-pw@"), served_name="tiny")
        result = infer_async(session, session.resolve("vllm:org/tiny"), ChatRequest(FRANCE))
    assert result.ok and result.text == "Paris." and seen == [wanted]
