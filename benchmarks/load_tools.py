"""Item 9, load tools side by side: Jarvis's load generator, `vllm bench serve` (installed with vLLM's CPU build in
.venv-vllm) and `servebench` (PyPI; installed on first use into .cache/servebench-venv), each against a fresh copy of
the same stand-in (tests/standins/load_server.py: 80 ms to the first token, then 19 more tokens 15 ms apart).

- achieved output tokens/s at 64 in flight ÷ the known maximum (64 × 20 / 0.365 s);
- TTFT error at 1 in flight: the tool's median TTFT − the stand-in's true 80 ms (the stand-in sends its role-only chunk
  at once, so a tool that ends TTFT at the first chunk reports about 0 and an error of about −80 ms).

A tool that cannot run here is reported as such, with the reason.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from benchmarks.common import PYTHON, REPO, Outcome
from benchmarks.load import GAP, PER_REQUEST, TOKENS, TTFT, _measure, _server

VLLM = REPO / ".venv-vllm" / "bin" / "vllm"
SERVEBENCH_VENV = REPO / ".cache" / "servebench-venv"
TOKENIZER_GLOB = ".cache/hf-hub/models--jarvis-test--tiny-llama/snapshots/*"


def _with_server(command: list[str], timeout: float = 600) -> subprocess.CompletedProcess[str]:
    server, url = _server()
    try:
        return subprocess.run([part.replace("{url}", url) for part in command], cwd=REPO, capture_output=True,
                              text=True, timeout=timeout, env={"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin",
                                                               "VLLM_NO_USAGE_STATS": "1", "DO_NOT_TRACK": "1"})
    finally:
        server.stdin.close()
        server.wait(timeout=30)


def _vllm(concurrency: int, prompts: int) -> dict[str, float]:
    if not VLLM.is_file():
        raise RuntimeError("vLLM's CPU build is missing (bash scripts/setup.sh --test)")
    tokenizers = sorted(REPO.glob(TOKENIZER_GLOB))
    if not tokenizers:  # the tiny model the vLLM tests serve: built offline in seconds, the same files every time
        made = subprocess.run([str(VLLM.parent / "python"), "scripts/make-tiny-hf-model.py",
                               str(REPO / ".cache" / "hf-hub")], cwd=REPO, capture_output=True, text=True,
                              timeout=600)
        tokenizers = sorted(REPO.glob(TOKENIZER_GLOB))
        if made.returncode != 0 or not tokenizers:
            raise RuntimeError(f"could not build the tiny tokenizer: {made.stderr.strip()[-300:]}")
    out = Path(tempfile.mkdtemp(prefix="jv-vb-"))
    done = _with_server([str(VLLM), "bench", "serve", "--backend", "openai-chat", "--base-url", "{url}",
                         "--endpoint", "/v1/chat/completions", "--model", "load-model", "--tokenizer",
                         str(tokenizers[-1]), "--dataset-name", "random", "--random-input-len", "16",
                         "--random-output-len", str(TOKENS), "--ignore-eos", "--num-prompts", str(prompts),
                         "--max-concurrency", str(concurrency), "--request-rate", "inf", "--save-result",
                         "--result-dir", str(out), "--result-filename", "r.json", "--disable-tqdm"])
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip()[-400:] or done.stdout.strip()[-400:])
    found = json.loads((out / "r.json").read_text())
    return {"output_tps": found["output_throughput"], "ttft_p50_s": found["median_ttft_ms"] / 1e3}


def _servebench(concurrency: int, requests: int) -> dict[str, float]:
    exe = SERVEBENCH_VENV / "bin" / "servebench"
    if not exe.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(SERVEBENCH_VENV)], check=True, timeout=120)
        installed = subprocess.run([str(SERVEBENCH_VENV / "bin" / "pip"), "install", "-q", "servebench==1.1.3"],
                                   capture_output=True, text=True, timeout=600)
        if installed.returncode != 0:
            raise RuntimeError(f"pip install servebench failed: {installed.stderr.strip()[-300:]}")
    out = Path(tempfile.mkdtemp(prefix="jv-sb-"))
    done = _with_server([str(exe), "run", "--url", "{url}/v1", "--model", "load-model", "--concurrency",
                         str(concurrency), "--num-requests", str(requests), "--input-len", "16", "--output-len",
                         str(TOKENS), "--ignore-eos", "--warmup", "2", "--no-gpu", "--csv", str(out / "levels.csv"),
                         "--out", str(out / "run.json")])
    if done.returncode != 0 or not (out / "levels.csv").is_file():
        raise RuntimeError(done.stderr.strip()[-400:] or done.stdout.strip()[-400:])
    row = next(csv.DictReader((out / "levels.csv").open()))
    return {"output_tps": float(row["out_tok_s"]), "ttft_p50_s": float(row["ttft_p50_ms"]) / 1e3}


def _jarvis(concurrency: int, requests: int) -> dict[str, float]:
    found = _measure("--concurrency", str(concurrency), "--requests", str(requests), "--warmup", str(concurrency),
                     "--ttft-truth")
    errors = sorted(found["ttft_errors"])
    return {"output_tps": found["output_tps"], "ttft_p50_s": TTFT + (errors[len(errors) // 2] if errors else 0.0)}


def run(quick: bool = False) -> Outcome:
    out = Outcome()
    best = 64 * TOKENS / PER_REQUEST
    requests = 192 if quick else 448
    for name, tool in (("Jarvis", _jarvis), ("vllm bench serve", _vllm), ("servebench", _servebench)):
        try:
            at_64 = tool(64, requests)
            at_1 = tool(1, 12 if quick else 30)
        except Exception as exc:  # noqa: BLE001 - a tool that cannot run here is a row, not a crash
            last = (str(exc).strip().splitlines() or [""])[-1]
            out.row(f"{name}: could not run", f"{type(exc).__name__}: {last[:140]}")
            continue
        share = at_64["output_tps"] / best
        error_ms = (at_1["ttft_p50_s"] - TTFT) * 1e3
        out.row(f"{name}: 64 in flight, achieved / known maximum ({best:.0f} tok/s)", f"{share:.1%}")
        out.row(f"{name}: 1 in flight, median TTFT − true {TTFT * 1e3:.0f} ms", f"{error_ms:+.2f} ms")
        out.raw[name] = {"achieved_share_64": share, "ttft_error_ms_1": error_ms, "gap_s": GAP}
    return out


if __name__ == "__main__":
    for row in run(quick="--quick" in sys.argv).rows:
        print(f"{row.figure}: {row.value}")
    print(PYTHON)
