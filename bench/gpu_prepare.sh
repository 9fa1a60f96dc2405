#!/usr/bin/env bash
# Run here (a Debian machine with catch2, libbenchmark-dev, libcli11-dev, nlohmann-json3-dev and
# libzip-dev) before bench/gpu_check.sh runs on a GPU machine that cannot install packages:
# copies their headers, libraries and CMake files into .gpu-deps/ (git-ignored), a prefix
# gpu_check.sh finds there (CLI11, nlohmann_json and libzip build the fevo command's CUDA path).
# Then: device run, carry [".gpu-deps"], command "bench/gpu_check.sh $OUT".
set -euo pipefail
cd "$(dirname "$0")/.."
dst=.gpu-deps
rm -rf "$dst" && mkdir -p "$dst/include" "$dst/lib/cmake" "$dst/lib/x86_64-linux-gnu/cmake" "$dst/share/cmake"
cp -r /usr/include/catch2 "$dst/include/"
cp -r /usr/lib/cmake/Catch2 "$dst/lib/cmake/"
cp -a /usr/lib/libCatch2WithMain.a "$dst/lib/"
cp -r /usr/include/benchmark "$dst/include/"
cp -a /usr/lib/x86_64-linux-gnu/libbenchmark*.so* /usr/lib/x86_64-linux-gnu/libbenchmark*.a "$dst/lib/x86_64-linux-gnu/" 2>/dev/null || true
cp -r /usr/lib/x86_64-linux-gnu/cmake/benchmark "$dst/lib/x86_64-linux-gnu/cmake/"
cp -r /usr/include/CLI /usr/include/nlohmann /usr/include/zip.h /usr/include/zipconf.h "$dst/include/"
cp -r /usr/share/cmake/CLI11 /usr/share/cmake/nlohmann_json "$dst/share/cmake/"
cp -a /usr/lib/x86_64-linux-gnu/libzip.so* "$dst/lib/"
grep -qx '/.gpu-deps/' .git/info/exclude 2>/dev/null || echo '/.gpu-deps/' >> .git/info/exclude
du -sh "$dst"
