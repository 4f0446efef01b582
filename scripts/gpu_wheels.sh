#!/usr/bin/env bash
# Fetch (here, with internet) the few pure-Python wheels that alignlab needs and the GPU machine's
# image lacks (datasets and its dill/multiprocess), into .whl/ (git-ignored via .git/info/exclude).
# Then run the GPU check with `.whl` carried: see scripts/gpu_check.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> "$(git rev-parse --git-path info/exclude)"
PY=${PYTHON:-python3}
$PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux2014_x86_64 --platform any -d .whl \
    datasets==5.2.0 dill==0.4.1 multiprocess==0.70.19
ls -la .whl
