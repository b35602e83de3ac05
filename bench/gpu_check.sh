#!/usr/bin/env bash
# Every GPU check as one prepared command; needs only torch (+ numpy, scipy, pillow, scikit-image: what the lent
# machine has). Each step writes its results under OUTDIR as it finishes, so a cut run still returns what it
# did; the verdicts come from those files (python -m otsr.bench.gpu_check), never from captured stdout.
#
# Expected wall time on an H100/H200 (estimates from the speed anchors of the project brief; the estimates sum to about 11 min, more than one 600 s device call: a cut run keeps the steps it finished):
#   precision   OTS convex-mixture D=8, fp32 then bf16, 1500 steps each          ~1.5 min
#   quality     OTS on convex-mixture:0 and icnn-mixture:1 at D=16, 64, 25 % (D=64: 2,250 steps)   ~3 min
#   bundles     K = 1, 4, 16, 64 on the D=16 MLP GAN and the GPU space's D=64    ~1 min
#               (GFLOP/s against the bf16 and fp32 matmul peaks and baddbmm on the bundle's own shapes)
#   sr          OTS and the GAN on the AIM19 shape (EDSR 64x128), 150 steps each ~1.5 min
#   potential   the SR demo pair's potential and critic alone against bicubic, 1500 updates each   ~1 min
#   images      OTS on convex-images (16x16) with the default recipe, bf16 on the conv nets      ~1.5 min
#   speed       the GPU suite (lean vs reference habits; bf16 and fp32 peaks), 20 steps each   ~1 min
#   packing     1, 2, 4, 8 processes of the D=16 MLP GAN                          ~0.5 min
#
# On a GPU machine, from the repository root:  bash bench/gpu_check.sh [OUTDIR]
# Dry run of the same commands on CPU at toy sizes (CI runs it):  GPU_CHECK_DRY=1 bash bench/gpu_check.sh OUTDIR
set -uo pipefail
out=${1:-${OUT:-bench_out}}
mkdir -p "$out"
: > "$out/steps.txt"
log="$out/log.txt"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
py=${PYTHON:-python}
if [[ -n "${GPU_CHECK_DRY:-}" ]]; then
  dry=--dry; dev=cpu; precision=(--steps 20 --eval-every 10 --batch-size 64 --final-eval-samples 512)
  # both families, as on the GPU (icnn-mixture 1 at D = 4 ships fitted, so the dry run does not wait for its fit)
  quality=(--dims 4 --budget 0.002 --quality-pairs convex-mixture:0,icnn-mixture:1 --methods ots)
  bundles=(--bundle 2 --bundle-config mlp-gan-d16 --steps 2 --warmup 1 --no-pack)  # K = 1 is the solo path
  sr=(--steps 3 --sr-width 8 --sr-depth 2 --pair-param hr_crop=32 --eval-samples 256)
  potential=(hr_crop=32 workers=0 steps=4 critic_width=8 --eval-samples 64)
  images=(--pair-param size=8 --pair-param pool=256 --steps 4 --eval-every 2 --final-eval-samples 64)
  speed=(--config cpu-mlp-gan-d16 --steps 2 --warmup 1 --no-peak --no-reference)
  pack=(--config cpu-mlp-gan-d16 --pack 1,2 --pack-threads 1 --steps 2 --warmup 1)
else
  dry=; dev=cuda; precision=(--steps 1500 --eval-every 1500)
  quality=(--dims 16,64 --budget 0.25 --quality-pairs convex-mixture:0,icnn-mixture:1 --methods ots)
  bundles=(--bundle 1,4,16,64 --bundle-config mlp-gan-d16 --bundle-config gpu-space-gan-d64 --steps 40 --warmup 5
           --readme docs/benchmarks.md)
  sr=(--steps 150)
  potential=(hr_crop=32 workers=0 steps=1500 --eval-samples 1024)
  images=()
  speed=(--suite gpu --steps 20 --warmup 5 --readme docs/benchmarks.md)
  pack=(--config cpu-mlp-gan-d16 --device cuda --pack 1,2,4,8 --pack-threads 1 --steps 200 --warmup 20)
fi
step() {  # step NAME COMMAND...: the command's output goes to the log, its exit code to steps.txt
  local name=$1; shift
  echo "== $name ($(date +%T))" | tee -a "$log"
  "$@" >> "$log" 2>&1
  local rc=$?
  echo "$name $rc" >> "$out/steps.txt"
  [[ $rc == 0 ]] || echo "!! $name failed (exit $rc): $*" | tee -a "$log"
}
precision_run() {
  for p in fp32 bf16; do
    $py -m otsr.cli train --pair convex-mixture --dim 8 --method ots --precision $p "${precision[@]}" \
      --device $dev --out "$out/precision-$p" --overwrite || return 1
  done
}
step precision precision_run
step quality $py -m otsr.cli bench --quality --device $dev "${quality[@]}" --out "$out/quality.json"
step bundles $py -m otsr.cli bench --device $dev "${bundles[@]}" --out "$out/bundles.json"
step sr $py -m otsr.cli bench --sr demo --device $dev "${sr[@]}" --report-only --out "$out/sr_check.json"
step potential $py -m otsr.cli bench --potential-check sr-folders --device $dev "${potential[@]}" --report-only \
  --out "$out/potential.json"
step images $py -m otsr.cli train --pair convex-images --method ots --device $dev "${images[@]}" \
  --out "$out/convex-images" --overwrite
step speed $py -m otsr.cli bench "${speed[@]}" --out "$out/speed.json"
step packing $py -m otsr.cli bench "${pack[@]}" --out "$out/packing.json"
cp README.md docs/benchmarks.md "$out/" 2>/dev/null
$py -m otsr.bench.gpu_check "$out" $dry | tee -a "$log"
