"""Models on disk, read while the server is down: a model is present when its manifest exists and
every blob it references is there; an interrupted download (missing or `-partial` blob) is not a model.

    <models_dir>/manifests/<host>/<namespace>/<model>/<tag>     JSON, schemaVersion 2
    <models_dir>/blobs/sha256-<64 hex>
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .names import parse_name


@dataclass
class DiskModel:
    models_dir: Path
    manifest: Path
    digest: str
    """sha256 of the manifest file, as `/api/tags` reports it."""
    size: int
    """Sum of the layer sizes the manifest declares, in bytes."""
    manifest_data: dict[str, Any] | None = None

    @property
    def layers(self) -> list[dict[str, Any]]:
        layers = (self.manifest_data or {}).get("layers") or []
        return [layer for layer in layers if isinstance(layer, dict)]

    def capabilities(self) -> tuple[str, ...] | None:
        """What the model can do, as Ollama would tell from these files: vision when a projector layer is there or
        the weights carry a vision encoder; embedding-only when the weights declare a pooling type."""
        weights = next((layer for layer in self.layers if layer.get("mediaType") == MEDIA_MODEL), None)
        if weights is None:
            return None
        try:
            meta = gguf_metadata(blob_path(self.models_dir, weights["digest"]))
        except (OSError, ValueError, struct.error):
            meta = None
        if meta is None:
            return None
        arch = meta.get("general.architecture")
        caps = ["embedding" if f"{arch}.pooling_type" in meta else "completion"]
        if any(layer.get("mediaType") == MEDIA_PROJECTOR for layer in self.layers) or \
                f"{arch}.vision.block_count" in meta:
            caps.append("vision")
        return tuple(caps)


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


MEDIA_MODEL = "application/vnd.ollama.image.model"
MEDIA_PROJECTOR = "application/vnd.ollama.image.projector"
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9


def gguf_metadata(path: Path, limit: int = 256 << 20) -> dict[str, Any] | None:
    """The key/values of a GGUF file's header (arrays are skipped: their value is None). None if not GGUF."""
    with open(path, "rb") as fh:
        if fh.read(4) != b"GGUF":
            return None
        version, = struct.unpack("<I", fh.read(4))
        if version < 2:
            return None
        _tensors, count = struct.unpack("<QQ", fh.read(16))

        def number(fmt: str) -> Any:
            return struct.unpack(fmt, fh.read(struct.calcsize(fmt)))[0]

        def string() -> str:
            length = number("<Q")
            if length > limit:
                raise ValueError("GGUF string too long")
            return fh.read(length).decode("utf-8", "replace")

        def skip(kind: int) -> None:
            if kind == _GGUF_STRING:
                fh.seek(number("<Q"), os.SEEK_CUR)
            elif kind == _GGUF_ARRAY:
                inner, n = number("<I"), number("<Q")
                if inner in _GGUF_SCALARS:
                    fh.seek(n * struct.calcsize(_GGUF_SCALARS[inner]), os.SEEK_CUR)
                else:
                    for _ in range(n):
                        skip(inner)
            else:
                fh.seek(struct.calcsize(_GGUF_SCALARS[kind]), os.SEEK_CUR)

        meta: dict[str, Any] = {}
        for _ in range(min(count, 100_000)):
            key = string()
            kind = number("<I")
            if kind == _GGUF_STRING:
                meta[key] = string()
            elif kind in _GGUF_SCALARS:
                meta[key] = number(_GGUF_SCALARS[kind])
            elif kind == _GGUF_ARRAY:
                skip(kind)
                meta[key] = None
            else:
                raise ValueError(f"unknown GGUF value type {kind}")
            if fh.tell() > limit:
                break
        return meta


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
    return DiskModel(models_dir, path, hashlib.sha256(raw).hexdigest(), size, manifest)


def locate(models_dirs: list[Path], name: str) -> DiskModel | None:
    for models_dir in models_dirs:
        found = find_model(models_dir, name)
        if found is not None:
            return found
    return None
