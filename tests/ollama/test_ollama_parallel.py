"""Load runs: engines.ollama.num_parallel reaches the server Jarvis starts (OLLAMA_NUM_PARALLEL), `start` reports what
the server serves at once (`StartResult.parallelism`), the stand-in serves that many requests at once and queues the
rest, and `infer` is safe from many threads at once."""

from __future__ import annotations

import threading
import time

import httpx
import psutil
import pytest
from jarvis_core.api import ChatRequest, Message, Parallelism

from jarvis_ollama import client
from jarvis_ollama.server import PARALLEL_DEFAULT, PARALLEL_SETTING, parallelism_for_start
from jarvis_ollama.settings import OllamaSettings
from tests.standins import ollama_models

COUNT = [Message("user", "Count to 20.")]
PASSED = "passed to the ollama serve Jarvis started"


@pytest.fixture
def on_disk(models_dir):
    ollama_models.write_model(models_dir, "qwen2.5:0.5b")
    return models_dir


def serve_env(session) -> dict[str, str]:
    [record] = session.state.records("ollama", "process")
    return psutil.Process(record.pid).environ()


def chat_records(url: str) -> list[dict]:
    """The stand-in's own records of the chat requests it saw (its clock, its order)."""
    found = httpx.get(f"{url}/_standin/emissions", trust_env=False, timeout=5).json()["requests"]
    return [r for r in found if r["path"] == "/api/chat"]


# --- what a server Jarvis starts gets ----------------------------------------------------------------------------


def test_parallelism_for_a_server_jarvis_starts():
    assert parallelism_for_start(OllamaSettings(num_parallel=3), {"OLLAMA_NUM_PARALLEL": "8"}) == \
        Parallelism(PARALLEL_SETTING, 3, PASSED)  # the setting wins over Jarvis's environment
    assert parallelism_for_start(OllamaSettings(), {"OLLAMA_NUM_PARALLEL": " 8 "}) == \
        Parallelism(PARALLEL_SETTING, 8, "OLLAMA_NUM_PARALLEL from Jarvis's environment")
    assert parallelism_for_start(OllamaSettings(), {}) == Parallelism(PARALLEL_SETTING, None, PARALLEL_DEFAULT)
    for odd in ("0", "four", "-2"):
        found = parallelism_for_start(OllamaSettings(), {"OLLAMA_NUM_PARALLEL": odd})
        assert found.value is None and "not a positive number" in found.detail and PARALLEL_DEFAULT in found.detail


@pytest.mark.parametrize("num_parallel", [1, 2])
def test_num_parallel_reaches_the_server_and_sets_how_many_are_served_at_once(session_for, fake_ollama, on_disk,
                                                                                ref, port, num_parallel,
                                                                                monkeypatch):
    """Two streamed requests in flight, the second sent once the first is being served: with num_parallel=1 the
    server queues the second until the first is done, with 2 it serves them side by side (the stand-in's records)."""
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "7")  # the setting wins over Jarvis's own environment
    fake_ollama.configure(token_delay=0.02)  # "Count to 20." streams ~40 chunks: ~0.8 s of generation
    session = session_for(port=port, num_parallel=num_parallel)
    model = ref(session, "qwen2.5:0.5b")
    started = session.start(model)
    assert started.started and started.parallelism == Parallelism(PARALLEL_SETTING, num_parallel, PASSED)
    assert f"OLLAMA_NUM_PARALLEL={num_parallel}" in started.detail
    assert serve_env(session)["OLLAMA_NUM_PARALLEL"] == str(num_parallel)
    session.warmup(model)
    before = len(chat_records(started.address))

    results: list = [None, None]

    def ask(i: int) -> None:
        results[i] = session.infer(model, ChatRequest(COUNT, stream=True, timeout=30))

    first = threading.Thread(target=ask, args=(0,))
    first.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # until the server is writing the first answer
        seen = chat_records(started.address)[before:]
        if seen and seen[0]["chunk_times"]:
            break
        time.sleep(0.01)
    second = threading.Thread(target=ask, args=(1,))
    second.start()
    first.join(30)
    second.join(30)
    assert all(r is not None and r.ok for r in results), results
    assert all(r.output_tokens and r.output_tokens > 20 for r in results)

    a, b = chat_records(started.address)[before:]
    assert a["t_received"] < b["t_received"] < a["t_slot_released"]  # b arrived while a was being served
    if num_parallel == 1:
        assert b["t_slot"] >= a["t_slot_released"]  # b waited for a's slot: one after the other
        assert b["chunk_times"][0] > a["chunk_times"][-1]
    else:
        assert b["t_slot"] < a["t_slot_released"]  # side by side
        assert b["chunk_times"][0] < a["chunk_times"][-1]

    again = session.start(model)  # reused: what Jarvis recorded when it started it
    assert not again.started and again.parallelism == started.parallelism


def test_unset_num_parallel_leaves_the_servers_environment_alone(session_for, fake_ollama, on_disk, ref, port,
                                                                 monkeypatch):
    monkeypatch.delenv("OLLAMA_NUM_PARALLEL", raising=False)
    session = session_for(port=port)
    started = session.start(ref(session, "qwen2.5:0.5b"))
    assert started.parallelism == Parallelism(PARALLEL_SETTING, None, PARALLEL_DEFAULT)
    assert "OLLAMA_NUM_PARALLEL" not in serve_env(session)


def test_ollama_num_parallel_from_jarvis_environment_is_what_the_server_gets(session_for, fake_ollama, on_disk, ref,
                                                                             port, monkeypatch):
    monkeypatch.setenv("OLLAMA_NUM_PARALLEL", "3")
    session = session_for(port=port)
    model = ref(session, "qwen2.5:0.5b")
    started = session.start(model)
    assert started.parallelism == Parallelism(PARALLEL_SETTING, 3, "OLLAMA_NUM_PARALLEL from Jarvis's environment")
    assert serve_env(session)["OLLAMA_NUM_PARALLEL"] == "3"
    # another session that asks for another value reuses the server, and is told its setting did not apply
    other = session_for(port=port, num_parallel=5)
    reused = other.start(ref(other, "qwen2.5:0.5b"))
    assert not reused.started and reused.parallelism.value == 3
    assert "engines.ollama.num_parallel (5) does not apply: this server was already running" in \
        reused.parallelism.detail


NO_LOG = "unknown: this Ollama server was not started by Jarvis, and no log of it says (the desktop apps' server.log)"


def server_log(path, *, port: int, version: str, num_parallel: int, old_format: bool = False):
    env = f"map[OLLAMA_DEBUG:false OLLAMA_HOST:http://127.0.0.1:{port} OLLAMA_NUM_PARALLEL:{num_parallel} " \
          f"OLLAMA_ORIGINS:[http://localhost https://localhost]]"
    if old_format:
        lines = [f'2024/06/05 04:57:07 routes.go:1008: INFO server config env="{env}"',
                 f"2024/06/05 04:57:07 routes.go:1054: INFO Listening on 127.0.0.1:{port} (version {version})"]
    else:
        lines = [f'time=2026-12-01T10:00:00.000+01:00 level=INFO source=routes.go:1259 msg="server config" env="{env}"',
                 "time=2026-12-01T10:00:00.010+01:00 level=INFO source=images.go:757 msg=\"total blobs: 3\"",
                 f'time=2026-12-01T10:00:00.020+01:00 level=INFO source=routes.go:1310 msg="Listening on '
                 f'127.0.0.1:{port} (version {version})"']
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a", encoding="utf-8") as fh:
        fh.write("\n".join(lines) + "\n")
    return path


def test_a_server_jarvis_did_not_start_is_read_from_its_log_or_unknown(session_for, standin, ref, tmp_path,
                                                                        monkeypatch):
    from jarvis_ollama import serverlog

    log = tmp_path / "Ollama" / "server.log"
    monkeypatch.setattr(serverlog, "log_files", lambda: [tmp_path / "absent.log", log])
    server = standin(num_parallel=4)
    session = session_for(port=server.port)
    started = session.start(ref(session, "qwen2.5:0.5b"))
    assert not started.started
    assert started.parallelism == Parallelism(PARALLEL_SETTING, None, NO_LOG)
    configured = session_for(port=server.port, num_parallel=2)
    found = configured.start(ref(configured, "qwen2.5:0.5b")).parallelism
    assert found.value is None and found.detail.startswith(NO_LOG + "; engines.ollama.num_parallel (2) does not "
                                                                    "apply")

    version = httpx.get(f"http://127.0.0.1:{server.port}/api/version", trust_env=False).json()["version"]
    server_log(log, port=server.port, version=version, num_parallel=4)
    session = session_for(port=server.port)
    assert session.start(ref(session, "qwen2.5:0.5b")).parallelism == Parallelism(
        PARALLEL_SETTING, 4, f"from the server's log ({log})")

    server_log(log, port=server.port, version=version, num_parallel=0)  # a later start, without the variable
    session = session_for(port=server.port)
    assert session.start(ref(session, "qwen2.5:0.5b")).parallelism == Parallelism(
        PARALLEL_SETTING, None, f"not set, per the server's log ({log}): {PARALLEL_DEFAULT}")

    server_log(log, port=server.port + 1, version=version, num_parallel=8)  # the log's last start is another server
    session = session_for(port=server.port)
    assert session.start(ref(session, "qwen2.5:0.5b")).parallelism == Parallelism(PARALLEL_SETTING, None, NO_LOG)


def test_the_server_log_is_believed_only_for_the_server_that_answers(tmp_path):
    from jarvis_ollama.serverlog import num_parallel_from_log

    old = server_log(tmp_path / "old.log", port=11434, version="0.1.41", num_parallel=3, old_format=True)
    assert num_parallel_from_log(old, port=11434, version="0.1.41") == 3
    assert num_parallel_from_log(old, port=11434, version=None) == 3
    assert num_parallel_from_log(old, port=11435, version="0.1.41") is None, "another port"
    assert num_parallel_from_log(old, port=11434, version="0.5.7") is None, "another version"
    assert num_parallel_from_log(tmp_path / "nothing.log", port=11434, version=None) is None
    (tmp_path / "torn.log").write_text('msg="server config" env="map[OLLAMA_NUM_PARALLEL:2]"\n', encoding="utf-8")
    assert num_parallel_from_log(tmp_path / "torn.log", port=11434, version=None) is None, "never listened"


# --- infer from many threads ---------------------------------------------------------------------------------------


def test_many_threads_record_the_first_use_once(session_for, standin, ref, monkeypatch):
    """Eight threads send the first requests for a model nobody warmed up, all at once: it is checked once (one
    /api/ps), recorded once, and no request goes out before the check is done (else one of them could load the
    model while /api/ps is asked, and the model would be taken for the user's and never unloaded)."""
    from jarvis_ollama import loading

    real_ps = loading.ps

    def slow_ps(http):  # widens the window in which another thread could load the model unrecorded
        time.sleep(0.3)
        return real_ps(http)

    monkeypatch.setattr(loading, "ps", slow_ps)
    server = standin(num_parallel=4, load_seconds=0.05)
    session = session_for(port=server.port)
    model = ref(session, "qwen2.5:0.5b")
    go = threading.Barrier(8)
    results = []

    def ask() -> None:
        go.wait()
        results.append(session.infer(model, ChatRequest([Message("user", "What is the capital of France?")])))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(results) == 8 and all(r.ok for r in results)
    assert [r.data["model"] for r in session.state.records("ollama", "model")] == ["qwen2.5:0.5b"]
    assert len([e for e in server.emissions if e.path == "/api/ps"]) == 1
    # the model was not loaded before: its record was written before any request could load it
    assert session.stop("ollama").stopped == [f"unloaded qwen2.5:0.5b at {server.url}"]


def test_exact_tokens_sends_num_predict_and_nothing_more():
    """Ollama cannot pin the output length: `exact_tokens` changes nothing in the body."""
    exact = client.chat_body("m", ChatRequest(COUNT, max_tokens=64, exact_tokens=True), keep_alive="5m")
    plain = client.chat_body("m", ChatRequest(COUNT, max_tokens=64), keep_alive="5m")
    assert exact == plain and exact["options"] == {"num_predict": 64}
