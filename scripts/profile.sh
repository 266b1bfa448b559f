#!/usr/bin/env bash
# Nsight Compute profiles on a GPU machine (clocks left alone), full section set: the index-selection kernels (the
# prefill kernel at N = 32K, the decode kernel at 1 x 1M x 1), and with MSA_PROFILE=prefill the main-branch
# prefill kernels at N = 128K instead (the union-of-blocks kernel on clustered selections, its first launch of the
# default schedule; the KV-outer kernel on random ones). Reports (.ncu-rep) and text details go to $OUT (./out when
# unset). Expects a build from scripts/device.sh (MSA_BUILD_DIR, default build-device).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/out}"
mkdir -p "$out"
bin="${MSA_BUILD_DIR:-build-device}/bench"
profile() {  # profile NAME KERNEL-REGEX BENCH ARGS...: the first launch of that kernel in that benchmark run
  local name="$1" kernel="$2" bench="$3"
  shift 3
  ncu --clock-control none --set full --kernel-name "regex:$kernel" --launch-count 1 -f -o "$out/ncu_$name" \
    "$bin/$bench" "$@" >"$out/ncu_$name.log" 2>&1 || { echo "ncu $name failed (see ncu_$name.log)"; return; }
  ncu -i "$out/ncu_$name.ncu-rep" --page details >"$out/ncu_$name.txt" 2>&1
  echo "== $name"
  grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|DRAM Throughput|L2 Cache Throughput|Registers Per|Achieved Occupancy|Issue Slots Busy|No Eligible|One or More Eligible|Warp Cycles Per Issued" "$out/ncu_$name.txt" | head -24
}
if [ "${MSA_PROFILE:-indexer}" = prefill ]; then
  profile union_clustered_128k union_attention_kernel bench_prefill_attention --min-n 131072 --max-n 131072 --pattern clustered
  profile kv_outer_random_128k kv_outer bench_prefill_attention --min-n 131072 --max-n 131072 --pattern random
else
  profile prefill_32k index_select_kernel bench_indexer --filter "prefill N=32K"
  profile decode_1m index_select_kernel bench_indexer --filter "decode 1 x 1M"
fi
