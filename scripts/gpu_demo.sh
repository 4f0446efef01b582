#!/usr/bin/env bash
# After scripts/gpu_check.sh: the one-minute pipeline (preset smoke) on the GPU, then the PPO throughput
# benchmark (ours vs TRL RLOO/GRPO) on CUDA with the models given, writing JSON to $OUT.
#   OUT=out scripts/gpu_demo.sh runs/default/sft runs/default/reward runs/default/world/ppo
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-gpu_check_out}; mkdir -p "$OUT"
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
export PYTHONPATH=src${PYTHONPATH:+:$PYTHONPATH}
echo "== smoke pipeline on $($PY -c 'import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU")')"
t=$(date +%s)
timeout "${SMOKE_TIMEOUT:-240}" $PY -m alignlab.cli pipeline --preset smoke --output-dir /tmp/gpu_smoke > "$OUT/smoke.log" 2>&1
echo "smoke pipeline exit $? in $(( $(date +%s) - t )) s"; grep -E "^\[pipeline\]|^report:" "$OUT/smoke.log" | tail -25
cp /tmp/gpu_smoke/timings.json "$OUT/smoke_timings.json" 2>/dev/null
cp /tmp/gpu_smoke/report.md "$OUT/smoke_report.md" 2>/dev/null
if [ $# -ge 3 ]; then
  echo "== PPO throughput on CUDA"
  timeout "${BENCH_TIMEOUT:-200}" $PY benchmarks/ppo_throughput.py --policy "$1" --reward_model "$2" --data "$3" \
      --device cuda --iterations 3 --out "$OUT/ppo_throughput_cuda.json" 2>&1 | grep -v Warning | tail -20
fi
