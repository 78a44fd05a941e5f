"""Running a model's load profile inside `jarvis run` (and `jarvis bench`), on the engine the runner brought up and
warmed: each level in turn, every request written to results.jsonl (grouped writes), a line per level, and at the end
a table, the capacity and, where throughput stops growing, why.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping

from .console import table
from .engine import Parallelism
from .http import close_shared
from .load import (
    Capacity,
    Level,
    LevelRun,
    LevelSummary,
    LoadProfile,
    LoadSample,
    capacity,
    run_level,
    saturation,
    summarize_level,
    workload,
)
from .results import Status, now_iso

#: Open-loop rates a sweep measures between the synchronous and the saturated request rate.
SWEEP_STEPS = 5
#: Requests in flight for the saturation level of a sweep when neither `max_concurrency` nor the engine says more
#: (`sweep_saturation`), and the bounds of twice the engine's parallelism.
SWEEP_SATURATION, SWEEP_SATURATION_MIN, SWEEP_SATURATION_MAX = 32, 4, 256
#: The status of a level cut short by Ctrl-C: its row holds the figures of what was answered before.
INTERRUPTED = "interrupted"


@dataclass
class LoadOutcome:
    levels: list[LevelSummary]
    users: Capacity | None
    rate: Capacity | None
    saturation: str | None

    def capacity_json(self) -> dict[str, Any] | None:
        chosen = self.users or self.rate
        return chosen.to_json() if chosen is not None else None


def run_profile(profile: LoadProfile, *, send: Callable[[Any], Any], prompts: list[list[tuple[str, str]]],
                max_tokens: int | None, timeout: float, address: str, engine: str,
                parallelism: Parallelism | None, write: Callable[[dict[str, Any]], None],
                identity: dict[str, Any], done: Mapping[tuple[Any, Any], LevelSummary], say: Callable[[str], None],
                send_async: Callable[[Any], Awaitable[Any]] | None = None) -> LoadOutcome:
    """Every level of `profile` (a sweep's levels chosen as it goes). A level in `done` ((concurrency, rate) → its
    summary, read back by --resume) is not measured again, nor is one measured twice in this run (a sweep's own level
    also listed); their summaries still count for the sweep, the capacity and the saturation line. `identity`
    (setup, model, engine) goes into every record. With `send_async` (the engine's `infer_async`) a level's requests
    are driven from one event loop, else each from a thread through `send`. Ctrl-C cancels the requests in flight (the
    engine's connections are closed), keeps what was measured and re-raises, so the runner stops the engine."""
    make = workload(prompts, profile, max_tokens=max_tokens, timeout=timeout)
    summaries: list[LevelSummary] = []
    known: dict[tuple[Any, Any], LevelSummary] = dict(done)
    if parallelism is not None:
        shown = parallelism.value if parallelism.value is not None else "unknown"
        say(f"  load: {engine} serves {shown} requests at once ({parallelism.setting})"
            + (f"; {parallelism.detail}" if parallelism.detail else ""))

    def write_level(summary: LevelSummary, wall_s: float, **status: str) -> None:
        write({"type": "load_level", **identity, **summary.to_json(), **status, "wall_s": wall_s,
               "parallelism": _parallelism_json(parallelism), "profile": profile.to_json(), "time": now_iso()})

    def one(level: Level) -> LevelSummary:
        key = (level.concurrency, level.rate)
        if key in known:
            if all(s is not known[key] for s in summaries):
                summaries.append(known[key])
                say(f"  load {level.describe()}: measured before (--resume)")
            return known[key]
        stop = threading.Event()

        t0, cpu0 = time.perf_counter_ns(), time.process_time()  # offsets in the records are from t0
        seen: list[LoadSample] = []

        def on_sample(sample: LoadSample) -> None:
            seen.append(sample)
            write({"type": "load_sample", **identity, "level": level.to_json(), **sample.to_record(t0),
                   "time": now_iso()})

        try:
            options = dict(requests=profile.requests_for(level), duration=profile.duration, warmup=profile.warmup,
                           arrival=profile.arrival, seed=profile.seed, max_concurrency=profile.max_concurrency,
                           on_sample=on_sample, stop=stop)
            if send_async is not None:
                from .load_async import run_level_async

                run = run_level_async(send_async, make, level, **options)
            else:
                run = run_level(send, make, level, **options)
        except KeyboardInterrupt:
            stop.set()
            close_shared(address)  # the requests in flight end now, not after their timeout
            say(f"  load {level.describe()}: interrupted; the requests in flight were cancelled")
            answered = sorted(seen, key=lambda sample: sample.index)
            if any(not sample.warmup for sample in answered):  # the level's row, from what was measured
                partial = LevelRun(level, answered, t0, (time.perf_counter_ns() - t0) / 1e9, time.process_time() - cpu0)
                write_level(summarize_level(partial, profile.slo), partial.wall_s, status=INTERRUPTED,
                            reason=f"Ctrl-C after {len(answered)} answers (the figures are theirs); jarvis run "
                                   f"--resume measures the level again")
            raise
        summary = known[key] = summarize_level(run, profile.slo)
        summaries.append(summary)
        # A level whose every request failed is an error row (its figures are empty), never an "ok" level at zero.
        status = {"status": Status.ERROR.value, "reason": summary.flags[-1]} if summary.all_failed else {}
        write_level(summary, run.wall_s, **status)
        say("  " + level_line(summary))
        for flag in summary.flags:
            say(f"    ! {flag}")
        return summary

    for level in profile.levels():
        one(level)
    if profile.sweep:
        _sweep(profile, one, parallelism)
    summaries.sort(key=lambda s: (s.level.rate is not None, s.level.x))  # a sweep measures 1, saturation, rates
    outcome = LoadOutcome(summaries, *capacity(summaries, profile.slo, profile.share) if profile.slo else (None, None),
                          saturation=saturation(summaries, parallelism, engine))
    if summaries:
        say(level_table(summaries))
    for line in (outcome.users, outcome.rate):
        if line is not None:
            say(f"  {line.sentence()}")
    if outcome.saturation:
        say(f"  {outcome.saturation}")
    lines = [c.sentence() for c in (outcome.users, outcome.rate) if c is not None] + \
        ([outcome.saturation] if outcome.saturation else [])
    write({"type": "load_capacity", **identity, "users": outcome.users.to_json() if outcome.users else None,
           "rate": outcome.rate.to_json() if outcome.rate else None, "saturation": outcome.saturation, "lines": lines,
           "parallelism": _parallelism_json(parallelism), "time": now_iso()})
    return outcome


def _sweep(profile: LoadProfile, one: Callable[[Level], LevelSummary], parallelism: Parallelism | None) -> None:
    """The automatic profile: synchronous (1 in flight) and saturated throughput, then open-loop rates between them;
    it stops once two levels in a row miss the SLO."""
    sync = one(Level(concurrency=1))
    saturated = one(Level(concurrency=sweep_saturation(profile, parallelism)))
    low, high = sync.request_rate, saturated.request_rate
    if not low or not high or high <= low:
        return
    failed = 0
    for step in range(1, SWEEP_STEPS + 1):
        rate = round(low + (high - low) * step / (SWEEP_STEPS + 1), 3)
        summary = one(Level(rate=rate))
        missed = profile.slo is not None and (summary.slo_share or 0) < profile.share
        failed = failed + 1 if missed else 0
        if failed >= 2:
            return


def sweep_saturation(profile: LoadProfile, parallelism: Parallelism | None) -> int:
    """Requests in flight for a sweep's saturation level: `max_concurrency` when set; else twice what the engine
    serves at once, when it says (every slot busy, as many waiting: throughput can grow no further), within
    [SWEEP_SATURATION_MIN, SWEEP_SATURATION_MAX]; else SWEEP_SATURATION."""
    if profile.max_concurrency:
        return profile.max_concurrency
    if parallelism is not None and parallelism.value:
        return max(SWEEP_SATURATION_MIN, min(SWEEP_SATURATION_MAX, 2 * parallelism.value))
    return SWEEP_SATURATION


def _parallelism_json(parallelism: Parallelism | None) -> dict[str, Any] | None:
    if parallelism is None:
        return None
    return {"setting": parallelism.setting, "value": parallelism.value, "detail": parallelism.detail,
            "adjustable": parallelism.adjustable}


def level_line(s: LevelSummary) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f} ms"

    return (f"load {s.level.describe()}: {s.requests_ok} ok, {s.requests_error} errors, "
            f"{(s.output_tps or 0):.1f} tok/s, {(s.request_rate or 0):.2f} req/s, TTFT p50 {ms(s.ttft_s['p50'])} "
            f"p99 {ms(s.ttft_s['p99'])}, client CPU {s.client_cpu:.0%}")


def level_table(summaries: list[LevelSummary]) -> str:
    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f}"

    def lag(x: float | None) -> str:  # a fraction of a millisecond, usually
        return "-" if x is None else f"{x * 1000:.1f}"

    rows = [[s.level.describe(), f"{s.requests_ok}/{s.requests_ok + s.requests_error}",
             f"{s.output_tps:.1f}" if s.output_tps is not None else "-",
             f"{s.request_rate:.2f}" if s.request_rate is not None else "-",
             f"{s.goodput_rps:.2f}" if s.goodput_rps is not None else "-",
             ms(s.ttft_s["p50"]), ms(s.ttft_s["p90"]), ms(s.ttft_s["p99"]), ms(s.itl_s["p50"]), ms(s.e2e_s["p90"]),
             ms(s.queue_wait_s["p99"]), lag(s.send_lag_s["p99"]), f"{s.client_cpu:.0%}"] for s in summaries]
    return table(["level", "ok", "out tok/s", "req/s", "goodput", "TTFT p50", "p90", "p99", "ITL p50", "E2E p90",
                  "wait p99", "send lag p99", "client CPU"], rows, indent="    ")
