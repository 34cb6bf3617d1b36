#!/usr/bin/env bash
# The GPU figures of docs/PERFORMANCE.md in one call on a lent GPU machine (one card):
#   1. step_throughput.py, paper profile: bf16 autocast + channels_last plain and inside Ray Train
#      (1 GPU worker), fp32 plain, and bf16 at 4x the batch; then torch.compile of Stage-I.
#   2. train.py end to end on the GPU (Ray Train worker with 1 GPU, NCCL, bf16): both stages, small profile.
# Usage: OUT=DIR bash benchmarks/gpu_session.sh   (writes JSON and logs under DIR)
set -u
OUT=${OUT:-/tmp/gpu-session}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
python3 -c "import torch, ray, pyarrow, numpy; print('torch', torch.__version__, 'ray', ray.__version__, 'pyarrow', pyarrow.__version__, 'numpy', numpy.__version__)" | tee -a "$OUT/gpu.txt"

bench() {  # name, timeout, args...
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" python3 benchmarks/step_throughput.py "$@" >"$OUT/$name.json" 2>"$OUT/$name.log"
  echo "$name: rc=$? in $((SECONDS - t0)) s"
}
bench bf16 150 --modes plain,ray1 --precision auto --steps 20 --warmup 3
bench fp32 60 --modes plain --precision fp32 --steps 10 --warmup 2
bench bf16_batch4x 60 --modes plain --precision auto --steps 10 --warmup 3 --batch-stage1 256 --batch-stage2 64

t0=$SECONDS
timeout 200 python3 harness/train.py --sweep search_spaces/shapes.yaml --storage runs --name gpu-check \
  --workers 1 --cpus-per-worker 4 --gpus-per-worker 1 --epochs-stage1 30 --epochs-stage2 3 >"$OUT/train.log" 2>&1
echo "train.py: rc=$? in $((SECONDS - t0)) s"

bench compile_stage1 120 --modes plain --precision auto --stages 1 --steps 10 --warmup 3 --compile
