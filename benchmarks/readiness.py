"""Item 4, readiness lag: a stand-in that becomes ready at a random moment, and how long Jarvis takes to notice.

The stand-in runs in this process with `ready_after` drawn uniformly from 0.2–1.0 s (seeded), in two ways of
loading: `refuse` (the port refuses connections until the model is loaded, like `vllm serve`) and `503` (the server
answers, `/health` says 503 and `/v1/models` lists nothing until loaded). Its `ready` event is replaced by one that
stamps `perf_counter_ns()` the moment it is set: the true ready time.

Jarvis waits with `processes.wait_until_ready`, started the moment the stand-in starts, with the probes the plugins
use:
- core defaults: `openai_api.serves(client, name)` (GET /v1/models lists the name), intervals 25 ms growing to 50 ms
  (`wait_until_ready`'s defaults, as the llama.cpp and Ollama plugins call it);
- vLLM plugin: `jarvis_vllm.common.Readiness` (GET /health until 200, then `serves`) with the intervals
  `jarvis_vllm.common.wait_ready` passes, 50 ms growing to 250 ms;
- vLLM probe with the core's default intervals: what the vLLM plugin would do if `wait_ready` stopped passing its own
  intervals (the proposal in RESULTS.md).

lag = the moment `wait_until_ready` returned − the true ready time. probes = calls of the probe function (each one
HTTP request, or one refused connection).
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any, Callable

from .common import MODEL, Outcome, fmt_ms, median, percentile


class StampedEvent(threading.Event):
    at: int | None = None

    def set(self) -> None:
        if self.at is None:
            self.at = time.perf_counter_ns()
        super().set()


def _configs() -> list[tuple[str, Callable[[Any], Callable[[], bool]], dict[str, float]]]:
    from jarvis_core.openai_api import serves

    configs: list[tuple[str, Callable[[Any], Callable[[], bool]], dict[str, float]]] = [
        ("core defaults (serves)", lambda client: lambda: serves(client, MODEL), {}),
    ]
    try:
        from jarvis_vllm.common import Readiness

        # The plugin's wait_ready passes no intervals of its own: the core's defaults apply.
        configs.append(("vLLM plugin (Readiness)", lambda client: Readiness(client, MODEL), {}))
    except ImportError:
        pass
    return configs


def _trial(mode: str, ready_after: float, make_probe: Callable[[Any], Callable[[], bool]],
           intervals: dict[str, float]) -> tuple[float, int]:
    from jarvis_core.http import make_client
    from jarvis_core.processes import wait_until_ready

    from tests.standins.openai_server import OpenAIStandin

    server = OpenAIStandin([MODEL], ready_after=ready_after, ready_mode=mode)
    server.ready = StampedEvent()
    count = 0
    with make_client("", timeout=5.0, connect_timeout=2.0) as client:
        try:
            server.start()
            client.base_url = server.url
            probe = make_probe(client)

            def counted() -> bool:
                nonlocal count
                count += 1
                return probe()

            wait_until_ready(counted, timeout=10.0, what="stand-in", **intervals)
            noticed = time.perf_counter_ns()
        finally:
            server.stop()
    assert server.ready.at is not None
    return (noticed - server.ready.at) / 1e9, count


def run(quick: bool = False) -> Outcome:
    trials = 5 if quick else 15
    rng = random.Random(8)
    out = Outcome()
    deadline = time.monotonic() + (60 if quick else 240)
    for mode in ("refuse", "503"):
        for name, make_probe, intervals in _configs():
            lags, probes, waited = [], [], 0.0
            for _ in range(trials):
                if time.monotonic() > deadline:
                    break
                ready_after = rng.uniform(0.2, 1.0)
                lag, count = _trial(mode, ready_after, make_probe, intervals)
                lags.append(lag)
                probes.append(count)
                waited += ready_after + lag
            p50 = median(lags)
            out.row(f"[{mode}, {name}] lag p50 / p99 / max ({len(lags)} trials)",
                    f"{fmt_ms(p50, 1)} / {fmt_ms(percentile(lags, 99), 1)} / {fmt_ms(max(lags), 1)}",
                    "p50 < 50 ms", p50 < 0.050)
            out.row(f"[{mode}, {name}] probes per trial (mean), probes per second waited",
                    f"{sum(probes) / len(probes):.1f}, {sum(probes) / waited:.1f}/s")
            out.raw[f"{mode}/{name}"] = {"lags_s": lags, "probes": probes, "p50_s": p50,
                                         "probes_per_s": sum(probes) / waited, "intervals": intervals}
    return out
