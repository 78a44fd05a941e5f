"""Item 8, load: is Jarvis's load generator ever the bottleneck, and are its stamps true under load?

Against the asyncio stand-in of tests/standins/load_server.py (80 ms to the first token, then 19 more tokens 15 ms
apart: 0.365 s per answer, so N in flight can get at most N × 20 / 0.365 tokens/s), each measurement runs in a child
process of its own (`python -m benchmarks.load --child ...`), so its CPU and peak memory are the load generator's alone:

- closed loop at N = 1, 16, 64, 256: achieved output tokens/s ÷ the known maximum, client CPU (share of one core) and
  peak RSS. Targets: ≥ 95 % at 256, < 200 MB at 256.
- open loop (Poisson) at 50 and 200 requests/s: send lag (request written − scheduled time) p50/p99. Target: p99 < 2 ms
  at 50/s.
- TTFT error at N = 64: the client's first-token stamp minus the moment the stand-in wrote that token (both
  CLOCK_MONOTONIC, so comparable across processes). Target: p99 < 2 ms.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

from benchmarks.common import PYTHON, REPO, Outcome, percentile

TTFT, TOKENS, GAP = 0.08, 20, 0.015
PER_REQUEST = TTFT + (TOKENS - 1) * GAP


def _child(args: argparse.Namespace) -> None:
    """Run one level against the stand-in at `args.url` and print its figures as JSON."""
    import httpx

    from jarvis_core.aio import openai_chat_async
    from jarvis_core.api import close_shared, openai_chat, shared_client
    from jarvis_core.load import Level, LoadProfile, run_level, summarize_level, workload
    from jarvis_core.load_async import run_level_async

    url = args.url
    make = workload([], LoadProfile(prompt_tokens=16), max_tokens=None, timeout=60)
    level = Level(concurrency=args.concurrency) if args.concurrency else Level(rate=args.rate)
    if args.threads:
        run = run_level(lambda request: openai_chat(shared_client(url), "load-model", request), make, level,
                        requests=args.requests, duration=None, warmup=args.warmup, seed=1)
    else:
        run = run_level_async(lambda request: openai_chat_async(url, "load-model", request), make, level,
                              requests=args.requests, duration=None, warmup=args.warmup, seed=1)
    summary = summarize_level(run, None)
    truth = httpx.get(f"{url}/stats", trust_env=False, timeout=30).json() if args.ttft_truth else []
    errors = []
    if truth:
        first_by_tag = {s["tag"]: s["first"] for s in truth if s.get("tag") and s.get("first")}
        for s in run.samples:
            tag = make(s.index).messages[0].content.split(":")[0]
            if not s.warmup and s.result.t_first_token and tag in first_by_tag:
                errors.append((s.result.t_first_token - first_by_tag[tag]) / 1e9)
    close_shared()
    print(json.dumps({"output_tps": summary.output_tps, "client_cpu": summary.client_cpu,
                      "rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "send_lag": sorted(s.send_lag_s for s in run.samples if s.send_lag_s is not None),
                      "achieved_rate": summary.achieved_rate, "ok": summary.requests_ok,
                      "errors": summary.requests_error, "ttft_errors": sorted(errors)}))


def _server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([PYTHON, "-m", "tests.standins.load_server", f"--ttft={TTFT}", f"--tokens={TOKENS}",
                             f"--gap={GAP}"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = json.loads(proc.stdout.readline())["port"]
    return proc, f"http://127.0.0.1:{port}"


def _measure(*flags: str) -> dict:
    server, url = _server()
    try:
        done = subprocess.run([PYTHON, "-m", "benchmarks.load", "--child", "--url", url, *flags], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-500:])
        return json.loads(done.stdout.strip().splitlines()[-1])
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def run(quick: bool = False, modes: tuple[str, ...] = ("event loop", "threads")) -> Outcome:
    """Each figure for the event-loop generator (engines with `infer_async`; the targets apply to it) and for the
    threaded one (engines without), measured in the same run."""
    out = Outcome()
    for mode in modes:
        flags = ("--threads",) if mode == "threads" else ()
        targeted = mode == "event loop"
        for n in (1, 16, 64, 256):
            requests = max(3 * n, 12) if quick else max(6 * n, 24)
            found = _measure("--concurrency", str(n), "--requests", str(requests), "--warmup", str(n), *flags)
            best = n * TOKENS / PER_REQUEST
            share = found["output_tps"] / best
            target = "≥ 95 %" if n == 256 and targeted else ""
            out.row(f"[{mode}] closed loop N={n}: achieved / known maximum ({best:.0f} tok/s)",
                    f"{share:.1%}, client CPU {found['client_cpu']:.0%}, peak RSS {found['rss_mb']:.0f} MB",
                    target, share >= 0.95 if target else None)
            if n == 256 and targeted:
                out.row(f"[{mode}] closed loop N=256: peak RSS of the load generator", f"{found['rss_mb']:.0f} MB",
                        "< 200 MB", found["rss_mb"] < 200)
            out.raw[f"{mode}/closed_{n}"] = {k: v for k, v in found.items() if k not in ("send_lag", "ttft_errors")}
        for rate in (50, 200):
            requests = rate * (3 if quick else 6)
            found = _measure("--rate", str(rate), "--requests", str(requests), "--warmup", "5", *flags)
            lag = found["send_lag"]
            p50, p99 = percentile(lag, 50) * 1e3, percentile(lag, 99) * 1e3
            target = "p99 < 2 ms" if rate == 50 and targeted else ""
            out.row(f"[{mode}] open loop {rate} req/s: send lag p50 / p99 (achieved {found['achieved_rate']:.1f} "
                    f"req/s)", f"{p50:.2f} / {p99:.2f} ms", target, p99 < 2 if target else None)
            out.raw[f"{mode}/rate_{rate}"] = {"p50_ms": p50, "p99_ms": p99, "achieved_rate": found["achieved_rate"]}
        found = _measure("--concurrency", "64", "--requests", "128" if quick else "320", "--warmup", "64",
                         "--ttft-truth", *flags)
        errors = found["ttft_errors"]
        p50, p99 = percentile(errors, 50) * 1e3, percentile(errors, 99) * 1e3
        target = "p99 < 2 ms" if targeted else ""
        out.row(f"[{mode}] TTFT error at N=64 (client stamp − stand-in wrote the token), {len(errors)} requests",
                f"p50 {p50:.2f} / p99 {p99:.2f} ms", target, p99 < 2 if target else None)
        out.raw[f"{mode}/ttft_error_64"] = {"p50_ms": p50, "p99_ms": p99, "n": len(errors)}
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", action="store_true")
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ttft-truth", action="store_true")
    parser.add_argument("--threads", action="store_true", help="the threaded generator (engines without infer_async)")
    parsed = parser.parse_args()
    if parsed.child:
        sys.exit(_child(parsed))
    started = time.perf_counter()
    outcome = run(quick="--quick" in sys.argv)
    for row in outcome.rows:
        print(f"{row.figure}: {row.value} {row.target} {row.status}")
    print(f"{time.perf_counter() - started:.0f} s")
