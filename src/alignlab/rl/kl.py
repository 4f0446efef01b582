"""The KL leash of InstructGPT's PPO: per-token KL rewards, beta controllers, KL estimators.

Objective (Ouyang et al. 2022, eq. 2): E[r(x,y) - beta * log(pi_RL(y|x) / pi_SFT(y|x))].
Following the reference implementation (lm-human-preferences, Ziegler et al.
2019) the KL term is paid per token and the reward-model score arrives once, at
the last token of the response.
"""

from __future__ import annotations

import torch
from torch import Tensor


def last_token_index(mask: Tensor) -> Tensor:
    """[B, T] right-padded prefix mask -> [B] index of the last valid token (0 for an empty row)."""
    return (mask.long().sum(-1) - 1).clamp_min(0)


def per_token_kl_rewards(
    logprobs: Tensor,  # [B, T] log pi(y_t | x, y_<t) of the sampled response tokens
    ref_logprobs: Tensor,  # [B, T] the same tokens under the frozen reference (SFT) policy
    scores: Tensor,  # [B] reward-model score of each (prompt, response)
    mask: Tensor,  # [B, T] 1 up to and including EOS, 0 after
    beta: float,
) -> Tensor:
    """Per-token rewards [B, T]: -beta * (log pi - log pi_ref) on every valid token,
    plus ``scores[b]`` added at the LAST valid token of row b (its EOS, or the final
    token when the response hit the length cap). Zero on padded positions.

    Reading the score at the last *real* token, not at column T-1, matters when a
    row ended early: otherwise the score lands on padding and the policy never sees it.
    Callers apply any missing-EOS penalty to ``scores`` before calling this.
    """
    m = mask.to(logprobs.dtype)
    rewards = -beta * (logprobs - ref_logprobs) * m  # [B, T]
    last = last_token_index(mask)  # [B]
    has_tokens = m.sum(-1) > 0  # an empty row gets no score rather than a score on padding
    score_col = (scores.to(rewards.dtype) * has_tokens).unsqueeze(-1)  # [B, 1]
    return rewards.scatter_add(1, last.unsqueeze(-1), score_col)


class FixedKLController:
    """Constant beta (InstructGPT used beta = 0.02 throughout). Same interface as the adaptive one."""

    def __init__(self, beta: float):
        self.beta = float(beta)

    def update(self, current_kl: float, n_steps: int) -> float:
        return self.beta


class AdaptiveKLController:
    """Proportional controller steering the sequence KL towards ``target``
    (Ziegler et al. 2019, sec. 2.2; lm-human-preferences):

        e = clip(KL / target - 1, -0.2, 0.2);  beta <- beta * (1 + e * n_steps / horizon)

    ``current_kl`` is the batch mean of the per-sequence summed KL (``kl_k1``),
    ``n_steps`` the number of episodes in that batch; horizon 10,000 in the reference.
    The clip bounds how fast beta can move when the KL is far from target.
    """

    def __init__(self, init_beta: float, target: float, horizon: float = 10_000):
        self.beta, self.target, self.horizon = float(init_beta), float(target), float(horizon)

    def update(self, current_kl: float, n_steps: int) -> float:
        error = min(max(float(current_kl) / self.target - 1.0, -0.2), 0.2)
        self.beta *= 1.0 + error * n_steps / self.horizon
        return self.beta


def kl_k1(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Scalar: mean over sequences of sum_t (log pi - log pi_ref) on valid tokens.

    This is the KL we LOG as the headline number and feed to the adaptive
    controller: it is exactly the quantity the per-token reward penalises, and,
    for responses sampled from pi (at the scoring temperature), an unbiased
    estimate of KL(pi || pi_ref) over whole responses. A single sample can be
    negative; a persistently negative batch mean is a bug signal (temperature
    applied in sampling but not in scoring, dropout on, padding misaligned).
    """
    m = mask.to(logprobs.dtype)
    return ((logprobs - ref_logprobs) * m).sum(-1).mean()


def kl_k3(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Scalar: mean over sequences of sum_t k3_t, k3 = (ratio - 1) - log ratio with
    ratio = pi_ref / pi (Schulman, "Approximating KL divergence", 2020).

    Each term is >= 0 and it is unbiased for KL(pi || pi_ref) with lower variance
    than k1. Logged BESIDE k1 as a sanity check (it can never go negative, so a
    negative k1 next to a small k3 points at noise, a large gap at a bug); not used
    in the reward, which must stay the log-ratio of the InstructGPT objective.
    """
    m = mask.to(logprobs.dtype)
    log_ratio = (ref_logprobs - logprobs) * m  # 0 on padding -> k3 term 0 there
    k3 = torch.expm1(log_ratio) - log_ratio
    return (k3 * m).sum(-1).mean()


def kl_k3_loss(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor) -> Tensor:
    """Scalar, differentiable in ``logprobs``: the mean over valid tokens of the per-token k3 estimate
    (pi_ref / pi - 1) - log(pi_ref / pi) of KL(pi || pi_ref).

    GRPO's KL term (Shao et al. 2024, eq. 4), added to the LOSS as beta x this rather than paid in the
    reward: the group-normalised advantage would otherwise divide the KL penalty by each group's
    reward spread. Every term is >= 0 and it is 0 exactly where pi = pi_ref, so its gradient pulls
    the policy back towards the reference. A token mean, as ``ppo_policy_loss`` is, so beta weighs
    one token's KL against one token's policy loss.
    """
    m = mask.to(logprobs.dtype)
    log_ratio = ref_logprobs - logprobs
    k3 = torch.expm1(log_ratio) - log_ratio
    return (k3 * m).sum() / m.sum().clamp_min(1.0)
