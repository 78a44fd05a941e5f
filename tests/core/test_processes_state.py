"""Process trees and the state file, with real processes: what Jarvis ends, and what it never touches."""

from __future__ import annotations

import subprocess
from dataclasses import replace
import sys
import time

import psutil
import pytest

from jarvis_core.processes import create_time, end_tree, is_running, spawn, tail, wait_until_ready
from jarvis_core.errors import EngineError, EngineTimeoutError
from jarvis_core.state import StateStore

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX process groups")

PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
print(child.pid, flush=True)
time.sleep(120)
"""


def _tree(tmp_path):
    proc = spawn([sys.executable, "-c", PARENT], log_path=tmp_path / "tree.log")
    deadline = time.monotonic() + 20
    while not (tmp_path / "tree.log").read_text().strip() and time.monotonic() < deadline:
        time.sleep(0.02)
    child = int((tmp_path / "tree.log").read_text().split()[0])
    return proc, child


def test_end_tree_ends_root_and_children(tmp_path):
    proc, child = _tree(tmp_path)
    assert end_tree(proc.pid, create_time(proc.pid), timeout=5)
    proc.wait(timeout=5)
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_end_tree_after_the_root_crashed_ends_its_orphans(tmp_path):
    proc, child = _tree(tmp_path)
    created = create_time(proc.pid)
    proc.kill()
    proc.wait(timeout=5)
    assert psutil.Process(child).is_running()
    assert end_tree(proc.pid, created, timeout=5)
    psutil.wait_procs([psutil.Process(child)], timeout=5) if psutil.pid_exists(child) else None
    assert not psutil.pid_exists(child) or psutil.Process(child).status() == psutil.STATUS_ZOMBIE


def test_a_reused_pid_is_never_ended():
    foreign = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert not end_tree(foreign.pid, create_time(foreign.pid) - 3600, timeout=1)
        assert foreign.poll() is None
        assert not is_running(foreign.pid, create_time(foreign.pid) - 3600)
    finally:
        foreign.kill()
        foreign.wait()


def test_wait_until_ready_fails_fast_when_the_process_dies(tmp_path):
    proc = spawn([sys.executable, "-c", "print('boom: bad model file'); raise SystemExit(3)"],
                 log_path=tmp_path / "dies.log")
    with pytest.raises(EngineError, match="stopped before it was ready: exit 3"):
        wait_until_ready(lambda: False, timeout=30, what="test engine",
                         alive=lambda: None if proc.poll() is None else f"exit {proc.returncode}")
    assert "boom: bad model file" in tail(tmp_path / "dies.log")


def test_wait_until_ready_times_out_with_the_setting_to_change():
    with pytest.raises(EngineTimeoutError, match="timeouts.start"):
        wait_until_ready(lambda: False, timeout=0.2, what="test engine")


def test_state_scoping_and_orphans(tmp_path):
    store = StateStore(tmp_path)
    mine = store.scoped({"run-a"})
    mine.add("echo", "process", pid=1)
    store.add("echo", "process", run_id="loadout:daily", pid=2)
    assert [r.run_id for r in mine.records()] == ["run-a"]
    assert len(mine.records(any_run=True)) == 2
    # Our own process is alive: nothing of ours is orphaned; loadouts never are.
    assert store.orphaned_run_ids() == set()


def test_a_zombie_owner_counts_as_gone(tmp_path):
    owner = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 10
    while psutil.Process(owner.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.02)
    store = StateStore(tmp_path)
    record = store.add("echo", "process", run_id="crashed", pid=1)
    with store._update() as content:  # pretend the (now zombie) child wrote the record
        content.records[:] = [replace(r, owner_pid=owner.pid, owner_create_time=psutil.Process(owner.pid).create_time())
                              for r in content.records]
    assert store.orphaned_run_ids() == {"crashed"}
    owner.wait()
    store.remove(record.id)
    assert store.records() == []


def test_a_corrupt_state_file_is_kept_aside(tmp_path):
    (tmp_path / "state.json").write_text("{not json")
    store = StateStore(tmp_path)
    assert store.records() == []  # a reader ignores it; the next writer, holding the lock, sets it aside
    store.add("echo", "model", run_id="r")
    assert list(tmp_path.glob("state.corrupt-*"))
    assert [r.run_id for r in store.records()] == ["r"]


def test_concurrent_writers_lose_no_record(tmp_path):
    """Two processes adding records side by side (a run and a loadout): every record is kept."""
    code = ("import sys; from jarvis_core.state import StateStore\n"
            "s = StateStore(sys.argv[1])\n"
            "for i in range(40): s.add('echo', 'model', run_id=sys.argv[2], model=str(i))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), f"run-{n}"]) for n in range(3)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0]
    assert len(StateStore(tmp_path).records()) == 120


def test_a_reused_root_pid_leading_its_own_group_is_left_alone(tmp_path):
    """The recorded root is gone and its PID now belongs to another process leading its own group: nothing of that
    group is ended (it is not ours), even members born after our record."""
    foreign = spawn([sys.executable, "-c", PARENT], log_path=tmp_path / "foreign.log")  # leads its own group
    try:
        deadline = time.monotonic() + 20
        while not (tmp_path / "foreign.log").read_text().strip() and time.monotonic() < deadline:
            time.sleep(0.02)
        child = int((tmp_path / "foreign.log").read_text().split()[0])
        stale_record_time = create_time(foreign.pid) - 3600  # "our" process of long ago had this PID
        assert not end_tree(foreign.pid, stale_record_time, timeout=1)
        assert foreign.poll() is None and psutil.Process(child).is_running()
    finally:
        end_tree(foreign.pid, create_time(foreign.pid), timeout=5)
        foreign.wait(timeout=5)
