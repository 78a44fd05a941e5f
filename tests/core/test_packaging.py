"""Packaging and docs that hold outside this repository (issue 12, item 8).

- The version is written once, in the package's `__version__`; every pyproject takes it from there (setuptools
  dynamic version), and the installed metadata says the same.
- Plugins bound their `jarvis-core` requirement (the plugin contract changes between minor releases) and their own
  dependencies.
- Nothing that ships or is documented points outside the repository (`../shared/...`), and every `.md` file a
  docstring names exists here.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.version import Version

import jarvis_core

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

ROOT = Path(__file__).resolve().parents[2]
PLUGIN_DIRS = sorted(p.parent for p in ROOT.glob("plugins/*/pyproject.toml"))


def _pyproject(folder: Path) -> dict:
    return tomllib.loads((folder / "pyproject.toml").read_text(encoding="utf-8"))


def _static_version(init: Path) -> str | None:
    """`__version__` as setuptools' `attr:` reads it: a literal assignment at module level, without importing."""
    for node in ast.parse(init.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__version__"
                                                for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def _assert_dynamic_version(folder: Path, package: str) -> str:
    data = _pyproject(folder)
    project = data["project"]
    where = folder.relative_to(ROOT) / "pyproject.toml"
    assert "version" not in project, f"{where}: the version is written there; take it from {package}.__version__"
    assert "version" in project.get("dynamic", []), f"{where}: `dynamic` must list version"
    attr = data.get("tool", {}).get("setuptools", {}).get("dynamic", {}).get("version", {}).get("attr")
    assert attr == f"{package}.__version__", f"{where}: [tool.setuptools.dynamic] version must be {package}.__version__"
    version = _static_version(folder / package / "__init__.py")
    assert version is not None, f"{package}/__init__.py has no literal __version__"
    Version(version)  # a valid version
    return version


def _requirements(folder: Path) -> list[Requirement]:
    return [Requirement(r) for r in _pyproject(folder)["project"].get("dependencies", [])]


def _upper_bounded(req: Requirement) -> bool:
    return any(s.operator in ("<", "<=", "==", "~=", "===") for s in req.specifier)


def _lower_bounded(req: Requirement) -> bool:
    return any(s.operator in (">", ">=", "==", "~=", "===") for s in req.specifier)


# --- the version, written once ----------------------------------------------------------------------------------------


def test_core_version_comes_from_the_package() -> None:
    assert _assert_dynamic_version(ROOT, "jarvis_core") == jarvis_core.__version__


def test_installed_core_metadata_says_the_package_version() -> None:
    # The venv holds an editable install: its metadata was written when it was installed. A differing version means
    # __version__ changed since: reinstall (`pip install -e .`).
    assert importlib.metadata.version("jarvis-core") == jarvis_core.__version__


@pytest.mark.parametrize("folder", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_version_comes_from_its_package(folder: Path) -> None:
    version = _assert_dynamic_version(folder, folder.name)
    name = _pyproject(folder)["project"]["name"]
    try:
        installed = importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{name} is not installed")
    assert installed == version, f"{name}: installed {installed}, package says {version}; reinstall it"


def test_build_requirements_support_the_metadata_used() -> None:
    # `license = "SPDX expression"` (PEP 639) needs setuptools 77; dynamic versions from an attribute need 61.
    for folder in [ROOT, *PLUGIN_DIRS]:
        data = _pyproject(folder)
        assert data["build-system"]["build-backend"] == "setuptools.build_meta"
        setuptools = next(Requirement(r) for r in data["build-system"]["requires"]
                          if Requirement(r).name == "setuptools")
        if isinstance(data["project"].get("license"), str):
            assert not setuptools.specifier.contains("77.0.2"), \
                f"{folder.name}: a license expression needs setuptools>=77.0.3"
        assert not setuptools.specifier.contains("60.9"), f"{folder.name}: dynamic version needs setuptools>=61"


# --- plugins bound what they depend on --------------------------------------------------------------------------------


@pytest.mark.parametrize("folder", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_bounds_jarvis_core(folder: Path) -> None:
    core = [r for r in _requirements(folder) if r.name == "jarvis-core"]
    assert len(core) == 1, f"{folder.name} must require jarvis-core"
    spec = core[0].specifier
    assert _lower_bounded(core[0]) and _upper_bounded(core[0]), f"{folder.name}: bound jarvis-core both ways ({spec})"
    current = Version(jarvis_core.__version__)
    assert spec.contains(current), f"{folder.name}: {spec} excludes this jarvis-core ({current})"
    following = Version(f"0.{current.minor + 1}" if current.major == 0 else f"{current.major + 1}")
    assert not spec.contains(following), f"{folder.name}: {spec} admits jarvis-core {following}, a new plugin contract"


@pytest.mark.parametrize("folder", PLUGIN_DIRS, ids=lambda p: p.name)
def test_plugin_bounds_its_own_dependencies(folder: Path) -> None:
    loose = [str(r) for r in _requirements(folder) if not (_lower_bounded(r) and _upper_bounded(r))]
    assert not loose, f"{folder.name}: dependencies without a lower and an upper bound: {loose}"
    for extra, reqs in _pyproject(folder)["project"].get("optional-dependencies", {}).items():
        loose = [r for r in reqs if not (_lower_bounded(Requirement(r)) and _upper_bounded(Requirement(r)))]
        assert not loose, f"{folder.name}[{extra}]: dependencies without a lower and an upper bound: {loose}"


# --- docs that hold outside this repository ---------------------------------------------------------------------------


def _shipped_and_documented() -> list[Path]:
    files = [*ROOT.glob("jarvis_core/**/*"), *ROOT.glob("docs/**/*")]
    for folder in PLUGIN_DIRS:
        files += folder.glob(f"{folder.name}/**/*")
    return sorted(f for f in files if f.is_file() and "__pycache__" not in f.parts and f.suffix != ".pyc")


def test_nothing_points_outside_the_repository() -> None:
    outside = re.compile(r"\.\./shared|shared/reference")
    hits = []
    for f in _shipped_and_documented():
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        hits += [f"{f.relative_to(ROOT)}:{n}" for n, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert not hits, f"references to files outside the repository: {hits}"


def test_markdown_files_named_in_code_exist() -> None:
    """A docstring or comment that names a `.md` file names one in this repository, by its path from the root
    (docs/metrics.md), so a reader of the installed package knows where to look."""
    named = re.compile(r"(?<![\w./-])([\w./-]+\.md)\b")
    missing = []
    for f in _shipped_and_documented():
        if f.suffix != ".py":
            continue
        for n, line in enumerate(f.read_text(encoding="utf-8").splitlines(), 1):
            for name in named.findall(line):
                if name.startswith("..") or not (ROOT / name).is_file():
                    missing.append(f"{f.relative_to(ROOT)}:{n}: {name}")
    assert not missing, f".md files named but not in the repository (give the path from the root): {missing}"


def test_doc_links_resolve() -> None:
    link = re.compile(r"\]\(([^)#\s]+\.md)(?:#[^)]*)?\)")
    broken = []
    for f in sorted(ROOT.glob("docs/*.md")):
        for target in link.findall(f.read_text(encoding="utf-8")):
            if "://" not in target and not (f.parent / target).resolve().is_file():
                broken.append(f"{f.relative_to(ROOT)}: {target}")
    assert not broken, f"broken links: {broken}"
