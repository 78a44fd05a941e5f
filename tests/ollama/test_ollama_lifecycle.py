"""start, warmup and stop against the stand-in `ollama` program: real processes (`ollama serve` and one runner per
loaded model), real readiness, real process-tree cleanup. The autouse leftover check fails any test after which a
process it started survives."""

from __future__ import annotations

import time

import psutil
import pytest
from jarvis_core.engine import ChatRequest, Message
from jarvis_core.errors import EngineError, EngineTimeoutError, EngineUnavailableError, ModelMissingError

from jarvis_ollama import client
from tests.standins import ollama_models

FRANCE = [Message("user", "What is the capital of France?")]


def serve_records(session):
    return session.state.records("ollama", "process")


def model_records(session):
    return session.state.records("ollama", "model")


def loaded(url: str) -> list[dict]:
    with client.client_for(url) as http:
        return client.ps(http)


@pytest.fixture
def on_disk(models_dir):
    ollama_models.write_model(models_dir, "qwen2.5:0.5b")
    ollama_models.write_model(models_dir, "smollm2:135m")
    return models_dir


def test_start_spawns_serve_and_records_it(session_for, fake_ollama, on_disk, ref, port):
    session = session_for(port=port)
    started = session.start(ref(session, "qwen2.5:0.5b"))
    assert started.started and started.address == f"http://127.0.0.1:{port}"
    assert started.version == "0.12.3"
    [record] = serve_records(session)
    proc = psutil.Process(record.pid)
    assert abs(proc.create_time() - record.create_time) < 0.05
    assert "serve" in proc.cmdline()
    assert record.address == started.address and record.log.endswith("ollama-serve.log")
    assert proc.environ()["OLLAMA_HOST"] == f"127.0.0.1:{port}"
    assert proc.environ()["OLLAMA_MODELS"] == str(on_disk)
    # never a second server: the next start reuses it
    again = session.start(ref(session, "smollm2:135m"))
    assert not again.started and "started by Jarvis" in again.detail
    assert len(serve_records(session)) == 1
    assert session.detect("ollama").started_by_jarvis
    stopped = session.stop("ollama")
    assert serve_records(session) == []
    assert not psutil.pid_exists(record.pid) or psutil.Process(record.pid).status() == psutil.STATUS_ZOMBIE
    assert any("ollama serve" in line for line in stopped.stopped)


def test_start_reuses_a_server_jarvis_did_not_start(session_for, standin, fake_ollama, ref):
    server = standin()
    session = session_for(port=server.port)
    result = session.start(ref(session, "qwen2.5:0.5b"))
    assert not result.started and "already running" in result.detail
    assert session.state.records() == []


def test_start_with_ollama_host_binding_all_interfaces(session_for, fake_ollama, on_disk, ref, port, monkeypatch):
    monkeypatch.setenv("OLLAMA_HOST", f"0.0.0.0:{port}")
    session = session_for(port=1)
    result = session.start(ref(session, "qwen2.5:0.5b"))
    assert result.started and result.address == f"http://127.0.0.1:{port}"
    [record] = serve_records(session)
    assert psutil.Process(record.pid).environ()["OLLAMA_HOST"] == f"0.0.0.0:{port}"


def test_start_not_installed(session_for, no_ollama, ref):
    session = session_for()
    with pytest.raises(EngineUnavailableError) as info:
        session.start(ref(session, "qwen2.5:0.5b"))
    message = str(info.value)
    assert "https://ollama.com/download" in message and "install.sh" in message and "\n" not in message
    assert session.state.records() == []


def test_start_port_taken_by_another_program(session_for, fake_ollama, ref, port):
    import socket

    with socket.socket() as sock:  # this very test process holds the port
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        session = session_for(port=port)
        with pytest.raises(EngineError) as info:
            session.start(ref(session, "qwen2.5:0.5b"))
    message = str(info.value)
    assert f"Port {port}" in message and "not Ollama" in message and "OLLAMA_HOST" in message
    assert "pytest" in message or "python" in message  # the program holding it is named
    assert session.state.records() == []


def test_start_remote_address_is_not_started(session_for, fake_ollama, ref):
    session = session_for(url="http://192.0.2.1:11434")  # TEST-NET-1: never this machine
    with pytest.raises(EngineUnavailableError) as info:
        session.start(ref(session, "qwen2.5:0.5b"))
    assert "only on this machine" in str(info.value)


def test_start_fails_fast_with_the_log(session_for, fake_ollama, ref, port):
    fake_ollama.configure(fail_on_start="Error: could not create directory /nonexistent: permission denied")
    session = session_for(port=port, timeouts={"start": 30})
    began = time.monotonic()
    with pytest.raises(EngineError) as info:
        session.start(ref(session, "qwen2.5:0.5b"))
    assert time.monotonic() - began < 10  # not the 30 s deadline
    first, *tail = str(info.value).splitlines()
    assert "ollama serve" in first and "exited with code 1" in first and "ollama-serve.log" in first
    assert any("permission denied" in line for line in tail)  # the log's last lines, this start's only
    assert session.state.records() == []


def test_start_deadline(session_for, fake_ollama, ref, port):
    """Without its own start_timeout (null), Ollama's start is bounded by timeouts.start."""
    fake_ollama.configure(ready_delay=30)
    session = session_for(port=port, timeouts={"start": 1}, start_timeout=None)
    with pytest.raises(EngineTimeoutError) as info:
        session.start(ref(session, "qwen2.5:0.5b"))
    assert "timeouts.start" in str(info.value) and "1 s" in str(info.value)
    assert session.state.records() == []  # the half-started server was ended


def test_start_timeout_bounds_a_hung_ollama_serve(session_for, fake_ollama, ref, port):
    """A hung `ollama serve` is given up after engines.ollama.start_timeout (Ollama binds in seconds), not after the
    global timeouts.start."""
    fake_ollama.configure(ready_delay=60)
    session = session_for(port=port, timeouts={"start": 600}, start_timeout=1.5)
    began = time.monotonic()
    with pytest.raises(EngineTimeoutError) as info:
        session.start(ref(session, "qwen2.5:0.5b"))
    assert time.monotonic() - began < 15
    first = str(info.value).splitlines()[0]
    assert "was not ready after 1.5 s" in first and "engines.ollama.start_timeout" in first
    assert session.state.records() == []


def test_start_timeout_default_is_a_minute(session_for):
    assert session_for().context("ollama").settings.start_timeout == 60.0


# --- warmup ---------------------------------------------------------------------------------------------------------


def test_warmup_loads_and_records_the_model(session_for, fake_ollama, on_disk, ref, port):
    fake_ollama.configure(load_seconds=0.3)
    session = session_for(port=port)
    model = ref(session, "qwen2.5:0.5b")
    session.start(model)
    result = session.warmup(model)
    assert result.cold_start_s >= result.load_s >= 0.3
    assert "wall time of the load request" in result.detail  # Ollama's load-only reply reports no load_duration
    [record] = model_records(session)
    assert record.data["model"] == "qwen2.5:0.5b" and record.address == f"http://127.0.0.1:{port}"
    [entry] = loaded(f"http://127.0.0.1:{port}")
    assert entry["name"] == "qwen2.5:0.5b"
    # the runner child exists while the model is loaded
    [serve] = serve_records(session)
    runners = [p for p in psutil.Process(serve.pid).children(recursive=True) if "runner" in p.cmdline()]
    assert len(runners) == 1
    # warming up again does not record the model twice
    again = session.warmup(model)
    assert "already loaded" in again.detail
    assert len(model_records(session)) == 1
    answer = session.infer(model, ChatRequest(messages=FRANCE, stream=True))
    assert answer.ok and "Paris" in answer.text
    assert answer.server["load_duration"] < 0.3e9  # warm: the load was absorbed by warmup


def test_warmup_prompt_is_unlike_the_tests(session_for, standin, ref):
    from jarvis_core.api import WARMUP_PROMPT

    server = standin(answers={WARMUP_PROMPT: "ready"})  # the stand-in answers "ready" to exactly that prompt
    session = session_for(port=server.port)
    session.warmup(ref(session, "qwen2.5:0.5b"))
    chats = [e for e in server.emissions if e.path == "/api/chat"]
    assert len(chats) == 2  # the load, then one short request
    assert chats[0].chunks[-1]["done_reason"] == "load"
    assert "".join(c.get("message", {}).get("content", "") for c in chats[1].chunks) == "ready"
    assert "France" not in WARMUP_PROMPT and "capital" not in WARMUP_PROMPT.lower()


def test_warmup_keep_loaded_pins_the_model(session_for, standin, ref):
    server = standin()
    session = session_for(port=server.port, keep_loaded=True)
    result = session.warmup(ref(session, "qwen2.5:0.5b"))
    assert "keep_alive -1" in result.detail
    [entry] = loaded(server.url)
    assert int(entry["expires_at"][:4]) > 2200  # never expires


def test_warmup_of_a_model_loaded_by_the_user_is_not_recorded(session_for, standin, ref):
    server = standin()
    with client.client_for(server.url) as http:
        client.load(http, "qwen2.5:0.5b", keep_alive="5m", options={}, timeout=10)
    session = session_for(port=server.port)
    result = session.warmup(ref(session, "qwen2.5:0.5b"))
    assert "already loaded" in result.detail and "not unload" in result.detail
    assert model_records(session) == []
    session.stop("ollama")
    assert server.loaded == ["qwen2.5:0.5b"]  # the user's model stays


def test_warmup_model_missing(session_for, standin, ref):
    server = standin()
    session = session_for(port=server.port)
    with pytest.raises(ModelMissingError) as info:
        session.warmup(ref(session, "qwen2.5:7b"))
    message = str(info.value)
    assert "ollama pull qwen2.5:7b" in message and "--force-download" in message and "\n" not in message
    assert model_records(session) == []


def test_warmup_server_down(session_for, ref):
    session = session_for()
    with pytest.raises(EngineUnavailableError) as info:
        session.warmup(ref(session, "qwen2.5:0.5b"))
    assert "No Ollama server answers" in str(info.value)


def test_warmup_load_failure(session_for, standin, ref):
    server = standin(faults=[{"kind": "load_error", "endpoint": "chat"}])
    session = session_for(port=server.port)
    with pytest.raises(EngineError) as info:
        session.warmup(ref(session, "qwen2.5:0.5b"))
    assert "could not load" in str(info.value) and "CUDA0" in str(info.value)
    assert model_records(session) == []


def test_load_slower_than_the_deadline(session_for, standin, ref):
    server = standin(load_seconds=1.5)
    session = session_for(port=server.port, timeouts={"start": 0.3})
    began = time.monotonic()
    with pytest.raises(EngineTimeoutError) as info:
        session.warmup(ref(session, "qwen2.5:0.5b"))
    assert time.monotonic() - began < 1.4
    assert "timeouts.start" in str(info.value) and "qwen2.5:0.5b" in str(info.value)
    # the model was recorded before the load was sent: stop unloads it once the server finishes loading it
    assert len(model_records(session)) == 1
    result = session.stop("ollama")
    assert result.memory_released is True and server.loaded == []
    assert model_records(session) == []


# --- stop -----------------------------------------------------------------------------------------------------------


def test_stop_unloads_and_ends_the_tree(session_for, fake_ollama, on_disk, ref, port):
    session = session_for(port=port)
    for name in ("qwen2.5:0.5b", "smollm2:135m"):
        model = ref(session, name)
        session.start(model)
        session.warmup(model)
    [serve] = serve_records(session)
    tree = [psutil.Process(serve.pid)] + psutil.Process(serve.pid).children(recursive=True)
    assert len([p for p in tree if "runner" in p.cmdline()]) == 2
    result = session.stop("ollama")
    assert result.memory_released is True
    assert any("unloaded qwen2.5:0.5b" in s for s in result.stopped)
    assert any("unloaded smollm2:135m" in s for s in result.stopped)
    assert any(f"pid {serve.pid}" in s for s in result.stopped)
    assert result.left_running == []
    assert session.state.records() == []
    gone, alive = psutil.wait_procs(tree, timeout=5)
    assert alive == []
    # stopping twice is harmless
    assert session.stop("ollama").stopped == []


def test_stop_when_a_model_will_not_unload_in_time_ends_our_server_and_its_memory(session_for, fake_ollama,
                                                                                    on_disk, ref, port):
    """The unload does not finish before timeouts.stop, but the server is Jarvis's: ending it frees the model too,
    so nothing is reported left, the memory is back, and no stale record stays behind."""
    fake_ollama.configure(unload_delay=5)
    session = session_for(port=port, timeouts={"stop": 0.5})
    model = ref(session, "qwen2.5:0.5b")
    session.start(model)
    session.warmup(model)
    [serve] = serve_records(session)
    result = session.stop("ollama")
    assert any(f"pid {serve.pid}" in s for s in result.stopped)
    assert result.left_running == []
    assert result.memory_released is True
    assert session.state.records() == []


def test_stop_from_the_records_alone(session_for, make_session, fake_ollama, on_disk, ref, port, tmp_path):
    """`jarvis cleanup` after a crash: a new session, knowing nothing but the state file, ends what was started."""
    first = session_for(port=port)
    model = ref(first, "qwen2.5:0.5b")
    first.start(model)
    first.warmup(model)
    [serve] = serve_records(first)
    later = session_for(port=port + 1 if port < 65535 else port - 1)  # even with another address configured
    result = later.stop("ollama")
    assert any("unloaded qwen2.5:0.5b" in s for s in result.stopped)
    assert any(f"pid {serve.pid}" in s for s in result.stopped)
    assert later.state.records() == []


@pytest.mark.parametrize("clock_step", [0.0, 0.5])
def test_stop_after_the_server_crashed_leaves_no_runner(session_for, fake_ollama, on_disk, ref, port, clock_step):
    """The server dies mid-answer; its runners outlive it; stop still ends them (they stay in its process group),
    also when the recorded create time is off by a stepped clock (psutil derives it from the boot time)."""
    import json

    fake_ollama.configure(runner_survives_parent=True)
    session = session_for(port=port)
    model = ref(session, "qwen2.5:0.5b")
    session.start(model)
    if clock_step:
        data = json.loads(session.state.path.read_text())
        for record in data["records"]:
            record["create_time"] += clock_step
        session.state.path.write_text(json.dumps(data))
    with client.client_for(f"http://127.0.0.1:{port}") as http:
        client.load(http, model.name, keep_alive="5m", options={}, timeout=10)
        # the stand-in's control endpoint: the next chat kills the whole server after two chunks
        http.post("/_standin/faults", json={"kind": "crash", "after_chunks": 2, "endpoint": "chat"})
    [serve] = serve_records(session)
    runners = [p for p in psutil.Process(serve.pid).children(recursive=True) if "runner" in p.cmdline()]
    assert runners
    answer = session.infer(model, ChatRequest(messages=FRANCE, stream=True))
    assert not answer.ok  # engine died mid-stream: an error result, not a raise
    psutil.wait_procs([psutil.Process(serve.pid)], timeout=5)
    assert all(r.is_running() for r in runners)  # orphaned, still holding their memory
    session.stop("ollama")
    gone, alive = psutil.wait_procs(runners, timeout=5)
    assert alive == []
    assert session.state.records() == []


def test_stop_leaves_a_foreign_server_alone(session_for, standin, ref):
    server = standin(models=["qwen2.5:0.5b", "smollm2:135m"])
    with client.client_for(server.url) as http:  # the user's own model
        client.load(http, "smollm2:135m", keep_alive="5m", options={}, timeout=10)
    session = session_for(port=server.port)
    session.warmup(ref(session, "qwen2.5:0.5b"))
    result = session.stop("ollama")
    assert result.stopped == [f"unloaded qwen2.5:0.5b at {server.url}"]
    assert result.memory_released is True
    assert len(result.left_running) == 1 and "not started by Jarvis" in result.left_running[0]
    assert "stop_foreign_server" in result.left_running[0]
    assert server.running and server.loaded == ["smollm2:135m"]


def test_stop_foreign_server_when_asked(session_for, fake_ollama, on_disk, port, tmp_path):
    """stop_foreign_server: true ends a server Jarvis did not start (here one the test starts itself)."""
    import os
    import subprocess

    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(on_disk)}
    log = open(tmp_path / "foreign.log", "wb")
    foreign = subprocess.Popen([str(fake_ollama.path), "serve"], env=env, stdout=log, stderr=log)
    try:
        session = session_for(port=port, stop_foreign_server=True)
        _wait_for(lambda: session.detect("ollama").reachable)
        result = session.stop("ollama")
        assert any("not started by Jarvis" in s for s in result.stopped)
        assert foreign.wait(10) is not None
        assert not session.detect("ollama").reachable
    finally:
        if foreign.poll() is None:
            foreign.kill()
            foreign.wait()
        log.close()


@pytest.mark.integration  # about 4 s: the stand-in server takes a moment to stop, and a restart is awaited
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="a tray app stand-in needs a POSIX shebang")
def test_stop_foreign_server_ends_the_tray_app_first(session_for, fake_ollama, on_disk, port, tmp_path):
    """Windows' `ollama app.exe` restarts `ollama serve` a second after it exits: it must be ended first."""
    import os
    import subprocess
    import sys

    tray = tmp_path / "ollama app.exe"  # the process name the plugin looks for
    tray.write_text(
        f"#!{sys.executable}\n"
        "import subprocess, sys, time\n"
        "while True:\n"
        f"    child = subprocess.Popen([{str(fake_ollama.path)!r}, 'serve'])\n"
        "    child.wait()\n"
        "    time.sleep(1)  # like the tray: restart serve a second after it exits\n")
    tray.chmod(0o755)
    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(on_disk)}
    app = subprocess.Popen([str(tray)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        assert psutil.Process(app.pid).name() == "ollama app.exe"
        session = session_for(port=port, stop_foreign_server=True)
        _wait_for(lambda: session.detect("ollama").reachable)
        result = session.stop("ollama")
        assert any("tray app" in s for s in result.stopped), result
        assert app.wait(10) is not None
        time.sleep(1.5)  # a restart would have happened by now
        assert not session.detect("ollama").reachable
        assert result.left_running == []
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()


def _wait_for(condition, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_stop_foreign_server_spares_a_program_that_is_not_ollama(session_for, standin, monkeypatch):
    """Whatever else holds the port (here: `sleep`, as the system reports it) is never ended, only described."""
    import subprocess

    from jarvis_ollama import server as server_module

    server = standin()  # answers like Ollama, but the port's listener, as the system tells it, is `sleep`
    other = subprocess.Popen(["sleep", "30"])
    try:
        monkeypatch.setattr(server_module, "listener_pid", lambda port: other.pid)
        result = session_for(port=server.port, stop_foreign_server=True).stop("ollama")
        assert result.stopped == [] and other.poll() is None
        [left] = result.left_running
        assert f"held by 'sleep 30' (pid {other.pid}), which does not look like Ollama" in left
    finally:
        other.kill()
        other.wait()


def test_stop_foreign_server_never_ends_a_local_process_for_a_remote_address(session_for, fake_ollama, on_disk,
                                                                               port, tmp_path, monkeypatch):
    """The address is on another machine: an Ollama that happens to listen on the same port here is not it."""
    import os
    import subprocess

    from jarvis_ollama import server as server_module

    env = {**os.environ, "OLLAMA_HOST": f"127.0.0.1:{port}", "OLLAMA_MODELS": str(on_disk)}
    with open(tmp_path / "local.log", "wb") as log:
        local = subprocess.Popen([str(fake_ollama.path), "serve"], env=env, stdout=log, stderr=log)
    try:
        _wait_for(lambda: server_module.server_version(f"http://127.0.0.1:{port}") is not None)
        remote = f"http://192.0.2.7:{port}"  # TEST-NET-1: never this machine
        monkeypatch.setattr(server_module, "server_version", lambda url, timeout=1.0: "0.12.0")  # "it answers"
        result = session_for(url=remote, stop_foreign_server=True).stop("ollama")
        assert result.stopped == [] and local.poll() is None
        [left] = result.left_running
        assert "runs on another machine (192.0.2.7)" in left
    finally:
        local.terminate()
        local.wait(10)


def test_a_systemd_service_is_never_killed(session_for, standin, monkeypatch):
    from jarvis_ollama import server as server_module

    server = standin()
    monkeypatch.setattr(server_module, "systemd_unit", lambda pid: "ollama.service")
    result = session_for(port=server.port, stop_foreign_server=True).stop("ollama")
    assert result.stopped == []
    [left] = result.left_running
    assert "systemd service ollama.service" in left and "sudo systemctl stop ollama" in left
    assert server.running


def test_a_server_inside_this_process_is_never_killed(session_for, standin):
    server = standin()  # the in-process stand-in listens from this very process
    result = session_for(port=server.port, stop_foreign_server=True).stop("ollama")
    assert result.stopped == [] and "own process" in result.left_running[0]
    assert server.running


def test_another_runs_server_is_left_to_it(ollama, fake_ollama, on_disk, port, tmp_path, ref):
    """A run scoped to its own records must not take a loadout's (or another run's) server for a foreign one."""
    import io

    from jarvis_core.config import Config, build_settings
    from jarvis_core.progress import Progress
    from jarvis_core.session import Session
    from jarvis_core.state import StateStore

    config = build_settings(Config, {"engines": {"ollama": {"url": f"127.0.0.1:{port}", "models_dir": str(on_disk),
                                                            "stop_foreign_server": True}}},
                            source="test", path="", exclude=("source",))

    def session(run_id: str) -> Session:
        return Session(config, state=StateStore(tmp_path / "state", run_ids={run_id}), run_id=run_id,
                       progress=Progress(io.StringIO()))

    loadout, run = session("loadout:daily"), session("run-1")
    try:
        assert loadout.start(ref(loadout, "qwen2.5:0.5b")).started
        assert not run.start(ref(run, "qwen2.5:0.5b")).started
        run.warmup(ref(run, "qwen2.5:0.5b"))
        result = run.stop("ollama")
        assert any("unloaded qwen2.5:0.5b" in s for s in result.stopped)  # what the run loaded, it unloads
        assert "another Jarvis run or loadout (loadout:daily)" in result.left_running[0]
        assert run.detect("ollama").reachable and run.detect("ollama").started_by_jarvis
    finally:
        assert any("ollama serve" in s for s in loadout.stop("ollama").stopped)


def test_a_model_loaded_by_infer_alone_is_recorded_and_unloaded(session_for, standin, ref):
    """With #warmup=0 the first test request loads the model: it is recorded all the same, so stop unloads it."""
    server = standin()
    session = session_for(port=server.port)
    model = ref(session, "qwen2.5:0.5b")
    for _ in range(3):
        assert session.infer(model, ChatRequest(messages=FRANCE)).ok
    assert [r.data["model"] for r in model_records(session)] == ["qwen2.5:0.5b"]
    assert len([e for e in server.emissions if e.path == "/api/ps"]) == 1  # checked once, not per request
    result = session.stop("ollama")
    assert result.stopped == [f"unloaded qwen2.5:0.5b at {server.url}"] and server.loaded == []
    # after a stop, the next first use is checked again
    assert session.infer(model, ChatRequest(messages=FRANCE)).ok
    assert len(model_records(session)) == 1


def test_records_of_other_runs_come_from_the_context_state(ollama, make_session):
    """The plugin sees other runs' records through `ctx.state.records(..., any_run=True)`, whatever store the core
    hands it (here one that is not a file in a folder), never by opening a second store of its own."""
    from jarvis_core.api import Record

    from jarvis_ollama import server as server_module

    class MemoryState:
        """A run-scoped state as the core could hand it: only its public API."""

        run_ids = {"run-1"}

        def __init__(self, records):
            self._records = records

        def records(self, engine=None, kind=None, *, any_run=False):
            return [r for r in self._records if (engine is None or r.engine == engine)
                    and (kind is None or r.kind == kind) and (any_run or r.run_id in self.run_ids)]

    me = psutil.Process()
    theirs = Record(id="x", engine="ollama", kind="process", run_id="loadout:daily", pid=me.pid,
                    create_time=me.create_time(), address="http://127.0.0.1:1")
    session = make_session({"engines": {"ollama": {"url": "http://127.0.0.1:1"}}})
    ctx = session.context("ollama")
    ctx.state = MemoryState([theirs])
    assert server_module.running_records(ctx, "http://127.0.0.1:1") == []
    assert server_module.running_records(ctx, "http://127.0.0.1:1", any_run=True) == [theirs]
