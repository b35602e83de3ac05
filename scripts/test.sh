#!/usr/bin/env bash
# The test suite: sets up .venv if needed, lints with ruff, then runs every test (Ray stays on 127.0.0.1):
# three pytest-xdist workers on the 2 cores (the sweep tests spend much of their time waiting on process
# start-ups; the long tests go first; a worker whose tests need a Ray cluster starts its own), then the tests
# marked `serial` (they measure speed) alone. OTSR_TEST_WORKERS=0 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check otsr sweep tests cluster bench
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
workers=${OTSR_TEST_WORKERS:-3}
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25)
start=$SECONDS
rc=0
if [[ "$workers" == 0 ]]; then
  "${pytest[@]}" "$@" || rc=$?
else
  "${pytest[@]}" -n "$workers" --dist worksteal -m "not serial" "$@" || rc=$?
  serial=0
  "${pytest[@]}" -m serial "$@" || serial=$?
  [[ $serial == 5 ]] && serial=0  # 5: the selection holds no serial test
  [[ $rc == 0 ]] && rc=$serial
fi
echo "test suite wall time: $((SECONDS - start)) s (ruff and setup not included)"
exit $rc
