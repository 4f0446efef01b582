"""Score sequences under a causal LM: per-token log-probs (and entropy) of response tokens.

Used for the rollout policy's "old" log-probs, the reference (SFT) log-probs, the
PPO training forward, and DPO. Two rules from the reference implementations:
  * divide logits by the SAME temperature used for sampling (otherwise the KL
    penalty measures the wrong distribution and grows too fast);
  * left padding must not shift positions: position_ids come from the attention mask.
These functions do not switch train/eval mode or disable grad: callers use
``torch.no_grad()`` for old/ref log-probs and keep dropout off (DESIGN: dropout off
in all models), otherwise the PPO ratio is not 1 on the first minibatch.
"""

from __future__ import annotations

import inspect
from typing import NamedTuple

import torch
from torch import Tensor

from alignlab.rl.ppo_loss import entropy_from_logits

IGNORE_INDEX = -100


class Scores(NamedTuple):
    logprobs: Tensor  # [B, R] log pi(response_t | prefix), aligned with the response tokens
    entropy: Tensor | None  # [B, R] entropy of the (tempered) next-token distribution at each step
    hidden: Tensor | None  # [B, R, H] last-layer hidden state that PREDICTS response_t (value-head input)


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """[B, T] -> [B, T] positions counting only real tokens (0 at the first one), so a
    left-padded row sees the same positions as when it is alone. Pads get 0 (ignored)."""
    return (attention_mask.long().cumsum(-1) - 1).clamp_min(0)


def logprobs_from_logits(logits: Tensor, tokens: Tensor) -> Tensor:
    """log softmax(logits)[tokens] without materialising the full log-softmax.
    logits [..., V], tokens [...] -> [...] (float32)."""
    logits = logits.float()
    picked = torch.gather(logits, -1, tokens.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, -1)


def _accepts(model: torch.nn.Module, name: str) -> bool:
    if hasattr(model, "get_base_model"):  # a peft model passes keyword arguments through to the model it wraps
        model = model.get_base_model()
    try:
        return name in inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False


def _forward(model, input_ids: Tensor, attention_mask: Tensor, keep_last: int, hidden: bool):
    """Forward pass with positions from the mask; asks for only the last ``keep_last``
    logits when the model supports it (saves [B, prompt_len, V] memory for big vocabularies)."""
    kwargs = dict(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=position_ids_from_mask(attention_mask),
        use_cache=False,
    )
    if hidden:
        kwargs["output_hidden_states"] = True
    if _accepts(model, "logits_to_keep"):
        kwargs["logits_to_keep"] = keep_last
    out = model(**kwargs)
    return out.logits[:, -keep_last:], (out.hidden_states[-1][:, -keep_last:] if hidden else None)


def _check_temperature(temperature: float) -> None:
    if temperature <= 0:
        raise ValueError("score with the sampling temperature (> 0); greedy decoding has no density to score")


def sequence_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,  # [B, Tq + R]: left-padded query ++ right-padded response
    attention_mask: Tensor,  # [B, Tq + R]: 0 on left pads of the query and on response padding
    response_start: int,  # Tq: the column where responses begin (same for every row)
    temperature: float = 1.0,
    return_entropy: bool = False,
    return_hidden: bool = False,
) -> Scores:
    """Per-token log-probs of the response tokens under ``model`` at ``temperature``.

    Layout: the PPO layout from ``generate_responses`` (``Rollout.input_ids``): query
    left-padded to a common width Tq, response right-padded. Output column t is
    log p(input_ids[:, Tq + t] | input_ids[:, :Tq + t]) computed from logits / temperature,
    i.e. aligned with ``Rollout.response`` and ``Rollout.response_mask``. Values at
    response padding are meaningless; mask them. Works for any HF causal LM.
    ``hidden`` (optional) is the last-layer state at the position whose logits predict
    response token t, i.e. the state s_t for a value head V(s_t).
    """
    _check_temperature(temperature)
    R = input_ids.shape[1] - response_start
    if R <= 0 or response_start <= 0:
        raise ValueError("need 0 < response_start < sequence length")
    logits, hidden = _forward(model, input_ids, attention_mask, R + 1, return_hidden)
    logits = logits[:, :-1].float() / temperature  # [B, R, V]: position Tq-1+t predicts token Tq+t
    logprobs = logprobs_from_logits(logits, input_ids[:, response_start:])
    entropy = entropy_from_logits(logits) if return_entropy else None
    return Scores(logprobs, entropy, hidden[:, :-1] if hidden is not None else None)


def labeled_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,  # [B, T] any padding side
    attention_mask: Tensor,  # [B, T]
    labels: Tensor,  # [B, T] aligned with input_ids, -100 on prompt and padding (as for SFT)
    temperature: float = 1.0,
) -> Tensor:
    """Per-token log-probs [B, T] ALIGNED with input_ids: column t holds
    log p(input_ids[:, t] | input_ids[:, :t]) where labels[:, t] != -100, else 0
    (column 0 is always 0). ``.sum(-1)`` gives the sequence log-prob DPO needs."""
    _check_temperature(temperature)
    logits, _ = _forward(model, input_ids, attention_mask, input_ids.shape[1], False)
    logits = logits[:, :-1].float() / temperature  # [B, T-1] predicts tokens 1..T-1
    target = labels[:, 1:]
    valid = target != IGNORE_INDEX
    lp = logprobs_from_logits(logits, torch.where(valid, target, torch.zeros_like(target)))
    lp = torch.where(valid, lp, torch.zeros_like(lp))
    return torch.cat([torch.zeros_like(lp[:, :1]), lp], dim=1)
