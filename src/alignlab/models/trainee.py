"""The model a fine-tuning stage trains, with its tokenizer, optimiser and learning-rate schedule.

SFT and the reward model hold these the same way: the model and optimiser as ``accelerator.prepare``
wrapped them (DDP on several processes), the bare model for evaluation and saving."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from alignlab.training import NonFiniteGuard, guarded_step


@dataclass
class Trainee:
    accelerator: Any
    model: torch.nn.Module  # as accelerator.prepare wrapped it
    tok: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    micro: int  # examples per forward pass
    guard: NonFiniteGuard  # stops (or skips) a non-finite loss or gradient before the update
    sharded: bool = False  # FSDP2 (alignlab/fsdp.py): every forward and every save involves all ranks

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def bare(self) -> torch.nn.Module:
        """The model without its DDP wrapper: what evaluation (ranks run different batches) and saving use."""
        return self.accelerator.unwrap_model(self.model)

    def optimizer_step(self, grad_clip: float, step: int, **values):
        """Clip (0 = off), step the optimiser and the schedule unless ``values`` (the loss) or the gradient
        is not finite (training.guarded_step), clear the gradients; the norm before clipping."""
        params = self.model.parameters()
        return guarded_step(
            self.accelerator, params, self.optimizer, self.scheduler, grad_clip, self.guard, step, **values
        )[0]
