"""Plain helpers of the llama.cpp plugin's tests (fixtures live in conftest.py).

Test modules import these by this module's unique name: several test folders have a conftest.py, so
`from conftest import ...` would pick whichever was imported first.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
try:
    import jarvis_llamacpp  # noqa: F401
except ImportError:  # not pip-installed: test it from the source tree
    sys.path.insert(0, str(REPO / "plugins" / "jarvis_llamacpp"))
from jarvis_llamacpp.models import KNOWN_MODELS  # noqa: E402

HERE = Path(__file__).resolve().parent
SMOLLM2 = KNOWN_MODELS["smollm2-135m"]


def missing_prerequisite(why: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (under CI=true a missing prerequisite fails instead of skipping)")
    pytest.skip(why)


def write_gguf(path: Path, size: int = 4096) -> Path:
    """A file that starts like a GGUF (enough for the stand-in; llama.cpp itself would refuse it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"GGUF" + b"\0" * (size - 4))
    return path
