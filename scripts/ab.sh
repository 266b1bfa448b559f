#!/usr/bin/env bash
# A/B of source variants on a GPU machine, in one call on one card: each variant scratch/ab/<name>.cu (an untracked
# copy of one source file, e.g. `git show <commit>:<file> > scratch/ab/base.cu`) replaces $AB_FILE in its own copy
# of the tree under /tmp/ab_<name>; a variant scratch/ab/<name>.tar (`git archive <commit> -o ...`) is a whole
# tree instead; a variant without either builds the tree as it is. Builds $AB_TARGET per
# variant in parallel, then runs "$AB_CMD" (a path under the build directory plus arguments) REPS times per
# variant, alternating the variants so that clock and thermal drift hit all of them alike.
#
#   AB_FILE=src/kernels/sm90/attention/kv_outer.cu AB_TARGET=bench_prefill_attention \
#   AB_CMD="bench/bench_prefill_attention --min-n 524288 --chunks 16384,65536" scripts/ab.sh base new
#
# AB_PHASE=build or AB_PHASE=run does one half only; AB_JOBS sets each variant's build jobs (8: the variants build
# at once, so variants x AB_JOBS should not exceed the machine's cores by much). Defaults: the index selection file,
# bench_indexer, its decode cases, REPS=3.
set -uo pipefail
cd "$(dirname "$0")/.."
vars="$*"
file="${AB_FILE:-src/kernels/sm90/indexer/index_select.cu}"
target="${AB_TARGET:-bench_indexer}"
[ "${AB_PHASE:-all}" = run ] || for v in $vars; do
  rm -rf "/tmp/ab_$v" && mkdir -p "/tmp/ab_$v"
  if [ -f "scratch/ab/$v.tar" ]; then  # a whole tree (git archive <commit> -o scratch/ab/<name>.tar)
    tar -xf "scratch/ab/$v.tar" -C "/tmp/ab_$v"
  else
    tar --exclude='./build*' --exclude='./out' --exclude='./.git' --exclude='./scratch' -cf - . | tar -xf - -C "/tmp/ab_$v"
  fi
  [ -f "scratch/ab/$v.cu" ] && cp "scratch/ab/$v.cu" "/tmp/ab_$v/$file"
  (cmake -S "/tmp/ab_$v" -B "/tmp/ab_$v/b" -G Ninja -DCMAKE_BUILD_TYPE=Release -DMSA_BUILD_TESTS=OFF >"/tmp/ab_$v.log" 2>&1 &&
     cmake --build "/tmp/ab_$v/b" --target $target -j ${AB_JOBS:-8} >>"/tmp/ab_$v.log" 2>&1 || echo "build failed: $v (/tmp/ab_$v.log)") &
done
wait
[ "${AB_PHASE:-all}" = build ] && exit 0
for r in $(seq 1 "${REPS:-3}"); do
  for v in $vars; do
    echo "== $v run $r"
    eval "/tmp/ab_$v/b/${AB_CMD:-bench/bench_indexer --filter decode}"
  done
done
