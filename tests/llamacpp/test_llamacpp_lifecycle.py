"""start -> warmup -> infer -> stop against a stand-in server run through a fake interpreter (quick, no llama.cpp),
and the errors a user meets: llama_cpp not installed, a missing model, a server that dies or never gets ready."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from jarvis_core.api import ChatRequest, Message
from jarvis_core.errors import EngineError, EngineTimeoutError, EngineUnavailableError, ModelMissingError
from jarvis_core.processes import create_time, port_open

from llamacpp_helpers import write_gguf

FRANCE = [Message("user", "What is the capital of France?")]


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


@pytest.fixture
def fake(session_for, fake_python, tmp_path):
    write_gguf(tmp_path / "models" / "tiny.gguf")
    write_gguf(tmp_path / "models" / "other.gguf")
    return session_for(python=fake_python)


def test_full_lifecycle(fake, tmp_path):
    session = fake
    ref = session.resolve("lc_tiny")
    started = session.start(ref)
    assert started.started and started.address.startswith("http://127.0.0.1:")
    assert started.version == "0.0-fake"

    [record] = session.state.records("llamacpp")
    assert record.kind == "process" and record.data["model"] == str(tmp_path / "models" / "tiny.gguf")
    assert record.create_time == create_time(record.pid)
    assert record.command[1:3] == ("-m", "llama_cpp.server") and "--interrupt_requests" in record.command
    assert record.address == started.address and record.run_id == session.run_id

    detected = session.detect("llamacpp")
    assert detected.installed and detected.reachable and detected.started_by_jarvis
    assert detected.address == started.address and detected.version == "0.0-fake"

    warm = session.warmup(ref)
    assert warm.cold_start_s > 0

    streamed = session.infer(ref, ChatRequest(FRANCE, stream=True, temperature=0))
    assert streamed.ok, streamed.error
    assert "Paris" in streamed.text
    assert streamed.t_send < streamed.t_first_byte <= streamed.t_first_token <= streamed.t_last_token <= streamed.t_end
    assert streamed.token_source == "estimated" and streamed.output_tokens == len(streamed.chunk_times) == 6

    whole = session.infer(ref, ChatRequest(FRANCE, stream=False, temperature=0))
    assert whole.ok and "Paris" in whole.text
    assert whole.token_source == "server" and whole.output_tokens == 6 and whole.t_first_token is None

    stopped = session.stop("llamacpp")
    assert len(stopped.stopped) == 1 and stopped.memory_released is True
    assert gone(record.pid) and not port_open("127.0.0.1", record.data["port"])
    assert session.state.records("llamacpp") == []
    assert not session.detect("llamacpp").reachable


def test_a_second_start_reuses_our_server(fake):
    ref = fake.resolve("lc_tiny")
    first = fake.start(ref)
    again = fake.start(fake.resolve("llamacpp:tiny"))
    assert not again.started and again.address == first.address and "reusing" in again.detail
    assert len(fake.state.records("llamacpp")) == 1


def test_another_model_replaces_our_server(fake):
    first = fake.start(fake.resolve("lc_tiny"))
    [old] = fake.state.records("llamacpp")
    second = fake.start(fake.resolve("lc_other"))
    assert second.started and second.address != first.address
    assert gone(old.pid)
    [new] = fake.state.records("llamacpp")
    assert new.data["alias"] == "other"
    # Requests for the replaced model now fail as results, not exceptions.
    result = fake.infer(fake.resolve("lc_tiny"), ChatRequest(FRANCE))
    assert not result.ok and "not serving tiny" in result.error


def test_changed_options_restart_the_server(fake, session_for, fake_python):
    fake.start(fake.resolve("lc_tiny"))
    [old] = fake.state.records("llamacpp")
    bigger = session_for(python=fake_python, n_ctx=4096)
    assert bigger.start(bigger.resolve("lc_tiny")).started
    assert gone(old.pid)
    [new] = bigger.state.records("llamacpp")
    assert new.command[new.command.index("--n_ctx") + 1] == "4096"


def test_stop_ends_the_whole_process_tree(session_for, fake_python, tmp_path):
    write_gguf(tmp_path / "models" / "tiny.gguf")
    session = session_for(python=fake_python, extra_args=["--fake_child", "True"])
    session.start(session.resolve("lc_tiny"))
    [record] = session.state.records("llamacpp")
    children = psutil.Process(record.pid).children(recursive=True)
    assert children, "the stand-in should have started a child"
    session.stop("llamacpp")
    assert gone(record.pid) and all(gone(c.pid) for c in children)


def test_a_server_that_dies_while_loading_fails_fast_with_its_log(fake, tmp_path):
    (tmp_path / "models" / "broken.gguf").write_text("this is not a GGUF file")
    began = time.monotonic()
    with pytest.raises(EngineError) as caught:
        fake.start(fake.resolve("lc_broken"))
    assert time.monotonic() - began < 10
    message = str(caught.value)
    assert "stopped before it was ready: exited with code 1; ValueError: Failed to load model from file" in \
        message.splitlines()[0]  # the reason, from the log, on the first line
    assert f"log: {tmp_path / 'state' / 'logs'}" in message and "llama_cpp.server" in message  # log and command
    assert "Last lines of" in message and "fake llama_cpp.server: loading" in message  # and the log's tail
    assert fake.state.records("llamacpp") == []


def test_a_server_that_is_never_ready_times_out_and_is_ended(session_for, fake_python, tmp_path):
    write_gguf(tmp_path / "models" / "tiny.gguf")
    session = session_for(python=fake_python, extra_args=["--fake_ready_after", "60"], timeouts={"start": 1},
                          start_timeout=None)  # null: the global timeouts.start applies
    with pytest.raises(EngineTimeoutError, match="not ready after 1 s; raise timeouts.start") as caught:
        session.start(session.resolve("lc_tiny"))
    assert "Last lines of" in str(caught.value)
    assert session.state.records("llamacpp") == []
    assert not any("fake_llama_server.py" in " ".join(p.info["cmdline"] or [])
                   for p in psutil.process_iter(["cmdline"]) if p.info["cmdline"] and
                   str(tmp_path) in " ".join(p.info["cmdline"]))


def test_llama_cpp_not_installed(session_for, python_without_llamacpp, tmp_path):
    write_gguf(tmp_path / "models" / "tiny.gguf")
    session = session_for(python=python_without_llamacpp)
    detected = session.detect("llamacpp")
    assert not detected.installed and not detected.reachable and not detected.usable
    assert "No module named 'llama_cpp'" in detected.detail
    assert f"{python_without_llamacpp} -m pip install 'llama-cpp-python[server]'" in detected.detail
    with pytest.raises(EngineUnavailableError, match=r"pip install 'llama-cpp-python\[server\]'"):
        session.start(session.resolve("lc_tiny"))
    assert session.state.records("llamacpp") == []


def test_an_interpreter_that_does_not_exist(session_for, tmp_path):
    session = session_for(python=str(tmp_path / "no" / "python"))
    detected = session.detect("llamacpp")
    assert not detected.installed and "no such interpreter" in detected.detail
    assert "engines.llamacpp.python" in detected.detail


def test_start_without_the_model_file(fake, tmp_path):
    with pytest.raises(ModelMissingError, match="no nothing.gguf in") as caught:
        fake.start(fake.resolve("lc_nothing"))
    assert str(tmp_path / "models" / "nothing.gguf") in str(caught.value)
    with pytest.raises(ModelMissingError, match="--force-download"):
        fake.start(fake.resolve("lc_smollm2-135m"))


def test_infer_and_warmup_without_a_server(fake):
    ref = fake.resolve("lc_tiny")
    result = fake.infer(ref, ChatRequest(FRANCE, stream=True))
    assert not result.ok and "start it first" in result.error and result.t_end is not None
    with pytest.raises(EngineError, match="warmup request"):
        fake.warmup(ref)


def test_infer_after_the_server_died_is_an_error_result(fake):
    ref = fake.resolve("lc_tiny")
    fake.start(ref)
    [record] = fake.state.records("llamacpp")
    psutil.Process(record.pid).kill()
    psutil.Process(record.pid).wait(5)
    result = fake.infer(ref, ChatRequest(FRANCE))
    assert not result.ok
    assert fake.state.records("llamacpp") == []  # the dead server's record is dropped


def test_stop_with_nothing_running(fake):
    result = fake.stop("llamacpp")
    assert result.stopped == [] and "no llama.cpp server" in result.detail


def test_stop_never_ends_a_process_it_did_not_start(fake):
    """A record whose PID now belongs to another process (create_time differs) is dropped, the process left alone."""
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        fake.state.add("llamacpp", "process", pid=other.pid, create_time=create_time(other.pid) - 1000,
                       host="127.0.0.1", port=1, address="http://127.0.0.1:1", model="x", alias="x")
        result = fake.stop("llamacpp")
        assert result.stopped == []
        assert other.poll() is None
        assert fake.state.records("llamacpp") == []
    finally:
        other.kill()
        other.wait()


def test_logs_one_per_server_kept_only_when_it_failed(fake, tmp_path):
    fake.start(fake.resolve("lc_tiny"))
    [record] = fake.state.records("llamacpp")
    log = tmp_path / "state" / "logs" / f"llamacpp-{record.data['port']}.log"
    assert record.log == str(log)
    header = log.read_text().splitlines()[0]
    assert header.startswith("--- jarvis ") and "-m llama_cpp.server --model" in header  # what was started
    assert "serving tiny" in log.read_text()
    fake.stop("llamacpp")
    assert not log.exists()  # a server that ran and was stopped leaves no log behind
    (tmp_path / "models" / "broken.gguf").write_text("nope")
    with pytest.raises(EngineError) as caught:
        fake.start(fake.resolve("lc_broken"))
    kept = list((tmp_path / "state" / "logs").glob("llamacpp-*.log"))
    assert len(kept) == 1 and str(kept[0]) in str(caught.value)


@pytest.mark.parametrize("bind", ["0.0.0.0", "::"])
def test_a_server_bound_to_every_interface_is_reached_on_loopback(session_for, fake_python, tmp_path, bind):
    """It binds where configured, but Jarvis connects to 127.0.0.1 (0.0.0.0 is no address to connect to)."""
    write_gguf(tmp_path / "models" / "tiny.gguf")
    session = session_for(python=fake_python, host=bind)
    ref = session.resolve("lc_tiny")
    started = session.start(ref)
    [record] = session.state.records("llamacpp")
    assert started.address == f"http://127.0.0.1:{record.data['port']}" == record.address
    assert record.data["host"] == "127.0.0.1" and record.command[record.command.index("--host") + 1] == bind
    assert session.infer(ref, ChatRequest(FRANCE, stream=True)).ok
    assert session.detect("llamacpp").address == started.address
    stopped = session.stop("llamacpp")
    assert stopped.memory_released is True and not port_open("127.0.0.1", record.data["port"])


def test_start_timeout_bounds_a_hung_start(session_for, fake_python, tmp_path):
    """engines.llamacpp.start_timeout (300 s by default) bounds a start, whatever the global timeouts.start."""
    assert session_for().context("llamacpp").settings.start_timeout == 300.0
    write_gguf(tmp_path / "models" / "tiny.gguf")
    session = session_for(python=fake_python, extra_args=["--fake_ready_after", "60"], timeouts={"start": 600},
                          start_timeout=1.5)
    began = time.monotonic()
    with pytest.raises(EngineTimeoutError) as caught:
        session.start(session.resolve("lc_tiny"))
    assert time.monotonic() - began < 20
    first = str(caught.value).splitlines()[0]
    assert "not ready after 1.5 s" in first and "engines.llamacpp.start_timeout" in first
    assert session.state.records("llamacpp") == []


def test_an_api_key_in_extra_args_is_sent_but_never_shown(session_for, fake_python, tmp_path):
    key = "sk-llama-Secret-0123456789"
    write_gguf(tmp_path / "models" / "tiny.gguf")
    session = session_for(python=fake_python, extra_args=["--api_key", key])
    ref = session.resolve("lc_tiny")
    started = session.start(ref)
    answer = session.infer(ref, ChatRequest([Message("user", "What is the capital of France?")]))
    assert answer.ok and "Paris" in answer.text  # the server wants the key: Jarvis sent it
    again = session.start(ref)
    assert not again.started  # the running server is recognised though its recorded command reads `***`
    found = session.detect("llamacpp")
    [record] = session.state.records("llamacpp")
    assert "--api_key" in record.command and key not in record.command
    header = record.log and Path(record.log).read_text().splitlines()[0]
    assert "--api_key ***" in header
    stopped = session.stop("llamacpp")
    texts = [started, again, found, stopped, header, session.progress.stream.getvalue(),
             session.state.path.read_text()]
    assert not any(key in str(text) for text in texts)


def test_an_api_key_is_kept_out_of_a_failed_start(session_for, fake_python, tmp_path):
    key = "sk-llama-Secret-0123456789"
    (tmp_path / "models").mkdir(exist_ok=True)
    (tmp_path / "models" / "bad.gguf").write_bytes(b"NOPE" + b"\0" * 64)  # refused: its log (with the key) is quoted
    session = session_for(python=fake_python, extra_args=[f"--api_key={key}"])
    with pytest.raises(EngineError) as caught:
        session.start(session.resolve("lc_bad"))
    message = str(caught.value)
    assert "Failed to load model" in message and "fake llama_cpp.server: loading" in message
    assert key not in message and key not in session.progress.stream.getvalue()
