"""What saying nothing earns: one fixed answer given to every held-out prompt, judged like a policy.

On the built-in world an answer that makes no claim is fully truthful, harmless and well styled, so a
constant "I don't know." can score high gold and win against a weak SFT policy without doing any task. Its
win rate is the yardstick a policy's own win must clear before it says the policy learnt more than to
decline; the refusal is the contrast the labelers already mark inappropriate on harmless prompts.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

CONSTANT_ANSWERS = ("I don't know.", "No.", "Sorry, I can't help with that.")
KEPT = ("win_rate_train_labelers", "win_rate_heldout_labelers", "gold_reward", "attempts_instruction_rate")


def constant_answer_metrics(
    records: Sequence[dict[str, Any]], baseline_samples, baseline: str, world, **boot
) -> dict[str, dict[str, Any]]:
    """{answer: its win rates against ``baseline``'s samples, its gold and how often it attempts the task}."""
    from alignlab.evaluate.metrics import evaluate_responses

    names = {answer: f"always {answer!r}" for answer in CONSTANT_ANSWERS}
    samples = {baseline: baseline_samples} | {n: [[answer]] * len(records) for answer, n in names.items()}
    results, _ = evaluate_responses(records, samples, baseline, world=world, **boot)
    return {answer: {k: results[n][k] for k in KEPT} for answer, n in names.items()}
