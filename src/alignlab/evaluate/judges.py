"""Judges of (prompt, response): the world's labelers (gold) and a trained reward model (proxy).

On the built-in world the labelers are known functions, so the *gold* reward of any
policy can be computed exactly; a reward model is only a learned proxy of it. Keeping
the two side by side is what makes reward hacking measurable (proxy up, gold down).
"""

from __future__ import annotations

from typing import Any

from alignlab.world import gold_reward, heldout_gold_reward, load_world, score_response


class WorldJudge:
    """Gold scores from the world's personas for rows of the world's prompt data sets."""

    def __init__(self, world_dir: str):
        self.world = load_world(world_dir)

    def gold(self, records: list[dict[str, Any]], responses: list[str], heldout: bool = False) -> list[float]:
        fn = heldout_gold_reward if heldout else gold_reward
        return [fn(self.world, r, y) for r, y in zip(records, responses)]

    def components(self, records: list[dict[str, Any]], responses: list[str]) -> list[dict[str, float]]:
        return [score_response(self.world, r, y) for r, y in zip(records, responses)]

    def personas(self, heldout: bool) -> list[dict[str, Any]]:
        return [p for p in self.world.personas if bool(p["heldout"]) == heldout]
