#!/usr/bin/env bash
# Install llama-cpp-python[server] (the real llama.cpp engine) into a venv.
#
# Usage: scripts/install-llamacpp.sh [VENV]      (default: .venv)
#
# Idempotent: exits at once when `python -c "import llama_cpp.server"` already works.
# The first build compiles llama.cpp from the sdist (~6 min on 2 cores); the build is
# portable (-DGGML_NATIVE=OFF) so pip's wheel cache can be reused on another machine of
# this kind (a reinstall from the cache takes seconds).
set -euo pipefail

VENV="${1:-.venv}"
PY="$VENV/bin/python"

if [ ! -x "$PY" ]; then
    echo "install-llamacpp: creating venv $VENV" >&2
    python3 -m venv "$VENV"
fi

if "$PY" -c "import llama_cpp.server" >/dev/null 2>&1; then
    echo "install-llamacpp: llama_cpp.server already importable in $VENV ($("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
    exit 0
fi

echo "install-llamacpp: installing llama-cpp-python[server] into $VENV (first build ~6 min)" >&2
start=$(date +%s)
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-2}" \
CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF}" \
    "$PY" -m pip install --quiet --disable-pip-version-check 'llama-cpp-python[server]'

"$PY" -c "import llama_cpp.server"
echo "install-llamacpp: done in $(( $(date +%s) - start )) s ($("$PY" -c 'import llama_cpp; print(llama_cpp.__version__)'))"
