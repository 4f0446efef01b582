"""Rank handling shared by the training stages, so each runs unchanged under ``accelerate launch``.

The one convention: every rank computes the same GLOBAL batch (a list of example indices, a
function of the seed and the step alone) and trains on its share ``batch[rank::world]``. A
single process is the case world = 1, so a run on N processes sees the same examples per
optimiser step as a run on one; only how the work is split differs.

DDP averages gradients over ranks. A loss that is a mean over tokens (or pairs) of the
global batch is therefore reproduced by scaling each rank's local mean by ``share`` =
world * local_count / global_count (see :func:`token_share`); with equal counts it is 1.

Metrics: each rank's numbers are reduced (summed or averaged) across ranks before anyone
logs them, so metrics.jsonl describes the global batch. Evaluation is sharded the same way
(``rank_share`` of the prompts, then :func:`gather_shares` puts the results back in order).
With one process every helper is the identity and does no communication.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, gather_object

from alignlab.errors import ConfigError
from alignlab.fsdp import FSDP_STAGES, launched_with_fsdp

T = TypeVar("T")


def make_accelerator(device: str, stage: str) -> Accelerator:
    """The stage's Accelerator (``device`` already resolved to cpu/cuda), refusing set-ups it would get wrong."""
    acc = Accelerator(cpu=device == "cpu")
    # on CPU accelerate reports an FSDP launch as plain multi-process: the launch environment says FSDP
    kind = DistributedType.FSDP if launched_with_fsdp() else acc.distributed_type
    why = unsupported_parallelism(kind, _zero_stage(acc), stage)
    if why:
        raise ConfigError(
            f"{stage} under accelerate {kind.value}: {why}. Supported: one process, multi-process DDP "
            f"(configs/accelerate/multi_gpu_ddp.yaml, cpu_2proc.yaml), FSDP2 for {', '.join(FSDP_STAGES)} "
            "(fsdp.yaml, fsdp2_cpu_2proc.yaml); DeepSpeed ZeRO-1/2 (deepspeed_zero2.yaml) is accepted for the "
            "other stages but untested"
        )
    return acc


def _zero_stage(acc: Accelerator) -> int | None:
    plugin = getattr(acc.state, "deepspeed_plugin", None)
    return getattr(plugin, "zero_stage", None) if plugin is not None else None


def unsupported_parallelism(distributed_type: DistributedType, zero_stage: int | None, stage: str) -> str | None:
    """Why this sharding cannot run ``stage`` correctly yet (None = it can). Sharded parameters (FSDP
    outside ``fsdp.FSDP_STAGES``, ZeRO-3) would need gathering for saving and for generation, which those
    stages do not do; PPO's two trained models with two optimisers do not fit one DeepSpeed engine."""
    if distributed_type == DistributedType.FSDP and stage not in FSDP_STAGES:
        return "parameters are sharded, and saving and sampling would need them gathered (not implemented)"
    if distributed_type == DistributedType.DEEPSPEED:
        if zero_stage == 3:
            return "ZeRO-3 shards parameters, and saving and sampling would need them gathered (not implemented)"
        if stage == "ppo":
            return (
                "PPO trains two models (policy and value) with two optimisers, which one DeepSpeed engine does not take"
            )
    return None


def rank_share(items: Sequence[T], acc: Accelerator) -> list[T]:
    """This rank's share of a global list: items[rank::world] (world = 1: all of them)."""
    return list(items[acc.process_index :: acc.num_processes])


def interleave(shares: list[list[T]]) -> list[T]:
    """Inverse of :func:`rank_share`: shares[r] held items r, r+world, ...; back in global order."""
    n = len(shares)
    out: list = [None] * sum(len(s) for s in shares)
    for r, share in enumerate(shares):
        out[r::n] = share
    return out


def gather_shares(acc: Accelerator, local: list[T]) -> list[T]:
    """Every rank's share (from :func:`rank_share`) gathered, in global order, on every rank."""
    if acc.num_processes == 1:
        return list(local)
    return interleave(gather_object([list(local)]))


def map_sharded(acc: Accelerator, fn: Callable[[list[T]], list], items: Sequence[T]) -> list:
    """fn over this rank's share of ``items`` (fn returns one result per item); all results, in order, on every rank."""
    return gather_shares(acc, fn(rank_share(items, acc)))


def reduce_sums(acc: Accelerator, values: dict[str, float]) -> dict[str, float]:
    """Sum of each scalar across ranks, in one all-reduce."""
    if acc.num_processes == 1 or not values:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=acc.device)
    t = acc.reduce(t, "sum")
    return dict(zip(keys, t.tolist()))


def reduce_means(acc: Accelerator, values: dict[str, float], weight: float = 1.0) -> dict[str, float]:
    """Mean of each scalar across ranks, each rank's value weighted by ``weight`` (e.g. its number
    of pairs); equal weights give the plain mean. Non-numeric entries are left as they are."""
    if acc.num_processes == 1:
        return dict(values)
    nums = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    sums = reduce_sums(acc, {**{k: v * weight for k, v in nums.items()}, "__weight__": weight})
    w = sums.pop("__weight__")
    return {**values, **{k: v / w for k, v in sums.items()}}


def token_share(acc: Accelerator, local_count: float | torch.Tensor, global_count: float | None = None) -> float:
    """Factor that turns this rank's mean over its ``local_count`` tokens into its part of the mean
    over the global batch, given that DDP averages gradients over ranks: world * local / global.
    ``global_count`` is all-reduced when not given (one scalar). One process: 1.0, no device sync."""
    if acc.num_processes == 1:
        return 1.0
    local_count = float(local_count)
    if global_count is None:
        global_count = reduce_sums(acc, {"n": local_count})["n"]
    return acc.num_processes * local_count / max(global_count, 1.0)


def masked_whiten_across(acc: Accelerator, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """(x - mean) / std over the valid positions of the GLOBAL batch (biased variance, as in
    ``rl.ppo_loss.masked_whiten``, which it equals on one process); zero on padding."""
    from alignlab.rl.ppo_loss import masked_whiten

    if acc.num_processes == 1:
        return masked_whiten(x, mask)
    m = mask.to(x.dtype)
    stats = torch.stack([(x * m).sum(), m.sum()]).double()
    s, n = acc.reduce(stats, "sum").tolist()
    mean = s / max(n, 1.0)
    sq = acc.reduce((((x - mean) ** 2) * m).sum().double(), "sum").item()
    var = sq / max(n, 1.0)
    return (x - mean) * (var + 1e-8) ** -0.5 * m
