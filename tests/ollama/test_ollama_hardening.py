"""Hardening of the Ollama plugin (issue 12): credentials in the address (engines.ollama.url, OLLAMA_HOST) are sent as
basic authentication but appear in no text the plugin produces; a port held by a program that is not Ollama is
reported as that, in one line, never as a missing model."""

from __future__ import annotations

import base64
import http.server
import json
import socket
import subprocess
import sys
import time

import psutil
import pytest

from jarvis_core.engine import ChatRequest, Message
from jarvis_core.errors import ConfigError, EngineError
from jarvis_core.processes import port_open
from jarvis_core.testing import serve
from tests.standins import ollama_models

PASSWORD = "Pr0xy-Pa55word-0123"
FRANCE = [Message("user", "What is the capital of France?")]


def _everything(session, *texts: object) -> str:
    """What the plugin produced: the given results and errors, progress notes, the state file, and the lines Jarvis
    itself wrote into logs (the header of each; the rest is the engine's own output)."""
    logs = session.state.logs_dir
    headers = [line for p in logs.glob("*.log") for line in p.read_text(errors="replace").splitlines()
               if line.startswith("--- jarvis ")] if logs.is_dir() else []
    state = session.state.path.read_text() if session.state.path.exists() else ""
    return "\n".join([*map(str, texts), session.progress.stream.getvalue(), state, *headers])


# --- credentials in the address -----------------------------------------------------------------------------------


def test_credentials_in_the_url_are_kept_apart():
    from jarvis_ollama.settings import OllamaSettings, parse_host

    settings = OllamaSettings(url=f"https://jarvis:{PASSWORD}@ollama-proxy.example:8443/")
    assert settings.url == "https://ollama-proxy.example:8443" and settings.serve_host == "ollama-proxy.example:8443"
    assert settings.credentials == f"jarvis:{PASSWORD}" and PASSWORD not in repr(settings)
    assert PASSWORD in settings.secrets()
    assert parse_host(f"jarvis:{PASSWORD}@127.0.0.1:1234").url == "http://127.0.0.1:1234"
    changed = OllamaSettings().apply_environment({"OLLAMA_HOST": f"http://jarvis:{PASSWORD}@10.0.0.5:9000"})
    assert changed.url == "http://10.0.0.5:9000" and changed.credentials == f"jarvis:{PASSWORD}"
    assert OllamaSettings(url=f"http://u:{PASSWORD}@h:1").apply_environment({}).credentials == f"u:{PASSWORD}"


@pytest.mark.parametrize("value", [f"http://jarvis:{PASSWORD}@127.0.0.1:notaport", f"ftp://jarvis:{PASSWORD}@h:1",
                                   f"jarvis:{PASSWORD}@[::1"])
def test_a_bad_address_with_credentials_is_refused_without_them(ollama, make_session, value):
    from jarvis_ollama.settings import OllamaSettings

    with pytest.raises(ConfigError) as info:
        OllamaSettings().apply_environment({"OLLAMA_HOST": value})
    assert PASSWORD not in str(info.value) and "***@" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(ConfigError) as info:
        make_session({"engines": {"ollama": {"url": value}}}).detect("ollama")
    assert PASSWORD not in str(info.value) and "***@" in str(info.value)


def test_credentials_reach_a_server_behind_basic_auth(session_for, port):
    wanted = "Basic " + base64.b64encode(f"jarvis:{PASSWORD}".encode()).decode()
    seen = []

    class Guarded(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_GET(self):
            seen.append(self.headers.get("Authorization"))
            ok = self.headers.get("Authorization") == wanted
            body = json.dumps({"version": "0.12.9"} if self.path == "/api/version" else {"models": []}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body) if ok else 0))
            self.end_headers()
            if ok:
                self.wfile.write(body)

    with serve(Guarded) as url:
        session = session_for(url=url.replace("http://", f"http://jarvis:{PASSWORD}@"))
        found = session.detect("ollama")
        assert found.reachable and found.version == "0.12.9" and found.address == url
        missing = session.is_available(session.resolve("ol_qwen2.5:0.5b"))
        assert not missing.present and url in missing.detail
        started = session.start(session.resolve("ol_qwen2.5:0.5b"))
        assert not started.started and started.address == url
    assert wanted in seen and None not in seen  # every request carried the credentials
    assert PASSWORD not in _everything(session, found, missing, started)


def test_credentials_never_shown_through_a_whole_cycle(session_for, standin, monkeypatch):
    server = standin(models=["qwen2.5:0.5b"])
    monkeypatch.setenv("OLLAMA_HOST", f"http://jarvis:{PASSWORD}@127.0.0.1:{server.port}")
    session = session_for()
    ref = session.resolve("ol_qwen2.5:0.5b")
    texts = [session.detect("ollama"), session.is_available(ref), session.start(ref), session.warmup(ref)]
    answer = session.infer(ref, ChatRequest(FRANCE))
    assert answer.ok, answer.error
    texts += [answer.error, session.stop("ollama")]
    assert PASSWORD not in _everything(session, *texts)


def test_a_server_jarvis_starts_gets_no_credentials(session_for, fake_ollama, port):
    ollama_models.write_model(session_for().context("ollama").settings.models_dir, "qwen2.5:0.5b")
    session = session_for(url=f"http://jarvis:{PASSWORD}@127.0.0.1:{port}")
    started = session.start(session.resolve("ol_qwen2.5:0.5b"))
    assert started.started and started.address == f"http://127.0.0.1:{port}"
    [record] = session.state.records("ollama", "process")
    assert psutil.Process(record.pid).environ()["OLLAMA_HOST"] == f"127.0.0.1:{port}"
    stopped = session.stop("ollama")
    assert PASSWORD not in _everything(session, started, stopped)


# --- a port held by a program that is not Ollama ------------------------------------------------------------------


from test_ollama_detect import not_ollama as http_server  # noqa: E402,F401 - the same foreign HTTP server


def test_an_http_server_on_the_port_is_reported_not_missing(session_for, fake_ollama, http_server, port):
    session = session_for(port=port)
    ref = session.resolve("ol_qwen2.5:7b")  # on no disk: MISSING, were the port free
    expected = (f"Port {port} at 127.0.0.1, where Ollama should answer (http://127.0.0.1:{port}), is held by '")
    found = session.detect("ollama")
    assert found.installed and not found.reachable and found.detail.startswith(expected)
    assert f"(pid {http_server.pid}), which is not Ollama: it answers GET /api/version with HTTP 404" in found.detail
    with pytest.raises(EngineError) as info:
        session.is_available(ref)
    message = str(info.value)
    assert message.startswith(expected) and "http.server" in message and f"pid {http_server.pid}" in message
    assert "\n" not in message and "OLLAMA_HOST" in message
    with pytest.raises(EngineError) as started:
        session.start(ref)
    assert str(started.value) == message and session.state.records() == []


def test_a_silent_tcp_listener_on_the_port_is_reported(session_for, fake_ollama, port):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(8)
        session = session_for(port=port)
        began = time.monotonic()
        with pytest.raises(EngineError) as info:
            session.is_available(session.resolve("ol_qwen2.5:7b"))
        assert time.monotonic() - began < 10
        detail = session.detect("ollama").detail
    message = str(info.value)
    assert "\n" not in message and f"Port {port} at 127.0.0.1" in message
    assert "which is not Ollama: it accepts connections but sends no HTTP answer" in message
    assert "which is not Ollama" in detail


def test_a_hung_ollama_on_the_port_is_not_called_foreign(session_for, fake_ollama, port, tmp_path):
    """An `ollama` program holding the port without answering (still starting, or hung) is said to be one."""
    script = tmp_path / "hung" / "ollama"
    script.parent.mkdir()
    script.write_text(f"import socket, time\ns = socket.socket()\ns.bind(('127.0.0.1', {port}))\ns.listen(8)\n"
                      f"time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, str(script), "serve"])
    try:
        deadline = time.monotonic() + 10
        while not port_open("127.0.0.1", port) and time.monotonic() < deadline:
            time.sleep(0.02)
        detail = session_for(port=port).detect("ollama").detail
        assert f"(pid {proc.pid}), an Ollama that does not answer" in detail and "still starting, or hung?" in detail
    finally:
        proc.kill()
        proc.wait(10)


def test_only_the_ollama_program_looks_like_ollama(tmp_path):
    """What `stop_foreign_server` may end: the `ollama` program, not a program whose arguments mention ollama."""
    from jarvis_ollama.server import looks_like_ollama

    named = tmp_path / "bin" / "ollama"
    named.parent.mkdir()
    named.write_text("import time\ntime.sleep(30)\n")
    mentions = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", "tests/ollama", "ollama"])
    program = subprocess.Popen([sys.executable, str(named), "serve"])
    try:
        time.sleep(0.2)
        assert looks_like_ollama(program.pid) and not looks_like_ollama(mentions.pid)
    finally:
        for proc in (mentions, program):
            proc.kill()
            proc.wait(10)
