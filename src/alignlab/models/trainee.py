"""The model a fine-tuning stage trains, with its tokenizer, optimiser and learning-rate schedule.

SFT and the reward model hold these the same way: the model and optimiser as ``accelerator.prepare``
wrapped them (DDP on several processes), the bare model for evaluation and saving."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch


@dataclass
class Trainee:
    accelerator: Any
    model: torch.nn.Module  # as accelerator.prepare wrapped it
    tok: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    micro: int  # examples per forward pass

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def bare(self) -> torch.nn.Module:
        """The model without its DDP wrapper: what evaluation (ranks run different batches) and saving use."""
        return self.accelerator.unwrap_model(self.model)

    def optimizer_step(self, grad_clip: float):
        """Clip (0 = off), step the optimiser and the schedule, clear the gradients; the norm before clipping."""
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), grad_clip) if grad_clip > 0 else None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return grad_norm
