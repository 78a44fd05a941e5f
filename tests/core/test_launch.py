"""The one start sequence (`launch`), over real processes: ready, dead before ready, too slow, interrupted. Whatever
fails leaves no process, no record and says the command and the log's last lines. Also the shared warmup and the one
pooled client per address."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import psutil
import pytest

from jarvis_core.api import (
    WARMUP_PROMPT,
    EngineContext,
    EngineError,
    EngineTimeoutError,
    EngineUnavailableError,
    InferResult,
    ModelRef,
    Progress,
    StateStore,
    close_shared,
    end,
    exit_reason,
    launch,
    running,
    shared_client,
    warm,
)
from jarvis_core.config import Config, build_settings


@pytest.fixture
def ctx(tmp_path: Path) -> EngineContext:
    config = build_settings(Config, {"timeouts": {"start": 5, "stop": 5}}, source="test", path="",
                            exclude=("source",))
    return EngineContext(engine="demo", settings=None, config=config, state=StateStore(tmp_path / "state"),
                         progress=Progress(io.StringIO()), run_id="run-1")


def python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_a_ready_server_is_recorded_with_its_command_and_ended_by_its_record(ctx, tmp_path):
    flag = tmp_path / "ready"
    cmd = python(f"import pathlib, time; print('loading', flush=True); time.sleep(0.3); "
                 f"pathlib.Path({str(flag)!r}).touch(); time.sleep(60)")
    launched = launch(ctx, cmd, what="the demo server", log_name="demo.log", ready=flag.exists,
                      address="http://127.0.0.1:1", model="m:1")
    record = launched.record
    assert psutil.pid_exists(launched.pid) and exit_reason(record) is None
    assert (record.engine, record.kind, record.run_id, record.command, record.address, record.data) == \
        ("demo", "process", "run-1", tuple(cmd), "http://127.0.0.1:1", {"model": "m:1"})
    assert ctx.state.records() == [record] and running(ctx) == [record]
    log = launched.log.read_text()
    assert log.startswith("--- jarvis ") and "loading" in log
    assert 0.2 < launched.waited_s < 5
    assert end(ctx, record) is True
    assert not psutil.pid_exists(launched.pid) or psutil.Process(launched.pid).status() == psutil.STATUS_ZOMBIE
    assert ctx.state.records() == [] and running(ctx) == []


def test_a_server_that_dies_before_it_is_ready_is_one_error_with_command_and_log_tail(ctx):
    cmd = python("import sys; print('fatal: model file is corrupt', flush=True); sys.exit(3)")
    with pytest.raises(EngineError) as caught:
        launch(ctx, cmd, what="the demo server", log_name="dies.log", ready=lambda: False)
    message = str(caught.value)
    assert "the demo server stopped before it was ready: exited with code 3" in message
    assert "fatal: model file is corrupt" in message and "-c" in message and "dies.log" in message
    assert caught.value.engine == "demo"
    assert ctx.state.records() == []


def test_a_server_too_slow_to_be_ready_is_ended_with_its_children(ctx, tmp_path):
    pids = tmp_path / "pids"
    child = "import time; time.sleep(60)"
    cmd = python(f"import subprocess, sys, time, pathlib; c = subprocess.Popen([sys.executable, '-c', {child!r}]); "
                 f"pathlib.Path({str(pids)!r}).write_text(str(c.pid)); time.sleep(60)")
    with pytest.raises(EngineTimeoutError, match="was not ready after 1 s"):
        launch(ctx, cmd, what="the slow server", log_name="slow.log", ready=lambda: False, timeout=1)
    child_pid = int(pids.read_text())
    deadline = time.monotonic() + 5
    while psutil.pid_exists(child_pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not psutil.pid_exists(child_pid) or psutil.Process(child_pid).status() == psutil.STATUS_ZOMBIE
    assert ctx.state.records() == []


def test_ctrl_c_while_waiting_leaves_nothing_behind(ctx):
    started = []

    def ready() -> bool:
        started.extend(r.pid for r in ctx.state.records())
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        launch(ctx, python("import time; time.sleep(60)"), what="the demo server", log_name="int.log", ready=ready)
    assert started and ctx.state.records() == []
    assert not psutil.pid_exists(started[0]) or psutil.Process(started[0]).status() == psutil.STATUS_ZOMBIE


def test_a_missing_program_is_unavailable_not_a_traceback(ctx, tmp_path):
    with pytest.raises(EngineUnavailableError, match="cannot run .*no-such-engine"):
        launch(ctx, [str(tmp_path / "no-such-engine")], what="the demo server", log_name="none.log",
               ready=lambda: True)
    assert ctx.state.records() == []


def test_secrets_in_the_command_and_log_are_redacted_by_the_plugins_function(ctx):
    cmd = python("import sys; print('token sk-secret rejected', flush=True); sys.exit(1)") + ["--api-key", "sk-secret"]
    with pytest.raises(EngineError) as caught:
        launch(ctx, cmd, what="the demo server", log_name="secret.log", ready=lambda: False,
               redact=lambda text: text.replace("sk-secret", "***"))
    assert "sk-secret" not in str(caught.value) and "--api-key ***" in str(caught.value)


# --- warmup and clients -------------------------------------------------------------------------------------------


def test_warm_sends_the_shared_prompt_and_times_the_cold_start(ctx):
    sent = []

    def send(request):
        sent.append(request)
        time.sleep(0.05)
        return InferResult(stream=request.stream, t_send=0, text="ready", output_tokens=1)

    model = ModelRef(engine="demo", name="m:1")
    result = warm(ctx, model, send, stream=True)
    assert [m.content for m in sent[0].messages] == [WARMUP_PROMPT] and sent[0].stream
    assert sent[0].timeout == ctx.config.timeouts.start
    assert result.cold_start_s >= 0.05 and "1 tokens" in result.detail


def test_warm_reports_a_failed_answer_as_an_engine_error(ctx):
    model = ModelRef(engine="demo", name="m:1")
    with pytest.raises(EngineError, match="demo: the warmup request for m:1 failed: HTTP 500"):
        warm(ctx, model, lambda request: InferResult(stream=False, t_send=0, error="HTTP 500: boom"))


def test_one_shared_client_per_address_until_closed():
    first = shared_client("http://127.0.0.1:9")
    assert shared_client("http://127.0.0.1:9") is first
    assert shared_client("http://127.0.0.1:10") is not first
    close_shared("http://127.0.0.1:9")
    assert first.is_closed and shared_client("http://127.0.0.1:9") is not first
    close_shared()
