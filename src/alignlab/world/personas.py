"""Labeler personas: weighted utilities, Bradley-Terry preferences, Plackett-Luce rankings.

Each persona values the four components differently (weights sum to 1) and is noisy
with its own temperature ``tau``: u = sum_i w_i * c_i, and

    P(a > b) = sigmoid((u_a - u_b) / tau)                      (Bradley-Terry)
    ranking of K responses = sort of u/tau + Gumbel noise        (Plackett-Luce)

(the two agree: the difference of two Gumbels is logistic). Differences in weights
give systematic disagreement between labelers, ``tau`` gives random disagreement;
``agreement.py`` scales every tau by one factor so training labelers agree at a
realistic rate.

Ties: two *identical* response strings get P = 0.5, ``sample_preference`` returns
``None`` for them, and in a ranking copies of one string share that string's noisy
score, so they sit next to each other; ``ranking_pairs`` skips such pairs because
they carry no preference. Different strings with equal utility are not ties: the
noise orders them, as a human labeler forced to choose would.

The gold reward is the noise-free mean utility over the training personas -- the
quantity a reward model trained on their comparisons estimates -- so reward hacking
is measured as RM score rising while gold reward does not.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

from alignlab.world.labelers import COMPONENTS, score_response

# name, (helpful, truthful, harmless, style), base tau, held out
_PERSONAS = [
    ("ada", (0.40, 0.25, 0.25, 0.10), 0.10, False),  # balanced
    ("ben", (0.60, 0.15, 0.15, 0.10), 0.12, False),  # helpfulness first
    ("cai", (0.25, 0.20, 0.45, 0.10), 0.09, False),  # safety first
    ("dee", (0.30, 0.45, 0.15, 0.10), 0.11, False),  # truth first
    ("eli", (0.35, 0.15, 0.20, 0.30), 0.13, False),  # cares about style
    ("fay", (0.35, 0.35, 0.25, 0.05), 0.08, True),  # held out: careful
    ("gus", (0.45, 0.20, 0.15, 0.20), 0.09, True),  # held out: terse and practical
]


def default_personas() -> list[dict[str, Any]]:
    """Personas with their *base* noise; the build rescales tau (see agreement.py)."""
    out = []
    for name, w, tau, heldout in _PERSONAS:
        total = sum(w)
        out.append(
            {
                "name": name,
                "weights": {c: wi / total for c, wi in zip(COMPONENTS, w)},
                "base_tau": tau,
                "tau": tau,
                "heldout": heldout,
            }
        )
    return out


def utility(persona: dict[str, Any], components: dict[str, float]) -> float:
    return sum(persona["weights"][c] * components[c] for c in COMPONENTS)


def persona_utility(world, persona: dict | str, record: dict, response: str) -> float:
    """Noise-free utility of ``response`` to one persona."""
    p = world.persona(persona) if isinstance(persona, str) else persona
    return utility(p, score_response(world, record, response))


def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def preference_probability(world, persona: dict | str, record: dict, a: str, b: str) -> float:
    """P(persona prefers ``a`` over ``b``) under Bradley-Terry; 0.5 for identical strings."""
    if a == b:
        return 0.5
    p = world.persona(persona) if isinstance(persona, str) else persona
    ua = utility(p, score_response(world, record, a))
    ub = utility(p, score_response(world, record, b))
    return _sigmoid((ua - ub) / p["tau"])


def sample_preference(world, persona: dict | str, record: dict, a: str, b: str, rng: random.Random) -> int | None:
    """0 if ``a`` is preferred, 1 if ``b``; ``None`` for identical strings (a true tie)."""
    if a == b:
        return None
    return 0 if rng.random() < preference_probability(world, persona, record, a, b) else 1


def rank_by_utilities(
    utilities: Sequence[float], tau: float, rng: random.Random, keys: Sequence[str] | None = None
) -> list[int]:
    """Plackett-Luce sample: indices best -> worst by u/tau + Gumbel(0, 1).

    ``keys`` (the response strings) make identical strings share one noise draw.
    """
    noise: dict[Any, float] = {}
    scores = []
    for i, u in enumerate(utilities):
        key = keys[i] if keys is not None else i
        if key not in noise:
            noise[key] = -math.log(-math.log(max(rng.random(), 1e-300)))
        scores.append(u / tau + noise[key])
    return sorted(range(len(utilities)), key=lambda i: (-scores[i], i))


def rank_responses(world, persona: dict | str, record: dict, responses: Sequence[str], rng: random.Random) -> list[int]:
    """A noisy ranking of ``responses`` by one persona: indices best -> worst."""
    p = world.persona(persona) if isinstance(persona, str) else persona
    utils = [utility(p, score_response(world, record, r)) for r in responses]
    return rank_by_utilities(utils, p["tau"], rng, keys=list(responses))


def ranking_pairs(ordered: Sequence[str]) -> list[tuple[str, str]]:
    """All (chosen, rejected) pairs of a best->worst list, skipping identical strings."""
    return [
        (ordered[i], ordered[j])
        for i in range(len(ordered))
        for j in range(i + 1, len(ordered))
        if ordered[i] != ordered[j]
    ]


def _mean_utility(world, personas: list[dict], record: dict, response: str) -> float:
    comps = score_response(world, record, response)
    return sum(utility(p, comps) for p in personas) / len(personas)


def gold_reward(world, record: dict, response: str) -> float:
    """Noise-free mean utility over the training personas (in [0, 1])."""
    return _mean_utility(world, world.training_personas(), record, response)


def gold_weights(world) -> dict[str, float]:
    """Each component's weight in the gold reward: its mean weight over the training personas."""
    personas = world.training_personas()
    return {c: sum(p["weights"][c] for p in personas) / len(personas) for c in COMPONENTS}


def gold_parts(world, record: dict, response: str, weights: dict[str, float] | None = None) -> dict[str, float]:
    """The gold reward split by component (weight x score): the parts sum to ``gold_reward``, since a
    mean of weighted sums is the weighted sum with the mean weights. It says what a gain or loss of gold is made
    of (an over-optimised policy trading truthfulness for style, say)."""
    w = weights or gold_weights(world)
    comps = score_response(world, record, response)
    return {c: w[c] * comps[c] for c in COMPONENTS}


def heldout_gold_reward(world, record: dict, response: str) -> float:
    """Noise-free mean utility over the held-out personas (in [0, 1])."""
    return _mean_utility(world, world.heldout_personas(), record, response)
