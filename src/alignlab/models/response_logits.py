"""The SFT loss without computing logits where no token is predicted.

A causal LM normally projects EVERY position through its output layer, [B, T, d] -> [B, T, V],
but the SFT loss reads only the positions that predict a response token (the prompt is
labelled -100, padding too). On the default data that is about a quarter of the positions,
and the output layer with its softmax is the largest single matmul of a small model, so
computing it everywhere wastes about a fifth of a training step.

``lm_head_only_at`` runs the output layer on the kept hidden states only (a forward pre-hook
on ``get_output_embeddings()``, so it works for any transformers causal LM, wrapped in DDP
or not, and leaves ``generate`` untouched outside the ``with``). ``response_lm_loss`` is the
same number as ``rl.losses.masked_lm_loss(model(...).logits, labels)``, up to float rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor

from alignlab.rl.losses import IGNORE_INDEX


@contextmanager
def lm_head_only_at(model: torch.nn.Module, keep: Tensor):
    """Inside, ``model(...).logits`` is [N, V]: the output layer applied where ``keep`` [B, T] is True (row-major)."""
    inner = getattr(model, "module", model)  # DDP keeps the model in .module
    head = inner.get_output_embeddings()
    if head is None:
        raise ValueError(
            f"lm_head_only_at: {type(inner).__name__} has no output layer (get_output_embeddings() is None)"
        )

    def only_kept(module, args):
        hidden = args[0]
        if hidden.shape[:2] != keep.shape:
            raise ValueError(
                f"lm_head_only_at: keep mask {tuple(keep.shape)} does not match hidden states {tuple(hidden.shape)}"
            )
        return (hidden[keep], *args[1:])

    handle = head.register_forward_pre_hook(only_kept)
    try:
        yield
    finally:
        handle.remove()


def response_lm_loss(
    model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, labels: Tensor
) -> tuple[Tensor, int]:
    """(mean next-token cross-entropy over labelled tokens, their count), labels aligned with input_ids.

    The logit at position t predicts labels[t + 1], so position t is kept when labels[t + 1] != -100.
    """
    targets = labels[:, 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = targets != IGNORE_INDEX
    with lm_head_only_at(model, keep):
        logits = model(input_ids=input_ids, attention_mask=attention_mask).logits  # [N, V]
    n = int(logits.shape[0])
    nll_sum = F.cross_entropy(logits.float(), targets[keep[:, :-1]], reduction="sum")
    return nll_sum / max(n, 1), n  # 0, not NaN, if no response tokens
