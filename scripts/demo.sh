#!/usr/bin/env bash
# Builds the msa tool and runs `msa demo` (default problem; extra arguments go to the demo, e.g. --tokens 8192).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
build="${MSA_BUILD_DIR:-build}"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Release ${MSA_CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j "$(nproc)" --target msa_cli
exec "$build/msa" demo "$@"
