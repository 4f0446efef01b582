"""FSDP2 for the training stages: shard a transformers model with torch's ``fully_shard``, gather it
back whole for saving, and checkpoint it sharded.

Why not ``accelerator.prepare``: accelerate 1.15 given an FSDP2 plugin on CPU wraps the model in DDP
instead (nothing sharded, no error), and a stage that calls ``fully_shard`` itself behaves the same on
CPU and GPU. A stage asks for sharding with ``--run.fsdp true`` or by being launched with an FSDP
accelerate config (``ACCELERATE_USE_FSDP`` in the environment: configs/accelerate/fsdp.yaml,
fsdp2_cpu_2proc.yaml); see :func:`requested`.

Layout: one shard unit per decoder layer (the model's ``_no_split_modules``), then the root, which
holds the embeddings, final norm and heads. Each rank keeps 1/world of every parameter (a DTensor
sharded on dim 0); a forward all-gathers a layer's parameters just before it runs and frees them
after, a backward reduce-scatters the gradients with a mean over ranks, exactly like DDP's average,
so the stages' loss weighting (``distributed.token_share``) carries over unchanged.

Every forward is a collective: all ranks must run the same number of forwards of a sharded model
(``rollout/kv_sampler.py`` keeps them in step while sampling, :func:`padded_share` in evaluation).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

from alignlab.errors import ConfigError

T = TypeVar("T")
# Stages that shard (under run.fsdp or an FSDP accelerate config); the others refuse it at start.
FSDP_STAGES = ("pretrain", "sft", "reward", "dpo", "ppo")
SHARDED_DIR = "sharded"  # a checkpoint's torch.distributed.checkpoint folder (model + optimiser shards)


def launched_with_fsdp() -> bool:
    """``accelerate launch`` was given an FSDP config (it sets ACCELERATE_USE_FSDP, on CPU too)."""
    return os.environ.get("ACCELERATE_USE_FSDP", "false").lower() in ("true", "1")


def requested(acc, flag: bool) -> bool:
    """Whether the run shards: ``run.fsdp``, or an FSDP accelerate config (which on CPU accelerate ignores)."""
    from accelerate.utils import DistributedType

    return flag or launched_with_fsdp() or getattr(acc, "distributed_type", None) == DistributedType.FSDP


def check_supported(acc, stage: str, lora: bool = False) -> None:
    """Refuse, before any work, what sharding cannot run: a stage not done yet, one process, LoRA."""
    if stage not in FSDP_STAGES:
        raise ConfigError(
            f"{stage}: run.fsdp is not supported for this stage yet (its saving and sampling would need the "
            f"sharded parameters gathered); FSDP2 runs {', '.join(FSDP_STAGES)}. Use DDP (cpu_2proc.yaml, "
            "multi_gpu_ddp.yaml) for it"
        )
    if acc.num_processes < 2:
        raise ConfigError(
            f"{stage}: run.fsdp needs 2 or more processes to shard over; launch with accelerate launch "
            "--config_file configs/accelerate/fsdp2_cpu_2proc.yaml (CPU) or fsdp.yaml (GPU), or leave run.fsdp off"
        )
    if lora:
        raise ConfigError(
            f"{stage}: LoRA under FSDP2 is not supported (peft's frozen base and trained adapters would share "
            "shard units, and saving an adapter from sharded weights is not implemented); use LoRA with DDP, "
            "or FSDP2 without LoRA"
        )


def _units(model: nn.Module) -> list[nn.Module]:
    """The decoder layers: modules whose class the transformers model names in ``_no_split_modules``."""
    names: set[str] = set()
    for m in model.modules():
        names.update(getattr(m, "_no_split_modules", None) or [])
    units = [m for m in model.modules() if type(m).__name__ in names]
    if not units:
        raise ConfigError(f"{type(model).__name__}: no decoder layers found to shard (_no_split_modules is empty)")
    return units


def shard(model: nn.Module, device: torch.device) -> nn.Module:
    """Shard ``model`` in place over every rank: each decoder layer, then the root. Returns ``model``
    (its class is now FSDP's subclass of the original; its parameters DTensors). The model comes whole
    from CPU memory; fully_shard moves each unit to ``device`` as it shards it, so a GPU never holds
    more than one unit whole."""
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import fully_shard

    mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    for unit in _units(model):
        fully_shard(unit, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def shard_report(model: nn.Module) -> dict[str, list]:
    """{parameter name: [tensor type, local shape, full shape]}: what tests check to see real sharding."""
    out = {}
    for name, p in model.named_parameters():
        local = p.to_local() if hasattr(p, "to_local") else p
        out[name] = [type(p).__name__, list(local.shape), list(p.shape)]
    return out


def write_shard_report(model: nn.Module, tag: str) -> None:
    """With ALIGNLAB_FSDP_REPORT=DIR set, write this rank's :func:`shard_report` to DIR/<tag>.rank<r>.json."""
    import json

    folder = os.environ.get("ALIGNLAB_FSDP_REPORT")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        path = Path(folder) / f"{tag}.rank{dist.get_rank()}.json"
        path.write_text(json.dumps(shard_report(model)))


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The whole model's weights on CPU on rank 0 (empty elsewhere). Collective: every rank calls it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


@contextlib.contextmanager
def _plain_class(model: nn.Module) -> Iterator[nn.Module]:
    """``model`` seen as its original class: save_pretrained writes the class name into config.json's
    ``architectures``, and FSDP's subclass name (FSDPLlamaForCausalLM) is not one transformers knows."""
    from torch.distributed.fsdp import FSDPModule

    cls = type(model)
    if isinstance(model, FSDPModule):
        model.__class__ = next(c for c in cls.__bases__ if c is not FSDPModule)
    try:
        yield model
    finally:
        model.__class__ = cls


def _tied_names(model: nn.Module) -> set[str]:
    """Names of parameters that are another parameter (a tied output head): all but the first name of each."""
    first: dict[int, str] = {}
    tied = set()
    for name, p in model.named_parameters(remove_duplicate=False):
        if first.setdefault(id(p), name) != name:
            tied.add(name)
    return tied


class Gathered:
    """A sharded model's weights gathered whole onto the main process (collective: every rank builds one),
    with the ``save_pretrained`` of the model itself, so ``training.publish_model`` saves it as it would the
    plain model: a safetensors folder plain transformers loads. ``prefix``: the keys' prefix to drop when
    ``model`` wraps the transformers model (PPO's ValueModel holds it as ``model.``)."""

    def __init__(self, model: nn.Module, prefix: str = ""):
        self.model, self.prefix = model, prefix
        tied = _tied_names(model)  # saved once, as transformers saves them (its loader re-ties them)
        self.state = {k: v for k, v in full_state_dict(model).items() if k not in tied}

    def save_pretrained(self, path: str | Path, **kwargs) -> None:
        state = {k.removeprefix(self.prefix): v for k, v in self.state.items()}
        target = self.model.get_submodule(self.prefix.rstrip(".")) if self.prefix else self.model
        with _plain_class(self.model):
            target.save_pretrained(path, state_dict=state, **kwargs)


def save_pretrained(model: nn.Module, path: str | Path, is_main: bool, prefix: str = "") -> None:
    """``save_pretrained`` of a sharded model: gathered on every rank, written by the main process."""
    gathered = Gathered(model, prefix)
    if is_main:
        gathered.save_pretrained(path, safe_serialization=True)


def load_full(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load whole weights (as saved) into a sharded model; each rank keeps its part. Tied weights saved
    once are filled from their twin by the model, so missing keys are allowed."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True, strict=False))


def _sharded_state(pairs: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> dict:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    state = {}
    for name, (model, opt) in pairs.items():
        state[f"{name}.model"], state[f"{name}.optim"] = get_state_dict(model, opt)
    return state


def save_sharded(folder: Path, pairs: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> None:
    """Each rank writes its shards of the models and their optimisers into ``folder``/sharded
    (torch.distributed.checkpoint). Collective."""
    import torch.distributed.checkpoint as dcp

    dcp.save(_sharded_state(pairs), checkpoint_id=str(Path(folder) / SHARDED_DIR))


def load_sharded(folder: Path, pairs: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> None:
    """Restore what :func:`save_sharded` wrote into the (already sharded) models and optimisers. Collective."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    sharded = Path(folder) / SHARDED_DIR
    if not sharded.is_dir():
        raise ConfigError(
            f"{folder}: this checkpoint was written by a run without FSDP; resume it without run.fsdp "
            "(or start over without run.resume)"
        )
    state = _sharded_state(pairs)
    dcp.load(state, checkpoint_id=str(sharded))
    for name, (model, opt) in pairs.items():
        set_state_dict(model, opt, model_state_dict=state[f"{name}.model"], optim_state_dict=state[f"{name}.optim"])


def padded_share(items: Sequence[T], acc) -> list[tuple[T, bool]]:
    """This rank's share of ``items`` (``items[rank::world]``) as (item, real) pairs, topped up to the
    same length on every rank with (items[0], False): sharded forwards are collectives, so a rank with
    one batch fewer runs a throwaway one instead of leaving the others waiting. Empty ``items``: []."""
    mine = [(x, True) for x in items[acc.process_index :: acc.num_processes]]
    size = -(-len(items) // acc.num_processes)
    return mine + [(items[0], False)] * (size - len(mine)) if items else []


def forwards_short(n_local: int, device: torch.device) -> int:
    """How many forwards fewer than the busiest rank this one is about to run (collective: call it on
    every rank BEFORE the forwards, then :func:`idle_forwards` after them)."""
    t = torch.tensor([n_local], dtype=torch.long, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item()) - n_local


@torch.no_grad()
def idle_forwards(model: nn.Module, n: int, device: torch.device) -> None:
    """``n`` throwaway one-token forwards: a rank's part in the busier ranks' sharded forwards."""
    for _ in range(n):
        model(input_ids=torch.zeros((1, 1), dtype=torch.long, device=device))
