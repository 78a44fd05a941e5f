"""A `jarvis run` killed with SIGKILL while vLLM's docker runtime serves: the container Jarvis started keeps running,
`jarvis cleanup` removes it, and a foreign container of the same image survives.

Integration (`-m integration`): a private Docker engine started by the test (scripts/dockerd.sh, needs root) and the
local image that plays vllm/vllm-openai (scripts/build-standin-image.sh, no registry). A missing prerequisite skips,
except under CI=true, where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pytest

from jarvis_core.state import StateStore

from tests.run.conftest import REPO, Campaign, free_port, stop_process, timed_samples, wait_for

pytestmark = pytest.mark.integration

# The same short folder as tests/vllm's daemon (see vllm_fixtures.DOCKER_DIR): one daemon at a time.
DOCKER_DIR = Path(tempfile.gettempdir()) / f"jarvis-test-dockerd-{os.getuid() if hasattr(os, 'getuid') else 0}"
IMAGE_CACHE = REPO / ".cache" / "docker-images"
IMAGE, TAG = "local/vllm-standin", "test"


def missing_prerequisite(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (under CI=true a missing prerequisite fails instead of skipping)")
    pytest.skip(why)


def _script(*args: str, timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="module")
def docker_host() -> Iterator[str]:
    if os.geteuid() != 0:
        missing_prerequisite("the Docker test needs root to run its own dockerd")
    if not (shutil.which("dockerd") or Path("/usr/bin/apt-get").exists()):
        missing_prerequisite("no dockerd and no apt-get to install docker.io")
    script = str(REPO / "scripts" / "dockerd.sh")
    started = _script(script, "start", str(DOCKER_DIR), timeout=600)
    if started.returncode != 0:
        missing_prerequisite(f"scripts/dockerd.sh start failed: {started.stderr.strip()[-800:]}")
    host = started.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        built = _script(str(REPO / "scripts" / "build-standin-image.sh"), str(IMAGE_CACHE), timeout=900,
                        env={"DOCKER_HOST": host})
        if built.returncode != 0:
            missing_prerequisite(f"scripts/build-standin-image.sh failed: {built.stderr.strip()[-800:]}")
        yield host
    finally:
        _script(script, "stop", str(DOCKER_DIR), timeout=120)


def test_sigkill_leaves_the_container_and_cleanup_removes_only_it(campaign: Campaign, docker_host: str) -> None:
    import docker

    name = f"jarvis-run-test-{time.monotonic_ns() % 10**9}"
    client = docker.DockerClient(base_url=docker_host, timeout=60)
    foreign = client.containers.run(f"{IMAGE}:{TAG}", ["Org/Foreign", "--host", "0.0.0.0", "--port", "8000"],
                                    name=f"{name}-foreign", detach=True)
    proc = None
    try:
        campaign.hf_model("Org/Good")
        campaign.config(engines={"vllm": {"runtime": "docker", "image": IMAGE, "tag": TAG, "gpus": "none",
                                          "docker_host": docker_host, "container_name": name, "port": free_port(),
                                          "shm_size": "64m",
                                          "models": {"Org/Good": {"extra_args": ["--token-delay", "0.05"]}}}})
        campaign.setups("defaults: {repetitions: 20, warmup: 1, max_tokens: 16}\n"
                        "tests:\n  - {id: t, prompt: 'What is the capital of France?', check: {contains: Paris}}\n"
                        "setups: ['vllm:Org/Good#stream']\n")
        out = campaign.root / "out"
        proc = campaign.spawn("run", "--output", "out", JARVIS_LOAD_PLUGINS="vllm")
        wait_for(lambda: timed_samples(out / "results.jsonl") or proc.poll() is not None, 120, "the first sample")
        assert proc.poll() is None, campaign.output()
        proc.kill()
        proc.wait(timeout=10)

        ours = client.containers.get(name)
        assert ours.status == "running" and ours.labels.get("jarvis.managed") == "true"
        assert [r.kind for r in StateStore(campaign.state_dir).records()] == ["container"]

        cleaned = campaign.jarvis("cleanup", JARVIS_LOAD_PLUGINS="vllm", DOCKER_HOST=docker_host, timeout=120)
        assert cleaned.returncode == 0, cleaned.stdout + cleaned.stderr
        assert name in cleaned.stdout
        assert [c.name for c in client.containers.list(all=True, filters={"name": name})
                if c.name == name] == [], "Jarvis's container is removed"
        foreign.reload()
        assert foreign.status == "running", "a container Jarvis did not start survives the cleanup"
        assert StateStore(campaign.state_dir).records() == []
    finally:
        if proc is not None:
            stop_process(proc)
        for container in client.containers.list(all=True):
            if container.name.startswith(name):
                container.remove(force=True)
        client.close()
