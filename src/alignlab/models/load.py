"""Load models and tokenizers by hub id or local path, the same way in every stage.

Safe by default: ``trust_remote_code`` is off unless the user asks, and weights are
read only from safetensors (pickle checkpoints can run arbitrary code on load).

A LoRA adapter folder (``adapter_config.json``, see models/lora.py) loads as its base model
plus the adapter, merged: downstream stages read a LoRA stage's output like any other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alignlab.errors import ModelLoadError
from alignlab.models.lora import ADAPTER_WEIGHTS, is_adapter_folder, load_merged


def check_model_path(path: str) -> None:
    p = Path(path)
    looks_local = path.startswith((".", "/", "~")) or p.exists() or path.count("/") > 1
    if looks_local and not p.exists():
        raise ModelLoadError(f"model path not found: {path}")
    if is_adapter_folder(p):
        if not (p / ADAPTER_WEIGHTS).is_file():
            raise ModelLoadError(f"{path}: LoRA adapter folder without {ADAPTER_WEIGHTS}")
        return
    if p.is_dir() and not (p / "config.json").exists():
        raise ModelLoadError(f"{path}: not a Hugging Face model folder (no config.json)")
    if p.is_dir() and not any(p.glob("*.safetensors")) and not (p / "model.safetensors.index.json").exists():
        raise ModelLoadError(f"{path}: no *.safetensors weights (alignlab loads weights only from safetensors)")


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False, dtype: torch.dtype | None = None):
    check_model_path(name_or_path)
    if is_adapter_folder(name_or_path):
        return load_merged(name_or_path, lambda base: load_causal_lm(base, trust_remote_code, dtype))
    model = AutoModelForCausalLM.from_pretrained(
        name_or_path, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype or torch.float32
    )
    return model


def load_tokenizer(name_or_path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    p = Path(name_or_path)
    if (name_or_path.startswith((".", "/")) or p.exists()) and not p.exists():
        raise ModelLoadError(f"tokenizer path not found: {name_or_path}")
    tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # A pad distinct from EOS: otherwise masking padding also masks the real EOS.
        tok.add_special_tokens({"pad_token": "<|pad|>"})
    return tok


def disable_dropout(model: torch.nn.Module) -> None:
    """RLHF reference implementations turn dropout off in every model (REFERENCES.md)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if cfg is not None and hasattr(cfg, key):
            setattr(cfg, key, 0.0)


def context_length(model, default: int = 2048) -> int:
    """The model's context window in tokens, from its config; ``default`` when the config does not say."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return default
