#!/usr/bin/env bash
# fevo's two commands:
#   ./run.sh demo   the main job (builds and runs the demo)
#   ./run.sh test   the whole test suite: release build + tests, then an ASan/UBSan build + tests
# Each installs the Debian packages it needs (only those missing), configures and builds.
set -euo pipefail
cd "$(dirname "$0")"
root=$(pwd)
jobs=$(nproc 2>/dev/null || echo 2)

say() { printf '\n== %s\n' "$*"; }

# Packages every command needs, and those only the test suite needs.
base_pkgs=(build-essential cmake libeigen3-dev libxtensor-dev libtorch-dev)
test_pkgs=(catch2 libbenchmark-dev libthrust-dev clang libclang-rt-14-dev)
base_pkgs+=(libcli11-dev nlohmann-json3-dev libzip-dev zlib1g-dev)
# Test-only Python packages (the pyenv python3 on PATH): oracle tests with real writers/readers.
py_test_pkgs=(numpy safetensors ml_dtypes tensorboard)

ensure_python_packages() {
  if ! python3 -c "import numpy, safetensors, ml_dtypes, tensorboard" >/dev/null 2>&1; then
    say "installing Python packages: $*"
    python3 -m pip install -q --disable-pip-version-check "$@"
  fi
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

configure_build() {  # dir, cmake args...
  local dir=$1; shift
  cmake -S "$root" -B "$dir" -DCMAKE_BUILD_TYPE=Release "$@" >"$dir.configure.log" 2>&1 ||
    { cat "$dir.configure.log"; exit 1; }
  cmake --build "$dir" -j"$jobs"
}

cmd=${1:-}
case "$cmd" in
  demo)
    ensure_packages "${base_pkgs[@]}"
    say "building (build/)"
    mkdir -p build
    configure_build build -DFEVO_BUILD_TESTS=OFF -DFEVO_BUILD_BENCH=OFF
    say "demo: fevo on raw weight buffers"
    ./build/examples/raw_buffers
    ;;
  test)
    ensure_packages "${base_pkgs[@]}" "${test_pkgs[@]}"
    ensure_python_packages "${py_test_pkgs[@]}"
    say "release build and tests (build/)"
    mkdir -p build
    configure_build build -DFEVO_BUILD_TESTS=ON -DFEVO_BUILD_BENCH=ON
    # Passive OpenMP waiting: tests run side by side, and spinning threads would starve each other.
    (cd build && OMP_WAIT_POLICY=passive ctest --output-on-failure -j"$jobs")
    say "sanitizer build (ASan + UBSan) and tests (build-asan/)"
    mkdir -p build-asan
    configure_build build-asan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DFEVO_SANITIZE=ON -DFEVO_BUILD_TESTS=ON \
      -DFEVO_BUILD_BENCH=OFF -DFEVO_BUILD_EXAMPLES=ON -DFEVO_ENABLE_CUDA=OFF
    (cd build-asan && OMP_WAIT_POLICY=passive ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
      ctest --output-on-failure -j"$jobs" -LE package)
    ;;
  *)
    echo "usage: ./run.sh demo|test" >&2
    exit 2
    ;;
esac
