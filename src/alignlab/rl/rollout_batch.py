"""One PPO batch of experience: the sampled episodes and everything computed about them once.

Layout (from ``rollout.generate.generate_responses``): ``input_ids = cat(query, response)``,
query left-padded to ``response_start`` columns, response right-padded to R columns.
Every [B, R] tensor is aligned with the response tokens and masked by ``response_mask``
(1 up to and including EOS). Nothing here has a gradient: these are the "old" numbers
the PPO losses compare against.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
from torch import Tensor


@dataclass
class Experience:
    input_ids: Tensor  # [B, Tq + R] query ++ response
    attention_mask: Tensor  # [B, Tq + R]
    response_start: int  # Tq
    response_mask: Tensor  # [B, R] 1 up to and including EOS
    old_logprobs: Tensor  # [B, R] log pi_old(y_t) at the sampling temperature
    ref_logprobs: Tensor  # [B, R] log pi_ref(y_t) at the same temperature
    values: Tensor | None  # [B, R] V_old(s_t), the state before token t; None without a value model (rloo, grpo)
    scores: Tensor  # [B] RM score (shifted), after the missing-EOS penalty
    rewards: Tensor  # [B, R] -beta * (logp - logp_ref), plus the score at the last token (grpo: beta 0 here)
    advantages: Tensor  # [B, R] GAE advantages, or a response's group advantage on each token (whitened if configured)
    returns: Tensor | None  # [B, R] GAE returns = value targets; None without a value model

    @property
    def batch_size(self) -> int:
        return self.input_ids.shape[0]

    def select(self, idx: Tensor) -> Experience:
        """Rows ``idx`` (a minibatch), cut to the columns they use: left padding that every
        selected query has, and response columns past the longest selected response."""
        R = int(self.response_mask[idx].sum(-1).max().clamp_min(1))
        used = self.attention_mask[idx, : self.response_start].bool().any(0)  # [Tq]
        first = int(used.long().argmax()) if bool(used.any()) else self.response_start - 1
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, Tensor):
                v = v[idx]
                if f.name in ("input_ids", "attention_mask"):
                    v = v[:, first : self.response_start + R]
                elif v.dim() == 2:
                    v = v[:, :R]
            out[f.name] = v
        out["response_start"] = self.response_start - first
        return Experience(**out)

    def to(self, device: torch.device) -> Experience:
        return Experience(
            **{
                f.name: (
                    getattr(self, f.name).to(device)
                    if isinstance(getattr(self, f.name), Tensor)
                    else getattr(self, f.name)
                )
                for f in fields(self)
            }
        )
