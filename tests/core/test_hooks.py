"""Each lifecycle hook reaches exactly the plugin that owns the model's engine, and its answer comes back."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from jarvis_core.api import ChatRequest, Message, hookimpl
from jarvis_core.errors import PluginError

from engines_fixture import EchoPlugin


@pytest.fixture
def two_engines(use_plugin):
    echo = use_plugin(EchoPlugin("echo", ("echo_",)), "echo-plugin")
    other = use_plugin(EchoPlugin("other", ("other_",)), "other-plugin")
    return echo, other


def only_owner_was_called(owner: EchoPlugin, bystander: EchoPlugin, hook: str) -> bool:
    return [c[0] for c in owner.calls] == [hook] and bystander.calls == []


def test_hook_register_engines(two_engines, make_session):
    session = make_session()
    assert set(session.registry.engines) == {"echo", "other"}
    assert session.registry.engines["other"].plugin == "other-plugin"


def test_hook_register_commands(use_plugin):
    from jarvis_core import cli as cli_module

    class AddsCommand:
        @hookimpl
        def register_commands(self, cli):
            @cli.command(name="echo-hello")
            def hello():
                click.echo("hello from a plugin")

    use_plugin(AddsCommand(), "adds-command")
    try:
        cli_module._add_plugin_commands()
        result = CliRunner().invoke(cli_module.cli, ["echo-hello"])
        assert result.exit_code == 0 and result.output == "hello from a plugin\n"
    finally:
        cli_module.cli.commands.pop("echo-hello", None)


def test_hook_detect(two_engines, make_session):
    echo, other = two_engines
    detection = make_session({"engines": {"other": {"url": "http://127.0.0.1:9"}}}).detect("other")
    assert (detection.engine, detection.version, detection.address) == ("other", "1.0", "http://127.0.0.1:9")
    assert only_owner_was_called(other, echo, "detect")


def test_hook_is_available(two_engines, make_session):
    echo, other = two_engines
    session = make_session({"engines": {"echo": {"models": ["a:1"]}}})
    assert session.is_available(session.resolve("echo_a:1")).present
    assert not session.is_available(session.resolve("echo_b:1")).present
    assert other.calls == []


def test_hook_pull(two_engines, make_session):
    echo, other = two_engines
    session = make_session(force_download=True)
    model = session.resolve("echo_b:1")
    assert session.pull(model).present
    assert session.is_available(model).present
    assert only_owner_was_called(echo, other, "pull") is False and other.calls == []


def test_hook_start(two_engines, make_session):
    echo, other = two_engines
    session = make_session()
    result = session.start(session.resolve("echo_a:1#stream"))
    assert result.started and result.address == "http://127.0.0.1:1"
    assert echo.calls == [("start", "a:1")]  # the flag never reaches the engine
    assert [r.data["model"] for r in session.state.records(engine="echo")] == ["a:1"]
    assert other.calls == []


def test_hook_warmup(two_engines, make_session):
    echo, other = two_engines
    session = make_session()
    assert session.warmup(session.resolve("echo_a:1")).cold_start_s == 0.5
    assert only_owner_was_called(echo, other, "warmup")


def test_hook_infer(two_engines, make_session):
    echo, other = two_engines
    session = make_session()
    result = session.infer(session.resolve("other_m:1"), ChatRequest([Message("user", "abc")], stream=True))
    assert result.ok and result.text == "cba" and result.t_first_token is not None
    assert only_owner_was_called(other, echo, "infer")


def test_hook_stop(two_engines, make_session):
    echo, other = two_engines
    session = make_session()
    session.start(session.resolve("echo_a:1"))
    result = session.stop("echo")
    assert result.stopped == ["a:1"] and result.memory_released
    assert session.state.records() == []
    assert other.calls == []


def test_owner_returning_nothing_is_a_plugin_error(use_plugin, make_session):
    class Lazy(EchoPlugin):
        @hookimpl
        def warmup(self, ctx, model):
            return None

    use_plugin(Lazy("lazy", ("lazy_",)), "lazy-plugin")
    session = make_session()
    with pytest.raises(PluginError, match="'lazy-plugin' returned nothing from 'warmup'"):
        session.warmup(session.resolve("lazy_m:1"))


def test_detect_survives_a_crashing_plugin(use_plugin, make_session):
    class Crashes(EchoPlugin):
        @hookimpl
        def detect(self, ctx):
            raise RuntimeError("boom")

    use_plugin(Crashes("crash", ("crash_",)), "crash-plugin")
    detection = make_session().detect("crash")
    assert not detection.reachable and "crash-plugin" in detection.detail and "boom" in detection.detail


def test_settings_come_from_config_and_environment(use_plugin, make_session, monkeypatch):
    use_plugin(EchoPlugin(), "echo-plugin")
    session = make_session({"engines": {"echo": {"url": "http://from-config:1"}}})
    assert session.context("echo").settings.url == "http://from-config:1"
    monkeypatch.setenv("ECHO_URL", "http://from-env:2")
    assert make_session({"engines": {"echo": {"url": "http://from-config:1"}}}).context("echo").settings.url == \
        "http://from-env:2"
