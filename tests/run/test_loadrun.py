"""A model's load profile as `jarvis run` drives it (`loadrun.run_profile`), against the scripted stand-in or a sender
that fails: a level whose every request failed is an error row in the records, the Load sheet and its charts (never
an "ok" level at zero); --resume neither measures a level again nor forgets it for the capacity, the saturation line
or a sweep; a sweep measures one request at a time, then saturation (sized from the engine's parallelism), then rates
between them, each level once; Ctrl-C cuts off every request in flight at the server (on both load generators)."""

from __future__ import annotations

import _thread
import json
import time
from pathlib import Path
from typing import Any

import httpx
import openpyxl
import pytest

from jarvis_core.aio import openai_chat_async
from jarvis_core.api import InferResult, Parallelism, openai_chat, shared_client
from jarvis_core.load import Level, LevelSummary, LoadProfile, Slo
from jarvis_core.loadrun import SWEEP_SATURATION, run_profile, sweep_saturation
from jarvis_core.report import write_report
from tests.run.test_load_core import load_server  # noqa: F401 - a fixture

IDENTITY = {"setup": "s", "model": "m", "engine": "e"}


def drive(profile: LoadProfile, *, send=None, send_async=None, done=None, parallelism=None,
          address: str = "http://127.0.0.1:9") -> tuple[Any, list, list]:
    records: list[dict[str, Any]] = []
    said: list[str] = []
    outcome = run_profile(profile, send=send or (lambda request: None), send_async=send_async,
                          prompts=[[("user", "hello")]], max_tokens=None, timeout=10, address=address,
                          engine="e", parallelism=parallelism, write=records.append, identity=IDENTITY,
                          done=done or {}, say=said.append)
    return outcome, records, said


def levels_of(records: list[dict[str, Any]]) -> list[tuple[Any, Any]]:
    return [(r["concurrency"], r["rate"]) for r in records if r["type"] == "load_level"]


def test_a_level_whose_every_request_failed_is_an_error_row_in_the_records_sheet_and_charts(tmp_path: Path):
    def broken(request):
        return InferResult(stream=True, t_send=1, error="HTTP 500: engine exploded")

    _, records, said = drive(LoadProfile(concurrency=(1, 2), requests=3, warmup=0), send=broken)
    levels = [r for r in records if r["type"] == "load_level"]
    assert [(lv["status"], lv["reason"]) for lv in levels] == [("error", "every request failed: HTTP 500: engine "
                                                                          "exploded")] * 2
    assert any("! every request failed: HTTP 500: engine exploded" in line for line in said)

    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    sheet = openpyxl.load_workbook(write_report(path, tmp_path / "report.xlsx"))["Load"]
    header = [c.value for c in sheet[1]]
    assert [row[header.index("status")] for row in sheet.iter_rows(min_row=2, max_row=3, values_only=True)] == \
        ["error", "error"]
    assert sheet._charts == [], "no chart plots a level with no figures (as a zero)"


def test_resume_keeps_earlier_levels_for_the_capacity_and_measures_only_the_rest(load_server):  # noqa: F811
    url = load_server(ttft=0.02, tokens=3, gap=0.005)
    send_async = (lambda request: openai_chat_async(url, "load-model", request))
    profile = LoadProfile(concurrency=(1, 2), requests=4, warmup=0, slo=Slo(ttft=5.0))
    first, records, _ = drive(profile, send_async=send_async)
    assert levels_of(records) == [(1, None), (2, None)] and first.users.level == Level(concurrency=2)

    # The first level's record, read back as --resume does; the second level was interrupted (no record).
    recorded = {(1, None): LevelSummary.from_json(next(r for r in records if r["type"] == "load_level"))}
    assert recorded[(1, None)].to_json() == first.levels[0].to_json()
    outcome, records, said = drive(profile, send_async=send_async, done=recorded)
    assert levels_of(records) == [(2, None)], "only the level not measured before"
    assert "  load 1 in flight: measured before (--resume)" in said
    assert [s.level for s in outcome.levels] == [Level(concurrency=1), Level(concurrency=2)]
    assert outcome.users.level == Level(concurrency=2), "the capacity weighs both levels"
    capacity = next(r for r in records if r["type"] == "load_capacity")
    assert capacity["users"]["concurrency"] == 2


def test_a_sweep_measures_sync_saturation_then_rates_between_each_once(load_server):  # noqa: F811
    url = load_server(ttft=0.02, tokens=3, gap=0.005, slots=2)
    send_async = (lambda request: openai_chat_async(url, "load-model", request))
    # 1 in flight is also listed: measured once, used by the sweep.
    profile = LoadProfile(concurrency=(1,), sweep=True, requests=24, warmup=0, seed=3)
    outcome, records, _ = drive(profile, send_async=send_async, parallelism=Parallelism("slots (--slots)", 2))
    measured = levels_of(records)
    assert measured[:2] == [(1, None), (4, None)], "sync, then twice the engine's 2 slots"
    rates = [r for _, r in measured[2:]]
    assert len(measured) == len(set(measured)), "no level measured twice"
    assert rates and all(r is not None for r in rates) and rates == sorted(rates)
    low, high = outcome.levels[0].request_rate, outcome.levels[1].request_rate
    assert low < high and all(low < r < high for r in rates), (low, high, rates)


@pytest.mark.parametrize("generator", ["threads", "event loop"])
def test_ctrl_c_in_a_level_cancels_every_request_in_flight_at_the_server(load_server, generator):  # noqa: F811
    # Answers of about 1 s, 4 in flight: the interrupt comes as the second measured answer is recorded, with the other
    # users in mid-answer. Were they left to run, the stand-in would finish them; cancelled, it finds their connections
    # closed at its next token.
    url = load_server(ttft=0.05, tokens=20, gap=0.05)
    options: dict[str, Any] = dict(send=lambda request: openai_chat(shared_client(url), "load-model", request))
    if generator == "event loop":
        options["send_async"] = lambda request: openai_chat_async(url, "load-model", request)
    records: list[dict[str, Any]] = []

    def write(record: dict[str, Any]) -> None:
        records.append(record)
        if sum(1 for r in records if r["type"] == "load_sample" and not r["warmup"]) == 2:
            _thread.interrupt_main()  # as Ctrl-C does: SIGINT's handler runs in the main thread

    with pytest.raises(KeyboardInterrupt):
        run_profile(LoadProfile(concurrency=(4,), requests=100, warmup=0), **options, address=url,
                    prompts=[[("user", "hello")]], max_tokens=None, timeout=30, engine="e", parallelism=None,
                    write=write, identity=IDENTITY, done={}, say=lambda line: None)

    def stats() -> list[dict[str, Any]]:
        return httpx.get(f"{url}/stats", trust_env=False).json()

    deadline = time.monotonic() + 5
    while any(s["done"] is None and s["gone"] is None for s in stats()) and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = stats()
    assert all(s["done"] is not None or s["gone"] is not None for s in seen), "a request is still being answered"
    gone = [s for s in seen if s["gone"] is not None]
    assert 1 <= len(gone) <= 4, "the requests in flight at the interrupt, and only they, were cut off"
    assert all(s["done"] is None for s in gone)
    samples = [r for r in records if r["type"] == "load_sample"]
    assert len(samples) == len(seen) - len(gone), "every answered request is recorded, no cancelled one"
    [level] = [r for r in records if r["type"] == "load_level"]
    assert level["status"] == "interrupted"


@pytest.mark.parametrize("max_concurrency, parallelism, expected", [
    (8, Parallelism("x", 2), 8),            # the user's cap wins
    (None, Parallelism("x", 4), 8),          # twice what the engine serves at once
    (None, Parallelism("x", 1), 4),          # at least 4
    (None, Parallelism("x", 1024), 256),     # at most 256
    (None, Parallelism("x", None), SWEEP_SATURATION),  # a server Jarvis did not start: unknown
    (None, None, SWEEP_SATURATION),
])
def test_the_sweeps_saturation_level(max_concurrency, parallelism, expected):
    assert sweep_saturation(LoadProfile(sweep=True, max_concurrency=max_concurrency), parallelism) == expected


def test_a_level_measured_again_by_resume_is_one_row(tmp_path: Path):
    """An interrupted level, then the same level measured by --resume (and the capacity written again): the Load sheet
    shows the measured row once and the last capacity."""
    def level(status: str | None, ok: int) -> dict[str, Any]:
        record = {"type": "load_level", **IDENTITY, "concurrency": 2, "rate": None, "requests_ok": ok,
                  "requests_error": 0, "output_tps": 10.0 * ok, "ttft_s": {"p50": 0.1, "p90": 0.1, "p99": 0.1}}
        return {**record, "status": status, "reason": "Ctrl-C after 3 answers"} if status else record

    def capacity(line: str) -> dict[str, Any]:
        return {"type": "load_capacity", **IDENTITY, "lines": [line]}

    path = tmp_path / "results.jsonl"
    items = [level("interrupted", 3), capacity("capacity: not reached"), level(None, 8), capacity("capacity: 2 users")]
    path.write_text("".join(json.dumps(r) + "\n" for r in items), encoding="utf-8")
    sheet = openpyxl.load_workbook(write_report(path, tmp_path / "report.xlsx"))["Load"]
    header = [c.value for c in sheet[1]]
    rows = [r for r in sheet.iter_rows(min_row=2, values_only=True) if any(v is not None for v in r)]
    assert [(r[header.index("status")], r[header.index("requests_ok")]) for r in rows[:1]] == [("ok", 8)]
    assert [r[3] for r in rows[1:]] == ["capacity: 2 users"]
