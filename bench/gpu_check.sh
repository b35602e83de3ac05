#!/usr/bin/env bash
# The GPU benchmark as one prepared command (needs only torch): the GPU suite against the reference habits,
# then trial packing (1, 2, 4, 8 processes sharing the GPU) for a benchmark-sized and a CPU-sized config.
# Usage on a GPU machine, from the repository root:  bash bench/gpu_check.sh [OUTDIR]
set -euo pipefail
out=${1:-bench_out}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
python -m otsr.cli bench --suite gpu --steps 20 --warmup 5 --readme README.md --out "$out/gpu_suite.json" | tee "$out/gpu_suite.txt"
python -m otsr.cli bench --config bench-ots-b64 --pack 1,2,4,8 --pack-threads 1 --steps 10 --warmup 3 | tee "$out/pack_bench_ots.txt"
python -m otsr.cli bench --config cpu-mlp-gan-d16 --device cuda --pack 1,2,4,8 --pack-threads 1 --steps 200 --warmup 20 | tee "$out/pack_mlp_gan.txt"
cp README.md "$out/README.md"
