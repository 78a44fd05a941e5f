#!/usr/bin/env bash
# The main job: set everything up, then run the shipped test campaign (test_setups.yaml) with the real llama.cpp
# engine and write the Excel report. Ollama and vLLM setups show as unavailable or MISSING where those engines are
# absent. Extra arguments go to `jarvis run`.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
exec .venv/bin/jarvis run "$@"
