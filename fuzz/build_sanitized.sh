#!/usr/bin/env bash
# Builds medsam_edge._native with AddressSanitizer + UndefinedBehaviorSanitizer into build/asan/ (never into the
# package tree or the installed package). The fuzz harness loads that file explicitly (fuzz/fuzz_kernels.py --native).
#
#   bash fuzz/build_sanitized.sh            # gcc/g++ (libasan, libubsan)
#   CXX=clang++ bash fuzz/build_sanitized.sh
#
# Prints the path of the built module and the LD_PRELOAD line the Python process needs (the interpreter itself is not
# instrumented, so the sanitizer runtime must be loaded first).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
out="${MEDSAM_ASAN_BUILD:-$here/build/asan}"
cxx="${CXX:-g++}"
py="${PYTHON:-python}"
pybind11_dir="$("$py" -m pybind11 --cmakedir)"
flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
mkdir -p "$out"
cmake -S "$here" -B "$out" -G Ninja \
  -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS="$flags" \
  -DCMAKE_SHARED_LINKER_FLAGS="-fsanitize=address,undefined" \
  -DPython_EXECUTABLE="$(command -v "$py")" \
  -Dpybind11_DIR="$pybind11_dir" >"$out/configure.log"
nice -n "${NICE:-10}" cmake --build "$out" -j "${JOBS:-1}" >"$out/build.log"
so="$(ls "$out"/_native*.so)"
if "$cxx" --version | grep -qi clang; then
  rt="$("$cxx" -print-file-name=libclang_rt.asan-x86_64.so)"
else
  rt="$("$cxx" -print-file-name=libasan.so):$("$cxx" -print-file-name=libubsan.so)"
fi
echo "module: $so"
echo "LD_PRELOAD=$rt"
