#!/usr/bin/env bash
# The fault-injection suite (tests/faults) at full scale: every training stage and the pipeline is killed
# at EVERY point an uninterrupted run reaches (after each optimiser step, between the files and renames of
# each checkpoint write, between pipeline steps), resumed, and checked against the uninterrupted run
# (weights bit for bit, summary numbers). Writes a table of stages x kill points survived.
#   scripts/fault_campaign.sh [REPORT.jsonl]        (about 15-20 min on 2 CPU cores)
set -euo pipefail
cd "$(dirname "$0")/.."
REPORT=${1:-runs/fault_campaign.jsonl}
mkdir -p "$(dirname "$REPORT")"
: > "$REPORT"
ALIGNLAB_FAULT_POINTS=all ALIGNLAB_FAULT_REPORT="$REPORT" .venv/bin/python -m pytest -q -p no:cacheprovider \
  tests/faults/test_kill_resume.py
.venv/bin/python - "$REPORT" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
print(f"{'stage':<15}{'kill points':>12}{'kills':>8}{'runs lost':>11}")
for r in rows:
    print(f"{r['stage']:<15}{r['kill_points']:>12}{r['kills']:>8}{r['lost']:>11}")
print(f"{'total':<15}{sum(r['kill_points'] for r in rows):>12}{sum(r['kills'] for r in rows):>8}{sum(r['lost'] for r in rows):>11}")
PY
