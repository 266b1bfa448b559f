#!/usr/bin/env bash
# Builds msa with its tests and runs all of them (CPU suites everywhere; SM90_* suites skip without an sm_90 GPU),
# then builds the Python package and runs its pytest suites (scripts/test_python.sh; MSA_SKIP_PYTHON=1 skips it).
# Usage: scripts/test.sh            (build dir: build/, override with MSA_BUILD_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build="${MSA_BUILD_DIR:-build}"
jobs="$(nproc)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MSA_CMAKE_ARGS:-}
cmake --build "$build" -j "$jobs"
ctest --test-dir "$build" -j "$jobs" --output-on-failure
[ -n "${MSA_SKIP_PYTHON:-}" ] || scripts/test_python.sh
