"""`jarvis loadout` against the real llama.cpp engine, through the installed CLI: up, up again, status, down, down
after the CLI crashed mid-`up`, and a server Jarvis did not start left alone."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

JARVIS = str(Path(sys.executable).with_name("jarvis"))

pytestmark = pytest.mark.integration


@pytest.fixture
def env(isolated, gguf) -> dict[str, str]:
    (isolated / "config.yaml").write_text(f"loadouts:\n  tiny: ['lc_{gguf.as_posix()}']\n")
    return {**os.environ, "JARVIS_LOAD_PLUGINS": "llamacpp", "JARVIS_STATE_DIR": str(isolated / "state")}


def jarvis(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([JARVIS, *args], capture_output=True, text=True, env=env, timeout=300)


def servers_for(gguf: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "llama_cpp.server" in cmd and str(gguf) in cmd and "--model_alias" in cmd:
            found.append(proc)
    return found


@pytest.fixture(autouse=True)
def no_leftovers(gguf):
    before = {p.pid for p in servers_for(gguf)}
    yield
    left = [p for p in servers_for(gguf) if p.pid not in before]
    for p in left:
        p.kill()
    assert not left, f"llama.cpp servers left running: {[p.pid for p in left]}"


def test_up_twice_status_down(env, gguf):
    first = jarvis(env, "loadout", "up", "tiny", "--json")
    assert first.returncode == 0, first.stderr
    assert [m["status"] for m in json.loads(first.stdout)["models"]] == ["loaded"]
    servers = servers_for(gguf)
    assert len(servers) == 1

    again = jarvis(env, "loadout", "up", "tiny")
    assert again.returncode == 0, again.stderr
    assert [p.pid for p in servers_for(gguf)] == [servers[0].pid]  # idempotent: the same server

    status = json.loads(jarvis(env, "loadout", "status", "tiny", "--json").stdout)
    assert status["models"][0]["present"] is True
    assert status["engines"] == [status["engines"][0]] and status["engines"][0]["running"] is True
    assert status["engines"][0]["started_by_jarvis"] is True

    down = jarvis(env, "loadout", "down", "--json")
    assert down.returncode == 0, down.stderr
    assert json.loads(down.stdout)["loadouts"] == ["tiny"]
    assert servers_for(gguf) == []
    assert json.loads(jarvis(env, "loadout", "status", "tiny", "--json").stdout)["engines"][0]["running"] is False


def test_down_after_up_crashed(env, gguf, isolated):
    up = subprocess.Popen([JARVIS, "loadout", "up", "tiny"], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    state = isolated / "state" / "state.json"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (state.is_file() and '"process"' in state.read_text()):
        time.sleep(0.05)
    up.send_signal(signal.SIGKILL)
    up.wait(timeout=10)
    assert '"process"' in state.read_text(), "the server was never recorded"
    deadline = time.monotonic() + 30
    while not servers_for(gguf) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert servers_for(gguf), "the crashed `up` left no server to clean up"

    down = jarvis(env, "loadout", "down", "tiny")
    assert down.returncode == 0, down.stderr
    assert servers_for(gguf) == []


def test_a_server_jarvis_did_not_start_is_left_alone(env, gguf, tmp_path):
    from jarvis_core.processes import free_port, wait_until_ready, port_open

    port = free_port()
    foreign = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--host", "127.0.0.1",
                                "--port", str(port), "--model_alias", "foreign", "--verbose", "False"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(lambda: port_open("127.0.0.1", port), timeout=60, what="foreign llama.cpp server")
        assert jarvis(env, "loadout", "up", "tiny").returncode == 0
        assert jarvis(env, "loadout", "down").returncode == 0
        assert foreign.poll() is None, "Jarvis stopped a server it did not start"
        assert port_open("127.0.0.1", port)
    finally:
        foreign.terminate()
        foreign.wait(timeout=10)
