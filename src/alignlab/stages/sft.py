"""Stage: supervised fine-tuning on demonstrations (InstructGPT step 1).

Read top to bottom: config, data (chat-formatted, prompt masked), model, optimiser +
cosine schedule, resume, the epoch loop with per-epoch validation, final save.

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
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from alignlab.config import arg
from alignlab.data.chat import encode_example, encode_prompts
from alignlab.data.collate import collate_sft
from alignlab.data.length_groups import length_groups
from alignlab.data.load import load_demonstrations
from alignlab.distributed import make_accelerator, map_sharded, rank_share, reduce_sums
from alignlab.models.load import context_length, disable_dropout, load_causal_lm, load_tokenizer
from alignlab.models.lora import (
    LoraSettings,
    apply_lora,
    clear_model_files,
    is_adapter_folder,
    load_adapter_weights,
    save_model,
)
from alignlab.models.response_logits import response_lm_loss
from alignlab.outputs import MetricsLogger, atomic_write_json, write_model_card
from alignlab.rollout.generate import generate_responses
from alignlab.training import (
    DEFAULT_SEQ_CAP,
    checkpoint_exists,
    load_checkpoint,
    make_optimizer,
    read_trainer_state,
    resolve_device,
    save_checkpoint,
)


@dataclass
class SFTConfig:
    model: str = arg("runs/pretrain", "base model: hub id or local path of a causal LM (safetensors)")
    tokenizer: str = arg("", "tokenizer path or hub id; empty = the one saved with the model")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")
    data: str = arg(
        "runs/world/sft",
        "demonstrations: saved datasets folder, .jsonl/.parquet or hub id; prompt/completion or messages format",
    )
    train_split: str = arg("train", "split to train on")
    eval_split: str = arg("validation", "held-out split for validation loss and reward")
    eval_data: str = arg(
        "", "held-out demonstrations from another source (e.g. a second .jsonl); empty = data's eval_split"
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
    lr: float = arg(1e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = arg(0.1, "cosine decays to this fraction of lr (InstructGPT: 10%)")
    warmup_steps: int = arg(10, "linear warmup steps")
    weight_decay: float = arg(0.1, "AdamW weight decay on matrices")
    beta1: float = arg(0.9, "AdamW beta1")
    beta2: float = arg(0.95, "AdamW beta2")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0 = off)")
    val_prompts: int = arg(0, "validation prompts sampled for the validation reward each epoch (0 = all)")
    val_max_new_tokens: int = arg(32, "response length cap when sampling for the validation reward")
    val_temperature: float = arg(0.0, "sampling temperature for the validation reward (0 = greedy)")
    eval_batch_size: int = arg(64, "prompts per generation / evaluation batch")
    eval_base: bool = arg(True, "also evaluate the base model before training (epoch 0), for the record")
    log_interval: int = arg(10, "steps between metrics.jsonl lines")
    seed: int = arg(0, "seed for data order and sampling")
    device: str = arg("auto", "auto, cpu or cuda")
    resume: bool = arg(False, "continue from output_dir/checkpoint (saved after every epoch) if it exists")
    tensorboard: bool = arg(True, "also write TensorBoard logs to output_dir/tb")
    lora: LoraSettings = arg(
        factory=LoraSettings, help="LoRA adapters through peft (--lora.r 8); r=0 trains all weights"
    )
    output_dir: str = arg("runs/sft", "where the selected model, metrics and checkpoints go")


PRESETS = {
    "smoke": {"epochs": 3, "batch_size": 16, "warmup_steps": 2, "log_interval": 2, "val_max_new_tokens": 24},
    "default": {},
}


# --------------------------------------------------------------------------- data


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
            raise ValueError(
                f"judge: 'world' needs world_dir with a world.json ({cfg.world_dir!r}) and validation rows "
                f"with the world's 'task' and 'meta' columns (columns: {val_ds.column_names})"
            )
        judge = WorldJudge(cfg.world_dir)
        return "world", judge.gold
    if choice == "reward_model":
        if not cfg.reward_model:
            raise ValueError("judge: 'reward_model' needs reward_model (a path or hub id)")
        rm = RewardModelJudge(cfg.reward_model, device=device, trust_remote_code=cfg.trust_remote_code)
        return "reward_model", rm.score
    return "loss", None


# --------------------------------------------------------------------------- run


def run(cfg: SFTConfig) -> dict:
    t_start = time.time()
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(resolve_device(cfg.device), "sft")
    is_main = accelerator.is_main_process
    n_proc = accelerator.num_processes
    micro = cfg.micro_batch_size or max(1, cfg.batch_size // n_proc)
    if cfg.epochs < 1:
        raise ValueError(f"epochs: must be >= 1, got {cfg.epochs}")
    if cfg.batch_size % (micro * n_proc):
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be a multiple of micro_batch_size x processes ({micro} x {n_proc})"
        )

    # ---- model and tokenizer (a pad distinct from EOS; embeddings grow if the tokenizer did)
    tok = load_tokenizer(cfg.tokenizer or cfg.model, cfg.trust_remote_code)
    model = load_causal_lm(cfg.model, cfg.trust_remote_code)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    disable_dropout(model)
    seq_len = cfg.seq_len or min(context_length(model), DEFAULT_SEQ_CAP)
    model = apply_lora(model, cfg.lora, "CAUSAL_LM")  # unchanged when lora.r == 0

    # ---- data: chat template, prompt masked with -100, EOS after the response
    _, train_prompts, train_responses = load_demonstrations(cfg.data, cfg.train_split)
    val_ds, val_prompts, val_responses = load_demonstrations(cfg.eval_data or cfg.data, cfg.eval_split)
    train_ex = [encode_example(tok, p, r, seq_len) for p, r in zip(train_prompts, train_responses)]
    val_ex = [encode_example(tok, p, r, seq_len) for p, r in zip(val_prompts, val_responses)]
    n_train = len(train_ex)
    batch = min(cfg.batch_size, n_train)
    steps_per_epoch = n_train // batch
    total_steps = cfg.epochs * steps_per_epoch

    # validation prompts for the reward (a fixed, seeded subset if val_prompts is set)
    judge_name, judge = make_judge(cfg, val_ds, accelerator.device)
    gen_idx = list(range(len(val_ds)))
    if cfg.val_prompts and cfg.val_prompts < len(gen_idx):
        g = torch.Generator().manual_seed(cfg.seed)
        gen_idx = sorted(torch.randperm(len(gen_idx), generator=g)[: cfg.val_prompts].tolist())
    gen_records = [{**val_ds[i], "prompt": val_prompts[i]} for i in gen_idx]  # messages rows: the context
    max_prompt = max(1, min(seq_len, context_length(model), DEFAULT_SEQ_CAP) - cfg.val_max_new_tokens)
    gen_prompt_ids = encode_prompts(tok, [val_prompts[i] for i in gen_idx], max_prompt)

    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, min(cfg.warmup_steps, total_steps), total_steps, min_lr_rate=cfg.min_lr_ratio
    )

    # ---- resume (epoch granularity)
    ckpt_dir = out / "checkpoint"
    start_epoch, history, best = 0, [], {"epoch": None, "metric": -math.inf}
    if cfg.resume and checkpoint_exists(ckpt_dir):
        start_epoch = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
        state = read_trainer_state(ckpt_dir)
        history, best = state["history"], state["best"]
        if is_main:
            print(f"resumed from {ckpt_dir} after epoch {start_epoch} (best so far: epoch {best['epoch']})")
    if is_main:
        for stale in out.glob("best-epoch*"):  # best weights written after the checkpoint we resume from
            if stale.name != f"best-epoch{best['epoch']}":
                shutil.rmtree(stale)
    model, optimizer = accelerator.prepare(model, optimizer)
    resumed = cfg.resume and start_epoch > 0
    if is_main and not resumed and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    logger = (
        MetricsLogger(out, cfg.tensorboard, truncate_after_step=start_epoch * steps_per_epoch if resumed else None)
        if is_main
        else None
    )

    def val_loss() -> float:  # each rank takes every n-th eval batch; token sums are reduced
        model.eval()
        nll, n_tok = 0.0, 0
        with torch.no_grad():
            for i in rank_share(range(0, len(val_ex), cfg.eval_batch_size), accelerator):
                b = {
                    k: v.to(accelerator.device)
                    for k, v in collate_sft(val_ex[i : i + cfg.eval_batch_size], tok.pad_token_id).items()
                }
                # the bare model: ranks run different numbers of batches, so no DDP wrapper hooks here
                loss, k = response_lm_loss(
                    accelerator.unwrap_model(model), b["input_ids"], b["attention_mask"], b["labels"]
                )
                nll += loss.item() * k
                n_tok += k
        model.train()
        sums = reduce_sums(accelerator, {"nll": nll, "n_tok": n_tok})
        return sums["nll"] / max(sums["n_tok"], 1)

    def judged_samples(rows: list[int]) -> list[tuple[float, bool, int]]:
        """(judge score, ended with EOS, response tokens) of validation prompts ``rows`` (this rank's share)."""
        if not rows:
            return []
        roll = generate_responses(
            accelerator.unwrap_model(model),
            tok,
            [gen_prompt_ids[i] for i in rows],
            cfg.val_max_new_tokens,
            temperature=cfg.val_temperature,
            batch_size=cfg.eval_batch_size,
            seed=cfg.seed + accelerator.process_index,
        )
        scores = judge([gen_records[i] for i in rows], roll.texts)
        return list(zip(scores, roll.ended_with_eos.tolist(), roll.response_mask.sum(-1).tolist()))

    def val_reward() -> dict[str, float]:
        if judge is None:
            return {}
        res = map_sharded(accelerator, judged_samples, range(len(gen_prompt_ids)))  # same numbers on every rank
        return {
            "val_reward": sum(r[0] for r in res) / len(res),
            "val_eos_rate": sum(float(r[1]) for r in res) / len(res),
            "val_response_tokens": sum(float(r[2]) for r in res) / len(res),
        }

    def evaluate(epoch: int, step: int) -> dict[str, Any]:
        rec = {"epoch": epoch, "val_loss": val_loss(), **val_reward()}
        if is_main:
            logger.log(step, **rec)
            extra = f", val reward {rec['val_reward']:.4f} ({judge_name})" if "val_reward" in rec else ""
            print(f"sft epoch {epoch}{' (base model)' if epoch == 0 else ''}: val loss {rec['val_loss']:.4f}{extra}")
        return rec

    if cfg.eval_base and not history:
        history.append(evaluate(0, 0))

    # ---- the epoch loop
    model.train()
    bar = tqdm(
        total=total_steps, initial=start_epoch * steps_per_epoch, desc="sft", disable=not is_main, dynamic_ncols=True
    )
    t_last, last_logged, train_loss = time.time(), start_epoch * steps_per_epoch, float("nan")
    for epoch in range(start_epoch + 1, cfg.epochs + 1):
        perm = torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).tolist()
        for s in range(steps_per_epoch):
            step = (epoch - 1) * steps_per_epoch + s + 1
            global_idx = perm[s * batch : (s + 1) * batch]
            idx = rank_share(global_idx, accelerator)  # this rank's share of the global batch
            # micro-batches, each run in a few passes of similar lengths (same loss and gradient, less padding)
            chunks = [
                [chunk[i] for i in group]
                for k in range(0, len(idx), micro)
                for chunk in [idx[k : k + micro]]
                for group in length_groups([len(train_ex[j]["input_ids"]) for j in chunk])
            ]
            # token-weighted mean over the GLOBAL batch: x n_proc because DDP averages gradients over ranks
            n_tok = sum(sum(1 for t in train_ex[j]["labels"][1:] if t != -100) for j in global_idx) / n_proc
            loss_sum = torch.zeros((), device=accelerator.device)
            for m, chunk in enumerate(chunks):
                b = {
                    k: v.to(accelerator.device)
                    for k, v in collate_sft([train_ex[j] for j in chunk], tok.pad_token_id).items()
                }
                ctx = accelerator.no_sync(model) if m < len(chunks) - 1 else nullcontext()
                with ctx:
                    # = masked_lm_loss(model(...).logits, labels), with logits only where a response token is predicted
                    loss, k = response_lm_loss(model, b["input_ids"], b["attention_mask"], b["labels"])
                    loss = loss * (k / max(n_tok, 1))  # token-weighted over the step
                    accelerator.backward(loss)
                loss_sum += loss.detach()
            grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            train_loss = accelerator.reduce(loss_sum, "mean").item()
            if not math.isfinite(train_loss):
                raise FloatingPointError(f"sft: loss became {train_loss} at step {step}; lower lr (now {cfg.lr})")
            if is_main and (step % cfg.log_interval == 0 or s == steps_per_epoch - 1):
                now = time.time()
                logger.log(
                    step,
                    loss=train_loss,
                    lr=scheduler.get_last_lr()[0],
                    epoch=epoch,
                    grad_norm=float(grad_norm) if grad_norm is not None else None,
                    seconds_per_step=(now - t_last) / max(step - last_logged, 1),
                )
                t_last, last_logged = now, step
            bar.update(1)
            bar.set_postfix(epoch=epoch, loss=f"{train_loss:.3f}")

        # ---- validation, model selection, checkpoint
        rec = evaluate(epoch, epoch * steps_per_epoch)
        history.append(rec)
        metric = rec["val_reward"] if judge is not None else -rec["val_loss"]
        accelerator.wait_for_everyone()
        if metric > best["metric"]:
            best = {"epoch": epoch, "metric": metric}
            if is_main:
                _save_weights(accelerator.unwrap_model(model), out / f"best-epoch{epoch}")
        if is_main:
            if epoch < cfg.epochs:
                save_checkpoint(
                    ckpt_dir,
                    accelerator.unwrap_model(model),
                    optimizer,
                    scheduler,
                    epoch,
                    extra={"history": history, "best": best},
                )
            for stale in out.glob("best-epoch*"):
                if stale.name != f"best-epoch{best['epoch']}":
                    shutil.rmtree(stale)
        accelerator.wait_for_everyone()
    bar.close()

    # ---- save the selected epoch's model (safetensors) + tokenizer
    summary: dict[str, Any] = {}
    if is_main:
        unwrapped = accelerator.unwrap_model(model)
        best_dir = out / f"best-epoch{best['epoch']}"
        if best_dir.is_dir() and is_adapter_folder(best_dir):
            load_adapter_weights(unwrapped, best_dir)
        elif best_dir.is_dir():
            from safetensors.torch import load_file

            unwrapped.load_state_dict(load_file(str(best_dir / "model.safetensors")), strict=False)
        for key in ("bos_token_id", "eos_token_id", "pad_token_id"):
            setattr(unwrapped.generation_config, key, getattr(tok, key))
        tmp = out / ".final.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_model(unwrapped, tmp, cfg.lora, tok)  # full weights, the LoRA adapter, or the merged model
        clear_model_files(out)  # a full model and an adapter must not sit side by side
        for f in tmp.iterdir():
            f.replace(out / f.name)
        tmp.rmdir()
        if best_dir.is_dir():
            shutil.rmtree(best_dir)

        trained = [h for h in history if h["epoch"] >= 1]
        base = next((h for h in history if h["epoch"] == 0), None)
        chosen = next(h for h in trained if h["epoch"] == best["epoch"])
        selected_by = "val_reward" if judge is not None else "val_loss"
        summary = {
            "chosen_epoch": best["epoch"],
            "selected_by": selected_by,
            "judge": judge_name,
            "epochs": cfg.epochs,
            "final_val_loss": round(trained[-1]["val_loss"], 4),
            "best_val_loss": round(min(h["val_loss"] for h in trained), 4),
            "best_val_loss_epoch": min(trained, key=lambda h: h["val_loss"])["epoch"],
            "chosen_val_loss": round(chosen["val_loss"], 4),
            "best_val_reward": round(chosen["val_reward"], 4) if judge is not None else None,
            "final_val_reward": round(trained[-1]["val_reward"], 4) if judge is not None else None,
            "base_val_loss": round(base["val_loss"], 4) if base else None,
            "base_val_reward": round(base["val_reward"], 4) if base and judge is not None else None,
            "chosen_val_eos_rate": round(chosen.get("val_eos_rate", float("nan")), 4) if judge is not None else None,
            "history": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in h.items()} for h in history],
            "train_examples": n_train,
            "val_examples": len(val_ex),
            "val_reward_prompts": len(gen_idx),
            "steps": total_steps,
            "seconds": round(time.time() - t_start, 1),
        }
        samples = generate_responses(
            unwrapped,
            tok,
            gen_prompt_ids[:8],
            cfg.val_max_new_tokens,
            temperature=cfg.val_temperature,
            batch_size=8,
            seed=cfg.seed,
        )
        atomic_write_json(
            out / "samples.json",
            [
                {"prompt": p if isinstance(p, str) else p[-1]["content"], "response": t}
                for p, t in zip([val_prompts[i] for i in gen_idx[:8]], samples.texts)
            ],
        )
        rows = "\n".join(
            f"| {h['epoch']} | {h['val_loss']:.4f} | {h['val_reward']:.4f} |"
            if "val_reward" in h
            else f"| {h['epoch']} | {h['val_loss']:.4f} | - |"
            for h in history
        )
        table = (
            "## Validation per epoch (epoch 0 = base model)\n\n| epoch | val loss | val reward |\n|---|---|---|\n"
            f"{rows}\n\nKept: epoch {best['epoch']} (by {selected_by})."
        )
        print(
            f"sft: kept epoch {best['epoch']} of {cfg.epochs} by {selected_by}; "
            + (
                f"val reward {summary['best_val_reward']:.4f} (base {summary['base_val_reward']}), "
                if judge is not None
                else ""
            )
            + f"val loss {summary['chosen_val_loss']:.4f} (lowest {summary['best_val_loss']:.4f} at epoch "
            f"{summary['best_val_loss_epoch']}) [{summary['seconds']}s]"
        )
        write_model_card(out, "sft", summary, extra=table)
        logger.close()
    accelerator.wait_for_everyone()
    return summary


def _save_weights(model, folder: Path) -> None:
    """save_pretrained to a temp name, then rename: a kill never leaves a half-written best model."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp, safe_serialization=True)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.replace(folder)
