"""`jarvis` with the benchmark engine plugin (benchmarks/bench_engine.py) registered in-process.

    python benchmarks/jarvis_bench.py run --setups FILE --config FILE --output DIR

Everything else is the installed `jarvis` command: its entry point `jarvis_core.cli.main`, with whatever plugins
are installed (JARVIS_LOAD_PLUGINS applies as usual).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_engine  # noqa: E402
from jarvis_core.cli import main  # noqa: E402
from jarvis_core.plugins import register  # noqa: E402

if __name__ == "__main__":
    register(bench_engine, "bench", distribution="jarvis-benchmarks", version="0")
    sys.exit(main())
