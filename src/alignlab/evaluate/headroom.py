"""Headroom before RL: best-of-n of the SFT policy, judged by the world's labelers.

RLHF can only buy what the SFT policy already writes sometimes (the reference notes:
"if best-of-16 barely beats one sample, PPO will not either"). For each held-out prompt
the baseline samples N responses; the best of n of them by gold reward (the training
labelers' noise-free mean utility, i.e. a perfect reward model) is what a reward can buy
without new capability. Reported for each n:

* ``gold``: expected gold of the best of n, from all N samples with the unbiased estimator
  E[max of n] = sum_i v_(i) C(i-1, n-1) / C(N, n) over the sorted values (no resampling noise
  from which n were drawn), overall and per use-case category;
* ``win_rate_heldout``: how often the held-out labelers prefer the best of n (by training gold)
  to the baseline's own evaluation sample, over disjoint groups of n of the N samples. This is
  the win rate a policy that always wrote its best-of-n answer would get against SFT.

Best-of-n spends KL = log n - (n-1)/n nats (Gao et al. 2022): 0.64 for n=4, 1.84 for n=16.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import comb, log
from typing import Any

import numpy as np

from alignlab.evaluate.bootstrap import bootstrap_mean
from alignlab.evaluate.win_rate import expected_preference, identical_mask


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || policy) in nats, log n - (n-1)/n (Gao et al. 2022; Stiennon et al. 2020): what picking
    the best of n samples spends, whatever picks it. 0 for n = 1."""
    return log(n) - (n - 1) / n


def expected_best_of(values: np.ndarray, n: int) -> np.ndarray:
    """[P] unbiased E[max of n drawn without replacement] from [P, N] values (N >= n)."""
    P, N = values.shape
    if not 1 <= n <= N:
        raise ValueError(f"best-of-{n} needs at least {n} samples per prompt, got {N}")
    weights = np.array([comb(i, n - 1) for i in range(N)], dtype=np.float64) / comb(N, n)  # i = rank - 1
    return np.sort(values, axis=1) @ weights


def best_of_groups(values: np.ndarray, n: int) -> np.ndarray:
    """[P, N // n] index of the best sample in each disjoint group of n consecutive samples."""
    P, N = values.shape
    g = N // n
    grouped = values[:, : g * n].reshape(P, g, n)
    return grouped.argmax(axis=2) + np.arange(g)[None, :] * n


def headroom(
    scorer,
    texts: Sequence[Sequence[str]],
    baseline_texts: Sequence[Sequence[str]],
    ns: Sequence[int],
    categories: Sequence[str | None],
    boot: dict[str, Any],
) -> dict[str, Any]:
    """Best-of-n gold and win rates. ``texts`` [P][N] extra samples of the baseline; ``baseline_texts``
    [P][n_eval] its evaluation samples; ``scorer`` a ``metrics.WorldScorer`` over the same P records."""
    table = scorer.table(texts)
    gold = table["gold_reward"]  # [P, N]
    bt = scorer.bt_scores(table, heldout=True)  # [P, N, K]
    base_bt = scorer.bt_scores(scorer.table(baseline_texts), heldout=True)  # [P, n_eval, K]
    cats = np.array([c or "none" for c in categories])
    out: dict[str, Any] = {
        "samples_per_prompt": int(gold.shape[1]),
        "n": list(ns),
        "kl_best_of_n": {},
        "gold": {},
        "win_rate_heldout": {},
        "gold_by_category": {},
    }
    for n in ns:
        best = expected_best_of(gold, n)
        out["kl_best_of_n"][n] = round(best_of_n_kl(n), 4)
        out["gold"][n] = bootstrap_mean(best, key=f"best_of_{n}", **boot)
        out["gold_by_category"][n] = {c: round(float(best[cats == c].mean()), 4) for c in sorted(set(cats.tolist()))}
        idx = best_of_groups(gold, n)  # [P, G]
        chosen = np.take_along_axis(bt, idx[..., None], axis=1)  # [P, G, K]
        chosen_texts = [[texts[p][i] for i in idx[p]] for p in range(len(texts))]
        same = identical_mask(chosen_texts, baseline_texts)
        out["win_rate_heldout"][n] = bootstrap_mean(
            expected_preference(chosen, base_bt, same), key=f"bon_win_{n}", **boot
        )
    return out
