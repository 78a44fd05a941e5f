"""Hardening of the vLLM plugin (issue 12): no secret from any source reaches any text the plugin produces; Docker is
reached with `docker.from_env` semantics (TLS variables honoured); a start is bounded by `start_timeout`; a port held
by a program that is not vLLM is reported as that, in one line, never as a missing model."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jarvis_core.engine import ChatRequest, Message
from jarvis_core.errors import ConfigError, EngineError, EngineTimeoutError, EngineUnavailableError
from jarvis_core.processes import free_port, port_open
from jarvis_core.testing import serve
from jarvis_vllm import docker_runtime

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CONFIG, make_repo

MODEL = "jarvis-test/tiny"
FRANCE = [Message("user", "What is the capital of France?")]
API_KEY = "sk-vllm-Secret-0123456789"
MODEL_TOKEN = "hf_PerModel-Secret-98765"
PASSWORD = "Pa55-w0rd-in-a-url"
HF_TOKEN = "hf_EnvToken-Secret-4242"
SECRETS = (API_KEY, MODEL_TOKEN, PASSWORD, HF_TOKEN)


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    hub = tmp_path / "hub"
    make_repo(hub, MODEL, {"config.json": CONFIG, "model.safetensors": b"w"})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    return hub


@pytest.fixture
def proc_session(session_for, fake_vllm, hub):
    def make(*model_args: str, timeouts: dict | None = None, **settings):
        settings.setdefault("port", free_port())
        settings.setdefault("gpus", "none")
        return session_for(runtime="process", executable=str(fake_vllm), timeouts=timeouts,
                           models={MODEL: {"served_name": "tiny", "extra_args": list(model_args)}}, **settings)
    return make


def _everything(session, *texts: object, whole_logs: bool = False) -> str:
    """Every text the plugin produced for this session: what it returned or raised (given), the console's progress
    notes, the state file, and what Jarvis wrote into log files: the header line of a process's log (the rest is the
    engine's own output), or the whole file (`whole_logs`: a container's log, which Jarvis saves itself)."""
    logs = session.state.logs_dir
    written = [p.read_text(errors="replace") for p in logs.glob("*")] if whole_logs and logs.is_dir() else \
        [_log_headers(session)]
    state = session.state.path.read_text() if session.state.path.exists() else ""
    return "\n".join([*map(str, texts), session.progress.stream.getvalue(), state, *written])


def _log_headers(session) -> str:
    """The lines Jarvis itself wrote into the engines' logs (the header with the command)."""
    return "\n".join(line for p in session.state.logs_dir.glob("*.log")
                     for line in p.read_text(errors="replace").splitlines() if line.startswith("--- jarvis "))


def _assert_clean(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text


# --- secrets, from every source -------------------------------------------------------------------------------------


def test_api_key_in_extra_args_is_sent_but_never_shown(proc_session):
    """`--api-key` in the global and `--hf-token=` in the model's extra_args: the server gets them and Jarvis
    authenticates with the key, but no result, note, record or header line shows either."""
    session = proc_session(f"--hf-token={MODEL_TOKEN}", extra_args=["--api-key", API_KEY])
    ref = session.resolve(f"vllm:{MODEL}")
    found = session.detect("vllm")
    available = session.is_available(ref)
    started = session.start(ref)
    assert started.started
    answer = session.infer(ref, ChatRequest(FRANCE))
    assert answer.ok, answer.error  # the stand-in wants `Authorization: Bearer <key>` on /v1/*
    again = session.start(ref)  # reuse: the running server is recognised through its key
    assert not again.started
    detected = session.detect("vllm")
    assert detected.reachable and detected.loaded_models
    [record] = session.state.records("vllm", "process")
    assert "--api-key" in record.command and "***" in record.command
    header = _log_headers(session)
    assert "--api-key ***" in header and "--hf-token=***" in header
    stopped = session.stop("vllm")
    _assert_clean(_everything(session, found, available, started, again, detected, stopped, header))


def test_api_key_in_a_failed_start_is_never_shown(proc_session):
    session = proc_session("--api-key", API_KEY, "--ready-after", "0.2", "--fail-start",
                           f"ValueError: the key {API_KEY} and token {MODEL_TOKEN} and {HF_TOKEN} were refused",
                           environment={"DB_PASSWORD": PASSWORD},
                           extra_args=["--hf-token", MODEL_TOKEN])
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    message = str(info.value)
    assert "were refused" in message and "--api-key ***" in message
    _assert_clean(_everything(session, message))


def test_url_user_information_is_sent_as_basic_auth_but_never_shown(session_for):
    wanted = "Basic " + base64.b64encode(f"jarvis:{PASSWORD}".encode()).decode()
    seen = []

    class Guarded(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            if self.headers.get("Authorization") != wanted:
                self.send_response(401)
                self.end_headers()
                return
            body = json.dumps({"object": "list", "data": [{"id": "tiny", "object": "model", "root": MODEL}]}) \
                if self.path == "/v1/models" else json.dumps({"version": "0.11.0"})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body.encode())

    with serve(Guarded) as url:
        secret_url = url.replace("http://", f"http://jarvis:{PASSWORD}@")
        session = session_for(url=secret_url, served_name="tiny")
        found = session.detect("vllm")
        assert found.reachable and found.address == url  # the address as shown and recorded has no credentials
        available = session.is_available(session.resolve(f"vllm:{MODEL}"))
        assert available.present
        started = session.start(session.resolve(f"vllm:{MODEL}"))
        assert not started.started and started.address == url
    assert wanted in seen
    down = session_for(url=secret_url.rsplit(":", 1)[0] + f":{free_port()}")
    not_there = down.detect("vllm")
    with pytest.raises(EngineUnavailableError) as info:
        down.is_available(down.resolve(f"vllm:{MODEL}"))
    with pytest.raises(EngineUnavailableError) as start_info:
        down.start(down.resolve(f"vllm:{MODEL}"))
    _assert_clean(_everything(session, found, available, started, not_there, info.value, start_info.value))


def test_a_bad_url_with_a_secret_is_refused_without_it(vllm_plugin, make_session):
    with pytest.raises(ConfigError) as info:
        make_session({"engines": {"vllm": {"url": f"ftp://jarvis:{PASSWORD}@host/"}}}).detect("vllm")
    assert "url must start with http://" in str(info.value)
    _assert_clean(str(info.value))


def test_docker_host_user_information_is_never_shown(session_for, monkeypatch, hub):
    monkeypatch.setenv("DOCKER_HOST", f"tcp://jarvis:{PASSWORD}@127.0.0.1:{free_port()}")
    session = session_for(runtime="docker", port=free_port())
    found = session.detect("vllm")
    assert not found.installed and "Docker is not reachable at tcp://***@127.0.0.1" in found.detail
    assert "\n" not in found.detail
    with pytest.raises(EngineUnavailableError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    with pytest.raises(EngineUnavailableError) as pulled:
        session.pull(session.resolve(f"vllm:{MODEL}"))
    _assert_clean(_everything(session, found, info.value, pulled.value))


def test_docker_host_with_a_secret_is_recorded_redacted_and_still_stopped(monkeypatch):
    from jarvis_core.state import Record
    from jarvis_vllm.settings import VllmSettings

    host = f"tcp://jarvis:{PASSWORD}@docker.example:2376"
    settings = VllmSettings().apply_environment({"HOME": "/h", "DOCKER_HOST": host})
    stored = docker_runtime.redact(host, settings.secrets())
    assert PASSWORD not in stored
    record = Record(id="r", engine="vllm", kind="container", data={"docker_host": stored})
    assert docker_runtime.recorded_host(record, settings) == host  # the configured daemon, recognised
    other = VllmSettings().apply_environment({"HOME": "/h"})
    assert docker_runtime.recorded_host(record, other) == stored


def test_container_failure_with_an_api_key_in_the_models_args(session_for, monkeypatch, tmp_path):
    from test_vllm_docker_start import FakeDocker

    hub = tmp_path / "hf-home" / "hub"
    make_repo(hub, MODEL, {"config.json": CONFIG, "model.safetensors": b"w"})
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    log = (f"args: Namespace(api_key=['{API_KEY}'], hf_token='{MODEL_TOKEN}')\nnon-default args: "
           f"{{'api_key': ['{API_KEY}']}}\nHF_TOKEN={HF_TOKEN}\nRuntimeError: Engine core initialization failed")
    docker = FakeDocker(log, exit_code=1)
    monkeypatch.setattr(docker_runtime, "connect", lambda host, secrets=(): docker)
    session = session_for(runtime="docker", port=free_port(), gpus="none",
                          models={MODEL: {"served_name": "tiny", "extra_args": ["--api-key", API_KEY,
                                                                                f"--hf-token={MODEL_TOKEN}"]}})
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    message = str(info.value)
    assert "Engine core initialization failed" in message and "--api-key ***" in message
    assert docker.kwargs["command"][docker.kwargs["command"].index("--api-key") + 1] == API_KEY  # it got the key
    _assert_clean(_everything(session, message, whole_logs=True))


# --- Docker: from_env semantics -------------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path: Path) -> Path:
    folder = tmp_path / "docker-certs"
    folder.mkdir()
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (folder / name).write_text("not a real certificate: the client only checks that the files exist\n")
    return folder


@pytest.fixture
def no_ping():
    """A client that is never asked anything: only how it was made is checked (no TLS daemon is needed). Undone when
    this fixture ends, before the leftover check of a real Docker engine needs the real version negotiation."""
    import docker
    from docker.api.client import APIClient

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(APIClient, "_retrieve_server_version", lambda self: "1.43")
        patch.setattr(docker.DockerClient, "ping", lambda self: True)
        yield


def test_docker_tls_variables_apply_to_docker_host(monkeypatch, certs, no_ping):
    port = free_port()
    monkeypatch.setenv("DOCKER_HOST", f"tcp://127.0.0.1:{port}")
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    from jarvis_vllm.settings import VllmSettings

    import os

    settings = VllmSettings().apply_environment(os.environ)
    client = docker_runtime.connect(settings.docker_host)
    try:
        assert client.api.base_url == f"https://127.0.0.1:{port}"  # TLS: tcp:// is spoken as https://
        assert client.api.verify == str(certs / "ca.pem")
        assert client.api.cert == (str(certs / "cert.pem"), str(certs / "key.pem"))
        assert client.api.timeout == docker_runtime.API_TIMEOUT
    finally:
        client.close()


def test_docker_tls_variables_apply_to_the_configured_docker_host(monkeypatch, certs, no_ping):
    monkeypatch.delenv("DOCKER_HOST", raising=False)
    monkeypatch.setenv("DOCKER_TLS_VERIFY", "1")
    monkeypatch.setenv("DOCKER_CERT_PATH", str(certs))
    client = docker_runtime.connect("tcp://docker.example:2376")
    try:
        assert client.api.base_url == "https://docker.example:2376" and client.api.verify == str(certs / "ca.pem")
    finally:
        client.close()


def test_without_tls_variables_docker_host_is_plain(monkeypatch, no_ping):
    for name in ("DOCKER_TLS_VERIFY", "DOCKER_CERT_PATH"):
        monkeypatch.delenv(name, raising=False)
    client = docker_runtime.connect("tcp://127.0.0.1:2375")
    try:
        assert client.api.base_url == "http://127.0.0.1:2375" and client.api.cert is None
    finally:
        client.close()


@pytest.mark.parametrize("environment", [
    {"DOCKER_HOST": "unix:///nonexistent/docker.sock"},
    {"DOCKER_HOST": "tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "{certs}"},
    {"DOCKER_HOST": "tcp://127.0.0.1:{port}", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": "/nonexistent/certs"},
])
def test_docker_not_running_is_one_line(session_for, monkeypatch, certs, environment, hub):
    port = free_port()
    for name, value in environment.items():
        monkeypatch.setenv(name, value.format(port=port, certs=certs))
    session = session_for(runtime="docker", port=free_port())
    found = session.detect("vllm")
    assert not found.installed and "Docker is not reachable at " in found.detail and "\n" not in found.detail
    with pytest.raises(EngineUnavailableError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert "Docker is not reachable at " in str(info.value) and "\n" not in str(info.value)


# --- GPUs of the container ------------------------------------------------------------------------------------------


def _ctx():
    class Ctx:
        run_id = "run123"
        force_download = False

    return Ctx()


@pytest.mark.parametrize("gpus, visible, docker_host, ids, shown", [
    ([1], "2,3", None, ["3"], '"device=3"'),
    ([0, 1], "3,1", None, ["3", "1"], '"device=3,1"'),
    ("all", "2,3", None, ["2", "3"], '"device=2,3"'),
    ("all", None, None, None, "all"),
    ("none", "2,3", None, [], None),
    ([1], "2,3", "tcp://gpu-box:2375", ["1"], '"device=1"'),  # a remote daemon's GPUs are not this machine's
])
def test_container_gpus_follow_cuda_visible_devices(monkeypatch, gpus, visible, docker_host, ids, shown):
    from jarvis_vllm.settings import VllmSettings

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    settings = VllmSettings(gpus=gpus, docker_host=docker_host).apply_environment({"HOME": "/h"})
    assert docker_runtime.device_ids(settings) == ids
    kwargs = docker_runtime.run_kwargs(_ctx(), settings, settings.launch("org/m"), None)
    if ids is None:
        assert kwargs["device_requests"][0]["Count"] == -1
    elif not ids:
        assert kwargs["device_requests"] == []
    else:
        assert kwargs["device_requests"][0]["DeviceIDs"] == ids
    command = docker_runtime.describe_command(settings, kwargs)
    if shown is None:
        assert "--gpus" not in command
    else:
        assert command[command.index("--gpus") + 1] == shown


def test_container_records_the_engines_gpu_baseline(session_for, monkeypatch, tmp_path, fake_gpus):
    from test_vllm_docker_start import FakeDocker

    hub = tmp_path / "hf-home" / "hub"
    make_repo(hub, MODEL, {"config.json": CONFIG, "model.safetensors": b"w"})
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,0")
    docker = FakeDocker("INFO ready", exit_code=None)
    monkeypatch.setattr(docker_runtime, "connect", lambda host, secrets=(): docker)
    monkeypatch.setattr(docker_runtime, "_wait", lambda *args: (0.1, None))  # as if it got ready
    session = session_for(runtime="docker", port=free_port(), gpus=[0], models={MODEL: {"served_name": "tiny"}})
    session.start(session.resolve(f"vllm:{MODEL}"))
    [record] = session.state.records("vllm", "container")
    assert record.data["gpu_baseline_mib"] == 500 and record.data["gpus"] == ["0"]  # engine GPU 0 = driver's GPU 1
    assert docker.kwargs["device_requests"][0]["DeviceIDs"] == ["1"]
    assert '"device=1"' in record.command


# --- start_timeout ----------------------------------------------------------------------------------------------------


def test_start_timeout_bounds_a_hung_start(proc_session):
    session = proc_session("--ready-after", "60", timeouts={"start": 600}, start_timeout=1.5)
    began = time.monotonic()
    with pytest.raises(EngineTimeoutError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert time.monotonic() - began < 20
    first = str(info.value).splitlines()[0]
    assert "was not ready after 1.5 s" in first and "engines.vllm.start_timeout" in first
    assert session.state.records("vllm") == []


def test_start_timeout_bounds_a_container_that_never_gets_ready(session_for, monkeypatch, tmp_path):
    from test_vllm_docker_start import FakeDocker

    hub = tmp_path / "hf-home" / "hub"
    make_repo(hub, MODEL, {"config.json": CONFIG, "model.safetensors": b"w"})
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    docker = FakeDocker("INFO still loading", exit_code=None)
    monkeypatch.setattr(docker_runtime, "connect", lambda host, secrets=(): docker)
    session = session_for(runtime="docker", port=free_port(), gpus="none", timeouts={"start": 600},
                          start_timeout=1, models={MODEL: {"served_name": "tiny"}})
    began = time.monotonic()
    with pytest.raises(EngineTimeoutError, match="was not ready after 1 s"):
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert time.monotonic() - began < 20
    [container] = docker.made
    assert container.removed and session.state.records("vllm") == []


def test_start_timeout_defaults_to_the_global_one(session_for, make_session):
    settings = session_for().context("vllm").settings
    assert settings.start_timeout is None
    with pytest.raises(ConfigError, match="start_timeout"):
        make_session({"engines": {"vllm": {"start_timeout": 0}}}).detect("vllm")


# --- a port held by a program that is not vLLM ------------------------------------------------------------------------


@pytest.fixture
def http_server():
    """`python -m http.server` on a free port: answers 404 to /v1/models."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.02)
    yield port, proc
    proc.terminate()
    proc.wait(10)


def test_an_http_server_on_the_port_is_reported_not_missing(proc_session, http_server):
    port, proc = http_server
    session = proc_session(port=port)
    ref = session.resolve("vllm:org/not-in-the-cache")  # would be MISSING if the port were free
    found = session.detect("vllm")
    assert found.installed and not found.reachable
    expected = f"Port {port} on 127.0.0.1 is already in use (held by '"
    assert expected in found.detail and f"(pid {proc.pid}), not vLLM: it answers GET /v1/models with HTTP 404" \
        in found.detail and "http.server" in found.detail
    with pytest.raises(EngineError) as info:
        session.is_available(ref)
    message = str(info.value)
    assert "\n" not in message and message.startswith(expected) and "http.server" in message
    assert f"pid {proc.pid}" in message and "engines.vllm.port" in message
    with pytest.raises(EngineError) as started:
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert "\n" not in str(started.value) and f"pid {proc.pid}" in str(started.value)
    assert session.state.records("vllm") == []


def test_a_silent_tcp_listener_on_the_port_is_reported(proc_session):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        session = proc_session(port=port)
        began = time.monotonic()
        assert session.is_available(session.resolve(f"vllm:{MODEL}")).present  # in the cache: present, truly
        with pytest.raises(EngineError) as info:  # not in the cache: the port is what is wrong first
            session.is_available(session.resolve("vllm:org/not-in-the-cache"))
        assert time.monotonic() - began < 15
    message = str(info.value)
    assert "\n" not in message and f"Port {port} on 127.0.0.1 is already in use" in message
    assert "not vLLM: it accepts connections but sends no HTTP answer" in message and "python" in message


def test_a_remote_url_answered_by_something_else(session_for, http_server):
    port, _ = http_server
    session = session_for(url=f"http://127.0.0.1:{port}")
    found = session.detect("vllm")
    assert not found.usable and "not as a vLLM server: it answers GET /v1/models with HTTP 404" in found.detail
    with pytest.raises(EngineUnavailableError) as info:
        session.is_available(session.resolve(f"vllm:{MODEL}"))
    assert "\n" not in str(info.value) and "not as a vLLM server" in str(info.value)


def test_a_server_jarvis_recorded_is_not_called_foreign(proc_session):
    """A vLLM that Jarvis started (another run's, still loading) holds the port without answering: not "not vLLM"."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(8)
        port = sock.getsockname()[1]
        session = proc_session(port=port)
        session.state.add("vllm", "process", run_id="another-run", port=port, model=MODEL)
        assert session.is_available(session.resolve(f"vllm:{MODEL}")).present
        assert "not vLLM" not in session.detect("vllm").detail
