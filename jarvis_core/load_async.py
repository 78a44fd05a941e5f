"""One load level driven from one event loop: for engines whose plugin implements `infer_async`.

The same contract as `load.run_level` (same arguments, same `LevelRun`), without a thread per request in flight:
at hundreds of requests in flight, threads spend the client's CPU on switching and the GIL, and their stamps lag
(benchmarks/RESULTS.md, item 8). Here each request is a task; closed loop keeps N tasks sending, open loop starts each
request at its scheduled time and waits for a free slot under `max_concurrency` (that wait is its queue wait).
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from typing import Any, Awaitable, Callable

from .aio import close_sessions, send_at, spin_until
from .engine import ChatRequest, InferResult
from .load import (DEFAULT_OPEN_LOOP_CAP, MAX_IN_FLIGHT, Level, LevelRun, LoadSample, arrival_offsets,
                   closed_loop_warmup, failed, ramp_up)

#: An open-loop request is started this long before it is due and then waits out the rest on the loop's clock: the
#: loop's timers fire up to a millisecond late (epoll waits in whole milliseconds), which would be send lag.
EARLY_WAKE_S = 0.0015
#: Once the engine's send path is seen to hold requests at the send gate (`aio.until_due`), open-loop requests start
#: this long before they are due: building one and taking its connection (a new one takes ~1 ms here, several under
#: load) happen ahead, and only the write is left at the due time (benchmarks/RESULTS.md, item 8).
EARLY_START_S = 0.005

AsyncSend = Callable[[ChatRequest], Awaitable[InferResult]]


def run_level_async(send: AsyncSend, make_request: Callable[[int], ChatRequest], level: Level, *,
                    requests: int | None, duration: float | None, warmup: int, arrival: str = "poisson",
                    seed: int = 42, max_concurrency: int | None = None,
                    on_sample: Callable[[LoadSample], None] = lambda s: None,
                    stop: threading.Event | None = None) -> LevelRun:
    """`load.run_level` with `send` a coroutine function. Ctrl-C cancels every request in flight (their connections
    are closed) and raises KeyboardInterrupt; the samples already recorded stay recorded through `on_sample`."""
    import aiohttp  # noqa: F401  (imported here, not on the level's clock: it takes a few hundred ms the first time)

    run = _runner()

    stop = stop or threading.Event()
    warmup = closed_loop_warmup(level, warmup)
    total = warmup + requests if requests is not None else None
    if total is None and duration is None:
        raise ValueError("a level needs a number of requests or a duration")
    state = _Level(send, make_request, level, total=total, duration=duration, warmup=warmup, arrival=arrival,
                   seed=seed, max_concurrency=max_concurrency, on_sample=on_sample, stop=stop)
    try:
        run(state.run())
    except KeyboardInterrupt:
        stop.set()
        raise
    return state.result()


def _runner() -> Callable[[Any], Any]:
    """`uvloop.run` where uvloop is installed (Linux, macOS: a quarter less client CPU per request in flight, see
    benchmarks/RESULTS.md item 8), else `asyncio.run` (Windows)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


class _Level:
    def __init__(self, send: AsyncSend, make_request: Callable[[int], ChatRequest], level: Level, *,
                 total: int | None, duration: float | None, warmup: int, arrival: str, seed: int,
                 max_concurrency: int | None, on_sample: Callable[[LoadSample], None],
                 stop: threading.Event) -> None:
        self.send, self.make_request, self.level = send, make_request, level
        self.total, self.duration, self.warmup = total, duration, warmup
        self.arrival, self.seed, self.max_concurrency = arrival, seed, max_concurrency
        self.on_sample, self.stop = on_sample, stop
        self.samples: list[LoadSample] = []
        self.in_flight = 0
        self.early = False  # open loop: a request reached the send gate, so later ones may start early
        self.t0 = self.cpu0 = 0
        self.wall = self.cpu = 0.0

    async def run(self) -> None:
        clock = time.perf_counter_ns
        self.cpu0, self.t0 = time.process_time(), clock()
        try:
            if self.level.concurrency is not None:
                await self._closed()
            else:
                await self._open()
        finally:
            self.wall = (clock() - self.t0) / 1e9
            self.cpu = time.process_time() - self.cpu0
            await close_sessions()

    async def _one(self, index: int, t_scheduled: int) -> None:
        request = self.make_request(index)
        t_start = max(time.perf_counter_ns(), t_scheduled)  # started early, it waits at the send gate until due
        self.in_flight += 1
        try:
            result = await self.send(request)
        except Exception as exc:  # a plugin's bug, an engine error: this request's error, not the level's end
            result = failed(request, exc)
        finally:
            self.in_flight -= 1
        if self.stop.is_set():
            return  # cancelled: its error is not the engine's
        sample = LoadSample(index, index < self.warmup, t_scheduled, t_start, result,
                            request.max_tokens if request.exact_tokens else None)
        self.samples.append(sample)
        self.on_sample(sample)

    async def _closed(self) -> None:
        """The ramp-up (`load.ramp_up`): one request alone, then the N users one after another over its answer
        time; from then on each user sends its next request the moment its answer is in."""
        assert self.level.concurrency is not None
        users = self.level.concurrency
        clock = time.perf_counter_ns
        await self._one(0, clock())
        starts, deadline, counter = ramp_up(users, self.samples[0] if self.samples else None, clock() - self.t0,
                                            self.duration, self.total)

        async def user(k: int) -> None:
            wait = (starts[k] - clock()) / 1e9
            if wait > 0:
                await asyncio.sleep(wait)
            index: int | None = 1 + k  # each user's first request is the ramp-up's
            while index is not None and not self.stop.is_set():
                await self._one(index, clock())
                if deadline is not None and clock() >= deadline:
                    return
                index = next(counter, None)

        await _gather([user(k) for k in range(users)])

    async def _open(self) -> None:
        assert self.level.rate is not None
        clock = time.perf_counter_ns
        deadline = self.t0 + int(self.duration * 1e9) if self.duration is not None else None
        count = self.total if self.total is not None else math.ceil(self.level.rate * (self.duration or 0)) + 1
        offsets = arrival_offsets(self.level.rate, count, arrival=self.arrival, seed=self.seed)
        slots = asyncio.Semaphore(min(self.max_concurrency or DEFAULT_OPEN_LOOP_CAP, MAX_IN_FLIGHT))

        def gate_passed() -> None:
            self.early = True

        async def due(index: int, t_scheduled: int) -> None:
            async with slots:
                if not self.early:  # until the send path is seen to hold requests at the gate: wait out the rest
                    await spin_until(t_scheduled)
                with send_at(t_scheduled, gate_passed):
                    await self._one(index, t_scheduled)

        tasks: list[asyncio.Task[None]] = []
        for index, offset in enumerate(offsets):
            t_scheduled = self.t0 + int(offset * 1e9)
            if (deadline is not None and t_scheduled >= deadline) or self.stop.is_set():
                break
            wait = (t_scheduled - clock()) / 1e9 - (EARLY_START_S if self.early else EARLY_WAKE_S)
            if wait > 0:
                await asyncio.sleep(wait)
            tasks.append(asyncio.ensure_future(due(index, t_scheduled)))
        await _gather(tasks)

    def result(self) -> LevelRun:
        self.samples.sort(key=lambda s: s.index)
        return LevelRun(self.level, self.samples, self.t0, self.wall, self.cpu,
                        cancelled=self.in_flight if self.stop.is_set() else 0)


async def _gather(aws: list) -> None:
    """Run them all; the first failure (a bug, not a failed request: those are results) cancels the rest."""
    tasks = [asyncio.ensure_future(a) for a in aws]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
