"""PPO losses and the masked statistics they need, on one screen (CleanRL-style).

All tensors are [B, T] over response tokens with a {0,1} ``mask`` (1 up to and
including EOS). Clip 0.2 for both policy and value, as in InstructGPT and the
reference implementation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def masked_mean(x: Tensor, mask: Tensor, dim: int | None = None) -> Tensor:
    """Mean of ``x`` over positions where mask == 1 (over all dims, or along ``dim``); 0 if none."""
    m = mask.to(x.dtype)
    if dim is None:
        return (x * m).sum() / m.sum().clamp_min(1.0)
    return (x * m).sum(dim) / m.sum(dim).clamp_min(1.0)


def masked_var(x: Tensor, mask: Tensor, *, unbiased: bool) -> Tensor:
    """Variance over valid positions. ``unbiased`` is required on purpose: torch.var
    defaults to unbiased (n-1) while TF's moments (used by the reference) are biased (n);
    the choice must be visible at the call site."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    if unbiased:
        n = mask.to(x.dtype).sum()
        var = var * n / (n - 1).clamp_min(1.0)  # no host sync; n < 2 has no unbiased estimate
    return var


def masked_whiten(x: Tensor, mask: Tensor, shift_mean: bool = True) -> Tensor:
    """(x - mean) / std over valid positions (biased variance, as in the reference whiten);
    zero on padding. With ``shift_mean=False`` the original mean is added back, so only
    the scale changes: the reference whitens advantages with re-centring and (when
    enabled) rewards without, so the reward's sign/level survives normalisation."""
    mean, var = masked_mean(x, mask), masked_var(x, mask, unbiased=False)
    whitened = (x - mean) * torch.rsqrt(var + 1e-8)
    if not shift_mean:
        whitened = whitened + mean
    return whitened * mask.to(x.dtype)


def ppo_policy_loss(
    new_logprobs: Tensor,  # [B, T] log pi_theta(a_t|s_t), with grad
    old_logprobs: Tensor,  # [B, T] from the rollout policy, no grad
    advantages: Tensor,  # [B, T] whitened GAE advantages
    mask: Tensor,  # [B, T]
    clip: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Clipped surrogate (Schulman et al. 2017): mean_t max(-A r_t, -A clip(r_t, 1-eps, 1+eps)),
    r_t = pi/pi_old, averaged over valid tokens. Stats: clipfrac (share of tokens where the
    clipped term was taken) and approx_kl (k3 estimator of KL(pi_old || pi), >= 0)."""
    log_ratio = new_logprobs - old_logprobs
    ratio = torch.exp(log_ratio)
    pg_losses = -advantages * ratio
    pg_losses_clipped = -advantages * torch.clamp(ratio, 1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.max(pg_losses, pg_losses_clipped), mask)
    with torch.no_grad():
        stats = {
            "clipfrac": masked_mean((pg_losses_clipped > pg_losses).float(), mask),
            "approx_kl": masked_mean((ratio - 1.0) - log_ratio, mask),
            "ratio_mean": masked_mean(ratio, mask),
        }
    return loss, stats


def ppo_value_loss(
    new_values: Tensor,  # [B, T] with grad
    old_values: Tensor,  # [B, T] from the rollout, no grad
    returns: Tensor,  # [B, T] GAE returns
    mask: Tensor,  # [B, T]
    clip: float = 0.2,
) -> tuple[Tensor, dict[str, Tensor]]:
    """0.5 * mean_t max((V - R)^2, (V_clip - R)^2), V_clip = V_old + clip(V - V_old, -eps, eps)
    (reference implementation; value clip 0.2). Stats: vf_clipfrac (share of tokens where the
    clipped error was the larger one)."""
    values_clipped = old_values + torch.clamp(new_values - old_values, -clip, clip)
    vf_losses = (new_values - returns) ** 2
    vf_losses_clipped = (values_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.max(vf_losses, vf_losses_clipped), mask)
    with torch.no_grad():
        stats = {"vf_clipfrac": masked_mean((vf_losses_clipped > vf_losses).float(), mask)}
    return loss, stats


def entropy_from_logits(logits: Tensor) -> Tensor:
    """[..., V] -> [...]: H = logsumexp(z) - sum softmax(z) * z (stable, no log(0)).
    Pass the temperature-scaled logits to get the entropy of the sampling policy."""
    logits = logits.float()
    return torch.logsumexp(logits, -1) - (torch.softmax(logits, -1) * logits).sum(-1)


def explained_variance(values: Tensor, returns: Tensor, mask: Tensor) -> Tensor:
    """1 - Var[R - V] / Var[R] over valid tokens: 1 = perfect value fit, <= 0 = no better
    than predicting the mean. Logged as the value-error diagnostic."""
    var_r = masked_var(returns, mask, unbiased=False)
    return 1.0 - masked_var(returns - values, mask, unbiased=False) / var_r.clamp_min(1e-8)
