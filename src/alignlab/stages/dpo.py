"""Stage: DPO on the same comparisons the reward model learns from (the offline baseline beside PPO).

Read top to bottom: config; data (ranked lists or chosen/rejected pairs, tokenised once);
models (policy and frozen reference, both the SFT model by default); the loop; save.

Loss (Rafailov et al. 2023): -log sigmoid(beta * [log pi/pi_ref (y_w) - log pi/pi_ref (y_l)]),
sequence log-probs summed over response tokens (prompt masked, EOS included). A ranked list
of K responses gives all C(K,2) pairs, and, as for the InstructGPT reward model, one prompt
is one batch element: its K responses get ONE forward pass each and every pair is built
from those K numbers (K forwards instead of 2*C(K,2)). The loss is the mean over the pairs
of the batch. Reference log-probs are computed once per response and cached.
Resume is exact: the prompt order is a function of the step (data/packing.block_indices),
there is no dropout, and the checkpoint holds weights, optimiser, schedule and RNG.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from alignlab import fsdp, training
from alignlab.config import arg
from alignlab.data.chat import encode_example, prompt_of
from alignlab.data.heldout import (
    DEFAULT_EVAL_FRACTION,
    EVAL_FRACTION_HELP,
    HeldoutInfo,
    group_keys,
    load_train_eval,
    separate_info,
)
from alignlab.data.length_groups import length_groups
from alignlab.data.load import require_format
from alignlab.data.packing import block_indices
from alignlab.data.ranks import row_ranks, strict_pairs
from alignlab.distributed import make_accelerator, rank_share, reduce_means, reduce_sums, token_share
from alignlab.errors import ConfigError, DataError
from alignlab.evaluate.heldout_samples import paired_delta_ci, sample_and_score
from alignlab.evaluate.heldout_set import HeldoutSet, heldout_seed, load_heldout, sampling_note
from alignlab.faults import fault_point
from alignlab.models.load import check_model_path, context_length, disable_dropout, load_causal_lm, load_tokenizer
from alignlab.models.lora import LoraSettings, apply_lora, reference_model
from alignlab.models.reward_model import load_reward_model
from alignlab.models.value_model import ValueModel
from alignlab.outputs import atomic_write_json, write_model_card
from alignlab.rl.losses import IGNORE_INDEX, dpo_loss
from alignlab.rollout.scoring import labeled_logprobs
from alignlab.sections import HeldoutSampling, ModelSource, OptimSettings, RunSettings


@dataclass
class DPOHeldout(HeldoutSampling):
    max_new_tokens: int = arg(32, "response length cap for held-out samples")


@dataclass
class DPOConfig:
    # the held-out sampling keys moved into the eval. section PPO also has
    RENAMED: ClassVar[dict[str, str]] = {
        "eval_data": "eval.data",
        "eval_data_split": "eval.split",
        "eval_prompts": "eval.prompts",
        "eval_temperature": "eval.temperature",
        "max_new_tokens": "eval.max_new_tokens",
    }

    policy: str = arg("runs/sft", "SFT model (hub id or path): the starting policy")
    ref_model: str = arg("", "frozen reference model; empty = the same SFT model as `policy`")
    data: str = arg(
        "runs/compare/comparisons",
        "comparisons: ranked {prompt, responses: [best..worst]} or {prompt, chosen, rejected}",
    )
    split: str = arg("train", "training split")
    eval_split: str = arg("validation", "held-out split for loss / reward accuracy ('' = none)")
    eval_fraction: float = arg(DEFAULT_EVAL_FRACTION, EVAL_FRACTION_HELP)
    eval_max_prompts: int = arg(200, "cap on held-out prompts for validation metrics")
    beta: float = arg(0.1, "DPO beta (strength of the implicit KL to the reference)")
    max_len: int = arg(128, "tokens per prompt+response (prompt cut from the left; capped at the model's context)")
    batch_size: int = arg(16, "prompts per optimiser step (each with all its ranked responses)")
    epochs: float = arg(1.0, "passes over the training prompts (ignored if max_steps > 0)")
    max_steps: int = arg(0, "optimiser steps; 0 = derive from epochs")
    world_dir: str = arg(
        "runs/world", "built-in world folder for gold rewards of held-out samples before/after; empty = off"
    )
    reward_model: str = arg("", "optional reward model to also score the held-out samples (proxy); empty = off")
    eval: DPOHeldout = arg(factory=DPOHeldout, help="held-out prompts sampled before and after training")
    eval_interval: int = arg(0, "steps between validation-metric evaluations (0 = only at the end)")
    run: RunSettings = arg(factory=lambda: RunSettings(log_interval=5, checkpoint_interval=50), help=RunSettings.HELP)
    source: ModelSource = arg(factory=ModelSource, help=ModelSource.HELP)
    optim: OptimSettings = arg(factory=lambda: OptimSettings(lr=2e-4, warmup_steps=5), help=OptimSettings.HELP)
    lora: LoraSettings = arg(
        factory=LoraSettings,
        help="LoRA adapters through peft (--lora.r 8); without ref_model the "
        "reference is the policy with its adapter off; r=0 trains all weights",
    )
    output_dir: str = arg("runs/dpo", "where the model, metrics and checkpoints go")


PRESETS = {
    "smoke": {
        "max_steps": 6,
        "batch_size": 8,
        "eval_max_prompts": 16,
        "eval": {"prompts": 16, "max_new_tokens": 16},
        "run": {"checkpoint_interval": 3, "log_interval": 1, "threads": 1},
        "optim": {"warmup_steps": 1},
    },
    "default": {},
}


# ----------------------------------------------------------------------------------- data


def ranked_groups(ds, tokenizer, max_len: int, source: str) -> list[list[dict[str, Any]]]:
    """One group per prompt: its responses best -> worst, each tokenised with the prompt masked and carrying
    its rank (a row's ``ranks``, where tied responses share one: data/ranks.py; else its position)."""
    fmt = require_format(ds, ("ranked", "preference"), source)
    groups = []
    for i, row in enumerate(ds):
        prompt = prompt_of(row)
        given = [r.strip() for r in (row["responses"] if fmt == "ranked" else [row["chosen"], row["rejected"]])]
        # a duplicate keeps its best rank: no y_w == y_l pairs
        responses = list(dict.fromkeys(given))
        ranks = row_ranks(row, given, responses, f"{source} row {i}") if fmt == "ranked" else None
        ranks = ranks or list(range(1, len(responses) + 1))
        if len(responses) < 2 or len(set(ranks)) < 2:  # nothing to prefer: one response, or all tied
            continue
        groups.append([{**encode_example(tokenizer, prompt, r, max_len), "rank": k} for r, k in zip(responses, ranks)])
    if not groups:
        raise DataError(f"{source}: no prompt with at least two responses")
    return groups


def collate(groups: list[list[dict[str, Any]]], pad_id: int):
    """Flatten groups into right-padded sequences + the (better, worse) index pairs within the batch."""
    seqs = [ex for g in groups for ex in g]
    width = max(len(ex["input_ids"]) for ex in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    labels = torch.full((len(seqs), width), IGNORE_INDEX, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, ex in enumerate(seqs):
        n = len(ex["input_ids"])
        ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(ex["input_ids"]), torch.tensor(ex["labels"]), 1
    chosen, rejected, off = [], [], 0
    for g in groups:
        for a, b in group_pairs(g):
            chosen.append(off + a)
            rejected.append(off + b)
        off += len(g)
    return ids, mask, labels, torch.tensor(chosen), torch.tensor(rejected)


_STAT_KEYS = ("loss", "reward_accuracy", "reward_margin", "chosen_reward", "rejected_reward")  # batch_loss's means


def sequence_logps(model, ids, mask, labels) -> torch.Tensor:
    """[N] sum of log p over response tokens (labels != -100), computed in a few passes of similar
    lengths, each cut to its own longest row (the same numbers as one pass, with less padding)."""
    lengths = mask.sum(-1).tolist()
    groups = length_groups(lengths)
    pieces = [
        labeled_logprobs(model, ids[g, :w], mask[g, :w], labels[g, :w]).sum(-1)
        for g, w in ((torch.tensor(g, device=ids.device), max(lengths[i] for i in g)) for g in groups)
    ]
    order = torch.tensor([i for g in groups for i in g], device=ids.device)
    return torch.cat(pieces)[torch.argsort(order)]


def group_pairs(group: list) -> list[tuple[int, int]]:
    """(better, worse) pairs of a ranked group: all C(K, 2), less the tied ones."""
    return strict_pairs(len(group), [ex.get("rank", i + 1) for i, ex in enumerate(group)])


def n_pairs(group: list) -> int:
    """Pairs a ranked group gives: C(K, 2) for K distinct responses, less the tied ones."""
    return len(group_pairs(group))


def batch_loss(policy, ref_logps, ids, mask, labels, chosen, rejected, beta):
    logps = sequence_logps(policy, ids, mask, labels)
    loss, cr, rr, acc = dpo_loss(logps[chosen], logps[rejected], ref_logps[chosen], ref_logps[rejected], beta)
    return loss, {
        "loss": loss.item(),
        "reward_accuracy": acc.item(),
        "reward_margin": (cr - rr).mean().item(),
        "chosen_reward": cr.mean().item(),
        "rejected_reward": rr.mean().item(),
        "pairs": len(chosen),
    }


# ---------------------------------------------------------------------------------- setup


@dataclass
class Comparisons:
    train: list[list[dict[str, Any]]]  # one group per prompt: its responses best -> worst, tokenised
    val: list[list[dict[str, Any]]] | None  # the same for the validation metrics (None = none)
    steps: int  # optimiser steps of the run
    heldout: HeldoutInfo  # where the validation rows came from (summary.json's heldout)
    train_keys: set[str]  # the training prompts (data/heldout.group_keys), to check held-out samples against


@dataclass
class Setup:
    """Everything the loop and the finish use; ``policy`` and ``optimizer`` are the accelerator's."""

    cfg: DPOConfig
    accelerator: Any
    tok: Any
    policy: Any
    ref: Any  # the frozen reference; None = the policy with its LoRA adapter off
    max_len: int
    data: Comparisons
    heldout: HeldoutSet
    heldout_samples: HeldoutInfo  # where the held-out sampling prompts came from (summary.json's heldout_samples)
    rm: Any  # optional proxy reward model scoring the held-out samples
    optimizer: Any
    scheduler: Any
    start: int  # the step this run starts from (> 0 on a resume)
    resumed_from: Path | None  # the checkpoint folder it resumed from
    guard: training.NonFiniteGuard
    sharded: bool = False  # FSDP2 policy (alignlab/fsdp.py): its forwards and saves involve every rank
    ref_cache: dict[int, torch.Tensor] = field(default_factory=dict)  # group index -> [K] reference log-probs

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    @property
    def device(self):
        return self.accelerator.device


def load_models(cfg: DPOConfig):
    """Tokenizer, policy (with its LoRA adapter when asked) and the frozen reference, dropout off."""
    trust = cfg.source.trust_remote_code
    check_model_path(cfg.policy)  # a missing policy is named as such, not as its tokenizer
    tok = load_tokenizer(cfg.source.tokenizer or cfg.policy, trust, "tokenizer" if cfg.source.tokenizer else "policy")
    policy = load_causal_lm(cfg.policy, trust)
    # LoRA without an explicit ref_model: the reference is the policy with its adapter off (one copy)
    ref = None if cfg.lora.enabled and not cfg.ref_model else load_causal_lm(cfg.ref_model or cfg.policy, trust)
    for m in (policy, ref):
        if m is not None:
            disable_dropout(m)
    if ref is not None:
        ref.eval().requires_grad_(False)
    policy = apply_lora(policy, cfg.lora, "CAUSAL_LM")  # unchanged when lora.r == 0
    return tok, policy, ref


def load_comparisons(cfg: DPOConfig, tok, max_len: int, is_main: bool) -> Comparisons:
    """Training and validation groups (``data/heldout.py``: never the same prompts), tokenised."""
    split = load_train_eval(cfg.data, cfg.split, cfg.eval_split, cfg.eval_fraction)
    train = ranked_groups(split.train, tok, max_len, f"{cfg.data} [{cfg.split}]")
    val, info = None, split.info
    if split.eval is not None:
        try:
            val = ranked_groups(split.eval, tok, max_len, f"{info.source} [{info.split}]")[: cfg.eval_max_prompts]
        except ValueError as e:
            info = info.unused(f"no validation metrics: {e}")
    if is_main:
        print(f"dpo: {info.line()}")
    steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(train) / cfg.batch_size))
    return Comparisons(train, val, steps, info, set(group_keys(split.train)))


def setup(cfg: DPOConfig) -> Setup:
    accelerator = make_accelerator(training.resolve_device(cfg.run.device), "dpo")
    sharded = fsdp.requested(accelerator, cfg.run.fsdp)
    if sharded:
        fsdp.check_supported(accelerator, "dpo", cfg.lora.enabled)
    if cfg.batch_size % accelerator.num_processes:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) must be a multiple of the number of processes "
            f"({accelerator.num_processes}): it is global, split over the ranks"
        )
    torch.manual_seed(cfg.run.seed)
    tok, policy, ref = load_models(cfg)
    max_len = min(cfg.max_len, context_length(policy))
    data = load_comparisons(cfg, tok, max_len, accelerator.is_main_process)
    heldout = load_heldout(cfg.world_dir, cfg.eval.data, cfg.eval.split, cfg.eval.prompts)
    samples_info = separate_info(heldout.source, cfg.eval.split, heldout.rows, data.train_keys)
    if accelerator.is_main_process:
        print(f"dpo: sampling before/after -- {samples_info.line()}")
    rm = None
    if cfg.reward_model:
        rm = load_reward_model(cfg.reward_model, cfg.source.trust_remote_code)
        rm = ValueModel(rm).to(accelerator.device).eval()

    if sharded:  # the policy only: the reference is frozen (no gradients, no optimiser state), kept whole
        fsdp.shard(policy, accelerator.device)
        fsdp.write_shard_report(policy, "dpo")
    optimizer, scheduler = training.optimizer_and_schedule(policy, cfg.optim, data.steps)
    ckpt_dir = Path(cfg.output_dir) / "checkpoint"
    start, resumed_from = training.resume_step(
        ckpt_dir, cfg.run.resume, policy, optimizer, scheduler, accelerator.is_main_process, sharded
    )
    if not sharded:
        policy, optimizer = accelerator.prepare(policy, optimizer)
    if ref is not None:
        ref.to(accelerator.device)
    guard = training.NonFiniteGuard("dpo", ckpt_dir, cfg.run.skip_nonfinite)
    return Setup(
        cfg,
        accelerator,
        tok,
        policy,
        ref,
        max_len,
        data,
        heldout,
        samples_info,
        rm,
        optimizer,
        scheduler,
        start,
        resumed_from,
        guard,
        sharded,
    )


# ---------------------------------------------------------------------- measurements


def ref_logps(s: Setup, gidx: list[int], groups) -> torch.Tensor:
    """[sum of K] reference log-probs of the groups ``gidx``, each group computed once and cached."""
    missing = [g for g in gidx if g not in s.ref_cache]
    if missing:
        ids, mask, labels, _, _ = collate([groups[g] for g in missing], s.tok.pad_token_id)
        with torch.no_grad(), reference_model(s.accelerator.unwrap_model(s.policy), s.ref) as ref_model:
            lp = sequence_logps(ref_model, ids.to(s.device), mask.to(s.device), labels.to(s.device))
        for g, part in zip(missing, lp.split([len(groups[g]) for g in missing])):
            s.ref_cache[g] = part
    return torch.cat([s.ref_cache[g] for g in gidx])


@torch.no_grad()
def validate(s: Setup) -> dict[str, float]:
    """Validation means over all pairs: each rank takes every n-th batch; pair-weighted sums are reduced."""
    val, bs, device = s.data.val, s.cfg.batch_size, s.device
    if not val:
        return {}
    policy = s.accelerator.unwrap_model(s.policy)
    tot: dict[str, float] = {}
    n = 0
    starts = range(0, len(val), bs)
    # sharded: as many batches on every rank (a forward is a collective), the throwaway ones not counted
    share = (
        fsdp.padded_share(starts, s.accelerator)
        if s.sharded
        else [(i, True) for i in rank_share(starts, s.accelerator)]
    )
    for i, real in share:
        ids, mask, labels, c, r = collate(val[i : i + bs], s.tok.pad_token_id)
        ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
        with reference_model(policy, s.ref) as ref_model:
            rl = sequence_logps(ref_model, ids, mask, labels)
        _, st = batch_loss(policy, rl, ids, mask, labels, c.to(device), r.to(device), s.cfg.beta)
        if not real:
            continue
        for k, v in st.items():
            if k != "pairs":
                tot[k] = tot.get(k, 0.0) + v * st["pairs"]
        n += st["pairs"]
    tot = reduce_sums(s.accelerator, {**{k: tot.get(k, 0.0) for k in _STAT_KEYS}, "pairs": n})
    return {f"val_{k}": tot[k] / tot["pairs"] for k in _STAT_KEYS}


def sample_heldout(s: Setup) -> dict[str, Any]:
    """The policy's responses to the fixed held-out prompts (same seed every time) and their scores."""
    cfg, rows = s.cfg, s.heldout.rows
    if not rows:
        return {}
    return sample_and_score(
        s.accelerator.unwrap_model(s.policy),
        s.tok,
        rows,
        max_prompt_len=max(8, s.max_len - cfg.eval.max_new_tokens - 1),
        max_new_tokens=cfg.eval.max_new_tokens,
        temperature=cfg.eval.temperature,
        seed=heldout_seed(cfg.run.seed),
        rm=s.rm,
        judge=s.heldout.judge_for_rows(),
    )


def _heldout_means(r: dict[str, Any]) -> dict[str, float]:
    return {f"heldout_{k}": r[k] for k in ("gold", "rm_score") if k in r}


# ------------------------------------------------------------------------------ loop


@training.with_run_threads
def run(cfg: DPOConfig) -> dict:
    t_start = time.time()
    s = setup(cfg)
    out = Path(cfg.output_dir)
    initial = sample_heldout(s) if s.start == 0 else training.read_trainer_state(s.resumed_from).get("initial", {})
    logger = training.open_metrics(out, cfg.run.tensorboard, s.start, s.is_main)
    if s.start == 0:
        v0 = validate(s)
        if s.is_main:
            logger.log(0, **v0, **_heldout_means(initial))

    s.policy.train()
    steps, run_cfg = s.data.steps, cfg.run
    bar = tqdm(
        range(s.start, steps), initial=s.start, total=steps, desc="dpo", disable=not s.is_main, dynamic_ncols=True
    )
    window: list[dict[str, float]] = []
    st: dict[str, float] = {}
    for step in bar:
        st, grad_norm = train_step(s, step)
        done = step + 1
        window.append(st)
        if done % run_cfg.log_interval == 0 or done == steps:
            if s.is_main:
                avg = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
                grad_norm = float(grad_norm) if grad_norm is not None else None
                logger.log(done, **avg, lr=s.scheduler.get_last_lr()[0], grad_norm=grad_norm)
            window = []
        if cfg.eval_interval and done % cfg.eval_interval == 0 and done < steps:
            v = validate(s)
            if s.is_main:
                logger.log(done, **v)
        bar.set_postfix(
            loss=f"{st['loss']:.3f}", acc=f"{st['reward_accuracy']:.2f}", margin=f"{st['reward_margin']:.2f}"
        )
        if run_cfg.checkpoint_interval and done % run_cfg.checkpoint_interval == 0 and done < steps:
            save(s, done, initial)
        fault_point("step")
    bar.close()
    return finish(s, logger, initial, st, t_start)


def train_step(s: Setup, step: int) -> tuple[dict[str, float], Any]:
    """One optimiser step on global batch ``step``; the global batch's numbers and the gradient norm."""
    cfg, acc, train = s.cfg, s.accelerator, s.data.train
    global_gidx = block_indices(step, cfg.batch_size, len(train), cfg.run.seed).tolist()
    gidx = rank_share(global_gidx, acc)  # this rank's share of the global batch
    batch = collate([train[g] for g in gidx], s.tok.pad_token_id)
    ids, mask, labels, c, r = (t.to(s.device) for t in batch)
    loss, st = batch_loss(s.policy, ref_logps(s, gidx, train).to(s.device), ids, mask, labels, c, r, cfg.beta)
    # the loss is a mean over pairs: weigh this rank's pairs in the global batch's mean (DDP averages ranks)
    global_pairs = sum(n_pairs(train[g]) for g in global_gidx)
    acc.backward(loss * token_share(acc, st["pairs"], global_pairs))
    st = {**reduce_means(acc, st, weight=st["pairs"]), "pairs": global_pairs}  # the global batch's numbers
    grad_norm, _ = training.guarded_step(
        acc, s.policy.parameters(), s.optimizer, s.scheduler, cfg.optim.grad_clip, s.guard, step + 1, loss=st["loss"]
    )
    return st, grad_norm


_CHECKPOINT_KEYS = ("gold", "rm_score", "eos_frac", "response_len", "texts", "gold_scores")  # of `initial`


def save(s: Setup, done: int, initial: dict[str, Any]) -> None:
    """A resumable checkpoint, holding the before-training held-out numbers the summary compares with."""
    s.accelerator.wait_for_everyone()
    kept = {k: initial[k] for k in _CHECKPOINT_KEYS if k in initial}
    ckpt_dir = Path(s.cfg.output_dir) / "checkpoint"
    if s.sharded:  # every rank writes its shards
        training.save_sharded_checkpoint(
            s.accelerator, ckpt_dir, s.policy, s.optimizer, s.scheduler, done, {"initial": kept}
        )
    elif s.is_main:
        policy = s.accelerator.unwrap_model(s.policy)
        training.save_checkpoint(ckpt_dir, policy, s.optimizer, s.scheduler, done, {"initial": kept})


# ---------------------------------------------------------------------------- finish


def finish(s: Setup, logger, initial: dict[str, Any], st: dict[str, float], t_start: float) -> dict:
    """Final validation and held-out samples, then (rank 0) the model, samples.json, summary and card."""
    cfg, out = s.cfg, Path(s.cfg.output_dir)
    s.policy.eval()
    final_val = validate(s)
    final = sample_heldout(s)  # every rank samples the same prompts with the same seed; rank 0 writes
    policy = fsdp.Gathered(s.policy) if s.sharded else s.accelerator.unwrap_model(s.policy)  # gathered: collective
    if not s.is_main:
        s.accelerator.wait_for_everyone()
        return {}
    training.publish_model(out, policy, s.tok, cfg.lora)
    summary = summarize(s, st, final_val, initial, final)
    if final:
        rows = s.heldout.rows
        before = initial.get("texts", [None] * len(rows))
        samples = [
            {"prompt": rows[i].get("prompt"), "before": before[i], "after": final["texts"][i]}
            for i in range(min(8, len(rows)))
        ]
        atomic_write_json(out / "samples.json", samples)
    summary["seconds"] = round(time.time() - t_start, 1)
    logger.log(s.data.steps, **final_val, **_heldout_means(final))
    logger.close()
    line = f"dpo: {s.data.steps} steps in {summary['seconds']}s"
    if "val_loss" in summary:
        line += f"; val loss {summary['val_loss']:.3f}, reward accuracy {summary['val_reward_accuracy']:.3f}"
    if "heldout_gold_initial" in summary:
        line += f"; held-out gold {summary['heldout_gold_initial']:.3f} -> {summary['heldout_gold_final']:.3f}"
    print(line)
    write_model_card(out, "dpo", summary)
    s.accelerator.wait_for_everyone()
    return summary


def summarize(s: Setup, st, final_val, initial, final) -> dict[str, Any]:
    """The run's numbers: the last batch, validation, and the held-out samples before and after."""
    cfg, train = s.cfg, s.data.train
    summary: dict[str, Any] = {
        "steps": s.data.steps,
        "train_prompts": len(train),
        "train_pairs": sum(n_pairs(g) for g in train),
        "beta": cfg.beta,
        "heldout": s.data.heldout.as_dict(),
        "heldout_samples": s.heldout_samples.as_dict(),
    }
    if st:
        summary["final_train_loss"] = round(st["loss"], 4)
    summary.update({k: round(v, 4) for k, v in final_val.items()})
    for key in ("gold", "rm_score", "eos_frac", "response_len"):
        if key in final and key in initial:
            summary[f"heldout_{key}_initial"] = round(initial[key], 4)
            summary[f"heldout_{key}_final"] = round(final[key], 4)
    if "gold_scores" in final and "gold_scores" in initial:
        summary["heldout_gold_delta_ci95"] = paired_delta_ci(initial["gold_scores"], final["gold_scores"])
    if final:
        rows, source = s.heldout.rows, s.heldout.source
        note = sampling_note(cfg.eval.temperature, cfg.run.seed)
        summary["heldout_sampling"] = f"{note}, first {len(rows)} rows of {source}"
    return summary
