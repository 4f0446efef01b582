"""How SFT and the reward model cut their examples into optimiser steps and forward passes."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from alignlab.errors import ConfigError
from alignlab.seeds import derived_seed


@dataclass
class StepPlan:
    """Examples per optimiser step (global, across processes) and how many steps the run takes."""

    batch: int
    steps_per_epoch: int
    total_steps: int


def plan_steps(n_examples: int, batch_size: int, epochs: int) -> StepPlan:
    """Whole batches only: the last ``n_examples % batch`` of an epoch's order are left out of it."""
    batch = min(batch_size, n_examples)
    steps_per_epoch = max(1, n_examples // batch)
    return StepPlan(batch, steps_per_epoch, epochs * steps_per_epoch)


def micro_batch(batch_size: int, micro_batch_size: int, n_proc: int) -> int:
    """Examples per forward pass (0 = a process's whole share of the batch); the batch must split evenly."""
    micro = micro_batch_size or max(1, batch_size // n_proc)
    if batch_size % (micro * n_proc):
        raise ConfigError(
            f"batch_size ({batch_size}) must be a multiple of micro_batch_size x processes ({micro} x {n_proc})"
        )
    return micro


def epoch_order(n_examples: int, seed: int, epoch: int) -> list[int]:
    """Epoch ``epoch``'s shuffle: a function of (seed, epoch) alone, so a resumed run sees the same order."""
    return torch.randperm(n_examples, generator=torch.Generator().manual_seed(derived_seed(seed, epoch))).tolist()
