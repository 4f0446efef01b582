"""Judges of (prompt, response): the world's labelers (gold) and a trained reward model (proxy).

On the built-in world the labelers are known functions, so the *gold* reward of any
policy can be computed exactly; a reward model is only a learned proxy of it. Keeping
the two side by side is what makes reward hacking measurable (proxy up, gold down).
"""

from __future__ import annotations

from typing import Any

from alignlab.world import (
    COMPONENTS,
    gold_parts,
    gold_reward,
    gold_weights,
    heldout_gold_reward,
    load_world,
    score_response,
)


class WorldJudge:
    """Gold scores from the world's personas for rows of the world's prompt data sets."""

    def __init__(self, world_dir: str):
        self.world = load_world(world_dir)

    def gold(self, records: list[dict[str, Any]], responses: list[str], heldout: bool = False) -> list[float]:
        fn = heldout_gold_reward if heldout else gold_reward
        return [fn(self.world, r, y) for r, y in zip(records, responses)]

    def components(self, records: list[dict[str, Any]], responses: list[str]) -> list[dict[str, float]]:
        return [score_response(self.world, r, y) for r, y in zip(records, responses)]

    def gold_parts(self, records: list[dict[str, Any]], responses: list[str]) -> dict[str, list[float]]:
        """Per component, each response's part of its gold (weight x score; the parts sum to ``gold``)."""
        w = gold_weights(self.world)
        parts = [gold_parts(self.world, r, y, w) for r, y in zip(records, responses)]
        return {c: [p[c] for p in parts] for c in COMPONENTS}

    def personas(self, heldout: bool) -> list[dict[str, Any]]:
        return [p for p in self.world.personas if bool(p["heldout"]) == heldout]

    def score(self, records: list[dict[str, Any]], responses: list[str]) -> list[float]:
        """The judge interface shared with :class:`RewardModelJudge`: gold reward per response."""
        return self.gold(records, responses)


def world_records_ok(rows) -> bool:
    """Whether rows (a Dataset or list of dicts) carry what the world's labelers need."""
    cols = rows.column_names if hasattr(rows, "column_names") else (list(rows[0]) if rows else [])
    return {"prompt", "task", "meta"} <= set(cols)


class RewardModelJudge:
    """A trained reward model (``AutoModelForSequenceClassification``, num_labels=1) as a judge.

    Scores are shifted by the model's ``reward_shift`` (demonstrations average 0), and the
    prompt of each record is formatted with the reward model's own tokenizer/chat template.
    """

    def __init__(self, path: str, device: Any = "cpu", trust_remote_code: bool = False, batch_size: int = 32):
        from alignlab.models.load import load_tokenizer
        from alignlab.models.reward_model import load_reward_model

        self.tokenizer = load_tokenizer(path, trust_remote_code)
        self.model = load_reward_model(path, trust_remote_code).to(device)
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.model.eval()
        self.batch_size = batch_size

    def score(self, records: list[dict[str, Any]], responses: list[str]) -> list[float]:
        from alignlab.models.reward_model import score_texts

        prompts = [r["prompt"] for r in records]
        return score_texts(self.model, self.tokenizer, prompts, list(responses), self.batch_size).tolist()
