"""`jarvis loadout` over an in-memory engine: names, records, fit check, MISSING, and isolation from `jarvis run`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis_core.api import Availability, EngineSpec, GpuMemory, StateStore, hookimpl
from jarvis_core.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from engines_fixture import EchoPlugin, EchoSettings  # noqa: E402


class SizedEcho(EchoPlugin):
    """Echo engine whose models say they need 10 GiB of GPU memory each, and which says it was started by Jarvis
    when any run or loadout recorded something for it."""

    @hookimpl
    def detect(self, ctx):
        found = super().detect(ctx)
        found.started_by_jarvis = bool(ctx.state.records(engine=self.name, any_run=True))
        return found

    @hookimpl
    def is_available(self, ctx, model):
        present = model.name in (ctx.settings.models or [])
        return Availability(present, "" if present else "not in engines.echo.models", memory_bytes=10 * 2**30,
                            memory_setting="engines.echo.size")


@pytest.fixture
def echo(use_plugin, isolated):
    (isolated / "config.yaml").write_text(
        "engines:\n  echo:\n    models: [a:1, b:1]\n"
        "loadouts:\n  daily: [echo_a:1, echo_b:1]\n  partial: [echo_a:1, echo_zzz:1]\n")
    return use_plugin(SizedEcho(), "echo-plugin")


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_up_status_down(echo, isolated):
    up = invoke("loadout", "up", "daily", "--json")
    assert up.exit_code == 0, up.output
    assert [m["status"] for m in json.loads(up.stdout)["models"]] == ["loaded", "loaded"]
    records = StateStore(isolated / "state").records()
    assert {r.run_id for r in records if r.kind == "model"} == {"loadout:daily"}

    status = json.loads(invoke("loadout", "status", "daily", "--json").stdout)
    assert [(m["id"], m["present"]) for m in status["models"]] == [("echo_a:1", True), ("echo_b:1", True)]
    assert status["engines"][0]["started_by_jarvis"] is True

    down = json.loads(invoke("loadout", "down", "daily", "--json").stdout)
    assert down["loadouts"] == ["daily"]
    assert sorted(down["stopped"]) == ["echo: a:1", "echo: b:1"]
    assert StateStore(isolated / "state").records() == []
    assert invoke("loadout", "down").output.strip() == "No loadout is up."


def test_up_twice_is_idempotent_and_down_stops_once(echo, isolated):
    assert invoke("loadout", "up", "daily").exit_code == 0
    assert invoke("loadout", "up", "daily").exit_code == 0
    down = json.loads(invoke("loadout", "down", "--json").stdout)
    assert down["loadouts"] == ["daily"]
    assert echo.calls.count(("stop", "")) == 1


def test_missing_model_is_reported_with_the_fix_and_not_pulled(echo):
    result = invoke("loadout", "up", "partial")
    assert result.exit_code == 1
    assert "MISSING echo_zzz:1" in result.output
    assert "jarvis loadout up partial --force-download" in result.output
    assert ("pull", "zzz:1") not in echo.calls


def test_force_download_pulls(echo):
    assert invoke("loadout", "up", "partial", "--force-download").exit_code == 0
    assert ("pull", "zzz:1") in echo.calls


def test_does_not_fit_is_refused_before_starting_anything(echo, monkeypatch):
    monkeypatch.setattr("jarvis_core.gpu._query", lambda with_uuid: [GpuMemory(0, "RTX 5090", 16384, 32607)])
    result = invoke("loadout", "up", "daily")
    assert result.exit_code == 2
    assert "needs 20.0 GiB" in result.output and "RTX 5090 (GPU 0) has 15.8 GiB free of 31.8 GiB" in result.output
    assert "engines.echo.size" in result.output and "nothing was started" in result.output
    assert not [c for c in echo.calls if c[0] == "start"]


def test_fit_check_passes_when_it_fits(echo, monkeypatch):
    monkeypatch.setattr("jarvis_core.gpu._query", lambda with_uuid: [GpuMemory(0, "RTX 5090", 1024, 32607)])
    assert invoke("loadout", "up", "daily").exit_code == 0


def test_unknown_loadout_lists_known_ones(echo):
    result = invoke("loadout", "up", "weekend")
    assert result.exit_code == 2
    assert "No loadout named 'weekend'" in result.output and "daily, partial" in result.output


def test_setups_serve_as_loadouts(echo, isolated):
    (isolated / "test_setups.yaml").write_text(
        "tests:\n  - {id: t, prompt: hi}\nsetups:\n  smoke: [echo_a:1]\n")
    assert invoke("loadout", "up", "smoke").exit_code == 0
    assert {r.run_id for r in StateStore(isolated / "state").records()} == {"loadout:smoke"}


def test_run_cleanup_leaves_a_loadout_alone(echo, isolated):
    assert invoke("loadout", "up", "daily").exit_code == 0  # the CLI has "exited": its records look orphaned
    assert invoke("cleanup").output.strip() == "Nothing to clean up."
    assert len(StateStore(isolated / "state").records(kind="model")) == 2
    assert "echo: a:1" in invoke("cleanup", "--include-loadouts").output


class OneAtATime(SizedEcho):
    """Serves one model at a time, like vLLM: starting a model replaces the previous one; detect tells which."""

    serving: str | None = None

    @hookimpl
    def register_engines(self, register):
        register(EngineSpec(self.name, self.prefixes, "one model at a time", settings=EchoSettings,
                            one_model_at_a_time=True))

    @hookimpl
    def start(self, ctx, model):
        OneAtATime.serving = model.name
        return super().start(ctx, model)

    @hookimpl
    def detect(self, ctx):
        found = super().detect(ctx)
        found.loaded_models = {OneAtATime.serving: 10 * 2**30} if OneAtATime.serving else {}
        return found


@pytest.fixture
def one_at_a_time(use_plugin, isolated):
    (isolated / "config.yaml").write_text(
        "engines:\n  echo:\n    models: [a:1, b:1]\nloadouts:\n  daily: [echo_a:1, echo_b:1]\n  one: [echo_a:1]\n")
    OneAtATime.serving = None
    return use_plugin(OneAtATime(), "echo-plugin")


def test_a_model_replaced_by_the_next_one_is_not_reported_loaded(one_at_a_time):
    result = invoke("loadout", "up", "daily", "--json")
    assert result.exit_code == 1
    models = {m["id"]: m for m in json.loads(result.stdout)["models"]}
    assert models["echo_b:1"]["status"] == "loaded"
    assert models["echo_a:1"]["status"] == "error" and "one model at a time" in models["echo_a:1"]["detail"]


def test_up_again_does_not_count_resident_models_twice(one_at_a_time, monkeypatch):
    # 24 GiB used of 31.8: the resident model (10 GiB) is in there; counting it again (34 GiB) would refuse.
    assert invoke("loadout", "up", "one").exit_code == 0
    monkeypatch.setattr("jarvis_core.gpu._query", lambda with_uuid: [GpuMemory(0, "RTX 5090", 24576, 32607)])
    assert invoke("loadout", "up", "one").exit_code == 0
