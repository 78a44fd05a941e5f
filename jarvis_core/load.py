"""Load and capacity: many requests in flight through an engine's own `infer`, measured as docs/load.md defines.

A load profile (`LoadProfile`, from a setup's `load:` block or `jarvis bench`) is a list of levels: closed loop
(`concurrency` N: N requests always in flight, a new one sent the moment one ends) or open loop (`rate` R: requests
sent at times drawn in advance, constant or Poisson, seeded, optionally capped at `max_concurrency` in flight).
`run_level` drives one level with worker threads and returns every request's stamps; `summarize_level` turns them into
the level's figures (throughput over the measured window, latency percentiles, goodput, client health), and
`capacity` and `saturation` read a whole curve.
"""

from __future__ import annotations

import math
import queue
import random
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator, Literal

from .engine import ChatRequest, InferResult, Message, Parallelism
from .metrics import percentile

#: More requests in flight than this would outgrow one client's connection pool (http.MAX_CONNECTIONS).
MAX_IN_FLIGHT = 1024
#: Open loop without `max_concurrency`: at most this many requests in flight, so a stalled engine cannot make the
#: client start thousands of threads.
DEFAULT_OPEN_LOOP_CAP = 512
#: A level whose client used more than this share of one core is flagged: the client may be the bottleneck.
CLIENT_CPU_FLAG = 0.8
#: GIL switch interval while a level runs (Python's default is 5 ms).
GIL_SWITCH_S = 0.0005
#: Throughput that grows by less than this share of the growth in requests in flight counts as saturated: from N to
#: 2N in flight, less than 10 %; from 1 to 4, less than 30 % (an engine that scaled perfectly would give 300 %).
SATURATION_GROWTH = 0.10


# --- the profile ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Slo:
    """Bounds per request (seconds); None leaves a figure unbounded."""

    ttft: float | None = None
    itl: float | None = None
    e2e: float | None = None

    def met(self, ttft: float | None, itl: float | None, e2e: float | None) -> bool:
        return all(bound is None or (value is not None and value <= bound)
                   for bound, value in ((self.ttft, ttft), (self.itl, itl), (self.e2e, e2e)))

    def describe(self) -> str:
        parts = [f"{name} ≤ {_ms(bound)}" for name, bound in (("TTFT", self.ttft), ("ITL", self.itl),
                                                               ("E2E", self.e2e)) if bound is not None]
        if self.itl:
            parts[-1 if self.e2e is None else -2] += f" (≥ {1 / self.itl:.0f} tok/s each)"
        return ", ".join(parts)

    def to_json(self) -> dict[str, float]:
        return {k: v for k, v in (("ttft", self.ttft), ("itl", self.itl), ("e2e", self.e2e)) if v is not None}


@dataclass(frozen=True)
class Level:
    """One load level: `concurrency` (closed loop) or `rate` in requests/s (open loop)."""

    concurrency: int | None = None
    rate: float | None = None

    @property
    def x(self) -> float:
        return float(self.concurrency if self.concurrency is not None else self.rate or 0)

    def describe(self) -> str:
        return f"{self.concurrency} in flight" if self.concurrency is not None else f"{self.rate:g} req/s"

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": self.concurrency, "rate": self.rate}


@dataclass(frozen=True)
class LoadProfile:
    concurrency: tuple[int, ...] = ()
    rate: tuple[float, ...] = ()
    arrival: Literal["poisson", "constant"] = "poisson"
    max_concurrency: int | None = None
    sweep: bool = False
    requests: int | None = None
    """Measured requests per level (after the warm-up ones)."""
    duration: float | None = None
    """Seconds per level in which requests are sent: in closed loop from the end of the ramp-up, in open loop from the
    level's start (warm-up included); the level ends when its last answer is in."""
    warmup: int = 2
    """Requests per level sent first and discarded (connections opened, caches warm); in closed loop at least the
    ramp-up's N + 1 (`closed_loop_warmup`)."""
    prompt_tokens: int | None = None
    """Synthetic prompts of about this many tokens instead of the setup's test prompts."""
    output_tokens: int | None = None
    """Answers pinned to this many tokens where the engine allows it."""
    slo: Slo | None = None
    share: float = 0.9
    """Share of requests that must meet the SLO for a level to count towards capacity."""
    seed: int = 42

    def levels(self) -> list[Level]:
        return [Level(concurrency=c) for c in self.concurrency] + [Level(rate=r) for r in self.rate]

    def requests_for(self, level: Level) -> int | None:
        """Measured requests for a level: as set, else enough for stable percentiles unless a duration bounds it."""
        if self.requests is not None:
            return self.requests
        if self.duration is not None:
            return None
        if level.concurrency is not None:
            return max(16, 4 * level.concurrency)
        return max(16, math.ceil((level.rate or 1) * 10))

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": list(self.concurrency), "rate": list(self.rate), "arrival": self.arrival,
                "max_concurrency": self.max_concurrency, "sweep": self.sweep, "requests": self.requests,
                "duration": self.duration, "warmup": self.warmup, "prompt_tokens": self.prompt_tokens,
                "output_tokens": self.output_tokens, "slo": self.slo.to_json() if self.slo else None,
                "share": self.share, "seed": self.seed}


# --- the workload --------------------------------------------------------------------------------------------------

_WORDS = ("time person year way day thing man world life hand part child eye woman place work week case point "
          "government company number group problem fact river mountain garden window letter music market story "
          "question answer history science water light paper money family school country city morning evening "
          "summer winter colour sound voice road bridge table kitchen forest ocean island station village").split()


def synthetic_prompt(index: int, tokens: int, seed: int) -> str:
    """About `tokens` tokens of seeded text, different for every request from its first word on, so no request
    reuses another's cached prompt prefix (a common word is about 1.3 tokens)."""
    rng = random.Random(seed * 1_000_003 + index)
    words = max(1, round(tokens / 1.3) - 4)
    return f"Request {index}: summarise " + " ".join(rng.choice(_WORDS) for _ in range(words))


def workload(prompts: list[list[tuple[str, str]]], profile: LoadProfile, *, max_tokens: int | None,
             timeout: float) -> Callable[[int], ChatRequest]:
    """Request `i` of a level: the tests' prompts in turn (`prompts`, each a list of (role, content)), or a
    synthetic prompt when the profile sets `prompt_tokens`. Always streamed: TTFT and ITL need it."""
    tokens = profile.output_tokens if profile.output_tokens is not None else max_tokens

    def make(index: int) -> ChatRequest:
        if profile.prompt_tokens is not None or not prompts:
            messages = [Message("user", synthetic_prompt(index, profile.prompt_tokens or 64, profile.seed))]
        else:
            messages = [Message(role, content) for role, content in prompts[index % len(prompts)]]  # type: ignore[arg-type]
        return ChatRequest(messages=messages, stream=True, max_tokens=tokens, temperature=0.0,
                           exact_tokens=profile.output_tokens is not None, timeout=timeout)

    return make


def arrival_offsets(rate: float, count: int, *, arrival: str, seed: int) -> list[float]:
    """Send times (seconds from the level's start) of `count` requests at `rate` per second: evenly spaced, or
    Poisson arrivals (exponential gaps with mean 1/rate) from a seeded generator."""
    if arrival == "constant":
        return [i / rate for i in range(count)]
    rng = random.Random(seed)
    offsets, t = [], 0.0
    for _ in range(count):
        offsets.append(t)
        t += rng.expovariate(rate)
    return offsets


# --- one level -----------------------------------------------------------------------------------------------------


@dataclass
class LoadSample:
    """One request under load. Stamps are `perf_counter_ns`; `t_scheduled` is when it was due, `t_start` when a
    worker began to send it (the client-side wait lies between them), `result.t_send` when it was written."""

    index: int
    warmup: bool
    t_scheduled: int
    t_start: int
    result: InferResult
    exact_tokens: int | None = None

    @property
    def queue_wait_s(self) -> float:
        return (self.t_start - self.t_scheduled) / 1e9

    @property
    def send_lag_s(self) -> float | None:
        return (self.result.t_send - self.t_scheduled) / 1e9 if self.result.t_send else None

    @property
    def ttft_s(self) -> float | None:
        r = self.result
        return (r.t_first_token - r.t_send) / 1e9 if r.ok and r.t_first_token and r.t_send else None

    @property
    def ttft_sched_s(self) -> float | None:
        r = self.result
        return (r.t_first_token - self.t_scheduled) / 1e9 if r.ok and r.t_first_token else None

    @property
    def e2e_s(self) -> float | None:
        r = self.result
        return (r.t_last_token - r.t_send) / 1e9 if r.ok and r.t_last_token and r.t_send else None

    @property
    def e2e_sched_s(self) -> float | None:
        r = self.result
        return (r.t_last_token - self.t_scheduled) / 1e9 if r.ok and r.t_last_token else None

    @property
    def itl_s(self) -> float | None:
        """(t_last_token − t_first_token) / (N − 1): vLLM's TPOT, the per-request decode latency."""
        r = self.result
        n = r.output_tokens
        if not r.ok or not n or n < 2 or not r.t_first_token or not r.t_last_token:
            return None
        return (r.t_last_token - r.t_first_token) / 1e9 / (n - 1)

    @property
    def stopped_early(self) -> bool:
        """Pinned to `exact_tokens` tokens, the engine stopped before (it cannot pin, or it ignored the request)."""
        return self.exact_tokens is not None and self.result.ok and (self.result.output_tokens or 0) < self.exact_tokens

    def to_record(self, t0: int) -> dict[str, Any]:
        r = self.result
        return {"index": self.index, "warmup": self.warmup, "scheduled_s": (self.t_scheduled - t0) / 1e9,
                "queue_wait_s": self.queue_wait_s, "send_lag_s": self.send_lag_s,
                "t_send_s": (r.t_send - t0) / 1e9 if r.t_send else None,
                "ttft_s": self.ttft_s, "ttft_sched_s": self.ttft_sched_s, "itl_s": self.itl_s, "e2e_s": self.e2e_s,
                "e2e_sched_s": self.e2e_sched_s, "output_tokens": r.output_tokens, "token_source": r.token_source,
                "finish_reason": r.finish_reason, "stopped_early": self.stopped_early,
                "status": "ok" if r.ok else "error", "reason": r.error or ""}


@dataclass
class LevelRun:
    level: Level
    samples: list[LoadSample]
    t0: int
    """When the level began (perf_counter_ns): offsets in records are from here."""
    wall_s: float
    cpu_s: float
    """CPU seconds this process used during the level (all threads): the client's own load."""
    cancelled: int = 0
    """Requests still in flight when the level was stopped (Ctrl-C); they are not recorded."""


def run_level(send: Callable[[ChatRequest], InferResult], make_request: Callable[[int], ChatRequest], level: Level,
              *, requests: int | None, duration: float | None, warmup: int, arrival: str = "poisson", seed: int = 42,
              max_concurrency: int | None = None, on_sample: Callable[[LoadSample], None] = lambda s: None,
              stop: threading.Event | None = None) -> LevelRun:
    """Drive one level and return every request. `requests` measured ones follow `warmup` discarded ones; with a
    `duration`, no request is sent after it has passed. `stop` ends the level early (in-flight requests are left to
    the caller to cancel, e.g. by closing the engine's client, and are not recorded)."""
    stop = stop or threading.Event()
    warmup = closed_loop_warmup(level, warmup)
    total = warmup + requests if requests is not None else None
    if total is None and duration is None:
        raise ValueError("a level needs a number of requests or a duration")
    samples: list[LoadSample] = []
    lock = threading.Lock()

    def record(index: int, t_scheduled: int, t_start: int, request: ChatRequest, result: InferResult) -> None:
        if stop.is_set():
            return  # cancelled: its error is not the engine's
        sample = LoadSample(index, index < warmup, t_scheduled, t_start, result,
                            request.max_tokens if request.exact_tokens else None)
        with lock:
            samples.append(sample)
        on_sample(sample)

    clock = time.perf_counter_ns
    # Many threads wait on sockets: a short GIL switch interval lets the one whose chunk arrived run (and stamp it)
    # at once, instead of after up to 5 ms (Python's default) while another thread parses.
    switch = sys.getswitchinterval()
    sys.setswitchinterval(GIL_SWITCH_S)
    cpu0, t0 = time.process_time(), clock()
    in_flight = [0]

    if level.concurrency is not None:
        users = level.concurrency

        def send_one(index: int) -> None:
            request = make_request(index)
            t_start = clock()
            record(index, t_start, t_start, request, sent(send, request))

        probe = threading.Thread(target=send_one, args=(0,), daemon=True, name="jarvis-load-ramp")
        probe.start()
        _join([probe], stop)
        starts, deadline, counter = ramp_up(users, samples[0] if samples else None, clock() - t0, duration, total)

        def closed_worker(user: int) -> None:
            if stop.wait(max(0, starts[user] - clock()) / 1e9):
                return
            index: int | None = 1 + user  # each user's first request is the ramp-up's
            while index is not None and not stop.is_set():
                send_one(index)
                if deadline is not None and clock() >= deadline:
                    return
                with lock:
                    index = next(counter, None)

        threads = [threading.Thread(target=closed_worker, args=(user,), daemon=True, name=f"jarvis-load-{user}")
                   for user in range(users)]
        for thread in threads:
            thread.start()
        _join(threads, stop)
    else:
        assert level.rate is not None
        deadline = t0 + int(duration * 1e9) if duration is not None else None
        count = total if total is not None else math.ceil(level.rate * (duration or 0)) + 1
        offsets = arrival_offsets(level.rate, count, arrival=arrival, seed=seed)
        cap = min(max_concurrency or DEFAULT_OPEN_LOOP_CAP, MAX_IN_FLIGHT)
        todo: queue.Queue[tuple[int, int] | None] = queue.Queue()
        workers: list[threading.Thread] = []
        idle = [0]

        def open_worker() -> None:
            while True:
                item = todo.get()
                if item is None:
                    return
                index, t_scheduled = item
                with lock:
                    idle[0] -= 1
                request = make_request(index)
                t_start = clock()
                with lock:
                    in_flight[0] += 1
                try:
                    record(index, t_scheduled, t_start, request, sent(send, request))
                finally:
                    with lock:
                        in_flight[0] -= 1
                        idle[0] += 1

        for index, offset in enumerate(offsets):
            due = t0 + int(offset * 1e9)
            if (deadline is not None and due >= deadline) or stop.is_set():
                break
            wait = (due - clock()) / 1e9
            if wait > 0:
                stop.wait(wait)
                if stop.is_set():
                    break
            with lock:
                start_one = idle[0] == 0 and len(workers) < cap
                if start_one:
                    idle[0] += 1
            if start_one:
                worker = threading.Thread(target=open_worker, daemon=True, name=f"jarvis-load-{len(workers)}")
                workers.append(worker)
                worker.start()
            todo.put((index, due))
        for _ in workers:
            todo.put(None)
        _join(workers, stop)
    wall = (clock() - t0) / 1e9
    sys.setswitchinterval(switch)
    samples.sort(key=lambda s: s.index)
    return LevelRun(level, samples, t0, wall, time.process_time() - cpu0, cancelled=in_flight[0] if stop.is_set()
                    else 0)


def closed_loop_warmup(level: Level, warmup: int) -> int:
    """Requests a level discards: `warmup`, and in closed loop at least the ramp-up's N + 1 (`ramp_up`)."""
    return max(warmup, level.concurrency + 1) if level.concurrency is not None else warmup


def ramp_up(users: int, first: LoadSample | None, first_ns: int, duration: float | None,
            total: int | None) -> tuple[list[int], int | None, Iterator[int]]:
    """What follows a closed loop's lone first request (`first`, which took `first_ns`): when each user sends its first
    request (`ramp_starts`: over that request's time, or at once when it failed or was not recorded), the `duration`'s
    deadline (from the last user's start) and the indices of the requests after each user's first (N + 1 on)."""
    answered = first is not None and first.result.ok
    starts = ramp_starts(users, first_ns if answered else 0, time.perf_counter_ns())
    deadline = starts[-1] + int(duration * 1e9) if duration is not None else None
    return starts, deadline, iter(range(users + 1, total if total is not None else 10**12))


def ramp_starts(users: int, answer_ns: int, now: int) -> list[int]:
    """When each of a closed loop's N users sends its first request (`perf_counter_ns`): one after another from
    `now`, spread evenly over `answer_ns`, the time one request took alone (0 when it failed: a timeout is no answer
    time, and the users then start at once). Started together, N answers of one length end together and the next N
    requests go out in one burst, every round: a herd no N independent users make, which measures how the client and
    the engine cope with bursts instead of N users in steady state."""
    return [now + user * answer_ns // users for user in range(users)]


def sent(send: Callable[[ChatRequest], InferResult], request: ChatRequest) -> InferResult:
    """`send(request)`, with a raise (a plugin's bug, an engine error) turned into that request's error result: one
    request's failure must not end its worker, nor the level."""
    try:
        return send(request)
    except Exception as exc:
        return failed(request, exc)


def failed(request: ChatRequest, exc: BaseException) -> InferResult:
    now = time.perf_counter_ns()
    return InferResult(stream=request.stream, t_send=now, t_end=now, error=str(exc) or type(exc).__name__)


def _join(threads: list[threading.Thread], stop: threading.Event) -> None:
    """Wait for the workers in short steps, so Ctrl-C reaches the main thread at once; on it, tell them to stop."""
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(0.05)
    except KeyboardInterrupt:
        stop.set()
        raise


# --- figures of a level --------------------------------------------------------------------------------------------


def _pcts(values: Iterable[float | None]) -> dict[str, float | None]:
    data = sorted(v for v in values if v is not None)
    return {k: percentile(data, q) if data else None for k, q in (("p50", 50), ("p90", 90), ("p99", 99))}


@dataclass
class LevelSummary:
    level: Level
    requests_ok: int
    requests_error: int
    output_tps: float | None
    request_rate: float | None
    goodput_rps: float | None
    slo_share: float | None
    ttft_s: dict[str, float | None]
    itl_s: dict[str, float | None]
    e2e_s: dict[str, float | None]
    ttft_sched_s: dict[str, float | None]
    queue_wait_s: dict[str, float | None]
    send_lag_s: dict[str, float | None]
    client_cpu: float
    window_s: float | None
    window: str
    """How the measured window was bounded: `steady` (ramp-up and drain excluded) or `with drain`."""
    achieved_rate: float | None = None
    """Open loop: requests sent per second (first send to last), against the schedule's rate over the same requests."""
    stopped_early: int = 0
    flags: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> LevelSummary:
        """A summary as `to_json` wrote it into a `load_level` record (for --resume)."""
        def pcts(key: str) -> dict[str, float | None]:
            return {k: (data.get(key) or {}).get(k) for k in ("p50", "p90", "p99")}

        return cls(level=Level(data.get("concurrency"), data.get("rate")),
                   requests_ok=int(data.get("requests_ok") or 0),
                   requests_error=int(data.get("requests_error") or 0), output_tps=data.get("output_tps"),
                   request_rate=data.get("request_rate"), goodput_rps=data.get("goodput_rps"),
                   slo_share=data.get("slo_share"), ttft_s=pcts("ttft_s"), itl_s=pcts("itl_s"), e2e_s=pcts("e2e_s"),
                   ttft_sched_s=pcts("ttft_sched_s"), queue_wait_s=pcts("queue_wait_s"),
                   send_lag_s=pcts("send_lag_s"), client_cpu=float(data.get("client_cpu") or 0.0),
                   window_s=data.get("window_s"), window=str(data.get("window") or "none"),
                   achieved_rate=data.get("achieved_rate"), stopped_early=int(data.get("stopped_early") or 0),
                   flags=list(data.get("flags") or []))

    @property
    def all_failed(self) -> bool:
        """Every measured request failed: the level is an error row, with no figures."""
        return self.requests_error > 0 and self.requests_ok == 0

    def to_json(self) -> dict[str, Any]:
        return {**self.level.to_json(), "requests_ok": self.requests_ok, "requests_error": self.requests_error,
                "output_tps": self.output_tps, "request_rate": self.request_rate, "goodput_rps": self.goodput_rps,
                "slo_share": self.slo_share, "ttft_s": self.ttft_s, "itl_s": self.itl_s, "e2e_s": self.e2e_s,
                "ttft_sched_s": self.ttft_sched_s, "queue_wait_s": self.queue_wait_s, "send_lag_s": self.send_lag_s,
                "client_cpu": self.client_cpu, "window_s": self.window_s, "window": self.window,
                "achieved_rate": self.achieved_rate, "stopped_early": self.stopped_early, "flags": self.flags}


def measured_window(samples: list[LoadSample], *, ramp_s: float | None = None) -> tuple[int, int, str] | None:
    """(start, end, kind) of the window throughput is counted over. It starts when the first measured request is
    sent, or the last warm-up one if that was later (the warm-up is the ramp-up: in closed loop, until the last user
    has started), and ends when the last request is sent: from then on fewer requests are in flight (the drain). In
    open loop the requests in flight keep building up for about one answer's time after that (nothing is answered
    yet), so the window starts later by `ramp_s` (the measured answers' E2E p90). When that leaves no time (every request sent
    at once, or answers longer than the level), the window runs to the last answer instead, and says `with drain`."""
    measured = [s for s in samples if not s.warmup and s.result.t_send]
    if not measured:
        return None
    start = max([s.result.t_send for s in samples if s.warmup and s.result.t_send]
                + [min(s.result.t_send for s in measured)])
    last_send = max(s.result.t_send for s in samples if s.result.t_send)
    steady_start = start + int((ramp_s or 0.0) * 1e9)
    if last_send - steady_start > 0 and len(measured) > 1:
        return steady_start, last_send, "steady"
    ends = [s.result.t_end or s.result.t_last_token for s in measured if s.result.t_end or s.result.t_last_token]
    end = max(ends) if ends else start
    return (start, end, "with drain") if end > start else None


def _tokens_in(sample: LoadSample, start: int, end: int) -> float:
    """Output tokens of a request that arrived inside [start, end]: a streamed answer counts its chunks in the window
    (each chunk worth N / chunks tokens), a whole answer counts when it ended inside."""
    r = sample.result
    n = r.output_tokens or 0
    if not r.ok or not n:
        return 0.0
    if r.chunk_times:
        inside = sum(1 for t in r.chunk_times if start <= t <= end)
        return n * inside / len(r.chunk_times)
    done = r.t_last_token or r.t_end
    return float(n) if done is not None and start <= done <= end else 0.0


def summarize_level(run: LevelRun, slo: Slo | None) -> LevelSummary:
    measured = [s for s in run.samples if not s.warmup]
    ok = [s for s in measured if s.result.ok]
    e2e = _pcts(s.e2e_s for s in ok)
    window = measured_window(run.samples, ramp_s=e2e["p90"] if run.level.rate is not None else None)
    output_tps = request_rate = goodput = window_s = None
    kind = "none"
    if window is not None:
        start, end, kind = window
        window_s = (end - start) / 1e9
        done_inside = [s for s in ok if s.result.t_last_token and start <= s.result.t_last_token <= end]
        output_tps = sum(_tokens_in(s, start, end) for s in run.samples) / window_s
        request_rate = len(done_inside) / window_s
        if slo is not None:
            goodput = sum(1 for s in done_inside if slo.met(s.ttft_sched_s, s.itl_s, s.e2e_sched_s)) / window_s
    share = (sum(1 for s in ok if slo.met(s.ttft_sched_s, s.itl_s, s.e2e_sched_s)) / len(measured)
             if slo is not None and measured else None)
    cpu = run.cpu_s / run.wall_s if run.wall_s > 0 else 0.0
    summary = LevelSummary(
        level=run.level, requests_ok=len(ok), requests_error=len(measured) - len(ok), output_tps=output_tps,
        request_rate=request_rate, goodput_rps=goodput, slo_share=share,
        ttft_s=_pcts(s.ttft_s for s in ok), itl_s=_pcts(s.itl_s for s in ok), e2e_s=e2e,
        ttft_sched_s=_pcts(s.ttft_sched_s for s in ok), queue_wait_s=_pcts(s.queue_wait_s for s in measured),
        send_lag_s=_pcts(s.send_lag_s for s in measured), client_cpu=cpu, window_s=window_s, window=kind,
        stopped_early=sum(1 for s in measured if s.stopped_early))
    if run.level.rate is not None and len(run.samples) > 1:
        # Judged against the schedule drawn for these requests, not the nominal rate: a Poisson schedule of a few
        # dozen requests is often 20-40 % off the rate it was drawn at.
        due = sorted(s.t_scheduled for s in run.samples)
        starts = sorted(s.t_start for s in run.samples)
        if starts[-1] > starts[0] and due[-1] > due[0]:
            summary.achieved_rate = (len(starts) - 1) / ((starts[-1] - starts[0]) / 1e9)
            scheduled = (len(due) - 1) / ((due[-1] - due[0]) / 1e9)
            if summary.achieved_rate < 0.95 * scheduled:
                summary.flags.append(f"the client sent {summary.achieved_rate:.2f} req/s of {scheduled:.2f} "
                                     f"scheduled: it fell behind (raise max_concurrency, or the client is the limit)")
    if cpu > CLIENT_CPU_FLAG:
        summary.flags.append(f"the client used {cpu:.0%} of a core: the load generator may be the bottleneck")
    if summary.stopped_early:
        summary.flags.append(f"{summary.stopped_early} answers stopped before the pinned output length (the engine "
                             f"cannot pin it, or ignored the request)")
    if measured and not ok:
        first = next(s for s in measured if not s.result.ok)
        summary.flags.append(f"every request failed: {first.result.error}")
    return summary


# --- a whole curve -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Capacity:
    level: Level | None
    """The largest level meeting the SLO for `share` of its requests; None when none did ("not reached")."""
    slo: Slo
    share: float

    def sentence(self) -> str:
        if self.level is None:
            return f"capacity: not reached: no level had {self.share:.0%} of requests within {self.slo.describe()}"
        what = (f"{self.level.concurrency} users at once" if self.level.concurrency is not None
                else f"{self.level.rate:g} requests/s")
        return f"capacity: {what} with {self.share:.0%} of requests within {self.slo.describe()}"

    def to_json(self) -> dict[str, Any]:
        return {"concurrency": self.level.concurrency if self.level else None,
                "rate": self.level.rate if self.level else None, "slo": self.slo.to_json(), "share": self.share}


def capacity(summaries: list[LevelSummary], slo: Slo, share: float) -> tuple[Capacity | None, Capacity | None]:
    """Capacity in users at once (closed-loop levels) and in requests/s (open-loop levels)."""
    out = []
    for closed in (True, False):
        levels = sorted((s for s in summaries if (s.level.concurrency is not None) == closed), key=lambda s: s.level.x)
        if not levels:
            out.append(None)
            continue
        passing = [s for s in levels if s.slo_share is not None and s.slo_share >= share]
        out.append(Capacity(passing[-1].level if passing else None, slo, share))
    return out[0], out[1]


def saturation(summaries: list[LevelSummary], parallelism: Parallelism | None, engine: str) -> str | None:
    """One line when output throughput stops growing between closed-loop levels while requests wait longer: where,
    and the engine setting that would change it."""
    levels = sorted((s for s in summaries if s.level.concurrency is not None and s.output_tps),
                    key=lambda s: s.level.x)
    for low, high in zip(levels, levels[1:]):
        grew = (high.output_tps or 0) / (low.output_tps or 1) - 1
        added = (high.level.concurrency or 0) / (low.level.concurrency or 1) - 1
        waited = (high.ttft_s.get("p50") or 0) > (low.ttft_s.get("p50") or 0) * 1.2
        if grew < SATURATION_GROWTH * added and waited:
            line = (f"throughput stops growing beyond {low.level.concurrency} in flight ({low.output_tps:.1f} → "
                    f"{high.output_tps:.1f} tok/s at {high.level.concurrency}) while requests wait longer "
                    f"(TTFT p50 {_ms(low.ttft_s['p50'])} → {_ms(high.ttft_s['p50'])})")
            if parallelism is not None:
                served = f"{parallelism.value}" if parallelism.value is not None else "an unknown number of"
                advice = "raise it to serve more" if parallelism.adjustable else \
                    "no setting changes it: an engine that batches requests serves more at once"
                line += (f": {engine} serves {served} requests at once ({parallelism.setting}"
                         f"{'; ' + parallelism.detail if parallelism.detail else ''}); {advice}")
            return line
    return None


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.3g} s"
