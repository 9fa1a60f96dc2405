#!/usr/bin/env bash
# fevo's two commands:
#   ./run.sh demo          the main job (builds and runs the demo)
#   ./run.sh demo --long   a longer, wider training, closer to the paper (docs/report.md)
#   ./run.sh test          the whole test suite: release build + tests, then an ASan/UBSan build + tests
#   ./run.sh test --fast   while editing: the same release build, then only its tests labelled
#                          "fast" (ctest -L fast; see docs/development.md); no sanitizer build
# Each installs the Debian packages it needs (only those missing), configures and builds.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

say() { printf '\n== %s\n' "$*"; }

# Packages every command needs, and those only the test suite needs.
base_pkgs=(build-essential cmake libeigen3-dev libxtensor-dev libtorch-dev)
test_pkgs=(catch2 libbenchmark-dev libthrust-dev clang libclang-rt-14-dev libomp-dev chromium)
base_pkgs+=(libcli11-dev nlohmann-json3-dev libzip-dev zlib1g-dev)
# The paper driver: Fashion-MNIST (real data) and stb_image for ImageFolder datasets.
base_pkgs+=(dataset-fashion-mnist libstb-dev)
# Test-only Python packages (the pyenv python3 on PATH): oracle tests with real writers/readers,
# and the report tool's tests (matplotlib; chromium above renders its page).
py_test_pkgs=(numpy safetensors ml_dtypes tensorboard matplotlib scipy)

# ensure_python_packages PKG...: pip-installs the packages when any of them does not import (each
# name here is also its module's name).
ensure_python_packages() {
  local modules
  modules=$(IFS=,; echo "$*")
  if ! python3 -c "import $modules" >/dev/null 2>&1; then
    say "installing Python packages: $*"
    python3 -m pip install -q --disable-pip-version-check "$@"
  fi
}

# ensure_report_python: sets report_python to a python3 that imports numpy, matplotlib and scipy
# (what tools/fevo_report.py needs): the python3 on PATH, after a pip install if needed; where pip
# cannot install (no pip, or Debian's externally managed python3), Debian's python3-* packages.
report_python=python3
ensure_report_python() {
  report_python=python3
  if command -v python3 >/dev/null 2>&1; then
    python3 -c "import numpy, matplotlib, scipy" >/dev/null 2>&1 && return 0
    say "installing Python packages for the report: numpy matplotlib scipy"
    if python3 -m pip install -q --disable-pip-version-check numpy matplotlib scipy &&
       python3 -c "import numpy, matplotlib, scipy" >/dev/null 2>&1; then
      return 0
    fi
    say "pip could not install them; using Debian's python3-numpy, python3-matplotlib and python3-scipy"
  fi
  ensure_packages python3 python3-numpy python3-matplotlib python3-scipy
  report_python=/usr/bin/python3
}

ensure_packages() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  say "installing Debian packages: ${missing[*]}"
  local sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# ensure_cuobjdump: sets cuobjdump_args to pass a cuobjdump to CMake (FEVO_CUOBJDUMP), for the
# SASS check of the fused CUDA kernels (test cuda.sass_loads). The CUDA toolkit here has neither
# cuobjdump nor the nvdisasm it runs; PyPI's nvidia-cuda-cuobjdump and nvidia-cuda-nvdisasm put both
# in one directory. Where they cannot be had, CMake looks on PATH and in the toolkit, and without
# them the test is reported skipped.
cuobjdump_args=()
find_pip_cuobjdump() {  # the pip-installed cuobjdump, if nvdisasm is beside it
  python3 -c 'import glob, nvidia, os; print(next(iter(sorted(f for p in nvidia.__path__ for f in glob.glob(p + "/cu*/bin/cuobjdump") if os.path.exists(os.path.dirname(f) + "/nvdisasm"))), ""))' \
    2>/dev/null || true
}
ensure_cuobjdump() {
  local bin
  bin=$(find_pip_cuobjdump)
  if [ -z "$bin" ]; then
    say "installing cuobjdump and nvdisasm (PyPI: nvidia-cuda-cuobjdump, nvidia-cuda-nvdisasm)"
    python3 -m pip install -q --disable-pip-version-check 'nvidia-cuda-cuobjdump==13.*' 'nvidia-cuda-nvdisasm==13.*' ||
      say "could not install them: cuda.sass_loads will be reported skipped"
    bin=$(find_pip_cuobjdump)
  fi
  [ -n "$bin" ] && cuobjdump_args=("-DFEVO_CUOBJDUMP=$bin")
  return 0
}

configure_build() {  # dir, cmake args...
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
  cmake --build "$dir" -j"$jobs"
}

usage() {
  [ $# -gt 0 ] && echo "run.sh: $*" >&2
  echo "usage: ./run.sh demo [--long] | ./run.sh test [--fast]" >&2
  exit 2
}
cmd=${1:-}
case "$cmd" in demo | test) shift ;; "") usage ;; *) usage "unknown command '$cmd'" ;; esac
fast=0 long=0
for arg in "$@"; do
  case "$cmd $arg" in
    "test --fast") fast=1 ;;
    "demo --long") long=1 ;;
    *) usage "unknown option '$arg' for '$cmd'" ;;
  esac
done
case "$cmd" in
  demo)
    ensure_packages "${base_pkgs[@]}"
    say "building (build/)"
    mkdir -p build
    configure_build build -DFEVO_BUILD_TESTS=OFF -DFEVO_BUILD_BENCH=OFF
    say "demo: fevo on raw weight buffers"
    ./build/examples/raw_buffers
    # The paper's section IV on the CPU: VGG-16 and ResNet-50 at width 0.125 on 32x32 Fashion-MNIST,
    # 1200 steps of batch 64 on 10000 training images (lr 2e-4 halved after steps 800 and 1000, as the
    # paper's "after 25 epochs, then every 10" scaled down), a record every 10 steps, Table IV on
    # 2000 test images. 10 minutes on 2 cores shared with other builds (7.5 CPU-minutes); see
    # docs/report.md. --long (runs/long): width 0.25, 3000 steps on 30000 images, halved after steps
    # 1875 and 2625 (the paper's 25 and 35 of 40 epochs), Table IV on 5000 images; 40 minutes on 2
    # shared cores (32 CPU-minutes).
    out=runs/demo
    setting=(--width 0.125 --steps 1200 --train-images 10000 --test-images 2000 --lr-halve-steps 800,1000)
    if [ "$long" = 1 ]; then
      out=runs/long
      setting=(--width 0.25 --steps 3000 --train-images 30000 --test-images 5000 --lr-halve-steps 1875,2625)
    fi
    for model in vgg16 resnet50; do
      say "demo: the paper driver, $model ($out/$model)"
      rm -rf "${out:?}/$model"
      # Passive OpenMP waiting: on cores shared with other jobs, spinning threads starve each other
      # (VGG-16 steps took 0.88 s spinning, 0.08 s passive, on 2 busy cores).
      OMP_WAIT_POLICY=passive ./build/examples/paper/fevo_paper --model "$model" --data fashion-mnist \
        --out "$out/$model" --size 32 --batch 64 --record-every 10 --seed 1 "${setting[@]}"
    done
    # The report (keep it the last step: its last output line, the path of report.html, is the
    # last line of ./run.sh demo). The long setting's report lists the verdicts that changed since
    # the demo's, when there is one.
    ensure_report_python
    compare=()
    [ "$out" = runs/long ] && [ -f runs/demo/findings.json ] && compare=(--compare runs/demo)
    say "report: the paper's findings, figures and Table IV ($out/)"
    "$report_python" tools/fevo_report.py "$out/vgg16" "$out/resnet50" --out "$out" "${compare[@]}"
    ;;
  test)
    ensure_packages "${base_pkgs[@]}" "${test_pkgs[@]}"
    ensure_python_packages "${py_test_pkgs[@]}"
    ensure_cuobjdump
    say "release build and tests (build/)"
    mkdir -p build
    # CUDA code for the GPU nvidia-smi finds; without one (CI), for sm_75 and sm_90, which between
    # them compile every architecture-dependent path of the kernels (below sm_80; asynchronous
    # copies and dependent launches), in two thirds of the default list's time.
    cuda_arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
    [[ "$cuda_arch" =~ ^[0-9]+$ ]] || cuda_arch=""
    configure_build build -DFEVO_BUILD_TESTS=ON -DFEVO_BUILD_BENCH=ON "-DCMAKE_CUDA_ARCHITECTURES=${cuda_arch:-75-real;90}" \
      "${cuobjdump_args[@]}"
    # Passive OpenMP waiting: tests run side by side, and spinning threads would starve each other.
    if [ "$fast" = 1 ]; then
      (cd build && OMP_WAIT_POLICY=passive ctest --output-on-failure -j"$jobs" -L fast --no-tests=error)
      say "the fast tests passed; ./run.sh test runs the whole suite and the sanitizer build"
      exit 0
    fi
    (cd build && OMP_WAIT_POLICY=passive ctest --output-on-failure -j"$jobs")
    say "sanitizer build (ASan + UBSan) and tests (build-asan/)"
    mkdir -p build-asan
    # -g1: line tables only, which is all a sanitizer report's stack (inlined frames included)
    # needs; full -g costs about a fifth more compile time in this build, the longest step here.
    configure_build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O2 -g1 -DNDEBUG" \
      -DFEVO_SANITIZE=ON -DFEVO_BUILD_TESTS=ON -DFEVO_BUILD_BENCH=OFF -DFEVO_BUILD_EXAMPLES=ON -DFEVO_ENABLE_CUDA=OFF
    (cd build-asan && OMP_WAIT_POLICY=passive ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --output-on-failure -j"$jobs" -LE package)
    ;;
  *)
    usage
    ;;
esac
