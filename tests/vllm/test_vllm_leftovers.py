"""Which containers named or labelled like Jarvis's the docker runtime removes before a start: only this run's and
those of crashed runs; a live run's or a loadout's is an error that says who holds it (a fake Docker client)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from docker.errors import NotFound

from jarvis_core.config import Config, build_settings
from jarvis_core.engine import EngineContext
from jarvis_core.errors import EngineError
from jarvis_core.progress import Progress
from jarvis_core.state import StateStore
from jarvis_vllm import docker_runtime
from jarvis_vllm.settings import VllmSettings

from vllm_fixtures import *  # noqa: F401,F403  (fixtures)

NAME = "vllm-server"
DEAD_PID = 2**31 - 2  # above any pid_max: no such process


class FakeContainer:
    def __init__(self, name: str, run_id: str, status: str = "running") -> None:
        self.id = f"id-{name}-{run_id}"
        self.short_id = self.id[:10]
        self.name = name
        self.status = status
        self.labels = {**docker_runtime.labels(run_id, "org/model")}
        self.attrs = {"Config": {"Image": "vllm/vllm-openai:latest"}}
        self.removed = False

    def remove(self, force: bool = False) -> None:
        self.removed = True


class FakeContainers:
    def __init__(self, *containers: FakeContainer) -> None:
        self.all = list(containers)

    def get(self, name: str) -> FakeContainer:
        for container in self.all:
            if container.name == name and not container.removed:
                return container
        raise NotFound(f"No such container: {name}")

    def list(self, all: bool = False, filters: dict | None = None) -> list[FakeContainer]:
        status = (filters or {}).get("status")
        return [c for c in self.all if not c.removed and (status is None or c.status == status)]


class FakeClient:
    def __init__(self, *containers: FakeContainer) -> None:
        self.containers = FakeContainers(*containers)


@pytest.fixture
def ctx(tmp_path: Path) -> EngineContext:
    return EngineContext(engine="vllm", settings=VllmSettings(), config=build_settings(Config, {}, source="test", path=""),
                         state=StateStore(tmp_path / "state", run_ids={"this-run"}),
                         progress=Progress(io.StringIO()), run_id="this-run")


def _record(ctx: EngineContext, run_id: str, container: FakeContainer, *, crashed: bool = False) -> None:
    ctx.state.add("vllm", "container", run_id=run_id, container=container.name, container_id=container.id)
    if crashed:  # the Jarvis process that wrote the record is gone
        data = json.loads(ctx.state.path.read_text())
        for record in data["records"]:
            if record["run_id"] == run_id:
                record["owner_pid"] = DEAD_PID
        ctx.state.path.write_text(json.dumps(data))


def test_a_running_container_of_a_live_loadout_is_left_alone(ctx):
    held = FakeContainer(NAME, "loadout:daily")
    _record(ctx, "loadout:daily", held)
    with pytest.raises(EngineError) as info:
        docker_runtime.clear_leftovers(ctx, FakeClient(held), VllmSettings())
    message = str(info.value)
    assert not held.removed and "\n" not in message
    assert "loadout daily" in message and "`jarvis loadout down daily`" in message


def test_a_running_container_of_another_live_run_is_left_alone(ctx):
    held = FakeContainer(NAME, "other-run")
    _record(ctx, "other-run", held)  # its owner, this very process, is alive
    with pytest.raises(EngineError) as info:
        docker_runtime.clear_leftovers(ctx, FakeClient(held), VllmSettings())
    message = str(info.value)
    assert not held.removed and "\n" not in message
    assert "another Jarvis run that is still going (run other-run)" in message and "Wait for that run" in message


def test_a_container_of_an_unknown_run_is_left_alone(ctx):
    held = FakeContainer(NAME, "never-recorded")
    with pytest.raises(EngineError) as info:
        docker_runtime.clear_leftovers(ctx, FakeClient(held), VllmSettings())
    assert not held.removed and f"`docker rm -f {NAME}`" in str(info.value)


def test_containers_of_this_run_and_of_crashed_runs_are_removed_with_their_records(ctx):
    crashed = FakeContainer(NAME, "crashed-run")
    _record(ctx, "crashed-run", crashed, crashed=True)
    mine = FakeContainer("vllm-other-name", "this-run", status="exited")
    starting = FakeContainer("vllm-live-created", "other-run", status="created")  # between create and start
    _record(ctx, "other-run", starting)
    removed = docker_runtime.clear_leftovers(ctx, FakeClient(crashed, mine, starting), VllmSettings())
    assert crashed.removed and mine.removed and not starting.removed
    assert removed == [f"leftover container {NAME} ({crashed.short_id})",
                       f"exited container vllm-other-name ({mine.short_id})"]
    assert [r.run_id for r in ctx.state.records("vllm", any_run=True)] == ["other-run"]
