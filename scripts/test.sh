#!/usr/bin/env bash
# Set up, then run every test: the quick suite and the integration tests against real engines (llama.cpp, vLLM's
# CPU build, a private Docker engine the tests start themselves). Extra arguments go to pytest
# (e.g. `-m "not integration"` for the quick suite alone).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh --test
set +e
.venv/bin/python -m pytest "$@"
rc=$?
set -e
if [ "$rc" = 5 ]; then
    echo "test.sh: pytest collected no tests" >&2
fi
exit "$rc"
