#!/usr/bin/env bash
# The GPU checks of one short session on a lent accelerator, each stage under its own time limit:
# meta-training throughput, the optimizer update overhead, then the shipped default's recipe
# meta-trained on the GPU. Run from the repository root with lopt's dependencies importable
# (optionally WHEELS=<dir of wheels> to install them offline first) and LOPT_DATA_DIR pointing at
# datasets built beforehand (the accelerator machine may have no internet). Results go to $OUT.
#
#   OUT=/tmp/out LOPT_DATA_DIR=~/.cache/lopt/tensorflow_datasets bash benchmarks/gpu_session.sh
set -u
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
LOG=$OUT/log.txt
if [ -n "${WHEELS:-}" ]; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl >>"$LOG" 2>&1 \
    || { echo "wheel install failed; see $LOG"; exit 3; }
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export JAX_PLATFORMS=${JAX_PLATFORMS:-cuda} PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
python3 -c "import jax; d = jax.devices()[0]; print(jax.__version__, d); assert d.platform == 'gpu'" \
  2>&1 | tee -a "$LOG" || { echo "no GPU visible to JAX"; exit 4; }

stage() {  # stage <seconds> <command...>: run under a limit, log everything, report rc and time
  local limit=$1 start=$SECONDS; shift
  echo "== $* (limit ${limit}s) $(date +%T)" | tee -a "$LOG"
  timeout "$limit" "$@" 2>&1 | tee -a "$LOG" | tail -30
  echo "== done rc=${PIPESTATUS[0]} in $((SECONDS - start))s" | tee -a "$LOG"
}

stage "${SPEED_LIMIT:-150}" python3 -m benchmarks.meta_training_speed --devices 1 \
  --optimizers mlp,hierarchical,small,celo,adam_nominal --out-dir "$OUT"
stage "${OVERHEAD_LIMIT:-100}" python3 -m benchmarks.optimizer_overhead --sizes 1e5 1e6 1e7 --out-dir "$OUT"
stage "${META_LIMIT:-300}" python3 -m lopt_cli meta-train recipe=adam_nominal_wsd hardware=one_device \
  seed=0 hydra.run.dir=/tmp/gpu_meta_train
tar czf "$OUT/gpu_meta_train.tgz" -C /tmp gpu_meta_train 2>>"$LOG"
