# Sourced by the GPU scripts (experiments/gpu_*.sh) on the device machine, in the repo root:
# installs the carried dm-haiku and jmp wheels (.whl) unless SKIP_INSTALL=1, sets PY, and
# makes the uninstalled checkout importable.
PY=${PY:-python3}
if [ "${SKIP_INSTALL:-0}" != 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
# Not installed: problems/ is l2l_opt.problems only through the package's install mapping.
$PY -c "import l2l_opt.problems.suites" 2>/dev/null || ln -sfn ../problems l2l_opt/problems
export XLA_PYTHON_CLIENT_PREALLOCATE=false PYTHONUNBUFFERED=1
