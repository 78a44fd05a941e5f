"""detect / start (reuse) / warmup / infer / stop against the in-process OpenAI stand-in on a real socket."""

from __future__ import annotations

import pytest

from jarvis_core.engine import ChatRequest, Message
from jarvis_core.errors import EngineError
from jarvis_core.api import WARMUP_PROMPT

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.standins.openai_server import OpenAIStandin, answer_for

FRANCE = [Message("user", "What is the capital of France?")]
MODEL = "Qwen/Qwen2.5-0.5B-Instruct"


@pytest.fixture
def server():
    with OpenAIStandin(models=["qwen-small"], root=MODEL, token_delay=0.002, version="0.11.2") as srv:
        yield srv


@pytest.fixture
def remote(session_for, server):
    """A session talking to the stand-in as a remote vLLM (`url`), with `qwen-small` as the served name."""
    return session_for(url=server.url, models={MODEL: {"served_name": "qwen-small"}})


def test_detect_and_availability_of_a_remote_server(remote, server):
    found = remote.detect("vllm")
    assert found.installed and found.reachable and found.version == "0.11.2" and found.address == server.url
    assert "qwen-small" in found.detail
    assert remote.is_available(remote.resolve(f"vllm:{MODEL}")).present
    other = remote.is_available(remote.resolve("vllm:org/other"))
    assert not other.present and "does not serve org/other" in other.detail


def test_remote_server_is_used_never_started_or_stopped(remote, server):
    ref = remote.resolve(f"vllm:{MODEL}")
    started = remote.start(ref)
    assert not started.started and started.address == server.url and started.version == "0.11.2"
    with pytest.raises(EngineError, match="does not start or change remote servers"):
        remote.start(remote.resolve("vllm:org/other"))
    stopped = remote.stop("vllm")
    assert stopped.stopped == [] and "nothing Jarvis started" in stopped.detail
    assert remote.infer(ref, ChatRequest(FRANCE)).ok  # still serving


def test_warmup_uses_its_own_prompt(remote, server):
    ref = remote.resolve(f"vllm:{MODEL}")
    warm = remote.warmup(ref)
    assert warm.cold_start_s > 0
    assert server.requests[-1]["body"]["messages"][0]["content"] == WARMUP_PROMPT
    assert "france" not in WARMUP_PROMPT.lower()


def test_streamed_answer_with_usage_and_stamps(remote, server):
    ref = remote.resolve(f"vllm:{MODEL}")
    result = remote.infer(ref, ChatRequest(FRANCE, stream=True, max_tokens=64, temperature=0.0))
    assert result.ok, result.error
    assert result.text == answer_for("What is the capital of France?") == "The capital of France is Paris."
    assert result.token_source == "server" and result.output_tokens == len(result.chunk_times)
    assert result.prompt_tokens and result.finish_reason == "stop"
    assert result.t_send < result.t_first_byte <= result.t_first_token <= result.t_last_token <= result.t_end
    body = server.requests[-1]["body"]
    assert body["model"] == "qwen-small" and body["stream_options"] == {"include_usage": True}


def test_plain_answer(remote):
    result = remote.infer(remote.resolve(f"vllm:{MODEL}"), ChatRequest(FRANCE))
    assert result.ok and "Paris" in result.text and result.output_tokens and result.token_source == "server"
    assert result.t_first_token is None and result.t_last_token == result.t_end


def test_images_go_as_data_urls(session_for):
    png = b"\x89PNG\r\n\x1a\n" + b"\0" * 16
    with OpenAIStandin(models=["vis"], vision=True) as srv:
        session = session_for(url=srv.url, served_name="vis")
        result = session.infer(session.resolve("vllm:org/vis"), ChatRequest([Message("user", "What is it?", (png,))]))
        assert result.ok and "1 image" in result.text
        part = srv.requests[-1]["body"]["messages"][0]["content"][1]
        assert part["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("shape", ["nested", "flat"])
def test_error_bodies_of_both_shapes(session_for, shape):
    with OpenAIStandin(models=["served"], error_shape=shape) as srv:
        session = session_for(url=srv.url)  # served name defaults to the model name: not what the server has
        for stream in (False, True):
            result = session.infer(session.resolve("vllm:org/unknown"), ChatRequest(FRANCE, stream=stream))
            assert not result.ok and result.error.startswith("HTTP 404: The model `org/unknown` does not exist")


def test_error_inside_the_stream(session_for):
    with OpenAIStandin(models=["m"], error_after_chunks=2, stream_error_message="engine exploded") as srv:
        session = session_for(url=srv.url, served_name="m")
        result = session.infer(session.resolve("vllm:org/m"), ChatRequest(FRANCE, stream=True))
        assert not result.ok and "engine exploded" in result.error


def test_engine_dying_mid_stream_is_an_error_result(session_for):
    with OpenAIStandin(models=["m"], die_after_chunks=2) as srv:
        session = session_for(url=srv.url, served_name="m")
        result = session.infer(session.resolve("vllm:org/m"), ChatRequest(FRANCE, stream=True))
        assert not result.ok


def test_a_local_server_already_serving_the_model_is_reused_and_left_alone(session_for):
    with OpenAIStandin(models=["qwen-small"]) as srv:
        session = session_for(port=srv.port, models={MODEL: {"served_name": "qwen-small"}})
        started = session.start(session.resolve(f"vllm:{MODEL}"))
        assert not started.started and "a running server" in started.detail
        found = session.detect("vllm")
        assert found.reachable and not found.started_by_jarvis
        stopped = session.stop("vllm")
        assert stopped.stopped == [] and session.infer(session.resolve(f"vllm:{MODEL}"), ChatRequest(FRANCE)).ok


def test_server_info_gives_up_quickly_on_a_port_that_never_answers():
    """server_info (openai_api.list_models with a short timeout): a port that accepts but never answers is "no
    server" within about 2 s, not the default 5 s."""
    import socket
    import time

    from jarvis_vllm import common

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        began = time.monotonic()
        assert common.server_info(f"http://127.0.0.1:{sock.getsockname()[1]}") is None
        assert time.monotonic() - began < 4.0


def test_server_info_of_the_standin(server):
    from jarvis_vllm import common

    info = common.server_info(server.url)
    assert info is not None and info.names == ["qwen-small"] and info.roots == [MODEL] and info.version == "0.11.2"
