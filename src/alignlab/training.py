"""Pieces every training stage shares: device choice, the AdamW set-up, resumable checkpoints, the
metrics log, the guard against a non-finite loss, and publishing the final model (derived seeds: seeds.py).

A stage then reads as its setup, its loss and its loop::

    logger = open_metrics(out, cfg.run.tensorboard, start, is_main)
    for step in ...:
        loss = ...
        check_finite("sft", loss, step, cfg.optim.lr)
    publish_model(out, model, tok, cfg.lora)

A checkpoint is a folder written whole to a temporary name and then renamed into
place, so a run killed mid-save still has its previous checkpoint intact:

    checkpoint/
      model.safetensors, config.json   weights (save_pretrained; with LoRA: adapter_model.safetensors,
                                       the trainable weights only, and the optimiser holds only theirs)
      optimizer.pt, scheduler.pt       optimiser and LR-schedule state
      trainer_state.json               step and anything else the stage needs to continue
      rng.pt                           torch/python RNG states
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import random
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from alignlab.errors import ConfigError
from alignlab.models.lora import (
    LoraSettings,
    clear_model_files,
    is_adapter_folder,
    is_lora,
    load_adapter_weights,
    save_model,
)
from alignlab.outputs import MetricsLogger, atomic_replace_dir
from alignlab.sections import OptimSettings

# SFT and the RM train on sequences of at most this many tokens when their seq_len is 0 (a real
# model's 8k-token context would cost memory the demonstrations rarely need).
DEFAULT_SEQ_CAP = 1024


def resolve_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda"):
        raise ConfigError(f"device: expected auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device: cuda requested but no CUDA device is available")
    return device


def make_optimizer(model: torch.nn.Module, lr: float, weight_decay: float, betas=(0.9, 0.95), eps: float = 1e-8):
    """AdamW with decay on matrices only (not on norms, biases or scalar heads' biases).

    The fused kernel (one pass over all parameters) where torch has it for these tensors: on
    CPU torch otherwise loops tensor by tensor, which costs a small model's PPO update ~5% of its
    time; TRL's trainers use the fused kernel too (``adamw_torch_fused``). Same update rule."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, fused=_fused_ok(params))


def _fused_ok(params: list[torch.Tensor]) -> bool:
    """Plain float tensors on CPU or CUDA (not sharded DTensors, not meta): what torch's fused AdamW takes."""
    return bool(params) and all(
        type(p) is torch.nn.Parameter and p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params
    )


def checkpoint_exists(ckpt_dir: str | Path) -> bool:
    return (Path(ckpt_dir) / "trainer_state.json").exists()


def save_checkpoint(
    ckpt_dir: str | Path, model, optimizer, scheduler, step: int, extra: dict[str, Any] | None = None
) -> None:
    ckpt_dir = Path(ckpt_dir)
    tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp, safe_serialization=True)
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({"torch": torch.get_rng_state(), "python": random.getstate()}, tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **(extra or {})}))
    atomic_replace_dir(tmp, ckpt_dir)


def load_checkpoint(ckpt_dir: str | Path, model, optimizer, scheduler) -> int:
    """Restore weights, optimiser, scheduler and RNG in place; return the step to continue from."""
    from safetensors.torch import load_file

    ckpt_dir = Path(ckpt_dir)
    if is_adapter_folder(ckpt_dir) or is_lora(model):  # LoRA: the checkpoint holds the adapter only
        load_adapter_weights(model, ckpt_dir)
    else:
        state = load_file(str(ckpt_dir / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Tied output weights are saved once; anything else missing means a different model.
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise ValueError(
                f"{ckpt_dir}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]})"
            )
    optimizer.load_state_dict(torch.load(ckpt_dir / "optimizer.pt", weights_only=True))
    if scheduler is not None and (ckpt_dir / "scheduler.pt").exists():
        scheduler.load_state_dict(torch.load(ckpt_dir / "scheduler.pt", weights_only=True))
    rng = torch.load(ckpt_dir / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    return read_trainer_state(ckpt_dir)["step"]


def read_trainer_state(ckpt_dir: str | Path) -> dict[str, Any]:
    return json.loads((Path(ckpt_dir) / "trainer_state.json").read_text())


@contextlib.contextmanager
def cpu_threads(n: int):
    """Run with ``n`` torch CPU threads (0 = leave as is), restoring the previous count after:
    on a CPU shared with other jobs, 2+ threads can be several times slower than 1."""
    prev = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(prev)


def open_metrics(out: Path, tensorboard: bool, start: int, is_main: bool = True) -> MetricsLogger | None:
    """The stage's metrics.jsonl (+ TensorBoard) on the main process, for a run that begins at step
    ``start``. A fresh start (0; also --resume without a checkpoint) removes an old metrics.jsonl, whose
    lines belong to another run; a resume drops the lines the killed run logged after its checkpoint."""
    if not is_main:
        return None
    if start == 0 and (Path(out) / "metrics.jsonl").exists():
        (Path(out) / "metrics.jsonl").unlink()
    return MetricsLogger(out, tensorboard, truncate_after_step=start or None)


def optimizer_and_schedule(model: torch.nn.Module, optim: OptimSettings, total_steps: int):
    """AdamW (:func:`make_optimizer`) and InstructGPT's schedule: linear warmup over ``optim.warmup_steps``
    (at most the whole run), then cosine decay to ``optim.min_lr_ratio`` x lr at ``total_steps``."""
    optimizer = make_optimizer(model, optim.lr, optim.weight_decay, (optim.beta1, optim.beta2), optim.eps)
    warmup = min(optim.warmup_steps, total_steps)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, warmup, total_steps, min_lr_rate=optim.min_lr_ratio
    )
    return optimizer, scheduler


def resume_step(ckpt_dir: Path, resume: bool, model, optimizer, scheduler, is_main: bool) -> int:
    """The step to start from: 0, or (``resume`` and a checkpoint exists) the checkpoint's step, with the
    weights, optimiser, schedule and RNG restored from it."""
    if not (resume and checkpoint_exists(ckpt_dir)):
        return 0
    start = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
    if is_main:
        print(f"resumed from {ckpt_dir} at step {start}")
    return start


def check_finite(stage: str, value: float, step: int, lr: float, name: str = "loss") -> None:
    """Stop the run at the first non-finite loss: every later step would train on it."""
    if not math.isfinite(value):
        raise FloatingPointError(f"{stage}: {name} became {value} at step {step}; lower lr (now {lr})")


def publish_model(
    out: Path, model, tokenizer=None, lora: LoraSettings | None = None, parts: dict | None = None
) -> None:
    """Write the final model into ``out`` beside the stage's other files, never half-written.

    Everything is saved into ``out/.final.tmp`` first (a stale one from a killed save is removed),
    then moved in. ``model`` is saved as full weights, its LoRA adapter or the merged model, as
    ``lora`` says; ``parts`` maps a sub-folder name to one more model saved the same way (PPO's
    value model). Old weights of either kind are cleared first: a full model left beside a new
    adapter (or the reverse) would be loaded instead of it."""
    out = Path(out)
    tmp = out / ".final.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    lora = lora or LoraSettings()
    save_model(model, tmp, lora, tokenizer)
    for name, part in (parts or {}).items():
        save_model(part, tmp / name, lora)
        if (out / name).exists():
            shutil.rmtree(out / name)
    clear_model_files(out)
    for f in tmp.iterdir():
        f.replace(out / f.name)
    tmp.rmdir()


def with_run_threads(run):
    """Decorate a stage's ``run(cfg, ...)`` to run with ``cfg.run.threads`` torch CPU threads (0 = as is)."""

    @functools.wraps(run)
    def wrapped(cfg, *args, **kwargs):
        with cpu_threads(cfg.run.threads):
            return run(cfg, *args, **kwargs)

    return wrapped
