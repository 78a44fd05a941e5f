"""One GPU, simulated: a fake `nvidia-smi` on PATH reports an H100 whose memory is held while the vLLM-like stand-in
that Jarvis started runs. vLLM is GPU-heavy, so before Ollama starts it is stopped and its memory confirmed back; a
GPU whose memory does not come back is reported as such. The environment records the GPU."""

from __future__ import annotations

import re
import sys

import yaml

from tests.run.conftest import MARK, Campaign, records

GPU_NAME = "NVIDIA H100 80GB HBM3"
TOTAL_MIB = 81559
HELD_MIB, IDLE_MIB = 70_000, 600

NVIDIA_SMI = f'''#!{sys.executable}
"""Fake nvidia-smi: GPU memory is held while a vLLM stand-in of this test runs, or while a STUCK file exists."""
import os, sys
import psutil

mark = os.environ.get({MARK!r})
here = os.path.dirname(os.path.abspath(__file__))
held = os.path.exists(os.path.join(here, "STUCK"))
for proc in psutil.process_iter(["cmdline"]):
    if held:
        break
    try:
        if "tests.standins.openai_server" in (proc.info["cmdline"] or []) and proc.environ().get({MARK!r}) == mark \\
                and proc.status() != psutil.STATUS_ZOMBIE:
            held = True
    except psutil.Error:
        pass
if "--query-gpu=driver_version" in sys.argv:
    print("580.82.07")
    sys.exit(0)
if "--query-gpu=index,name,memory.used,memory.total" not in sys.argv:
    sys.exit("fake nvidia-smi: unexpected arguments " + " ".join(sys.argv[1:]))
print(f"0, {GPU_NAME}, {{{HELD_MIB} if held else {IDLE_MIB}}}, {TOTAL_MIB}")
'''


def fake_gpu(campaign: Campaign) -> None:
    smi = campaign.bin_dir / "nvidia-smi"
    smi.write_text(NVIDIA_SMI)
    smi.chmod(0o755)


def prepare(campaign: Campaign, stop: float = 2) -> None:
    fake_gpu(campaign)
    campaign.ollama_model("qwen2.5:0.5b")
    campaign.hf_model("Org/Good")
    path = campaign.config(timeouts={"start": 30, "stop": stop, "request": 30})
    config = yaml.safe_load(path.read_text())
    config["engines"]["vllm"]["gpus"] = "all"  # the engine is given the GPU, so its memory is what is checked
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    campaign.setups("defaults: {repetitions: 1}\n"
                    "tests:\n  - {id: t, prompt: 'What is the capital of France?', check: {contains: Paris}}\n"
                    "setups:\n  one: ['vllm:Org/Good#stream', 'ol_qwen2.5:0.5b#stream']\n")


def test_gpu_heavy_engine_is_stopped_and_its_memory_confirmed_back_before_ollama_starts(campaign: Campaign) -> None:
    prepare(campaign)
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    ollama = lines.index("[one] ol_qwen2.5:0.5b#stream")
    stopped = next(i for i, line in enumerate(lines) if line.startswith("  stopped vllm:"))
    starting = next(i for i, line in enumerate(lines) if line.startswith("Starting ollama serve"))
    assert ollama < stopped < starting, "vLLM is stopped before Ollama starts"
    assert lines[stopped].endswith("; memory confirmed back"), lines[stopped]
    found = records(campaign.root / "out" / "results.jsonl")
    assert found[0]["gpu"] == f"{GPU_NAME} ({TOTAL_MIB} MiB)" and found[0]["gpu_driver"] == "580.82.07"
    # what exactly was measured, for `jarvis compare`: Ollama's digest of the model
    warmups = {r["model"]: r for r in found if r["type"] == "warmup"}
    assert re.fullmatch(r"(sha256[:-])?[0-9a-f]{12,64}", warmups["ol_qwen2.5:0.5b#stream"]["revision"])


def test_memory_that_does_not_come_back_is_reported(campaign: Campaign) -> None:
    prepare(campaign, stop=0.5)
    # this engine leaves its memory held when it exits (a driver that does not give it back)
    wrapper = campaign.vllm_exe.read_text()
    campaign.vllm_exe.write_text(wrapper.replace("\nexec ", f"\ntouch '{campaign.bin_dir / 'STUCK'}'\nexec ", 1))
    result = campaign.run("run", "--output", "out")
    assert result.exit_code == 0, result.output
    stopped = [line for line in result.output.splitlines() if line.startswith("  stopped vllm:")]
    assert stopped and stopped[0].endswith("; memory NOT back yet"), stopped
