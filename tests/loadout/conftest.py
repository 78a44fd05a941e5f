"""Fixtures of the loadout tests against the real llama.cpp engine."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def real_gguf() -> Path:
    """SmolLM2-135M-Instruct's GGUF: `$JARVIS_TEST_GGUF`, or fetched once into `.cache/models`."""
    override = os.environ.get("JARVIS_TEST_GGUF")
    if override:
        return Path(override)
    target = REPO / ".cache" / "models" / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if not target.is_file():
        subprocess.run([sys.executable, str(REPO / "scripts" / "fetch-smollm2.py"), str(target.parent)], check=True,
                       timeout=600)
    return target


@pytest.fixture
def gguf(real_gguf, tmp_path) -> Path:
    """A path to the model of this test's own, so the servers of this test are told apart from any other's."""
    link = tmp_path / "models" / "smollm2.gguf"
    link.parent.mkdir()
    link.symlink_to(real_gguf)
    return link
