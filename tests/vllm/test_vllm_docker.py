"""The docker runtime against a real Docker engine (Debian's docker.io on a private socket, started by the tests) and
a local image whose entrypoint is the OpenAI stand-in mimicking `vllm serve` (built without a registry)."""

from __future__ import annotations

import json
import re
import socket
import time
from contextlib import closing
from pathlib import Path

import pytest

from jarvis_core.engine import ChatRequest, Message
from jarvis_core.errors import EngineError, EngineUnavailableError
from jarvis_core.processes import free_port, port_open
from jarvis_vllm import docker_runtime

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CONFIG, make_repo

pytestmark = pytest.mark.integration

MODEL = "jarvis-test/tiny"
FRANCE = [Message("user", "What is the capital of France?")]
IMAGE, TAG = "local/vllm-standin", "test"


@pytest.fixture
def docker_client(docker_engine):
    import docker

    with closing(docker.DockerClient(base_url=docker_engine, timeout=60)) as client:
        yield client


@pytest.fixture
def names():
    """A container name unique to the test; whatever carries it is removed afterwards (foreign ones included)."""
    return f"vllm-jarvis-test-{time.monotonic_ns() % 10**9}"


@pytest.fixture
def foreign(docker_client, names):
    """Containers a test creates itself, as someone else would (no Jarvis labels); removed at the end."""
    made = []

    def make(**kwargs):
        kwargs.setdefault("name", names)
        kwargs.setdefault("command", ["x"])
        container = docker_client.containers.create(f"{IMAGE}:{TAG}", **kwargs)
        made.append(container)
        return container

    yield make
    for container in made:
        try:
            container.remove(force=True)
        except Exception:
            pass


@pytest.fixture
def docker_session(session_for, docker_engine, names, tmp_path: Path, monkeypatch):
    hub = tmp_path / "hf-home" / "hub"
    make_repo(hub, MODEL, {"config.json": CONFIG, "model.safetensors": b"w"})
    monkeypatch.setenv("HF_HOME", str(hub.parent))

    def make(*extra_args: str, timeouts: dict | None = None, **settings):
        settings.setdefault("port", free_port())
        settings.setdefault("gpus", "none")
        settings = {"image": IMAGE, "tag": TAG, **settings}
        return session_for(runtime="docker", docker_host=docker_engine, container_name=names,
                           shm_size="64m", timeouts=timeouts,
                           models={MODEL: {"served_name": "tiny", "extra_args": ["--check-hf-cache", *extra_args]}},
                           **settings)
    return make


def _ours(docker_client):
    return docker_client.containers.list(all=True, filters={"label": "jarvis.managed=true"})


def test_full_cycle_run_ready_infer_stop_remove(docker_session, docker_client, names):
    session = docker_session("--ready-after", "0.5")
    ref = session.resolve(f"vllm:{MODEL}")
    found = session.detect("vllm")
    assert found.installed and not found.reachable and f"image {IMAGE}:{TAG} present" in found.detail

    began = time.monotonic()
    started = session.start(ref)
    startup = time.monotonic() - began
    assert started.started and started.version == "0.11.0" and names in started.detail
    container = docker_client.containers.get(names)
    assert container.status == "running"
    assert container.labels == {"jarvis.managed": "true", "jarvis.engine": "vllm", "jarvis.run_id": session.run_id,
                                "jarvis.model": MODEL}
    port = session.context("vllm").settings.port
    assert container.ports["8000/tcp"] == [{"HostIp": "127.0.0.1", "HostPort": str(port)}]
    env = dict(e.split("=", 1) for e in container.attrs["Config"]["Env"])
    assert env["HF_HUB_OFFLINE"] == "1" and "HF_TOKEN" not in env
    assert container.attrs["HostConfig"]["ShmSize"] == 64 * 2**20
    [record] = session.state.records("vllm", "container")
    assert record.data["container_id"] == container.id and record.data["port"] == port
    assert record.address == started.address and record.command[:2] == ("docker", "run")

    found = session.detect("vllm")
    assert found.reachable and found.started_by_jarvis and found.loaded_models == {"tiny": None, MODEL: None}
    assert session.warmup(ref).cold_start_s > 0
    streamed = session.infer(ref, ChatRequest(FRANCE, stream=True))
    assert streamed.ok and streamed.text == "The capital of France is Paris." and streamed.token_source == "server"
    plain = session.infer(ref, ChatRequest(FRANCE))
    assert plain.ok and "Paris" in plain.text

    began = time.monotonic()
    stopped = session.stop("vllm")
    stop_s = time.monotonic() - began
    assert stopped.stopped == [f"container {names} ({container.short_id}) stopped and removed"]
    assert stopped.memory_released is None and "no GPU to check" in stopped.detail
    assert _ours(docker_client) == [] and not port_open("127.0.0.1", port)
    assert session.state.records("vllm") == []
    print(f"docker runtime: ready in {startup:.2f} s (0.5 s of it simulated loading), stopped in {stop_s:.2f} s")


def test_max_num_seqs_reaches_the_container_and_is_reported(docker_session, docker_client, names):
    from jarvis_core.api import Parallelism

    session = docker_session(max_num_seqs=3)
    ref = session.resolve(f"vllm:{MODEL}")
    started = session.start(ref)
    assert started.parallelism == Parallelism("--max-num-seqs (engines.vllm.max_num_seqs)", 3,
                                              "passed to the vLLM server Jarvis started")
    container = docker_client.containers.get(names)
    command = container.attrs["Config"]["Cmd"]
    assert command[command.index("--max-num-seqs") + 1] == "3"
    assert "'max_num_seqs': 3" in container.logs().decode()  # what the server in the container took
    [record] = session.state.records("vllm", "container")
    assert "--max-num-seqs" in record.command and record.data["max_num_seqs"] == 3
    again = session.start(ref)
    assert not again.started and again.parallelism == started.parallelism
    exact = session.infer(ref, ChatRequest(FRANCE, max_tokens=24, exact_tokens=True))
    assert exact.ok and exact.output_tokens == 24 and exact.finish_reason == "length"
    session.stop("vllm")
    assert _ours(docker_client) == []


def test_token_is_passed_to_the_container_but_never_shown(docker_session, docker_client, names, monkeypatch):
    token = "hf_SeCrEt0123456789"
    monkeypatch.setenv("HF_TOKEN", token)
    session = docker_session()
    session.start(session.resolve(f"vllm:{MODEL}"))
    env = dict(e.split("=", 1) for e in docker_client.containers.get(names).attrs["Config"]["Env"])
    assert env["HF_TOKEN"] == token
    assert token not in session.state.path.read_text() and token not in session.detect("vllm").detail
    assert token not in session.progress.stream.getvalue()


def test_exit_before_ready_fails_fast_and_removes_the_container(docker_session, docker_client):
    session = docker_session("--ready-after", "0.5", "--fail-start", "RuntimeError: Engine core initialization failed")
    began = time.monotonic()
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    assert time.monotonic() - began < 15
    message = str(info.value)
    first = message.splitlines()[0]
    assert "stopped before it was ready: exited with code 1" in first
    assert "Engine core initialization failed" in message and "(command: docker run " in first
    log_file = re.search(r"; log: (\S+)\)", first).group(1)  # the container's whole log, kept after its removal
    assert "Engine core initialization failed" in Path(log_file).read_text()
    assert _ours(docker_client) == [] and session.state.records("vllm") == []


def test_model_missing_from_the_mounted_cache(docker_session, docker_client, monkeypatch, tmp_path: Path):
    """The container runs offline on the mounted cache: a model it cannot find there ends it with the fix."""
    import jarvis_vllm
    from jarvis_vllm.hfcache import CacheCheck

    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-home"))
    monkeypatch.setattr(jarvis_vllm, "_check", lambda settings, model: CacheCheck(True, "pretend present"))
    session = docker_session()
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    first = str(info.value).splitlines()[0]
    assert "stopped before it was ready: exited with code 1" in first and "run with --force-download" in first
    assert "LocalEntryNotFoundError" in str(info.value)
    assert _ours(docker_client) == []


def test_name_clash_with_a_foreign_container_is_left_alone(docker_session, docker_client, foreign, names):
    stranger = foreign()
    session = docker_session()
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    message = str(info.value)
    assert f"A container named '{names}' already exists and was not created by Jarvis" in message
    assert f"docker rm -f {names}" in message and "\n" not in message
    stranger.reload()
    assert stranger.status == "created" and docker_client.containers.get(names).id == stranger.id
    assert session.state.records("vllm") == []


def test_leftovers_of_jarvis_are_removed(docker_session, docker_client, foreign, names):
    labels = {"jarvis.managed": "true", "jarvis.engine": "vllm", "jarvis.run_id": "crashed-run"}
    leftover = foreign(labels=labels, command=["m", "--port", "8000"])
    leftover.start()
    never_started = foreign(name=names + "-created", labels=labels)
    session = docker_session()
    for container in (leftover, never_started):  # what the crashed run had recorded; its Jarvis process is gone
        session.state.add("vllm", "container", run_id="crashed-run", container=container.name,
                          container_id=container.id)
    data = json.loads(session.state.path.read_text())
    for record in data["records"]:
        record["owner_pid"] = 2**31 - 2  # no such process
    session.state.path.write_text(json.dumps(data))
    started = session.start(session.resolve(f"vllm:{MODEL}"))
    assert started.started
    notes = session.progress.stream.getvalue()
    assert f"leftover container {names} ({leftover.short_id})" in notes
    assert f"created container {names}-created ({never_started.short_id})" in notes
    [current] = _ours(docker_client)
    assert current.id not in (leftover.id, never_started.id) and current.labels["jarvis.run_id"] == session.run_id
    assert [r.run_id for r in session.state.records("vllm", any_run=True)] == [session.run_id]


def test_a_live_runs_container_is_left_alone(docker_session, docker_client, names):
    first, second = docker_session(), docker_session()  # same container name; this process owns both runs
    for session in (first, second):  # each run sees only its own records, as `jarvis run` does
        session.state = session.state.scoped({session.run_id})
    first.start(first.resolve(f"vllm:{MODEL}"))
    with pytest.raises(EngineError) as info:
        second.start(second.resolve(f"vllm:{MODEL}"))
    assert "another Jarvis run that is still going" in str(info.value) and "\n" not in str(info.value)
    assert docker_client.containers.get(names).status == "running"


def test_port_clash_is_one_line(docker_session, docker_client):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        session = docker_session(port=port)
        with pytest.raises(EngineError) as info:
            session.start(session.resolve(f"vllm:{MODEL}"))
    assert "\n" not in str(info.value) and f"Port {port} on 127.0.0.1 is already in use" in str(info.value)
    assert _ours(docker_client) == []


def test_port_clash_reported_by_docker_removes_the_created_container(docker_session, docker_client, monkeypatch):
    """If the port is taken between Jarvis's check and Docker's start, Docker's refusal leaves a "created"
    container behind: it is removed and the error is the same one line."""
    from jarvis_core import api

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        monkeypatch.setattr(api, "port_open", lambda *a, **k: False)  # Jarvis's own check misses the taken port
        session = docker_session(port=port)
        with pytest.raises(EngineError) as info:
            session.start(session.resolve(f"vllm:{MODEL}"))
    assert "\n" not in str(info.value) and f"Port {port} on 127.0.0.1 is already in use" in str(info.value)
    assert _ours(docker_client) == [] and session.state.records("vllm") == []


def test_gpu_request_refused_by_the_daemon(docker_session, docker_client):
    session = docker_session(gpus="all")
    with pytest.raises(EngineUnavailableError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    message = str(info.value)
    assert "\n" not in message and "could not select device driver" in message
    assert "NVIDIA Container Toolkit" in message and "gpus: none" in message
    assert _ours(docker_client) == [] and session.state.records("vllm") == []


def test_stop_from_the_state_alone_after_a_crash(docker_session, docker_client, make_session, names):
    session = docker_session()
    session.start(session.resolve(f"vllm:{MODEL}"))
    later = make_session()  # a new Jarvis with default settings: only the state file knows the container
    stopped = later.stop("vllm")
    assert len(stopped.stopped) == 1 and names in stopped.stopped[0]
    assert _ours(docker_client) == [] and later.state.records("vllm") == []


def test_missing_image_and_a_failing_pull(docker_session, docker_client):
    session = docker_session(image="127.0.0.1:9/jarvis/absent", tag="v0")
    ref = session.resolve(f"vllm:{MODEL}")
    found = session.detect("vllm")
    assert not found.installed and "127.0.0.1:9/jarvis/absent:v0 is missing" in found.detail
    with pytest.raises(EngineUnavailableError, match="--force-download"):
        session.start(ref)
    with pytest.raises(EngineError) as info:  # nothing listens there: the daemon's pull fails at once
        session.pull(ref)
    assert str(info.value).startswith("Pulling image 127.0.0.1:9/jarvis/absent:v0 failed") and \
        "\n" not in str(info.value)
