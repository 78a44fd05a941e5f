"""`jarvis compare` of two runs of the same unchanged REAL llama.cpp model (llama-cpp-python's server, SmolLM2-135M):
nothing changed, so (nearly) every figure is `same`, nothing is `worse`, and the environment shows no difference.

The two campaigns are measured in turns, as an A/B measurement on a shared machine should be: two repetitions of
campaign A, two of B, then `jarvis run --resume` adds two more to A, two to B, and so on. Whatever else the machine
does meanwhile then falls on both runs alike; run one after the other, the second run meets other conditions than the
first, and that is a real difference between the runs, not noise (docs/compare.md). It also reads resumed files as
one run each. Load levels stay out for the same reason (a level is a burst of seconds, measured at one moment);
tests/core/test_compare.py compares load levels.

Run with `pytest tests/llamacpp -m integration`; the prerequisites (llama_cpp.server importable, the GGUF) are those
of tests/run/test_run_llamacpp.py: missing ones skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.run.conftest import Campaign, campaign, nothing_left_running  # noqa: F401 - fixtures
from tests.run.test_run_llamacpp import gguf_dir  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration

MODELS = ("lc_smollm2-135m#stream", "lc_smollm2-135m")
SETUPS = f"""
defaults: {{repetitions: 2, warmup: 1, max_tokens: 24, temperature: 0, seed: 1, timeout: 120}}
tests:
  - id: capital
    prompt: What is the capital of France?
  - id: colour
    prompt: Name a colour and say why you like it.
  - id: count
    prompt: Count from one to ten in words.
setups:
  real: {list(MODELS)}
"""


def test_two_runs_of_the_same_model_compare_as_same(campaign: Campaign, gguf_dir: Path) -> None:  # noqa: F811
    campaign.config(engines={"llamacpp": {"python": sys.executable, "models_dir": str(gguf_dir), "n_threads": 1,
                                          "n_ctx": 512}},
                    timeouts={"start": 120, "stop": 20, "request": 120})
    campaign.setups(SETUPS)
    for upto in (2, 4, 6, 8):
        for out in ("a", "b"):
            where = ["--output", out] if upto == 2 else ["--resume", out]
            result = campaign.run("run", *where, "--repeat", str(upto))
            assert result.exit_code == 0, result.output

    result = campaign.run("compare", "a", "b", "--json")
    data = json.loads(result.stdout)
    figures = [(c["model"], c["test"], f["figure"], f["verdict"], f["change"], f["interval"])
               for c in data["cells"] for f in c["figures"]]
    not_same = [f for f in figures if f[3] != "same"]
    # "Nearly everything": a real engine on a shared machine may push a cell past the noise of 8 samples, either way
    # (CI once saw a TTFT of a few ms come out 53 % slower; once one cell's requests 9 % slower, which moved its E2E,
    # decode rate and output tok/s together, as they are read from the same requests). So changes are counted by cell:
    # two cells of six at most; more than that would be the verdict's fault.
    changed_cells = {(f[0], f[1]) for f in not_same}
    worse = [f for f in not_same if f[3] == "worse"]
    assert result.exit_code == (1 if worse else 0), f"exit 1 exactly when something got worse: {not_same}"
    assert data["environment"] == [], "same machine, engine, model and command line (but the output folder)"
    assert {(c["model"], c["test"]) for c in data["cells"]} == {
        (m, t) for m in MODELS for t in ("capital", "colour", "count")}
    # streamed: TTFT, E2E, decode rate, output tok/s; not streamed: E2E and output tok/s (no TTFT, no decode rate)
    assert len(figures) == 3 * 4 + 3 * 2, figures
    assert len(changed_cells) <= 2, f"more than a small fraction of unchanged cells was called a change: {not_same}"
    assert {(c["figures"][0]["n_a"], c["figures"][0]["n_b"]) for c in data["cells"]} == {(8, 8)}, \
        "the four parts of each resumed run are read as one"
    assert [f for f in figures if f[5] is None] == [], "8 samples a side is enough for an interval"

    text = campaign.run("compare", "a", "b")
    assert text.exit_code == result.exit_code
    assert "Environment: no differences" in text.output
    assert f"{data['counts']['same']} same over 18 figures in 6 cells" in text.output
