"""Lifecycle hooks reach only the plugin that registered the engine: a raising or careless plugin breaks only its own
engine, is named in the error, an incomplete engine plugin is refused at registration, and JARVIS_TRACE_PLUGINS shows
every call."""

from __future__ import annotations

import ast
import io
import logging
import re
import subprocess
import sys
from pathlib import Path

import pytest

from jarvis_core import plugins
from jarvis_core.api import ChatRequest, EngineError, EngineSpec, Message, hookimpl

from engines_fixture import EchoPlugin

REPO = Path(__file__).resolve().parents[2]


class Raising(EchoPlugin):
    """Raises in every lifecycle hook, before looking at which engine is asked (a careless third-party plugin)."""

    def _boom(self):
        raise RuntimeError(f"{self.name} is broken")

    @hookimpl
    def detect(self, ctx):
        self._boom()

    @hookimpl
    def is_available(self, ctx, model):
        self._boom()

    @hookimpl
    def start(self, ctx, model):
        self._boom()

    @hookimpl
    def infer(self, ctx, model, request):
        self._boom()

    @hookimpl
    def stop(self, ctx):
        self._boom()


class Greedy(EchoPlugin):
    """Answers every call whatever `ctx.engine` says: under broadcast hooks it took over other engines' calls."""

    @hookimpl
    def infer(self, ctx, model, request):
        self.calls.append(("infer", model.name))
        from jarvis_core.api import InferResult
        return InferResult(stream=False, t_send=0, text="greedy answered")


def test_a_raising_plugin_breaks_only_its_own_engine_and_is_named(use_plugin, make_session):
    use_plugin(Raising("bad", ("bad_",)), "bad-plugin")
    good = use_plugin(EchoPlugin("good", ("good_",)), "good-plugin")
    session = make_session({"engines": {"good": {"models": ["m:1"]}}})
    ref = session.resolve("good_m:1")
    assert session.detect("good").installed
    assert session.is_available(ref).present
    assert session.start(ref).started
    assert session.infer(ref, ChatRequest([Message("user", "abc")])).text == "cba"
    assert session.stop("good").memory_released
    assert [c[0] for c in good.calls] == ["detect", "is_available", "start", "infer", "stop"]

    bad = session.resolve("bad_m:1")
    with pytest.raises(EngineError, match=r"bad: start failed in plugin 'bad-plugin': RuntimeError: bad is broken"):
        session.start(bad)
    detection = session.detect("bad")
    assert not detection.installed and "bad-plugin" in detection.detail


def test_a_plugin_that_ignores_ctx_engine_never_gets_another_engines_calls(use_plugin, make_session):
    greedy = use_plugin(Greedy("greedy", ("greedy_",)), "greedy-plugin")
    echo = use_plugin(EchoPlugin("echo", ("echo_",)), "echo-plugin")
    session = make_session()
    answer = session.infer(session.resolve("echo_m:1"), ChatRequest([Message("user", "abc")]))
    assert answer.text == "cba"
    assert greedy.calls == [] and echo.calls == [("infer", "m:1")]


def test_an_engine_plugin_missing_lifecycle_hooks_is_refused_at_registration(caplog):
    class Incomplete:
        @hookimpl
        def register_engines(self, register):
            register(EngineSpec("half", ("half_",)))

        @hookimpl
        def detect(self, ctx):
            return None

    with caplog.at_level(logging.WARNING, logger="jarvis"):
        assert plugins.register(Incomplete(), "half-plugin") is False
    assert plugins.pm.get_plugin("half-plugin") is None
    message = " ".join(r.getMessage() for r in caplog.records)
    assert "plugin 'half-plugin' is skipped" in message and "'half'" in message
    for hook in ("is_available", "pull", "start", "warmup", "infer", "stop"):
        assert f"'{hook}'" in message
    assert "'detect'" not in message.split("does not implement")[1].split(";")[0]


def test_a_plugin_without_engines_needs_no_lifecycle_hooks(use_plugin):
    class CommandsOnly:
        @hookimpl
        def register_commands(self, cli):
            pass

    use_plugin(CommandsOnly(), "commands-only")  # accepted


def test_hook_wrappers_of_other_plugins_still_wrap_the_owners_call(use_plugin, make_session):
    seen = []

    class Timing:
        @hookimpl(wrapper=True)
        def infer(self, ctx, model, request):
            seen.append(("before", ctx.engine))
            result = yield
            seen.append(("after", result.text))
            return result

    use_plugin(EchoPlugin("echo", ("echo_",)), "echo-plugin")
    use_plugin(Timing(), "timing")
    session = make_session()
    session.infer(session.resolve("echo_m:1"), ChatRequest([Message("user", "abc")]))
    assert seen == [("before", "echo"), ("after", "cba")]


def test_trace_prints_every_hook_call_with_plugin_duration_and_result(use_plugin, make_session):
    use_plugin(EchoPlugin("echo", ("echo_",)), "echo-plugin")
    use_plugin(Raising("bad", ("bad_",)), "bad-plugin")
    out = io.StringIO()
    plugins.trace_hook_calls(out)
    try:
        session = make_session()
        session.detect("echo")
        with pytest.raises(EngineError):
            session.start(session.resolve("bad_m:1"))
    finally:
        plugins.stop_tracing()
    lines = out.getvalue().splitlines()
    assert re.fullmatch(r"jarvis trace: detect\[echo\] by echo-plugin in \d+\.\d ms -> Detection\(.*", lines[0])
    assert re.fullmatch(r"jarvis trace: start\[bad\] by bad-plugin in \d+\.\d ms raised RuntimeError: bad is broken",
                        lines[1])
    assert len(lines) == 2  # only the owner's implementation ran


def test_trace_is_switched_on_by_the_environment_variable():
    code = ("import sys; sys._called_from_test = True\n"
            "from jarvis_core import plugins\n"
            "from jarvis_core.api import hookimpl\n"
            "class P:\n"
            "    @hookimpl\n"
            "    def register_commands(self, cli): pass\n"
            "plugins.load_plugins(); plugins.register(P(), 'p')\n"
            "plugins.pm.hook.register_commands(cli=None)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         env={"JARVIS_TRACE_PLUGINS": "1", "PATH": ""})
    assert out.returncode == 0, out.stderr
    assert re.search(r"^jarvis trace: register_commands by p in \d+\.\d ms -> \[\]$", out.stderr, re.M)


# --- the plugin boundary ----------------------------------------------------------------------------------------


def _jarvis_core_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "jarvis_core":
            found.append(node.module)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "jarvis_core"]
    return found


def test_shipped_plugins_import_only_jarvis_core_api():
    sources = sorted((REPO / "plugins").glob("*/jarvis_*/**/*.py"))
    assert len(sources) >= 10, sources
    wrong = {f"{p.relative_to(REPO)}: {m}" for p in sources for m in _jarvis_core_imports(p) if m != "jarvis_core.api"}
    assert not wrong, f"plugins import jarvis_core internals: {sorted(wrong)}"


def test_no_plugin_guards_on_ctx_engine():
    hits = [str(p.relative_to(REPO)) for p in (REPO / "plugins").rglob("*.py") if "ctx.engine !=" in p.read_text()]
    assert hits == []
