"""Test isolation: installed entry points are never loaded, and every test gets its own state, config and cwd.

The fixtures come from `jarvis_core.testing`, the helpers plugin authors use too: plugins under test are registered
inline with `use_plugin` and unregistered afterwards; `make_session` builds a Session over them.
"""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = ["jarvis_core.testing"]

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def isolated(jarvis_isolated: Path) -> Path:
    """Every test: a fresh state folder, user config folder and working directory; no plugin allow-list, no debug."""
    return jarvis_isolated
