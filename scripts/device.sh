#!/usr/bin/env bash
# One command for a GPU machine: configure + build with all cores, run every test (GPU suites included), run
# compute-sanitizer (memcheck, racecheck, synccheck: 53, 118 and 52 s on 33 tests in 4 shards at 91c4b60) on the quick
# GPU tests (all SM90_* but the 1M-token and layer and graph ones: they chain kernels that are checked one by one; the
# decode layer's handoff test stays in, since only MsaDecode runs the merge-to-attention handoff; synccheck: see
# sanitize below) and synccheck on tools/synccheck_cluster_repro, run
# the benchmarks, and write full logs and JSON under $OUT (./out when OUT is unset). Prints a short summary table
# last.
#
#   scripts/device.sh                  everything
#   MSA_SKIP_TESTS=1 scripts/device.sh benchmarks only
#   MSA_SKIP_SANITIZERS=1 scripts/device.sh    everything but compute-sanitizer
#   MSA_SKIP_BENCHMARKS=1 scripts/device.sh    tests and sanitizers only (a full run at 6d1d7c2 on an H200 was still
#                                      in its benchmarks at 570 s, past one device call: split it into this and
#                                      MSA_SKIP_TESTS=1)
#   MSA_ONLY_SANITIZERS=1 scripts/device.sh    build and compute-sanitizer only (3.4 minutes at 749d22c; the
#                                      rest, MSA_SKIP_SANITIZERS=1, took another 3.5)
#   MSA_SANITIZER_TOOLS="racecheck" MSA_SANITIZER_SHARDS=4   which tools, in how many parallel test shards
#   MSA_PACK=1 scripts/device.sh       also pack every log and JSON into $OUT/device-logs.tar.gz (summary.json stays)
#   MSA_COMMIT=<hash> scripts/device.sh  the commit to print (a copied tree's git metadata may be stale: pass the
#                                      submitting machine's `git rev-parse --short HEAD`)
# GoogleTest: the installed package, else MSA_GTEST_SOURCE_DIR, else .deps/googletest (a carried copy of Debian's
# /usr/src/googletest: `mkdir -p .deps && cp -r /usr/src/googletest .deps/`).
set -uo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-$PWD/out}"
mkdir -p "$out"
build="${MSA_BUILD_DIR:-build-device}"
jobs="$(nproc)"
[ -z "${MSA_GTEST_SOURCE_DIR:-}" ] && [ -f .deps/googletest/CMakeLists.txt ] && export MSA_GTEST_SOURCE_DIR="$PWD/.deps/googletest"

declare -A result
gpu="$(nvidia-smi --query-gpu=name,driver_version --format=csv,noheader 2>/dev/null | head -1)"
[ -n "$gpu" ] || gpu="none"
commit="${MSA_COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"

# sanitize TOOL: compute-sanitizer over the quick GPU tests in $shards GoogleTest shards at once (the tools spend
# most of their time on the host, so shards run side by side on the one GPU); fails if any shard fails.
# synccheck leaves out FourQueriesGroupOfFour, the one test whose fused-kernel clusters share SMs (48 rows of 16
# CTAs, three per SM): synccheck reports divergent barriers on any cluster launch whose CTAs share an SM, in
# uniform code, which sanitize_synccheck_repro shows on a kernel of a few lines.
shards="${MSA_SANITIZER_SHARDS:-4}"
sanitize() {
  local tool="$1" i rc=0
  local filter='SM90_*:-*MillionToken*:SM90_LayerOps.Prefill*:SM90_LayerOps.DecodeSelects*:SM90_LayerOps.Fp8*'
  # Long decode contexts (300K, up to 200K tokens) stay out, and the late-input check (a read within 100 ms of the
  # host); the prefill sweeps run one round each.
  filter="$filter:SM90_Graphs*:SM90_LayerOps.DecodeOneRequest*:SM90_Sweep.DecodeLayer:SM90_Sweep.LateInputs*"
  [ "$tool" = synccheck ] && filter="$filter:SM90_DecodeAttentionKernel.FourQueriesGroupOfFour"
  # Not --gtest_brief: GoogleTest flushes each test's RUN line, so a shard killed by a signal (its buffered output
  # lost) still names the test it was in. One racecheck shard died that way once at 75e7911 (H200) and passed in
  # three reruns.
  local pids=()
  for i in $(seq 0 $((shards - 1))); do
    MSA_SWEEP_ROUNDS=1 GTEST_TOTAL_SHARDS="$shards" GTEST_SHARD_INDEX="$i" \
      timeout 420 compute-sanitizer --tool "$tool" --error-exitcode 1 \
      "$build/tests/msa_tests" --gtest_filter="$filter" >"$out/sanitizer-$tool-$i.log" 2>&1 &
    pids+=("$!")
  done
  for i in $(seq 0 $((shards - 1))); do
    wait "${pids[$i]}" && continue
    local status=$?
    rc=1
    echo "== $tool shard $i of $shards: exit status $status, last test started:" \
      "$(grep -o 'RUN.*' "$out/sanitizer-$tool-$i.log" | tail -1)" >>"$out/sanitizer-$tool-$i.log"
  done
  cat "$out"/sanitizer-"$tool"-*.log && rm -f "$out"/sanitizer-"$tool"-*.log
  return "$rc"
}

# synccheck on tools/synccheck_cluster_repro (uniform control flow before every barrier): it must be clean launched
# without clusters and with one CTA per SM. Prints whether the tool still reports the clusters whose CTAs share an SM;
# once it does not, FourQueriesGroupOfFour goes back into the synccheck set.
sanitize_synccheck_repro() {
  local repro="$build/tools/synccheck_cluster_repro" args n rc=0
  compute-sanitizer --version | tail -1
  for args in "--no-cluster" "--one-per-sm" "--launch-only --one-per-sm" "" "--launch-only"; do
    n="$(compute-sanitizer --tool synccheck "$repro" $args --launches 10 2>&1 | sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors$/\1/p')"
    echo "synccheck_cluster_repro ${args:-(clusters sharing SMs)}: ${n:-?} reports"
    case "$args" in --no-cluster|*one-per-sm) [ "$n" = 0 ] || rc=1 ;; esac
    [ -z "$args" ] && [ "$n" = 0 ] && echo "  synccheck no longer reports shared-SM clusters: put FourQueriesGroupOfFour back"
  done
  "$repro" --launches 3 && "$repro" --no-cluster --launches 3 || rc=1  # the kernel's own results, without the tool
  return "$rc"
}

step() {  # step NAME LOG CMD... : runs CMD, logs to $out/LOG, records pass/fail
  local name="$1" log="$2"
  shift 2
  local t0=$SECONDS
  if "$@" >>"$out/$log" 2>&1; then result[$name]="pass ($((SECONDS - t0)) s)"; else result[$name]="FAIL ($((SECONDS - t0)) s, see $log)"; fi
  # One line per step as it ends, so a run cut short by a time limit still shows how far it got.
  printf '[%4d s] %-22s %s\n' "$SECONDS" "$name" "${result[$name]}"
}

: >"$out/build.log"
step configure build.log cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSA_PTXAS_VERBOSE=ON
step build build.log cmake --build "$build" -j "$jobs"

if [ -z "${MSA_SKIP_TESTS:-}" ] && [ -z "${MSA_ONLY_SANITIZERS:-}" ]; then
  : >"$out/ctest.log"
  step tests ctest.log ctest --test-dir "$build" -j "$jobs" --output-on-failure --output-junit "$out/ctest.xml"
  grep -E "tests passed|tests failed|Skipped|Failed" "$out/ctest.log" | tail -n 20 >"$out/ctest_summary.txt"
  # Python package: the same CMake project with the nanobind module (no network here, so no pip build), staged as a
  # package directory; the pytest suites include the torch and CUDA ones.
  : >"$out/python.log"
  if python3 -c "import nanobind, pytest" >/dev/null 2>&1; then
    py_build="$build-python"
    step python-build python.log cmake -S . -B "$py_build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSA_BUILD_PYTHON=ON \
      -DMSA_BUILD_TESTS=OFF -DMSA_BUILD_APPS=OFF -DMSA_BUILD_BENCHMARKS=OFF -DPython_EXECUTABLE="$(command -v python3)" \
      -Dnanobind_DIR="$(python3 -m nanobind --cmake_dir)"
    step python-build python.log cmake --build "$py_build" -j "$jobs"
    rm -rf "$py_build/stage" && mkdir -p "$py_build/stage/msa"
    cp python/msa/*.py "$py_build/stage/msa/" && cp -a "$py_build"/_msa*.so "$py_build"/libmsa.so* "$py_build/stage/msa/"
    step python-tests python.log timeout 300 env PYTHONPATH="$PWD/$py_build/stage" python3 -m pytest -q -rs python/tests
  else
    result[python-tests]="skipped (no nanobind or pytest)"
  fi
fi
if [ -z "${MSA_SKIP_TESTS:-}" ]; then
  : >"$out/sanitizer.log"
  [ -n "${MSA_SKIP_SANITIZERS:-}" ] && result[sanitizers]="skipped (MSA_SKIP_SANITIZERS)"
  [ -n "${MSA_SKIP_SANITIZERS:-}" ] || for tool in ${MSA_SANITIZER_TOOLS:-memcheck racecheck synccheck}; do
    step "sanitizer-$tool" sanitizer.log sanitize "$tool"
    [ "$tool" = synccheck ] && step sanitizer-synccheck-repro sanitizer.log sanitize_synccheck_repro
  done
fi

: >"$out/bench.log"
if [ -n "${MSA_ONLY_SANITIZERS:-}" ] || [ -n "${MSA_SKIP_BENCHMARKS:-}" ]; then
  result[benchmarks]="skipped (MSA_ONLY_SANITIZERS or MSA_SKIP_BENCHMARKS)"
else
  benches=$(find "$build/bench" -maxdepth 1 -type f -executable -name 'bench_*' 2>/dev/null | sort)
  if [ -n "$benches" ]; then
    for b in $benches; do step "$(basename "$b")" bench.log timeout 300 "$b" --json "$out/$(basename "$b").json"; done
  else
    result[benchmarks]="none built yet"
  fi
  # The layer as a user times it: `msa bench` (per phase and end to end), and a near-empty decode run (one token of
  # context) for the launch overhead of a run.
  if [ -x "$build/msa" ]; then
    step msa-bench-prefill bench.log timeout 300 "$build/msa" bench --mode prefill --json "$out/msa_bench_prefill.json"
    step msa-bench-decode bench.log timeout 120 "$build/msa" bench --mode decode --json "$out/msa_bench_decode.json"
    step msa-bench-decode-fp8 bench.log timeout 120 "$build/msa" bench --mode decode --index-dtype fp8 \
      --json "$out/msa_bench_decode_fp8.json"
    step msa-bench-empty bench.log timeout 120 "$build/msa" bench --mode decode --tokens 1 \
      --json "$out/msa_bench_empty.json"
  fi
fi

{
  echo "{"
  echo "  \"gpu\": \"$gpu\", \"commit\": \"$commit\", \"date\": \"$(date -u +%Y-%m-%dT%H:%M:%SZ)\","
  echo "  \"steps\": {"
  first=1
  for k in "${!result[@]}"; do
    [ $first -eq 1 ] || echo ","
    printf '    "%s": "%s"' "$k" "${result[$k]}"
    first=0
  done
  echo ""
  echo "  }"
  echo "}"
} >"$out/summary.json"

echo
echo "== msa device run: $gpu, commit $commit =="
[ -f "$out/ctest_summary.txt" ] && cat "$out/ctest_summary.txt"
printf '%-22s %s\n' "step" "result"
for k in configure build tests python-build python-tests sanitizer-memcheck sanitizer-racecheck sanitizer-synccheck sanitizer-synccheck-repro; do
  [ -n "${result[$k]:-}" ] && printf '%-22s %s\n' "$k" "${result[$k]}"
done
for k in "${!result[@]}"; do
  case "$k" in configure|build|tests|python-build|python-tests|sanitizer-*) ;; *) printf '%-22s %s\n' "$k" "${result[$k]}" ;; esac
done
[ -f "$out/sanitizer.log" ] && grep -h "^synccheck_cluster_repro\|put FourQueriesGroupOfFour back" "$out/sanitizer.log"
if [ -n "${MSA_PACK:-}" ]; then
  (cd "$out" && find . -maxdepth 1 -type f ! -name summary.json ! -name device-logs.tar.gz -printf '%f\n' |
    tar czf device-logs.tar.gz -T - --remove-files)
fi
for k in "${!result[@]}"; do case "${result[$k]}" in FAIL*) exit 1 ;; esac; done
exit 0
