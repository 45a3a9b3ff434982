# Sourced by the GPU scripts (experiments/gpu_*.sh) on the device machine, in the repo root:
# installs the carried dm-haiku and jmp wheels (.whl) unless SKIP_INSTALL=1, and sets PY.
PY=${PY:-python3}
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
