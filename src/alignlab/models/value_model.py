"""The PPO value model: a copy of the reward model whose scalar head is read at EVERY token.

A reward model (``*ForSequenceClassification``, ``num_labels=1``) is a backbone plus a
linear ``score`` head that transformers applies to every position and then reads at
the last real token. Reading it at every position instead gives a value V(s) per
prefix, so a copy of the RM is the InstructGPT value-function initialisation:

    token_values(ids)[:, j]  = score(h_j) - reward_shift       (h_j: last hidden state at j)

Both scores and values live in the same (shifted) units: at the last real token
``token_values`` equals the RM score that ``models.reward_model.score`` returns.

PPO convention (what ``compute_gae`` expects): ``values[:, t]`` is V(s_t), the value of
the state BEFORE response token t is emitted, i.e. ``token_values`` at column
``response_start - 1 + t`` (the same position whose logits predict token t). So, before
training, V(s_t) is the RM's score of the prefix ``prompt + response[:t]``, and the
value read AT the last response token (its EOS) is the RM's score of the whole response.

The model stays a plain ``*ForSequenceClassification``: ``save_pretrained`` writes a
folder that ``load_reward_model`` (or transformers alone) reads back. With LoRA,
``self.model`` is replaced by its ``peft`` wrapper (``models.lora.apply_lora``, task
SEQ_CLS: the ``score`` head trained in full) and ``forward`` reads through it.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from alignlab.errors import ModelLoadError
from alignlab.models.lora import inner_model
from alignlab.models.reward_model import reward_shift
from alignlab.rollout.scoring import position_ids_from_mask


class ValueModel(nn.Module):
    """Wraps a sequence-classification model; ``forward`` returns per-token values [B, T].

    A module (not a function) so that ``accelerator.prepare`` can wrap it in DDP and the
    gradient all-reduce sees a normal forward.
    """

    def __init__(self, seq_cls_model: nn.Module):
        super().__init__()
        head = getattr(seq_cls_model, "score", None)
        if not isinstance(head, nn.Linear) or head.out_features != 1:
            raise ModelLoadError(
                f"{type(seq_cls_model).__name__}: expected a scalar linear head named 'score' "
                "(the layout of transformers' *ForSequenceClassification with num_labels=1)"
            )
        self.model = seq_cls_model
        self.shift = reward_shift(seq_cls_model)

    @property
    def config(self):
        return self.model.config

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None, position_ids: Tensor | None = None) -> Tensor:
        """Values at every position [B, T] (float32); positions from the mask, so left padding is harmless.
        Give ``position_ids`` with a 4-D (packed, ``rollout/packed.py``) mask, from which they cannot be read."""
        model = inner_model(self.model)  # with LoRA: the transformers model, adapters injected in place
        out = model.base_model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask) if position_ids is None else position_ids,
            use_cache=False,
        )
        return model.score(out.last_hidden_state).squeeze(-1).float() - self.shift

    def save_pretrained(self, path, **kwargs) -> None:
        self.model.save_pretrained(path, **kwargs)


def response_values(values: Tensor, response_start: int, response_len: int) -> Tensor:
    """Per-token values [B, T] -> V(s_t) [B, R] for response tokens t (state before token t)."""
    return values[:, response_start - 1 : response_start - 1 + response_len]


def last_token_values(values: Tensor, attention_mask: Tensor) -> Tensor:
    """[B, T] per-token values -> [B] value at each row's LAST real token (right padding or none).

    Applied to a reward model's per-token head outputs this is exactly its sequence score.
    """
    T = attention_mask.shape[1]
    cols = torch.arange(T, device=attention_mask.device)
    last = torch.where(attention_mask.bool(), cols, torch.full_like(cols, -1)).max(-1).values.clamp_min(0)
    return values.gather(1, last.unsqueeze(-1)).squeeze(-1)


def rm_scores(rm: ValueModel, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """[B] shifted RM score read at each row's last real token (query may be left-padded)."""
    return last_token_values(rm(input_ids, attention_mask), attention_mask)
