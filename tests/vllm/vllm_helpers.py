"""Helpers for the vLLM tests: Hugging Face cache layouts as huggingface_hub writes them."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CACHE = REPO / ".cache"


def missing_prerequisite(why: str) -> None:
    """Skip with the reason; under CI=true, fail instead."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{why} (under CI=true a missing prerequisite fails instead of skipping)")
    pytest.skip(why)


def make_repo(hub: Path, repo_id: str, files: dict[str, bytes], *, revision: str = "a" * 40,
              incomplete: tuple[str, ...] = (), symlinks: bool = True) -> Path:
    """A model in the hub cache layout huggingface_hub writes: blobs, refs/main, snapshots/<rev>/ -> ../../blobs."""
    import hashlib

    folder = hub / ("models--" + repo_id.replace("/", "--"))
    snap = folder / "snapshots" / revision
    (folder / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    (folder / "refs").mkdir(exist_ok=True)
    (folder / "refs" / "main").write_text(revision)
    for name, data in files.items():
        digest = hashlib.sha256(data).hexdigest()
        blob = folder / "blobs" / digest
        blob.write_bytes(data)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        if symlinks:
            os.symlink(os.path.relpath(blob, link.parent), link)
        else:
            link.write_bytes(data)
    for name in incomplete:
        (folder / "blobs" / (name + ".incomplete")).write_bytes(b"partial")
    return snap


CONFIG = b'{"architectures": ["LlamaForCausalLM"], "model_type": "llama"}'


def sharded_index(*shards: str) -> bytes:
    import json

    return json.dumps({"metadata": {"total_size": 1},
                       "weight_map": {f"layer.{i}": s for i, s in enumerate(shards)}}).encode()
