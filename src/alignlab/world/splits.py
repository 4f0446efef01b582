"""Prompt splits shaped like InstructGPT's: SFT 13k : RM 33k : PPO 31k, test 3,196.

All splits are drawn from one stream with a single set of seen prompts, so no prompt
text appears twice anywhere -- across splits or within one. Each draw first picks a
cluster by ``CLUSTER_WEIGHTS`` and then a task in it, so every split has the same
cluster mix. When a cluster runs out of new prompts (a small world has only so many
facts to ask about) it is dropped from the mix and the others fill in; the realised
counts are in ``stats.json``.
"""

from __future__ import annotations

import random
from typing import Any

from alignlab.world import tasks as T

INSTRUCTGPT_PROMPTS = {"sft": 13_000, "rm": 33_000, "ppo": 31_000, "test": 3_196}
_TRIES_PER_CLUSTER = 200


def split_sizes(scale: float, val_frac: float, test_min: int) -> dict[str, int]:
    """Number of prompts per split name (``sft_train``, ``sft_validation``, ...)."""
    sizes: dict[str, int] = {}
    for stage in ("sft", "rm"):
        total = max(20, round(INSTRUCTGPT_PROMPTS[stage] * scale))
        val = max(10, round(total * val_frac))
        sizes[f"{stage}_train"] = total - val
        sizes[f"{stage}_validation"] = val
    sizes["ppo_train"] = max(10, round(INSTRUCTGPT_PROMPTS["ppo"] * scale))
    sizes["test"] = max(test_min, round(INSTRUCTGPT_PROMPTS["test"] * scale))
    return sizes


class PromptStream:
    """Draws unique task instances with a fixed cluster mix."""

    def __init__(self, pools: T.Pools, rng: random.Random) -> None:
        self.pools = pools
        self.rng = rng
        self.seen: set[str] = set()
        self.weights = dict(T.CLUSTER_WEIGHTS)
        self.exhausted: list[str] = []  # clusters that ran out, in order

    def _pick(self, weights: dict[str, float]) -> str:
        names = list(weights)
        return self.rng.choices(names, weights=[weights[n] for n in names])[0]

    def draw(self) -> dict[str, Any]:
        while self.weights:
            cluster = self._pick(self.weights)
            tasks = T.tasks_in(cluster)
            for _ in range(_TRIES_PER_CLUSTER):
                task = self.rng.choices(tasks, weights=[t.weight for t in tasks])[0]
                rec = T.sample_instance(self.pools, task, self.rng)
                if rec is not None and rec["prompt"] not in self.seen:
                    self.seen.add(rec["prompt"])
                    return rec
            del self.weights[cluster]  # exhausted: the other clusters fill in
            self.exhausted.append(cluster)
        raise RuntimeError("the world ran out of distinct prompts; lower scale or raise n_entities")


def make_splits(pools: T.Pools, sizes: dict[str, int], rng: random.Random) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Records per split, and the clusters that ran out of distinct prompts.

    The test split is drawn first, so it is unaffected by how big the training splits are.
    """
    stream = PromptStream(pools, rng)
    order = ["test", "sft_train", "sft_validation", "rm_train", "rm_validation", "ppo_train"]
    return {name: [stream.draw() for _ in range(sizes[name])] for name in order}, stream.exhausted


PROMPT_ONLY_COLUMNS = ["prompt", "cluster", "task", "template", "meta"]


def prompt_only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RM and PPO rows: the prompt and its labels, no demonstration."""
    return [{k: r[k] for k in PROMPT_ONLY_COLUMNS} for r in records]
