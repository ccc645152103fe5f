#!/usr/bin/env bash
# Testing and benchmarking the CUDA operator in a session that is lent a GPU machine (the
# `device` tool: 30 minutes of device time, 64 MiB carried per call, the machine kept only
# while calls follow each other within ~30 s, no network there). See docs/CUDA.md.
#
# HERE (no GPU), once:                         bash tools/gpu_session.sh prepare [e2e]
#   - builds build-cuda/ (ADPQ_CUDA=ON) and runs the host unpack test,
#   - downloads onnxruntime-gpu 1.31.1 (CUDA 13, ~256 MB) and splits it into .gpu/ort.part.*,
#   - with `e2e`: also the gguf wheel and the SmolLM2 GGUF split into .gpu/gguf.part.*.
#   It prints the device calls to make, in order. Each call names its parts in `carry`.
#
# THERE (device calls; every call is a fresh shell, files persist while the machine is warm):
#   bash tools/gpu_session.sh stash            moves carried .gpu/* parts to $STASH
#   bash tools/gpu_session.sh test             installs the wheels, unpack test, pytest CUDA
#   bash tools/gpu_session.sh sanitize         compute-sanitizer memcheck/racecheck, few cases
#   bash tools/gpu_session.sh bench [args]     benchmarks/gpu_ops.py -> $OUT/gpu_ops.json
#   bash tools/gpu_session.sh e2e [args]       benchmarks/gpu_e2e.py -> $OUT/gpu_e2e.json
#   bash tools/gpu_session.sh build            rebuilds build-cuda there (after kernel edits)
set -euo pipefail
cd "$(dirname "$0")/.."

PART_MB=${PART_MB:-52}  # with the checkout (a few MB), under the 64 MiB a call carries
STASH=${STASH:-/root/adpq_stash}
SITE=/tmp/adpq_site
ORT_WHEEL=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
LIB=$PWD/build-cuda/lib/libadpq_ort_ops.so

pip_download() {  # NAME==VERSION into .whl/ for the device's Python 3.12
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 -d .whl "$1"
}

prepare() {
  mkdir -p .whl .gpu
  cmake -S . -B build-cuda -G Ninja -DADPQ_CUDA=ON >/dev/null
  cmake --build build-cuda -j2
  build-cuda/custom_ops/adpq_cuda_unpack_test
  [ -f ".whl/$ORT_WHEEL" ] || pip_download onnxruntime-gpu==1.31.1
  rm -f .gpu/ort.part.*
  split -b "${PART_MB}M" -d ".whl/$ORT_WHEEL" .gpu/ort.part.
  sha256sum ".whl/$ORT_WHEEL" | cut -d' ' -f1 >.gpu/ort.sha256
  local carry_extra='".gpu/ort.sha256", "build-cuda/lib", ".ortdeps"'
  if [ "${1:-}" = e2e ]; then
    pip_download gguf==0.19.0
    cp .whl/gguf-*.whl .gpu/
    local gguf
    gguf=$(python3 -c "from adpq_onnx.models.sources import smollm2_gguf; print(smollm2_gguf())")
    rm -f .gpu/gguf.part.*
    split -b "${PART_MB}M" -d "$gguf" .gpu/gguf.part.
    carry_extra="$carry_extra, \".gpu/$(basename .gpu/gguf-*.whl)\""
  fi
  echo
  echo "Device calls, back to back (the machine is given back ~30 s after a call):"
  # The small files go with the last (smallest) part of the wheel.
  local last
  last=$(ls .gpu/ort.part.* | tail -1)
  for part in .gpu/ort.part.* .gpu/gguf.part.*; do
    [ -e "$part" ] || continue
    if [ "$part" = "$last" ]; then
      echo "  run(command='bash tools/gpu_session.sh stash', carry=[\"$part\", $carry_extra])"
    else
      echo "  run(command='bash tools/gpu_session.sh stash', carry=[\"$part\"])"
    fi
  done
  echo "  run(command='bash tools/gpu_session.sh test', timeout_s=600)"
  echo "  run(command='bash tools/gpu_session.sh sanitize', timeout_s=600)"
  echo "  run(command='bash tools/gpu_session.sh bench', timeout_s=600)"
  [ "${1:-}" = e2e ] && echo "  run(command='bash tools/gpu_session.sh e2e', timeout_s=600)"
  echo "build-cuda/lib and .ortdeps travel with the last wheel part; later calls keep them."
}

stash() {
  mkdir -p "$STASH"
  for f in .gpu/*; do
    [ -f "$f" ] && cp -u "$f" "$STASH/"
  done
  ls -la "$STASH"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || true
}

# Installs the carried wheels into $SITE (once per machine) and sets the environment: Python
# finds onnxruntime-gpu and adpq_onnx from the checkout, ORT finds the CUDA 13 / cuDNN libraries
# that the image's PyTorch (cu130) brought, and the tests use the CUDA build of the library.
setup_env() {
  if [ ! -d "$SITE/onnxruntime" ]; then
    cat "$STASH"/ort.part.* >"/tmp/$ORT_WHEEL"
    if [ -f "$STASH/ort.sha256" ]; then
      echo "$(cat "$STASH/ort.sha256")  /tmp/$ORT_WHEEL" | sha256sum -c -
    fi
    python3 -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "/tmp/$ORT_WHEEL"
    for w in "$STASH"/gguf-*.whl; do
      [ -f "$w" ] && python3 -m pip install -q --no-index --no-deps --target "$SITE" "$w"
    done
  fi
  export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}"
  local purelib libdirs
  purelib=$(python3 -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
  libdirs=$(find "$purelib/nvidia" -name 'lib*.so*' -printf '%h\n' 2>/dev/null | sort -u | paste -sd:)
  export LD_LIBRARY_PATH="${libdirs}${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
  [ -f "$LIB" ] || build
  export ADPQ_LIB=$LIB
  export PYTHONUNBUFFERED=1
  python3 - <<'EOF'
import onnxruntime as ort
print("onnxruntime", ort.__version__, ort.__file__, ort.get_available_providers())
EOF
}

build() {
  ORT_INCLUDE_DIR=$PWD/.ortdeps/ort-headers-1.21/usr/include/onnxruntime
  cmake -S . -B build-cuda -G Ninja -DADPQ_CUDA=ON -DORT_INCLUDE_DIR="$ORT_INCLUDE_DIR" >/dev/null
  cmake --build build-cuda -j16
}

run_test() {
  setup_env
  build-cuda/custom_ops/adpq_cuda_unpack_test || true
  local log=${OUT:-/tmp}/test_cuda_op.log
  set -o pipefail
  # First the cases that say most about each kernel, then everything.
  python3 -m pytest tests/custom_ops/test_cuda_op.py -q -x -p no:cacheprovider \
    -k "bit_exact or (bits_dtypes_and_rows and 4-float16)" 2>&1 | tee "$log"
  python3 -m pytest tests/custom_ops/test_cuda_op.py -q -p no:cacheprovider -rs 2>&1 | tee -a "$log"
  # The CPU op with this library and onnxruntime-gpu (the schema is shared).
  python3 -m pytest tests/custom_ops -q -p no:cacheprovider --deselect \
    tests/custom_ops/test_packaging_build.py 2>&1 | tail -5 | tee -a "$log"
}

sanitize() {
  setup_env
  local log=${OUT:-/tmp}/sanitize.log
  for tool in memcheck racecheck; do
    compute-sanitizer --tool "$tool" --error-exitcode 9 python3 -m pytest \
      tests/custom_ops/test_cuda_op.py -q -x -p no:cacheprovider \
      -k "split_k and 16 or (bits_dtypes_and_rows and 3-bfloat16 and (1-auto or 300-auto))" \
      2>&1 | tail -30 | tee -a "$log"
  done
}

bench() {
  setup_env
  python3 benchmarks/gpu_ops.py --cache /root/adpq_weights --json "${OUT:-/tmp}/gpu_ops.json" "$@"
}

e2e() {
  setup_env
  local cache=${ADPQ_ONNX_CACHE:-$HOME/.cache/adpq-onnx}/smollm2
  mkdir -p "$cache"
  [ -f "$cache/SmolLM2-135M-Instruct.Q4_1.gguf" ] ||
    cat "$STASH"/gguf.part.* >"$cache/SmolLM2-135M-Instruct.Q4_1.gguf"
  HF_HUB_OFFLINE=1 python3 benchmarks/gpu_e2e.py --workdir /root/adpq_e2e \
    --json "${OUT:-/tmp}/gpu_e2e.json" "$@"
}

case "${1:-}" in
  prepare) shift; prepare "$@" ;;
  stash) stash ;;
  test) run_test ;;
  sanitize) sanitize ;;
  bench) shift; bench "$@" ;;
  e2e) shift; e2e "$@" ;;
  build) build ;;
  *) sed -n '2,17p' "$0"; exit 2 ;;
esac
