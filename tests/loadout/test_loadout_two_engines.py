"""`jarvis loadout` over two engines at once, through the installed CLI: Ollama (the fake `ollama` program on PATH,
whose `serve` spawns a runner process per loaded model) and the real llama.cpp server.

Covered: up (both loaded, Ollama started by Jarvis and its model pinned), status, up again (idempotent), down (the
model unloaded before its server goes, nothing left running, an empty state file), a foreign Ollama left alone with
the model its user loaded, and a MISSING model that is reported, not pulled.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

import process_marks
from jarvis_core.processes import free_port

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:  # `tests.standins` is imported as a package from the repository root
    sys.path.insert(0, str(REPO))

from tests.standins.ollama_models import is_model_present, write_model  # noqa: E402
from tests.standins.ollama_server import BIN_OLLAMA, OllamaStandin  # noqa: E402

JARVIS = str(Path(sys.executable).with_name("jarvis"))
MARK = "JARVIS_LOADOUT_TWO_ENGINES_MARK"  # in the environment of everything this test's CLI calls start
OL_MODEL = "qwen2.5:0.5b"  # on disk: the loadout's Ollama model
USERS_MODEL = "smollm2:135m"  # on disk: what the user of a foreign Ollama loaded
MISSING = "llama3.2:1b"  # not on disk, though the stand-in could pull it

pytestmark = pytest.mark.integration


# --- fixtures -----------------------------------------------------------------------------------------------------


@pytest.fixture
def mark(tmp_path) -> str:
    return str(tmp_path)


@pytest.fixture
def models_dir(tmp_path) -> Path:
    path = tmp_path / "ollama-models"
    path.mkdir()
    write_model(path, OL_MODEL)
    return path


@pytest.fixture
def port() -> int:
    return free_port()


@pytest.fixture
def env(isolated, tmp_path, gguf, models_dir, port, mark) -> dict[str, str]:
    """The CLI's environment: both plugins, this test's state folder, the fake `ollama` first on PATH, Ollama at a
    free port with its models in `models_dir`; and config.yaml in the cwd with the loadouts."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    wrapper = bin_dir / "ollama"
    # a wrapper, so the stand-in runs under this interpreter whatever `python3` is on PATH
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{BIN_OLLAMA}" "$@"\n')
    wrapper.chmod(0o755)
    standin_config = tmp_path / "standin-ollama.json"
    # MISSING could be pulled: so "not on disk afterwards" shows that Jarvis did not pull it
    standin_config.write_text(json.dumps({"load_seconds": 0.05, "token_delay": 0.002, "pullable": [MISSING]}))
    lc = f"lc_{gguf.as_posix()}"
    (isolated / "config.yaml").write_text(
        "loadouts:\n"
        f"  duo: ['ol_{OL_MODEL}', '{lc}']\n"
        f"  gap: ['ol_{OL_MODEL}', 'ol_{MISSING}', '{lc}']\n")
    return {**os.environ, "JARVIS_LOAD_PLUGINS": "ollama,llamacpp", "JARVIS_STATE_DIR": str(isolated / "state"),
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}", "OLLAMA_HOST": f"127.0.0.1:{port}",
            "OLLAMA_MODELS": str(models_dir), "JARVIS_STANDIN_OLLAMA_CONFIG": str(standin_config), MARK: mark}


@pytest.fixture(autouse=True)
def no_leftovers(gguf, mark):
    """Nothing this test started may survive it: a process carrying its marker, or a llama.cpp server of its model.
    Leftovers are killed, then the test fails."""
    before = {p.pid for p in llama_servers(gguf)}
    yield
    deadline = time.monotonic() + 3.0
    left = leftovers(gguf, mark, before)
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = leftovers(gguf, mark, before)
    described = []
    for proc in left:
        try:
            described.append(f"{proc.pid} {' '.join(proc.cmdline()[:5])}")
            proc.kill()
        except psutil.Error:
            pass
    if described:
        pytest.fail(f"processes of this test survived it: {described}")


# --- helpers ------------------------------------------------------------------------------------------------------


def jarvis(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([JARVIS, *args], capture_output=True, text=True, env=env, timeout=300)


def _cmdline(proc: psutil.Process) -> list[str]:
    try:
        return proc.cmdline()
    except psutil.Error:
        return []


def marked(mark: str) -> list[psutil.Process]:
    return process_marks.marked_processes(MARK, mark)


def llama_servers(gguf: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "llama_cpp.server" in cmd and str(gguf) in cmd and "--model_alias" in cmd:
            found.append(proc)
    return found


def _is_fake_ollama(cmd: list[str], sub: str) -> bool:
    return str(BIN_OLLAMA) in cmd and sub in cmd[cmd.index(str(BIN_OLLAMA)) + 1:][:1]


def ollama_serves(mark: str) -> list[psutil.Process]:
    return [p for p in marked(mark) if _is_fake_ollama(_cmdline(p), "serve")]


def ollama_runners(mark: str) -> list[psutil.Process]:
    return [p for p in marked(mark) if _is_fake_ollama(_cmdline(p), "runner")]


def leftovers(gguf: Path, mark: str, before: set[int] = frozenset()) -> list[psutil.Process]:
    procs = {p.pid: p for p in marked(mark)}
    procs.update({p.pid: p for p in llama_servers(gguf) if p.pid not in before})
    return list(procs.values())


def ps(port: int) -> list[dict]:
    return httpx.get(f"http://127.0.0.1:{port}/api/ps", timeout=5).json()["models"]


def ps_names(port: int) -> list[str]:
    return sorted(m["name"] for m in ps(port))


def pinned(entry: dict) -> bool:
    """`expires_at` far in the future: Ollama keeps the model resident (keep_alive -1), no idle unload."""
    expires = dt.datetime.fromisoformat(entry["expires_at"].replace("Z", "+00:00")[:26])
    return expires.year >= dt.datetime.now().year + 100


def records(isolated: Path) -> list[dict]:
    path = isolated / "state" / "state.json"
    return json.loads(path.read_text())["records"] if path.is_file() else []


def by_engine(items: list[dict]) -> dict[str, dict]:
    return {m["engine"]: m for m in items}


# --- tests --------------------------------------------------------------------------------------------------------


def test_up_status_up_again_down(env, gguf, mark, port, isolated):
    # 1. up: both loaded; Ollama started by Jarvis (a serve process with a runner child), the model pinned
    t0 = time.monotonic()
    up = jarvis(env, "loadout", "up", "duo", "--json")
    t_up = time.monotonic() - t0
    assert up.returncode == 0, up.stdout + up.stderr
    models = by_engine(json.loads(up.stdout)["models"])
    assert {e: m["status"] for e, m in models.items()} == {"ollama": "loaded", "llamacpp": "loaded"}, up.stdout
    assert models["ollama"]["id"] == f"ol_{OL_MODEL}"

    serves = ollama_serves(mark)
    assert len(serves) == 1, "Jarvis should have started exactly one `ollama serve`"
    runners = ollama_runners(mark)
    assert len(runners) == 1 and runners[0].ppid() == serves[0].pid, "the loaded model has no runner process"
    ollama_records = [r for r in records(isolated) if r.get("engine") == "ollama" and r.get("kind") == "process"]
    assert [r["pid"] for r in ollama_records] == [serves[0].pid]
    assert all(r.get("run_id") == "loadout:duo" for r in records(isolated))

    loaded = ps(port)
    assert [m["name"] for m in loaded] == [OL_MODEL]
    assert pinned(loaded[0]), f"the model would be unloaded when idle: expires_at {loaded[0]['expires_at']}"

    servers = llama_servers(gguf)
    assert len(servers) == 1, "one llama.cpp server should run"

    # 2. status: both present and loaded, both engines running and started by Jarvis
    status = jarvis(env, "loadout", "status", "duo", "--json")
    assert status.returncode == 0, status.stderr
    shown = json.loads(status.stdout)
    assert shown["loadout"] == "duo"
    models = by_engine(shown["models"])
    assert set(models) == {"ollama", "llamacpp"}
    for m in models.values():
        assert (m["present"], m["loaded"], m["status"]) == (True, True, "loaded"), m
    engines = by_engine(shown["engines"])
    assert set(engines) == {"ollama", "llamacpp"}
    for e in engines.values():
        assert e["running"] is True and e["started_by_jarvis"] is True, e
    assert engines["ollama"]["address"] == f"http://127.0.0.1:{port}"

    # 3. up again: idempotent, the same servers and the same runner (the model was not reloaded)
    t0 = time.monotonic()
    again = jarvis(env, "loadout", "up", "duo")
    t_again = time.monotonic() - t0
    assert again.returncode == 0, again.stdout + again.stderr
    assert [p.pid for p in ollama_serves(mark)] == [serves[0].pid]
    assert [p.pid for p in ollama_runners(mark)] == [runners[0].pid]
    assert [p.pid for p in llama_servers(gguf)] == [servers[0].pid]
    assert ps_names(port) == [OL_MODEL]

    # 4. down: the model is unloaded (and /api/ps empty) before the server goes; nothing left; no records
    t0 = time.monotonic()
    down = jarvis(env, "loadout", "down", "--json")
    t_down = time.monotonic() - t0
    assert down.returncode == 0, down.stdout + down.stderr
    result = json.loads(down.stdout)
    assert result["loadouts"] == ["duo"]
    assert result["left_running"] == [], result
    assert any(s.startswith("ollama: unloaded") for s in result["stopped"]), result
    assert result["memory_released"] is not False

    log = (isolated / "state" / "logs" / "ollama-serve.log").read_text()
    stopped = log.find(f'msg="runner stopped" model={OL_MODEL}')
    shutting = log.find('msg="shutting down"')
    assert 0 <= stopped < shutting, "the model was not unloaded before its server was ended:\n" + log[-3000:]
    assert '"/api/ps"' in log[stopped:shutting], "nobody saw /api/ps empty before the server went:\n" + log[-3000:]

    assert ollama_serves(mark) == [] and ollama_runners(mark) == []
    assert llama_servers(gguf) == []
    assert leftovers(gguf, mark) == []
    assert records(isolated) == []

    after = json.loads(jarvis(env, "loadout", "status", "duo", "--json").stdout)
    assert all(e["running"] is False for e in after["engines"]), after["engines"]
    print(f"\ntimings: up {t_up:.2f} s, up again {t_again:.2f} s, down {t_down:.2f} s")


@pytest.fixture
def foreign(models_dir, port):
    """An Ollama the user started (in-process, with runner processes) at the configured address, with the user's
    own model loaded and pinned."""
    write_model(models_dir, USERS_MODEL)
    server = OllamaStandin(models=[], models_dir=models_dir, port=port, spawn_runners=True).start()
    try:
        httpx.post(f"{server.url}/api/generate", json={"model": USERS_MODEL, "keep_alive": -1}, timeout=30) \
            .raise_for_status()
        assert server.loaded == [USERS_MODEL]
        yield server
    finally:
        server.stop()


def test_a_foreign_ollama_is_used_and_left_alone(env, gguf, mark, port, isolated, foreign):
    users_runner = foreign.runner_pids()[USERS_MODEL]
    try:
        up = jarvis(env, "loadout", "up", "duo", "--json")
        assert up.returncode == 0, up.stdout + up.stderr
        models = by_engine(json.loads(up.stdout)["models"])
        assert {e: m["status"] for e, m in models.items()} == {"ollama": "loaded", "llamacpp": "loaded"}
        assert ollama_serves(mark) == [], "Jarvis started a second Ollama server"
        assert not [r for r in records(isolated) if r.get("engine") == "ollama" and r.get("kind") == "process"]
        assert ps_names(port) == sorted([OL_MODEL, USERS_MODEL])
        assert pinned(next(m for m in ps(port) if m["name"] == OL_MODEL))
        assert len(llama_servers(gguf)) == 1

        again = jarvis(env, "loadout", "up", "duo")
        assert again.returncode == 0, again.stdout + again.stderr
        assert ollama_serves(mark) == []
    finally:
        down = jarvis(env, "loadout", "down", "--json")
    assert down.returncode == 0, down.stdout + down.stderr
    result = json.loads(down.stdout)
    assert result["loadouts"] == ["duo"]
    assert any(s.startswith("ollama: unloaded") for s in result["stopped"]), result
    assert any("not started by Jarvis" in s for s in result["left_running"]), result

    assert foreign.running and httpx.get(f"{foreign.url}/api/version", timeout=5).status_code == 200
    assert ps_names(port) == [USERS_MODEL], "down should unload only the model Jarvis loaded"
    assert foreign.runner_pids() == {USERS_MODEL: users_runner}
    assert psutil.pid_exists(users_runner)
    assert llama_servers(gguf) == []
    assert records(isolated) == []


def test_status_does_not_claim_a_foreign_ollama(env, port, foreign):
    try:
        up = jarvis(env, "loadout", "up", "duo")
        assert up.returncode == 0, up.stdout + up.stderr
        shown = json.loads(jarvis(env, "loadout", "status", "duo", "--json").stdout)
        engines = by_engine(shown["engines"])
        assert engines["llamacpp"]["started_by_jarvis"] is True
        assert engines["ollama"]["running"] is True
        assert engines["ollama"]["started_by_jarvis"] is False, engines["ollama"]
    finally:
        assert jarvis(env, "loadout", "down").returncode == 0


def test_a_missing_model_is_reported_not_pulled(env, gguf, mark, port, models_dir, isolated):
    up = jarvis(env, "loadout", "up", "gap")
    try:
        assert up.returncode == 1, up.stdout + up.stderr
        missing = [line for line in up.stdout.splitlines() if line.startswith("MISSING")]
        assert len(missing) == 1 and f"ol_{MISSING}" in missing[0], up.stdout
        assert "jarvis loadout up gap --force-download" in missing[0], up.stdout

        # nothing pulled, though the server Jarvis started could have pulled it
        assert not is_model_present(models_dir, MISSING)
        tags = httpx.get(f"http://127.0.0.1:{port}/api/tags", timeout=5).json()["models"]
        assert MISSING not in {m["name"] for m in tags}
        log = (isolated / "state" / "logs" / "ollama-serve.log").read_text()
        assert '"/api/pull"' not in log
        # the others of the loadout did come up
        assert ps_names(port) == [OL_MODEL]
        assert len(llama_servers(gguf)) == 1

        as_json = jarvis(env, "loadout", "up", "gap", "--json")
        assert as_json.returncode == 1
        entry = next(m for m in json.loads(as_json.stdout)["models"] if m["id"] == f"ol_{MISSING}")
        assert entry["status"] == "MISSING" and entry["present"] is False, entry
        assert "--force-download" in entry["detail"]
        assert not is_model_present(models_dir, MISSING)
    finally:
        down = jarvis(env, "loadout", "down")
    assert down.returncode == 0, down.stdout + down.stderr
    assert leftovers(gguf, mark) == []
    assert records(isolated) == []
