"""Load runs: engines.vllm.max_num_seqs becomes `--max-num-seqs` for both runtimes (or is read from extra_args), `start`
reports it (`StartResult.parallelism`), `exact_tokens` asks vLLM for exactly max_tokens tokens (`ignore_eos`,
`min_tokens`), and `infer` is safe from many threads at once."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from jarvis_core.api import ChatRequest, Message, Parallelism
from jarvis_core.config import build_settings
from jarvis_core.errors import ConfigError
from jarvis_core.processes import free_port
from jarvis_vllm import docker_runtime, process_runtime
from jarvis_vllm.settings import PARALLEL_DEFAULT, PARALLEL_SETTING, VllmSettings

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.standins.openai_server import OpenAIStandin

MODEL = "jarvis-test/tiny"
FRANCE = [Message("user", "What is the capital of France?")]
COUNT = [Message("user", "Tell me a long story about the sea.")]
PASSED = "passed to the vLLM server Jarvis started"
NOT_OURS = "unknown: this vLLM server was not started by Jarvis"


def settings(**values) -> VllmSettings:
    built = build_settings(VllmSettings, values, source="config.yaml", path="engines.vllm")
    return built.apply_environment({"HOME": "/home/me"}, platform="linux")


class _Ctx:
    run_id = "run123"
    force_download = False


# --- settings and the flag -----------------------------------------------------------------------------------------


def test_max_num_seqs_becomes_the_flag_globally_and_per_model():
    s = settings(max_num_seqs=8, models={"org/big": {"max_num_seqs": 2}})
    launch = s.launch("org/m")
    assert launch.serve_args()[-2:] == ["--max-num-seqs", "8"]
    assert launch.parallelism() == Parallelism(PARALLEL_SETTING, 8, PASSED)
    big = s.launch("org/big")
    assert big.serve_args()[-2:] == ["--max-num-seqs", "2"]
    assert big.parallelism() == Parallelism("--max-num-seqs (engines.vllm.models.org/big.max_num_seqs)", 2, PASSED)
    unset = settings().launch("org/m")
    assert "--max-num-seqs" not in unset.serve_args()
    assert unset.parallelism() == Parallelism(PARALLEL_SETTING, None, PARALLEL_DEFAULT)


@pytest.mark.parametrize("extra, value", [
    (["--max-num-seqs", "4"], 4), (["--max-num-seqs=4"], 4), (["--max_num_seqs", "4"], 4),
    (["--max-num-seqs", "2", "--enforce-eager", "--max-num-seqs", "4"], 4),  # the last one wins, as in argparse
])
def test_max_num_seqs_in_extra_args_is_read_from_there(extra, value):
    launch = settings(extra_args=extra).launch("org/m")
    assert launch.serve_args().count("--max-num-seqs") == extra.count("--max-num-seqs")  # nothing added
    assert launch.parallelism() == Parallelism("--max-num-seqs (extra_args)", value, "given in extra_args")
    both = settings(max_num_seqs=16, extra_args=extra).launch("org/m")
    assert "16" not in both.serve_args()
    assert both.parallelism() == Parallelism("--max-num-seqs (extra_args)", value,
                                             "given in extra_args; it wins over engines.vllm.max_num_seqs (16)")
    odd = settings(extra_args=["--max-num-seqs", "many"]).launch("org/m").parallelism()
    assert odd.value is None and "not a positive number" in odd.detail


@pytest.mark.parametrize("values", [{"max_num_seqs": 0}, {"models": {"m": {"max_num_seqs": -1}}},
                                    {"max_num_seqs": "lots"}])
def test_bad_max_num_seqs_names_the_key(values):
    with pytest.raises(ConfigError) as info:
        build_settings(VllmSettings, values, source="config.yaml", path="engines.vllm")
    assert "config.yaml" in str(info.value) and "max_num_seqs" in str(info.value)


def test_both_runtimes_pass_the_flag():
    s = settings(max_num_seqs=5)
    kwargs = docker_runtime.run_kwargs(_Ctx(), s, s.launch("Qwen/Q"), None)
    assert kwargs["command"] == ["Qwen/Q", "--served-model-name", "Qwen/Q", "--gpu-memory-utilization", "0.9",
                                 "--max-num-seqs", "5", "--host", "0.0.0.0", "--port", "8000"]
    assert "--max-num-seqs 5" in " ".join(docker_runtime.describe_command(s, kwargs))
    cmd = process_runtime.command(Path("/venv/bin/vllm"), s, s.launch("org/m"), None)
    assert cmd[cmd.index("--max-num-seqs") + 1] == "5"


# --- start: the process runtime with the stand-in as `vllm serve` ---------------------------------------------------


@pytest.fixture
def proc_session(session_for, fake_vllm, hub):
    def make(*extra_args: str, **settings):
        settings.setdefault("port", free_port())
        return session_for(runtime="process", executable=str(fake_vllm), gpus="none",
                           models={MODEL: {"served_name": "tiny", "extra_args": ["--token-delay", "0.02",
                                                                                 *extra_args]}}, **settings)
    return make


@pytest.mark.parametrize("max_num_seqs", [1, 2])
def test_max_num_seqs_reaches_the_server_and_bounds_what_it_serves_at_once(proc_session, max_num_seqs):
    """Two streamed requests at once: with --max-num-seqs 1 the second is generated after the first, with 2 side by
    side (the stand-in generates max_num_seqs requests at once and queues the rest, as vLLM's scheduler does)."""
    session = proc_session(max_num_seqs=max_num_seqs)
    ref = session.resolve(f"vllm:{MODEL}")
    started = session.start(ref)
    assert started.started and started.parallelism == Parallelism(PARALLEL_SETTING, max_num_seqs, PASSED)
    [record] = session.state.records("vllm", "process")
    assert record.command[record.command.index("--max-num-seqs") + 1] == str(max_num_seqs)
    assert f"'max_num_seqs': {max_num_seqs}" in Path(record.log).read_text()  # what the server itself took
    session.warmup(ref)

    go = threading.Barrier(2)
    results: list = [None, None]

    def ask(i: int) -> None:
        go.wait()
        results[i] = session.infer(ref, ChatRequest(COUNT, stream=True, max_tokens=30, exact_tokens=True))

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert all(r is not None and r.ok and r.output_tokens == 30 for r in results), results
    first, second = sorted(results, key=lambda r: r.t_first_token)
    if max_num_seqs == 1:
        assert second.t_first_token > first.t_last_token  # one after the other
    else:
        assert second.t_first_token < first.t_last_token  # side by side

    again = session.start(ref)  # reused: what Jarvis recorded when it started it
    assert not again.started and again.parallelism == started.parallelism
    other = proc_session(port=session.context("vllm").settings.port, max_num_seqs=7)
    reused = other.start(other.resolve(f"vllm:{MODEL}"))
    assert not reused.started and reused.parallelism.value == max_num_seqs
    assert "engines.vllm.max_num_seqs) asks for 7, which does not apply: this server was already running" in \
        reused.parallelism.detail


def test_max_num_seqs_from_extra_args_is_reported(proc_session):
    session = proc_session("--max-num-seqs", "3")
    started = session.start(session.resolve(f"vllm:{MODEL}"))
    assert started.parallelism == Parallelism("--max-num-seqs (extra_args)", 3, "given in extra_args")
    [record] = session.state.records("vllm", "process")
    assert record.command.count("--max-num-seqs") == 1
    assert "'max_num_seqs': 3" in Path(record.log).read_text()


def test_unset_max_num_seqs_is_vllms_default(proc_session):
    session = proc_session()
    started = session.start(session.resolve(f"vllm:{MODEL}"))
    assert started.parallelism == Parallelism(PARALLEL_SETTING, None, PARALLEL_DEFAULT)
    [record] = session.state.records("vllm", "process")
    assert "--max-num-seqs" not in record.command


def test_a_server_jarvis_did_not_start_is_unknown(session_for):
    with OpenAIStandin(models=["tiny"], max_num_seqs=4) as srv:
        local = session_for(port=srv.port, models={MODEL: {"served_name": "tiny"}})
        assert local.start(local.resolve(f"vllm:{MODEL}")).parallelism == Parallelism(PARALLEL_SETTING, None,
                                                                                       NOT_OURS)
        remote = session_for(url=srv.url, served_name="tiny", max_num_seqs=2)
        found = remote.start(remote.resolve(f"vllm:{MODEL}")).parallelism
        assert found.value is None and found.detail.startswith(f"{NOT_OURS}; --max-num-seqs (engines.vllm."
                                                               f"max_num_seqs) asks for 2, which does not apply")


# --- infer ---------------------------------------------------------------------------------------------------------


@pytest.fixture
def remote(session_for):
    with OpenAIStandin(models=["tiny"], token_delay=0.001) as srv:
        yield session_for(url=srv.url, served_name="tiny"), srv


@pytest.mark.parametrize("stream", [False, True])
def test_exact_tokens_sends_ignore_eos_and_min_tokens(remote, stream):
    session, server = remote
    ref = session.resolve(f"vllm:{MODEL}")
    exact = session.infer(ref, ChatRequest(FRANCE, stream=stream, max_tokens=40, exact_tokens=True))
    body = server.requests[-1]["body"]
    assert body["ignore_eos"] is True and body["min_tokens"] == 40 and body["max_tokens"] == 40
    assert exact.ok and exact.output_tokens == 40 and exact.token_source == "server"
    assert exact.finish_reason == "length"

    plain = session.infer(ref, ChatRequest(FRANCE, stream=stream, max_tokens=40))
    body = server.requests[-1]["body"]
    assert "ignore_eos" not in body and "min_tokens" not in body
    assert plain.ok and plain.output_tokens < 40 and plain.finish_reason == "stop"

    unbounded = session.infer(ref, ChatRequest(FRANCE, stream=stream, exact_tokens=True))  # nothing to pin it to
    body = server.requests[-1]["body"]
    assert unbounded.ok and "ignore_eos" not in body and "min_tokens" not in body


def test_infer_from_many_threads_at_once(remote):
    session, server = remote
    ref = session.resolve(f"vllm:{MODEL}")
    go = threading.Barrier(8)
    results = []

    def ask() -> None:
        go.wait()
        results.append(session.infer(ref, ChatRequest(FRANCE, stream=True, max_tokens=16, exact_tokens=True)))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8 and all(r.ok and r.output_tokens == 16 for r in results)
    assert len(server.requests) == 8
