"""Advantages from groups of samples of the same prompt, without a value model: RLOO and GRPO.

Both sample ``k`` responses per prompt and judge each response against its siblings: the other
samples of the same prompt are the baseline a value model would otherwise have to learn. Rewards
arrive as one flat vector ``[B * k]`` laid out group by group (prompt 0's k samples, then prompt
1's, ...), the order ``PPOTrainer.iteration`` samples them in. Each response gets one number, its
sequence-level advantage; :func:`token_advantages` spreads it over the response's tokens, which is
how both papers apply it (the whole response is one action).

* RLOO (REINFORCE leave-one-out; Kool et al. 2019, Ahmadian et al. 2024): the baseline of sample i
  is the mean reward of the OTHER k-1 samples, so it is independent of sample i and the
  estimate stays unbiased:  A_i = r_i - 1/(k-1) sum_{j != i} r_j  =  k/(k-1) (r_i - mean(r)).
* GRPO (Shao et al. 2024, DeepSeekMath): the group's mean and standard deviation normalise the
  reward:  A_i = (r_i - mean(r)) / (std(r) + eps). The std is the unbiased (n-1) one, as TRL's
  GRPOTrainer computes it; ``eps`` keeps a group whose rewards are all equal at 0, not NaN.

A group whose k rewards are equal carries no signal: both give it advantage 0 (no gradient).
These are pure functions of the rewards, tested against hand-computed values in
``tests/test_group_advantages.py``.
"""

from __future__ import annotations

from torch import Tensor


def _groups(rewards: Tensor, k: int) -> Tensor:
    """[B*k] -> [B, k]; refuses a vector that does not split into whole groups."""
    if k < 2:
        raise ValueError(f"group advantages need k >= 2 samples per prompt, got k={k}")
    if rewards.dim() != 1 or rewards.shape[0] % k:
        raise ValueError(f"rewards must be a flat vector of whole groups of {k}, got shape {tuple(rewards.shape)}")
    return rewards.reshape(-1, k)


def rloo_advantages(rewards: Tensor, k: int) -> Tensor:
    """[B*k] sequence rewards -> [B*k] leave-one-out advantages r_i - mean of the group's other rewards."""
    g = _groups(rewards, k)
    others_mean = (g.sum(-1, keepdim=True) - g) / (k - 1)
    return (g - others_mean).reshape(-1)


def grpo_advantages(rewards: Tensor, k: int, eps: float = 1e-4) -> Tensor:
    """[B*k] sequence rewards -> [B*k] (r_i - group mean) / (group std + eps), unbiased std."""
    g = _groups(rewards, k)
    return ((g - g.mean(-1, keepdim=True)) / (g.std(-1, keepdim=True) + eps)).reshape(-1)


def group_reward_std(rewards: Tensor, k: int) -> Tensor:
    """Scalar: the mean over groups of the within-group (biased) std of the rewards -- how much signal
    the samples of one prompt carry. 0 means every group's samples scored alike (no gradient)."""
    return _groups(rewards, k).std(-1, unbiased=False).mean()


def token_advantages(advantages: Tensor, mask: Tensor) -> Tensor:
    """[B] sequence advantages -> [B, T]: the same advantage on every response token, 0 on padding."""
    return advantages.unsqueeze(-1).to(mask.device) * mask.to(advantages.dtype)
