"""LoRA through ``peft``: one settings block shared by SFT, the reward model, PPO and DPO.

With ``r > 0`` a stage wraps its trainable model in a ``peft`` LoRA adapter: the base
weights are frozen, only the low-rank matrices (and any ``modules_to_save``, e.g. a
reward model's ``score`` head) get gradients and optimiser state. A policy's frozen
reference is then the same network with the adapter switched off
(``PeftModel.disable_adapter``), so PPO and DPO keep ONE copy of the base weights.

Saved folders are what peft writes (``adapter_config.json`` + ``adapter_model.safetensors``),
plus the trained model's config as ``model_config.json`` (pad id, ``reward_shift``, vocabulary
size) and its generation config. Not as ``config.json``: transformers takes a folder with one
for a full model, while an adapter-only folder it loads as base + adapter by itself. So:

    base = AutoModelForCausalLM.from_pretrained(<base>)      # num_labels=1 for a reward model
    model = PeftModel.from_pretrained(base, <folder>)

loads it with plain peft, and ``models.load.load_causal_lm`` / ``load_reward_model`` load it
as base + adapter, merged for inference. ``merge_on_save`` writes a merged full model instead
(plain transformers loads it; it costs a copy of the weights at save time).

The adapter records its base as the path the base was loaded from. A stage trained on top
of an earlier LoRA stage records that stage's folder, and alignlab's loaders follow the
chain; plain peft users load such a chain one adapter at a time (or use merge_on_save).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from peft import LoraConfig, PeftConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from transformers import GenerationConfig, GenerationMixin
from transformers.pytorch_utils import Conv1D

from alignlab.config import arg
from alignlab.errors import ConfigError, ModelLoadError

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
MODEL_CONFIG = "model_config.json"  # the trained model's config.json, under a name that keeps the folder adapter-only

# Attention and MLP projections, by module name. Llama-style models (Llama, Mistral, Qwen2,
# Gemma, ...) use nn.Linear q/k/v/o and gate/up/down; GPT-2 uses Conv1D c_attn (fused q, k, v),
# c_proj (attention output and MLP output) and c_fc (MLP input).
PROJECTION_NAMES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
    "c_attn",
    "c_proj",
    "c_fc",
)


@dataclass
class LoraSettings:
    r: int = arg(0, "LoRA rank; 0 = off (train all weights)")
    alpha: int = arg(16, "LoRA alpha: the update is scaled by alpha / r")
    dropout: float = arg(0.0, "dropout on the LoRA branch (PPO turns all dropout off regardless)")
    target_modules: list[str] = arg(
        factory=list,
        help="module names that get adapters; empty = the attention and "
        "MLP projections found by name (Llama: q/k/v/o_proj, gate/up/down_proj; GPT-2: "
        "c_attn, c_proj, c_fc); ['all-linear'] = every linear layer but the output head",
    )
    modules_to_save: list[str] = arg(
        factory=list,
        help="modules trained in full and saved with the adapter (a reward/value model's 'score' head is always added)",
    )
    merge_on_save: bool = arg(
        False, "save the merged full model (loads with plain transformers) instead of the adapter"
    )

    @property
    def enabled(self) -> bool:
        return self.r > 0


TaskType = Literal["CAUSAL_LM", "SEQ_CLS"]


def check_settings(s: LoraSettings) -> None:
    if s.r < 0:
        raise ConfigError(f"lora.r: must be >= 0 (0 = off), got {s.r}")
    if s.enabled and s.alpha <= 0:
        raise ConfigError(f"lora.alpha: must be > 0, got {s.alpha}")
    if not 0.0 <= s.dropout < 1.0:
        raise ConfigError(f"lora.dropout: must be in [0, 1), got {s.dropout}")


def linear_layer_names(model: torch.nn.Module) -> list[str]:
    """Short names (last path component) of the linear and GPT-2 Conv1D layers: what LoRA can wrap."""
    return [name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, (torch.nn.Linear, Conv1D))]


def default_target_modules(model: torch.nn.Module) -> list[str] | str:
    """The attention and MLP projections of ``model``, found by name; 'all-linear' for an unknown layout."""
    names = set(linear_layer_names(model))
    found = [n for n in PROJECTION_NAMES if n in names]
    return found or "all-linear"


def apply_lora(model: torch.nn.Module, settings: LoraSettings, task_type: TaskType) -> torch.nn.Module:
    """Wrap ``model`` in a LoRA adapter (a ``PeftModel``); returned unchanged when ``settings.r == 0``."""
    check_settings(settings)
    if not settings.enabled:
        return model
    targets: list[str] | str = list(settings.target_modules) or default_target_modules(model)
    if targets == ["all-linear"]:
        targets = "all-linear"
    if isinstance(targets, list):
        names = [name for name, _ in model.named_modules()]
        unknown = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
        if unknown:
            raise ConfigError(
                f"lora.target_modules: {unknown} not found in {type(model).__name__} "
                f"(its linear layers: {sorted(set(linear_layer_names(model)))})"
            )
    to_save = list(settings.modules_to_save)
    if task_type == "SEQ_CLS" and "score" not in to_save:
        to_save.append("score")  # the scalar head starts random (RM) or must keep learning (value model)
    # GPT-2's Conv1D stores weights as (in, out); peft must be told, or it warns and guesses.
    conv1d = any(isinstance(m, Conv1D) for m in model.modules())
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=to_save or None,
        task_type=task_type,
        fan_in_fan_out=conv1d,
        bias="none",
    )
    return get_peft_model(model, config)


def is_lora(model: torch.nn.Module) -> bool:
    return isinstance(model, PeftModel)


def inner_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model under a PeftModel (adapter layers injected in place); ``model`` itself otherwise."""
    return model.get_base_model() if isinstance(model, PeftModel) else model


@contextmanager
def reference_model(policy: torch.nn.Module, ref: torch.nn.Module | None):
    """The frozen reference: ``ref`` when there is one, else ``policy`` with its LoRA adapter switched off."""
    if ref is not None:
        yield ref
        return
    if not isinstance(policy, PeftModel):
        raise ValueError("no reference model given and the policy has no LoRA adapter to switch off")
    with policy.disable_adapter():
        yield policy


# ----------------------------------------------------------------------------- save / load


def save_model(model: torch.nn.Module, path: str | Path, settings: LoraSettings, tokenizer=None) -> None:
    """Save a stage's model: full weights (no LoRA), the adapter, or (merge_on_save) the merged model."""
    path = Path(path)
    if isinstance(model, PeftModel) and settings.merge_on_save:
        merged = copy.deepcopy(model).merge_and_unload()  # a copy: the live model keeps its adapter
        merged.save_pretrained(path, safe_serialization=True)
    elif isinstance(model, PeftModel):
        base = model.get_base_model()
        model.save_pretrained(path, safe_serialization=True, save_embedding_layers=_vocab_grew(model))
        # pad id, reward_shift, resized vocab: what the adapter alone lacks
        (path / MODEL_CONFIG).write_text(base.config.to_json_string(use_diff=False))
        if getattr(base, "generation_config", None) is not None:
            base.generation_config.save_pretrained(path)
    else:
        model.save_pretrained(path, safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(path)


def clear_model_files(folder: str | Path) -> None:
    """Remove saved weights and model configs of either kind from ``folder`` before a new save moves in:
    a full model left beside a new adapter (or the reverse) would be loaded instead of it."""
    folder = Path(folder)
    patterns = (
        "model.safetensors",
        "model-*.safetensors",
        "model.safetensors.index.json",
        "config.json",
        ADAPTER_CONFIG,
        ADAPTER_WEIGHTS,
        MODEL_CONFIG,
    )
    for pattern in patterns:
        for f in folder.glob(pattern):
            f.unlink()


def _vocab_grew(model: PeftModel) -> bool | str:
    """Whether the stage grew the vocabulary (e.g. added a pad token) since the base was saved: then the
    embeddings must travel with the adapter. peft's own check ("auto") reads the base's config.json, which an
    adapter folder used as a base does not have, so local bases are checked here."""
    base = Path(model.peft_config[model.active_adapter].base_model_name_or_path or "")
    config = base / (MODEL_CONFIG if is_adapter_folder(base) else "config.json")
    if not config.is_file():
        return "auto"  # a hub id: peft looks it up
    vocab = json.loads(config.read_text()).get("vocab_size")
    return vocab is not None and vocab != model.get_input_embeddings().num_embeddings


def is_adapter_folder(path: str | Path) -> bool:
    return (Path(path) / ADAPTER_CONFIG).is_file()


def load_merged(path: str | Path, load_base: Callable[[str], torch.nn.Module]) -> torch.nn.Module:
    """Base (through ``load_base``, so a chain of adapters resolves) + the adapter in ``path``, merged."""
    path = Path(path)
    peft_cfg = PeftConfig.from_pretrained(str(path))
    base_path = peft_cfg.base_model_name_or_path
    if not base_path:
        raise ModelLoadError(f"{path / ADAPTER_CONFIG}: no base_model_name_or_path, so the base model is unknown")
    try:
        base = load_base(base_path)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"{path}: cannot load the adapter's base model {base_path!r}: {e}") from None
    saved = json.loads((path / MODEL_CONFIG).read_text()) if (path / MODEL_CONFIG).is_file() else {}
    vocab = saved.get("vocab_size")
    if vocab and vocab != base.get_input_embeddings().num_embeddings:
        base.resize_token_embeddings(vocab)  # the stage grew the vocabulary (pad token) before training
    if peft_cfg.task_type == "CAUSAL_LM" and not isinstance(base, GenerationMixin):
        # a causal-LM adapter (e.g. LoRA SFT) under a reward model's backbone: same module names, but
        # peft's causal-LM wrapper expects generate(); the task-neutral wrapper loads it as well
        peft_cfg.task_type = None
    model = PeftModel.from_pretrained(base, str(path), config=peft_cfg).merge_and_unload()
    for key in ("pad_token_id", "reward_shift"):
        if key in saved:
            setattr(model.config, key, saved[key])
    if (path / "generation_config.json").is_file():
        model.generation_config = GenerationConfig.from_pretrained(str(path))
    model.name_or_path = str(path)  # an adapter trained on this model records this folder as its base
    return model


def load_adapter_weights(model: torch.nn.Module, folder: str | Path) -> None:
    """Put the adapter weights saved in ``folder`` into the LoRA-wrapped ``model`` (resume, best epoch)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if not isinstance(model, PeftModel):
        raise ConfigError(f"{folder}: holds a LoRA adapter but the model has none (set lora.r as in the saved run)")
    if not (folder / ADAPTER_WEIGHTS).is_file():
        raise ConfigError(f"{folder}: no {ADAPTER_WEIGHTS}: it was saved without LoRA (set lora.r to 0 to resume it)")
    result = set_peft_model_state_dict(model, load_file(str(folder / ADAPTER_WEIGHTS)))
    if result.unexpected_keys:
        raise ConfigError(
            f"{folder}: adapter does not match the model (unexpected {result.unexpected_keys[:3]}; "
            "were lora.r / lora.target_modules the same?)"
        )
