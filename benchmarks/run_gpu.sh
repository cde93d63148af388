#!/usr/bin/env bash
# Every GPU figure that results/benchmarks/ holds, measured in one go on the current GPU:
#
#   benchmarks/run_gpu.sh OUTDIR        # at most 9.5 minutes: each step has a time limit
#
# Writes OUTDIR/device.txt (nvidia-smi), mfu.json (ViT-S/16 at 224 px), packing.json
# (packed vs unpacked sweep, tiny presets at 32 px), loop_overhead.json (vitbench vs a
# bare loop per family, bf16, compile), estimate.txt (`sweep plan --estimate` of the full
# study; it starts a real task, so wandb must be installed) and log.txt. A step that fails is
# logged and the next one still runs. loop_overhead runs one pair per budget here (--repeats 1,
# no compile) to fit the time limit; the first H200 run (2026-11-29) took 7.3 minutes.
set -uo pipefail
out=${1:?usage: benchmarks/run_gpu.sh OUTDIR}
cd "$(dirname "$0")/.."
mkdir -p "$out"
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv > "$out/device.txt" 2>&1
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" >> "$out/device.txt" 2>&1

step() {  # step NAME TIMEOUT_S COMMAND...
  local name=$1 limit=$2; shift 2
  echo "== $(date +%T) $name: $*" >> "$out/log.txt"
  timeout "$limit" "$@" >> "$out/log.txt" 2>&1 || echo "== $name failed (exit $?)" >> "$out/log.txt"
}
step mfu 150 "$py" benchmarks/mfu.py --out "$out/mfu.json"
step estimate 40 sh -c "\"$py\" -m vitbench sweep plan experiments/fashion_mnist.yaml --sweep-dir \"\$(mktemp -d)/s\" --estimate > \"$out/estimate.txt\""
step packing 200 "$py" benchmarks/packing.py --steps 300 --out "$out/packing.json"
step loop_overhead 170 "$py" benchmarks/loop_overhead.py --device cuda --steps 300 --epochs 3 --repeats 1 --skip-compile --out "$out/loop_overhead.json"
echo "== $(date +%T) done" >> "$out/log.txt"
