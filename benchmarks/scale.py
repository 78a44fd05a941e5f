"""Item 7, report scale: runs benchmarks/report_scale.py (written for this item by another engineer) and tabulates it.

report_scale.py writes report.xlsx from generated results.jsonl files of 1,000, 10,000 and 100,000 samples, each in a
fresh process, and returns time and peak RSS per size. Linear time here means the time per sample at the largest size
is at most 1.25× that at the smallest (1.00× is perfectly linear; fixed costs make small sizes look slower per sample).
It is started through a small parent process: report_scale.py reads its children's peak memory with ru_maxrss, which
on Linux starts at the parent's resident size when a process is forked from a big one (this benchmark runner is).
"""

from __future__ import annotations

from .common import PYTHON, REPO, Outcome, run_json

TARGET_MB = 300
LINEAR_LIMIT = 1.25


def run(quick: bool = False) -> Outcome:
    out = Outcome()
    script = REPO / "benchmarks" / "report_scale.py"
    if not script.exists():
        out.row("report scale", "TODO: benchmarks/report_scale.py is not there yet", "", False)
        return out
    sizes = ["1000", "10000"] if quick else ["1000", "10000", "100000"]
    rows = run_json([PYTHON, str(script), "--json", "--sizes", *sizes], timeout=1200)
    for r in rows:
        cpu = f", CPU {r['cpu_us_per_sample']:.0f} µs/sample" if "cpu_us_per_sample" in r else ""
        out.row(f"{r['samples']:,} samples: write time, per sample, peak RSS",
                f"{r['write_s']:.2f} s, {r['us_per_sample']:.0f} µs{cpu}, {r['peak_rss_mb']:.0f} MB")
    small, large = rows[0], rows[-1]
    key = "cpu_us_per_sample" if "cpu_us_per_sample" in small else "us_per_sample"
    growth = large[key] / small[key]
    out.row(f"time per sample, {large['samples']:,} vs {small['samples']:,} ({key.split('_')[0]})",
            f"{growth:.2f}×", f"≤ {LINEAR_LIMIT:.2f}× (linear)", growth <= LINEAR_LIMIT)
    peak = max(r["peak_rss_mb"] for r in rows)
    out.row(f"peak RSS at {large['samples']:,} samples", f"{peak:.0f} MB", f"< {TARGET_MB} MB", peak < TARGET_MB)
    out.raw = {"rows": rows, "growth": growth}
    return out
