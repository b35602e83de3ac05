#!/usr/bin/env bash
# The test suite: sets up .venv if needed, lints with ruff, then runs every test (Ray stays on 127.0.0.1):
# two pytest-xdist workers, one per core, with work stealing (each starts on its share of the list, the long
# tests first, and takes from the other's when done; a worker whose tests need a Ray cluster starts its own).
# Measured quiet on a clean clone: 626-633 s (2026-12-07, evening; the machine's speed varies between sessions:
# 906 s earlier that day); on one day, three workers 1,005 s and two handed one test at a time (--dist load) 1,040 s, as
# both then ran Ray-cluster sweeps at once. Then the tests marked `serial` (they measure speed) alone. Arguments (test
# paths, -k, -m ...) select what runs, in one parallel pass. OTSR_TEST_WORKERS=0 runs everything in one process.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check otsr sweep tests cluster bench scripts
export RAY_AUTH_MODE=disabled RAY_USAGE_STATS_ENABLED=0 RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0
workers=${OTSR_TEST_WORKERS:-2}
pytest=(.venv/bin/python -m pytest -q -p no:cacheprovider --durations=25)
parallel=(-n "$workers" --dist worksteal)
start=$SECONDS
rc=0
if [[ "$workers" == 0 ]]; then
  "${pytest[@]}" "$@" || rc=$?
elif [[ $# -gt 0 ]]; then
  "${pytest[@]}" "${parallel[@]}" "$@" || rc=$?
else
  "${pytest[@]}" "${parallel[@]}" -m "not serial" || rc=$?
  if [[ $rc == 0 || $rc == 1 ]]; then  # 2-4: interrupted or a usage error: stop here
    serial=0
    "${pytest[@]}" -m serial || serial=$?
    [[ $rc == 0 ]] && rc=$serial
  fi
fi
echo "test suite wall time: $((SECONDS - start)) s (ruff and setup not included)"
exit $rc
