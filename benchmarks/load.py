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

Three figures say what the machine itself allows, measured alongside in the same run:
- the ceiling at N = 256: the cheapest client this machine can run (`_raw_client`: an asyncio protocol on uvloop
  that writes a fixed request and only counts tokens and the end of each answer, no HTTP library, no parsing; not
  something Jarvis could measure with) against the same stand-in, started with the same ramp-up as Jarvis's users
  and measured over the same window. What it reaches is what the stand-in
  and the two cores allow any client;
- the machine's CPU during each closed-loop level (busy share of all cores, of which steal: time the hypervisor gave
  to someone else) and the stand-in's own CPU, so a level that falls short can be told apart from a machine that is
  full;
- the wake-up floor of each open-loop level: a probe process that sends nothing wakes on its own Poisson schedule at
  the same rate, the way the generator does (uvloop, woken early, then waiting for the due time), while the level
  runs. Its lateness is what this machine's scheduler adds to any send; the generator's send lag cannot go below it.
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


def _probe(args: argparse.Namespace) -> None:
    """The wake-up floor: sleep until each of a Poisson schedule's times as `run_level_async` does (on the same loop,
    woken EARLY_START_S early, then waiting at the send gate until due) and print how late each wake-up was, in
    seconds."""
    import asyncio

    from jarvis_core.aio import spin_until
    from jarvis_core.load import arrival_offsets
    from jarvis_core.load_async import EARLY_START_S, _runner

    async def main() -> list[float]:
        clock = time.perf_counter_ns
        t0, late = clock(), []
        for offset in arrival_offsets(args.rate, args.requests, arrival="poisson", seed=2):
            due = t0 + int(offset * 1e9)
            wait = (due - clock()) / 1e9 - EARLY_START_S
            if wait > 0:
                await asyncio.sleep(wait)
            await spin_until(due)
            late.append((clock() - due) / 1e9)
        return late

    print(json.dumps(sorted(_runner()(main()))))


def _raw_client(args: argparse.Namespace) -> None:
    """The ceiling: N keep-alive connections started as Jarvis starts its users (one request alone, then the N spread
    over its answer time; those are not counted), each then sending the same streamed request `args.requests // N`
    times in a row; prints output tokens/s over the window Jarvis measures in (last uncounted send to last send) and
    the client's CPU share."""
    import asyncio

    from jarvis_core.load import ramp_starts
    from jarvis_core.load_async import _runner

    port = int(args.url.rsplit(":", 1)[1])
    body = json.dumps({"model": "load-model", "stream": True,
                       "messages": [{"role": "user", "content": "hello"}]}).encode()
    request = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    clock = time.perf_counter_ns
    arrivals: list[tuple[int, int]] = []  # (when, tokens) per network read

    class Connection(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.transport, self.tail, self.done = transport, b"", None

        def data_received(self, data: bytes) -> None:
            tokens = data.count(b'"content"')
            if tokens:
                arrivals.append((clock(), tokens))
            self.tail = (self.tail + data)[-5:]
            if self.tail == b"0\r\n\r\n" and self.done is not None:  # the chunked body's end
                self.done.set_result(None)
                self.done = None

        def send(self) -> asyncio.Future:
            self.done, self.tail = asyncio.get_running_loop().create_future(), b""
            self.transport.write(request)
            return self.done

    async def main() -> dict:
        loop = asyncio.get_running_loop()
        n, rounds = args.concurrency, max(1, args.requests // args.concurrency)
        connections = [(await loop.create_connection(Connection, "127.0.0.1", port))[1] for _ in range(n)]
        cpu0, t0 = time.process_time(), clock()
        await connections[0].send()
        starts = ramp_starts(n, clock() - t0, clock())
        sends: list[int] = []
        ramp_sends: list[int] = []

        async def worker(k: int, connection: Connection) -> None:
            await asyncio.sleep(max(0, starts[k] - clock()) / 1e9)
            ramp_sends.append(clock())
            await connection.send()  # this user's first request: the ramp-up's, not counted
            for _ in range(rounds):
                sends.append(clock())
                await connection.send()

        await asyncio.gather(*(worker(k, c) for k, c in enumerate(connections)))
        cpu, wall = time.process_time() - cpu0, (clock() - t0) / 1e9
        start, end = max(min(sends), max(ramp_sends)), max(sends)
        tokens = sum(count for when, count in arrivals if start <= when <= end)
        return {"output_tps": tokens / ((end - start) / 1e9), "client_cpu": cpu / wall}

    print(json.dumps(_runner()(main())))


def _machine_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine so far, summed over its cores."""
    import psutil

    times = psutil.cpu_times()
    idle = sum(getattr(times, name, 0.0) for name in ("idle", "iowait", "guest", "guest_nice"))  # guest: in user
    return sum(times) - idle, getattr(times, "steal", 0.0)


def _server() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([PYTHON, "-m", "tests.standins.load_server", f"--ttft={TTFT}", f"--tokens={TOKENS}",
                             f"--gap={GAP}"], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    port = json.loads(proc.stdout.readline())["port"]
    return proc, f"http://127.0.0.1:{port}"


def _measure(*flags: str, floor: tuple[float, int] | None = None) -> dict:
    """One level in a child process; with `floor=(rate, count)` a wake-up probe runs beside it (its lateness comes
    back as `floor`). Also the machine's and the stand-in's CPU over the level."""
    import psutil

    server, url = _server()
    probe = None
    try:
        if floor is not None:
            probe = subprocess.Popen([PYTHON, "-m", "benchmarks.load", "--probe", "--rate", str(floor[0]),
                                      "--requests", str(floor[1])], cwd=REPO, stdout=subprocess.PIPE, text=True)
        standin = psutil.Process(server.pid)
        standin_cpu0, (busy0, steal0), wall0 = sum(standin.cpu_times()[:2]), _machine_cpu(), time.perf_counter()
        done = subprocess.run([PYTHON, "-m", "benchmarks.load", "--child", "--url", url, *flags], cwd=REPO,
                              capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - wall0
        (busy1, steal1), cores = _machine_cpu(), psutil.cpu_count() or 1
        standin_cpu = (sum(standin.cpu_times()[:2]) - standin_cpu0) / wall
        if done.returncode != 0:
            raise RuntimeError(done.stderr.strip()[-500:])
        found = json.loads(done.stdout.strip().splitlines()[-1])
        found.update(machine_busy=(busy1 - busy0) / wall / cores, machine_steal=(steal1 - steal0) / wall / cores,
                     standin_cpu=standin_cpu)
        if probe is not None:
            found["floor"] = json.loads(probe.communicate(timeout=600)[0].strip().splitlines()[-1])
        return found
    finally:
        if probe is not None and probe.poll() is None:  # the level failed: the probe is not waited for
            probe.kill()
            probe.wait(timeout=30)
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
                    f"{share:.1%}, client CPU {found['client_cpu']:.0%}, peak RSS {found['rss_mb']:.0f} MB; "
                    f"stand-in CPU {found['standin_cpu']:.0%}, machine busy {found['machine_busy']:.0%} of "
                    f"all cores (steal {found['machine_steal']:.0%})",
                    target, share >= 0.95 if target else None)
            if n == 256 and targeted:
                out.row(f"[{mode}] closed loop N=256: peak RSS of the load generator", f"{found['rss_mb']:.0f} MB",
                        "< 200 MB", found["rss_mb"] < 200)
                ceiling = _measure("--concurrency", str(n), "--requests", str(requests), "--raw")
                out.row("[ceiling] closed loop N=256, the cheapest client this machine can run (no HTTP library, "
                        "no parsing): achieved / known maximum",
                        f"{ceiling['output_tps'] / best:.1%}, client CPU {ceiling['client_cpu']:.0%}, stand-in CPU "
                        f"{ceiling['standin_cpu']:.0%}, machine busy {ceiling['machine_busy']:.0%} of all cores")
                out.raw["ceiling/closed_256"] = ceiling
            out.raw[f"{mode}/closed_{n}"] = {k: v for k, v in found.items() if k not in ("send_lag", "ttft_errors")}
        for rate in (50, 200):
            requests = rate * (3 if quick else 6)
            found = _measure("--rate", str(rate), "--requests", str(requests), "--warmup", "5", *flags,
                             floor=(rate, requests) if targeted else None)
            lag = found["send_lag"]
            p50, p99 = percentile(lag, 50) * 1e3, percentile(lag, 99) * 1e3
            target = "p99 < 2 ms" if rate == 50 and targeted else ""
            out.row(f"[{mode}] open loop {rate} req/s: send lag p50 / p99 (achieved {found['achieved_rate']:.1f} "
                    f"req/s)", f"{p50:.2f} / {p99:.2f} ms", target, p99 < 2 if target else None)
            out.raw[f"{mode}/rate_{rate}"] = {"p50_ms": p50, "p99_ms": p99, "achieved_rate": found["achieved_rate"]}
            if "floor" in found:
                f50, f99 = percentile(found["floor"], 50) * 1e3, percentile(found["floor"], 99) * 1e3
                out.row(f"[{mode}] open loop {rate} req/s: wake-up floor beside it (a probe that sends nothing), "
                        f"p50 / p99", f"{f50:.2f} / {f99:.2f} ms")
                out.raw[f"{mode}/rate_{rate}"].update(floor_p50_ms=f50, floor_p99_ms=f99)
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
    parser.add_argument("--probe", action="store_true", help="the wake-up floor probe (sends nothing)")
    parser.add_argument("--raw", action="store_true", help="with --child: the ceiling client (no HTTP library)")
    parser.add_argument("--url")
    parser.add_argument("--concurrency", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ttft-truth", action="store_true")
    parser.add_argument("--threads", action="store_true", help="the threaded generator (engines without infer_async)")
    parsed = parser.parse_args()
    if parsed.child:
        sys.exit(_raw_client(parsed) if parsed.raw else _child(parsed))
    if parsed.probe:
        sys.exit(_probe(parsed))
    started = time.perf_counter()
    outcome = run(quick="--quick" in sys.argv)
    for row in outcome.rows:
        print(f"{row.figure}: {row.value} {row.target} {row.status}")
    print(f"{time.perf_counter() - started:.0f} s")
