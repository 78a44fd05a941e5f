"""The Hugging Face hub cache: where it is on each platform, and whether a model is completely in it.

Resolution (first match wins), as huggingface_hub itself does, plus Jarvis's `hf_cache` setting:
`HF_HUB_CACHE` -> `HUGGINGFACE_HUB_CACHE` -> `$HF_HOME/hub` -> `engines.vllm.hf_cache` -> `$XDG_CACHE_HOME/huggingface/hub`
-> `~/.cache/huggingface/hub` (Windows: `%USERPROFILE%\\.cache\\huggingface\\hub`).

Completeness is checked offline and never downloads: huggingface_hub finds the snapshot (and, on versions that keep a
cached tree listing, reports a partial one), then Jarvis checks what any version misses: no `blobs/*.incomplete`,
`config.json` present, and the weights (`model.safetensors`, or every shard that `model.safetensors.index.json`
lists; the `pytorch_model.bin` equivalents are accepted too).

Downloads (`pull`) go through the core's `hub_download` (jarvis_core/hub.py): the whole repo at the revision, on one
progress task, resumed after a dropped connection, Ctrl-C or a full disk instead of started again.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath
from typing import Mapping

WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
WEIGHT_INDEXES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


# --- where the cache is ----------------------------------------------------------------------------------------------


def _path_type(platform: str) -> type[PurePath]:
    if platform == "win32":
        return PureWindowsPath if os.name != "nt" else Path
    return Path if os.name != "nt" else PurePosixPath


def _home(environ: Mapping[str, str], platform: str) -> PurePath:
    cls = _path_type(platform)
    if platform == "win32":
        if environ.get("USERPROFILE"):
            return cls(environ["USERPROFILE"])
        if environ.get("HOMEDRIVE") and environ.get("HOMEPATH"):
            return cls(environ["HOMEDRIVE"] + environ["HOMEPATH"])
    elif environ.get("HOME"):
        return cls(environ["HOME"])
    return cls(os.path.expanduser("~"))


def _expand(value: str, environ: Mapping[str, str], platform: str) -> PurePath:
    cls = _path_type(platform)
    if value == "~" or value.startswith(("~/", "~\\")):
        return _home(environ, platform) / value[2:] if len(value) > 1 else _home(environ, platform)
    return cls(value)


def hf_home_dir(environ: Mapping[str, str], *, platform: str) -> PurePath:
    """`HF_HOME`, else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface` (`%USERPROFILE%` on Windows)."""
    if environ.get("HF_HOME"):
        return _expand(environ["HF_HOME"], environ, platform)
    if environ.get("XDG_CACHE_HOME"):
        return _expand(environ["XDG_CACHE_HOME"], environ, platform) / "huggingface"
    return _home(environ, platform) / ".cache" / "huggingface"


def hub_cache_dir(environ: Mapping[str, str], *, platform: str, configured: PurePath | None = None) -> PurePath:
    """The hub cache folder (the one holding `models--Org--Name`); environment variables win over `configured`."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if environ.get(var):
            return _expand(environ[var], environ, platform)
    if environ.get("HF_HOME"):
        return hf_home_dir(environ, platform=platform) / "hub"
    if configured is not None:
        return _expand(str(configured), environ, platform)
    return hf_home_dir(environ, platform=platform) / "hub"


# --- is a model complete in it ---------------------------------------------------------------------------------------


@dataclass
class CacheCheck:
    present: bool
    detail: str
    """Where the model was found, or why it is missing (one line)."""
    path: Path | None = None
    """The snapshot folder (or the local model folder)."""
    revision: str | None = None
    local_folder: bool = False
    partial: bool = False


def looks_like_path(name: str) -> bool:
    return (name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or bool(re.match(r"^[A-Za-z]:[\\/]", name))
            or name.count("/") > 1 or "\\" in name)


def is_repo_id(name: str) -> bool:
    return bool(_REPO_ID.match(name)) and ".." not in name and not name.endswith((".", "-"))


def check_model(name: str, hub_cache: PurePath, *, revision: str | None = None) -> CacheCheck:
    """Is `name` (a hub repo ID or a local model folder) completely present? Never touches the network."""
    local = Path(os.path.expanduser(name))
    if local.is_dir():
        return _check_folder(local.resolve(), f"local folder {local.resolve()}", local_folder=True)
    if looks_like_path(name):
        return CacheCheck(False, f"no model folder at {name}")
    if not is_repo_id(name):
        return CacheCheck(False, f"'{name}' is neither a Hugging Face repo ID (Org/Name) nor an existing folder")
    return _check_repo(name, Path(hub_cache), revision)


def repo_dir(repo_id: str, hub_cache: PurePath) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return Path(hub_cache) / repo_folder_name(repo_id=repo_id, repo_type="model")


def _check_repo(repo_id: str, hub_cache: Path, revision: str | None) -> CacheCheck:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    folder = repo_dir(repo_id, hub_cache)
    if not folder.is_dir():
        return CacheCheck(False, f"{repo_id} is not in the Hugging Face cache at {hub_cache}")
    incomplete = sorted(p.name for p in (folder / "blobs").glob("*.incomplete")) if (folder / "blobs").is_dir() else []
    if incomplete:
        return CacheCheck(False, f"{repo_id} is only partly downloaded ({len(incomplete)} unfinished file"
                                 f"{'s' if len(incomplete) != 1 else ''} in {folder / 'blobs'})", partial=True)
    try:
        snapshot = Path(snapshot_download(repo_id, revision=revision, cache_dir=str(hub_cache),
                                          local_files_only=True))
    except LocalEntryNotFoundError as exc:  # IncompleteSnapshotError is a subclass (huggingface_hub >= 1.22)
        if hasattr(exc, "snapshot_path"):
            return CacheCheck(False, f"{repo_id} is only partly downloaded (files missing from "
                                     f"{getattr(exc, 'snapshot_path')})", partial=True)
        what = f"revision {revision} of {repo_id}" if revision else f"{repo_id} (no snapshot for refs/main)"
        return CacheCheck(False, f"{what} is not in the Hugging Face cache at {hub_cache}")
    except (OSError, ValueError) as exc:  # corrupted ref files, bad revision names
        return CacheCheck(False, f"{repo_id}: cannot read its cache folder {folder}: {exc}")
    return _check_folder(snapshot, f"{repo_id} at {snapshot}", revision=snapshot.name)


def _check_folder(folder: Path, where: str, *, revision: str | None = None, local_folder: bool = False) -> CacheCheck:
    def missing(what: str) -> CacheCheck:
        return CacheCheck(False, f"{where} is incomplete: {what}", path=folder, revision=revision,
                          local_folder=local_folder, partial=True)

    if not (folder / "config.json").is_file():  # is_file() follows the snapshot's symlink: a dangling one is missing
        return missing("config.json is missing")
    for index_name in WEIGHT_INDEXES:
        index = folder / index_name
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map") or {}
                shards = sorted({str(v) for v in weight_map.values()})
            except (OSError, ValueError, AttributeError) as exc:
                return missing(f"{index_name} is unreadable ({exc})")
            if not shards:
                return missing(f"{index_name} lists no weight files")
            absent = [s for s in shards if not (folder / s).is_file()]
            if absent:
                return missing(f"{len(absent)} of {len(shards)} weight shards are missing (first: {absent[0]})")
            return CacheCheck(True, where, path=folder, revision=revision, local_folder=local_folder)
    if any((folder / w).is_file() for w in WEIGHT_FILES):
        return CacheCheck(True, where, path=folder, revision=revision, local_folder=local_folder)
    return missing("no weights (model.safetensors or model.safetensors.index.json)")
