"""Stage: supervised fine-tuning on demonstrations (InstructGPT step 1).

Read top to bottom: config, judges, ``run`` (setup, the epoch loop, the finish), then the pieces
``run`` calls in that order: the setup, one optimiser step, validation, the end of an epoch
(selection and checkpoint), and the finish (publish the kept epoch's model, summary, report).

Loss falls on response tokens only (``response_lm_loss``: the prompt is labelled -100, and the output
layer runs only where a response token is predicted).
Every epoch is validated twice: validation LOSS, and validation REWARD of responses the
model itself writes for the validation prompts (greedy by default), scored by a judge:
the world's gold labelers (``world_dir``, when the data are the world's prompts) or a
trained reward model (``reward_model``). The kept model is the epoch with the best
validation reward -- InstructGPT overfits on validation loss after one epoch yet keeps
improving on reward -- or, with no judge, the epoch with the lowest validation loss.
The base model is evaluated the same way first ("epoch 0"), so the gain is on record.

Resume is at epoch granularity: a checkpoint after each epoch (weights, optimiser,
schedule, RNG, the per-epoch history) and the best epoch's weights in
``best-epoch<N>/``. The data order of epoch e is a function of (seed, e) alone.
"""

from __future__ import annotations

import math
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm

from alignlab import fsdp, training
from alignlab.config import arg
from alignlab.data.batches import StepPlan, epoch_order, micro_batch, plan_steps
from alignlab.data.chat import encode_example, encode_prompts
from alignlab.data.collate import collate_sft
from alignlab.data.heldout import (
    DEFAULT_EVAL_FRACTION,
    EVAL_FRACTION_HELP,
    HeldoutInfo,
    load_train_eval,
    no_eval_message,
)
from alignlab.data.length_groups import length_groups
from alignlab.data.load import DataError, demonstrations
from alignlab.distributed import make_accelerator, map_sharded, rank_share, reduce_sums
from alignlab.errors import ConfigError
from alignlab.faults import fault_point
from alignlab.models.load import context_length, load_causal_lm
from alignlab.models.lora import LoraSettings, is_adapter_folder, load_adapter_weights
from alignlab.models.prepare import load_for_training
from alignlab.models.response_logits import response_lm_loss
from alignlab.models.trainee import Trainee
from alignlab.outputs import atomic_write_json, write_model_card
from alignlab.rollout.generate import generate_responses
from alignlab.sections import ModelSource, OptimSettings, RunSettings


@dataclass
class SFTConfig:
    model: str = arg("runs/pretrain", "base model: hub id or local path of a causal LM (safetensors)")
    data: str = arg(
        "runs/world/sft",
        "demonstrations: saved datasets folder, .jsonl/.parquet or hub id; prompt/completion or messages format",
    )
    train_split: str = arg("train", "split to train on")
    eval_split: str = arg("validation", "held-out split for validation loss and reward")
    eval_fraction: float = arg(DEFAULT_EVAL_FRACTION, EVAL_FRACTION_HELP)
    eval_data: str = arg(
        "",
        "held-out demonstrations from another source (e.g. a second .jsonl); "
        "empty = data's eval_split, else eval_fraction of its prompts",
    )
    judge: Literal["auto", "world", "reward_model", "loss"] = arg(
        "auto",
        "what picks the kept epoch: world (gold labelers), reward_model, or loss; "
        "auto = world if world_dir exists and the data carry world metadata, else reward_model if given, else loss",
    )
    world_dir: str | None = arg("runs/world", "built-in world whose labelers score validation responses (gold reward)")
    reward_model: str | None = arg(
        None, "reward model (AutoModelForSequenceClassification) scoring validation responses"
    )
    seq_len: int = arg(0, "max tokens per example (prompt cut from the left); 0 = the model's context length")
    epochs: int = arg(
        6, "passes over the demonstrations (InstructGPT: 16; the kept epoch is chosen by validation reward)"
    )
    batch_size: int = arg(32, "examples per optimiser step (global, across processes)")
    micro_batch_size: int = arg(
        0, "examples per forward pass (gradient accumulation); 0 = all of a process's share, batch_size / processes"
    )
    val_prompts: int = arg(0, "validation prompts sampled for the validation reward each epoch (0 = all)")
    val_max_new_tokens: int = arg(32, "response length cap when sampling for the validation reward")
    val_temperature: float = arg(0.0, "sampling temperature for the validation reward (0 = greedy)")
    eval_batch_size: int = arg(64, "prompts per generation / evaluation batch")
    eval_base: bool = arg(True, "also evaluate the base model before training (epoch 0), for the record")
    # SFT checkpoints after every epoch (resume is at epoch granularity): run.checkpoint_interval must stay 0.
    run: RunSettings = arg(factory=lambda: RunSettings(log_interval=10), help=RunSettings.HELP)
    source: ModelSource = arg(factory=ModelSource, help=ModelSource.HELP)
    # InstructGPT's SFT: cosine decay to 10% of lr, with a short warmup.
    optim: OptimSettings = arg(
        factory=lambda: OptimSettings(lr=1e-3, weight_decay=0.1, warmup_steps=10, min_lr_ratio=0.1, grad_clip=1.0),
        help=OptimSettings.HELP,
    )
    lora: LoraSettings = arg(
        factory=LoraSettings, help="LoRA adapters through peft (--lora.r 8); r=0 trains all weights"
    )
    output_dir: str = arg("runs/sft", "where the selected model, metrics and checkpoints go")


PRESETS = {
    "smoke": {
        "epochs": 3,
        "batch_size": 16,
        "optim": {"warmup_steps": 2},
        "run": {"log_interval": 2},
        "val_max_new_tokens": 24,
    },
    "default": {},
}


# ------------------------------------------------------------------------- judges


def make_judge(cfg: SFTConfig, val_ds, device):
    """(name, score_fn(records, responses) -> list[float]) or ("loss", None)."""
    from alignlab.evaluate.judges import RewardModelJudge, WorldJudge, world_records_ok

    world_ok = bool(cfg.world_dir) and (Path(cfg.world_dir) / "world.json").is_file() and world_records_ok(val_ds)
    choice = cfg.judge
    if choice == "auto":
        choice = "world" if world_ok else ("reward_model" if cfg.reward_model else "loss")
    if choice == "world":
        if not world_ok:
            raise ConfigError(
                f"judge: 'world' needs world_dir with a world.json ({cfg.world_dir!r}) and validation rows "
                f"with the world's 'task' and 'meta' columns (columns: {val_ds.column_names})"
            )
        judge = WorldJudge(cfg.world_dir)
        return "world", judge.gold
    if choice == "reward_model":
        if not cfg.reward_model:
            raise ConfigError("judge: 'reward_model' needs reward_model (a path or hub id)")
        rm = RewardModelJudge(cfg.reward_model, device=device, trust_remote_code=cfg.source.trust_remote_code)
        return "reward_model", rm.score
    return "loss", None


# --------------------------------------------------------------------------- run


@dataclass
class Demos:
    """The encoded demonstrations (prompt labelled -100, EOS after the response) and the step plan."""

    train: list[dict]
    val: list[dict]
    plan: StepPlan


@dataclass
class Validation:
    """What the validation reward samples from, and the judge that scores the samples (None: loss only)."""

    judge_name: str
    judge: Callable[[list[dict], list[str]], list[float]] | None
    prompts: list  # every validation prompt (text or chat messages)
    idx: list[int]  # the ones sampled for the reward (a fixed, seeded subset if val_prompts is set)
    records: list[dict]  # their rows, for the judge (messages rows: the prompt is the context)
    prompt_ids: list[list[int]]
    heldout: HeldoutInfo  # where the validation rows came from (summary.json's heldout)


@dataclass
class Progress:
    """Per-epoch validation records (epoch 0 = the base model) and the best epoch so far."""

    start_epoch: int = 0
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"epoch": None, "metric": -math.inf})


def run(cfg: SFTConfig) -> dict:
    if cfg.epochs < 1:
        raise ConfigError(f"epochs: must be >= 1, got {cfg.epochs}")
    if cfg.run.checkpoint_interval:
        raise ConfigError("run.checkpoint_interval: SFT saves a checkpoint after every epoch; leave it at 0")
    with training.cpu_threads(cfg.run.threads):
        t_start, out = time.time(), Path(cfg.output_dir)
        accelerator = make_accelerator(training.resolve_device(cfg.run.device), "sft")
        sharded = fsdp.requested(accelerator, cfg.run.fsdp)
        if sharded:
            fsdp.check_supported(accelerator, "sft", cfg.lora.enabled)
        micro = micro_batch(cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes)
        model, tok, seq_len = load_for_training(
            load_causal_lm, cfg.model, cfg.source, cfg.lora, "CAUSAL_LM", cfg.seq_len
        )
        demos, val = _setup_data(cfg, tok, model, seq_len, accelerator.device)
        if accelerator.is_main_process:
            print(f"sft: {val.heldout.line()}")
        if sharded:  # before the optimiser, which must hold the sharded parameters
            fsdp.shard(model, accelerator.device)
            fsdp.write_shard_report(model, "sft")
        optimizer, scheduler = training.optimizer_and_schedule(model, cfg.optim, demos.plan.total_steps)
        progress = _resume(cfg, out, model, optimizer, scheduler, accelerator.is_main_process, sharded)
        if not sharded:
            model, optimizer = accelerator.prepare(model, optimizer)
        guard = training.NonFiniteGuard("sft", out / "checkpoint", cfg.run.skip_nonfinite)
        t = Trainee(accelerator, model, tok, optimizer, scheduler, micro, guard, sharded)
        logger = training.open_metrics(
            out, cfg.run.tensorboard, progress.start_epoch * demos.plan.steps_per_epoch, t.is_main
        )

        if cfg.eval_base and not progress.history:
            progress.history.append(_evaluate(cfg, t, demos, val, logger, epoch=0, step=0))
        _train(cfg, out, t, demos, val, progress, logger)

        summary = _finish(cfg, out, t, demos, val, progress, t_start) if t.is_main else {}
        if logger is not None:
            logger.close()
        accelerator.wait_for_everyone()
        return summary


# ------------------------------------------------------------------------- setup


def _setup_data(cfg: SFTConfig, tok, model, seq_len: int, device) -> tuple[Demos, Validation]:
    """Training and validation demonstrations (``data/heldout.py``: never the same prompts), encoded; the judge."""
    split = load_train_eval(cfg.data, cfg.train_split, cfg.eval_split, cfg.eval_fraction, cfg.eval_data)
    if split.eval is None:  # the kept epoch is chosen on validation: no validation, no SFT
        raise DataError(no_eval_message("sft", cfg.data, split.info))
    train_prompts, train_responses = demonstrations(split.train, f"{cfg.data} ({cfg.train_split} split)")
    val_ds = split.eval
    val_prompts, val_responses = demonstrations(val_ds, f"{split.info.source} ({split.info.split})")
    train = [encode_example(tok, p, r, seq_len) for p, r in zip(train_prompts, train_responses)]
    val_ex = [encode_example(tok, p, r, seq_len) for p, r in zip(val_prompts, val_responses)]
    demos = Demos(train, val_ex, plan_steps(len(train), cfg.batch_size, cfg.epochs))

    judge_name, judge = make_judge(cfg, val_ds, device)
    idx = list(range(len(val_ds)))
    if cfg.val_prompts and cfg.val_prompts < len(idx):
        g = torch.Generator().manual_seed(cfg.run.seed)
        idx = sorted(torch.randperm(len(idx), generator=g)[: cfg.val_prompts].tolist())
    records = [{**val_ds[i], "prompt": val_prompts[i]} for i in idx]
    max_prompt = max(1, min(seq_len, context_length(model), training.DEFAULT_SEQ_CAP) - cfg.val_max_new_tokens)
    prompt_ids = encode_prompts(tok, [val_prompts[i] for i in idx], max_prompt)
    return demos, Validation(judge_name, judge, val_prompts, idx, records, prompt_ids, split.info)


def _resume(cfg: SFTConfig, out: Path, model, optimizer, scheduler, is_main: bool, sharded: bool) -> Progress:
    """Continue after the last finished epoch (weights, optimiser, schedule, RNG, history) when asked and possible."""
    ckpt_dir = out / "checkpoint"
    progress = Progress()
    folder = training.resumable(ckpt_dir, cfg.run.resume, is_main)
    if folder is not None:
        load = training.load_sharded_checkpoint if sharded else training.load_checkpoint
        progress.start_epoch = load(folder, model, optimizer, scheduler)
        state = training.read_trainer_state(folder)
        progress.history, progress.best = state["history"], state["best"]
        if is_main:
            print(
                f"resumed from {folder} after epoch {progress.start_epoch} (best so far: epoch {progress.best['epoch']})"
            )
    if is_main:  # best weights written after the checkpoint we resume from
        _remove_stale_best(out, progress.best["epoch"])
    return progress


def _remove_stale_best(out: Path, best_epoch: int | None) -> None:
    for stale in out.glob("best-epoch*"):
        if stale.name != f"best-epoch{best_epoch}":
            shutil.rmtree(stale)


# ------------------------------------------------------------------------- training


def _train(cfg: SFTConfig, out: Path, t: Trainee, demos: Demos, val: Validation, progress: Progress, logger) -> None:
    """The epoch loop: a shuffled pass of whole batches, then validation, selection and a checkpoint."""
    plan = demos.plan
    first_step = progress.start_epoch * plan.steps_per_epoch
    t.model.train()
    bar = tqdm(total=plan.total_steps, initial=first_step, desc="sft", disable=not t.is_main, dynamic_ncols=True)
    t_last, last_logged = time.time(), first_step
    for epoch in range(progress.start_epoch + 1, cfg.epochs + 1):
        perm = epoch_order(len(demos.train), cfg.run.seed, epoch)
        for s in range(plan.steps_per_epoch):
            step = (epoch - 1) * plan.steps_per_epoch + s + 1
            train_loss, grad_norm = _train_step(cfg, t, demos.train, perm[s * plan.batch : (s + 1) * plan.batch], step)
            if t.is_main and (step % cfg.run.log_interval == 0 or s == plan.steps_per_epoch - 1):
                now = time.time()
                logger.log(
                    step,
                    loss=train_loss,
                    lr=t.scheduler.get_last_lr()[0],
                    epoch=epoch,
                    grad_norm=float(grad_norm) if grad_norm is not None else None,
                    seconds_per_step=(now - t_last) / max(step - last_logged, 1),
                )
                t_last, last_logged = now, step
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}")
            fault_point("step")
        rec = _evaluate(cfg, t, demos, val, logger, epoch, epoch * plan.steps_per_epoch)
        _end_epoch(cfg, out, t, progress, rec, judged=val.judge is not None)
    bar.close()


def _train_step(cfg: SFTConfig, t: Trainee, train: list[dict], global_idx: list[int], step: int):
    """One optimiser step on the global batch ``global_idx``; (the batch's mean loss, the gradient norm)."""
    accelerator, n_proc = t.accelerator, t.accelerator.num_processes
    idx = rank_share(global_idx, accelerator)  # this rank's share of the global batch
    # micro-batches, each run in a few passes of similar lengths (same loss and gradient, less padding)
    chunks = [
        [chunk[i] for i in group]
        for k in range(0, len(idx), t.micro)
        for chunk in [idx[k : k + t.micro]]
        for group in length_groups([len(train[j]["input_ids"]) for j in chunk])
    ]
    # token-weighted mean over the GLOBAL batch: x n_proc because DDP averages gradients over ranks
    n_tok = sum(sum(1 for tok_id in train[j]["labels"][1:] if tok_id != -100) for j in global_idx) / n_proc
    loss_sum = torch.zeros((), device=accelerator.device)
    for m, chunk in enumerate(chunks):
        b = {k: v.to(accelerator.device) for k, v in collate_sft([train[j] for j in chunk], t.tok.pad_token_id).items()}
        # (FSDP2: no_sync does nothing; each micro-batch's gradient is reduce-scattered at once, so a rank
        # only ever holds its shard of the gradient -- more communication, far less memory)
        ctx = accelerator.no_sync(t.model) if m < len(chunks) - 1 else nullcontext()
        with ctx:
            # = masked_lm_loss(model(...).logits, labels), with logits only where a response token is predicted
            loss, k = response_lm_loss(t.model, b["input_ids"], b["attention_mask"], b["labels"])
            loss = loss * (k / max(n_tok, 1))  # token-weighted over the step
            accelerator.backward(loss)
        loss_sum += loss.detach()
    loss = accelerator.reduce(loss_sum, "mean").item()
    return loss, t.optimizer_step(cfg.optim.grad_clip, step, loss=loss)


# ------------------------------------------------------------------------- validation


def _evaluate(cfg: SFTConfig, t: Trainee, demos: Demos, val: Validation, logger, epoch: int, step: int) -> dict:
    rec = {"epoch": epoch, "val_loss": _val_loss(cfg, t, demos.val), **_val_reward(cfg, t, val)}
    if t.is_main:
        logger.log(step, **rec)
        extra = f", val reward {rec['val_reward']:.4f} ({val.judge_name})" if "val_reward" in rec else ""
        print(f"sft epoch {epoch}{' (base model)' if epoch == 0 else ''}: val loss {rec['val_loss']:.4f}{extra}")
    return rec


def _val_loss(cfg: SFTConfig, t: Trainee, val_ex: list[dict]) -> float:
    """Token-weighted validation loss: each rank takes every n-th eval batch; token sums are reduced."""
    accelerator = t.accelerator
    t.model.eval()
    nll, n_tok = 0.0, 0
    starts = range(0, len(val_ex), cfg.eval_batch_size)
    # sharded: as many batches on every rank (a forward is a collective), the throwaway ones not counted
    share = (
        fsdp.padded_share(starts, accelerator) if t.sharded else [(i, True) for i in rank_share(starts, accelerator)]
    )
    with torch.no_grad():
        for i, real in share:
            batch = collate_sft(val_ex[i : i + cfg.eval_batch_size], t.tok.pad_token_id)
            b = {k: v.to(accelerator.device) for k, v in batch.items()}
            # the bare model: ranks run different numbers of batches, so no DDP wrapper hooks here
            loss, k = response_lm_loss(t.bare(), b["input_ids"], b["attention_mask"], b["labels"])
            if real:
                nll += loss.item() * k
                n_tok += k
    t.model.train()
    sums = reduce_sums(accelerator, {"nll": nll, "n_tok": n_tok})
    return sums["nll"] / max(sums["n_tok"], 1)


def _val_reward(cfg: SFTConfig, t: Trainee, val: Validation) -> dict[str, float]:
    """Mean judge score, EOS rate and length of the model's own responses to the validation prompts."""
    if val.judge is None:
        return {}

    def judged(rows: list[int]) -> list[tuple[float, bool, int]]:  # this rank's share of the prompts
        if not rows and not t.sharded:  # sharded, a rank without prompts still samples along (kv_sampler)
            return []
        roll = generate_responses(
            t.bare(),
            t.tok,
            [val.prompt_ids[i] for i in rows],
            cfg.val_max_new_tokens,
            temperature=cfg.val_temperature,
            batch_size=cfg.eval_batch_size,
            seed=cfg.run.seed + t.accelerator.process_index,
        )
        if not rows:
            return []
        scores = val.judge([val.records[i] for i in rows], roll.texts)
        return list(zip(scores, roll.ended_with_eos.tolist(), roll.response_mask.sum(-1).tolist()))

    res = map_sharded(t.accelerator, judged, range(len(val.prompt_ids)))  # same numbers on every rank
    return {
        "val_reward": sum(r[0] for r in res) / len(res),
        "val_eos_rate": sum(float(r[1]) for r in res) / len(res),
        "val_response_tokens": sum(float(r[2]) for r in res) / len(res),
    }


def _end_epoch(cfg: SFTConfig, out: Path, t: Trainee, progress: Progress, rec: dict, judged: bool) -> None:
    """Record the epoch, keep its weights if it is the best so far, and checkpoint (but after the last epoch)."""
    epoch = rec["epoch"]
    progress.history.append(rec)
    metric = rec["val_reward"] if judged else -rec["val_loss"]
    t.accelerator.wait_for_everyone()
    if metric > progress.best["metric"]:
        progress.best = {"epoch": epoch, "metric": metric}
        if t.is_main or t.sharded:  # sharded: every rank gathers, the main process writes
            _save_weights(t, out / f"best-epoch{epoch}")
    extra = {"history": progress.history, "best": progress.best}
    if t.sharded and epoch < cfg.epochs:
        training.save_sharded_checkpoint(
            t.accelerator, out / "checkpoint", t.model, t.optimizer, t.scheduler, epoch, extra
        )
    if t.is_main:
        if epoch < cfg.epochs and not t.sharded:
            training.save_checkpoint(out / "checkpoint", t.bare(), t.optimizer, t.scheduler, epoch, extra=extra)
        _remove_stale_best(out, progress.best["epoch"])
    t.accelerator.wait_for_everyone()


def _save_weights(t: Trainee, folder: Path) -> None:
    """save_pretrained to a temp name, then rename: a kill never leaves a half-written best model.
    Sharded: called on every rank (the weights are gathered), only the main process writes."""
    tmp = folder.with_name(folder.name + ".tmp")
    if t.is_main and tmp.exists():
        shutil.rmtree(tmp)
    if t.sharded:
        fsdp.save_pretrained(t.model, tmp, t.is_main)
    else:
        t.bare().save_pretrained(tmp, safe_serialization=True)
    if not t.is_main:
        return
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)


# ------------------------------------------------------------------------- finish (main process)


def _finish(
    cfg: SFTConfig, out: Path, t: Trainee, demos: Demos, val: Validation, progress: Progress, t_start: float
) -> dict[str, Any]:
    """Publish the kept epoch's model (safetensors) + tokenizer; write samples, summary and model card.
    Sharded, the main process works on its own whole copy of the kept epoch's weights (best-epoch<N>/,
    always written), so nothing here needs the other ranks."""
    best_epoch = progress.best["epoch"]
    best_dir = out / f"best-epoch{best_epoch}"
    model = load_causal_lm(str(best_dir), cfg.source.trust_remote_code) if t.sharded else t.bare()
    _restore_weights(model, best_dir)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, key, getattr(t.tok, key))
    training.publish_model(out, model, t.tok, cfg.lora)
    if best_dir.is_dir():
        shutil.rmtree(best_dir)

    summary = _summary(cfg, demos, val, progress)
    summary["seconds"] = round(time.time() - t_start, 1)
    samples = generate_responses(
        model,
        t.tok,
        val.prompt_ids[:8],
        cfg.val_max_new_tokens,
        temperature=cfg.val_temperature,
        batch_size=8,
        seed=cfg.run.seed,
    )
    prompts = [val.prompts[i] for i in val.idx[:8]]
    atomic_write_json(
        out / "samples.json",
        [
            {"prompt": p if isinstance(p, str) else p[-1]["content"], "response": r}
            for p, r in zip(prompts, samples.texts)
        ],
    )
    _report(summary, progress, judged=val.judge is not None)
    write_model_card(out, "sft", summary, extra=_epoch_table(progress, summary["selected_by"]))
    return summary


def _restore_weights(model, best_dir: Path) -> None:
    """Load the kept epoch's weights (an adapter or full weights) into ``model``; none saved = keep the last."""
    if best_dir.is_dir() and is_adapter_folder(best_dir):
        load_adapter_weights(model, best_dir)
    elif best_dir.is_dir():
        from safetensors.torch import load_file

        model.load_state_dict(load_file(str(best_dir / "model.safetensors")), strict=False)


def _summary(cfg: SFTConfig, demos: Demos, val: Validation, progress: Progress) -> dict[str, Any]:
    history, judged = progress.history, val.judge is not None
    trained = [h for h in history if h["epoch"] >= 1]
    base = next((h for h in history if h["epoch"] == 0), None)
    chosen = next(h for h in trained if h["epoch"] == progress.best["epoch"])
    return {
        "chosen_epoch": progress.best["epoch"],
        "selected_by": "val_reward" if judged else "val_loss",
        "judge": val.judge_name,
        "epochs": cfg.epochs,
        "final_val_loss": round(trained[-1]["val_loss"], 4),
        "best_val_loss": round(min(h["val_loss"] for h in trained), 4),
        "best_val_loss_epoch": min(trained, key=lambda h: h["val_loss"])["epoch"],
        "chosen_val_loss": round(chosen["val_loss"], 4),
        "best_val_reward": round(chosen["val_reward"], 4) if judged else None,
        "final_val_reward": round(trained[-1]["val_reward"], 4) if judged else None,
        "base_val_loss": round(base["val_loss"], 4) if base else None,
        "base_val_reward": round(base["val_reward"], 4) if base and judged else None,
        "chosen_val_eos_rate": round(chosen.get("val_eos_rate", float("nan")), 4) if judged else None,
        "history": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history],
        "train_examples": len(demos.train),
        "val_examples": len(demos.val),
        "val_reward_prompts": len(val.idx),
        "steps": demos.plan.total_steps,
        "heldout": val.heldout.as_dict(),
    }


def _report(summary: dict[str, Any], progress: Progress, judged: bool) -> None:
    reward = f"val reward {summary['best_val_reward']:.4f} (base {summary['base_val_reward']}), " if judged else ""
    print(
        f"sft: kept epoch {progress.best['epoch']} of {summary['epochs']} by {summary['selected_by']}; {reward}"
        f"val loss {summary['chosen_val_loss']:.4f} (lowest {summary['best_val_loss']:.4f} at epoch "
        f"{summary['best_val_loss_epoch']}) [{summary['seconds']}s]"
    )


def _epoch_table(progress: Progress, selected_by: str) -> str:
    rows = "\n".join(
        f"| {h['epoch']} | {h['val_loss']:.4f} | {h['val_reward']:.4f} |"
        if "val_reward" in h
        else f"| {h['epoch']} | {h['val_loss']:.4f} | - |"
        for h in progress.history
    )
    return (
        "## Validation per epoch (epoch 0 = base model)\n\n| epoch | val loss | val reward |\n|---|---|---|\n"
        f"{rows}\n\nKept: epoch {progress.best['epoch']} (by {selected_by})."
    )
