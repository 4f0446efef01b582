"""Run a packed forward's last decoder layer only on the columns whose output is read.

Why: PPO reads a packed forward (``packed.py``) only at the tail columns: the positions that
predict response tokens and each episode's last token, which packing puts in the last
``tail_width`` columns of every row. The last layer's attention needs keys and values of every
position, but its queries, attention output, MLP and residual only those columns. On the built-in
world the tails are about a quarter of a row, so the last layer's work shrinks about fourfold:
some 15% of a 4-layer model's forward and backward, in scoring and in every PPO minibatch.

The other columns leave the last layer as they entered it. Nothing reads them: the LM head runs
on the tail columns only (``logits_to_keep``), and the value head's outputs are gathered there.

Only for layer classes whose block is reproduced exactly here (Llama's pre-norm block:
RMSNorm -> attention with rotary q/k -> residual -> RMSNorm -> MLP -> residual); other models
run unchanged. The packing check of the PPO trainer (``packing_matches_padding``) compares
the packed result, this included, against the padded layout once per run.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

SUPPORTED = {("LlamaDecoderLayer", "LlamaAttention")}


def last_decoder_layer(model: nn.Module) -> nn.Module | None:
    """The last decoder layer of a supported model (through DDP, PEFT and ValueModel wrappers), else None."""
    layers = [m for m in model.modules() if type(m).__name__ == "LlamaDecoderLayer"]
    if not layers:
        return None
    layer = layers[-1]
    attn = getattr(layer, "self_attn", None)
    if (type(layer).__name__, type(attn).__name__) not in SUPPORTED:
        return None
    config = getattr(attn, "config", None)
    if config is not None and len(layers) != getattr(config, "num_hidden_layers", len(layers)):
        return None  # some layers would not run (or a second model hides inside): take no chances
    return layer


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def _rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)  # [P, 1, T, d]: shared by the heads
    return x * cos + _rotate_half(x) * sin


def _tail_forward(
    layer: nn.Module,
    tail: int,
    hidden_states: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
    **_: object,
) -> torch.Tensor:
    """Llama's decoder block with queries, MLP and residual on the last ``tail`` columns only."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
    from transformers.models.llama.modeling_llama import eager_attention_forward

    attn = layer.self_attn
    P, W, _ = hidden_states.shape
    h = layer.input_layernorm(hidden_states)
    q = attn.q_proj(h[:, -tail:]).view(P, tail, -1, attn.head_dim).transpose(1, 2)
    k = attn.k_proj(h).view(P, W, -1, attn.head_dim).transpose(1, 2)
    v = attn.v_proj(h).view(P, W, -1, attn.head_dim).transpose(1, 2)
    cos, sin = position_embeddings
    q, k = _rotary(q, cos[:, -tail:], sin[:, -tail:]), _rotary(k, cos, sin)
    mask = None if attention_mask is None else attention_mask[..., -tail:, :]
    interface = ALL_ATTENTION_FUNCTIONS.get_interface(attn.config._attn_implementation, eager_attention_forward)
    out, _ = interface(attn, q, k, v, mask, dropout=0.0, scaling=attn.scaling)
    x = hidden_states[:, -tail:] + attn.o_proj(out.reshape(P, tail, -1).contiguous())
    x = x + layer.mlp(layer.post_attention_layernorm(x))
    return torch.cat([hidden_states[:, :-tail], x], dim=1)


@contextmanager
def tail_only_last_layer(model: nn.Module, tail: int, width: int) -> Iterator[bool]:
    """Within the block, ``model``'s last decoder layer computes only the last ``tail`` of ``width`` columns
    (yields whether it does). A 4-D attention mask is required: the packed layout always passes one."""
    layer = last_decoder_layer(model) if 0 < tail < width else None
    if layer is None or layer.training and layer.self_attn.attention_dropout > 0:
        yield False
        return
    layer.forward = lambda *args, **kw: _tail_forward(layer, tail, *args, **kw)  # shadows the class's forward
    try:
        yield True
    finally:
        del layer.forward
