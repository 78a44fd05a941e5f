"""Fuzzing the command line, setups files and results files: whatever a user types or a file holds, Jarvis answers
with an exit code in {0, 1, 2, 130}, no traceback, at most one error line, and no secret from the environment."""

from __future__ import annotations

import json
import os
import string

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jarvis_core.cli import cli

SECRET = "hf_fuzz_SeCrEt_9876"
COMMANDS = ["run", "bench", "report", "resolve", "engines", "plugins", "cleanup", "loadout", "loadout up",
            "loadout down", "loadout status", "--version", "--help", "nonsense"]
OPTIONS = ["--setups", "--setup", "--output", "--repeat", "--resume", "--json", "--strict", "--force-download",
           "--config", "--concurrency", "--rate", "--sweep", "--requests", "--duration", "--slo", "--prompt-tokens",
           "--output-tokens", "--max-concurrency", "-o", "--include-loadouts", "--arrival", "--warmup"]
VALUES = st.one_of(st.sampled_from(["0", "-1", "1", "4,16", "x", "", "1e309", "nan", "ttft=5", "ttft=500ms",
                                    "out", "/dev/null", "a-file", "results.jsonl", "ol_a:1", "vllm:Org/M#stream",
                                    f"http://user:{SECRET}@host", f"--api-key={SECRET}", "\x1b[2J", "\u202e"]),
                   st.text(alphabet=string.printable + "\u202e\x00\x1b", max_size=20))

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def check(result, *, text: str | None = None) -> None:
    output = text if text is not None else result.output
    assert result.exit_code in (0, 1, 2, 130), (result.exit_code, output)
    assert "Traceback" not in output, output
    assert SECRET not in output, output
    errors = [line for line in output.splitlines() if line.startswith("Error")]
    assert len(errors) <= 1, output
    if result.exit_code == 2:
        assert len([line for line in output.splitlines() if line.strip()]) == 1, output


@pytest.fixture
def world(isolated, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", SECRET)
    (isolated / "a-file").write_text("x")
    return isolated


@FUZZ
@given(command=st.sampled_from(COMMANDS), rest=st.lists(st.one_of(st.sampled_from(OPTIONS), VALUES), max_size=6))
def test_any_command_line(world, command, rest):
    args = command.split() + rest
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    check(result)


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                         st.text(max_size=12), st.sampled_from(["ol_a:1", "vllm:x/y", "*a", "&a x", "!!python/none"]))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(
        ["defaults", "tests", "setups", "id", "prompt", "check", "models", "load", "concurrency", "rate", "slo",
         "repetitions", "max_tokens", "contains", "capabilities", "x"]), inner, max_size=4)), max_leaves=20)


@FUZZ
@given(data=yaml_values)
def test_any_setups_file(world, data):
    (world / "test_setups.yaml").write_text(json.dumps(data, default=str))  # JSON is YAML
    result = CliRunner().invoke(cli, ["run", "--output", "fuzz-out"], catch_exceptions=False)
    check(result)
    if (world / "fuzz-out").exists():
        import shutil

        shutil.rmtree(world / "fuzz-out")


@FUZZ
@given(lines=st.lists(st.one_of(
    st.binary(max_size=40),
    st.builds(json.dumps, st.dictionaries(st.sampled_from(["type", "setup", "model", "test", "status", "e2e_s",
                                                           "ttft_s", "repetition", "engine", "reason"]),
                                          yaml_scalars, max_size=8)),
    st.just(json.dumps({"type": "sample", "setup": "s", "model": "m", "test": "t", "status": "ok", "e2e_s": 1.0,
                        "repetition": 1, "reason": f"--token {SECRET}"}))), max_size=12))
def test_any_results_file(world, lines):
    path = world / "fuzz.jsonl"
    path.write_bytes(b"\n".join(line if isinstance(line, bytes) else line.encode("utf-8", "surrogatepass")
                                for line in lines))
    result = CliRunner().invoke(cli, ["report", str(path), "-o", str(world / "fuzz.xlsx")], catch_exceptions=False)
    check(result)
    assert result.exit_code == 0, result.output


def test_loadout_up_with_no_engine_installed_says_why(world):
    (world / "config.yaml").write_text("loadouts:\n  daily: [ol_qwen2.5:0.5b, 'vllm:Org/M']\n")
    result = CliRunner().invoke(cli, ["loadout", "up", "daily"], catch_exceptions=False)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert lines and all(line.startswith("unavailable ") for line in lines), result.output
    assert "pip install jarvis-ollama" in result.output and os.environ["HF_TOKEN"] not in result.output
