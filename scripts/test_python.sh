#!/usr/bin/env bash
# Builds the Python package with `pip install .` (scikit-build-core + nanobind, the same CMake project) into a
# private virtual environment and runs the pytest suites. Needs PyPI for scikit-build-core, nanobind, numpy and
# pytest. Usage: scripts/test_python.sh   (venv: build/python-venv, override with MSA_PY_VENV)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${MSA_PY_VENV:-build/python-venv}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q "scikit-build-core>=0.10" "nanobind>=2.0" numpy pytest
"$venv/bin/python" -m pip install -q --no-build-isolation .
# Run from outside the source tree so `import msa` finds the installed package, not python/msa.
(cd "$venv" && bin/python -m pytest -q "$OLDPWD/python/tests")
