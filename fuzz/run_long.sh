#!/usr/bin/env bash
# Long fuzz run of every native kernel against the ASan + UBSan build (fuzz/build_sanitized.sh first).
#
#   RUNS=1000000 bash fuzz/run_long.sh            # all kernels, two at a time, nice'd, seeded random bytes
#   DRIVER=atheris RUNS=1000000 bash fuzz/run_long.sh
#   KERNELS="label_map resize_area" PARALLEL=2 bash fuzz/run_long.sh   # a subset
#   SEED_BASE=2000 OUT=fuzz/out2 bash fuzz/run_long.sh   # other seeds (kernel i gets SEED_BASE + i), another folder
#
# Per kernel: fuzz/out/<kernel>.log (output, sanitizer reports) and fuzz/out/<kernel>.json (execution counts, updated
# every 5000 executions, so an interrupted run still says how far it got); fuzz/out/<kernel>.rc is the exit code
# (0: no finding; a sanitizer report, a crash or a contract violation ends the process with a non-zero code).
set -uo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
runs="${RUNS:-1000000}"
driver="${DRIVER:-random}"
parallel="${PARALLEL:-2}"
out="${OUT:-$here/fuzz/out}"
so="$(ls "$here"/build/asan/_native*.so 2>/dev/null | head -1)"
[ -n "$so" ] || { echo "no sanitized build: run fuzz/build_sanitized.sh" >&2; exit 2; }
if [ -z "${LD_PRELOAD:-}" ]; then
  cxx="${CXX:-g++}"
  export LD_PRELOAD="$("$cxx" -print-file-name=libasan.so):$("$cxx" -print-file-name=libubsan.so)"
fi
# no leak check (CPython keeps its arenas); huge requests fail as MemoryError instead of aborting or exhausting RAM
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=2048:halt_on_error=1:abort_on_error=1"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
export MEDSAM_EDGE_NUM_THREADS="${MEDSAM_EDGE_NUM_THREADS:-2}"  # exercise the threaded row split too
mkdir -p "$out"
one() {
  local k="$1" seed="$2"
  local extra=(--runs "$runs" --seed "$seed" --stats "$out/$k.json")
  [ "$driver" = atheris ] && extra+=(--atheris --corpus "$out/corpus-$k")
  nice -n "${NICE:-10}" python "$here/fuzz/fuzz_kernels.py" --native "$so" --kernel "$k" "${extra[@]}" >"$out/$k.log" 2>&1
  echo $? >"$out/$k.rc"
}
read -r -a kernels <<<"${KERNELS:-preprocess postprocess label_map resize_area box_from_mask paste_masks}"
i=0
for k in "${kernels[@]}"; do
  one "$k" $((${SEED_BASE:-1000} + i)) &
  i=$((i + 1))
  while [ "$(jobs -rp | wc -l)" -ge "$parallel" ]; do sleep 5; done
done
wait
for k in "${kernels[@]}"; do echo "$k rc=$(cat "$out/$k.rc") $(cat "$out/$k.json" 2>/dev/null)"; done
