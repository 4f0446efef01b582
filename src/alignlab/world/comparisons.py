"""Ranked comparison data from synthetic candidates, as InstructGPT's labelers made it.

For each RM prompt: K distinct candidates, one training persona drawn at random ranks
them (Plackett-Luce, i.e. noisy), and the row stores the responses best -> worst with
the labeler's name. ``pairs`` expands each ranking into all C(K, 2) (chosen, rejected)
pairs -- the standard TRL preference format -- for trainers that want pairs. The RM
stage should still keep one prompt's pairs together in a batch (InstructGPT).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from alignlab.world.candidates import candidate_responses
from alignlab.world.personas import rank_responses, ranking_pairs


def rank_record(world, record: dict, rng: random.Random, k: int) -> dict[str, Any]:
    persona = rng.choice(world.training_personas())
    responses = candidate_responses(world, record, rng, k)
    order = rank_responses(world, persona, record, responses, rng)
    return {
        "prompt": record["prompt"],
        "responses": [responses[i] for i in order],
        "labeler": persona["name"],
        "meta": record["meta"],
        "cluster": record["cluster"],
        "category": record["category"],
        "task": record["task"],
        "template": record["template"],
    }


def make_comparisons(world, records: Sequence[dict], rng: random.Random, k: int) -> list[dict[str, Any]]:
    return [rank_record(world, r, rng, k) for r in records]


def to_pairs(comparisons: Sequence[dict]) -> list[dict[str, str]]:
    return [
        {"prompt": c["prompt"], "chosen": chosen, "rejected": rejected}
        for c in comparisons
        for chosen, rejected in ranking_pairs(c["responses"])
    ]
