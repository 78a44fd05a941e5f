"""Item 3, concurrency: N = 1, 8, 64 streams against a stand-in with a fixed per-token delay.

The stand-in runs in a child process and emits each answer on a fixed schedule: the role chunk when the request is
read, then TOKENS tokens DELAY apart (first token DELAY after the request), stamped as it writes them. Each client
also runs in a fresh child process (benchmarks/concurrency_client.py), so its CPU time and peak memory are its own.
Every stream makes REQUESTS requests back to back.

Known maximum = N / DELAY tokens/s: every stream always busy, the next request answered the instant the previous one
ended. Achieved = tokens received / (last token's arrival − first request's t_send). Also reported:
- client CPU = process CPU time / wall time (100 % = one core), peak RSS (the process's VmHWM);
- send lag = e_received − t_send: how long after the caller stamped t_send the server had the request (both
  CLOCK_MONOTONIC, one clock across processes), for each stream's first request (all N start together) and for the
  later ones; token lag = chunk arrival − the server's emission stamp;
- server lateness = last token's emission − (e_received + TOKENS × DELAY): the stand-in's own slip from its schedule,
  so a shortfall the server caused is not blamed on the client;
- where the time between a stream's requests goes (threaded clients): client gap = the next request's "written"
  (httpcore's `http11.send_request_body.complete` trace event) − this request's t_end (closing the response,
  building the next request, opening a connection when the pool has none, writing it), and server intake =
  e_received − written (the stand-in accepting, starting a handler thread, parsing). For the async clients the trace
  callback itself waits for the event loop, so their "written" stamps are late and not shown;
- from httpcore's pool (instrumented in the client process): how many times it ran its assignment pass, how many
  times a request was handed a connection another request had already taken (`ConnectionNotAvailable`, then queued
  again), how many connections it opened (the async pools are warmed first, so only the sync ones open any), and
  (sync pool) how many times it polled an idle socket for readability: `has_expired()` does one `poll()` per idle
  connection in every assignment pass, each a GIL release and re-acquisition among N threads.

Clients at N = 64 besides Jarvis (see concurrency_client.py): httpx 0.28's and httpx2's `AsyncClient` (the issue's
265 ms delivery delay).
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

from .common import PYTHON, REPO, Outcome, StandinProcess, median, percentile

DELAY = 0.020
TOKENS = 100
REQUESTS = 3
MAX_RSS_MB = 150


def _client(url: str, n: int, k: int, tokens: int, kind: str) -> dict[str, Any]:
    proc = subprocess.run([PYTHON, "-m", "benchmarks.concurrency_client", url, str(n), str(k), str(tokens), kind],
                          cwd=REPO, capture_output=True, text=True, timeout=300)
    if proc.returncode:
        raise RuntimeError(f"concurrency client {kind} N={n} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _analyse(run: dict[str, Any], records: list[dict[str, Any]], n: int, tokens: int) -> dict[str, Any]:
    by_prompt = {r["prompt"]: r["emissions"] for r in records}
    results = run["results"]
    errors = [r for r in results if r["error"] or len(r["chunks"]) != tokens]
    first_send = min(r["t_send"] for r in results)
    last_token = max(r["chunks"][-1] for r in results if r["chunks"])
    received = sum(len(r["chunks"]) for r in results)
    wall = (last_token - first_send) / 1e9
    lag_first, lag_later, token_lag, late = [], [], [], []
    intake, gap = [], []
    by_stream = {r["prompt"]: r for r in results}
    for r in results:
        ems = by_prompt.get(r["prompt"])
        if not ems:
            continue
        got = ems[0][1]
        if r.get("written"):
            intake.append((got - r["written"]) / 1e9)
        stream, rep = r["prompt"].split("-r")
        following = by_stream.get(f"{stream}-r{int(rep) + 1}")
        if following is not None and r.get("t_end") and following.get("written"):
            gap.append((following["written"] - r["t_end"]) / 1e9)
        (lag_first if r["prompt"].endswith("-r0") else lag_later).append((got - r["t_send"]) / 1e9)
        emitted = [t for kind, t in ems if kind == "token"]
        token_lag += [(a - e) / 1e9 for a, e in zip(r["chunks"], emitted)]
        if emitted:
            late.append((emitted[-1] - got) / 1e9 - tokens * DELAY)
    achieved = received / wall
    known_max = n / DELAY
    return {"n": n, "requests": len(results), "errors": len(errors), "tokens": received, "wall_s": wall,
            "achieved_tps": achieved, "max_tps": known_max, "ratio": achieved / known_max,
            "cpu_pct": 100 * run["cpu_s"] / run["wall_s"],
            "peak_rss_mb": max(run["peak_rss_mb"], run["sampled_rss_mb"]),
            "send_lag_first_p50_s": median(lag_first), "send_lag_first_p99_s": percentile(lag_first, 99),
            "send_lag_later_p50_s": median(lag_later) if lag_later else None,
            "send_lag_later_p99_s": percentile(lag_later, 99) if lag_later else None,
            "token_lag_p50_s": median(token_lag), "token_lag_p99_s": percentile(token_lag, 99),
            "server_late_p50_s": median(late), "server_late_p99_s": percentile(late, 99),
            "gap_mean_s": sum(gap) / len(gap) if gap else None, "gap_p99_s": percentile(gap, 99) if gap else None,
            "intake_mean_s": sum(intake) / len(intake) if intake else None,
            "intake_p99_s": percentile(intake, 99) if intake else None,
            "assign_passes": run.get("assign_passes"), "not_available": run.get("connection_not_available"),
            "connections_opened": run.get("connections_opened"), "readability_polls": run.get("readability_polls"),
            "loop_lag_max_ms": run.get("loop_lag_max_ms")}


def run(quick: bool = False, compare: bool = True) -> Outcome:
    k = 2 if quick else REQUESTS
    tokens = 25 if quick else TOKENS
    plan = [("jarvis", 1), ("jarvis", 8), ("jarvis", 64)]
    if compare:
        plan += [("httpx-async", 64), ("httpx2-async", 64)]
    out = Outcome()
    rows = []
    with StandinProcess(token_delay=DELAY, output_tokens=tokens, max_life_s=900) as server:
        for kind, n in plan:
            server.clear()
            run_ = _client(server.url, n, k, tokens, kind)
            rows.append((kind, _analyse(run_, server.records(), n, tokens)))
    for kind, a in rows:
        tag = f"[{kind} N={a['n']}]"
        target = kind == "jarvis" and a["n"] == 64
        out.row(f"{tag} achieved / known max ({a['achieved_tps']:,.0f} / {a['max_tps']:,.0f} tok/s)",
                f"{a['ratio'] * 100:.1f} %", "≥ 95 %" if target else "", (a["ratio"] >= 0.95) if target else None)
        out.row(f"{tag} client CPU, peak RSS", f"{a['cpu_pct']:.0f} % of a core, {a['peak_rss_mb']:.0f} MB",
                f"< {MAX_RSS_MB} MB" if target else "", (a["peak_rss_mb"] < MAX_RSS_MB) if target else None)
        later = (f"; later p50 {a['send_lag_later_p50_s'] * 1e3:.1f} / p99 {a['send_lag_later_p99_s'] * 1e3:.1f} ms"
                 if a["send_lag_later_p50_s"] is not None else "")
        out.row(f"{tag} send lag: first p50 / p99, later",
                f"{a['send_lag_first_p50_s'] * 1e3:.1f} / {a['send_lag_first_p99_s'] * 1e3:.1f} ms{later}")
        if a["gap_mean_s"] is not None and not kind.endswith("async"):
            out.row(f"{tag} mean (p99): client between requests (t_end → next written) | server intake",
                    f"{a['gap_mean_s'] * 1e3:.1f} ({a['gap_p99_s'] * 1e3:.1f}) | "
                    f"{a['intake_mean_s'] * 1e3:.1f} ({a['intake_p99_s'] * 1e3:.1f}) ms")
        out.row(f"{tag} token lag p50 / p99; server lateness p99",
                f"{a['token_lag_p50_s'] * 1e3:.2f} / {a['token_lag_p99_s'] * 1e3:.1f} ms; "
                f"{a['server_late_p99_s'] * 1e3:.1f} ms")
        if a["assign_passes"] is not None:
            loop = f"; event-loop lag max {a['loop_lag_max_ms']:.0f} ms" if a["loop_lag_max_ms"] is not None else ""
            polls = f", {a['readability_polls']} idle-socket polls" if a["readability_polls"] is not None else ""
            out.row(f"{tag} pool: assignment passes, ConnectionNotAvailable retries, connections opened",
                    f"{a['assign_passes']}, {a['not_available']}, {a['connections_opened']} "
                    f"({a['requests']} requests){polls}{loop}")
        if a["errors"]:
            out.row(f"{tag} requests with errors or missing tokens", str(a["errors"]), "0", False)
    out.raw = {"delay_s": DELAY, "tokens": tokens, "requests_per_stream": k,
               "runs": [{"client": kind, **a} for kind, a in rows]}
    return out
