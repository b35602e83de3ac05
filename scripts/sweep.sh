#!/usr/bin/env bash
# The main job: sets up .venv if needed, then runs the default bias sweep (GAN lambda search vs OTS)
# in-process on this machine and prints the bias report. Extra arguments go to `otsr-sweep run`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export RAY_USAGE_STATS_ENABLED=0
exec .venv/bin/otsr-sweep run search_spaces/quick_bias.yaml "$@"
