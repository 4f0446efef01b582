"""A model loaded and made ready to fine-tune: what SFT and the reward model both do to the model they start from."""

from __future__ import annotations

from collections.abc import Callable

import torch

from alignlab.models.load import check_model_path, context_length, disable_dropout, load_tokenizer
from alignlab.models.lora import LoraSettings, apply_lora
from alignlab.sections import ModelSource
from alignlab.training import DEFAULT_SEQ_CAP


def load_for_training(
    loader: Callable[[str, bool], torch.nn.Module],
    path: str,
    source: ModelSource,
    lora: LoraSettings,
    task_type: str,
    seq_len: int,
    head_seed: int | None = None,
):
    """(model, tokenizer, seq_len): the model at ``path`` loaded by ``loader`` and its tokenizer (the
    one saved with it unless ``source.tokenizer`` names another), made ready by ``prepare_for_training``.
    ``head_seed`` seeds torch just before loading, for a model that gets a freshly initialised head."""
    check_model_path(path)  # a missing model is named as such, not as the tokenizer saved with it
    tok = load_tokenizer(
        source.tokenizer or path, source.trust_remote_code, "tokenizer" if source.tokenizer else "model"
    )
    if head_seed is not None:
        torch.manual_seed(head_seed)
    model = loader(path, source.trust_remote_code)
    model, seq_len = prepare_for_training(model, tok, lora, task_type, seq_len)
    return model, tok, seq_len


def prepare_for_training(
    model: torch.nn.Module, tok, lora: LoraSettings, task_type: str, seq_len: int
) -> tuple[torch.nn.Module, int]:
    """(the model to train, the sequence length to train on).

    The embeddings grow if the tokenizer did (it may have added a pad token), the pad id is the
    tokenizer's (distinct from EOS, so the EOS a response ends with is never masked as padding),
    dropout is off (a fine-tuning step and its evaluation then see the same network), and LoRA
    adapters are added when ``lora.r`` > 0. ``seq_len`` 0 means the model's context, capped at
    ``DEFAULT_SEQ_CAP``; it is read before LoRA wraps the model."""
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    disable_dropout(model)
    seq_len = seq_len or min(context_length(model), DEFAULT_SEQ_CAP)
    return apply_lora(model, lora, task_type), seq_len
