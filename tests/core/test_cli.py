"""The command line: every command, and every error path ends in one line with the right exit code."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from click.testing import CliRunner

from jarvis_core import __version__
from jarvis_core.cli import cli

from engines_fixture import EchoPlugin


@pytest.fixture
def run():
    def invoke(*args: str, env: dict | None = None):
        return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    return invoke


@pytest.fixture
def echo(use_plugin):
    return use_plugin(EchoPlugin(), "echo-plugin")


def test_version(run):
    result = run("--version")
    assert result.exit_code == 0 and result.output.strip() == f"jarvis {__version__}"


def test_plugins_json(run, echo):
    result = run("plugins", "--json")
    assert result.exit_code == 0
    entry = next(p for p in json.loads(result.output) if p["name"] == "echo-plugin")
    assert entry["engines"] == ["echo"] and entry["prefixes"] == ["echo_", "ec:"]
    assert "infer" in entry["hooks"]


def test_plugins_table(run, echo):
    result = run("plugins")
    assert result.exit_code == 0
    assert result.output.splitlines()[0].split() == ["PLUGIN", "DISTRIBUTION", "VERSION", "ENGINES", "PREFIXES",
                                                     "HOOKS"]
    assert "echo-plugin" in result.output and "echo_ ec:" in result.output


def test_plugins_when_none_installed(run):
    result = run("plugins")
    assert result.exit_code == 0 and "pip install jarvis-ollama" in result.output


def test_engines_json_starts_nothing(run, echo):
    result = run("engines", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == [{"engine": "echo", "installed": True, "reachable": False, "version": "1.0",
                                          "address": "http://127.0.0.1:1", "started_by_jarvis": False, "detail": ""}]
    assert echo.calls == [("detect", "")]


def test_engines_table(run, echo):
    result = run("engines")
    assert result.exit_code == 0
    assert "echo" in result.output and "http://127.0.0.1:1" in result.output


def test_resolve_json_keys(run, echo):
    result = run("resolve", "EC:qwen2.5:0.5b#stream#repeat=2", "--json")
    assert result.exit_code == 0
    assert json.loads(result.output) == {"engine": "echo", "model": "qwen2.5:0.5b",
                                         "flags": {"stream": True, "repeat": 2},
                                         "canonical": "echo_qwen2.5:0.5b#stream#repeat=2"}


def test_resolve_uses_default_engine_from_config(run, echo, isolated):
    (isolated / "config.yaml").write_text("default_engine: echo\n")
    result = run("resolve", "org/model", "--json")
    assert json.loads(result.output)["engine"] == "echo"


def test_resolve_plain_output(run, echo):
    result = run("resolve", "echo_m:1#stream")
    assert "canonical: echo_m:1#stream" in result.output


@pytest.mark.parametrize("args, fragment", [
    (["resolve", "llama3"], "Cannot tell which engine serves 'llama3'"),
    (["resolve", "echo_m:1#turbo"], "Unknown flag '#turbo'"),
    (["resolve", "vllm:Qwen/Q"], "pip install jarvis-vllm"),
    (["resolve", "m:1", "--config", "nope.yaml"], "Config file 'nope.yaml' does not exist"),
])
def test_usage_errors_are_one_line_with_exit_code_2(run, echo, args, fragment):
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and fragment in lines[0]
    assert "Traceback" not in result.output


@pytest.mark.parametrize("text, fragment", [
    ("default_engine: [1\n", "config.yaml:2:1: invalid YAML"),
    ("timeouts:\n  start: soon\n", "at 'timeouts.start': expected a number, found 'soon'"),
    ("engines:\n  echo:\n    url: [a]\n", "at 'engines.echo.url': expected a string, found a list"),
    ("engines:\n  echo:\n    colour: red\n", "at 'engines.echo.colour': unknown setting 'colour'"),
    ("bogus: 1\n", "at 'bogus': unknown setting 'bogus'; expected one of: default_engine, engines"),
    ("- a\n- b\n", "expected a mapping of settings, found a list"),
])
def test_config_errors_name_file_key_found_and_expected(run, echo, isolated, text, fragment):
    (isolated / "config.yaml").write_text(text)
    result = run("engines")
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1
    assert "config.yaml" in result.output and fragment in result.output


def test_unexpected_error_is_one_line_unless_debugging(run, monkeypatch):
    from jarvis_core import session

    def broken_registry():
        raise RuntimeError("kaput")  # a bug anywhere below the command line

    monkeypatch.setattr(session, "get_registry", broken_registry)
    result = run("engines")
    assert result.exit_code == 1
    assert result.output.strip() == "Error: unexpected RuntimeError: kaput (set JARVIS_DEBUG=1 for the traceback)"
    with pytest.raises(RuntimeError):
        CliRunner().invoke(cli, ["engines"], env={"JARVIS_DEBUG": "1"}, catch_exceptions=False)


def _jarvis(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "jarvis_core", *args], capture_output=True, text=True,
                          env={**os.environ, **env}, timeout=60)


def test_help_does_not_import_heavy_libraries():
    # With every plugin installed: loading a plugin imports only the parts of the core it names at its top level
    # (jarvis_core.api is lazy), not the state file, the Hub, the GPU or the process machinery (benchmark item 6).
    heavy = ("docker", "openpyxl", "huggingface_hub", "httpx", "yaml", "asyncio", "aiohttp", "psutil", "hashlib",
             "subprocess", "jarvis_core.state", "jarvis_core.hub", "jarvis_core.gpu", "jarvis_core.launch",
             "jarvis_core.processes", "jarvis_core.progress", "jarvis_llamacpp.server", "jarvis_vllm.docker_runtime")
    code = ("import sys; from jarvis_core.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_real_process_error_has_no_traceback():
    result = _jarvis("resolve", "llama3", JARVIS_LOAD_PLUGINS="")
    assert result.returncode == 2
    assert result.stderr.startswith("Error: Cannot tell which engine serves 'llama3'")
    assert "Traceback" not in result.stderr


def test_config_lookup_order(run, echo, isolated, monkeypatch):
    user_dir = isolated / "xdg-config" / "jarvis"
    user_dir.mkdir(parents=True)
    (user_dir / "config.yaml").write_text("engines:\n  echo:\n    url: http://from-user-dir:1\n")
    assert json.loads(run("engines", "--json").output)[0]["address"] == "http://from-user-dir:1"
    (isolated / "config.yaml").write_text("engines:\n  echo:\n    url: http://from-cwd:1\n")
    assert json.loads(run("engines", "--json").output)[0]["address"] == "http://from-cwd:1"
    (isolated / "explicit.yaml").write_text("engines:\n  echo:\n    url: http://explicit:1\n")
    assert json.loads(run("engines", "--config", "explicit.yaml", "--json").output)[0]["address"] == \
        "http://explicit:1"


def test_no_config_file_at_all_uses_defaults(run, echo):
    assert json.loads(run("engines", "--json").output)[0]["address"] == "http://127.0.0.1:1"


def test_config_errors_do_not_show_values_of_secret_looking_keys(run, use_plugin, isolated):
    from dataclasses import dataclass

    from jarvis_core.api import EngineSpec, hookimpl

    @dataclass
    class Settings:
        api_key: str | None = None

    class Keyed(EchoPlugin):
        @hookimpl
        def register_engines(self, register):
            register(EngineSpec("keyed", ("keyed_",), settings=Settings))

    use_plugin(Keyed(), "keyed")
    (isolated / "config.yaml").write_text("engines:\n  keyed:\n    api_key: [sk-very-secret]\n")
    result = run("engines")
    assert result.exit_code == 2 and "engines.keyed.api_key" in result.output
    assert "sk-very-secret" not in result.output
