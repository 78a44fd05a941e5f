"""The state file under garbage and contention: a malformed record never blocks a run (it is dropped with one notice
naming the file), and the lock is an OS lock (filelock) that a dead holder cannot keep."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import time

import pytest

from jarvis_core import state as state_module
from jarvis_core.errors import JarvisError
from jarvis_core.state import Record, StateLockedError, StateStore, _locked

GOOD = {"id": "good1", "engine": "echo", "kind": "process", "run_id": "r1", "pid": 12345, "create_time": 1.5,
        "owner_pid": 999999, "owner_create_time": 2.5, "command": ["srv", "--port", 8000], "data": {"alias": "m"}}


def deep(levels: int):
    value: object = "x"
    for _ in range(levels):
        value = [value]
    return value


GARBAGE = {
    "not a mapping": ["id", "engine"],
    "a number": 7,
    "null": None,
    "no id": {"engine": "echo", "kind": "process"},
    "empty id": {**GOOD, "id": ""},
    "id not text": {**GOOD, "id": 5},
    "engine not text": {**GOOD, "engine": ["echo"]},
    "kind not text": {**GOOD, "kind": {"a": 1}},
    "run_id not text": {**GOOD, "run_id": 5},
    "pid text": {**GOOD, "pid": "12345"},
    "pid bool": {**GOOD, "pid": True},
    "pid float": {**GOOD, "pid": 1.5},
    "pid zero": {**GOOD, "pid": 0},
    "pid negative": {**GOOD, "pid": -1},
    "pid huge": {**GOOD, "pid": 2**64},
    "owner_pid huge": {**GOOD, "owner_pid": 10**30},
    "create_time text": {**GOOD, "create_time": "yesterday"},
    "create_time nan": {**GOOD, "create_time": float("nan")},
    "owner_create_time inf": {**GOOD, "owner_create_time": float("inf")},
    "started_at text": {**GOOD, "started_at": "noon"},
    "started_at inf": {**GOOD, "started_at": float("-inf")},
    "address list": {**GOOD, "address": ["127.0.0.1"]},
    "log number": {**GOOD, "log": 3},
    "command text": {**GOOD, "command": "srv --port 1"},
    "command nested": {**GOOD, "command": ["srv", ["--port", "1"]]},
    "command with a mapping": {**GOOD, "command": ["srv", {"a": 1}]},
    "data nested deep": {**GOOD, "data": {"x": deep(60)}},
    "version 1 field nested deep": {**GOOD, "extra": deep(60)},
}


def write_state(tmp_path, records, baselines=None, **extra):
    (tmp_path / "state.json").write_text(json.dumps({"version": 2, "records": records,
                                                     "baselines": baselines or {}, **extra}))


@pytest.fixture
def notices(caplog):
    caplog.set_level(logging.WARNING, logger="jarvis")
    state_module._noticed.clear()
    return lambda: [r.getMessage() for r in caplog.records if r.name == "jarvis"]


@pytest.mark.parametrize("name", list(GARBAGE))
def test_a_malformed_record_is_dropped_with_one_notice_and_the_good_one_kept(tmp_path, notices, name):
    write_state(tmp_path, [GOOD, GARBAGE[name]])
    store = StateStore(tmp_path)
    assert [r.id for r in store.records()] == ["good1"]
    assert [r.id for r in store.records(engine="echo")] == ["good1"]  # read again: no second notice
    messages = notices()
    assert len(messages) == 1, messages
    assert str(tmp_path / "state.json") in messages[0] and "dropped 1 malformed entry" in messages[0]
    assert "\n" not in messages[0]


def test_a_run_goes_on_and_the_next_write_leaves_the_garbage_out(tmp_path, notices):
    write_state(tmp_path, [GOOD, *GARBAGE.values()], baselines={"r1": 100, "bad": "lots", "worse": -5})
    store = StateStore(tmp_path, run_ids={"mine"})
    record = store.add("echo", "model", model="m")
    assert store.orphaned_run_ids() == {"r1"}  # its owner is gone; nothing raised on the way
    assert [r.id for r in store.records()] == [record.id]
    assert store.baseline("r1") == 100
    assert f"dropped {len(GARBAGE) + 2} malformed entries" in notices()[0]
    kept = json.loads((tmp_path / "state.json").read_text())
    assert [r["id"] for r in kept["records"]] == ["good1", record.id]
    assert kept["baselines"] == {"r1": 100}
    state_module._noticed.clear()
    StateStore(tmp_path).records()
    assert len(notices()) == 1  # the file is clean now: nothing more to say


def test_a_missing_run_id_reads_as_none_given():
    record = Record.from_json({**GOOD, "run_id": None})
    assert record is not None and record.run_id == ""


def test_a_good_record_keeps_its_fields():
    record = Record.from_json(GOOD)
    assert record is not None
    assert (record.pid, record.create_time, record.command, record.data) == \
        (12345, 1.5, ("srv", "--port", "8000"), {"alias": "m"})


@pytest.mark.parametrize("content", [
    b"[]", b"7", b'"text"', b"null", b"{not json", b"\xff\xfe\x00garbage", b"[" * 100_000 + b"]" * 100_000,
    b'{"records": [{"id": 1' + b"1" * 5000 + b'}]}',
])
def test_a_state_file_that_is_no_object_is_ignored_then_set_aside_by_the_next_writer(tmp_path, notices, content):
    (tmp_path / "state.json").write_bytes(content)
    store = StateStore(tmp_path)
    assert store.records() == []
    store.add("echo", "model", run_id="r")
    assert [r.run_id for r in store.records()] == ["r"]
    assert len(list(tmp_path.glob("state.corrupt-*"))) == 1 or content.startswith(b'{"records"')
    assert all(str(tmp_path / "state.json") in m for m in notices())


@pytest.mark.parametrize("records", [{"a": 1}, "records", 5])
def test_a_records_entry_that_is_no_list_is_dropped(tmp_path, notices, records):
    (tmp_path / "state.json").write_text(json.dumps({"version": 2, "records": records}))
    assert StateStore(tmp_path).records() == []
    assert "dropped 1 malformed entry" in notices()[0]


def test_a_state_path_that_is_a_folder_does_not_block_a_run(tmp_path, notices):
    (tmp_path / "state.json").mkdir()
    store = StateStore(tmp_path)
    assert store.records() == []
    store.add("echo", "model", run_id="r")
    assert [r.run_id for r in store.records()] == ["r"]


def test_huge_integers_drop_only_their_record(tmp_path, notices):
    text = json.dumps({"records": [GOOD, {**GOOD, "id": "big", "pid": 1}]}).replace('"pid": 1,', '"pid": ' + "9" * 5000
                                                                                    + ",")
    (tmp_path / "state.json").write_text(text)
    assert [r.id for r in StateStore(tmp_path).records()] == ["good1"]


# --- the lock ---------------------------------------------------------------------------------------------------------

HOLD = """
import sys, time
from filelock import FileLock
lock = FileLock(sys.argv[1])
lock.acquire()
print("held", flush=True)
time.sleep(120)
"""


def hold_lock(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / "state.lock")], stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_lock_gives_one_clear_line_after_the_timeout(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "LOCK_TIMEOUT", 0.3)
    holder = hold_lock(tmp_path)
    try:
        started = time.monotonic()
        with pytest.raises(StateLockedError) as caught:
            StateStore(tmp_path).add("echo", "model")
        assert 0.25 <= time.monotonic() - started < 5
        message = str(caught.value)
        assert "\n" not in message and str(tmp_path / "state.json") in message and "0.3 s" in message
        assert isinstance(caught.value, JarvisError) and isinstance(caught.value, OSError)
    finally:
        holder.kill()
        holder.wait()


def test_a_lock_whose_holder_died_is_free_at_once(tmp_path, monkeypatch):
    monkeypatch.setattr(state_module, "LOCK_TIMEOUT", 5)
    holder = hold_lock(tmp_path)
    holder.kill()  # SIGKILL: no cleanup ran; the OS released the lock
    holder.wait()
    started = time.monotonic()
    StateStore(tmp_path).add("echo", "model")
    assert time.monotonic() - started < 2
    assert len(StateStore(tmp_path).records()) == 1


def test_the_lock_excludes_within_one_process_too(tmp_path):
    with _locked(tmp_path / "state.lock"):
        with pytest.raises(StateLockedError):
            with _locked(tmp_path / "state.lock", timeout=0.1):
                pass
    with _locked(tmp_path / "state.lock", timeout=0.1):
        pass
