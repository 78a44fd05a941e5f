"""Item 6, start-up: `jarvis --help` and `jarvis resolve ol_qwen2.5:0.5b` against `python -c "import click"`.

Each command runs as a fresh subprocess, the installed `jarvis` console script with every installed plugin, in an
empty temporary folder (no ./config.yaml), interleaved, after two unmeasured rounds (warm disk cache); the figure is
the median wall time (spawn to exit). `python -c pass` shows the interpreter's own floor. Bytecode is written and
used as on a user's machine: PYTHONDONTWRITEBYTECODE is dropped from the commands' environment (a sandbox that sets
it makes every edited module compile from source at each start, ~12 ms for cli.py alone).

Where the time goes: `python -X importtime` of `jarvis --help`, three runs, medians: the import time (self times) of
every module that `import click` alone does not load, by top-level package, and the heaviest such imports made by
Jarvis's own modules (jarvis_core and the plugins), with the module that makes them.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from .common import PYTHON, Outcome, median

TARGET_HELP_S = 0.150


def _jarvis() -> str:
    script = Path(PYTHON).with_name("jarvis")
    return str(script) if script.exists() else "jarvis"


def _commands() -> dict[str, list[str]]:
    return {
        "python -c pass": [PYTHON, "-c", "pass"],
        'python -c "import click"': [PYTHON, "-c", "import click"],
        "jarvis --help": [_jarvis(), "--help"],
        "jarvis resolve ol_qwen2.5:0.5b": [_jarvis(), "resolve", "ol_qwen2.5:0.5b"],
    }


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def _wall(cmd: list[str], cwd: str) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=60,
                   env=_env())
    return time.perf_counter() - t0


def parse_importtime(stderr: str) -> list[tuple[str, str | None, int, int]]:
    """(module, the module that imported it or None, self µs, cumulative µs) from `-X importtime` (post-order)."""
    pending: dict[int, list[str]] = defaultdict(list)
    parent_of: dict[str, str | None] = {}
    times: dict[str, tuple[int, int]] = {}
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        _, _, rest = line.partition(":")
        self_us, cum_us, name = rest.split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        name = name.strip()
        for child in pending.pop(depth + 1, []):
            parent_of[child] = name
        pending[depth].append(name)
        times[name] = (int(self_us), int(cum_us))
    return [(name, parent_of.get(name), s, c) for name, (s, c) in times.items()]


def _importtime(cmd: list[str], cwd: str) -> list[tuple[str, str | None, int]]:
    proc = subprocess.run([PYTHON, "-X", "importtime", *cmd[1:]] if cmd[0] == PYTHON else
                          [PYTHON, "-X", "importtime", cmd[0], *cmd[1:]], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=_env())
    return parse_importtime(proc.stderr)


def _owned(module: str | None) -> bool:
    return bool(module) and module.split(".")[0].startswith(("jarvis_", "__editable___jarvis"))


def run(quick: bool = False) -> Outcome:
    rounds = 5 if quick else 11
    out = Outcome()
    cmds = _commands()
    times: dict[str, list[float]] = {name: [] for name in cmds}
    with tempfile.TemporaryDirectory(prefix="jarvis-bench-startup-") as cwd:
        for i in range(rounds + 2):
            for name, cmd in cmds.items():
                t = _wall(cmd, cwd)
                if i >= 2:
                    times[name].append(t)
        baseline = {m for m, _, _, _ in _importtime(cmds['python -c "import click"'], cwd)}
        runs = [_importtime(cmds["jarvis --help"], cwd) for _ in range(3)]
    med = {name: median(v) for name, v in times.items()}
    click_s = med['python -c "import click"']
    for name in cmds:
        ratio = f", {med[name] / click_s:.2f}× import click" if name.startswith("jarvis") else ""
        target = ""
        ok = None
        if name == "jarvis --help":
            target, ok = f"< {TARGET_HELP_S * 1e3:.0f} ms", med[name] < TARGET_HELP_S
        out.row(f"{name}: median wall ({rounds} runs)", f"{med[name] * 1e3:.0f} ms{ratio}", target, ok)
    extra = median([sum(st for m, _, st, _ in edges if m not in baseline) for edges in runs])
    out.row("jarvis --help: import time beyond what `import click` imports (-X importtime, self times)",
            f"{extra / 1e3:.0f} ms")
    per_root: dict[str, list[int]] = defaultdict(list)
    for edges in runs:
        totals: dict[str, int] = defaultdict(int)
        for module, _, st, _ in edges:
            if module not in baseline:
                totals[module.split(".")[0]] += st
        for root, total in totals.items():
            per_root[root].append(total)
    for total, root in sorted(((median(v), k) for k, v in per_root.items()), reverse=True)[:6]:
        out.row(f"  package {root} (all its modules)", f"{total / 1e3:.1f} ms")
    per_edge: dict[tuple[str, str | None], list[int]] = defaultdict(list)
    for edges in runs:
        for module, parent, _, cum in edges:
            per_edge[(module, parent)].append(cum)
    heavy = sorted(((median(v), m, p) for (m, p), v in per_edge.items()
                    if _owned(p) and not _owned(m) and m not in baseline), reverse=True)[:5]
    for cum, module, parent in heavy:
        out.row(f"  {parent} imports {module} (cumulative)", f"{cum / 1e3:.1f} ms")
    out.raw = {"median_s": med, "all_s": times, "extra_import_us": extra,
               "heavy_imports": [{"module": m, "imported_by": p, "cumulative_us": c} for c, m, p in heavy]}
    return out
