"""The send gate of open-loop levels (`aio.until_due`, docs/load.md): once the engine's send path is seen to hold a
request at the gate, the event-loop generator starts each request a little before it is due, so that building it
and taking its connection happen ahead; the request itself is never written before its due time. A send path that
never reaches the gate is never started early."""

from __future__ import annotations

import asyncio
import time

import httpx

from jarvis_core.aio import openai_chat_async, send_at, until_due
from jarvis_core.api import InferResult
from jarvis_core.load import Level, LoadProfile, workload
from jarvis_core.load_async import run_level_async
from tests.run.test_load_core import load_server  # noqa: F401 - a fixture

clock = time.perf_counter_ns
make = workload([], LoadProfile(prompt_tokens=8), max_tokens=None, timeout=30)


def tag(index: int) -> str:
    return make(index).messages[0].content.split(":")[0]


def index_of(request) -> int:
    """Which request of the level this is: its prompt begins "Request N:"."""
    return int(request.messages[0].content.split(":")[0].split()[1])


def test_requests_start_early_but_reach_the_engine_no_earlier_than_due(load_server):  # noqa: F811
    url = load_server(ttft=0.02, tokens=3, gap=0.005)
    called: dict[str, int] = {}

    async def send(request):
        called[request.messages[0].content.split(":")[0]] = clock()
        return await openai_chat_async(url, "load-model", request)

    run = run_level_async(send, make, Level(rate=40), requests=30, duration=None, warmup=2, seed=5)
    received = {s["tag"]: s["received"] for s in httpx.get(f"{url}/stats", trust_env=False).json()}
    assert len(run.samples) == 32 and all(s.result.ok for s in run.samples)
    for s in run.samples:
        assert received[tag(s.index)] >= s.t_scheduled, f"request {s.index} reached the engine before it was due"
        assert s.result.t_send >= s.t_scheduled and s.t_start >= s.t_scheduled and s.queue_wait_s >= 0
    early = [s.index for s in run.samples if called[tag(s.index)] < s.t_scheduled]
    assert len(early) >= 20, f"requests built and connected ahead of their due time: only {early}"


def test_a_send_path_without_the_gate_is_never_started_early():
    """A third-party `infer_async` that writes by its own means and ignores the gate: sending it early would send
    it early, so the generator waits out each due time itself, as before."""
    called: list[tuple[int, int]] = []

    async def send(request):
        now = clock()
        called.append((index_of(request), now))
        await asyncio.sleep(0.005)
        return InferResult(stream=True, t_send=now, t_first_token=clock(), t_last_token=clock(), t_end=clock(),
                           chunk_times=[clock()], output_tokens=1)

    run = run_level_async(send, make, Level(rate=100), requests=30, duration=None, warmup=0, seed=5)
    due = {s.index: s.t_scheduled for s in run.samples}
    assert len(called) == 30
    assert all(at >= due[index] for index, at in called), "a send that never waits at the gate was started early"


def test_a_plugin_writing_by_its_own_means_opts_in_with_until_due():
    written: list[tuple[int, int, int]] = []

    async def send(request):
        started = clock()
        await until_due()  # ... build the request, take a connection, then:
        now = clock()
        written.append((index_of(request), started, now))
        return InferResult(stream=True, t_send=now, t_first_token=clock(), t_last_token=clock(), t_end=clock(),
                           chunk_times=[clock()], output_tokens=1)

    run = run_level_async(send, make, Level(rate=50), requests=30, duration=None, warmup=0, seed=5)
    due = {s.index: s.t_scheduled for s in run.samples}
    assert all(at >= due[index] for index, _, at in written), "written before it was due"
    assert sum(started < due[index] for index, started, _ in written) >= 20, "started ahead of the due time"


def test_the_gate_waits_once_and_only_inside_a_level():
    async def main() -> tuple[float, float, float, bool]:
        t0 = clock()
        await until_due()  # no level: at once
        outside = (clock() - t0) / 1e9
        due = clock() + 30_000_000
        with send_at(due) as gate:
            await until_due()
            first = clock()
            await until_due()  # the request was written: a second call does not wait again
            second = (clock() - first) / 1e9
        return outside, (first - due) / 1e9, second, gate.passed

    outside, late, second, passed = asyncio.run(main())
    assert outside < 0.01 and second < 0.01 and passed
    assert late >= 0, "returned before the due time"
