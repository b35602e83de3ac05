#!/usr/bin/env bash
# Every GPU check as one prepared command (needs only torch; at most ~8 minutes on an H100):
#   1. precision: OTS on convex-mixture D=8 in fp32 and bf16 (bf16 must stay within 1.5x of fp32's L2-UVP)
#   2. quality: OTS and the best-lambda GAN on convex-mixture D=16 and 64 with the default recipe
#      (README targets: <= 2 % and <= 4 % L2-UVP), the same command as the CPU quality table
#   3. SR end to end: OTS and the GAN on the AIM19-shaped recipe (EDSR 64x128, batch 8, default evaluation
#      sizes) for 150 steps each: PSNR, SSIM, bias, steps/s and peak memory, pass/fail vs the CPU criteria
#   4. speed: the GPU suite against the reference habits, and trial packing
# Usage on a GPU machine, from the repository root:  bash bench/gpu_check.sh [OUTDIR]
# Dry run of the same commands on CPU at toy sizes:  GPU_CHECK_DRY=1 bash bench/gpu_check.sh /tmp/gpu_dry
set -uo pipefail
out=${1:-${OUT:-bench_out}}
mkdir -p "$out"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python}
if [[ -n "${GPU_CHECK_DRY:-}" ]]; then
  dev=cpu; precision_steps=20; budget=0.01; dims=8; sr_steps=3; sr_extra=(--sr-width 8 --sr-depth 2
    --pair-param hr_crop=32); speed=(--config cpu-mlp-gan-d16 --steps 2 --warmup 1 --no-peak)
  pack=(--config cpu-mlp-gan-d16 --pack 1,2 --pack-threads 1 --steps 5 --warmup 1)
else
  dev=cuda; precision_steps=1500; budget=0.25; dims=16,64; sr_steps=150; sr_extra=()
  speed=(--suite gpu --steps 20 --warmup 5 --readme README.md)
  pack=(--config cpu-mlp-gan-d16 --device cuda --pack 1,2,4,8 --pack-threads 1 --steps 200 --warmup 20)
fi
status=0
step() { echo "== $1 ($(date +%T))"; shift; "$@" || { echo "!! failed: $*"; status=1; }; }

for p in fp32 bf16; do
  step "precision $p" $py -m otsr.cli train --pair convex-mixture --dim 8 --method ots --precision $p \
    --steps $precision_steps --eval-every $precision_steps --device $dev --out "$out/precision-$p" --overwrite \
    > "$out/precision-$p.json"
done
$py - "$out" <<'EOF' | tee "$out/precision.txt" || status=1
import json, sys
m = {p: json.load(open(f"{sys.argv[1]}/precision-{p}.json"))["metrics"]["l2_uvp"] for p in ("fp32", "bf16")}
ok = m["bf16"] <= 1.5 * m["fp32"]
print(f"precision: OTS convex-mixture D=8 L2-UVP fp32 {m['fp32']:.2f}% bf16 {m['bf16']:.2f}% [{'PASS' if ok else 'FAIL'}]")
sys.exit(0 if ok else 1)
EOF
step "quality" $py -m otsr.cli bench --quality --device $dev --dims $dims --budget $budget \
  --out "$out/quality_gpu.json"
step "sr" $py -m otsr.cli bench --sr demo --steps $sr_steps --device $dev "${sr_extra[@]}" --out "$out/sr_check.json"
step "speed" $py -m otsr.cli bench "${speed[@]}" --out "$out/speed.json"
step "packing" $py -m otsr.cli bench "${pack[@]}"
cp README.md "$out/README.md"
echo "gpu_check: $([[ $status == 0 ]] && echo all checks passed || echo SOME CHECKS FAILED) -> $out"
exit $status
