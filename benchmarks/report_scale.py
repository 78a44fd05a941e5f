"""Report scale: time and peak memory of writing report.xlsx for 1,000, 10,000 and 100,000 samples.

Each size is written by a fresh Python process (so its peak resident memory is its own), from a results.jsonl made
beforehand with realistic records: 2 setups × 5 models × 10 tests, streamed figures, answers of 100-800 characters,
a cold sample per cell and about 1 % errors. Prints one row per size with the time per sample, so linear growth
shows as a flat µs/sample column. Target (issue 8, item 7): linear time, peak memory under 300 MB at 100,000.

    .venv/bin/python benchmarks/report_scale.py [--sizes 1000 10000 100000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

REPO = Path(__file__).resolve().parents[1]
SIZES = (1_000, 10_000, 100_000)
TARGET_MB = 300

CHILD = r"""
import json, resource, sys, time
from pathlib import Path
t0 = time.perf_counter()
from jarvis_core.report import write_report
import openpyxl  # what write_report imports, counted in the baseline
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t1, c1 = time.perf_counter(), time.process_time()
write_report(Path(sys.argv[1]), Path(sys.argv[2]))
t2, c2 = time.perf_counter(), time.process_time()
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"import_s": t1 - t0, "write_s": t2 - t1, "cpu_s": c2 - c1, "base_rss_kb": base,
                  "peak_rss_kb": peak}))
"""

WORDS = ("the of a to model token latency answer capital Paris France JSON test stream decode is and in "
         "that it for on with as be by this").split()


def records(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    yield {"type": "run", "jarvis_version": "0.1.0", "versions": {"jarvis-core": "0.1.0"},
           "host": {"os": platform.platform(), "python": platform.python_version()}, "argv": ["jarvis", "run"]}
    models = [f"ol_model{i}:7b#stream" for i in range(5)]
    cells = [(s, m, f"test{t}") for s in ("setup-a", "setup-b") for m in models for t in range(10)]
    for i in range(n):
        setup, model, test = cells[i % len(cells)]
        rep = i // len(cells)
        base = {"type": "sample", "setup": setup, "model": model, "engine": "ollama",
                "engine_model": model[3:].split("#")[0], "test": test, "repetition": rep, "cold": rep == 0,
                "stream": True, "time": f"2024-06-10T10:{(i // 60) % 60:02d}:{i % 60:02d}+00:00"}
        if rng.random() < 0.01:
            yield {**base, "status": "error", "reason": "HTTP 500: engine failed", "answer": None}
            continue
        tokens = rng.randint(16, 256)
        ttft = rng.uniform(0.03, 0.6)
        decode = rng.uniform(20, 150)
        e2e = ttft + (tokens - 1) / decode
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(25, 180)))
        yield {**base, "status": "ok" if rng.random() > 0.05 else "failed", "reason": "", "answer": answer,
               "ttfb_s": ttft * 0.97, "ttft_s": ttft, "e2e_s": e2e, "output_tokens": tokens,
               "token_source": "server", "prompt_tokens": rng.randint(20, 400), "itl_s": 1 / decode,
               "decode_tps": decode, "overall_tps": tokens / e2e, "server_decode_tps": decode * 1.01,
               "load_s": None, "server": {"eval_count": tokens, "eval_duration": int(tokens / decode * 1e9)}}
    yield {"type": "end", "interrupted": False}


def write_results(path: Path, n: int) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for record in records(n):
            fh.write(json.dumps(record) + "\n")


def measure(n: int, folder: Path) -> dict[str, Any]:
    results = folder / f"results-{n}.jsonl"
    out = folder / f"report-{n}.xlsx"
    write_results(results, n)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", CHILD, str(results), str(out)], cwd=REPO, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - start
    if proc.returncode:
        raise SystemExit(f"report for {n} samples failed:\n{proc.stderr}")
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    return {
        "samples": n,
        "write_s": child["write_s"],
        "cpu_s": child["cpu_s"],
        "process_s": wall,
        "us_per_sample": child["write_s"] / n * 1e6,
        "cpu_us_per_sample": child["cpu_s"] / n * 1e6,
        "peak_rss_mb": child["peak_rss_kb"] / 1024,
        "base_rss_mb": child["base_rss_kb"] / 1024,
        "results_mb": results.stat().st_size / 2**20,
        "xlsx_mb": out.stat().st_size / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="jarvis-report-scale-") as tmp:
        rows = [measure(n, Path(tmp)) for n in args.sizes]
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"report scale on {platform.node()} ({os.cpu_count()} CPUs, Python {platform.python_version()})")
    print(f"{'samples':>9} {'wall s':>8} {'wall µs/sample':>15} {'CPU s':>8} {'CPU µs/sample':>14} "
          f"{'peak RSS MB':>12} {'baseline MB':>12} {'jsonl MB':>9} {'xlsx MB':>8}")
    for r in rows:
        print(f"{r['samples']:>9,} {r['write_s']:>8.2f} {r['us_per_sample']:>15.0f} {r['cpu_s']:>8.2f} "
              f"{r['cpu_us_per_sample']:>14.0f} {r['peak_rss_mb']:>12.1f} {r['base_rss_mb']:>12.1f} "
              f"{r['results_mb']:>9.1f} {r['xlsx_mb']:>8.1f}")
    small, large = rows[0], rows[-1]
    if large["samples"] > small["samples"]:
        print(f"time per sample, largest vs smallest: wall {large['us_per_sample'] / small['us_per_sample']:.2f}×, "
              f"CPU {large['cpu_us_per_sample'] / small['cpu_us_per_sample']:.2f}× (1.00× is perfectly linear)")
    worst = max(r["peak_rss_mb"] for r in rows)
    print(f"peak memory: {worst:.0f} MB (target < {TARGET_MB} MB): {'met' if worst < TARGET_MB else 'MISSED'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
