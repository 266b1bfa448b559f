#!/usr/bin/env bash
# Nsight Compute profiles of the index-selection kernels on a GPU machine (clocks left alone): the prefill kernel
# at N = 32K and the decode kernel at 1 x 1M x 1, full section set. Reports (.ncu-rep) and text details go to $OUT
# (./out when unset). Expects a build from scripts/device.sh (MSA_BUILD_DIR, default build-device).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/out}"
mkdir -p "$out"
bench="${MSA_BUILD_DIR:-build-device}/bench/bench_indexer"
profile() {  # profile NAME FILTER
  ncu --clock-control none --set full --kernel-name regex:index_select_kernel --launch-count 1 \
    -f -o "$out/ncu_$1" "$bench" --filter "$2" >"$out/ncu_$1.log" 2>&1 || { echo "ncu $1 failed (see ncu_$1.log)"; return; }
  ncu -i "$out/ncu_$1.ncu-rep" --page details >"$out/ncu_$1.txt" 2>&1
  echo "== $1"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|One or More Eligible|Warp Cycles Per Issued" "$out/ncu_$1.txt" | head -20
}
profile prefill_32k "prefill N=32K"
profile decode_1m "decode 1 x 1M"
