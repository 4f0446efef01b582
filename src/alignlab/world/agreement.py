"""How often two labelers agree, and calibrating persona noise to a realistic rate.

InstructGPT's labelers agreed with each other on 72.6% of comparisons (held-out
labelers 77.3%). Agreement here is measured the same way: on realistic pairs of
different responses to one prompt (the synthetic candidates), for each pair of
*different* personas, the probability that their Bradley-Terry choices coincide,

    agree = P_a * P_b + (1 - P_a) * (1 - P_b),

averaged over response pairs and persona pairs. Using the exact probability rather
than sampled choices makes the estimate deterministic and low-variance. Identical
responses are excluded (they carry no preference).

``calibrate_noise`` then scales every persona's ``tau`` by one common factor so the
training personas agree at the target: the weights (what each persona cares about)
stay as designed, only the overall noise level is set.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from typing import Any

import numpy as np

from alignlab.world.candidates import candidate_responses
from alignlab.world.labelers import COMPONENTS, score_response


def candidate_components(world, records: Sequence[dict], k: int, seed: int = 0) -> list[np.ndarray]:
    """Per prompt, a (K, 4) array of component scores of K distinct candidates."""
    rng = random.Random(f"{seed}-agreement")
    out = []
    for rec in records:
        responses = candidate_responses(world, rec, rng, k)
        comps = [score_response(world, rec, r) for r in responses]
        out.append(np.array([[c[name] for name in COMPONENTS] for c in comps], dtype=np.float64))
    return out


def pair_differences(component_sets: Sequence[np.ndarray]) -> np.ndarray:
    """(n_pairs, 4) component differences a - b over all response pairs of each prompt."""
    diffs = []
    for comps in component_sets:
        for i, j in itertools.combinations(range(len(comps)), 2):
            diffs.append(comps[i] - comps[j])
    return np.array(diffs, dtype=np.float64).reshape(-1, len(COMPONENTS))


def choice_probabilities(
    diffs: np.ndarray, personas: Sequence[dict[str, Any]], noise_scale: float = 1.0, use_base_tau: bool = False
) -> np.ndarray:
    """(n_pairs, P): each persona's Bradley-Terry probability of preferring ``a`` in each pair."""
    w = np.array([[p["weights"][c] for c in COMPONENTS] for p in personas])  # (P, 4)
    tau = np.array([p["base_tau"] if use_base_tau else p["tau"] for p in personas]) * noise_scale
    z = (diffs @ w.T) / tau  # (n_pairs, P)
    return 1.0 / (1.0 + np.exp(-np.clip(z, -60, 60)))


def expected_agreement(
    diffs: np.ndarray, personas: Sequence[dict[str, Any]], noise_scale: float = 1.0, use_base_tau: bool = False
) -> float:
    """Mean P(two different personas make the same choice) over pairs and persona pairs."""
    if len(personas) < 2 or len(diffs) == 0:
        return float("nan")
    prob = choice_probabilities(diffs, personas, noise_scale, use_base_tau)
    total, n = 0.0, 0
    for a, b in itertools.combinations(range(len(personas)), 2):
        pa, pb = prob[:, a], prob[:, b]
        total += float(np.mean(pa * pb + (1 - pa) * (1 - pb)))
        n += 1
    return total / n


def expected_accuracy(diffs: np.ndarray, directions: np.ndarray, personas: Sequence[dict[str, Any]]) -> float:
    """Mean P(a persona's Bradley-Terry choice matches a scorer's order) over pairs and personas.

    ``directions[n]`` is +1 where the scorer (a reward model) puts pair n's ``a`` above ``b``,
    -1 where it puts ``b`` above, 0 for a tie (counts 1/2). This is the expected accuracy
    against one labeler drawn at random from ``personas`` -- what accuracy against their
    sampled labels estimates -- computed exactly, as ``expected_agreement`` is, so a
    comparison of the two carries no label-sampling noise on either side.
    """
    if len(personas) == 0 or len(diffs) == 0:
        return float("nan")
    prob = choice_probabilities(diffs, personas)
    d = np.sign(np.asarray(directions, dtype=np.float64))[:, None]
    return float(np.mean(np.where(d > 0, prob, np.where(d < 0, 1.0 - prob, 0.5))))


def labeler_agreement(
    world, records: Sequence[dict], personas: Sequence[dict] | None = None, k: int = 4, seed: int = 0
) -> float:
    """Agreement rate of different personas (default: training personas) on candidate pairs."""
    personas = list(personas) if personas is not None else world.training_personas()
    diffs = pair_differences(candidate_components(world, records, k, seed))
    return expected_agreement(diffs, personas)


def calibrate_noise(personas: list[dict[str, Any]], diffs: np.ndarray, target: float) -> float:
    """The factor s on every ``base_tau`` giving training agreement closest to ``target``.

    Agreement falls from its low-noise limit towards 0.5 as s grows; a log grid finds
    the crossing and bisection refines it. Sets ``tau = base_tau * s`` on every persona.
    """
    train = [p for p in personas if not p["heldout"]]
    grid = np.exp(np.linspace(np.log(1e-3), np.log(1e2), 161))
    values = np.array([expected_agreement(diffs, train, s, use_base_tau=True) for s in grid])
    best = int(np.argmin(np.abs(values - target)))
    s = float(grid[best])
    # refine between neighbours that bracket the target
    for lo, hi in ((best - 1, best), (best, best + 1)):
        if 0 <= lo and hi < len(grid) and (values[lo] - target) * (values[hi] - target) <= 0:
            a, b = float(grid[lo]), float(grid[hi])
            for _ in range(40):
                mid = (a * b) ** 0.5
                if (expected_agreement(diffs, train, mid, use_base_tau=True) - target) * (values[lo] - target) > 0:
                    a = mid
                else:
                    b = mid
            s = (a * b) ** 0.5
            break
    for p in personas:
        p["tau"] = p["base_tau"] * s
    return s
