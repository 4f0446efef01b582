"""Stage: pretrain a causal LM on a text corpus (the base model every later stage starts from).

Read top to bottom: config, data (packed blocks), model, optimiser + schedule, resume,
the training loop, final save. Resuming is exact: the data order is a function of the
step alone (see data/packing.py), there is no dropout, and a checkpoint holds the
weights, the optimiser and scheduler state and the RNG state, so a run killed after
a checkpoint and resumed produces the same loss curve as one that never stopped.
"""

from __future__ import annotations

import math
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from alignlab.config import arg
from alignlab.data.load import load_dataset_any
from alignlab.data.packing import block_indices, pack_documents, unigram_entropy
from alignlab.distributed import make_accelerator
from alignlab.models.llama import build_llama, llama_config, non_embedding_params
from alignlab.models.load import load_causal_lm, load_tokenizer
from alignlab.outputs import MetricsLogger, atomic_write_json, write_model_card
from alignlab.training import checkpoint_exists, load_checkpoint, make_optimizer, resolve_device, save_checkpoint


@dataclass
class ModelConfig:
    init_from: str | None = arg(
        None, "hub id or local path of a model to continue from; empty = a new Llama of the size below"
    )
    trust_remote_code: bool = arg(
        False, "allow custom modelling code from the hub (off: only built-in transformers classes)"
    )
    d_model: int = arg(128, "hidden size of a new model")
    n_layer: int = arg(4, "transformer layers of a new model")
    n_head: int = arg(4, "attention heads of a new model")
    d_ff: int = arg(384, "MLP width of a new model")


@dataclass
class PretrainConfig:
    data: str = arg("runs/world/corpus", "text data set: saved datasets folder, .jsonl/.parquet file or hub id")
    text_column: str = arg("text", "column holding the documents")
    train_split: str = arg("train", "split to train on")
    eval_split: str = arg("validation", "held-out split for eval loss")
    tokenizer: str = arg("runs/tokenizer", "tokenizer path or hub id; empty = the one saved with model.init_from")
    model: ModelConfig = arg(factory=ModelConfig, help="model to train")
    seq_len: int = arg(128, "tokens per packed training block")
    batch_size: int = arg(32, "blocks per optimiser step (global, across processes)")
    micro_batch_size: int = arg(
        0, "blocks per forward pass (gradient accumulation); 0 = all of a process's share, batch_size / processes"
    )
    max_steps: int = arg(700, "optimiser steps")
    lr: float = arg(3e-3, "peak learning rate (AdamW)")
    min_lr_ratio: float = arg(0.1, "cosine decays to this fraction of lr")
    warmup_steps: int = arg(40, "linear warmup steps")
    weight_decay: float = arg(0.1, "AdamW weight decay on matrices (not norms/biases)")
    beta1: float = arg(0.9, "AdamW beta1")
    beta2: float = arg(0.95, "AdamW beta2")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0 = off)")
    eval_interval: int = arg(100, "steps between eval-loss measurements")
    eval_blocks: int = arg(256, "held-out blocks used for eval loss")
    checkpoint_interval: int = arg(100, "steps between resumable checkpoints (0 = only at the end)")
    log_interval: int = arg(10, "steps between metrics.jsonl lines")
    seed: int = arg(0, "seed for initialisation and data order")
    device: str = arg("auto", "auto, cpu or cuda")
    resume: bool = arg(False, "continue from output_dir/checkpoint if it exists")
    tensorboard: bool = arg(True, "also write TensorBoard logs to output_dir/tb")
    output_dir: str = arg("runs/pretrain", "where the model, metrics and checkpoints go")


PRESETS = {
    "smoke": {
        "model": {"d_model": 64, "n_layer": 2, "n_head": 2, "d_ff": 192},
        "seq_len": 64,
        "batch_size": 16,
        "max_steps": 150,
        "warmup_steps": 10,
        "eval_interval": 50,
        "eval_blocks": 32,
        "checkpoint_interval": 50,
        "log_interval": 10,
    },
    "default": {},
}


def run(cfg: PretrainConfig) -> dict:
    t_start = time.time()
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(resolve_device(cfg.device), "pretrain")
    is_main = accelerator.is_main_process
    world = accelerator.num_processes
    micro = cfg.micro_batch_size or max(1, cfg.batch_size // world)
    if cfg.batch_size % (micro * world):
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be a multiple of micro_batch_size x processes ({micro} x {world})"
        )

    # ---- data: documents -> packed blocks of seq_len tokens
    tok_path = cfg.tokenizer or cfg.model.init_from
    if not tok_path:
        raise ValueError("tokenizer: give a tokenizer path, or model.init_from to use the model's own")
    tok = load_tokenizer(tok_path, cfg.model.trust_remote_code)
    train_ds = load_dataset_any(cfg.data, cfg.train_split)
    eval_ds = load_dataset_any(cfg.data, cfg.eval_split)
    for name, ds in (("train", train_ds), ("eval", eval_ds)):
        if cfg.text_column not in ds.column_names:
            raise ValueError(f"{cfg.data} ({name} split): no column '{cfg.text_column}' (columns: {ds.column_names})")
    train_blocks = pack_documents(list(train_ds[cfg.text_column]), tok, cfg.seq_len)
    eval_blocks = pack_documents(list(eval_ds[cfg.text_column]), tok, cfg.seq_len)[: cfg.eval_blocks]
    n_blocks = train_blocks.shape[0]

    # ---- model: continue a given one, or a new small Llama from a transformers config
    if cfg.model.init_from:
        model = load_causal_lm(cfg.model.init_from, cfg.model.trust_remote_code)
    else:
        mc = cfg.model
        model = build_llama(
            llama_config(
                len(tok),
                mc.d_model,
                mc.n_layer,
                mc.n_head,
                mc.d_ff,
                cfg.seq_len,
                tok.bos_token_id,
                tok.eos_token_id,
                tok.pad_token_id,
            ),
            seed=cfg.seed,
        )
    n_params = non_embedding_params(model)
    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, cfg.warmup_steps, cfg.max_steps, min_lr_rate=cfg.min_lr_ratio
    )

    # ---- resume
    start_step = 0
    ckpt_dir = out / "checkpoint"
    if cfg.resume and checkpoint_exists(ckpt_dir):
        start_step = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
        if is_main:
            print(f"resumed from {ckpt_dir} at step {start_step}")
    model, optimizer = accelerator.prepare(model, optimizer)
    logger = (
        MetricsLogger(out, cfg.tensorboard, truncate_after_step=start_step if cfg.resume else None) if is_main else None
    )
    if is_main and not cfg.resume and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()  # a fresh run starts a fresh log
        logger = MetricsLogger(out, cfg.tensorboard)

    def evaluate() -> float:
        model.eval()
        losses = []
        with torch.no_grad():
            for i in range(0, eval_blocks.shape[0], micro):
                x = eval_blocks[i : i + micro].to(accelerator.device)
                losses.append(model(input_ids=x, labels=x).loss.float() * x.shape[0])
        model.train()
        return (torch.stack(losses).sum() / eval_blocks.shape[0]).item()

    # ---- the training loop
    model.train()
    tokens_per_step = cfg.batch_size * cfg.seq_len
    bar = tqdm(
        range(start_step, cfg.max_steps),
        initial=start_step,
        total=cfg.max_steps,
        desc="pretrain",
        disable=not is_main,
        dynamic_ncols=True,
    )
    t_last, eval_loss = time.time(), float("nan")
    for step in bar:
        idx = block_indices(step, cfg.batch_size, n_blocks, cfg.seed)
        idx = idx[accelerator.process_index :: world]  # this rank's share of the global batch
        n_micro = len(idx) // micro
        loss_sum = torch.zeros((), device=accelerator.device)
        for m in range(n_micro):
            x = train_blocks[idx[m * micro : (m + 1) * micro]].to(accelerator.device)
            ctx = accelerator.no_sync(model) if m < n_micro - 1 else nullcontext()
            with ctx:
                loss = model(input_ids=x, labels=x).loss / n_micro
                accelerator.backward(loss)
            loss_sum += loss.detach()
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1

        train_loss = accelerator.reduce(loss_sum, "mean").item()
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"pretrain: loss became {train_loss} at step {done}; lower lr (now {cfg.lr})")
        if is_main and (done % cfg.log_interval == 0 or done == cfg.max_steps):
            now = time.time()
            logger.log(
                done,
                loss=train_loss,
                lr=scheduler.get_last_lr()[0],
                grad_norm=float(grad_norm) if grad_norm is not None else None,
                tokens=done * tokens_per_step,
                tokens_per_sec=cfg.log_interval * tokens_per_step / max(now - t_last, 1e-9),
            )
            t_last = now
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            eval_loss = evaluate()
            if is_main:
                logger.log(done, eval_loss=eval_loss)
        if is_main:
            bar.set_postfix(loss=f"{train_loss:.3f}", eval=f"{eval_loss:.3f}", lr=f"{scheduler.get_last_lr()[0]:.1e}")
        if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and done < cfg.max_steps:
            accelerator.wait_for_everyone()
            if is_main:
                save_checkpoint(ckpt_dir, accelerator.unwrap_model(model), optimizer, scheduler, done)
    bar.close()

    # ---- final eval, reference point, save
    final_eval = evaluate() if start_step >= cfg.max_steps or math.isnan(eval_loss) else eval_loss
    summary = {}
    if is_main:
        unigram = unigram_entropy(train_blocks)
        unwrapped = accelerator.unwrap_model(model)
        unwrapped.generation_config.bos_token_id = tok.bos_token_id
        unwrapped.generation_config.eos_token_id = tok.eos_token_id
        unwrapped.generation_config.pad_token_id = tok.pad_token_id
        tmp = out / ".final.tmp"
        unwrapped.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        for f in tmp.iterdir():
            f.replace(out / f.name)
        tmp.rmdir()
        samples = sample_text(unwrapped, tok, list(eval_ds[cfg.text_column][:3]), accelerator.device, seed=cfg.seed)
        atomic_write_json(out / "samples.json", samples)
        summary = {
            "final_eval_loss": round(final_eval, 4),
            "final_train_loss": round(train_loss, 4) if start_step < cfg.max_steps else None,
            "unigram_entropy": round(unigram, 4),
            "eval_perplexity": round(math.exp(final_eval), 3),
            "non_embedding_params": n_params,
            "total_params": sum(p.numel() for p in unwrapped.parameters()),
            "tokens_seen": cfg.max_steps * tokens_per_step,
            "train_tokens": int(train_blocks.numel()),
            "steps": cfg.max_steps,
            "seconds": round(time.time() - t_start, 1),
        }
        print(
            f"pretrain: held-out loss {final_eval:.3f} nats/token vs unigram entropy {unigram:.3f} "
            f"({n_params / 1e6:.2f}M non-embedding params, {summary['seconds']}s)"
        )
        for s in samples:
            print(f"  sample: {s['prompt']!r} -> {s['continuation']!r}")
        write_model_card(out, "pretrain", summary)
        logger.close()
    accelerator.wait_for_everyone()
    return summary


def sample_text(
    model, tok, docs: list[str], device, seed: int, n_prompt_words: int = 4, max_new_tokens: int = 24
) -> list[dict]:
    """A sampled peek at what the model writes: continue the first words of held-out documents."""
    out = []
    model.eval()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for doc in docs:
            prompt = " ".join(doc.split()[:n_prompt_words])
            ids = [tok.bos_token_id] + tok(prompt, add_special_tokens=False)["input_ids"]
            x = torch.tensor([ids], device=device)
            with torch.no_grad():
                y = model.generate(
                    x,
                    attention_mask=torch.ones_like(x),
                    max_new_tokens=max_new_tokens,
                    do_sample=True,
                    temperature=0.7,
                    top_k=0,
                    pad_token_id=tok.pad_token_id,
                )
            out.append({"prompt": prompt, "continuation": tok.decode(y[0, len(ids) :], skip_special_tokens=True)})
    return out
