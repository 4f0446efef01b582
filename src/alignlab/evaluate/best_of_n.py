"""Best-of-n at inference: sample n responses per prompt from a policy, score them, answer with the best.

No training: the reward model picks among the policy's own samples, so best-of-n is the baseline every RL
method is measured against at the same KL (Gao et al. 2022; Nakano et al. 2021). Picking the best of n
moves the answer distribution away from the policy by exactly

    KL(best-of-n || policy) = log n - (n - 1) / n  nats        (0.64 for n = 4, 1.84 for n = 16)

whatever the scorer, which is recorded with each n (``headroom.best_of_n_kl``).

The pieces are the evaluation's own: the n samples per prompt are ``sampling.sample``'s (the same prompts,
temperature and seed give the same samples as the evaluation draws), the argmax over each prompt's samples is
``headroom.best_of_groups`` (the headroom's best-of-n by gold, here by the scorer), and the expected best score
at each smaller n is ``headroom.expected_best_of`` (all n samples, no resampling noise).

``scorer(records, responses) -> scores`` is any judge: ``judges.RewardModelJudge(path).score`` (the RM),
``judges.WorldJudge(world_dir).score`` (gold), or a test's stub. A response that hit ``max_new_tokens``
without EOS can be given ``no_eos_penalty`` instead of its score, as PPO's rollouts are: an unfinished answer
is not the one to pick, however the RM reads its first tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from alignlab.evaluate.headroom import best_of_groups, best_of_n_kl, expected_best_of
from alignlab.evaluate.sampling import PolicySamples, sample

Scorer = Callable[[list[dict[str, Any]], list[str]], Sequence[float]]


@dataclass
class BestOfN:
    """n samples for each of P prompts, their scores, and the kept one."""

    n: int
    texts: list[list[str]]  # [P][n] every sample
    scores: np.ndarray  # [P, n] the scorer's score of each (the missing-EOS penalty applied)
    eos: np.ndarray  # [P, n] 1.0 where the response ended with EOS
    best: np.ndarray  # [P] index of the kept sample: the first of the highest-scored
    length: np.ndarray | None = None  # [P, n] response tokens, EOS included (None: not recorded)

    @property
    def best_texts(self) -> list[str]:
        return [row[i] for row, i in zip(self.texts, self.best.tolist())]

    @property
    def best_scores(self) -> np.ndarray:
        return self.scores[np.arange(len(self.best)), self.best]

    @property
    def kl(self) -> float:
        return best_of_n_kl(self.n)

    def pick(self, m: int) -> np.ndarray:
        """[P] index of the highest-scored of each prompt's first ``m`` samples (ties: the first): the answer a
        best-of-m policy gives, read off the same draws as every larger m."""
        if not 1 <= m <= self.n:
            raise ValueError(f"best-of-{m} needs 1 <= m <= {self.n} (the samples drawn per prompt)")
        return best_of_groups(self.scores[:, :m], m)[:, 0]

    def as_policy(self, m: int) -> PolicySamples:
        """Best-of-m as a policy the evaluation judges: one answer per prompt, its KL to the sampled policy the
        analytic log m - (m - 1)/m (the same for every prompt)."""
        idx = self.pick(m)
        rows = np.arange(len(idx))
        length = self.length[rows, idx][:, None] if self.length is not None else np.full((len(idx), 1), np.nan)
        return PolicySamples(
            texts=[[row[i]] for row, i in zip(self.texts, idx.tolist())],
            length=length,
            eos=self.eos[rows, idx][:, None],
            kl=np.full((len(idx), 1), best_of_n_kl(m)),
        )

    def by_n(self, ns: Sequence[int]) -> dict[int, dict[str, float]]:
        """For each n' <= n: the expected best score of n' samples (from all n) and its KL."""
        return {
            m: {
                "kl_best_of_n": round(best_of_n_kl(m), 4),
                "score": round(float(expected_best_of(self.scores, m).mean()), 4),
            }
            for m in ns
        }

    def summary(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "prompts": len(self.texts),
            "kl_best_of_n": round(self.kl, 4),
            "score_mean": round(float(self.scores.mean()), 4),  # a single sample's expected score
            "best_score_mean": round(float(self.best_scores.mean()), 4),
            "best_eos_frac": round(float(self.eos[np.arange(len(self.best)), self.best].mean()), 4),
        }


def best_of_n(
    policy,
    tokenizer,
    records: list[dict[str, Any]],
    prompt_ids: list[list[int]],
    n: int,
    scorer: Scorer,
    *,
    temperature: float = 1.0,
    max_new_tokens: int = 32,
    seed: int = 0,
    batch_size: int = 64,
    no_eos_penalty: float | None = None,
) -> BestOfN:
    """Sample ``n`` responses to each prompt (``prompt_ids``, encoded from ``records``), score every one with
    ``scorer(records, texts)``, and keep the highest-scored per prompt (ties: the first sample)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    samples, _ = sample(
        policy,
        tokenizer,
        prompt_ids,
        n_samples=n,
        temperature=temperature,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        seed=seed,
        batch_size=batch_size,
    )
    flat_records = [r for r in records for _ in range(n)]
    flat_texts = [t for row in samples.texts for t in row]
    scores = np.asarray(scorer(flat_records, flat_texts), dtype=np.float64).reshape(len(records), n)
    if no_eos_penalty is not None:
        scores = np.where(samples.eos > 0, scores, no_eos_penalty)
    best = best_of_groups(scores, n)[:, 0]
    return BestOfN(n, samples.texts, scores, samples.eos, best, samples.length)
