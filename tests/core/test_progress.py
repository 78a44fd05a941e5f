"""The core's progress display: plain lines off a terminal, one bar drawn in place on one, binary units, a rate and
time left that count only this run, one final line, silence with --quiet, threads, and escaped labels."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from jarvis_core.progress import LINE_EVERY_S, RATE_WINDOW_S, Progress, human_bytes, human_duration

MiB = 1024 * 1024
GiB = 1024 * MiB
REPO = Path(__file__).resolve().parents[2]


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def tick(self, seconds: float) -> None:
        self.now += seconds


class Tty(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def plain(clock: Clock) -> tuple[Progress, io.StringIO]:
    out = io.StringIO()
    return Progress(out, clock=clock), out


@pytest.fixture(autouse=True)
def real_terminal_type(monkeypatch):
    monkeypatch.setenv("TERM", "xterm-256color")  # a CI runner's TERM=dumb would make the Tty stream plain
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("COLUMNS", "120")


def test_sizes_are_in_binary_units():
    assert human_bytes(0) == "0 B"
    assert human_bytes(1000) == "1000 B"
    assert human_bytes(1536) == "1.5 KiB"
    assert human_bytes(300 * MiB) == "300.0 MiB"
    assert human_bytes(3.2 * GiB) == "3.2 GiB"
    assert human_bytes(1024 * MiB - 1) == "1.0 GiB"  # never "1024.0 MiB"
    assert human_bytes(5 * 1024 * GiB) == "5.0 TiB"
    assert human_duration(59) == "59s" and human_duration(125) == "2m05s" and human_duration(3700) == "1h01m"


def test_off_a_terminal_a_line_every_few_seconds_and_the_final_line(plain, clock):
    progress, out = plain
    task = progress.task("vllm: org/model", total=100 * MiB)
    for _ in range(12):
        clock.tick(1)
        task.update(task.completed + MiB)
    task.close()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert len(lines) == 3, lines  # at 5 s, at 10 s, and the final line
    assert lines[0].startswith("vllm: org/model") and "5.0%" in lines[0] and "5.0 MiB/100.0 MiB" in lines[0]
    assert "10.0%" in lines[1] and "1.0 MiB/s" in lines[1]
    assert lines[2] == "vllm: org/model: 12.0 MiB in 12s (1.0 MiB/s)"


def test_a_phase_change_prints_a_line_at_once(plain, clock):
    progress, out = plain
    task = progress.task("image vllm/vllm-openai:v0.11.0", total=None)
    task.phase("pulling manifest")
    clock.tick(1)
    task.update(10 * MiB, 40 * MiB)
    task.phase("pulling manifest")  # the same phase again: nothing new
    task.phase("downloading")
    task.close("image vllm/vllm-openai:v0.11.0: pulled")
    assert out.getvalue().splitlines() == [
        "image vllm/vllm-openai:v0.11.0  pulling manifest  0 B",
        "image vllm/vllm-openai:v0.11.0  downloading   25.0%  10.0 MiB/40.0 MiB",
        "image vllm/vllm-openai:v0.11.0: pulled",
    ]


def test_files_are_shown_and_summed_up(plain, clock):
    progress, out = plain
    task = progress.task("vllm: org/model", total=7 * MiB)
    task.files(3, 7)
    task.phase("downloading")
    clock.tick(2)
    task.update(7 * MiB)
    task.files(7, 7)
    task.close()
    lines = out.getvalue().splitlines()
    assert lines[0].endswith("3/7 files")
    assert lines[-1] == "vllm: org/model: 7.0 MiB in 2s, 7/7 files"


def test_a_resumed_download_reports_only_this_runs_rate_and_time_left(plain, clock):
    progress, out = plain
    task = progress.task("Pulling llava:7b", total=None)
    task.update(4 * GiB // 10, GiB)  # resumed at 40 %: not a download of 400 MiB in no time
    for _ in range(5):
        clock.tick(1)
        task.update(task.completed + 10 * MiB)
    line = out.getvalue().splitlines()[-1]
    left = (GiB - task.completed) / (10 * MiB)
    assert "10.0 MiB/s" in line and f"{human_duration(left)} left" in line, line
    task.close()
    assert out.getvalue().splitlines()[-1] == "Pulling llava:7b: 459.6 MiB in 5s (10.0 MiB/s)"


def test_the_rate_follows_the_recent_window_and_falls_to_zero_in_a_stall(plain, clock):
    progress, out = plain
    task = progress.task("x", total=GiB)
    task.update(0)
    for _ in range(20):  # 20 s at 1 MiB/s
        clock.tick(1)
        task.update(task.completed + MiB)
    for _ in range(int(RATE_WINDOW_S)):  # then 10 s at 8 MiB/s: the rate shown is the recent one
        clock.tick(1)
        task.update(task.completed + 8 * MiB)
    assert "8.0 MiB/s" in task.render()
    clock.tick(RATE_WINDOW_S)  # nothing moves for a whole window
    assert "0 B/s" in task.render() and "left" not in task.render()


def test_a_phase_that_counts_again_from_zero_gets_its_own_rate(plain, clock):
    progress, out = plain
    task = progress.task("vllm: image x", total=None)
    task.update(0, 100 * MiB)
    task.phase("downloading")
    for _ in range(10):
        clock.tick(1)
        task.update(task.completed + 10 * MiB)
    task.update(0)  # the figures first, then the phase (extracted bytes now)
    task.phase("extracting")
    for _ in range(2):
        clock.tick(1)
        task.update(task.completed + 50 * MiB)
    assert task.render() == "vllm: image x  extracting  100.0%  100.0 MiB/100.0 MiB  50.0 MiB/s"


def test_phases_over_a_growing_figure_keep_the_rate(plain, clock):
    progress, out = plain
    task = progress.task("ollama: llava:7b", total=None)
    for layer in range(4):  # Ollama: one phase per layer, the bytes summed over the layers
        task.phase(f"pulling layer{layer}")
        for _ in range(3):
            clock.tick(1)
            task.update(task.completed + 2 * MiB, 40 * MiB)
    lines = out.getvalue().splitlines()
    assert len(lines) == 4  # a line at each layer's start (3 s apart: no 5 s line between them)
    assert lines[-1] == "ollama: llava:7b  pulling layer3   45.0%  18.0 MiB/40.0 MiB  2.0 MiB/s  11s left"
    task.close()
    assert out.getvalue().splitlines()[-1] == "ollama: llava:7b: 24.0 MiB in 12s (2.0 MiB/s)"


def test_close_prints_once_and_later_calls_do_nothing(plain, clock):
    progress, out = plain
    task = progress.task("llamacpp: extracting m.gguf", total=10)
    task.update(10)
    task.close("llamacpp: extracted m.gguf (10 B)")
    task.close("again")
    task.close()
    clock.tick(LINE_EVERY_S * 2)
    task.update(5)
    task.phase("late")
    assert out.getvalue() == "llamacpp: extracted m.gguf (10 B)\n"
    assert task.closed


def test_a_block_closes_its_task_and_says_where_an_error_stopped_it(plain, clock):
    progress, out = plain
    with progress.task("a", total=100) as task:
        task.update(100)
    with pytest.raises(OSError):
        with progress.task("b", total=100) as task:
            task.update(40)
            raise OSError("disk full")
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("a: 100 B in")
    assert lines[1].startswith("b: stopped at  40.0%  40 B/100 B")


def test_quiet_prints_nothing_at_all(clock):
    out = Tty()  # even on a terminal
    progress = Progress(out, enabled=False, clock=clock)
    progress.note("hello")
    task = progress.task("x", total=100)
    task.phase("downloading")
    clock.tick(LINE_EVERY_S * 3)
    task.update(50)
    task.files(1, 2)
    task.close()
    progress.task("y").close("done")
    assert out.getvalue() == ""


def test_a_second_task_takes_the_line_until_it_is_closed(plain, clock):
    progress, out = plain
    first = progress.task("first", total=100)
    second = progress.task("second", total=100)
    clock.tick(LINE_EVERY_S)
    first.update(10)  # not shown: the second task has the line
    second.update(20)
    second.close("second done")
    clock.tick(LINE_EVERY_S)
    first.update(30)
    first.close("first done")
    assert out.getvalue().splitlines() == ["second   20.0%  20 B/100 B", "second done",
                                           "first   30.0%  30 B/100 B  4 B/s  17s left", "first done"]


def test_labels_phases_and_notes_from_users_are_escaped(plain, clock):
    progress, out = plain
    progress.note("model \x1b[2Jevil\u202e")
    task = progress.task("vllm: org/\x1b]0;title\x07m\r", total=10)
    task.phase("down\x1b[31mloading")
    task.close()
    text = out.getvalue()
    assert "\x1b" not in text and "\r" not in text and "\x07" not in text and "\u202e" not in text
    assert "model \\x1b[2Jevil\\u202e" in text and "org/\\x1b]0;title\\x07m\\x0d" in text
    assert "down\\x1b[31mloading" in text


def test_several_threads_update_one_task(clock):
    out = io.StringIO()
    progress = Progress(out, clock=clock)
    task = progress.task("hf: org/model", total=8 * 2000)
    done = 0
    lock = threading.Lock()

    def worker() -> None:
        nonlocal done
        for _ in range(2000):
            with lock:
                done += 1
                figure = done
                clock.tick(1 / 64)
            task.update(figure)  # outside the caller's lock: figures may arrive out of order
            if figure % 500 == 0:
                progress.note(f"note {figure}")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    task.update(8 * 2000)
    task.close()
    lines = out.getvalue().splitlines()
    shape = re.compile(r"(hf: org/model  +\d+\.\d%  \d+(\.\d)? [KMG]?i?B/15\.6 KiB.*|note \d+)$")
    assert all(shape.match(line) for line in lines[:-1]), lines
    assert sum(line.startswith("note") for line in lines) == 32
    assert lines[-1].startswith("hf: org/model: 15.6 KiB in 4m10s (64 B/s)")


# --- on a terminal -------------------------------------------------------------------------------------------------


def test_on_a_terminal_one_bar_is_redrawn_in_place(clock):
    out = Tty()
    progress = Progress(out, clock=clock)
    assert progress.interactive
    progress.note("vllm: downloading org/model")
    task = progress.task("vllm: org/model", total=100 * MiB)
    task.phase("downloading")
    for _ in range(5):
        clock.tick(1)
        task.update(task.completed + 10 * MiB)
    progress.note("a note while the bar is drawn")
    task.files(2, 3)
    clock.tick(1)
    task.update(60 * MiB)
    task.close()
    text = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue())  # colours off; cursor moves stay
    drawn, final = text.rsplit("\x1b[2K", 1)
    assert final == "vllm: org/model: 60.0 MiB in 6s (10.0 MiB/s), 2/3 files\n"  # the bar erased, then this
    assert text.startswith("vllm: downloading org/model\n")
    redraws = drawn.split("\r\x1b[2K")  # each redraw goes back to the start of the line and clears it
    assert len([r for r in redraws if r.startswith("vllm: org/model  downloading ━")]) >= 5
    assert any("50.0%  50.0 MiB/100.0 MiB  10.0 MiB/s  5s left" in r for r in redraws)
    # a note gets a line of its own, the bar drawn again below it
    assert any(r.startswith("a note while the bar is drawn\nvllm: org/model  downloading ━") for r in redraws)
    assert drawn.count("\n") == 3  # the first note, the second note, and the bar's end: nothing else scrolls


def test_on_a_terminal_escapes_still_apply(clock):
    out = Tty()
    progress = Progress(out, clock=clock)
    task = progress.task("org/\x1b[31mred\x07", total=10)
    task.phase("\x1b]0;title\x07")
    task.update(5)
    progress.note("\x1b[2J")
    task.close()
    text = out.getvalue()
    assert "\x1b[31m" not in text and "\x07" not in text and "\x1b]0;" not in text and "\x1b[2J" not in text
    assert "org/\\x1b[31mred\\x07" in text and "\\x1b]0;title\\x07" in text and "\\x1b[2J" in text


def test_on_a_terminal_threads_and_the_redraw_thread_do_not_block_each_other():
    out = Tty()
    progress = Progress(out)  # the real clock: rich's refresh thread runs alongside
    task = progress.task("hf: org/model", total=4 * 5000)
    counter = iter(range(1, 4 * 5000 + 1))

    def worker() -> None:
        for _ in range(5000):
            task.update(next(counter))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads)
    task.close("hf: done")
    progress.close()
    assert out.getvalue().endswith("hf: done\n")


def test_on_a_terminal_a_second_task_takes_the_bar_and_gives_it_back(clock):
    out = Tty()
    progress = Progress(out, clock=clock)
    first = progress.task("first", total=100)
    first.update(10)
    second = progress.task("second", total=100)
    clock.tick(1)
    first.update(20)
    second.update(50)
    shown_while_both = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).split("\r\x1b[2K")[-1]
    assert shown_while_both.startswith("second ") and "first" not in shown_while_both  # one line, not two
    second.close("second done")
    clock.tick(1)
    first.update(30)
    after = re.sub(r"\x1b\[[0-9;]*m", "", out.getvalue()).split("second done\n", 1)[1]
    assert after.startswith("first ") and "30.0%" in after
    first.close("first done")
    assert out.getvalue().endswith("first done\n")


def test_without_rich_a_terminal_gets_plain_lines(clock, monkeypatch):
    monkeypatch.setitem(sys.modules, "rich", None)
    monkeypatch.setitem(sys.modules, "rich.console", None)
    out = Tty()
    progress = Progress(out, clock=clock)
    task = progress.task("x", total=100)
    task.phase("downloading")
    task.close("x done")
    assert out.getvalue() == "x  downloading    0.0%  0 B/100 B\nx done\n"


def test_a_task_left_open_is_dropped_by_close(clock):
    out = Tty()
    progress = Progress(out, clock=clock)
    task = progress.task("x", total=10)
    task.update(3)
    progress.close()
    progress.close()
    task.close()  # too late: already dropped
    text = out.getvalue()
    assert "\x1b[?25h" in text  # the cursor is shown again
    assert "x: 3 B" not in text


def test_help_and_plain_runs_never_import_rich():
    timing = subprocess.run([sys.executable, "-X", "importtime", "-c", "import jarvis_core.cli"], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert timing.returncode == 0, timing.stderr
    modules = [line.split("|")[-1].strip() for line in timing.stderr.splitlines() if "|" in line]
    assert "jarvis_core.progress" in modules or "jarvis_core.cli" in modules
    assert not [m for m in modules if m == "rich" or m.startswith("rich.")]
    plain_run = ("import io, sys; from jarvis_core.progress import Progress; p = Progress(io.StringIO()); "
                 "t = p.task('x', 10); t.phase('down'); t.update(5); t.close(); p.note('n'); "
                 "print(any(m == 'rich' or m.startswith('rich.') for m in sys.modules))")
    ran = subprocess.run([sys.executable, "-c", plain_run], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert ran.stdout.strip() == "False", ran.stderr
