#!/usr/bin/env bash
# One short check of the PPO speed path on a CUDA machine (a few minutes): prints what it found.
#
#   scripts/gpu_wheels.sh            # once, where there is internet: datasets & co. into .whl/
#   scripts/gpu_check.sh             # on the GPU machine, with .whl carried along
#
# Runs: the CUDA tests (KV-cache sampler log-probs = scorer log-probs, packed = padded scoring,
# a 3-iteration PPO run with device=cuda), the vLLM tests (skipped, with the reason, unless the
# vllm package imports and CUDA is there), and the CPU tests of the same code for reference.
# Writes the pytest log and a JSON summary to $OUT (or ./gpu_check_out) and exits non-zero on failure.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
if ls .whl/*.whl >/dev/null 2>&1; then  # missing pure-Python packages carried as wheels
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}

echo "== environment"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "nvidia-smi: not available"
$PY - <<'PY'
import importlib, torch
print(f"torch {torch.__version__}, CUDA available: {torch.cuda.is_available()}"
      + (f", device {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ""))
for name in ("transformers", "accelerate", "datasets", "peft", "vllm"):
    try:
        print(f"{name} {importlib.import_module(name).__version__}")
    except Exception as e:
        print(f"{name}: NOT importable ({type(e).__name__}: {e})")
from alignlab.rollout.backends import vllm_unavailable_reason
r = vllm_unavailable_reason()
print("vLLM backend:", "available" if r is None else f"NOT available: {r} -> tests/test_vllm.py will be skipped")
PY

echo "== tests (CUDA, vLLM, and the CPU tests of the same code)"
$PY -m pytest -q -rs -p no:cacheprovider tests/test_cuda.py tests/test_vllm.py tests/test_packed.py \
    tests/test_rollout_backends.py --junitxml="$OUT/junit.xml" -s 2>&1 | tee "$OUT/pytest.log"
rc=${PIPESTATUS[0]}

echo "== summary"
$PY - "$OUT" "$rc" <<'PY'
import json, sys, xml.etree.ElementTree as ET
out, rc = sys.argv[1], int(sys.argv[2])
cases = ET.parse(f"{out}/junit.xml").getroot().iter("testcase")
res = {}
for c in cases:
    status = "skipped" if c.find("skipped") is not None else "failed" if (c.find("failure") is not None or c.find("error") is not None) else "passed"
    reason = c.find("skipped").get("message", "") if status == "skipped" else ""
    res[f"{c.get('classname').split('.')[-1]}::{c.get('name')}"] = status + (f" ({reason})" if reason else "")
for k, v in res.items():
    print(f"  {v.split(' ')[0].upper():8s} {k} {v[len(v.split(' ')[0]):]}")
cuda = {k: v for k, v in res.items() if k.startswith("test_cuda")}
vllm = {k: v for k, v in res.items() if k.startswith("test_vllm")}
summary = {"pytest_exit_code": rc,
           "cuda_tests": "passed" if cuda and all(v == "passed" for v in cuda.values()) else cuda,
           "vllm_tests": ("passed" if vllm and all(v == "passed" for v in vllm.values())
                          else "skipped: " + next(iter(vllm.values()), "") if vllm and all(v.startswith("skipped") for v in vllm.values())
                          else vllm)}
print(json.dumps(summary, indent=2))
json.dump({"summary": summary, "tests": res}, open(f"{out}/gpu_check.json", "w"), indent=2)
PY
exit "$rc"
