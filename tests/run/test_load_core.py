"""The load generator against a stand-in whose timing is scripted (tests/standins/load_server.py, one event loop for
every stream): throughput against the known maximum, arrival schedules, queue wait kept apart from TTFT, SLO,
goodput and capacity on hand-computed cases, and a level whose requests all fail."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from jarvis_core.api import ChatRequest, InferResult, Message, Parallelism, close_shared, openai_chat, shared_client
from jarvis_core.aio import openai_chat_async
from jarvis_core.load import (
    Level,
    LevelRun,
    LoadProfile,
    LoadSample,
    Slo,
    arrival_offsets,
    capacity,
    run_level,
    saturation,
    summarize_level,
    synthetic_prompt,
    workload,
)
from jarvis_core.load_async import run_level_async

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def load_server():
    """Start the stand-in with the given timing; yields (url, stats()) and stops it afterwards."""
    started = []

    def start(**timing) -> str:
        args = [f"--{k}={v}" for k, v in timing.items()]
        proc = subprocess.Popen([sys.executable, "-m", "tests.standins.load_server", *args], cwd=REPO,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        started.append(proc)
        port = json.loads(proc.stdout.readline())["port"]
        return f"http://127.0.0.1:{port}"

    yield start
    for proc in started:
        proc.stdin.close()
        proc.wait(timeout=10)
    close_shared()


class Generator:
    """One of the two load generators: the threaded one (`run_level`, engines with only `infer`) and the event loop
    (`run_level_async`, engines with `infer_async`); the level tests run on both."""

    def __init__(self, kind: str) -> None:
        self.kind = kind

    def run(self, send, *args, **kwargs) -> LevelRun:
        return (run_level_async if self.kind == "event loop" else run_level)(send, *args, **kwargs)

    def sender(self, url: str, **options):
        if self.kind == "event loop":
            return lambda request: openai_chat_async(url, "load-model", request, **options)
        return lambda request: openai_chat(shared_client(url), "load-model", request, **options)

    def answering(self, make_result):
        """A sender that answers with `make_result(request)` (or raises what it raises), without a server."""
        if self.kind == "event loop":
            async def send(request):
                return make_result(request)
            return send
        return make_result


@pytest.fixture(params=["threads", "event loop"])
def gen(request) -> Generator:
    return Generator(request.param)


def requests_for(profile: LoadProfile = LoadProfile()):
    return workload([[("user", "hello")]], profile, max_tokens=None, timeout=30)


def test_closed_loop_reaches_the_known_maximum_throughput(load_server, gen):
    # Answers of 0.28 s, and a second try of a level that falls short: a shared CI machine now and then stalls one
    # level (CI measured 69 % and 85 % at 8 in flight on the threaded generator, in runs whose every other level
    # was on target; never reproduced alone). A generator that cannot keep N in flight falls short both times.
    ttft, tokens, gap = 0.1, 10, 0.02
    url = load_server(ttft=ttft, tokens=tokens, gap=gap)
    per_request = ttft + (tokens - 1) * gap
    for n in (1, 8):
        best = n * tokens / per_request
        shares = []
        for _ in range(2):
            run = gen.run(gen.sender(url), requests_for(), Level(concurrency=n), requests=6 * n, duration=None,
                          warmup=n)
            summary = summarize_level(run, None)
            assert summary.requests_ok == 6 * n and summary.requests_error == 0
            assert summary.window == "steady"
            shares.append(summary.output_tps / best)
            if shares[-1] >= 0.9:
                break
        assert 0.9 <= shares[-1] and max(shares) <= 1.05, (n, shares)
        assert summary.ttft_s["p50"] == pytest.approx(ttft, abs=0.015)
        assert summary.itl_s["p50"] == pytest.approx(gap, abs=0.005)


def test_closed_loop_users_start_one_after_another_over_one_answer(load_server, gen):
    """The ramp-up: one request alone, then the N users' first requests spread over its answer time (not a herd that
    would end, and resend, together every round); all of them are warm-up, and the window starts after them."""
    url = load_server(ttft=0.2, tokens=2, gap=0.01)
    n = 4
    run = gen.run(gen.sender(url), requests_for(), Level(concurrency=n), requests=8, duration=None, warmup=0)
    by_index = {s.index: s for s in run.samples}
    assert sorted(by_index) == list(range(n + 1 + 8))
    alone = by_index[0].result
    ramp = [by_index[i].result.t_send for i in range(1, n + 1)]
    assert all(t > alone.t_end for t in ramp), "the first request is answered before any user starts"
    assert ramp == sorted(ramp) and len(set(ramp)) == n, "the users start one after another"
    answer = alone.t_end - run.t0
    assert ramp[-1] - ramp[0] >= 0.5 * answer * (n - 1) / n, "spread over one answer's time, not sent at once"
    assert [s.warmup for s in run.samples] == [True] * (n + 1) + [False] * 8
    summary = summarize_level(run, None)
    assert summary.requests_ok == 8 and summary.window == "steady"
    measured_sends = [s.result.t_send for s in run.samples if not s.warmup]
    assert summary.window_s == pytest.approx((max(measured_sends) - max(min(measured_sends), ramp[-1])) / 1e9)


def test_when_the_lone_request_fails_the_users_start_at_once(gen):
    """A first request that failed (here after 1 s, as a timeout would) gives no answer time to spread over."""
    import time

    calls = []

    def answer(request):
        calls.append(request)
        if len(calls) == 1:
            time.sleep(1.0)
            return InferResult(stream=True, t_send=time.perf_counter_ns(), error="timed out after 1 s")
        now = time.perf_counter_ns()
        return InferResult(stream=True, t_send=now, t_first_token=now + 1, t_last_token=now + 2, t_end=now + 2,
                           chunk_times=[now + 1, now + 2], output_tokens=2)

    run = gen.run(gen.answering(answer), requests_for(), Level(concurrency=4), requests=4, duration=None, warmup=0)
    first_sends = sorted(s.t_scheduled for s in run.samples if 1 <= s.index <= 4)
    assert len(first_sends) == 4 and (first_sends[-1] - first_sends[0]) / 1e9 < 0.5, "not spread over the 1 s failure"


def test_a_closed_loop_duration_counts_from_the_end_of_the_ramp_up(load_server, gen):
    """A duration shorter than the ramp-up (0.2 s alone, then 0.15 s of starts) still measures: it begins when the
    last user has started."""
    url = load_server(ttft=0.2, tokens=2, gap=0.01)
    run = gen.run(gen.sender(url), requests_for(), Level(concurrency=4), requests=None, duration=0.3, warmup=0)
    summary = summarize_level(run, None)
    assert summary.requests_ok >= 4 and summary.requests_error == 0
    last_user_start = max(s.result.t_send for s in run.samples if s.index <= 4)
    assert all(s.result.t_send > last_user_start for s in run.samples if not s.warmup)


def test_poisson_arrivals_have_the_right_mean_and_spread_and_are_seeded():
    offsets = arrival_offsets(10.0, 4000, arrival="poisson", seed=7)
    gaps = [b - a for a, b in zip(offsets, offsets[1:])]
    assert statistics.mean(gaps) == pytest.approx(0.1, rel=0.05)
    assert statistics.stdev(gaps) / statistics.mean(gaps) == pytest.approx(1.0, rel=0.1)  # exponential: CV 1
    assert arrival_offsets(10.0, 50, arrival="poisson", seed=7) == offsets[:50]
    assert arrival_offsets(10.0, 50, arrival="poisson", seed=8) != offsets[:50]
    assert arrival_offsets(4.0, 3, arrival="constant", seed=7) == [0.0, 0.25, 0.5]


def test_queue_wait_is_reported_apart_and_never_hidden_in_ttft(load_server, gen):
    url = load_server(ttft=0.05, tokens=3, gap=0.01)
    # 40 requests/s against one request in flight at a time (0.07 s each): requests queue in the client.
    run = gen.run(gen.sender(url), requests_for(), Level(rate=40), requests=12, duration=None, warmup=0,
                    arrival="constant", max_concurrency=1)
    summary = summarize_level(run, None)
    assert summary.queue_wait_s["p90"] > 0.1, "later requests waited for the one slot"
    assert summary.ttft_s["p90"] == pytest.approx(0.05, abs=0.02), "TTFT from t_send excludes the wait"
    assert summary.ttft_sched_s["p90"] > summary.ttft_s["p90"] + 0.1, "TTFT from the schedule includes it"
    assert summary.flags and "fell behind" in summary.flags[0]


def test_open_loop_sends_on_schedule(load_server, gen):
    url = load_server(ttft=0.02, tokens=2, gap=0.005)
    run = gen.run(gen.sender(url), requests_for(), Level(rate=50), requests=40, duration=None, warmup=2, seed=3)
    summary = summarize_level(run, None)
    assert summary.requests_ok == 40 and all(s.queue_wait_s >= 0 for s in run.samples)
    scheduled = sorted(s.t_scheduled for s in run.samples)
    expected = arrival_offsets(50, 42, arrival="poisson", seed=3)
    assert [round((t - scheduled[0]) / 1e9, 6) for t in scheduled] == [round(o, 6) for o in expected]


def test_a_level_whose_requests_all_fail_is_an_error_row_not_a_crash(gen):
    def broken(request):
        return InferResult(stream=True, t_send=1, error="HTTP 500: engine exploded")

    run = gen.run(gen.answering(broken), requests_for(), Level(concurrency=4), requests=8, duration=None, warmup=1)
    summary = summarize_level(run, Slo(ttft=0.5))
    assert (summary.requests_ok, summary.requests_error) == (0, 8)
    assert summary.output_tps in (None, 0.0) and summary.slo_share == 0.0
    assert any("every request failed: HTTP 500: engine exploded" in f for f in summary.flags)


def test_a_sender_that_raises_fails_its_request_not_the_level(gen):
    """A plugin's bug (or an engine error raised instead of returned) is that request's error; the level goes on."""
    calls = []

    def flaky(request):
        calls.append(request)
        if len(calls) % 2:
            raise RuntimeError("plugin bug: boom")
        return InferResult(stream=True, t_send=1, t_first_token=2, t_last_token=3, t_end=3, chunk_times=[2, 3],
                           output_tokens=2)

    run = gen.run(gen.answering(flaky), requests_for(), Level(concurrency=2), requests=6, duration=None, warmup=0)
    assert len(run.samples) == 3 + 6  # the ramp-up's three (one alone, then each user's first), then the measured
    assert sorted(s.result.error or "" for s in run.samples) == [""] * 4 + ["plugin bug: boom"] * 5


def test_stop_ends_a_level_and_drops_what_was_in_flight(load_server, gen):
    url = load_server(ttft=0.3, tokens=2, gap=0.01)
    stop = threading.Event()
    timer = threading.Timer(0.5, stop.set)
    timer.start()
    run = gen.run(gen.sender(url), requests_for(), Level(concurrency=3), requests=1000, duration=None, warmup=0,
                    stop=stop)
    assert 0 < len(run.samples) < 20 and run.wall_s < 5


# --- hand-computed figures -------------------------------------------------------------------------------------------


def sample(index: int, *, send: float, ttft: float, n: int, itl: float, scheduled: float | None = None,
           warmup: bool = False) -> LoadSample:
    s = int(send * 1e9)
    first = s + int(ttft * 1e9)
    chunks = [first + int(i * itl * 1e9) for i in range(n)]
    result = InferResult(stream=True, t_send=s, t_first_byte=first, t_first_token=first, t_last_token=chunks[-1],
                         t_end=chunks[-1], chunk_times=chunks, output_tokens=n)
    t_sched = int((scheduled if scheduled is not None else send) * 1e9)
    return LoadSample(index, warmup, t_sched, t_sched, result)


def test_slo_goodput_and_capacity_by_hand():
    slo = Slo(ttft=0.5, itl=0.05)
    # Sent at 0, 1, 2, 3 s (the one at 0 a warm-up): the window is 1 s → 3 s, two seconds long.
    samples = [sample(0, send=0, ttft=0.1, n=2, itl=0.01, warmup=True),
               sample(1, send=1, ttft=0.2, n=3, itl=0.02),   # meets the SLO, done at 1.24 s
               sample(2, send=2, ttft=0.9, n=3, itl=0.02),   # TTFT too slow
               sample(3, send=3, ttft=0.1, n=3, itl=0.08)]   # ITL too slow; answers after the window
    run = LevelRun(Level(concurrency=2), samples, t0=0, wall_s=4.0, cpu_s=0.4)
    summary = summarize_level(run, slo)
    assert summary.window == "steady" and summary.window_s == pytest.approx(2.0)
    assert summary.slo_share == pytest.approx(1 / 3)
    assert summary.goodput_rps == pytest.approx(0.5)       # one good request done inside 2 s
    assert summary.request_rate == pytest.approx(1.0)      # requests 1 and 2 done inside
    assert summary.output_tps == pytest.approx(3.0)        # their 3 + 3 tokens in 2 s
    assert summary.client_cpu == pytest.approx(0.1)

    # A warm-up request sent after the first measured one (a ramp-up still going on): the window starts after it.
    late_warmup = samples + [sample(4, send=1.5, ttft=0.1, n=2, itl=0.01, warmup=True)]
    summary = summarize_level(LevelRun(Level(concurrency=2), late_warmup, t0=0, wall_s=4.0, cpu_s=0.4), slo)
    assert summary.window_s == pytest.approx(1.5)

    levels = []
    for n, share in ((1, 1.0), (2, 0.95), (4, 0.92), (8, 0.5)):
        s = summarize_level(LevelRun(Level(concurrency=n), [], 0, 1.0, 0.0), None)
        s.slo_share = share
        levels.append(s)
    users, rate = capacity(levels, slo, 0.9)
    assert users.level == Level(concurrency=4) and rate is None
    assert users.sentence() == ("capacity: 4 users at once with 90% of requests within TTFT ≤ 500 ms, "
                                "ITL ≤ 50 ms (≥ 20 tok/s each)")
    for s in levels:
        s.slo_share = 0.2
    assert capacity(levels, slo, 0.9)[0].sentence().startswith("capacity: not reached")


def test_an_open_loop_window_starts_once_the_requests_in_flight_have_built_up():
    # 4 req/s, every answer 2 s long (5 tokens, the first at 1 s): in flight rises from 0 to 8 over the first 2 s.
    # Counted from the first measured send, that build-up made a server answering 4 req/s look like 3.2 req/s.
    rate, e2e = 4.0, 2.0
    samples = [sample(i, send=i / rate, ttft=1.0, n=5, itl=0.25, warmup=i < 2) for i in range(40)]
    summary = summarize_level(LevelRun(Level(rate=rate), samples, t0=0, wall_s=12.0, cpu_s=0.1), None)
    assert summary.window == "steady"
    assert summary.window_s == pytest.approx(39 / rate - (2 / rate + e2e))   # from 2 s after the last warm-up send
    assert summary.request_rate == pytest.approx(rate, rel=0.05)
    assert summary.output_tps == pytest.approx(rate * 5, rel=0.05)
    # Closed loop keeps its window: its ramp-up (the users started over one answer's time) is the warm-up.
    closed = summarize_level(LevelRun(Level(concurrency=8), samples, t0=0, wall_s=12.0, cpu_s=0.1), None)
    assert closed.window_s == pytest.approx((39 - 2) / rate)
    # Answers longer than the whole level: no steady state to measure, the window runs to the last answer.
    slow = [sample(i, send=i / rate, ttft=15.0, n=5, itl=0.25, warmup=i < 2) for i in range(40)]
    assert summarize_level(LevelRun(Level(rate=rate), slow, t0=0, wall_s=30.0, cpu_s=0.1), None).window == "with drain"


def _open_level(due: list[float], started: list[float], rate: float) -> LevelRun:
    samples = [sample(i, send=t, ttft=0.05, n=2, itl=0.01, scheduled=d) for i, (d, t) in enumerate(zip(due, started))]
    for s, t in zip(samples, started):
        s.t_start = int(t * 1e9)
    return LevelRun(Level(rate=rate), samples, t0=0, wall_s=max(started) + 1, cpu_s=0.1)


def test_falling_behind_is_judged_against_the_schedule_drawn_not_the_nominal_rate():
    # A Poisson schedule at 1 req/s that happened to draw 10 requests in 6 s (1.5 req/s), sent on time: not behind.
    due = [i * 6 / 9 for i in range(10)]
    summary = summarize_level(_open_level(due, due, rate=1.0), None)
    assert summary.achieved_rate == pytest.approx(1.5) and summary.flags == []
    # One that drew 10 requests in 18 s (0.5 req/s), sent on time: not behind either, though 0.5 < 0.95 × 1.
    slow = [i * 2 for i in range(10)]
    assert summarize_level(_open_level(slow, slow, rate=1.0), None).flags == []
    # The 1.5 req/s schedule sent at 1.2 req/s (each send later than the last): behind, whatever the nominal rate.
    late = [i * 7.5 / 9 for i in range(10)]
    flags = summarize_level(_open_level(due, late, rate=1.0), None).flags
    assert flags == ["the client sent 1.20 req/s of 1.50 scheduled: it fell behind (raise max_concurrency, or the "
                     "client is the limit)"]


def test_a_client_using_most_of_a_core_is_flagged():
    busy = LevelRun(Level(concurrency=2), [sample(0, send=0, ttft=0.1, n=2, itl=0.01)], t0=0, wall_s=2.0, cpu_s=1.7)
    assert summarize_level(busy, None).flags == [
        "the client used 85% of a core: the load generator may be the bottleneck"]
    calm = LevelRun(Level(concurrency=2), [sample(0, send=0, ttft=0.1, n=2, itl=0.01)], t0=0, wall_s=2.0, cpu_s=1.5)
    assert summarize_level(calm, None).flags == []


def test_saturation_names_the_setting_that_limits_it():
    levels = []
    for n, tps, ttft in ((1, 50.0, 0.1), (2, 51.0, 0.3), (4, 51.5, 0.7)):
        s = summarize_level(LevelRun(Level(concurrency=n), [], 0, 1.0, 0.0), None)
        s.output_tps, s.ttft_s = tps, {"p50": ttft, "p90": ttft, "p99": ttft}
        levels.append(s)
    line = saturation(levels, Parallelism("llama-cpp-python's server (one request at a time)", 1, adjustable=False),
                      "llamacpp")
    assert line.startswith("throughput stops growing beyond 1 in flight")
    assert "llamacpp serves 1 requests at once (llama-cpp-python's server" in line
    assert line.endswith("no setting changes it: an engine that batches requests serves more at once")
    line = saturation(levels, Parallelism("OLLAMA_NUM_PARALLEL (engines.ollama.num_parallel)", 1), "ollama")
    assert line.endswith("raise it to serve more")
    levels[1].output_tps, levels[2].output_tps = 100.0, 200.0
    assert saturation(levels, None, "vllm") is None

    # Judged against the growth in requests in flight: 1 → 4 is three times more, so 20 % more throughput is
    # saturated (a tenth of what perfect scaling gives is 30 %), where 1 → 2 with 20 % more is not.
    one, two, four = levels
    four.output_tps = two.output_tps = 60.0
    assert saturation([one, four], None, "llamacpp").startswith("throughput stops growing beyond 1 in flight")
    assert saturation([one, two], None, "llamacpp") is None


def test_synthetic_prompts_are_about_the_asked_length_and_never_share_a_prefix():
    a, b = synthetic_prompt(1, 200, seed=42), synthetic_prompt(2, 200, seed=42)
    assert a.split(":")[0] != b.split(":")[0]
    assert 120 <= len(a.split()) <= 170
    assert synthetic_prompt(1, 200, seed=42) == a
    made = workload([], LoadProfile(prompt_tokens=50, output_tokens=16), max_tokens=None, timeout=5)(3)
    assert made.stream and made.exact_tokens and made.max_tokens == 16
    assert made.messages[0].content.startswith("Request 3:")
    assert isinstance(made, ChatRequest) and isinstance(made.messages[0], Message)


def test_a_pinned_output_length_and_an_early_stop(load_server, gen):
    url = load_server(ttft=0.01, tokens=5, gap=0.001)
    make = workload([], LoadProfile(prompt_tokens=20, output_tokens=12), max_tokens=None, timeout=5)
    pinning = gen.sender(url, extra={"ignore_eos": True})  # what the vLLM plugin sends for exact_tokens

    run = gen.run(pinning, make, Level(concurrency=2), requests=4, duration=None, warmup=0)
    assert [s.result.output_tokens for s in run.samples] == [12] * 7 and not any(s.stopped_early for s in run.samples)
    run = gen.run(gen.sender(url), make, Level(concurrency=2), requests=4, duration=None, warmup=0)
    assert all(s.stopped_early for s in run.samples)  # an engine that cannot pin stops at its own end (5 tokens)
    assert "4 answers stopped before the pinned output length" in summarize_level(run, None).flags[0]
