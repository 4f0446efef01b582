"""Win rate against a baseline policy: the expected preference of a judge, per prompt.

InstructGPT's headline number: on held-out prompts, how often do labelers prefer the
policy's answer to the baseline's (the SFT model's)? With the built-in world the
labelers are known Bradley-Terry personas, so instead of sampling one noisy vote per
pair we take the *expected* vote: for persona k with utility u_k and noise tau_k,

    P_k(a > b) = sigmoid((u_k(a) - u_k(b)) / tau_k)        (world.preference_probability)

averaged over the personas of one group (training labelers, or held-out labelers who
produced no training data). With n samples per prompt from each policy, every pair
(a_i, b_j) is compared and the n*n probabilities averaged; identical strings are a tie
(0.5). Because P(a>b) + P(b>a) = 1, a policy compared with itself (or with identical
samples) scores exactly 0.5 on every prompt.

A reward model judges the same way with P = sigmoid(r(a) - r(b)) (one "persona", tau 1).

Everything is computed from per-response *scores* (utility/tau per persona), so each
response is scored by the world once, not once per pair and persona.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from alignlab.world.labelers import COMPONENTS


def persona_scores(components: Sequence[dict[str, float]], personas: Sequence[dict[str, Any]]) -> np.ndarray:
    """[N, K] utility / tau of N scored responses for K personas (Bradley-Terry logits)."""
    comp = np.array([[c[k] for k in COMPONENTS] for c in components], dtype=np.float64).reshape(-1, len(COMPONENTS))
    w = np.array([[p["weights"][k] for k in COMPONENTS] for p in personas], dtype=np.float64)  # [K, 4]
    tau = np.array([p["tau"] for p in personas], dtype=np.float64)
    return comp @ w.T / tau


def _sigmoid(x: np.ndarray) -> np.ndarray:
    e = np.exp(-np.abs(x))  # stable for large |x|
    return np.where(x >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def identical_mask(texts_a: Sequence[Sequence[str]], texts_b: Sequence[Sequence[str]]) -> np.ndarray:
    """[P, n_a, n_b] True where sample i of a equals sample j of b (a tie)."""
    return np.array([[[x == y for y in tb] for x in ta] for ta, tb in zip(texts_a, texts_b)], dtype=bool)


def expected_preference(scores_a: np.ndarray, scores_b: np.ndarray, identical: np.ndarray) -> np.ndarray:
    """Per-prompt P(a > b), averaged over all sample pairs and all judges.

    scores_a [P, n_a, K], scores_b [P, n_b, K] (Bradley-Terry logits: utility/tau, or a
    reward model's score with K = 1); identical [P, n_a, n_b]. Returns [P].
    """
    if scores_a.ndim == 2:
        scores_a, scores_b = scores_a[..., None], scores_b[..., None]
    diff = scores_a[:, :, None, :] - scores_b[:, None, :, :]  # [P, n_a, n_b, K]
    p = _sigmoid(diff)
    p = np.where(identical[..., None], 0.5, p)
    return p.mean(axis=(1, 2, 3))
