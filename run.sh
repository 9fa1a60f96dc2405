#!/usr/bin/env bash
# fevo's two commands:
#   ./run.sh demo          the main job (builds and runs the demo)
#   ./run.sh demo --long   a longer, wider training, closer to the paper (docs/report.md)
#   ./run.sh test          the whole test suite: release build + tests, then an ASan/UBSan build + tests
#                          (each followed by the Python package's tests: see "Python" below)
#   ./run.sh test --fast   while editing: the same release build, then only its tests labelled
#                          "fast" (ctest -L fast; see docs/development.md) and the Python tests not
#                          marked slow; no sanitizer build
# Each installs the Debian packages it needs (only those missing), configures and builds.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

# Each step's heading says how long the command has run so far (where the minutes of a run go).
say() { printf '\n== [%dm%02ds] %s\n' $((SECONDS / 60)) $((SECONDS % 60)) "$*"; }

# Packages every command needs, and those only the test suite needs.
base_pkgs=(build-essential cmake libeigen3-dev libxtensor-dev libtorch-dev)
test_pkgs=(catch2 libbenchmark-dev libthrust-dev clang libclang-rt-14-dev libomp-dev chromium)
# MPI (fevo::mpi, mpirun fevo analyze; the tests labelled mpi run OpenMPI on loopback).
test_pkgs+=(libopenmpi-dev openmpi-bin)
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

# ---- Python: the fevo package (pyproject.toml, python/; docs/python.md) -----------------------------
# Debian's torch (python3-torch: torch 1.13 for /usr/bin/python3; PyPI's would pull gigabytes of
# CUDA wheels) in a virtual environment made with --system-site-packages, plus from PyPI what the
# package builds and tests with (matplotlib: docs/python.md's plotting example; JAX on the CPU: the
# tests of JAX arrays, read through DLPack; 0.4, the last series that keeps NumPy 1). NumPy stays
# below 2: Debian's torch is built against NumPy 1, and with NumPy 2 torch.from_numpy fails
# ("Numpy is not available").
python_pkgs=(python3-torch python3-venv python3-dev python3-mpi4py)  # mpi4py: gathering partials over MPI
python_pip_pkgs=(nanobind scikit-build-core pytest pandas ml_dtypes matplotlib "jax[cpu]<0.5" "numpy<2")
python_venv=.venv-python
python_bin="$root/$python_venv/bin/python"

# ensure_python_venv: the virtual environment and its packages, each only when missing.
ensure_python_venv() {
  ensure_packages "${python_pkgs[@]}"
  if [ ! -x "$python_bin" ]; then
    say "Python: virtual environment $python_venv (Debian's python3, with its torch)"
    /usr/bin/python3 -m venv --system-site-packages "$root/$python_venv"
  fi
  if ! "$python_bin" -c 'import nanobind, scikit_build_core, pytest, pandas, ml_dtypes, matplotlib, jax, numpy, torch
assert int(numpy.__version__.split(".")[0]) < 2
torch.from_numpy(numpy.zeros(1))' >/dev/null 2>&1; then
    say "Python: installing ${python_pip_pkgs[*]} into $python_venv"
    "$python_bin" -m pip install -q --disable-pip-version-check "${python_pip_pkgs[@]}"
  fi
}

# python_cuda_arch: the CUDA architectures of the release build (the GPU nvidia-smi finds, else
# sm_75 and sm_90).
python_cuda_arch() {
  local a
  a=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
  [[ "$a" =~ ^[0-9]+$ ]] && echo "$a" || echo "75-real;90"
}

# python_suite [fast]: `pip install .` into the environment (incremental, in build-python/), then
# pytest on python/tests; `fast` leaves out the tests marked slow (a 1 GiB pair, gloo process
# groups, the C++ recorder comparison, kill -9). A failed test fails the run.
python_suite() {
  ensure_python_venv
  say "Python: pip install . (build-python/)"
  "$python_bin" -m pip install -q --disable-pip-version-check --no-build-isolation \
    --config-settings=build-dir=build-python \
    "--config-settings=cmake.define.CMAKE_CUDA_ARCHITECTURES=$(python_cuda_arch)" "$root"
  local expect_cuda=0 select=()
  if [ -n "${CUDACXX:-}" ] || command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then expect_cuda=1; fi
  [ "${1:-}" = fast ] && select=(-m "not slow")
  say "Python: pytest python/tests${select:+ (not slow)}"
  (cd "$root" && FEVO_EXPECT_CUDA=$expect_cuda OMP_WAIT_POLICY=passive \
    "$python_bin" -m pytest -q -rs -p no:cacheprovider "${select[@]}" python/tests)
}

# python_asan_suite: the extension built with AddressSanitizer and UBSan (build-python-asan/, CPU
# only), and the tests that run in the test process (not the slow ones, which start other
# programs) with the sanitizer runtimes preloaded into Python; this build has no CUDA, so it also
# checks that a build without CUDA imports and says cuda_available() == False.
python_asan_suite() {
  ensure_python_venv
  say "Python: the extension under ASan + UBSan (build-python-asan/)"
  local dir=build-python-asan
  mkdir -p "$dir"
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
    "-DCMAKE_CXX_FLAGS=-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer" \
    "-DCMAKE_MODULE_LINKER_FLAGS=-fsanitize=address,undefined" -DFEVO_BUILD_PYTHON=ON -DFEVO_BUILD_TESTS=OFF \
    -DFEVO_BUILD_BENCH=OFF -DFEVO_BUILD_EXAMPLES=OFF -DFEVO_BUILD_TOOLS=OFF -DFEVO_INSTALL=OFF -DFEVO_ENABLE_CUDA=OFF \
    "-DPython_EXECUTABLE=$python_bin" >"$dir.configure.log" 2>&1 || { cat "$dir.configure.log"; exit 1; }
  cmake --build "$dir" -j"$jobs" --target _fevo  # not the stub: stubgen cannot load it without the preload
  # The package as installed, with this build's module: python/fevo beside it.
  rm -rf "$dir/pkg" && mkdir -p "$dir/pkg/fevo"
  cp "$root"/python/fevo/*.py "$root"/python/fevo/py.typed "$dir"/python/_fevo*.so "$dir/pkg/fevo/"
  local preload
  preload="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libubsan.so)"
  (cd "$root" && PYTHONPATH="$root/$dir/pkg" LD_PRELOAD="$preload" OMP_WAIT_POLICY=passive FEVO_EXPECT_CUDA=0 \
    ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
    "$python_bin" -m pytest -q -p no:cacheprovider -m "not slow" \
      python/tests/test_compute.py python/tests/test_inputs.py python/tests/test_recorder.py \
      python/tests/test_package.py::test_cuda_entry_points_when_nvcc_was_found)
}
# ---- end of the Python section ---------------------------------------------------------------------

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
    # copies and dependent launches), in two thirds of the default list's time; the GPU benchmark,
    # which cannot run there, for sm_90 alone (bench/CMakeLists.txt).
    cuda_arch=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -1 | tr -d ' .' || true)
    cuda_args=("-DCMAKE_CUDA_ARCHITECTURES=$cuda_arch" -DFEVO_BENCH_CUDA_ARCHITECTURES=)
    [[ "$cuda_arch" =~ ^[0-9]+$ ]] || cuda_args=("-DCMAKE_CUDA_ARCHITECTURES=75-real;90" -DFEVO_BENCH_CUDA_ARCHITECTURES=90)
    configure_build build -DFEVO_BUILD_TESTS=ON -DFEVO_BUILD_BENCH=ON "${cuda_args[@]}" "${cuobjdump_args[@]}"
    # Passive OpenMP waiting: tests run side by side, and spinning threads would starve each other.
    if [ "$fast" = 1 ]; then
      (cd build && OMP_WAIT_POLICY=passive ctest --output-on-failure -j"$jobs" -L fast --no-tests=error)
      python_suite fast
      say "the fast tests passed; ./run.sh test runs the whole suite and the sanitizer build"
      exit 0
    fi
    (cd build && OMP_WAIT_POLICY=passive ctest --output-on-failure -j"$jobs")
    python_suite
    say "sanitizer build (ASan + UBSan) and tests (build-asan/)"
    mkdir -p build-asan
    # -O1 -g1: the longest step here. Under the sanitizers -O1 compiles a file in half to three
    # quarters of its -O2 time (a backend test 205 s -> 99 s, an I/O test 210 s -> 137 s of a
    # 2 GHz core) for tests that run a fifth slower; -g1 (line tables) is all a sanitizer report's
    # stack (inlined frames included) needs, where full -g costs about a fifth more compile time.
    configure_build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
      -DFEVO_SANITIZE=ON -DFEVO_BUILD_TESTS=ON -DFEVO_BUILD_BENCH=OFF -DFEVO_BUILD_EXAMPLES=ON -DFEVO_ENABLE_CUDA=OFF
    (cd build-asan && OMP_WAIT_POLICY=passive ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --output-on-failure -j"$jobs" -LE package)
    python_asan_suite
    ;;
  *)
    usage
    ;;
esac
