#!/usr/bin/env bash
# The full meta-training runs of the MNIST and conv experiments, the conv evaluation and the
# GPU benchmark, on one lent GPU. Every variant trains in its own process for at most BUDGET
# seconds, selecting its checkpoint on validation instances; the whole script stops by
# DEADLINE seconds. Everything needed afterwards (best weights, selection records, metrics,
# logs, the benchmark's output, conv results; not the large training checkpoints) is packed
# into $OUT/gpu_runs.tar.gz.
#
# Usage (device machine, repo root; .whl holds the dm-haiku and jmp wheels):
#   bash experiments/gpu_meta_train.sh                      # everything, from scratch
#   BENCH=0 MNIST="" MNIST_AFTER="" CONV=conv_fc bash experiments/gpu_meta_train.sh
# Settings (environment):
#   BENCH=1         first run experiments/benchmark.py --gpu alone (clean timings; three parts,
#                   each for at most BENCH_TIMEOUT=420 s; the pallas part takes about 4 min)
#   MNIST=...       MNIST variants trained in parallel (default: paper adam_start adam_start_fast)
#   MNIST_AFTER=... variants that start from adam_start_fast's weights, trained after it
#   CONV=...        conv variants trained in parallel (default: shared conv_fc)
#   CONV_EVAL=1     then evaluate the conv variants on the GPU
#   BUDGET, CHUNK, DEADLINE, EXTRA (flags added to every experiment, e.g. --quick)
# Meta-training rematerialises inner steps by default (a 64-task MNIST run needs about 8 GB;
# with --no-remat about 42 GB, as when the shipped MNIST weights were trained).
set -u
. experiments/gpu_env.sh
OUT=${OUT:-runs/gpu_out}
BENCH=${BENCH:-1}
MNIST=${MNIST-paper adam_start adam_start_fast}
MNIST_AFTER=${MNIST_AFTER-h200_finetune h200_finetune_fast}
CONV=${CONV-shared conv_fc}
CONV_EVAL=${CONV_EVAL:-1}
BUDGET=${BUDGET:-330}
CHUNK=${CHUNK:-125}
DEADLINE=${DEADLINE:-1800}
EXTRA=${EXTRA:-}
mkdir -p "$OUT" runs/logs
start=$(date +%s)
left() { echo $(( DEADLINE - ($(date +%s) - start) )); }
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import jax; print(jax.__version__, jax.devices())" 2>&1; } > runs/logs/gpu.txt
if [ "$BENCH" = 1 ]; then  # one process per part: each needs most of the GPU's memory, and
  # a failing kernel in the pallas part cannot spoil the others
  for part in opt_step pallas meta; do
    timeout "${BENCH_TIMEOUT:-420}" $PY -m experiments.benchmark --gpu --only $part \
      > runs/logs/benchmark_gpu_$part.log 2>&1
    rc=$?
    echo "benchmark $part exit $rc after $(( $(date +%s) - start )) s" >> runs/logs/gpu.txt
  done
fi
(
  for v in $MNIST; do
    timeout "$(left)" $PY -m experiments.mnist --stage train --variants "$v" --chunk "$CHUNK" \
      --time-budget "$BUDGET" $EXTRA > "runs/logs/mnist_$v.log" 2>&1 &
  done
  wait
  for v in $MNIST_AFTER; do
    timeout "$(left)" $PY -m experiments.mnist --stage train --variants "$v" --chunk "$CHUNK" \
      --time-budget "$BUDGET" $EXTRA > "runs/logs/mnist_$v.log" 2>&1 &
  done
  wait
) &
(
  for v in $CONV; do
    timeout "$(left)" $PY -m experiments.conv --stage train --variants "$v" --chunk "$CHUNK" \
      --time-budget "$BUDGET" $EXTRA > "runs/logs/conv_$v.log" 2>&1 &
  done
  wait
  if [ "$CONV_EVAL" = 1 ]; then
    timeout "$(left)" $PY -m experiments.conv --stage eval $EXTRA > runs/logs/conv_eval.log 2>&1
    rc=$?
    echo "conv eval exit $rc after $(( $(date +%s) - start )) s" >> runs/logs/gpu.txt
  fi
) &
wait
echo "wall seconds: $(( $(date +%s) - start ))" >> runs/logs/gpu.txt
tar czf "$OUT/gpu_runs.tar.gz" runs/logs $(ls -d runs/mnist*/adam_tuned.json \
  runs/mnist*/*/best.npz runs/mnist*/*/selection.json runs/mnist*/*/metrics.jsonl \
  runs/conv*/*/best.npz runs/conv*/*/selection.json runs/conv*/*/metrics.jsonl \
  runs/conv*/compare/* runs/conv*/plots/* plots/conv.* 2>/dev/null)
tail -n 4 runs/logs/*.log
cat runs/logs/gpu.txt
