"""Measurements against servers whose emission times are known: the vLLM-like stand-in runs in this process and stamps
every write with the same clock (`time.perf_counter_ns`) the client stamps arrivals with, so each client stamp can be
set against the server's. The assertions are orderings and definitions (metrics.md), never absolute timings: the
gaps the server is told to leave (role_delay, first_token_delay, token_delay) are what the orderings rely on.
"""

from __future__ import annotations

import json
import math
import time

import httpx
import pytest

from jarvis_core import openai_api
from jarvis_core.engine import ChatRequest, Message
from jarvis_core.http import make_client
from jarvis_core.metrics import figures
from tests.standins.ollama_server import OllamaStandin
from tests.standins.openai_server import OpenAIStandin

from tests.run.conftest import records, samples

MODEL = "Org/Timed"
TOKENS = ["The", " capital", " of", " France", " is", " Paris", "."]


@pytest.fixture
def server():
    started = []

    def make(**options) -> OpenAIStandin:
        options.setdefault("tokens", TOKENS)
        srv = OpenAIStandin(models=[MODEL], **options).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()


def ask(srv: OpenAIStandin, stream: bool = True, **kwargs):
    request = ChatRequest(messages=[Message("user", "What is the capital of France?")], stream=stream,
                          max_tokens=64, timeout=10)
    with make_client(srv.url) as client:
        return openai_api.chat(client, MODEL, request, **kwargs)


def stamps(srv: OpenAIStandin, kind: str, index: int = -1) -> list[int]:
    """The server's write stamps of one kind (`role`, `token`, `empty`, `comment`, `keepalive`, `usage`, ...)."""
    return [t for k, t in srv.emissions[index] if k == kind]


def test_ttft_ends_at_the_first_non_empty_token_not_the_role_chunk(server) -> None:
    gap = 0.2
    srv = server(role_delay=0.02, first_token_delay=0.02 + gap, token_delay=0.005, empty_chunks=2)
    result = ask(srv)
    assert result.ok, result.error
    [role] = stamps(srv, "role")
    empties = stamps(srv, "empty")
    first_token = stamps(srv, "token")[0]
    assert len(empties) == 2 and role < min(empties) and max(empties) < first_token
    # t_send is "request written" (the client's send completed); the server may finish reading it a moment before
    # the client thread takes that stamp, so only the server's first write is certainly later.
    assert result.t_send < role, "the request is written before the server answers"
    # the role chunk is the first byte; it and the empty deltas do not end TTFT
    assert role <= result.t_first_byte < first_token
    assert result.t_first_token >= first_token
    assert result.t_first_token - first_token < (first_token - role) / 2, "stamped when the token arrived"
    measured = figures(result)
    assert measured["ttfb_s"] < measured["ttft_s"] <= measured["e2e_s"]
    assert measured["ttft_s"] >= (first_token - result.t_send) / 1e9
    assert result.text == "".join(TOKENS)


def test_sse_comments_and_keepalives_do_not_end_or_count_in_the_stream(server) -> None:
    srv = server(token_delay=0.01, comments=2, keepalives=2)
    result = ask(srv)
    assert result.ok, result.error
    assert len(stamps(srv, "comment")) == 2 * len(TOKENS) and len(stamps(srv, "keepalive")) == 2 * len(TOKENS)
    assert result.text == "".join(TOKENS), "the whole answer arrived past the comments"
    assert len(result.chunk_times) == len(TOKENS), "comments and blank lines are not content chunks"
    assert result.finish_reason == "stop"
    tokens = stamps(srv, "token")
    assert result.t_first_token >= tokens[0] > stamps(srv, "comment")[0], "a comment is not the first token"
    assert result.t_last_token >= tokens[-1]
    for arrived, written in zip(result.chunk_times, tokens):
        assert arrived >= written


def test_stamps_are_taken_before_parsing(server, monkeypatch: pytest.MonkeyPatch) -> None:
    """With JSON parsing made slow, each token's stamp still sits next to the server's write, not a parse later."""
    parse_s, gap_s = 0.06, 0.15

    class SlowJson:  # the client's json module only; the server parses at full speed
        dumps = staticmethod(json.dumps)

        @staticmethod
        def loads(*args, **kwargs):
            time.sleep(parse_s)
            return json.loads(*args, **kwargs)

    monkeypatch.setattr(openai_api, "json", SlowJson)
    srv = server(tokens=TOKENS[:3], role_delay=0.0, first_token_delay=gap_s, token_delay=gap_s)
    result = ask(srv)
    assert result.ok, result.error
    written = stamps(srv, "token")
    assert len(result.chunk_times) == len(written) == 3
    for arrived, sent in zip(result.chunk_times, written):
        assert sent <= arrived < sent + parse_s * 1e9 / 2, "parsing time leaked into the stamp"
    # and the decode span is the server's, not the server's plus parsing
    server_span = written[-1] - written[0]
    client_span = result.t_last_token - result.t_first_token
    assert abs(client_span - server_span) < parse_s * 1e9 / 2


def test_itl_and_decode_rate_come_from_stamps_and_the_servers_token_count(server) -> None:
    delay = 0.02
    srv = server(token_delay=delay, first_token_delay=0.05)
    result = ask(srv)
    assert result.ok
    rec = srv.requests[-1]
    assert result.output_tokens == rec["completion_tokens"] == len(TOKENS)
    assert result.token_source == "server"
    assert stamps(srv, "usage"), "usage came in its own trailing chunk"
    assert result.t_last_token < result.t_end, "the usage chunk and [DONE] are not the last token"
    measured = figures(result)
    n = result.output_tokens
    assert measured["itl_s"] == pytest.approx((result.t_last_token - result.t_first_token) / 1e9 / (n - 1))
    assert measured["decode_tps"] == pytest.approx(1 / measured["itl_s"])
    assert measured["overall_tps"] == pytest.approx(n / measured["e2e_s"])
    assert measured["overall_tps"] < measured["decode_tps"], "the overall rate includes the time to first token"
    written = stamps(srv, "token")
    server_itl = (written[-1] - written[0]) / (n - 1) / 1e9
    assert abs(measured["itl_s"] - server_itl) < delay / 2, "the client's ITL is the server's token spacing"
    assert measured["token_source"] == "server"


def test_tokens_are_estimated_when_the_server_omits_usage_llamacpp_flavour(server) -> None:
    srv = server(flavour="llamacpp", token_delay=0.002)
    result = ask(srv)
    assert result.ok, result.error
    assert not stamps(srv, "usage"), "llama.cpp's server sends no usage chunk"
    assert result.output_tokens == len(result.chunk_times) == len(stamps(srv, "token"))
    assert result.token_source == "estimated"
    measured = figures(result)
    assert measured["token_source"] == "estimated" and measured["output_tokens"] == len(TOKENS)
    assert measured["itl_s"] == pytest.approx((result.t_last_token - result.t_first_token) / 1e9 / (len(TOKENS) - 1))
    assert result.t_first_token >= stamps(srv, "token")[0] > stamps(srv, "role")[0]


def test_a_vllm_server_ignoring_include_usage_gives_estimated_tokens(server) -> None:
    srv = server(honour_include_usage=False)
    result = ask(srv)
    assert result.ok and result.token_source == "estimated" and result.output_tokens == len(TOKENS)


def test_non_streamed_answer_has_e2e_but_no_ttft_or_itl(server) -> None:
    srv = server(token_delay=0.005)
    result = ask(srv, stream=False)
    assert result.ok, result.error
    assert result.t_first_token is None
    measured = figures(result)
    assert measured["ttft_s"] is None and measured["itl_s"] is None and measured["decode_tps"] is None
    assert measured["output_tokens"] == len(TOKENS) and measured["token_source"] == "server"
    assert measured["ttfb_s"] <= measured["e2e_s"]
    sent = [t for k, t in srv.emissions[-1] if k not in ("received",)]
    assert result.t_last_token >= max(sent), "a non-streamed answer ends when the whole response arrived"


def test_errors_inside_or_at_the_end_of_a_stream_are_errors(server) -> None:
    srv = server(error_after_chunks=3, stream_error_message="boom in the engine")
    result = ask(srv)
    assert result.error == "boom in the engine"
    srv.error_after_chunks = None
    srv.die_after_chunks = 3
    died = ask(srv)
    assert died.error and "engine died" in died.error


# --- through `jarvis run` ------------------------------------------------------------------------------------------


def test_run_records_ttft_to_the_first_token_and_cold_start_apart(campaign, server) -> None:
    gap = 0.15
    srv = server(role_delay=0.01, first_token_delay=0.01 + gap, token_delay=0.002, empty_chunks=1)
    campaign.config(engines={"vllm": {"url": srv.url}})
    campaign.setups("defaults: {repetitions: 3, warmup: 1}\n"
                    "tests:\n  - {id: t, prompt: 'What is the capital of France?', check: {contains: Paris}}\n"
                    f"setups: ['vllm:{MODEL}#stream']\n")
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    timed = samples(campaign.root / "out" / "results.jsonl")
    streamed = [r for r in srv.requests if r["body"].get("stream")]
    assert len(timed) == len(streamed) == 3, "the warmup is not streamed; the three samples are"
    for sample, rec in zip(timed, streamed):
        emissions = dict((k, t) for k, t in reversed(rec["emissions"]))  # first stamp of each kind
        received, role, token = emissions["received"], emissions["role"], emissions["token"]
        # The client stamps t_send once the body is handed over, and the stand-in (a thread of this process) may
        # stamp "received" a moment before that: 5 ms of slack, against a role chunk 150 ms before the token.
        slack = 0.005
        assert sample["ttft_s"] >= (token - received) / 1e9 - slack, "TTFT reaches the first token"
        assert sample["ttfb_s"] >= (role - received) / 1e9 - slack
        assert sample["ttfb_s"] < (token - received) / 1e9, "the role chunk ends TTFB, not TTFT"
        assert sample["output_tokens"] == rec["completion_tokens"] and sample["token_source"] == "server"


def test_ollama_cold_start_includes_loading_and_warm_samples_do_not(campaign) -> None:
    load = 0.3
    with OllamaStandin(models=["qwen2.5:0.5b"], load_seconds=load, token_delay=0.001, prompt_eval_delay=0.001,
                       port=campaign.ollama_port) as ol:
        campaign.setups("defaults: {repetitions: 3, warmup: 1}\n"
                        "tests:\n  - {id: t, prompt: 'What is the capital of France?', check: {contains: Paris}}\n"
                        "setups: ['ol_qwen2.5:0.5b#stream']\n")
        result = campaign.run("run", "--output", "out")
        assert result.exit_code == 0, result.output
        recs = records(campaign.root / "out" / "results.jsonl")
        [engine] = [r for r in recs if r["type"] == "engine"]
        assert engine["started_by_jarvis"] is False, "the running server was reused"
        [warm] = [r for r in recs if r["type"] == "warmup"]
        timed = [r for r in recs if r["type"] == "sample"]
        assert warm["load_s"] >= load and warm["cold_start_s"] >= warm["load_s"]
        assert all(not r["cold"] for r in timed)
        assert max(r["e2e_s"] for r in timed) < warm["cold_start_s"], "warm samples do not pay for the load"
        assert all(r["load_s"] < load for r in timed)
        for r in timed:
            assert r["server_decode_tps"] == pytest.approx(r["server"]["eval_count"] / r["server"]["eval_duration"]
                                                           * 1e9)
        assert ol.loaded == [], "the model Jarvis loaded is unloaded again"
        assert httpx.get(ol.url + "/api/version").status_code == 200, "a server Jarvis did not start keeps running"
    assert math.isfinite(warm["cold_start_s"])
