"""What is a policy's gold made of? Each policy's mean gold and its parts by component (helpful, truthful,
harmless, style: gold is their weighted sum) on the first held-out prompts of a run's world, one sampled
answer each at temperature 1 with the held-out seed, beside the gold of a few constant answers; each also as
the held-out labelers' win rate against the first policy named (a diagnostic for ``study overoptimization``;
not part of the pipeline).

    python scripts/policy_gold_parts.py runs/default RUN/sft RUN/study_overoptimization/ppo_rm_100pct ...

A policy whose gold is high while its helpful part is near 0 gains gold by saying little: no false claims,
nothing harmful, clean style. The constant answers show how much gold such answers get on these prompts.
"""

from __future__ import annotations

import argparse
import collections
import statistics
from pathlib import Path

from alignlab.evaluate.constant_answers import CONSTANT_ANSWERS
from alignlab.evaluate.heldout_samples import sample_and_score
from alignlab.evaluate.heldout_set import heldout_seed, load_heldout
from alignlab.evaluate.win_rate import expected_preference, identical_mask, persona_scores
from alignlab.models.load import disable_dropout, load_causal_lm, load_tokenizer
from alignlab.world import COMPONENTS


def summarize(gold: list[float], parts: dict[str, list[float]]) -> str:
    cells = ", ".join(f"{c} {statistics.fmean(parts[c]):.3f}" for c in COMPONENTS)
    return f"gold {statistics.fmean(gold):.3f} ({cells})"


def win_rate(judge, rows, texts: list[str], baseline: list[str]) -> float:
    """The held-out labelers' expected preference for ``texts`` over ``baseline``, one answer each per prompt."""
    held = judge.personas(heldout=True)
    a, b = (persona_scores(judge.components(rows, t), held)[:, None, :] for t in (texts, baseline))
    return float(expected_preference(a, b, identical_mask([[t] for t in texts], [[t] for t in baseline])).mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("policy", nargs="*", help="policy folders (causal LMs)")
    ap.add_argument("--prompts", type=int, default=320)
    ap.add_argument("--seed", type=int, default=0, help="the run seed whose held-out sampling seed is used")
    a = ap.parse_args()
    held = load_heldout(str(Path(a.run_dir) / "world"), "", "test", a.prompts)
    rows, judge = held.rows, held.judge
    answers = {}
    for folder in a.policy:
        tok, policy = load_tokenizer(folder), load_causal_lm(folder)
        disable_dropout(policy)
        r = sample_and_score(
            policy, tok, rows, temperature=1.0, seed=heldout_seed(a.seed), judge=judge, gold_parts=True
        )
        answers[folder] = r["texts"]
    answers |= {f"constant {y!r}": [y] * len(rows) for y in CONSTANT_ANSWERS}
    base = next(iter(answers))
    for name, texts in answers.items():
        line = summarize(judge.gold(rows, texts), judge.gold_parts(rows, texts))
        vs = f"; held-out labelers prefer it to {base} {100 * win_rate(judge, rows, texts, answers[base]):.1f}%"
        common = collections.Counter(texts).most_common(3)
        print(f"{name}\n  {line}{vs if name != base else ''}\n  most common answers: {common}")


if __name__ == "__main__":
    main()
