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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from alignlab.config import arg
from alignlab.data.chat import encode_example, prompt_of
from alignlab.data.length_groups import length_groups
from alignlab.data.load import load_dataset_any, require_format
from alignlab.data.packing import block_indices
from alignlab.distributed import make_accelerator, rank_share, reduce_means, reduce_sums, token_share
from alignlab.evaluate.heldout_samples import paired_delta_ci, sample_and_score
from alignlab.models.load import disable_dropout, load_causal_lm, load_tokenizer
from alignlab.models.lora import LoraSettings, apply_lora, clear_model_files, reference_model, save_model
from alignlab.models.reward_model import load_reward_model
from alignlab.models.value_model import ValueModel
from alignlab.outputs import MetricsLogger, atomic_write_json, write_model_card
from alignlab.rl.losses import IGNORE_INDEX, dpo_loss
from alignlab.rollout.scoring import labeled_logprobs
from alignlab.training import (
    checkpoint_exists,
    cpu_threads,
    load_checkpoint,
    make_optimizer,
    read_trainer_state,
    resolve_device,
    save_checkpoint,
)


@dataclass
class DPOConfig:
    policy: str = arg("runs/sft", "SFT model (hub id or path): the starting policy")
    ref_model: str = arg("", "frozen reference model; empty = the same SFT model as `policy`")
    tokenizer: str = arg("", "tokenizer; empty = the one saved with the policy")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")
    data: str = arg(
        "runs/compare/comparisons",
        "comparisons: ranked {prompt, responses: [best..worst]} or {prompt, chosen, rejected}",
    )
    split: str = arg("train", "training split")
    eval_split: str = arg("validation", "held-out split for loss / reward accuracy ('' = none)")
    eval_max_prompts: int = arg(200, "cap on held-out prompts for validation metrics")
    beta: float = arg(0.1, "DPO beta (strength of the implicit KL to the reference)")
    max_len: int = arg(128, "tokens per prompt+response (prompt cut from the left; capped at the model's context)")
    batch_size: int = arg(16, "prompts per optimiser step (each with all its ranked responses)")
    epochs: float = arg(1.0, "passes over the training prompts (ignored if max_steps > 0)")
    max_steps: int = arg(0, "optimiser steps; 0 = derive from epochs")
    lr: float = arg(2e-4, "peak learning rate (AdamW)")
    min_lr_ratio: float = arg(0.1, "cosine decays to this fraction of lr")
    warmup_steps: int = arg(5, "linear warmup steps")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    grad_clip: float = arg(1.0, "clip the gradient norm to this (0 = off)")
    world_dir: str = arg(
        "runs/world", "built-in world folder for gold rewards of held-out samples before/after; empty = off"
    )
    reward_model: str = arg("", "optional reward model to also score the held-out samples (proxy); empty = off")
    eval_data: str = arg("", "held-out prompts for samples; empty = world_dir/test")
    eval_data_split: str = arg("test", "split of eval_data")
    eval_prompts: int = arg(256, "held-out prompts sampled before and after (the first N rows)")
    eval_temperature: float = arg(1.0, "held-out sampling temperature (same seed before and after); 0 = greedy")
    max_new_tokens: int = arg(32, "response length cap for held-out samples")
    eval_interval: int = arg(0, "steps between validation-metric evaluations (0 = only at the end)")
    checkpoint_interval: int = arg(50, "steps between resumable checkpoints (0 = none)")
    log_interval: int = arg(5, "steps between metrics.jsonl lines")
    seed: int = arg(0, "seed for data order and sampling")
    device: str = arg("auto", "auto, cpu or cuda")
    threads: int = arg(
        0, "torch CPU threads (0 = torch's default, every core); on a CPU shared with other jobs 1 can be much faster"
    )
    resume: bool = arg(False, "continue from output_dir/checkpoint if it exists")
    tensorboard: bool = arg(True, "also write TensorBoard logs to output_dir/tb")
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
        "eval_prompts": 16,
        "max_new_tokens": 16,
        "checkpoint_interval": 3,
        "log_interval": 1,
        "warmup_steps": 1,
        "threads": 1,
    },
    "default": {},
}


# ----------------------------------------------------------------------------------- data


def ranked_groups(ds, tokenizer, max_len: int, source: str) -> list[list[dict[str, Any]]]:
    """One group per prompt: its responses best -> worst, each tokenised with the prompt masked."""
    fmt = require_format(ds, ("ranked", "preference"), source)
    groups = []
    for row in ds:
        prompt = prompt_of(row)
        responses = list(row["responses"]) if fmt == "ranked" else [row["chosen"], row["rejected"]]
        responses = list(
            dict.fromkeys(r.strip() for r in responses)
        )  # a duplicate keeps its best rank: no y_w == y_l pairs
        if len(responses) < 2:
            continue
        groups.append([encode_example(tokenizer, prompt, r, max_len) for r in responses])
    if not groups:
        raise ValueError(f"{source}: no prompt with at least two responses")
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
        for a in range(len(g)):
            for b in range(a + 1, len(g)):
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


# ---------------------------------------------------------------------------------- stage


def run(cfg: DPOConfig) -> dict:
    with cpu_threads(cfg.threads):
        return _run(cfg)


def _run(cfg: DPOConfig) -> dict:
    t_start = time.time()
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoint"
    accelerator = make_accelerator(resolve_device(cfg.device), "dpo")
    is_main = accelerator.is_main_process
    if cfg.batch_size % accelerator.num_processes:
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be a multiple of the number of processes "
            f"({accelerator.num_processes}): it is global, split over the ranks"
        )
    device = accelerator.device
    torch.manual_seed(cfg.seed)

    tok = load_tokenizer(cfg.tokenizer or cfg.policy, cfg.trust_remote_code)
    policy = load_causal_lm(cfg.policy, cfg.trust_remote_code)
    # LoRA without an explicit ref_model: the reference is the policy with its adapter off (one copy)
    ref = (
        None
        if cfg.lora.enabled and not cfg.ref_model
        else load_causal_lm(cfg.ref_model or cfg.policy, cfg.trust_remote_code)
    )
    for m in (policy, ref):
        if m is not None:
            disable_dropout(m)
    if ref is not None:
        ref.eval().requires_grad_(False)
    policy = apply_lora(policy, cfg.lora, "CAUSAL_LM")  # unchanged when lora.r == 0
    ctx = int(getattr(policy.config, "max_position_embeddings", None) or getattr(policy.config, "n_positions", 2048))
    max_len = min(cfg.max_len, ctx)

    train = ranked_groups(load_dataset_any(cfg.data, cfg.split), tok, max_len, f"{cfg.data} [{cfg.split}]")
    val = None
    if cfg.eval_split:
        try:
            val = ranked_groups(
                load_dataset_any(cfg.data, cfg.eval_split), tok, max_len, f"{cfg.data} [{cfg.eval_split}]"
            )
            val = val[: cfg.eval_max_prompts]
        except ValueError as e:
            if is_main:
                print(f"dpo: no validation metrics ({e})")
    steps = cfg.max_steps or max(1, math.ceil(cfg.epochs * len(train) / cfg.batch_size))

    judge = rm = eval_rows = None
    if cfg.world_dir:
        from alignlab.evaluate.judges import WorldJudge

        if not (Path(cfg.world_dir) / "world.json").exists():
            raise ValueError(
                f"world_dir={cfg.world_dir!r} has no world.json; give the world folder or --world_dir '' to turn gold rewards off"
            )
        judge = WorldJudge(cfg.world_dir)
    eval_src = cfg.eval_data or (str(Path(cfg.world_dir) / "test") if cfg.world_dir else "")
    if eval_src:
        eval_rows = [r for r in load_dataset_any(eval_src, cfg.eval_data_split)][: cfg.eval_prompts]
    if cfg.reward_model:
        rm = ValueModel(load_reward_model(cfg.reward_model, cfg.trust_remote_code)).to(device).eval()

    optimizer = make_optimizer(policy, cfg.lr, cfg.weight_decay)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, cfg.warmup_steps, steps, min_lr_rate=cfg.min_lr_ratio
    )
    start = 0
    if cfg.resume and checkpoint_exists(ckpt_dir):
        start = load_checkpoint(ckpt_dir, policy, optimizer, scheduler)
        if is_main:
            print(f"resumed from {ckpt_dir} at step {start}")
    policy, optimizer = accelerator.prepare(policy, optimizer)
    if ref is not None:
        ref.to(device)

    ref_cache: dict[int, torch.Tensor] = {}  # group index -> [K] reference log-probs

    def ref_logps(gidx: list[int], groups) -> torch.Tensor:
        missing = [g for g in gidx if g not in ref_cache]
        if missing:
            ids, mask, labels, _, _ = collate([groups[g] for g in missing], tok.pad_token_id)
            with torch.no_grad(), reference_model(accelerator.unwrap_model(policy), ref) as ref_model:
                lp = sequence_logps(ref_model, ids.to(device), mask.to(device), labels.to(device))
            for g, part in zip(missing, lp.split([len(groups[g]) for g in missing])):
                ref_cache[g] = part
        return torch.cat([ref_cache[g] for g in gidx])

    @torch.no_grad()
    def validate() -> dict[str, float]:  # each rank takes every n-th batch; pair-weighted sums are reduced
        if not val:
            return {}
        tot: dict[str, float] = {}
        n = 0
        for i in rank_share(range(0, len(val), cfg.batch_size), accelerator):
            chunk = val[i : i + cfg.batch_size]
            ids, mask, labels, c, r = collate(chunk, tok.pad_token_id)
            ids, mask, labels = ids.to(device), mask.to(device), labels.to(device)
            with reference_model(accelerator.unwrap_model(policy), ref) as ref_model:
                rl = sequence_logps(ref_model, ids, mask, labels)
            _, st = batch_loss(
                accelerator.unwrap_model(policy), rl, ids, mask, labels, c.to(device), r.to(device), cfg.beta
            )
            for k, v in st.items():
                if k != "pairs":
                    tot[k] = tot.get(k, 0.0) + v * st["pairs"]
            n += st["pairs"]
        tot = reduce_sums(accelerator, {**{k: tot.get(k, 0.0) for k in _STAT_KEYS}, "pairs": n})
        return {f"val_{k}": tot[k] / tot["pairs"] for k in _STAT_KEYS}

    def heldout() -> dict[str, Any]:
        if eval_rows is None:
            return {}
        r = sample_and_score(
            accelerator.unwrap_model(policy),
            tok,
            eval_rows,
            max_prompt_len=max(8, max_len - cfg.max_new_tokens - 1),
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.eval_temperature,
            seed=cfg.seed + 12345,
            rm=rm,
            judge=judge if "meta" in eval_rows[0] else None,
        )
        return r

    initial = heldout() if start == 0 else read_trainer_state(ckpt_dir).get("initial", {})
    keep = ("gold", "rm_score", "eos_frac", "response_len", "texts", "gold_scores")
    if is_main and start == 0 and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh start (also --resume without a checkpoint) starts a fresh log
    logger = MetricsLogger(out, cfg.tensorboard, truncate_after_step=start if start else None) if is_main else None
    if start == 0:
        v0 = validate()
        if is_main:
            logger.log(0, **v0, **{f"heldout_{k}": initial[k] for k in ("gold", "rm_score") if k in initial})

    policy.train()
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="dpo", disable=not is_main, dynamic_ncols=True)
    window: list[dict[str, float]] = []
    st: dict[str, float] = {}
    for step in bar:
        global_gidx = block_indices(step, cfg.batch_size, len(train), cfg.seed).tolist()
        gidx = rank_share(global_gidx, accelerator)  # this rank's share of the global batch
        ids, mask, labels, c, r = collate([train[g] for g in gidx], tok.pad_token_id)
        ids, mask, labels, c, r = (t.to(device) for t in (ids, mask, labels, c, r))
        loss, st = batch_loss(policy, ref_logps(gidx, train).to(device), ids, mask, labels, c, r, cfg.beta)
        # the loss is a mean over pairs: weigh this rank's pairs in the global batch's mean (DDP averages ranks)
        global_pairs = sum(len(train[g]) * (len(train[g]) - 1) // 2 for g in global_gidx)
        accelerator.backward(loss * token_share(accelerator, st["pairs"], global_pairs))
        st = {**reduce_means(accelerator, st, weight=st["pairs"]), "pairs": global_pairs}  # the global batch's numbers
        grad_norm = accelerator.clip_grad_norm_(policy.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        if not math.isfinite(st["loss"]):
            raise FloatingPointError(f"dpo: loss became {st['loss']} at step {done}; lower lr (now {cfg.lr})")
        window.append(st)
        if is_main and (done % cfg.log_interval == 0 or done == steps):
            avg = {k: sum(w[k] for w in window) / len(window) for k in window[0]}
            logger.log(
                done,
                **avg,
                lr=scheduler.get_last_lr()[0],
                grad_norm=float(grad_norm) if grad_norm is not None else None,
            )
        if done % cfg.log_interval == 0 or done == steps:
            window = []
        if cfg.eval_interval and done % cfg.eval_interval == 0 and done < steps:
            v = validate()
            if is_main:
                logger.log(done, **v)
        bar.set_postfix(
            loss=f"{st['loss']:.3f}", acc=f"{st['reward_accuracy']:.2f}", margin=f"{st['reward_margin']:.2f}"
        )
        if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and done < steps:
            accelerator.wait_for_everyone()
            if is_main:
                save_checkpoint(
                    ckpt_dir,
                    accelerator.unwrap_model(policy),
                    optimizer,
                    scheduler,
                    done,
                    {"initial": {k: initial[k] for k in keep if k in initial}},
                )
    bar.close()

    policy.eval()
    final_val = validate()
    final = heldout()  # every rank samples the same prompts with the same seed; rank 0 writes
    if not is_main:
        accelerator.wait_for_everyone()
        return {}
    unwrapped = accelerator.unwrap_model(policy)
    tmp = out / ".final.tmp"
    save_model(unwrapped, tmp, cfg.lora, tok)  # full weights, the LoRA adapter, or the merged model
    clear_model_files(out)  # a full model and an adapter must not sit side by side
    for f in tmp.iterdir():
        f.replace(out / f.name)
    tmp.rmdir()
    summary: dict[str, Any] = {
        "steps": steps,
        "train_prompts": len(train),
        "train_pairs": sum(len(g) * (len(g) - 1) // 2 for g in train),
        "beta": cfg.beta,
    }
    if st:
        summary["final_train_loss"] = round(st["loss"], 4)
    summary.update({k: round(v, 4) for k, v in final_val.items()})
    for key in ("gold", "rm_score", "eos_frac", "response_len"):
        if key in final and key in initial:
            summary[f"heldout_{key}_initial"], summary[f"heldout_{key}_final"] = (
                round(initial[key], 4),
                round(final[key], 4),
            )
    if "gold_scores" in final and "gold_scores" in initial:
        summary["heldout_gold_delta_ci95"] = paired_delta_ci(initial["gold_scores"], final["gold_scores"])
    if final:
        summary["heldout_sampling"] = (
            "greedy"
            if cfg.eval_temperature == 0
            else f"temperature {cfg.eval_temperature}, fixed seed {cfg.seed + 12345}"
        ) + f", first {len(eval_rows)} rows of {eval_src}"
        samples = [
            {
                "prompt": eval_rows[i].get("prompt"),
                "before": initial.get("texts", [None] * len(eval_rows))[i],
                "after": final["texts"][i],
            }
            for i in range(min(8, len(eval_rows)))
        ]
        atomic_write_json(out / "samples.json", samples)
    summary["seconds"] = round(time.time() - t_start, 1)
    logger.log(steps, **final_val, **{f"heldout_{k}": final[k] for k in ("gold", "rm_score") if k in final})
    logger.close()
    line = f"dpo: {steps} steps in {summary['seconds']}s"
    if "val_loss" in summary:
        line += f"; val loss {summary['val_loss']:.3f}, reward accuracy {summary['val_reward_accuracy']:.3f}"
    if "heldout_gold_initial" in summary:
        line += f"; held-out gold {summary['heldout_gold_initial']:.3f} -> {summary['heldout_gold_final']:.3f}"
    print(line)
    write_model_card(out, "dpo", summary)
    accelerator.wait_for_everyone()
    return summary
