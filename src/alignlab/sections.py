"""Config sections every training stage shares: how the run goes, where the model comes from, the optimiser.

A stage config holds them as nested sections (``--run.seed 1``, ``--optim.lr 1e-4``,
``--source.tokenizer PATH``) with its own defaults::

    run: RunSettings = arg(factory=lambda: RunSettings(log_interval=1), help=RunSettings.HELP)

The keys used to be flat (``--seed``, ``--lr``); ``FLAT_ALIASES`` keeps those names working for one
release, with a warning (``config.unalias``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from alignlab.config import arg


@dataclass
class RunSettings:
    HELP: ClassVar[str] = "how the run goes: seed, device, threads, resuming, logging, checkpoints, non-finite values"
    FLAT_ALIASES: ClassVar[bool] = True

    seed: int = arg(0, "seed for initialisation, data order and sampling")
    device: str = arg("auto", "auto, cpu or cuda")
    threads: int = arg(
        0, "torch CPU threads (0 = torch's default, every core); on a CPU shared with other jobs 1 can be faster"
    )
    resume: bool = arg(False, "continue from output_dir/checkpoint if it exists")
    tensorboard: bool = arg(True, "also write TensorBoard logs to output_dir/tb")
    log_interval: int = arg(10, "steps between metrics.jsonl lines")
    checkpoint_interval: int = arg(0, "steps between resumable checkpoints (0 = none)")
    fsdp: bool = arg(
        False,
        "shard parameters, gradients and optimiser state over the processes (FSDP2, torch fully_shard); also "
        "on when launched with an FSDP accelerate config (configs/accelerate/fsdp.yaml, fsdp2_cpu_2proc.yaml)",
    )
    skip_nonfinite: int = arg(
        0,
        "skip up to this many batches whose loss, reward or gradient is NaN or inf, reporting each "
        "(0 = stop at the first, naming the step and the checkpoint to resume from)",
    )


@dataclass
class ModelSource:
    HELP: ClassVar[str] = "where the tokenizer comes from, and whether custom model code may run"
    FLAT_ALIASES: ClassVar[bool] = True

    tokenizer: str = arg("", "tokenizer (hub id or path); empty = the one saved with the model")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")


@dataclass
class OptimSettings:
    HELP: ClassVar[str] = "the AdamW optimiser and its learning-rate schedule"
    FLAT_ALIASES: ClassVar[bool] = True

    lr: float = arg(1e-4, "peak learning rate (AdamW)")
    weight_decay: float = arg(0.0, "AdamW weight decay (matrices only)")
    warmup_steps: int = arg(0, "steps of linear learning-rate warmup")
    min_lr_ratio: float = arg(0.1, "the schedule decays the learning rate to this fraction of lr")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0 = off)")
    beta1: float = arg(0.9, "AdamW beta1")
    beta2: float = arg(0.95, "AdamW beta2")
    eps: float = arg(1e-8, "AdamW epsilon")


@dataclass
class HeldoutSampling:
    """Held-out prompts a policy answers before and after training (same prompts, same seed), scored by the
    world's labelers (gold) and, where there is one, the reward model. PPO and DPO extend it."""

    data: str = arg("", "held-out prompts; empty = world_dir/test when world_dir is set")
    split: str = arg("test", "split of eval.data")
    prompts: int = arg(256, "held-out prompts (the first N rows: a fixed set); 0 = no held-out samples")
    temperature: float = arg(1.0, "sampling temperature (same seed before and after); 0 = greedy")
