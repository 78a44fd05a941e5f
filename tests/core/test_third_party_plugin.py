"""A third-party plugin distribution, built and installed into a throwaway environment: its prefix routes, and
uninstalling it removes it. This runs pip for real (the package registry only), so it is an integration test."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _example_plugin_source() -> str:
    doc = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    return re.search(r"`jarvis_echo.py`:\n\n```python\n(.*?)```", doc, re.S).group(1)


@pytest.mark.integration
def test_install_routes_and_uninstall_removes(tmp_path):
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=True, system_site_packages=False)
    bindir = env_dir / ("Scripts" if sys.platform == "win32" else "bin")
    python = str(bindir / "python")

    plugin = tmp_path / "jarvis-echo"
    plugin.mkdir()
    (plugin / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=69"]\nbuild-backend = "setuptools.build_meta"\n\n'
        '[project]\nname = "jarvis-echo"\nversion = "0.1.0"\ndependencies = ["jarvis-core"]\n\n'
        '[tool.setuptools]\npy-modules = ["jarvis_echo"]\n\n'
        '[project.entry-points.jarvis]\necho = "jarvis_echo"\n')
    (plugin / "jarvis_echo.py").write_text(_example_plugin_source())

    def pip(*args: str) -> None:
        subprocess.run([python, "-m", "pip", "-q", *args], check=True, timeout=600)

    def jarvis(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(bindir / "jarvis"), *args], capture_output=True, text=True, timeout=120,
                              cwd=tmp_path)

    pip("install", str(REPO))
    assert jarvis("resolve", "echo_hello:1").returncode == 2  # no such prefix yet

    pip("install", str(plugin))
    listed = json.loads(jarvis("plugins", "--json").stdout)
    assert [(p["name"], p["distribution"], p["prefixes"]) for p in listed] == [("echo", "jarvis-echo", ["echo_"])]
    routed = jarvis("resolve", "ECHO_hello:1#stream", "--json")
    assert routed.returncode == 0, routed.stderr
    assert json.loads(routed.stdout) == {"engine": "echo", "model": "hello:1", "flags": {"stream": True},
                                         "canonical": "echo_hello:1#stream"}

    # The whole lifecycle through `jarvis run`: detect, is_available, start, warmup (the core's `warm`), infer, stop.
    (tmp_path / "config.yaml").write_text("engines:\n  echo:\n    models: ['hello:1']\n")
    (tmp_path / "test_setups.yaml").write_text(
        "defaults: {repetitions: 2}\ntests:\n  - {id: rev, prompt: 'abc', check: {equals: cba}}\n"
        "setups:\n  echo: {models: ['echo_hello:1', 'echo_absent:1']}\n")
    ran = jarvis("run", "--output", "out", "--json")
    assert ran.returncode == 0, ran.stderr
    cells = {c["model"]: (c["status"], c["ok"]) for c in json.loads(ran.stdout)["cells"]}
    assert cells == {"echo_hello:1": ("ok", 2), "echo_absent:1": ("missing", 0)}

    pip("uninstall", "-y", "jarvis-echo")
    assert json.loads(jarvis("plugins", "--json").stdout) == []
    gone = jarvis("resolve", "echo_hello:1")
    assert gone.returncode == 2 and "no installed plugin provides" in gone.stderr
