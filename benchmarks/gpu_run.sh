#!/usr/bin/env bash
# The device machine's prepared command (benchmarks/README.md, "On a GPU"):
#   bash benchmarks/gpu_run.sh check   correctness and timings (gpu_check.py, then its TF32 timings)
#   bash benchmarks/gpu_run.sh train   the fast-94 recipe on the GPU, on CIFAR-10 carried in gpu_data/ (gpu_data.py)
#   bash benchmarks/gpu_run.sh sanitize the layer and update-rule checks under compute-sanitizer (memcheck)
# Results go to $OUT (the device tool's folder) or runs/gpu; each stage stays under 10 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/gpu}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH=.
# the device's Python may differ from the one that built the extensions here
python3 setup.py -q build_ext --inplace >"$OUT/build.log" 2>&1 ||
  echo "build_ext failed (see build.log): the host-side references use the NumPy kernels"
# wheels carried in gpu_data/whl (array-api-compat: the [gpu] extra's, absent from the device image)
if ls gpu_data/whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --target /tmp/site gpu_data/whl/*.whl &&
    export PYTHONPATH=".:/tmp/site"
fi
# CIFAR-10 in the parts benchmarks/gpu_data.py packs (carried over two calls)
if [ -f /tmp/funkcije_data/cifar-10-batches-py/batches.meta ]; then  # written last by unpack
  export FUNKCIJE_DATA=/tmp/funkcije_data
elif [ -f gpu_data/cifar.xz.aa ] && [ -f gpu_data/cifar.xz.ab ]; then
  python3 benchmarks/gpu_data.py unpack gpu_data /tmp/funkcije_data && export FUNKCIJE_DATA=/tmp/funkcije_data
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee "$OUT/gpu.txt"
case "${1:-check}" in
  check)
    timeout 330 python3 benchmarks/gpu_check.py --out "$OUT" 2>&1 | tee "$OUT/gpu_check.log"
    timeout 150 python3 benchmarks/gpu_check.py --tf32 --epoch-images 0 --out "$OUT" 2>&1 | tee "$OUT/gpu_check_tf32.log"
    ;;
  sanitize)
    timeout 300 compute-sanitizer --tool memcheck --error-exitcode 3 \
      python3 benchmarks/gpu_check.py --kernels-only --out "$OUT" 2>&1 | tee "$OUT/sanitize.log"
    ;;
  train)
    [ -n "${FUNKCIJE_DATA:-}" ] || { echo "no CIFAR-10: carry gpu_data/cifar.xz.aa and .ab first"; exit 2; }
    timeout 540 python3 -m funkcije.train --recipe fast-94 --device gpu --quiet --out "$OUT/fast94" 2>&1 |
      tee "$OUT/fast94.log"
    ;;
  *) echo "usage: bash benchmarks/gpu_run.sh check|sanitize|train"; exit 2 ;;
esac
