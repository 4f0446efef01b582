"""The memory benchmarks' model: a random Llama of a given width and depth, with a BPE tokenizer trained on a
tiny invented corpus, saved as a plain transformers folder. Memory does not depend on the weights' values."""

from __future__ import annotations

import random
from pathlib import Path

NAMES = ["Bruk", "Zel", "Mora", "Tib", "Quon", "Fen"]
COLOURS = ["red", "blue", "green", "grey"]


def save_random_llama(hidden: int, layers: int, vocab: int, folder: Path):
    """Train the tokenizer, build the Llama (tied embeddings, hidden/64 heads), save both in ``folder``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from alignlab.models.tokenizer import train_bpe

    rng = random.Random(0)
    corpus = [f"{rng.choice(NAMES)} likes {rng.choice(COLOURS)} hats and lives by river {i % 7}." for i in range(400)]
    tok = train_bpe(corpus, vocab_size=vocab)
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=int(hidden * 8 / 3) // 64 * 64,
        num_hidden_layers=layers,
        num_attention_heads=hidden // 64,
        num_key_value_heads=hidden // 64,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return tok, model
