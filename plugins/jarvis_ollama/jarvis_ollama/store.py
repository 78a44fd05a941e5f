"""Models on disk, read while the server is down (engines.md §1.10): a model is present when its manifest exists and
every blob it references is there; an interrupted download (missing or `-partial` blob) is not a model.

    <models_dir>/manifests/<host>/<namespace>/<model>/<tag>     JSON, schemaVersion 2
    <models_dir>/blobs/sha256-<64 hex>
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from .names import parse_name


@dataclass
class DiskModel:
    models_dir: Path
    manifest: Path
    digest: str
    """sha256 of the manifest file, as `/api/tags` reports it."""
    size: int
    """Sum of the layer sizes the manifest declares, in bytes."""


def default_models_dirs(environ: os._Environ[str] | dict[str, str] | None = None,
                        platform: str | None = None) -> list[Path]:
    """Where Ollama keeps models when OLLAMA_MODELS is not set, most likely first."""
    env = os.environ if environ is None else environ
    platform = sys.platform if platform is None else platform
    dirs: list[Path] = []
    if platform == "win32":
        profile = env.get("USERPROFILE")
        if profile:
            dirs.append(Path(profile) / ".ollama" / "models")
    home = env.get("HOME") or (env.get("USERPROFILE") if platform == "win32" else None)
    dirs.append((Path(home) if home else Path.home()) / ".ollama" / "models")
    if platform.startswith("linux"):
        dirs.append(Path("/usr/share/ollama/.ollama/models"))  # the install script's systemd service
    unique: list[Path] = []
    for d in dirs:
        if d not in unique:
            unique.append(d)
    return unique


def candidate_dirs(models_dir: Path | None) -> list[Path]:
    """The folders to look in: the configured one (config.yaml or OLLAMA_MODELS) alone, else the defaults."""
    return [models_dir] if models_dir is not None else default_models_dirs()


def _manifest_path(models_dir: Path, name: str) -> Path | None:
    parts = parse_name(name).parts
    root = models_dir / "manifests"
    exact = root.joinpath(*parts)
    if exact.is_file():
        return exact
    # Ollama compares names without regard to case; find a differently-cased spelling on a case-sensitive disk.
    current = root
    for part in parts:
        try:
            match = next((p for p in current.iterdir() if p.name.lower() == part.lower()), None)
        except OSError:
            return None
        if match is None:
            return None
        current = match
    return current if current.is_file() else None


def blob_path(models_dir: Path, digest: str) -> Path:
    return models_dir / "blobs" / digest.replace(":", "-")


def find_model(models_dir: Path, name: str) -> DiskModel | None:
    """The model if it is completely on disk in `models_dir`, else None (missing, partial or unreadable)."""
    try:
        path = _manifest_path(models_dir, name)
        if path is None:
            return None
        raw = path.read_bytes()
        manifest = json.loads(raw)
    except (OSError, ValueError):
        return None
    if not isinstance(manifest, dict):
        return None
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        return None
    entries = ([manifest["config"]] if manifest.get("config") is not None else []) + layers
    size = 0
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            return None
        blob = blob_path(models_dir, entry["digest"])
        try:
            if not blob.is_file():
                return None
        except OSError:
            return None
        if isinstance(entry.get("size"), int):
            size += entry["size"]
    return DiskModel(models_dir, path, hashlib.sha256(raw).hexdigest(), size)


def locate(models_dirs: list[Path], name: str) -> DiskModel | None:
    for models_dir in models_dirs:
        found = find_model(models_dir, name)
        if found is not None:
            return found
    return None
