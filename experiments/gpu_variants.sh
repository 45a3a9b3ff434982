#!/usr/bin/env bash
# Meta-train several variants of the default's recipe at once on one lent GPU machine: GPU
# variants share the GPU (one process each), CPU variants run one per core beside them. Each
# stops after BUDGET seconds (`--time-budget`, which writes weights.npz); the weights, metrics
# and logs come back packed in $OUT/variants.tar.gz. With VALIDATE=SUITE_JSON (baselines to
# reuse), each variant is then scored on the validation suite (experiments/validate.py).
#
# Usage (device machine, repo root; .whl holds the dm-haiku and jmp wheels, and the
# --init-weights files named in the variants travel with `carry`):
#   GPU_VARIANTS=variants_gpu.txt CPU_VARIANTS=variants_cpu.txt bash experiments/gpu_variants.sh
# Each line of a variants file is "NAME FLAGS...", the flags of `l2l-opt meta-train`, after
# the common ones in COMMON (a file holding one line of flags; may be empty).
set -u
. experiments/gpu_env.sh
OUT=${OUT:-runs/gpu_out}
BUDGET=${BUDGET:-400}
RUNS=${RUNS:-runs/variants}
COMMON=$(cat "${COMMON:-/dev/null}")
mkdir -p "$OUT" "$RUNS"
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import jax; print(jax.__version__, jax.devices())" 2>&1; } > "$RUNS/machine.txt"
start=$(date +%s)
train() {  # PIN NAME FLAGS...: one variant in the background: on the CPU core PIN, or on
  # the GPU for PIN ""
  local pin=$1 name=$2
  shift 2
  # shellcheck disable=SC2086
  ${pin:+env JAX_PLATFORMS=cpu taskset -c $pin} timeout $((BUDGET + 120)) \
    $PY -m l2l_opt.cli meta-train $COMMON "$@" --out "$RUNS/$name" --time-budget "$BUDGET" \
    > "$RUNS/$name.log" 2>&1 &
}
while read -r name flags; do
  [ -n "$name" ] && train "" "$name" $flags
done < "${GPU_VARIANTS:-/dev/null}"
CPU_FIRST=${CPU_FIRST:-4}  # cores below it are left to the GPU processes
core=$(( CPU_FIRST - 1 ))
ncores=$(nproc)
while read -r name flags; do
  [ -n "$name" ] || continue
  core=$(( core + 1 ))
  [ "$core" -lt "$ncores" ] || break
  train "$core" "$name" $flags
done < "${CPU_VARIANTS:-/dev/null}"
wait
echo "trained after $(( $(date +%s) - start )) s" >> "$RUNS/machine.txt"
if [ -n "${VALIDATE:-}" ]; then  # score each variant on the validation suite, one per core
  core=$(( CPU_FIRST - 1 ))
  for w in "$RUNS"/*/weights.npz; do
    core=$(( core % (ncores - 1) + 1 ))
    name=$(basename "$(dirname "$w")")
    JAX_PLATFORMS=cpu taskset -c "$core" timeout "${VALIDATE_TIMEOUT:-240}" $PY \
      experiments/validate.py "$w" --reuse "$VALIDATE" > "$RUNS/$name.val" 2>&1 &
  done
  wait
fi
echo "wall seconds: $(( $(date +%s) - start ))" >> "$RUNS/machine.txt"
tar czf "$OUT/variants.tar.gz" "$RUNS"/machine.txt "$RUNS"/*.log "$RUNS"/*.val \
  $(ls "$RUNS"/*/weights.npz "$RUNS"/*/metrics.jsonl 2>/dev/null)
for f in "$RUNS"/*.log; do echo "== $f"; tr '\r' '\n' < "$f" | grep -v '^\s*$' | tail -n 1; done
grep -h geomean "$RUNS"/*.val 2>/dev/null
cat "$RUNS/machine.txt"
