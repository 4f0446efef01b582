"""Pieces every training stage shares: device choice, the AdamW set-up, resumable checkpoints, the
metrics log, the guard against a non-finite loss, reward or gradient, and publishing the final model (derived seeds: seeds.py).

A stage then reads as its setup, its loss and its loop::

    logger = open_metrics(out, cfg.run.tensorboard, start, is_main)
    for step in ...:
        loss = ...
        guarded_step(acc, model.parameters(), optimizer, scheduler, clip, guard, step, loss=loss)
    publish_model(out, model, tok, cfg.lora)

A checkpoint is a folder written whole to a temporary name, hashed into a manifest and then
renamed into place, the previous one kept as ``checkpoint.prev`` (checkpoints.py), so a run killed
mid-save, or a damaged file, still leaves an intact checkpoint to resume from:

    checkpoint/
      model.safetensors, config.json   weights (save_pretrained; with LoRA: adapter_model.safetensors,
                                       the trainable weights only, and the optimiser holds only theirs)
      optimizer.pt, scheduler.pt       optimiser and LR-schedule state
      trainer_state.json               step and anything else the stage needs to continue
      rng.pt                           torch/python RNG states
      manifest.json                    size and SHA-256 of each file above, written last
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import random
import shutil
import sys
from pathlib import Path
from typing import Any

import torch
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from alignlab import checkpoints, fsdp
from alignlab.errors import ConfigError, RunStopped
from alignlab.faults import fault_point
from alignlab.models.lora import (
    LoraSettings,
    clear_model_files,
    is_adapter_folder,
    is_lora,
    load_adapter_weights,
    save_model,
)
from alignlab.outputs import MetricsLogger
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


def resumable(ckpt_dir: str | Path, resume: bool, is_main: bool = True) -> Path | None:
    """The checkpoint folder to continue from: the newest intact one under ``ckpt_dir`` when ``resume``
    is on (checkpoints.latest; the main process reports and sets aside damaged ones), else None."""
    return checkpoints.latest(ckpt_dir, tidy=is_main) if resume else None


def save_checkpoint(
    ckpt_dir: str | Path, model, optimizer, scheduler, step: int, extra: dict[str, Any] | None = None
) -> None:
    with checkpoints.writing(ckpt_dir, step) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        fault_point("checkpoint")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        _save_rest(tmp, scheduler, step, extra)


def _save_rest(tmp: Path, scheduler, step: int, extra: dict[str, Any] | None) -> None:
    """The schedule, the RNG states and trainer_state.json: what a checkpoint holds besides weights and optimiser."""
    if scheduler is not None:
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
    torch.save({"torch": torch.get_rng_state(), "python": random.getstate()}, tmp / "rng.pt")
    (tmp / "trainer_state.json").write_text(json.dumps({"step": step, **(extra or {})}))


def save_sharded_checkpoint(
    acc, ckpt_dir: str | Path, model, optimizer, scheduler, step: int, extra: dict[str, Any] | None = None
) -> None:
    """:func:`save_checkpoint` for an FSDP2 model, on every rank: each writes its shards of the weights and
    the optimiser state (``sharded/``, torch.distributed.checkpoint), the main process the rest; the folder
    is hashed and rotated into place like any checkpoint."""
    with checkpoints.writing_together(ckpt_dir, step, acc.is_main_process, acc.wait_for_everyone) as tmp:
        fsdp.save_sharded(tmp, {"model": (model, optimizer)})
        fault_point("checkpoint")
        if acc.is_main_process:
            _save_rest(tmp, scheduler, step, extra)


def _restore_rest(folder: Path, scheduler) -> int:
    if scheduler is not None and (folder / "scheduler.pt").exists():
        scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=True))
    rng = torch.load(folder / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    return read_trainer_state(folder)["step"]


def load_sharded_checkpoint(folder: str | Path, model, optimizer, scheduler) -> int:
    """:func:`load_checkpoint` for an FSDP2 model (already sharded, its optimiser built): every rank reads its shards."""
    fsdp.load_sharded(Path(folder), {"model": (model, optimizer)})
    return _restore_rest(Path(folder), scheduler)


def load_checkpoint(folder: str | Path, model, optimizer, scheduler) -> int:
    """Restore weights, optimiser, scheduler and RNG in place from a checkpoint folder (as
    :func:`resumable` chose it); return the step to continue from."""
    from safetensors.torch import load_file

    folder = Path(folder)
    if (folder / fsdp.SHARDED_DIR).is_dir():
        raise ConfigError(
            f"{folder}: this checkpoint holds FSDP2 shards; resume it with run.fsdp (or the FSDP accelerate "
            "config), or start over without run.resume"
        )
    if is_adapter_folder(folder) or is_lora(model):  # LoRA: the checkpoint holds the adapter only
        load_adapter_weights(model, folder)
    else:
        state = load_file(str(folder / "model.safetensors"))
        missing, unexpected = model.load_state_dict(state, strict=False)
        # Tied output weights are saved once; anything else missing means a different model.
        missing = [k for k in missing if not k.endswith("lm_head.weight")]
        if missing or unexpected:
            raise ConfigError(  # resuming with another model than the one checkpointed: the user's setting
                f"{folder}: checkpoint does not match the model (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                "resume with the model it was written for, or run without run.resume to start over"
            )
    optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    return _restore_rest(folder, scheduler)


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


def resume_step(
    ckpt_dir: Path, resume: bool, model, optimizer, scheduler, is_main: bool, sharded: bool = False
) -> tuple[int, Path | None]:
    """(the step to start from, the checkpoint folder it came from): (0, None), or (``resume`` and an
    intact checkpoint exists) its step, with the weights, optimiser, schedule and RNG restored from it
    (``sharded``: an FSDP2 checkpoint, each rank reading its shards)."""
    folder = resumable(ckpt_dir, resume, is_main)
    if folder is None:
        return 0, None
    start = (load_sharded_checkpoint if sharded else load_checkpoint)(folder, model, optimizer, scheduler)
    if is_main:
        print(f"resumed from {folder} at step {start}")
    return start, folder


class NonFiniteError(RunStopped, FloatingPointError):
    """A loss, reward or gradient stopped being a finite number."""


def _finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all())
    return math.isfinite(float(value))


@dataclasses.dataclass
class NonFiniteGuard:
    """Stops a stage at the first non-finite loss, reward or gradient norm, before it reaches the weights,
    naming the step, the quantity and the checkpoint to resume from. With ``allowed`` > 0
    (``run.skip_nonfinite``) up to that many such batches are skipped instead, each one reported."""

    stage: str
    ckpt_dir: Path
    allowed: int = 0
    skipped: int = 0

    def ok(self, step: int, **values) -> bool:
        """True when every value is finite (None: not measured); False when this batch is to be skipped."""
        bad = [(k, v) for k, v in values.items() if v is not None and not _finite(v)]
        if not bad:
            return True
        name, value = bad[0]
        shown = float(value.float().sum()) if isinstance(value, torch.Tensor) else value
        if self.skipped < self.allowed:
            self.skipped += 1
            print(
                f"{self.stage}: {name} is {shown} at step {step}: batch skipped "
                f"({self.skipped} of at most {self.allowed}, run.skip_nonfinite)",
                file=sys.stderr,
            )
            return False
        raise NonFiniteError(
            f"{self.stage}: {name} became {shown} at step {step}, before the weights were updated; "
            f"{self.last_good()}. Lower optim.lr, or set run.skip_nonfinite N to skip up to N such batches"
        )

    def last_good(self) -> str:
        ckpt = Path(self.ckpt_dir)
        if (ckpt / "trainer_state.json").exists():
            return f"the last good checkpoint is {ckpt} (step {read_trainer_state(ckpt)['step']}); run.resume continues from it"
        return "no checkpoint was written yet"


def guarded_step(acc, params, optimizer, scheduler, grad_clip: float, guard: NonFiniteGuard, step: int, **values):
    """Clip the gradient to ``grad_clip`` (0: measure its norm, clip nothing), then step the optimiser and
    the schedule unless ``guard`` finds a non-finite value or norm; clear the gradients. Returns the norm
    before clipping and whether the weights were updated. The schedule advances either way, so a skipped
    batch does not shift the learning rate of those after it."""
    params = list(params)
    grad_norm = acc.clip_grad_norm_(params, grad_clip if grad_clip > 0 else math.inf)
    applied = guard.ok(step, **values, gradient_norm=grad_norm)
    if applied:
        optimizer.step()
        write_memory_report(params, optimizer, step)
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return grad_norm, applied


def held_bytes(params, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes this process holds in the parameters', their gradients' and the optimiser state's tensors,
    read from the live tensors: a sharded parameter (DTensor) counts its local shard only, and each
    storage counts once, whole (tied weights, views into one flat buffer, FSDP2's padding)."""
    seen: set[int] = set()

    def nbytes(tensors) -> int:
        total = 0
        for t in tensors:
            local = t.to_local() if hasattr(t, "to_local") else t
            storage = local.untyped_storage()
            if storage.data_ptr() not in seen and storage.nbytes():
                seen.add(storage.data_ptr())
                total += storage.nbytes()
        return total

    params = list(params)
    state = [v for p in params for v in optimizer.state.get(p, {}).values() if isinstance(v, torch.Tensor)]
    return {
        "param_bytes": nbytes(params),
        "grad_bytes": nbytes(p.grad for p in params if p.grad is not None),
        "optimizer_bytes": nbytes(state),
    }


def write_memory_report(params, optimizer: torch.optim.Optimizer, step: int) -> None:
    """With ALIGNLAB_MEMORY_REPORT=DIR set, after each optimiser step (gradients not yet cleared) write
    this rank's :func:`held_bytes` and resident memory (now, and the process's peak so far) to
    DIR/memory.rank<r>.json, each step over the last: what benchmarks/fsdp_memory.py reads. Unset: nothing."""
    folder = os.environ.get("ALIGNLAB_MEMORY_REPORT")
    if not folder:
        return
    import torch.distributed as dist

    rank = dist.get_rank() if dist.is_available() and dist.is_initialized() else 0
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    kib = {k: int(status[k].split()[0]) * 1024 for k in ("VmRSS", "VmHWM") if k in status}
    report = {
        "step": step,
        **held_bytes(params, optimizer),
        "rss_bytes": kib.get("VmRSS"),
        "peak_rss_bytes": kib.get("VmHWM"),
    }
    Path(folder).mkdir(parents=True, exist_ok=True)
    (Path(folder) / f"memory.rank{rank}.json").write_text(json.dumps(report))


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
