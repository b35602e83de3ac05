#!/usr/bin/env bash
# The test suite: sets up .venv if needed, lints with ruff, then runs every test (Ray stays on 127.0.0.1).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check otsr sweep tests cluster bench
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
start=$SECONDS
rc=0
.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25 "$@" || rc=$?
echo "test suite wall time: $((SECONDS - start)) s (ruff and setup not included)"
exit $rc
