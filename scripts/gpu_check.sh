#!/usr/bin/env bash
# The GPU path end to end on a machine with a GPU (a few minutes): train with bf16 on one Ray Train
# worker, a study whose trials share a GPU (--gpus-per-worker 0.5, two at a time), recommendations
# on the GPU (in this process, and from a Ray Data actor). Writes everything under OUT (default
# gpu_check/) and a summary log with the date.
#   bash scripts/gpu_check.sh [OUT]
#   GPU_CHECK_REHEARSAL=1 bash scripts/gpu_check.sh /tmp/rehearsal    # the same commands on a CPU, without --gpu
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-gpu_check}"
if [ "${GPU_CHECK_REHEARSAL:-0}" = 1 ]; then gpu=""; share=""; else gpu="--gpu"; share="--gpu --gpus-per-worker 0.5"; fi
mkdir -p "$out"
log="$out/gpu_check.log"
py="${PYTHON:-.venv/bin/python}"
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
  "$py" -c "import torch, ray, glintru; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__, 'glintru', glintru.__version__)"
  "$py" -c "from glintru.tuning.smoke import write_synthetic_dataset as w; print(w('$out/data', n_users=2000, n_items=5000))"
  echo "== glintru train --gpu --workers 1 (bf16)"
  time "$py" -m glintru train --data "$out/data" --model glintru $gpu --workers 1 --max-epochs 3 \
      --set precision=bf16 --set max_len=50 --out "$out/train" --quiet
  echo "== glintru tune --gpu --gpus-per-worker 0.5 (2 trials at once)"
  time "$py" -m glintru tune --data "$out/data" --profile quick --num-samples 4 --max-epochs 2 --workers 1 \
      $share --storage-path "$out/ray_results" --mlflow-uri "sqlite:///$PWD/$out/mlflow.db"
  echo "== glintru recommend --gpu (in this process)"
  time "$py" -m glintru recommend --model "$out/train" --data "$out/data" --out "$out/recs.parquet" $gpu --k 10
  echo "== glintru recommend --gpu --workers 1 (a Ray Data actor on the GPU)"
  time "$py" -m glintru recommend --model "$out/train" --data "$out/data" --out "$out/recs_ray.parquet" $gpu --k 10 \
      --workers 1
  echo "== done"
} 2>&1 | tee "$log"
