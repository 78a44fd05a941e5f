"""Fuzzing the state file: whatever it holds (any JSON, any bytes), reading it, recording something and asking for
leftovers never raise, and every record that comes back is well typed."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jarvis_core.state import Record, StateStore

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

FIELDS = ["id", "engine", "kind", "run_id", "started_at", "owner_pid", "owner_create_time", "pid", "create_time",
          "address", "log", "command", "data", "alias"]
scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=6), inner, max_size=3)),
                      max_leaves=12)
plausible = st.fixed_dictionaries({"id": st.text(min_size=1, max_size=6), "engine": st.just("echo"),
                                   "kind": st.sampled_from(["process", "model"])},
                                  optional={name: values for name in FIELDS[3:]})
records = st.one_of(values, plausible, st.dictionaries(st.sampled_from(FIELDS), values, max_size=8))
documents = st.one_of(values, st.fixed_dictionaries({}, optional={"version": values, "records": st.one_of(
    values, st.lists(records, max_size=6)), "baselines": st.one_of(values, st.dictionaries(
        st.text(max_size=5), values, max_size=4))}))


def check(content: bytes) -> None:
    with tempfile.TemporaryDirectory() as folder:
        directory = Path(folder)
        (directory / "state.json").write_bytes(content)
        store = StateStore(directory, run_ids={"mine"})
        for record in store.records(any_run=True):
            assert isinstance(record, Record) and isinstance(record.run_id, str)
            assert record.pid is None or (isinstance(record.pid, int) and record.pid >= 1)
            for value in (record.started_at, record.create_time, record.owner_create_time):
                assert value is None or math.isfinite(value)
            json.dumps(record.to_json())
        store.orphaned_run_ids()
        store.baseline("mine")
        added = store.add("echo", "model", model="m")
        assert added.id in {r.id for r in store.records()}
        store.remove(added.id)


@FUZZ
@given(documents)
def test_any_json_state_file(document):
    check(json.dumps(document).encode())


@FUZZ
@given(st.binary(max_size=200))
def test_any_bytes_state_file(content):
    check(content)


@FUZZ
@given(records)
def test_from_json_never_raises(raw):
    record = Record.from_json(raw)
    assert record is None or isinstance(record, Record)
