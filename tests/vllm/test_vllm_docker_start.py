"""The docker runtime's start sequence against a fake Docker client (the real daemon is in test_vllm_docker.py, marked
integration): a container that dies or never gets ready is removed, its record dropped, and the one error quotes its
log, with secrets redacted."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from docker.errors import NotFound

from jarvis_core.errors import EngineError, EngineTimeoutError
from jarvis_core.processes import free_port
from jarvis_vllm import docker_runtime

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)
from vllm_helpers import CONFIG, make_repo

MODEL = "jarvis-test/tiny"
TOKEN = "hf_SeCrEt0123456789"


class FakeContainer:
    def __init__(self, kwargs: dict, log: str, exit_code: int | None) -> None:
        self.id = "c0ffee" * 10
        self.short_id = self.id[:10]
        self.name = kwargs["name"]
        self.labels = kwargs["labels"]
        self.status = "created"
        self.attrs: dict = {"State": {"Status": "created"}}
        self.log = log
        self.exit_code = exit_code
        self.removed = False

    def start(self) -> None:
        self.status = "running"
        self.attrs["State"] = {"Status": "running"}

    def reload(self) -> None:
        if self.removed:
            raise NotFound("gone")
        if self.exit_code is not None and self.status == "running":
            self.status = "exited"
            self.attrs["State"] = {"Status": "exited", "ExitCode": self.exit_code, "OOMKilled": False}

    def logs(self, tail: int | str = "all") -> bytes:
        lines = self.log.splitlines()
        return "\n".join(lines if tail == "all" else lines[-int(tail):]).encode()

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeImages:
    def get(self, ref: str) -> object:
        return object()  # every image is present


class FakeDocker:
    """Just what docker_runtime.start calls: images.get, containers.get/list/create, close."""

    def __init__(self, log: str, exit_code: int | None) -> None:
        self.made: list[FakeContainer] = []
        self.log, self.exit_code = log, exit_code
        self.images = FakeImages()
        self.containers = self

    def get(self, name: str) -> FakeContainer:
        found = [c for c in self.made if c.name == name and not c.removed]
        if not found:
            raise NotFound(name)
        return found[0]

    def list(self, all: bool = False, filters: dict | None = None) -> list[FakeContainer]:
        return []

    def create(self, **kwargs) -> FakeContainer:
        self.kwargs = kwargs
        self.made.append(FakeContainer(kwargs, self.log, self.exit_code))
        return self.made[-1]

    def close(self) -> None:
        pass


@pytest.fixture
def fake_docker(session_for, tmp_path: Path, monkeypatch):
    hub = tmp_path / "hf-home" / "hub"
    make_repo(hub, MODEL, {"config.json": CONFIG, "model.safetensors": b"w"})
    monkeypatch.setenv("HF_HOME", str(hub.parent))
    monkeypatch.setenv("HF_TOKEN", TOKEN)

    def make(log: str, exit_code: int | None, timeouts: dict | None = None):
        docker = FakeDocker(log, exit_code)
        monkeypatch.setattr(docker_runtime, "connect", lambda host, secrets=(): docker)
        session = session_for(runtime="docker", port=free_port(), gpus="none", timeouts=timeouts,
                              models={MODEL: {"served_name": "tiny"}})
        return session, docker
    return make


def test_a_container_that_exits_is_removed_and_its_log_quoted(fake_docker):
    log = "\n".join(f"INFO loading {i}" for i in range(30)) + f"\nusing token {TOKEN}\ntorch.OutOfMemoryError: CUDA " \
                                                              f"out of memory"
    session, docker = fake_docker(log, exit_code=1)
    with pytest.raises(EngineError) as info:
        session.start(session.resolve(f"vllm:{MODEL}"))
    message = str(info.value)
    first = message.splitlines()[0]
    assert first.startswith(f"vLLM container vllm-server stopped before it was ready: exited with code 1; "
                            f"out of GPU memory")
    assert "(command: docker run -d --name vllm-server " in first and " -e HF_TOKEN " in first
    assert "INFO loading 29" in message and "INFO loading 5" not in message  # the tail only
    assert TOKEN not in message and "using token ***" in message
    [container] = docker.made
    assert container.removed and session.state.records("vllm") == []
    saved = Path(re.search(r"; log: (\S+)\)", first).group(1)).read_text()
    assert "INFO loading 0" in saved and TOKEN not in saved  # the whole log, redacted, outlives the container


def test_a_container_never_ready_is_removed_after_the_timeout(fake_docker):
    session, docker = fake_docker("INFO still loading", exit_code=None, timeouts={"start": 1})
    with pytest.raises(EngineTimeoutError, match="vLLM container vllm-server was not ready after 1 s"):
        session.start(session.resolve(f"vllm:{MODEL}"))
    [container] = docker.made
    assert container.removed and session.state.records("vllm") == []
    assert "Starting vLLM container vllm-server (vllm/vllm-openai:latest) for jarvis-test/tiny" in \
        session.progress.stream.getvalue()
