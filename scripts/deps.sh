#!/usr/bin/env bash
# Installs what building and testing msa needs, from Debian's packages, when it is missing:
# a C++17 compiler, CMake >= 3.24, Ninja, GoogleTest, and Python 3 with venv (the Python package's test). The CUDA toolkit is optional (without it, msa builds
# CPU-only). Safe to run repeatedly; does nothing when everything is present.
set -euo pipefail

need=()
command -v g++ >/dev/null 2>&1 || need+=(g++)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v ninja >/dev/null 2>&1 || need+=(ninja-build)
if [ ! -f /usr/src/googletest/CMakeLists.txt ] && [ ! -f /usr/lib/x86_64-linux-gnu/cmake/GTest/GTestConfig.cmake ] \
   && [ ! -f /usr/lib/aarch64-linux-gnu/cmake/GTest/GTestConfig.cmake ] && [ -z "${MSA_GTEST_SOURCE_DIR:-}" ]; then
  need+=(libgtest-dev googletest)
fi
command -v python3 >/dev/null 2>&1 || need+=(python3)
python3 -c "import venv, ensurepip" >/dev/null 2>&1 || need+=(python3-venv)
if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
echo "scripts/deps.sh: installing ${need[*]}"
if [ "$(id -u)" != 0 ]; then
  echo "scripts/deps.sh: need root (or sudo) to apt-get install ${need[*]}" >&2
  exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}"
