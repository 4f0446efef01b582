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
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from alignlab import fsdp, training
from alignlab.config import arg
from alignlab.data.heldout import (
    DEFAULT_EVAL_FRACTION,
    EVAL_FRACTION_HELP,
    HeldoutInfo,
    load_train_eval,
    no_eval_message,
)
from alignlab.data.packing import block_indices, packed_blocks, unigram_entropy
from alignlab.distributed import make_accelerator
from alignlab.errors import ConfigError, DataError
from alignlab.faults import fault_point
from alignlab.models.llama import build_llama, llama_config, non_embedding_params
from alignlab.models.load import load_causal_lm, load_tokenizer
from alignlab.outputs import atomic_write_json, write_model_card
from alignlab.sections import ModelSource, OptimSettings, RunSettings


@dataclass
class ModelConfig:
    init_from: str | None = arg(
        None, "hub id or local path of a model to continue from; empty = a new Llama of the size below"
    )
    d_model: int = arg(128, "hidden size of a new model")
    n_layer: int = arg(4, "transformer layers of a new model")
    n_head: int = arg(4, "attention heads of a new model")
    d_ff: int = arg(384, "MLP width of a new model")


@dataclass
class PretrainConfig:
    # trust_remote_code moved from the model section to the shared source section
    RENAMED: ClassVar[dict[str, str]] = {"model.trust_remote_code": "source.trust_remote_code"}

    data: str = arg("runs/world/corpus", "text data set: saved datasets folder, .jsonl/.parquet file or hub id")
    text_column: str = arg("text", "column holding the documents")
    train_split: str = arg("train", "split to train on")
    eval_split: str = arg("validation", "held-out split for eval loss")
    eval_fraction: float = arg(DEFAULT_EVAL_FRACTION, EVAL_FRACTION_HELP.replace("prompt", "document"))
    model: ModelConfig = arg(factory=ModelConfig, help="model to train")
    seq_len: int = arg(128, "tokens per packed training block")
    batch_size: int = arg(32, "blocks per optimiser step (global, across processes)")
    micro_batch_size: int = arg(
        0, "blocks per forward pass (gradient accumulation); 0 = all of a process's share, batch_size / processes"
    )
    max_steps: int = arg(700, "optimiser steps")
    eval_interval: int = arg(100, "steps between eval-loss measurements")
    eval_blocks: int = arg(256, "held-out blocks used for eval loss")
    run: RunSettings = arg(factory=lambda: RunSettings(checkpoint_interval=100), help=RunSettings.HELP)
    source: ModelSource = arg(
        factory=lambda: ModelSource(tokenizer="runs/tokenizer"),
        help=ModelSource.HELP + " (tokenizer: empty = the one saved with model.init_from)",
    )
    optim: OptimSettings = arg(
        factory=lambda: OptimSettings(lr=3e-3, weight_decay=0.1, warmup_steps=40), help=OptimSettings.HELP
    )
    pack_cache: str = arg(
        "",
        "folder that keeps the tokenized, packed corpus for later runs on the same data (a scaling sweep); "
        "empty = tokenize every run",
    )
    output_dir: str = arg("runs/pretrain", "where the model, metrics and checkpoints go")


PRESETS = {
    "smoke": {
        "model": {"d_model": 64, "n_layer": 2, "n_head": 2, "d_ff": 192},
        "seq_len": 64,
        "batch_size": 16,
        "max_steps": 150,
        "optim": {"warmup_steps": 10},
        "eval_interval": 50,
        "eval_blocks": 32,
        "run": {"checkpoint_interval": 50, "log_interval": 10},
    },
    "default": {},
}


# ------------------------------------------------------------------------------ setup


@dataclass
class Corpus:
    tok: Any
    train_blocks: torch.Tensor  # [n, seq_len] packed training blocks
    eval_blocks: torch.Tensor  # [eval_blocks, seq_len] held-out blocks for the eval loss
    sample_docs: list[str]  # held-out documents whose first words the final model continues
    heldout: HeldoutInfo  # where the held-out documents came from (summary.json's heldout)


@dataclass
class Setup:
    """Everything the loop and the finish use; ``model`` and ``optimizer`` are the accelerator's."""

    cfg: PretrainConfig
    accelerator: Any
    micro: int  # blocks per forward pass
    corpus: Corpus
    model: Any
    optimizer: Any
    scheduler: Any
    start: int  # the step this run starts from (> 0 on a resume)
    n_params: int  # non-embedding parameters
    guard: training.NonFiniteGuard
    sharded: bool = False  # FSDP2 (alignlab/fsdp.py): every forward and every save involves all ranks

    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process


def load_corpus(cfg: PretrainConfig) -> Corpus:
    """Documents -> packed blocks of seq_len tokens."""
    tok_path = cfg.source.tokenizer or cfg.model.init_from
    if not tok_path:
        raise ConfigError(
            "tokenizer: give a tokenizer path (source.tokenizer), or model.init_from to use the model's own"
        )
    tok = load_tokenizer(tok_path, cfg.source.trust_remote_code)
    # the eval loss is the run's only measure of progress, and its samples continue held-out documents
    split = load_train_eval(
        cfg.data,
        cfg.train_split,
        cfg.eval_split,
        cfg.eval_fraction,
        column=cfg.text_column,
        text=True,
        column_key="text_column",
    )
    if split.eval is None:
        raise DataError(no_eval_message("pretrain", cfg.data, split.info))
    train_ds, eval_ds = split.train, split.eval
    train_blocks = packed_blocks(train_ds, cfg.text_column, tok, cfg.seq_len, cfg.pack_cache)
    eval_blocks = packed_blocks(eval_ds, cfg.text_column, tok, cfg.seq_len, cfg.pack_cache)[: cfg.eval_blocks]
    return Corpus(tok, train_blocks, eval_blocks, list(eval_ds[cfg.text_column][:3]), split.info)


def build_model(cfg: PretrainConfig, tok):
    """Continue a given model, or a new small Llama from a transformers config."""
    if cfg.model.init_from:
        return load_causal_lm(cfg.model.init_from, cfg.source.trust_remote_code)
    mc = cfg.model
    config = llama_config(
        len(tok),
        mc.d_model,
        mc.n_layer,
        mc.n_head,
        mc.d_ff,
        cfg.seq_len,
        tok.bos_token_id,
        tok.eos_token_id,
        tok.pad_token_id,
    )
    return build_llama(config, seed=cfg.run.seed)


def setup(cfg: PretrainConfig) -> Setup:
    accelerator = make_accelerator(training.resolve_device(cfg.run.device), "pretrain")
    sharded = fsdp.requested(accelerator, cfg.run.fsdp)
    if sharded:
        fsdp.check_supported(accelerator, "pretrain")
    world = accelerator.num_processes
    micro = cfg.micro_batch_size or max(1, cfg.batch_size // world)
    if cfg.batch_size % (micro * world):
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) must be a multiple of micro_batch_size x processes ({micro} x {world})"
        )
    corpus = load_corpus(cfg)
    if accelerator.is_main_process:
        print(f"pretrain: {corpus.heldout.line()}")
    model = build_model(cfg, corpus.tok)
    n_params = non_embedding_params(model)
    if sharded:  # before the optimiser, which must hold the sharded parameters
        fsdp.shard(model, accelerator.device)
        fsdp.write_shard_report(model, "pretrain")
    optimizer, scheduler = training.optimizer_and_schedule(model, cfg.optim, cfg.max_steps)
    ckpt_dir = Path(cfg.output_dir) / "checkpoint"
    start, _ = training.resume_step(
        ckpt_dir, cfg.run.resume, model, optimizer, scheduler, accelerator.is_main_process, sharded
    )
    if not sharded:
        model, optimizer = accelerator.prepare(model, optimizer)
    guard = training.NonFiniteGuard("pretrain", ckpt_dir, cfg.run.skip_nonfinite)
    return Setup(cfg, accelerator, micro, corpus, model, optimizer, scheduler, start, n_params, guard, sharded)


# ------------------------------------------------------------------------------- loop


@training.with_run_threads
def run(cfg: PretrainConfig) -> dict:
    t_start = time.time()
    s = setup(cfg)
    logger = training.open_metrics(Path(cfg.output_dir), cfg.run.tensorboard, s.start, s.is_main)
    s.model.train()
    tokens_per_step = cfg.batch_size * cfg.seq_len
    bar = tqdm(
        range(s.start, cfg.max_steps),
        initial=s.start,
        total=cfg.max_steps,
        desc="pretrain",
        disable=not s.is_main,
        dynamic_ncols=True,
    )
    t_last, train_loss, eval_loss = time.time(), float("nan"), float("nan")
    for step in bar:
        train_loss, grad_norm = train_step(s, step)
        done = step + 1
        lr = s.scheduler.get_last_lr()[0]
        if s.is_main and (done % cfg.run.log_interval == 0 or done == cfg.max_steps):
            now = time.time()
            logger.log(
                done,
                loss=train_loss,
                lr=lr,
                grad_norm=float(grad_norm) if grad_norm is not None else None,
                tokens=done * tokens_per_step,
                tokens_per_sec=cfg.run.log_interval * tokens_per_step / max(now - t_last, 1e-9),
            )
            t_last = now
        if done % cfg.eval_interval == 0 or done == cfg.max_steps:
            eval_loss = evaluate(s)
            if s.is_main:
                logger.log(done, eval_loss=eval_loss)
        if s.is_main:
            bar.set_postfix(loss=f"{train_loss:.3f}", eval=f"{eval_loss:.3f}", lr=f"{lr:.1e}")
        if cfg.run.checkpoint_interval and done % cfg.run.checkpoint_interval == 0 and done < cfg.max_steps:
            s.accelerator.wait_for_everyone()
            ckpt_dir = Path(cfg.output_dir) / "checkpoint"
            if s.sharded:  # every rank writes its shards
                training.save_sharded_checkpoint(s.accelerator, ckpt_dir, s.model, s.optimizer, s.scheduler, done)
            elif s.is_main:
                model = s.accelerator.unwrap_model(s.model)
                training.save_checkpoint(ckpt_dir, model, s.optimizer, s.scheduler, done)
        fault_point("step")
    bar.close()
    final_eval = evaluate(s) if s.start >= cfg.max_steps or math.isnan(eval_loss) else eval_loss
    return finish(s, logger, train_loss, final_eval, t_start)


def train_step(s: Setup, step: int) -> tuple[float, Any]:
    """One optimiser step on global batch ``step`` (this rank's share, in micro-batches); the mean
    loss over the ranks and the gradient norm."""
    cfg, acc, micro = s.cfg, s.accelerator, s.micro
    idx = block_indices(step, cfg.batch_size, s.corpus.train_blocks.shape[0], cfg.run.seed)
    idx = idx[acc.process_index :: acc.num_processes]  # this rank's share of the global batch
    n_micro = len(idx) // micro
    loss_sum = torch.zeros((), device=acc.device)
    for m in range(n_micro):
        x = s.corpus.train_blocks[idx[m * micro : (m + 1) * micro]].to(acc.device)
        # gradients are all-reduced once, on the last micro-batch
        with acc.no_sync(s.model) if m < n_micro - 1 else nullcontext():
            loss = s.model(input_ids=x, labels=x).loss / n_micro
            acc.backward(loss)
        loss_sum += loss.detach()
    loss = acc.reduce(loss_sum, "mean").item()
    grad_norm, _ = training.guarded_step(
        acc, s.model.parameters(), s.optimizer, s.scheduler, cfg.optim.grad_clip, s.guard, step + 1, loss=loss
    )
    return loss, grad_norm


def evaluate(s: Setup) -> float:
    """Mean loss per token on the held-out blocks."""
    blocks, micro, model = s.corpus.eval_blocks, s.micro, s.model
    model.eval()
    losses = []
    with torch.no_grad():
        for i in range(0, blocks.shape[0], micro):
            x = blocks[i : i + micro].to(s.accelerator.device)
            losses.append(model(input_ids=x, labels=x).loss.float() * x.shape[0])
    model.train()
    return (torch.stack(losses).sum() / blocks.shape[0]).item()


# ----------------------------------------------------------------------------- finish


def finish(s: Setup, logger, train_loss: float, final_eval: float, t_start: float) -> dict:
    """Rank 0: the model (with generation ids set), a sampled peek, the summary and model card. Sharded, the
    model is gathered (every rank) and published by rank 0, which then samples from the published copy."""
    cfg, tok, out = s.cfg, s.corpus.tok, Path(s.cfg.output_dir)
    summary: dict[str, Any] = {}
    model = s.accelerator.unwrap_model(s.model)
    model.generation_config.bos_token_id = tok.bos_token_id
    model.generation_config.eos_token_id = tok.eos_token_id
    model.generation_config.pad_token_id = tok.pad_token_id
    gathered = fsdp.Gathered(model) if s.sharded else None  # collective
    if s.is_main:
        unigram = unigram_entropy(s.corpus.train_blocks)
        training.publish_model(out, model if gathered is None else gathered, tok)
        if gathered is not None:  # a whole copy to sample from, as published
            model = load_causal_lm(str(out))
        samples = sample_text(model, tok, s.corpus.sample_docs, s.accelerator.device, seed=cfg.run.seed)
        atomic_write_json(out / "samples.json", samples)
        tokens_per_step = cfg.batch_size * cfg.seq_len
        summary = {
            "final_eval_loss": round(final_eval, 4),
            "final_train_loss": round(train_loss, 4) if s.start < cfg.max_steps else None,
            "unigram_entropy": round(unigram, 4),
            "eval_perplexity": round(math.exp(final_eval), 3),
            "non_embedding_params": s.n_params,
            "total_params": sum(p.numel() for p in model.parameters()),
            "tokens_seen": cfg.max_steps * tokens_per_step,
            "train_tokens": int(s.corpus.train_blocks.numel()),
            "steps": cfg.max_steps,
            "seconds": round(time.time() - t_start, 1),
            "heldout": s.corpus.heldout.as_dict(),
        }
        print(
            f"pretrain: held-out loss {final_eval:.3f} nats/token vs unigram entropy {unigram:.3f} "
            f"({s.n_params / 1e6:.2f}M non-embedding params, {summary['seconds']}s)"
        )
        for x in samples:
            print(f"  sample: {x['prompt']!r} -> {x['continuation']!r}")
        write_model_card(out, "pretrain", summary)
        logger.close()
    s.accelerator.wait_for_everyone()
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
