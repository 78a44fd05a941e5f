"""The process runtime's lifecycle with a fake `vllm` (the OpenAI stand-in run as `vllm serve`): quick and real
processes, ports and signals, no vLLM needed."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import psutil
import pytest

import jarvis_core.launch
from jarvis_core.engine import ChatRequest, Message
from jarvis_core.errors import EngineError, EngineTimeoutError, EngineUnavailableError
from jarvis_core.processes import free_port, port_open

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CONFIG, make_repo

MODEL = "jarvis-test/tiny"
FRANCE = [Message("user", "What is the capital of France?")]


@pytest.fixture
def proc_session(session_for, fake_vllm, hub):
    def make(*extra_args: str, timeouts: dict | None = None, **settings):
        settings.setdefault("port", free_port())
        settings.setdefault("gpus", "none")
        return session_for(runtime="process", executable=str(fake_vllm), timeouts=timeouts,
                           models={MODEL: {"served_name": "tiny", "extra_args": list(extra_args)}}, **settings)
    return make


def _process_records(session):
    return session.state.records("vllm", "process")


def test_start_infer_stop(proc_session):
    session = proc_session("--ready-after", "0.3", "--check-hf-cache")
    ref = session.resolve(f"vllm:{MODEL}")
    assert session.detect("vllm").installed and not session.detect("vllm").reachable
    started = session.start(ref)
    assert started.started and started.version == "0.11.0"
    [record] = _process_records(session)
    pid, port = record.pid, record.data["port"]
    proc = psutil.Process(pid)
    assert proc.create_time() == record.create_time and "HF_TOKEN" not in str(record)
    assert record.address == started.address and record.command[1:3] == ("serve", MODEL)
    assert record.data["served_name"] == "tiny" and record.log and Path(record.log).is_file()
    env = proc.environ()
    assert env["HF_HUB_OFFLINE"] == "1" and env["HF_HUB_CACHE"] == session.context("vllm").settings.hub_cache.as_posix()
    found = session.detect("vllm")
    assert found.reachable and found.started_by_jarvis and "tiny" in found.detail

    again = session.start(ref)  # already serving: reused, nothing new started
    assert not again.started and "the server Jarvis started" in again.detail and len(_process_records(session)) == 1

    warm = session.warmup(ref)
    assert warm.cold_start_s > 0
    result = session.infer(ref, ChatRequest(FRANCE, stream=True))
    assert result.ok and "Paris" in result.text and result.token_source == "server"

    stopped = session.stop("vllm")
    assert stopped.stopped == [f"vllm serve (pid {pid}) ended with its process tree"]
    assert stopped.memory_released is None and "no GPU to check" in stopped.detail
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    assert not port_open("127.0.0.1", port) and _process_records(session) == []


def test_token_reaches_the_engine_but_not_the_state(proc_session, monkeypatch):
    token = "hf_SeCrEt0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    session = proc_session()
    session.start(session.resolve(f"vllm:{MODEL}"))
    [record] = _process_records(session)
    assert psutil.Process(record.pid).environ()["HF_TOKEN"] == token
    assert token not in session.state.path.read_text() and token not in session.detect("vllm").detail
    assert token not in Path(record.log).read_text()


def test_exit_before_ready_fails_fast_with_exit_code_and_log(proc_session):
    session = proc_session("--ready-after", "0.2", "--fail-start", "RuntimeError: engine core failed to start")
    began = time.monotonic()
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert time.monotonic() - began < 10
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith(f"vllm serve {MODEL} stopped before it was ready: exited with code 1")
    assert "engine core failed to start" in message and f"(command: {session.context('vllm').settings.executable} " \
        f"serve {MODEL} " in first and "log: " in first
    assert _process_records(session) == []


def test_startup_failure_gets_the_fix_from_the_log(proc_session):
    session = proc_session("--simulate-free-memory", "0.5")
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert "stop other engines" in info.value.args[0].splitlines()[0]
    assert "gpu_memory_utilization" in info.value.args[0].splitlines()[0]


def test_port_clash_is_one_line_before_anything_starts(proc_session):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        session = proc_session(port=port)
        with pytest.raises(EngineError) as info:
            session.start(session.resolve(f"vllm:{MODEL}"))
    message = str(info.value)
    assert "\n" not in message and f"Port {port} on 127.0.0.1 is already in use" in message
    assert "engines.vllm.port" in message and _process_records(session) == []


def test_not_ready_in_time_is_ended(proc_session):
    session = proc_session("--ready-after", "60", timeouts={"start": 1.5})
    with pytest.raises(EngineTimeoutError, match=r"was not ready after 1\.5 s; raise timeouts.start"):
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert _process_records(session) == []


def test_progress_notes_while_loading(proc_session, monkeypatch):
    monkeypatch.setattr(jarvis_core.launch, "NOTE_EVERY_S", 0.5)
    session = proc_session("--ready-after", "1.6")
    session.start(session.resolve(f"vllm:{MODEL}"))
    notes = session.progress.stream.getvalue()
    assert "Starting vllm serve jarvis-test/tiny (log: " in notes
    assert "vllm: waiting for vllm serve jarvis-test/tiny (" in notes and "Loading model" in notes


def test_stop_from_the_state_alone_after_a_crash(proc_session, make_session):
    session = proc_session()
    session.start(session.resolve(f"vllm:{MODEL}"))
    [record] = _process_records(session)
    # A new Jarvis (after a crash): only the state file knows what was started.
    later = make_session({"engines": {"vllm": {"runtime": "docker"}}})
    stopped = later.stop("vllm")
    assert stopped.stopped == [f"vllm serve (pid {record.pid}) ended with its process tree"]
    assert not port_open("127.0.0.1", record.data["port"]) and later.state.records("vllm") == []


def test_a_reused_pid_is_never_ended(proc_session, make_session):
    import subprocess
    import sys

    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        session = make_session()
        session.state.add("vllm", "process", pid=stranger.pid, create_time=psutil.Process(stranger.pid).create_time()
                          - 100, port=free_port(), host="127.0.0.1")
        stopped = session.stop("vllm")
        assert stopped.stopped == [] and stranger.poll() is None and session.state.records("vllm") == []
    finally:
        stranger.kill()
        stranger.wait()


def test_engine_that_died_after_ready_is_cleaned(proc_session):
    session = proc_session("--exit-after-requests", "1", "--exit-code", "3")
    ref = session.resolve(f"vllm:{MODEL}")
    session.start(ref)
    assert session.infer(ref, ChatRequest(FRANCE)).ok
    [record] = _process_records(session)
    psutil.Process(record.pid).wait(timeout=10)
    stopped = session.stop("vllm")
    assert stopped.stopped == [] and "already exited" in stopped.detail and _process_records(session) == []


def test_missing_executable(session_for, hub, tmp_path: Path):
    session = session_for(runtime="process", executable=str(tmp_path / "nope" / "vllm"), port=free_port())
    found = session.detect("vllm")
    assert not found.installed and "pip install vllm" in found.detail
    with pytest.raises(EngineUnavailableError, match="engines.vllm.executable"):
        session.start(session.resolve(f"vllm:{MODEL}"))


def test_switching_models_ends_the_previous_server_first(session_for, fake_vllm, hub):
    make_repo(hub, "jarvis-test/other", {"config.json": CONFIG, "model.safetensors": b"v"})
    session = session_for(runtime="process", executable=str(fake_vllm), gpus="none", port=free_port())
    first = session.start(session.resolve(f"vllm:{MODEL}"))
    [old] = _process_records(session)
    assert session.detect("vllm").loaded_models == {MODEL: None}
    second = session.start(session.resolve("vllm:jarvis-test/other"))
    assert first.started and second.started
    [new] = _process_records(session)
    assert new.pid != old.pid and not psutil.pid_exists(old.pid) or \
        psutil.Process(old.pid).status() == psutil.STATUS_ZOMBIE
    assert "to make room for jarvis-test/other" in session.progress.stream.getvalue()
    assert session.detect("vllm").loaded_models == {"jarvis-test/other": None}


def test_memory_estimate_is_the_reserved_share_of_the_engines_gpu(session_for, hub, monkeypatch, fake_gpus):
    session = session_for(models={MODEL: {"gpu_memory_utilization": 0.5}})
    ref = session.resolve(f"vllm:{MODEL}")
    with_gpu = session.is_available(ref)
    assert with_gpu.present and with_gpu.memory_bytes == 40 * 2**30  # half of GPU 0's 80 GiB
    assert with_gpu.memory_setting == f"engines.vllm.models.{MODEL}.gpu_memory_utilization"
    other = session.is_available(session.resolve("vllm:org/absent"))
    assert other.memory_bytes == int(0.9 * 80 * 2**30) and other.memory_setting == "engines.vllm.gpu_memory_utilization"
    on_l4 = session_for(gpus=[1], models={MODEL: {"gpu_memory_utilization": 0.5}})
    assert on_l4.is_available(ref).memory_bytes == 12 * 2**30  # `gpus: [1]` is the second GPU: the 24 GiB one
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")  # now the engine's GPU 1 is the driver's GPU 0
    assert on_l4.is_available(ref).memory_bytes == 40 * 2**30
    assert session_for(gpus="none").is_available(ref).memory_bytes is None


def test_no_gpu_means_no_memory_estimate(session_for, hub, monkeypatch, tmp_path):
    monkeypatch.setitem(__import__("sys").modules, "pynvml", None)
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    session = session_for()
    assert session.is_available(session.resolve(f"vllm:{MODEL}")).memory_bytes is None


def test_a_gpu_that_is_not_there_is_one_config_line(session_for, hub, fake_gpus):
    from jarvis_core.errors import ConfigError

    session = session_for(gpus=[2])
    with pytest.raises(ConfigError, match="GPU 2 is not there: 2 GPUs visible") as info:
        session.is_available(session.resolve(f"vllm:{MODEL}"))
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("after_stop_mib, released", [(600, True), (20000, False)])
def test_stop_waits_for_the_memory_of_the_engines_own_gpu(proc_session, fake_gpus, after_stop_mib, released):
    session = proc_session(timeouts={"stop": 1.0}, gpus=[1])
    session.start(session.resolve(f"vllm:{MODEL}"))
    [record] = _process_records(session)
    assert record.data["gpu_baseline_mib"] == 500 and record.data["gpus"] == ["1"]  # GPU 1's, not GPU 0's
    env = psutil.Process(record.pid).environ()
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"
    fake_gpus.used(70000, after_stop_mib)  # GPU 0 (another program's) filling up does not matter
    stopped = session.stop("vllm")
    assert stopped.memory_released is released
    assert ("GPU memory came back" if released else "GPU memory did not come back within 1 s") in stopped.detail


def test_the_engines_gpus_follow_cuda_visible_devices(proc_session, fake_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # the user's own choice is kept
    session = proc_session(gpus=[1])
    session.start(session.resolve(f"vllm:{MODEL}"))
    [record] = _process_records(session)
    assert record.data["gpu_baseline_mib"] == 1000  # the engine's GPU 1 is the driver's GPU 0
    env = psutil.Process(record.pid).environ()
    assert env["CUDA_VISIBLE_DEVICES"] == "0" and env["CUDA_DEVICE_ORDER"] == "FASTEST_FIRST"


def test_gpus_all_and_none_reach_the_engine(proc_session, fake_gpus, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    for gpus, visible, baseline in (("all", "1", 500), ("none", "", None)):
        session = proc_session(gpus=gpus)
        session.start(session.resolve(f"vllm:{MODEL}"))
        [record] = _process_records(session)
        assert psutil.Process(record.pid).environ()["CUDA_VISIBLE_DEVICES"] == visible
        assert record.data["gpu_baseline_mib"] == baseline
        session.stop("vllm")


def test_secret_environment_values_are_kept_out_of_errors_and_detection(proc_session):
    key = "wandb-0123456789abcdef"
    session = proc_session("--ready-after", "0.2", "--fail-start", f"ValueError: rejected api key {key}",
                           environment={"WANDB_API_KEY": key})
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert "rejected api key ***" in str(info.value) and key not in str(info.value)
    assert key not in session.detect("vllm").detail and key not in session.state.path.read_text()
