"""What is a policy's gold made of? Each policy's mean gold and its parts by component (helpful, truthful,
harmless, style: gold is their weighted sum) on the first held-out prompts of a run's world, one sampled
answer each at temperature 1 with the held-out seed, beside the gold of a few constant answers (a diagnostic
for ``study overoptimization``; not part of the pipeline).

    python scripts/policy_gold_parts.py runs/default RUN/sft RUN/study_overoptimization/ppo_rm_100pct ...

A policy whose gold is high while its helpful part is near 0 gains gold by saying little: no false claims,
nothing harmful, clean style. The constant answers show how much gold such answers get on these prompts.
"""

from __future__ import annotations

import argparse
import collections
import statistics
from pathlib import Path

from alignlab.evaluate.heldout_samples import sample_and_score
from alignlab.evaluate.heldout_set import heldout_seed, load_heldout
from alignlab.models.load import disable_dropout, load_causal_lm, load_tokenizer
from alignlab.world import COMPONENTS

CONSTANT_ANSWERS = ("I don't know.", "No.", "Sorry, I can't help with that.")


def summarize(gold: list[float], parts: dict[str, list[float]]) -> str:
    cells = ", ".join(f"{c} {statistics.fmean(parts[c]):.3f}" for c in COMPONENTS)
    return f"gold {statistics.fmean(gold):.3f} ({cells})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("policy", nargs="*", help="policy folders (causal LMs)")
    ap.add_argument("--prompts", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0, help="the run seed whose held-out sampling seed is used")
    a = ap.parse_args()
    held = load_heldout(str(Path(a.run_dir) / "world"), "", "test", a.prompts)
    rows, judge = held.rows, held.judge
    for y in CONSTANT_ANSWERS:
        texts = [y] * len(rows)
        print(f"constant {y!r:<34} {summarize(judge.gold(rows, texts), judge.gold_parts(rows, texts))}")
    for folder in a.policy:
        tok, policy = load_tokenizer(folder), load_causal_lm(folder)
        disable_dropout(policy)
        r = sample_and_score(
            policy, tok, rows, temperature=1.0, seed=heldout_seed(a.seed), judge=judge, gold_parts=True
        )
        parts = {c: r[f"gold_{c}_scores"] for c in COMPONENTS}
        common = collections.Counter(r["texts"]).most_common(3)
        print(f"{folder}\n  {summarize(r['gold_scores'], parts)}\n  most common answers: {common}")


if __name__ == "__main__":
    main()
