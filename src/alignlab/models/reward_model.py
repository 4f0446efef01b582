"""Reward models: a scalar head on a causal LM, in the format TRL and OpenRLHF use.

Saved with ``save_pretrained`` as ``*ForSequenceClassification`` with ``num_labels=1``,
so ``AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)`` loads it.
The score is read at the last non-pad token of each row (transformers finds it from
``pad_token_id``, which works for left and right padding because pad != EOS).

HF's classification heads have no bias, so the InstructGPT shift ("demonstrations
score 0 on average") is stored in the config as ``reward_shift`` and subtracted by
:func:`score`; plain transformers users subtract ``model.config.reward_shift`` themselves.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForSequenceClassification

from alignlab.data.chat import encode_prompt, encode_response
from alignlab.models.load import check_model_path, named_load_errors
from alignlab.models.lora import is_adapter_folder, load_merged


def load_reward_model(path: str, trust_remote_code: bool = False, dtype: torch.dtype | None = None):
    check_model_path(path)
    if is_adapter_folder(path):  # a LoRA reward model, or a LoRA SFT model given a fresh head
        return load_merged(path, lambda base: load_reward_model(base, trust_remote_code, dtype))
    with named_load_errors("reward model", path):
        return AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=1, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype or torch.float32
        )


def reward_shift(model) -> float:
    return float(getattr(model.config, "reward_shift", 0.0) or 0.0)


def score(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, shifted: bool = True) -> torch.Tensor:
    """Scalar reward per row [B] for token ids (prompt + response + EOS, left or right padded)."""
    out = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]
    return out - reward_shift(model) if shifted else out


@torch.no_grad()
def score_texts(
    model, tokenizer, prompts: list, responses: list[str], batch_size: int = 32, shifted: bool = True
) -> torch.Tensor:
    """Score (prompt, response) pairs, formatted exactly as in training (chat template + EOS)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scores = []
    for i in range(0, len(prompts), batch_size):
        seqs = [
            encode_prompt(tokenizer, p) + encode_response(tokenizer, r)
            for p, r in zip(prompts[i : i + batch_size], responses[i : i + batch_size])
        ]
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for j, s in enumerate(seqs):  # right padding: the score is read at the last real token
            ids[j, : len(s)] = torch.tensor(s)
            mask[j, : len(s)] = 1
        scores.append(score(model, ids.to(device), mask.to(device), shifted).float().cpu())
    model.train(was_training)
    return torch.cat(scores) if scores else torch.zeros(0)
