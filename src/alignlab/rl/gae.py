"""Generalised Advantage Estimation over per-token rewards (Schulman et al. 2016).

In RLHF each response token is one action; the episode is the response and it
ends at the last valid token (EOS, or the length cap). InstructGPT and the
reference PPO code use gamma = 1 (no discount) and lambda = 0.95.
"""

from __future__ import annotations

import torch
from torch import Tensor


def compute_gae(
    rewards: Tensor,  # [B, T] per-token rewards (KL penalty + score at the last token)
    values: Tensor,  # [B, T] V(s_t): value of the state *before* emitting token t
    mask: Tensor,  # [B, T] 1 on response tokens up to and including EOS, 0 after
    gamma: float = 1.0,
    lam: float = 0.95,
) -> tuple[Tensor, Tensor]:
    """Return (advantages, returns), both [B, T] and zero where ``mask`` is 0.

    delta_t = r_t + gamma * V_{t+1} - V_t ;  A_t = delta_t + gamma * lam * A_{t+1}
    The last valid token is terminal: its bootstrap value V_{t+1} is 0, and
    nothing after it leaks back, whatever the padded positions hold (their
    rewards and values are zeroed first). ``mask`` must be a right-padded prefix
    mask (1...1 0...0), the layout ``generate_responses`` produces.
    Returns R_t = A_t + V_t are the value-function targets. Vectorised over the
    batch; the loop runs over time only (T is the response length, small).
    Computed under no_grad: advantages and returns are targets, never differentiated.
    """
    with torch.no_grad():
        m = mask.to(rewards.dtype)
        rewards, values = rewards * m, values * m  # padded positions contribute nothing
        T = rewards.shape[1]
        next_adv = torch.zeros_like(rewards[:, 0])  # [B] A_{t+1}
        advs = []
        for t in reversed(range(T)):
            # V_{t+1} and A_{t+1} are 0 past the last valid token (terminal, bootstrap 0)
            next_mask = m[:, t + 1] if t + 1 < T else torch.zeros_like(m[:, 0])
            next_value = values[:, t + 1] * next_mask if t + 1 < T else torch.zeros_like(next_adv)
            delta = rewards[:, t] + gamma * next_value - values[:, t]
            next_adv = (delta + gamma * lam * next_adv * next_mask) * m[:, t]
            advs.append(next_adv)
        advantages = torch.stack(advs[::-1], dim=1)  # [B, T]
        returns = (advantages + values) * m
    return advantages, returns
