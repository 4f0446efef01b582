"""PPO's resumable checkpoint: two models, two optimisers and schedules, the KL controller, the RNG.

    checkpoint/
      policy/, value_model/      weights (save_pretrained; with LoRA the adapters only); rloo and grpo
                                 have no value model, so no value_model/ and one optimiser and schedule
      optimizer.pt               both optimisers' and both schedules' state
      rng.pt                     torch/python RNG states
      trainer_state.json         the iteration, the KL controller's state, and what run() adds
                                 (the held-out numbers measured before training)

Written whole to a temporary folder, hashed into ``manifest.json`` and renamed into place, the
previous one kept as ``checkpoint.prev`` (checkpoints.py): a run killed mid-save, or a damaged file,
leaves an intact checkpoint. The weights are loaded by building the models from ``policy/`` and
``value_model/`` (``ppo_setup.load_models``); :func:`load_state` restores the rest.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import torch

from alignlab import checkpoints, fsdp
from alignlab.faults import fault_point
from alignlab.training import read_trainer_state


def save(trainer, ckpt_dir: Path, iteration: int, extra: dict[str, Any]) -> None:
    """Rank 0 writes the checkpoint (the other ranks wait); sharded (FSDP2), every rank calls this."""
    if trainer.sharded:
        _save_sharded(trainer, ckpt_dir, iteration, extra)
        return
    with checkpoints.writing(ckpt_dir, iteration) as tmp:
        trainer.acc.unwrap_model(trainer.policy).save_pretrained(tmp / "policy", safe_serialization=True)
        fault_point("checkpoint")
        if trainer.value is not None:
            trainer.acc.unwrap_model(trainer.value).save_pretrained(tmp / "value_model", safe_serialization=True)
        torch.save(_optimizer_state(trainer), tmp / "optimizer.pt")
        torch.save({"torch": torch.get_rng_state(), "python": random.getstate()}, tmp / "rng.pt")
        state = {"step": iteration, "kl_ctl": vars(trainer.kl_ctl), **extra}
        (tmp / "trainer_state.json").write_text(json.dumps(state))


def _pairs(trainer) -> dict[str, tuple]:
    """The trained models with their optimisers, by the name their shards are saved under."""
    pairs = {"policy": (trainer.policy, trainer.opt_policy)}
    if trainer.value is not None:
        pairs["value_model"] = (trainer.value, trainer.opt_value)
    return pairs


def _save_sharded(trainer, ckpt_dir: Path, iteration: int, extra: dict[str, Any]) -> None:
    """FSDP2: each rank writes its shards of both models and optimisers (``sharded/``), the main process the
    schedules, RNG and trainer state; hashed and rotated into place like any checkpoint."""
    acc = trainer.acc
    with checkpoints.writing_together(ckpt_dir, iteration, acc.is_main_process, acc.wait_for_everyone) as tmp:
        fsdp.save_sharded(tmp, _pairs(trainer))
        fault_point("checkpoint")
        if acc.is_main_process:
            torch.save(_schedule_state(trainer), tmp / "optimizer.pt")
            torch.save({"torch": torch.get_rng_state(), "python": random.getstate()}, tmp / "rng.pt")
            state = {"step": iteration, "kl_ctl": vars(trainer.kl_ctl), **extra}
            (tmp / "trainer_state.json").write_text(json.dumps(state))


def _schedule_state(trainer) -> dict[str, Any]:
    state = {"sched_policy": trainer.sched_policy.state_dict()}
    if trainer.sched_value is not None:
        state["sched_value"] = trainer.sched_value.state_dict()
    return state


def gathered(trainer) -> tuple[Any, Any]:
    """(policy, value model or None), FSDP2 shards gathered whole on the main process, saveable as the plain
    models. Collective: every rank calls it."""
    policy = fsdp.Gathered(trainer.policy)
    value = fsdp.Gathered(trainer.value, prefix="model.") if trainer.value is not None else None
    return policy, value


def _optimizer_state(trainer) -> dict[str, Any]:
    """optimizer.pt: the policy's optimiser and schedule, and the value model's where there is one (gae)."""
    state = {"opt_policy": trainer.opt_policy.state_dict()}
    if trainer.opt_value is not None:
        state["opt_value"] = trainer.opt_value.state_dict()
    state["sched_policy"] = trainer.sched_policy.state_dict()
    if trainer.sched_value is not None:
        state["sched_value"] = trainer.sched_value.state_dict()
    return state


def load_state(trainer, ckpt_dir: Path) -> dict[str, Any]:
    """Optimisers, schedules, KL controller and RNG into ``trainer``; returns trainer_state.json."""
    opt = torch.load(ckpt_dir / "optimizer.pt", weights_only=True)
    if trainer.sharded:  # weights and optimisers from the shards; optimizer.pt holds the schedules
        fsdp.load_sharded(ckpt_dir, _pairs(trainer))
    else:
        trainer.opt_policy.load_state_dict(opt["opt_policy"])
        if trainer.opt_value is not None:
            trainer.opt_value.load_state_dict(opt["opt_value"])
    trainer.sched_policy.load_state_dict(opt["sched_policy"])
    if trainer.opt_value is not None:
        trainer.sched_value.load_state_dict(opt["sched_value"])
    rng = torch.load(ckpt_dir / "rng.pt", weights_only=True)
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    state = read_trainer_state(ckpt_dir)
    for key, v in state["kl_ctl"].items():
        setattr(trainer.kl_ctl, key, v)
    return state
