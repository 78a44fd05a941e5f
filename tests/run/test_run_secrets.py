"""No secret from any source reaches any sink, and nothing an engine or a user wrote can change the terminal.

Sources: a secret-looking flag in an engine's message, user-info in a URL, a secret-named environment variable, an
engine's log tail quoted in an error. Sinks: the console (stdout and stderr), results.jsonl, the workbook, the logs
and the state file Jarvis writes."""

from __future__ import annotations

import io
import json
import sys
import time
from pathlib import Path

import openpyxl
import pytest
from click.testing import CliRunner

from jarvis_core.api import EngineError, InferResult, hookimpl, launch
from jarvis_core.cli import cli

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from engines_fixture import EchoPlugin  # noqa: E402

ENV_SECRET = "hf_env_SeCrEt_4242"
FLAG_SECRET = "sk-flag-SeCrEt-77"
URL_SECRET = "pa55w0rd-in-url"
SECRETS = (ENV_SECRET, FLAG_SECRET, URL_SECRET)
HOSTILE = "\x1b[2J\x07\rFAKE: all tests passed\u202egnp.exe"


class Leaky(EchoPlugin):
    """An engine whose answers and errors quote credentials and terminal control sequences."""

    @hookimpl
    def infer(self, ctx, model, request):
        t = time.perf_counter_ns()
        prompt = request.messages[-1].content
        if "fail" in prompt:
            return InferResult(stream=False, t_send=t, error=f"engine said: launched with --api-key {FLAG_SECRET} "
                                                              f"at http://admin:{URL_SECRET}@127.0.0.1:9 using "
                                                              f"{ENV_SECRET}; {HOSTILE}")
        return InferResult(stream=False, t_send=t, text=f"{HOSTILE} token {ENV_SECRET}", t_first_byte=t,
                           t_last_token=t + 1000, t_end=t + 1000, output_tokens=2)


@pytest.fixture
def leaky(use_plugin, isolated, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)
    (isolated / "config.yaml").write_text("engines:\n  echo:\n    models: ['m:1']\n")
    (isolated / "test_setups.yaml").write_text(
        "defaults: {repetitions: 1, warmup: 0}\ntests:\n"
        f"  - {{id: ok, prompt: hello, check: {{contains: zzz}}}}\n  - {{id: bad, prompt: please fail}}\n"
        "setups:\n  s: ['echo_m:1']\n")
    return use_plugin(Leaky(), "leaky")


def no_secret(text: str, where: str) -> None:
    for secret in SECRETS:
        assert secret not in text, f"{secret} leaked into {where}"


def test_no_secret_reaches_console_results_or_workbook_and_no_control_character_the_terminal(leaky, isolated):
    result = CliRunner().invoke(cli, ["run", "--output", "out"], catch_exceptions=False)
    assert result.exit_code == 1, result.output
    shown = result.output
    no_secret(shown, "the console")
    assert "\x1b" not in shown and "\x07" not in shown and "\r" not in shown and "\u202e" not in shown
    assert "***" in shown
    results = (isolated / "out" / "results.jsonl").read_text(encoding="utf-8")
    no_secret(results, "results.jsonl")
    assert all(json.loads(line) for line in results.splitlines())  # still valid JSON, line by line
    book = openpyxl.load_workbook(isolated / "out" / "report.xlsx")
    cells = " ".join(str(c) for ws in book.worksheets for row in ws.iter_rows(values_only=True) for c in row
                     if c is not None)
    no_secret(cells, "the workbook")
    as_json = CliRunner().invoke(cli, ["run", "--output", "out2", "--json"], catch_exceptions=False)
    no_secret(as_json.stdout, "--json output")


def test_an_error_line_is_redacted_and_escaped(use_plugin, isolated, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)

    class Broken(EchoPlugin):
        @hookimpl
        def detect(self, ctx):
            raise EngineError(f"cannot reach http://u:{URL_SECRET}@host with {ENV_SECRET}{HOSTILE}")

    use_plugin(Broken(), "broken")
    result = CliRunner().invoke(cli, ["loadout", "status", "--json"], catch_exceptions=False)
    no_secret(result.output, "loadout status")
    assert "\x1b" not in result.output


def test_a_log_tail_quoted_by_launch_is_redacted_by_default(tmp_path, monkeypatch):
    from jarvis_core.api import EngineContext, Progress, StateStore
    from jarvis_core.config import Config, build_settings

    monkeypatch.setenv("HF_TOKEN", ENV_SECRET)
    config = build_settings(Config, {}, source="test", path="", exclude=("source",))
    ctx = EngineContext(engine="demo", settings=None, config=config, state=StateStore(tmp_path / "state"),
                        progress=Progress(io.StringIO()), run_id="r")
    cmd = [sys.executable, "-c", f"import sys; print('auth failed for {ENV_SECRET}', flush=True); sys.exit(1)",
           "--hf-token", FLAG_SECRET]
    with pytest.raises(EngineError) as caught:
        launch(ctx, cmd, what="the demo server", log_name="demo.log", ready=lambda: False)
    no_secret(str(caught.value), "the error")
    log = (tmp_path / "state" / "logs" / "demo.log").read_text()
    assert FLAG_SECRET not in log.splitlines()[0], "the header line Jarvis writes is redacted"
