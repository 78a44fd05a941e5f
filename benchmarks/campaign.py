"""Item 5, campaign overhead: `jarvis run` over the scripted benchmark engine, 5 models × 10 tests × 3 repetitions.

`jarvis run` runs as a subprocess (benchmarks/jarvis_bench.py: the installed `jarvis` command with
benchmarks/bench_engine.py registered), streamed (`#stream`), one warmup request per model, in a temporary folder
with its own state folder. The engine's costs are scripted (see bench_engine.py), so what the engines spent is known
exactly: per model `load_s` plus, for each of its 31 requests, `first_token_s + (tokens − 1) × token_s`.

overhead = wall time of the whole `jarvis run` process (start to exit, results.jsonl and report.xlsx written) ÷ that
sum. The engine's event log (stamps on the same clock as the parent's) splits the rest: process start until the first
model starts loading, readiness lag (noticed − loaded), time around requests (client and runner between one request's
end on the server and the next one's arrival), and the tail from the last stop to exit (summary and report).
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from .common import PYTHON, REPO, Outcome, median

MODELS = 5
TESTS = 10
REPS = 3
FULL = {"load_s": 1.0, "first_token_s": 0.05, "token_s": 0.01, "tokens": 16}
QUICK = {"load_s": 0.3, "first_token_s": 0.02, "token_s": 0.005, "tokens": 8}


def _files(folder: Path, script: dict[str, Any]) -> tuple[Path, Path]:
    config = folder / "config.yaml"
    config.write_text(
        "default_engine: bench\n"
        f"output_dir: {folder / 'out'}\n"
        "engines:\n  bench:\n" + "".join(f"    {k}: {v}\n" for k, v in script.items()), encoding="utf-8")
    setups = folder / "test_setups.yaml"
    lines = ["defaults:", f"  repetitions: {REPS}", "  warmup: 1", "  timeout: 30", "  max_tokens: 64", "tests:"]
    for t in range(TESTS):
        lines += [f"  - id: test-{t}", f"    prompt: Benchmark question number {t}?",
                  "    check: {contains: stand-in}"]
    lines += ["setups:", "  campaign:", "    models:"]
    lines += [f"      - bench_model-{m}#stream" for m in range(MODELS)]
    setups.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config, setups


def _fsync_cost(path: Path, n: int = 20) -> float:
    times = []
    with open(path, "a", encoding="utf-8") as fh:
        for _ in range(n):
            t = time.perf_counter()
            fh.write("x" * 1500 + "\n")
            fh.flush()
            os.fsync(fh.fileno())
            times.append(time.perf_counter() - t)
    return median(times)


def run(quick: bool = False) -> Outcome:
    script = QUICK if quick else FULL
    out = Outcome()
    per_request = script["first_token_s"] + (script["tokens"] - 1) * script["token_s"]
    requests = MODELS * (1 + TESTS * REPS)
    engine_s = MODELS * script["load_s"] + requests * per_request
    with tempfile.TemporaryDirectory(prefix="jarvis-bench-campaign-") as tmp:
        folder = Path(tmp)
        config, setups = _files(folder, script)
        log = folder / "engine.jsonl"
        env = {**os.environ, "JARVIS_STATE_DIR": str(folder / "state"), "JARVIS_BENCH_ENGINE_LOG": str(log)}
        cmd = [PYTHON, str(REPO / "benchmarks" / "jarvis_bench.py"), "run", "--setups", str(setups), "--config",
               str(config), "--output", str(folder / "out")]
        t0 = time.perf_counter_ns()
        proc = subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=300)
        t1 = time.perf_counter_ns()
        if proc.returncode != 0:
            raise RuntimeError(f"jarvis run exited {proc.returncode}:\n{proc.stdout[-1500:]}\n{proc.stderr[-1500:]}")
        events = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
        samples = [json.loads(line) for line in (folder / "out" / "results.jsonl").read_text().splitlines()]
        report_ok = (folder / "out" / "report.xlsx").is_file()
        fsync_s = _fsync_cost(folder / "fsync.probe")
    wall = (t1 - t0) / 1e9
    starts = [e for e in events if e["event"] == "start"]
    readies = {e["model"]: e["t"] for e in events if e["event"] == "ready"}
    reqs = [e for e in events if e["event"] == "request"]
    stops = [e["t"] for e in events if e["event"] == "stop"]
    startup = (starts[0]["t"] - t0) / 1e9
    ready_lag = sum((readies[s["model"]] - s["t"]) / 1e9 - s["load_s"] for s in starts)
    served = sum((r["done"] - r["received"]) / 1e9 for r in reqs if r["done"] and r["received"])
    pairs_ = [(a, b) for a, b in zip(reqs, reqs[1:]) if a["model"] == b["model"] and a["done"] and b["received"]]
    around = sum((b["received"] - a["done"]) / 1e9 for a, b in pairs_)
    runner = sum((b["t_send"] - a["t_end"]) / 1e9 for a, b in pairs_)
    client = around - runner
    tail = (t1 - max(stops)) / 1e9 if stops else float("nan")
    ok = sum(1 for s in samples if s.get("type") == "sample" and s.get("status") == "ok")
    ratio = wall / engine_s
    out.row(f"jarvis run wall / engine time ({MODELS} models × {TESTS} tests × {REPS} reps, {requests} requests)",
            f"{wall:.2f} s / {engine_s:.2f} s = {ratio:.3f}×", "≤ 1.05×", ratio <= 1.05)
    out.row("  samples ok, report written", f"{ok}/{MODELS * TESTS * REPS}, {'yes' if report_ok else 'NO'}",
            f"{MODELS * TESTS * REPS}, yes", ok == MODELS * TESTS * REPS and report_ok)
    out.row("  engine time as the stand-ins stamped it (loads scripted + requests served)",
            f"{MODELS * script['load_s'] + served:.2f} s")
    out.row("  start-up: process start → first model starts loading", f"{startup * 1e3:.0f} ms")
    out.row("  readiness lag, all models", f"{ready_lag * 1e3:.0f} ms")
    out.row("  between requests (server done → next request received), all requests",
            f"{around * 1e3:.0f} ms ({around / max(len(reqs) - MODELS, 1) * 1e3:.2f} ms each)")
    out.row("    of which in openai_api.chat (done → t_end, t_send → received)",
            f"{client * 1e3:.0f} ms ({client / max(len(pairs_), 1) * 1e3:.2f} ms each)")
    out.row("    of which in the runner (t_end → next t_send: figures, results.jsonl write + fsync, console)",
            f"{runner * 1e3:.0f} ms ({runner / max(len(pairs_), 1) * 1e3:.2f} ms each)")
    out.row("    fsync of a small file on this disk (what ResultsWriter.write does per sample), p50",
            f"{fsync_s * 1e3:.2f} ms")
    out.row("  tail: engines stopped → process exit (summary, report.xlsx)", f"{tail * 1e3:.0f} ms")
    out.raw = {"script": script, "wall_s": wall, "engine_s": engine_s, "ratio": ratio, "startup_s": startup,
               "ready_lag_s": ready_lag, "served_s": served, "between_requests_s": around, "tail_s": tail,
               "samples_ok": ok, "client_s": client, "runner_s": runner, "fsync_p50_s": fsync_s}
    return out
