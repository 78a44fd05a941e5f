"""The run plan resolves every model ID once; samples and state records are typed until they are written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jarvis_core import session as session_module
from jarvis_core.api import StateStore
from jarvis_core.errors import ModelIdError
from jarvis_core.plan import SampleKey, build_plan
from jarvis_core.results import Sample, Status
from jarvis_core.setups import parse_suite

from engines_fixture import EchoPlugin

SUITE = {"defaults": {"repetitions": 2, "warmup": 1},
         "tests": [{"id": "t1", "prompt": "a"}, {"id": "t2", "prompt": "b"}],
         "setups": {"s": {"models": ["echo_m:1#repeat=3", "ghost_x:1", "echo_m:1"]}}}


def test_the_plan_resolves_each_id_once_and_keeps_unresolvable_ones_as_unavailable(use_plugin, make_session,
                                                                                   monkeypatch):
    use_plugin(EchoPlugin("echo", ("echo_",)), "echo-plugin")
    session = make_session()
    calls = []
    original = session_module.resolve
    monkeypatch.setattr(session_module, "resolve", lambda *a, **k: calls.append(a[0]) or original(*a, **k))
    suite = parse_suite(SUITE, "test_setups.yaml", Path("."))
    (planned,) = build_plan(session, suite, suite.setups)
    assert calls == ["echo_m:1#repeat=3", "ghost_x:1", "echo_m:1"]
    first, ghost, plain = planned.models
    assert (first.label, first.repetitions, first.warmups, first.engine) == ("echo_m:1#repeat=3", 3, 1, "echo")
    assert ghost.ref is None and ghost.label == "ghost_x:1" and ghost.engine == ""
    assert plain.repetitions == 2 and planned.engines == {"echo"}
    done = {SampleKey("s", "echo_m:1", "t1", 1), SampleKey("s", "echo_m:1", "t1", 2)}
    assert [t.id for t in plain.todo(done)] == ["t2"]
    assert [t.id for t in ghost.todo({SampleKey("s", "ghost_x:1", "t1", None)})] == ["t2"]
    assert build_plan(session, suite, suite.setups, repeat=5)[0].models[0].repetitions == 5


def test_a_malformed_id_in_the_plan_names_the_setup(use_plugin, make_session):
    use_plugin(EchoPlugin("echo", ("echo_",)), "echo-plugin")
    suite = parse_suite({**SUITE, "setups": {"s": {"models": ["echo_m:1#nosuchflag"]}}}, "x.yaml", Path("."))
    with pytest.raises(ModelIdError, match="x.yaml, setup 's'"):
        build_plan(make_session(), suite, suite.setups)


def test_a_sample_is_written_as_the_results_schema_says():
    cell = Sample("s", "echo_m:1", "echo", "t1", None, Status.MISSING, "not present").to_record()
    assert set(cell) == {"type", "setup", "model", "engine", "test", "repetition", "cold", "status", "reason", "time"}
    assert cell["status"] == "missing" and json.loads(json.dumps(cell))["status"] == "missing"
    measured = Sample("s", "echo_m:1", "echo", "t1", 1, Status.OK, engine_model="m:1", stream=True, answer="x",
                      figures={"ttft_s": 0.1}, server={"eval_count": 3}).to_record()
    assert measured["engine_model"] == "m:1" and measured["ttft_s"] == 0.1 and measured["server"] == {"eval_count": 3}
    assert Status.MISSING.shown == "MISSING" and Status.OK.shown == "ok"


def test_state_records_are_typed_and_a_malformed_one_is_dropped(tmp_path):
    store = StateStore(tmp_path)
    record = store.add("echo", "process", run_id="r", pid=123, create_time=1.5, address="http://127.0.0.1:1",
                       command=["echo", "serve"], alias="m")
    assert (record.pid, record.command, record.data) == (123, ("echo", "serve"), {"alias": "m"})
    raw = json.loads((tmp_path / "state.json").read_text())
    raw["records"] += [{"id": "x", "engine": "echo", "kind": "process", "pid": "not a number"}, ["junk"],
                       {"engine": "echo"}]
    (tmp_path / "state.json").write_text(json.dumps(raw))
    assert store.records() == [record]


def test_a_version_1_state_file_is_still_read(tmp_path):
    (tmp_path / "state.json").write_text(json.dumps({"version": 1, "records": [
        {"id": "a", "engine": "llamacpp", "kind": "process", "run_id": "r", "pid": 7, "create_time": 2.0,
         "alias": "m", "cmd": ["python"]}]}))
    (record,) = StateStore(tmp_path).records()
    assert (record.pid, record.data) == (7, {"alias": "m", "cmd": ["python"]})


def test_gpu_baselines_are_not_engine_records(tmp_path):
    store = StateStore(tmp_path)
    store.set_baseline("loadout:daily", 1000)
    store.set_baseline("loadout:daily", 5000)  # the first one stays
    assert store.baseline("loadout:daily") == 1000 and store.records() == []
    store.clear_baseline("loadout:daily")
    assert store.baseline("loadout:daily") is None
