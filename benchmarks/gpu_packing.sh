#!/usr/bin/env bash
# Issue-14 figures on a lent GPU machine (one card), in one call that fits a 10-minute device command:
#   1. sweep_throughput.py: 1, 2, 4, 8, 16 Stage-I trials packed on the card, small and paper profiles
#      (trial-epochs per GPU-hour, speed-up over one trial, share of the bf16 peak, NVML utilisation).
#   2. step_throughput.py: paper Stage-I eager against train.compile reduce-overhead (CUDA graphs).
# Usage: OUT=DIR bash benchmarks/gpu_packing.sh   (JSON and logs under DIR)
set -u
OUT=${OUT:-/tmp/gpu-packing}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
t0=$SECONDS
timeout 420 python3 benchmarks/sweep_throughput.py --profiles small,paper --trials 1,2,4,8,16 --seconds 15 \
  --warmup 3 --start-timeout 120 >"$OUT/packing.json" 2>"$OUT/packing.log"
echo "sweep_throughput: rc=$? in $((SECONDS - t0)) s"
t0=$SECONDS
timeout 120 python3 benchmarks/sweep_throughput.py --profiles paper --trials 1,4 --seconds 10 --warmup 5 \
  --compile reduce-overhead --start-timeout 100 >"$OUT/packing_compiled.json" 2>"$OUT/packing_compiled.log"
echo "sweep_throughput reduce-overhead: rc=$? in $((SECONDS - t0)) s"
