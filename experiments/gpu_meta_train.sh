#!/usr/bin/env bash
# The full meta-training runs of the MNIST and conv experiments, on one lent GPU.
# Each variant trains in its own process (the GPU has room for all), for at most BUDGET
# seconds, selecting its checkpoint on validation instances. Everything needed afterwards
# (best weights, selection records, metrics, logs) is packed into $OUT/gpu_runs.tar.gz.
# Usage (device machine, repo root; .whl holds the dm-haiku and jmp wheels):
#   BUDGET=330 bash experiments/gpu_meta_train.sh
set -u
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu_out}
BUDGET=${BUDGET:-330}
CHUNK=${CHUNK:-125}
mkdir -p "$OUT" runs/logs
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > runs/logs/gpu.txt
python3 -c "import jax; print(jax.__version__, jax.devices())" >> runs/logs/gpu.txt 2>&1
start=$(date +%s)
for v in paper adam_start adam_start_fast; do
  python3 experiments/mnist.py --stage train --variants $v --chunk "$CHUNK" \
    --time-budget "$BUDGET" > runs/logs/mnist_$v.log 2>&1 &
done
for v in shared conv_fc; do
  python3 experiments/conv.py --stage train --variants $v --chunk "$CHUNK" \
    --time-budget "$BUDGET" > runs/logs/conv_$v.log 2>&1 &
done
wait
echo "wall seconds: $(( $(date +%s) - start ))" >> runs/logs/gpu.txt
tar czf "$OUT/gpu_runs.tar.gz" runs/logs runs/mnist/adam_tuned.json \
  $(ls runs/mnist/*/best.npz runs/mnist/*/selection.json runs/mnist/*/metrics.jsonl \
       runs/conv/*/best.npz runs/conv/*/selection.json runs/conv/*/metrics.jsonl 2>/dev/null)
tail -n 3 runs/logs/*.log
cat runs/logs/gpu.txt
