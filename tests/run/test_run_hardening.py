"""Files Jarvis reads and writes, handled as a user would hope: unreadable results lines are skipped and named, a
torn line is never glued to the next record, a results folder is never shared by two runs, and a path that cannot be
written is one line with exit code 2 and nothing half-written left behind."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from jarvis_core.cli import cli
from jarvis_core.results import BadLines, ResultsWriter, read_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "core"))
from engines_fixture import EchoPlugin  # noqa: E402

GOOD = {"type": "sample", "setup": "s", "model": "echo_m:1", "engine": "echo", "test": "t", "repetition": 1,
        "status": "ok", "reason": "", "e2e_s": 0.5}


def invoke(*args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def echo(use_plugin, isolated):
    (isolated / "config.yaml").write_text("engines:\n  echo:\n    models: ['m:1']\n")
    (isolated / "test_setups.yaml").write_text(
        "defaults: {repetitions: 2, warmup: 0}\ntests:\n  - {id: t, prompt: abc, check: {equals: cba}}\n"
        "setups:\n  s: ['echo_m:1']\n")
    return use_plugin(EchoPlugin(), "echo-plugin")


def test_unreadable_results_lines_are_skipped_and_named(tmp_path):
    path = tmp_path / "results.jsonl"
    lines = [json.dumps({"type": "run"}).encode(), json.dumps(GOOD).encode(), b"\xff\xfe not utf-8",
             json.dumps({**GOOD, "e2e_s": "fast"}).encode(), b"[" * 100_000, json.dumps({**GOOD, "e2e_s": 1e300}).encode(),
             json.dumps([1, 2]).encode(), json.dumps({**GOOD, "status": "great"}).encode(), b'{"type": "sample", "se']
    path.write_bytes(b"\n".join(lines))
    bad = BadLines()
    records = list(read_results(path, bad))
    assert records == [{"type": "run"}, GOOD]
    assert bad == [(3, "not UTF-8"), (4, "e2e_s is not a number"), (5, "not JSON (torn or edited)"),
                   (6, "e2e_s is out of range"), (7, "not a JSON object"), (8, "unknown status"),
                   (9, "not JSON (torn or edited)")]
    assert bad.describe(path).startswith(f"skipped 7 unreadable lines of {path}: 3 (not UTF-8), 4 (e2e_s is not")


def test_a_torn_last_line_is_never_glued_to_the_next_record(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + '{"type": "sample", "setup": "s", "mod')  # a crash mid-write
    writer = ResultsWriter(path)
    writer.write({**GOOD, "repetition": 2})
    writer.close()
    bad = BadLines()
    assert [r["repetition"] for r in read_results(path, bad)] == [1, 2]
    assert bad == [(2, "not JSON (torn or edited)")]


def test_report_and_resume_say_which_lines_they_skipped(echo, isolated):
    assert invoke("run", "--output", "out").exit_code == 0
    results = isolated / "out" / "results.jsonl"
    with open(results, "ab") as fh:
        fh.write(b'{"type": "sample", "setup": "s", "model": "echo_m:1", "test": "t", "repetition": 3, "status": 7}\n')
    report = invoke("report", str(results))
    assert report.exit_code == 0
    count = len(results.read_bytes().splitlines())
    assert f"skipped 1 unreadable line of {results}: {count} (status is not text)" in report.output
    resumed = invoke("run", "--resume", str(isolated / "out"))
    assert resumed.exit_code == 0 and "skipped 1 unreadable line" in resumed.output


def test_a_results_folder_is_never_shared_by_two_runs(echo, isolated):
    assert invoke("run", "--output", "out").exit_code == 0
    before = (isolated / "out" / "results.jsonl").read_bytes()
    again = invoke("run", "--output", "out")
    assert again.exit_code == 2
    assert again.output.strip() == ("Error: out already holds the results of an earlier run; continue that run with "
                                    "`jarvis run --resume out`, or give a new folder with --output.")
    assert (isolated / "out" / "results.jsonl").read_bytes() == before


@pytest.mark.parametrize("target, problem", [
    ("a-file", "it is a file, not a folder"),
    ("a-file/inside", "Not a directory"),
    ("/dev/null", "it is a file, not a folder"),
    ("/proc/jarvis-results", "No such file or directory"),
])
def test_an_output_folder_that_cannot_be_written_is_one_line(echo, isolated, target, problem):
    (isolated / "a-file").write_text("not a folder")
    result = invoke("run", "--output", target)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: Cannot write results to {target}: ") and problem in lines[0]


@pytest.mark.parametrize("target", ["a-folder", "/proc/report.xlsx", "a-file/report.xlsx", "/dev/full"])
def test_a_report_path_that_cannot_be_written_is_one_line_and_leaves_no_part_file(echo, isolated, target):
    assert invoke("run", "--output", "out").exit_code == 0
    (isolated / "a-folder").mkdir()
    (isolated / "a-file").write_text("x")
    result = invoke("report", str(isolated / "out" / "results.jsonl"), "-o", target)
    assert result.exit_code == 2, result.output
    assert result.output.strip().startswith(f"Error: Cannot write the report to {target}: ")
    assert len(result.output.strip().splitlines()) == 1
    assert not list(isolated.rglob("*.part")) and not Path(target + ".part").exists()
    assert not Path("/dev/full").is_file(), "a device is never replaced by a file"


def test_an_unwritable_report_path_makes_no_noise_on_the_way_out(tmp_path):
    import subprocess

    from tests.run.conftest import JARVIS_EXE

    results = tmp_path / "results.jsonl"
    results.write_text(json.dumps({"type": "run"}) + "\n" + json.dumps(GOOD) + "\n")
    done = subprocess.run([str(JARVIS_EXE), "report", str(results), "-o", "/proc/report.xlsx"], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"Error: Cannot write the report to /proc/report.xlsx: No such file or "
                                                f"directory; give another path with -o (the results in {results} are "
                                                f"safe)."]


def test_ctrl_c_while_the_report_is_written_is_one_line_and_130(tmp_path):
    import signal
    import subprocess
    import time

    from tests.run.conftest import JARVIS_EXE

    results = tmp_path / "results.jsonl"
    with open(results, "w") as fh:
        fh.write(json.dumps({"type": "run", "schema": 2}) + "\n")
        for i in range(60_000):  # seconds of work for the report
            fh.write(json.dumps({**GOOD, "repetition": i, "test": f"t{i % 50}", "e2e_s": 0.5 + i % 7 / 10}) + "\n")
    proc = subprocess.Popen([str(JARVIS_EXE), "report", str(results)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(1.5)  # imports done, the report is being built
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "Interrupted." and "Traceback" not in out + err
    assert not list(tmp_path.glob("*.part"))


def test_ctrl_c_while_plugins_load_is_one_line_and_130(tmp_path):
    """A plugin that takes long to import (a heavy third-party one): Ctrl-C during start-up is one line and 130."""
    import os
    import signal
    import subprocess
    import time

    from tests.run.conftest import JARVIS_EXE

    site = tmp_path / "site"
    info = site / "jarvis_slow-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: jarvis-slow\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[jarvis]\nslow = jarvis_slow_plugin\n")
    (site / "jarvis_slow_plugin.py").write_text(
        f"import pathlib, time\npathlib.Path({str(tmp_path / 'importing')!r}).touch()\ntime.sleep(30)\n")
    env = {**os.environ, "PYTHONPATH": str(site), "JARVIS_LOAD_PLUGINS": "slow"}
    proc = subprocess.Popen([str(JARVIS_EXE), "plugins"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 30
    while not (tmp_path / "importing").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, (out, err)
    assert err.strip() == "Interrupted." and out == ""
