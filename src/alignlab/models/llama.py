"""A small Llama-style causal LM built from a transformers config (no custom modelling code)."""

from __future__ import annotations

from transformers import LlamaConfig, LlamaForCausalLM

from alignlab.errors import ConfigError


def llama_config(
    vocab_size: int,
    d_model: int,
    n_layer: int,
    n_head: int,
    d_ff: int,
    max_seq_len: int,
    bos_token_id: int,
    eos_token_id: int,
    pad_token_id: int,
    tie_embeddings: bool = True,
) -> LlamaConfig:
    if d_model % n_head:
        raise ConfigError(f"model.d_model ({d_model}) must be divisible by model.n_head ({n_head})")
    return LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=d_model,
        intermediate_size=d_ff,
        num_hidden_layers=n_layer,
        num_attention_heads=n_head,
        num_key_value_heads=n_head,
        max_position_embeddings=max_seq_len,
        bos_token_id=bos_token_id,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        tie_word_embeddings=tie_embeddings,
        attention_dropout=0.0,
        rms_norm_eps=1e-5,
    )


def build_llama(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    import torch

    # Initialise under a local generator state so building a model never disturbs the
    # caller's RNG stream (that would break bit-for-bit resume elsewhere).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return LlamaForCausalLM(config)


def non_embedding_params(model) -> int:
    """Parameters excluding token embeddings and the (possibly tied) output layer."""
    total = sum(p.numel() for p in model.parameters())
    emb = model.get_input_embeddings().weight.numel()
    out = model.get_output_embeddings()
    tied = out is not None and out.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    return total - emb - (0 if tied or out is None else out.weight.numel())
