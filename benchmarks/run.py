"""Run the benchmarks of issue 8 and print one table of figures, targets and met/MISSED.

    .venv/bin/python -m benchmarks.run                 # all nine items (about 10 minutes on 2 cores)
    .venv/bin/python -m benchmarks.run --quick         # fewer requests and smaller sizes (about 1.5 minutes)
    .venv/bin/python -m benchmarks.run --only 1 3      # a subset
    .venv/bin/python -m benchmarks.run --json out.json # also the raw numbers

Every server is a stand-in on 127.0.0.1 with scripted timing; every loop is bounded in count and time; every process
started here is ended here. What each figure means: benchmarks/RESULTS.md and each module's docstring.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Callable

if __package__ in (None, ""):  # `python benchmarks/run.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    __package__ = "benchmarks"

from benchmarks.common import REPO, Outcome, machine  # noqa: E402

ITEMS: dict[str, tuple[str, str]] = {
    "1": ("TTFT truth", "benchmarks.ttft"),
    "2": ("Streaming overhead", "benchmarks.stream"),
    "3": ("Concurrency", "benchmarks.concurrency"),
    "4": ("Readiness lag", "benchmarks.readiness"),
    "5": ("Campaign overhead", "benchmarks.campaign"),
    "6": ("Start-up", "benchmarks.startup"),
    "7": ("Report scale", "benchmarks.scale"),
    "8": ("Load", "benchmarks.load"),
    "9": ("Load tools side by side", "benchmarks.load_tools"),
}


def _load() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def table(results: list[tuple[str, str, Outcome, float]]) -> str:
    rows = [("item", "figure", "value", "target", "result")]
    for key, title, outcome, _ in results:
        for i, r in enumerate(outcome.rows):
            rows.append((f"{key}. {title}" if i == 0 else "", r.figure, r.value, r.target, r.status))
    widths = [max(len(r[c]) for r in rows) for c in range(5)]
    lines = []
    for i, r in enumerate(rows):
        lines.append("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", choices=sorted(ITEMS), metavar="ITEM",
                        help="run only these items (1-9)")
    parser.add_argument("--quick", action="store_true", help="fewer requests, smaller sizes")
    parser.add_argument("--json", type=Path, metavar="FILE", help="also write the raw numbers here")
    args = parser.parse_args(argv)
    os.chdir(REPO)
    import importlib

    info = machine()
    print(f"Jarvis benchmarks on {info['cpu']} ({info['cores']} cores), Python {info['python']}, {info['os']}")
    print(f"load average at start: {_load()}", flush=True)
    if args.quick:
        print("quick mode: shorter runs, so fixed costs weigh more; its met/MISSED verdicts are indicative only",
              flush=True)
    results: list[tuple[str, str, Outcome, float]] = []
    failed = False
    for key in args.only or sorted(ITEMS):
        title, module = ITEMS[key]
        print(f"[{key}] {title} ...", end=" ", flush=True)
        t0 = time.perf_counter()
        try:
            run: Callable[..., Outcome] = importlib.import_module(module).run
            outcome = run(quick=args.quick)
        except Exception as exc:  # one broken item must not hide the others' figures
            failed = True
            outcome = Outcome()
            outcome.row("could not run", f"{type(exc).__name__}: {exc}".splitlines()[0][:160], "", False)
            outcome.notes.append(traceback.format_exc())
        took = time.perf_counter() - t0
        print(f"{took:.1f} s", flush=True)
        results.append((key, title, outcome, took))
    print()
    print(table(results))
    print(f"\nload average at end: {_load()}")
    for _, _, outcome, _ in results:
        for note in outcome.notes:
            print(note, file=sys.stderr)
    missed = [r.figure for _, _, o, _ in results for r in o.rows if r.status == "MISSED"]
    print(f"{sum(1 for _, _, o, _ in results for r in o.rows if r.status == 'met')} targets met, "
          f"{len(missed)} missed")
    if args.json:
        args.json.write_text(json.dumps({"machine": info, "quick": args.quick, "items": {
            key: {"title": title, "seconds": took, "rows": [vars(r) for r in o.rows], "raw": o.raw}
            for key, title, o, took in results}}, indent=1, default=str), encoding="utf-8")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
