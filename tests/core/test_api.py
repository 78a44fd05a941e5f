"""`jarvis_core.api`, the plugins' interface, loads each name from its home module on first use: every exported name
resolves to the very object of its home module, the three lists of names (`__all__`, the home table, the imports
type checkers read) agree, and a name it does not export is an ordinary ImportError."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import jarvis_core.api as api

API_SOURCE = Path(api.__file__).read_text(encoding="utf-8")


def _type_checking_names() -> set[str]:
    tree = ast.parse(API_SOURCE)
    block = next(node for node in tree.body if isinstance(node, ast.If) and getattr(node.test, "id", "") ==
                 "TYPE_CHECKING")
    return {alias.asname or alias.name for node in block.body if isinstance(node, ast.ImportFrom)
            for alias in node.names}


def test_the_three_lists_of_names_agree():
    assert len(api.__all__) == len(set(api.__all__)), "a name listed twice"
    assert set(api.__all__) == set(api._HOMES) == _type_checking_names()


@pytest.mark.parametrize("name", api.__all__)
def test_every_name_is_its_home_modules_object(name):
    home = importlib.import_module(f"jarvis_core.{api._HOMES[name]}")
    assert getattr(api, name) is getattr(home, api._RENAMED.get(name, name))


def test_names_load_on_first_use_only():
    code = ("import sys; from jarvis_core.api import EngineSpec, hookimpl\n"
            "before = 'jarvis_core.state' in sys.modules\n"
            "from jarvis_core.api import StateStore\n"
            "print(before, 'jarvis_core.state' in sys.modules, StateStore.__module__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "jarvis_core.state"]


def test_an_unknown_name_is_an_import_error():
    with pytest.raises(ImportError, match="no_such_thing"):
        from jarvis_core.api import no_such_thing  # noqa: F401
    with pytest.raises(AttributeError):
        api.no_such_thing  # noqa: B018
    assert set(api.__all__) <= set(dir(api))
