"""Prompt splits shaped like InstructGPT's: SFT 13k : RM 33k : PPO 31k, test 3,196.

All splits are drawn from one stream with a single set of seen prompts, so no prompt
text appears twice anywhere -- across splits or within one. Each draw is closed-domain
with probability ``closed_domain_rate``, else picks an open-domain cluster by
``CLUSTER_WEIGHTS``; then a task in it, so every split has the same cluster mix. When a
cluster runs out of new prompts (a small world has only so many facts to ask about) it is
dropped from the mix and the others fill in; the realised counts are in ``stats.json``.

Constraints are attached afterwards from their own random stream (so changing them leaves
the prompts as they were): a share ``constraint_rate`` of every split gets one, of a kind
trained on, except the test split, whose constraints may be of any kind, and its probe
split ``heldout_constraints``, whose prompts all carry a held-out kind.
"""

from __future__ import annotations

import json
import random
from typing import Any

from alignlab.world import constraints
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

    def __init__(self, pools: T.Pools, rng: random.Random, closed_domain_rate: float = 0.0) -> None:
        self.pools = pools
        self.rng = rng
        self.seen: set[str] = set()
        self.weights = dict(T.CLUSTER_WEIGHTS)
        self.closed_rate = closed_domain_rate
        if closed_domain_rate > 0:
            self.weights[T.CLOSED_DOMAIN] = 0.0  # picked by its own rate, not by weight
        self.exhausted: list[str] = []  # clusters that ran out, in order

    def _pick(self, weights: dict[str, float]) -> str:
        open_ = [n for n in weights if n != T.CLOSED_DOMAIN]
        if T.CLOSED_DOMAIN in weights and (not open_ or self.rng.random() < self.closed_rate):
            return T.CLOSED_DOMAIN
        return self.rng.choices(open_, weights=[weights[n] for n in open_])[0]

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


PROBE = "test_heldout_constraints"


def make_splits(
    pools: T.Pools, sizes: dict[str, int], rng: random.Random, closed_domain_rate: float = 0.0
) -> tuple[dict[str, list[dict[str, Any]]], list[str]]:
    """Records per split, and the clusters that ran out of distinct prompts.

    The test split is drawn first, so it is unaffected by how big the training splits are,
    and the held-out-constraint probe last, so its size changes no other split.
    """
    stream = PromptStream(pools, rng, closed_domain_rate)
    order = ["test", "sft_train", "sft_validation", "rm_train", "rm_validation", "ppo_train", PROBE]
    return {name: [stream.draw() for _ in range(sizes.get(name, 0))] for name in order}, stream.exhausted


def add_constraints(
    splits: dict[str, list[dict[str, Any]]], rate: float, heldout: list[str], rng: random.Random
) -> dict[str, list[dict[str, Any]]]:
    """Each split's records, a share ``rate`` with one explicit constraint (the probe: all, held-out kinds)."""
    trained = [k for k in constraints.KINDS if k not in heldout]
    out = {}
    for name, records in splits.items():
        kinds = heldout if name == PROBE else (list(constraints.KINDS) if name == "test" else trained)
        out[name] = []
        for rec in records:
            c = None
            if name == PROBE or rng.random() < rate:
                c = constraints.draw(json.loads(rec["meta"]), kinds, rng)
            out[name].append(rec if c is None else constraints.attach(rec, c, rng, heldout=c["kind"] in heldout))
    return out


PROMPT_ONLY_COLUMNS = ["prompt", "cluster", "category", "task", "template", "meta"]


def prompt_only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """RM and PPO rows: the prompt and its labels, no demonstration."""
    return [{k: r[k] for k in PROMPT_ONLY_COLUMNS} for r in records]
