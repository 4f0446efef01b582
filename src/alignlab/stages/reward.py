"""Stage: train a reward model on ranked comparisons (InstructGPT step 2).

Read top to bottom: config, data (ranked lists; pairs are K=2), model (the SFT model
with a fresh scalar head, ``AutoModelForSequenceClassification(num_labels=1)``), the
step loop, evaluation against training labelers, held-out labelers and the noise-free
gold ordering, the demonstration shift, save.

One batch element is one PROMPT with all its K ranked responses: the B x K responses of
a batch are flattened into one right-padded batch (one forward pass per response), the
scores reshaped to [B, K], and ``ranking_loss`` averages -log sigmoid(r_w - r_l) over the
C(K, 2) pairs of each prompt, then over prompts (InstructGPT: shuffling pairs as separate
examples gives each response K-1 updates per epoch and overfits). Prompts may have
different K (padded slots are masked).

Ties: a ranked list may repeat a response (real samples repeat). Each list is collapsed
to its distinct responses, first copy keeping its place, before the loss: identical
strings get identical scores, so their pair carries no preference and only dilutes the
1/C(K,2) weight. A prompt with fewer than 2 distinct responses is skipped (counted in
the summary).

After training, the mean raw score of labeler DEMONSTRATIONS is stored as
``config.reward_shift`` so demonstrations score 0 on average (HF heads have no bias; see
models/reward_model.py); ``score``/``score_texts`` subtract it.

Accuracy ceiling: labels are noisy samples from labelers who disagree with each other, so
pairwise accuracy against them cannot much exceed their agreement rate; it is printed next
to it (the world's figure and the same quantity on these very pairs). Accuracy against the
world's noise-free gold ordering tells whether the RM learned the labelers' preferences.
"""

from __future__ import annotations

import itertools
import math
import random
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm
from transformers import get_cosine_with_min_lr_schedule_with_warmup

from alignlab.config import arg
from alignlab.data.chat import encode_prompt, encode_response
from alignlab.data.collate import collate_sequences
from alignlab.data.length_groups import length_groups
from alignlab.data.load import DataError, load_dataset_any, load_demonstrations, require_format
from alignlab.distributed import make_accelerator, map_sharded, rank_share
from alignlab.models.load import context_length, disable_dropout, load_tokenizer
from alignlab.models.lora import LoraSettings, apply_lora, clear_model_files, save_model
from alignlab.models.reward_model import load_reward_model, score_texts
from alignlab.outputs import MetricsLogger, atomic_write_text
from alignlab.rl.losses import ranking_loss
from alignlab.training import (
    DEFAULT_SEQ_CAP,
    checkpoint_exists,
    load_checkpoint,
    make_optimizer,
    resolve_device,
    save_checkpoint,
)


@dataclass
class RewardConfig:
    model: str = arg("runs/sft", "model the reward model starts from (the SFT model); a fresh scalar head is added")
    tokenizer: str = arg("", "tokenizer path or hub id; empty = the one saved with the model")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")
    data: str = arg(
        "runs/compare/comparisons",
        "comparisons: ranked (prompt, responses best->worst) or "
        "preference (prompt, chosen, rejected); saved datasets folder, .jsonl/.parquet or hub id",
    )
    train_split: str = arg("train", "split to train on")
    eval_split: str = arg("validation", "held-out prompts for accuracy (empty = no evaluation)")
    eval_data: str = arg(
        "", "held-out comparisons from another source (e.g. a second .jsonl); empty = data's eval_split"
    )
    world_dir: str | None = arg(
        "runs/world",
        "built-in world: held-out labelers, gold ordering and agreement "
        "rates for the report (used only if it exists and rows carry world metadata)",
    )
    demonstrations: str | None = arg(
        None, "labeler demonstrations (prompt/completion or messages) whose mean score becomes 0; empty = world_dir/sft"
    )
    demonstrations_split: str = arg("validation", "split of the demonstrations")
    max_prompts: int = arg(0, "train on at most this many prompts, a seeded subset (0 = all)")
    seq_len: int = arg(0, "max tokens per prompt+response (prompt cut from the left); 0 = the model's context length")
    epochs: int = arg(
        1,
        "passes over the comparisons (InstructGPT: 1, more overfits; on the world with perfect "
        "demonstrations a second pass narrowed the gap to the labelers by under a point, at ~80 s of a "
        "demo that must stay within 20 min)",
    )
    batch_size: int = arg(
        32,
        "PROMPTS per optimiser step, each with all its K responses (InstructGPT: 64; "
        "32 gives the small built-in data set more steps)",
    )
    micro_batch_size: int = arg(
        0, "prompts per forward pass (gradient accumulation); 0 = all of a process's share, batch_size / processes"
    )
    lr: float = arg(1e-3, "peak learning rate (AdamW; for the small built-in models -- use ~1e-5 for real LMs)")
    min_lr_ratio: float = arg(0.1, "cosine decays to this fraction of lr (InstructGPT: 10%)")
    warmup_steps: int = arg(5, "linear warmup steps")
    weight_decay: float = arg(0.0, "AdamW weight decay on matrices")
    beta1: float = arg(0.9, "AdamW beta1")
    beta2: float = arg(0.95, "AdamW beta2")
    grad_clip: float = arg(1.0, "clip the global gradient norm to this (0 = off)")
    eval_interval: int = arg(0, "steps between evaluations on the held-out prompts (0 = only at the end)")
    eval_batch_size: int = arg(128, "sequences per scoring batch")
    checkpoint_interval: int = arg(25, "steps between resumable checkpoints (0 = none)")
    log_interval: int = arg(5, "steps between metrics.jsonl lines")
    seed: int = arg(0, "seed for data order and the head's initialisation")
    device: str = arg("auto", "auto, cpu or cuda")
    resume: bool = arg(False, "continue from output_dir/checkpoint if it exists")
    tensorboard: bool = arg(True, "also write TensorBoard logs to output_dir/tb")
    lora: LoraSettings = arg(
        factory=LoraSettings,
        help="LoRA adapters through peft (--lora.r 8); the score head is trained in full; r=0 trains all weights",
    )
    output_dir: str = arg("runs/reward", "where the reward model, metrics and checkpoints go")


PRESETS = {
    "smoke": {
        "batch_size": 16,
        "lr": 1e-3,
        "warmup_steps": 2,
        "log_interval": 2,
        "checkpoint_interval": 0,
        "epochs": 1,
    },
    "default": {},
}


# --------------------------------------------------------------------------- data


def _text(x) -> str:
    """A response given as a string or as chat messages (TRL conversational format)."""
    if isinstance(x, list):
        return x[-1]["content"] if x else ""
    return x


def distinct(seq: list) -> list:
    """Order-preserving de-duplication (first copy keeps its place)."""
    seen, out = set(), []
    for x in seq:
        if x not in seen:
            seen.add(x)
            out.append(x)
    return out


def load_comparisons(source: str, split: str) -> tuple[list[dict[str, Any]], int]:
    """Rows {prompt, responses (distinct, best->worst), [heldout], [gold], record}; and how many were skipped.

    ``record`` is the original row (the world's labelers need its task/meta). Ranked data
    may carry ``responses_heldout`` (the same responses ranked by a held-out labeler) and
    ``gold`` (noise-free reward of each response, aligned with ``responses``).
    """
    ds = load_dataset_any(source, split)
    fmt = require_format(ds, ("ranked", "preference"), f"{source} ({split} split)")
    rows, skipped = [], 0
    for i, rec in enumerate(ds):
        if fmt == "ranked":
            ranked = [_text(r) for r in rec["responses"]]
        else:
            ranked = [_text(rec["chosen"]), _text(rec["rejected"])]
        if not all(isinstance(r, str) for r in ranked):
            raise DataError(f"{source} ({split} split) row {i}: responses must be strings or chat messages")
        resp = distinct(ranked)
        if len(resp) < 2:
            skipped += 1
            continue
        row: dict[str, Any] = {"prompt": rec["prompt"], "responses": resp, "record": rec}
        if rec.get("responses_heldout"):
            row["heldout"] = distinct([_text(r) for r in rec["responses_heldout"]])
        if rec.get("gold") and len(rec["gold"]) == len(ranked):
            first = {}
            for r, g in zip(ranked, rec["gold"]):
                first.setdefault(r, g)
            row["gold"] = [first[r] for r in resp]
        if rec.get("sources") and len(rec["sources"]) == len(ranked):  # which policy wrote each (compare stage)
            first_src: dict[str, int] = {}
            for r, src in zip(ranked, rec["sources"]):
                first_src.setdefault(r, src)
            row["sources"] = [first_src[r] for r in resp]
        rows.append(row)
    if not rows:
        raise DataError(f"{source} ({split} split): no row has two different responses to compare")
    return rows, skipped


def encode_sequences(tok, rows: list[dict], max_len: int) -> None:
    """Adds row["ids"]: one token list per response (chat-formatted prompt + response + EOS),
    formatted exactly as ``score_texts`` does, the prompt cut from the left if too long."""
    for row in rows:
        p = encode_prompt(tok, row["prompt"])
        seqs = []
        for r in row["responses"]:
            ids = encode_response(tok, r)
            if len(ids) >= max_len:
                ids = ids[: max_len // 2]
            seqs.append(p[-(max_len - len(ids)) :] + ids)
        row["ids"] = seqs


def forward_scores(model, rows: list[dict], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores [B, K_max] (one forward pass per response: the B x K_b responses, flattened, in a few
    passes of similar lengths to pad less) and valid [B, K_max]."""
    flat = [s for row in rows for s in row["ids"]]
    counts = [len(row["ids"]) for row in rows]
    groups = length_groups([len(s) for s in flat])
    pieces = []
    for idx in groups:
        batch = collate_sequences([flat[i] for i in idx], pad_token_id)
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        pieces.append(out.logits[:, 0])
    order = torch.tensor([i for idx in groups for i in idx])
    flat_scores = torch.cat(pieces)[torch.argsort(order).to(pieces[0].device)]  # back to row-major order
    k_max = max(counts)
    valid = torch.arange(k_max).unsqueeze(0) < torch.tensor(counts).unsqueeze(1)  # [B, K_max]
    rewards = torch.zeros(len(rows), k_max, dtype=flat_scores.dtype, device=flat_scores.device)
    rewards = rewards.masked_scatter(
        valid.to(flat_scores.device), flat_scores
    )  # row-major: row b's K_b scores in order
    return rewards, valid.to(flat_scores.device)


def rows_loss(model, rows: list[dict], pad_token_id: int, device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The stage's loss for a batch of prompts: ``ranking_loss`` over each prompt's C(K,2) pairs."""
    rewards, valid = forward_scores(model, rows, pad_token_id, device)
    loss, acc = ranking_loss(rewards, valid)
    return loss, acc, rewards


@torch.no_grad()
def score_rows(model, rows: list[dict], pad_token_id: int, device, batch_size: int) -> list[list[float]]:
    """Raw scores of every response of every row (same order as row['responses'])."""
    flat = [(i, s) for i, row in enumerate(rows) for s in row["ids"]]
    order = sorted(range(len(flat)), key=lambda j: len(flat[j][1]))  # similar lengths together: less padding
    scores = [0.0] * len(flat)
    for b in range(0, len(order), batch_size):
        idx = order[b : b + batch_size]
        batch = collate_sequences([flat[j][1] for j in idx], pad_token_id)
        out = model(input_ids=batch["input_ids"].to(device), attention_mask=batch["attention_mask"].to(device))
        for j, v in zip(idx, out.logits[:, 0].float().cpu().tolist()):
            scores[j] = v
    res, pos = [], 0
    for row in rows:
        res.append(scores[pos : pos + len(row["ids"])])
        pos += len(row["ids"])
    return res


def pair_accuracy(orders: list[list[str]], rows: list[dict], scores: list[list[float]]) -> tuple[float, int]:
    """Share of (better, worse) pairs of each ranking that the RM scores strictly in that order."""
    right = total = 0
    for order, row, sc in zip(orders, rows, scores):
        by_text = dict(zip(row["responses"], sc))
        for a, b in itertools.combinations(order, 2):
            total += 1
            right += by_text[a] > by_text[b]
    return (right / total if total else float("nan")), total


def gold_accuracy(rows: list[dict], scores: list[list[float]], eps: float = 1e-9) -> dict[str, float]:
    """RM vs the noise-free gold ordering (pairs whose gold differs), the training labels vs gold,
    and the CEILINGS: how often a perfect RM (the gold reward itself; ties count 1/2) would agree
    with the training / held-out labelers' sampled rankings of these very pairs."""
    rm_right = lab_right = total = 0
    ceil = {"train": [0.0, 0], "heldout": [0.0, 0]}
    for row, sc in zip(rows, scores):
        g = row.get("gold")
        if g is None:
            continue
        for i, j in itertools.combinations(range(len(g)), 2):  # i ranked above j by the training labeler
            d = g[i] - g[j]
            ceil["train"][0] += 1.0 if d > eps else (0.5 if abs(d) <= eps else 0.0)
            ceil["train"][1] += 1
            if abs(d) <= eps:
                continue
            total += 1
            rm_right += (sc[i] > sc[j]) == (d > 0)
            lab_right += d > 0
        gh = row.get("gold_heldout")
        if gh is not None and "heldout" in row:
            by_text = dict(zip(row["responses"], gh))
            for a, b in itertools.combinations(row["heldout"], 2):
                d = by_text[a] - by_text[b]
                ceil["heldout"][0] += 1.0 if d > eps else (0.5 if abs(d) <= eps else 0.0)
                ceil["heldout"][1] += 1
    out: dict[str, float] = {}
    if total:
        out.update({"val_accuracy_gold": rm_right / total, "labels_vs_gold": lab_right / total, "gold_pairs": total})
    for who in ("train", "heldout"):
        if ceil[who][1]:
            out[f"ceiling_{who}_labelers"] = ceil[who][0] / ceil[who][1]
    return out


def expected_accuracies(world, rows: list[dict], scores: list[list[float]]) -> dict[str, float]:
    """RM accuracy in expectation over each labeler group's Bradley-Terry choices on these pairs.

    The labelers' agreement it is compared with is an exact expectation (``expected_agreement``);
    accuracy against the one sampled ranking per prompt estimates the same kind of quantity with
    label-sampling noise on top (a few points from seed to seed on ~1800 pairs of 165 prompts).
    This is the noise-free counterpart, computed the same way as the agreement."""
    from alignlab.world.agreement import expected_accuracy, pair_differences

    if world is None or not rows or not all("components" in row for row in rows):
        return {}
    diffs = pair_differences([row["components"] for row in rows])
    directions = [sc[i] - sc[j] for sc in scores for i, j in itertools.combinations(range(len(sc)), 2)]
    return {
        "val_expected_accuracy_train_labelers": expected_accuracy(diffs, directions, world.training_personas()),
        "val_expected_accuracy_heldout_labelers": expected_accuracy(diffs, directions, world.heldout_personas()),
    }


def policy_view(rows: list[dict], scores: list[list[float]], source: int = 0) -> tuple[list[dict], list[list[float]]]:
    """The rows cut down to the responses of one source (default: the main policy, the one PPO starts from),
    keeping rows with >= 2 of them: accuracy on the policy's own pairs is what PPO relies on, while pairs
    against a weaker model (the base) are easier for labelers and RM alike."""
    out_rows, out_scores = [], []
    for row, sc in zip(rows, scores):
        if "sources" not in row:
            continue
        keep = [i for i, src in enumerate(row["sources"]) if src == source]
        if len(keep) < 2:
            continue
        texts = {row["responses"][i] for i in keep}
        view = {"prompt": row["prompt"], "record": row["record"], "responses": [row["responses"][i] for i in keep]}
        for key in ("gold", "gold_heldout", "components"):
            if key in row:
                view[key] = [row[key][i] for i in keep]
        if "heldout" in row:
            view["heldout"] = [r for r in row["heldout"] if r in texts]
        out_rows.append(view)
        out_scores.append([sc[i] for i in keep])
    return out_rows, out_scores


# -------------------------------------------------------------------- world extras


def world_extras(world_dir: str | None, rows: list[dict], seed: int) -> tuple[Any, dict[str, Any]]:
    """With the built-in world: fill in held-out rankings and gold where the data lack them,
    and measure the labelers' agreement on exactly these pairs. Returns (world or None, stats)."""
    if not world_dir or not (Path(world_dir) / "world.json").is_file():
        return None, {}
    if not all({"task", "meta"} <= set(r["record"]) for r in rows):
        return None, {}
    import numpy as np

    from alignlab.world import gold_reward, heldout_gold_reward, load_world, rank_responses, score_response
    from alignlab.world.agreement import expected_agreement, pair_differences
    from alignlab.world.labelers import COMPONENTS

    world = load_world(world_dir)
    rng = random.Random(f"{seed}-reward-heldout")
    for row in rows:
        rec = row["record"]
        if "heldout" not in row:
            persona = rng.choice(world.heldout_personas())
            row["heldout"] = distinct(
                [row["responses"][i] for i in rank_responses(world, persona, rec, row["responses"], rng)]
            )
        if "gold" not in row:
            row["gold"] = [gold_reward(world, rec, r) for r in row["responses"]]
        row["gold_heldout"] = [heldout_gold_reward(world, rec, r) for r in row["responses"]]
        row["components"] = np.array(
            [[c[k] for k in COMPONENTS] for c in (score_response(world, rec, r) for r in row["responses"])]
        )
    d = pair_differences([row["components"] for row in rows])
    stats = world.stats or {}
    return world, {
        "labeler_agreement": stats.get("labeler_agreement"),
        "labeler_agreement_heldout": stats.get("labeler_agreement_heldout"),
        "labeler_agreement_on_val_pairs": expected_agreement(d, world.training_personas()),
        "labeler_agreement_heldout_on_val_pairs": expected_agreement(d, world.heldout_personas()),
    }


def demonstration_source(cfg: RewardConfig) -> str | None:
    if cfg.demonstrations:
        return cfg.demonstrations
    if cfg.world_dir and (Path(cfg.world_dir) / "sft").is_dir():
        return str(Path(cfg.world_dir) / "sft")
    return None


# --------------------------------------------------------------------------- run


def run(cfg: RewardConfig) -> dict:

    t_start = time.time()
    out = Path(cfg.output_dir)
    accelerator = make_accelerator(resolve_device(cfg.device), "reward")
    is_main = accelerator.is_main_process
    device = accelerator.device
    n_proc = accelerator.num_processes
    micro = cfg.micro_batch_size or max(1, cfg.batch_size // n_proc)
    if cfg.batch_size % (micro * n_proc):
        raise ValueError(
            f"batch_size ({cfg.batch_size}) must be a multiple of micro_batch_size x processes ({micro} x {n_proc})"
        )

    # ---- model: the SFT model + a fresh scalar head (seeded), pad distinct from EOS
    tok = load_tokenizer(cfg.tokenizer or cfg.model, cfg.trust_remote_code)
    torch.manual_seed(cfg.seed)
    model = load_reward_model(cfg.model, cfg.trust_remote_code)  # a LoRA SFT folder loads merged
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))
    model.config.pad_token_id = tok.pad_token_id
    disable_dropout(model)
    seq_len = cfg.seq_len or min(context_length(model), DEFAULT_SEQ_CAP)
    model = apply_lora(model, cfg.lora, "SEQ_CLS")  # unchanged when lora.r == 0

    # ---- data: ranked lists (pairs = K of 2), one prompt per batch element
    train_rows, train_skipped = load_comparisons(cfg.data, cfg.train_split)
    val_rows, val_skipped = load_comparisons(cfg.eval_data or cfg.data, cfg.eval_split) if cfg.eval_split else ([], 0)
    if cfg.max_prompts and cfg.max_prompts < len(train_rows):
        keep = torch.randperm(len(train_rows), generator=torch.Generator().manual_seed(cfg.seed))[: cfg.max_prompts]
        train_rows = [train_rows[i] for i in sorted(keep.tolist())]
    encode_sequences(tok, train_rows, seq_len)
    encode_sequences(tok, val_rows, seq_len)
    world, agreement = world_extras(cfg.world_dir, val_rows, cfg.seed) if val_rows else (None, {})
    p_rows = policy_view(val_rows, [[0.0] * len(r["responses"]) for r in val_rows])[0] if world is not None else []
    if p_rows:
        _, p_agree = world_extras(cfg.world_dir, p_rows, cfg.seed)
        agreement.update({"policy_pairs_" + k: v for k, v in p_agree.items() if k.endswith("on_val_pairs")})
    n = len(train_rows)
    batch = min(cfg.batch_size, n)
    steps_per_epoch = max(1, n // batch)
    total_steps = cfg.epochs * steps_per_epoch

    optimizer = make_optimizer(model, cfg.lr, cfg.weight_decay, (cfg.beta1, cfg.beta2))
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, min(cfg.warmup_steps, total_steps), total_steps, min_lr_rate=cfg.min_lr_ratio
    )
    start_step = 0
    ckpt_dir = out / "checkpoint"
    if cfg.resume and checkpoint_exists(ckpt_dir):
        start_step = load_checkpoint(ckpt_dir, model, optimizer, scheduler)
        if is_main:
            print(f"resumed from {ckpt_dir} at step {start_step}")
    model, optimizer = accelerator.prepare(model, optimizer)
    resumed = cfg.resume and start_step > 0
    if is_main and not resumed and (out / "metrics.jsonl").exists():
        (out / "metrics.jsonl").unlink()
    logger = (
        MetricsLogger(out, cfg.tensorboard, truncate_after_step=start_step if resumed else None) if is_main else None
    )

    def evaluate(step: int) -> dict[str, Any]:
        model.eval()  # each rank scores its share of the prompts (the bare model: no DDP hooks); all get all scores
        bare = accelerator.unwrap_model(model)
        scores = map_sharded(
            accelerator, lambda rows: score_rows(bare, rows, tok.pad_token_id, device, cfg.eval_batch_size), val_rows
        )
        with torch.no_grad():
            k_max = max(len(s) for s in scores)
            r = torch.tensor([s + [0.0] * (k_max - len(s)) for s in scores])
            loss, _ = ranking_loss(r, torch.tensor([len(s) for s in scores]))
        model.train()
        acc_train, n_pairs = pair_accuracy([row["responses"] for row in val_rows], val_rows, scores)
        res: dict[str, Any] = {"val_loss": loss.item(), "val_accuracy_train_labelers": acc_train, "val_pairs": n_pairs}
        if all("heldout" in row for row in val_rows):
            res["val_accuracy_heldout_labelers"] = pair_accuracy(
                [row["heldout"] for row in val_rows], val_rows, scores
            )[0]
        res.update(gold_accuracy(val_rows, scores))
        res.update(expected_accuracies(world, val_rows, scores))
        p_rows, p_scores = policy_view(val_rows, scores)
        if p_rows:  # comparisons mixed several policies: also on the main policy's own pairs
            acc, n = pair_accuracy([r["responses"] for r in p_rows], p_rows, p_scores)
            res["policy_pairs"], res["policy_pairs_accuracy_train_labelers"] = n, acc
            if all("heldout" in r for r in p_rows):
                res["policy_pairs_accuracy_heldout_labelers"] = pair_accuracy(
                    [r["heldout"] for r in p_rows], p_rows, p_scores
                )[0]
            res.update({f"policy_pairs_{k}": v for k, v in gold_accuracy(p_rows, p_scores).items()})
            res.update({f"policy_pairs_{k}": v for k, v in expected_accuracies(world, p_rows, p_scores).items()})
        if is_main:
            logger.log(step, **{k: v for k, v in res.items() if not k.endswith("pairs")})
        return res

    # ---- the step loop: data order is a function of (seed, step) alone, so resume is exact
    model.train()
    bar = tqdm(
        range(start_step, total_steps),
        initial=start_step,
        total=total_steps,
        desc="reward",
        disable=not is_main,
        dynamic_ncols=True,
    )
    train_loss, train_acc = float("nan"), float("nan")
    t_last, last_logged = time.time(), start_step
    for step in bar:
        epoch, s = divmod(step, steps_per_epoch)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)).tolist()
        idx = rank_share(perm[s * batch : (s + 1) * batch], accelerator)  # this rank's share of the global batch
        w = n_proc / batch  # a chunk's weight in the mean over the GLOBAL batch's prompts (DDP averages over ranks)
        chunks = [idx[i : i + micro] for i in range(0, len(idx), micro)]
        loss_sum = torch.zeros((), device=device)
        acc_sum = torch.zeros((), device=device)
        for m, chunk in enumerate(chunks):
            ctx = accelerator.no_sync(model) if m < len(chunks) - 1 else nullcontext()
            with ctx:
                loss, acc, _ = rows_loss(model, [train_rows[j] for j in chunk], tok.pad_token_id, device)
                loss = loss * (len(chunk) * w)  # mean over the step's prompts
                accelerator.backward(loss)
            loss_sum += loss.detach()
            acc_sum += acc * (len(chunk) * w)
        grad_norm = accelerator.clip_grad_norm_(model.parameters(), cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        done = step + 1
        train_loss = accelerator.reduce(loss_sum, "mean").item()
        train_acc = accelerator.reduce(acc_sum, "mean").item()
        if not math.isfinite(train_loss):
            raise FloatingPointError(f"reward: loss became {train_loss} at step {done}; lower lr (now {cfg.lr})")
        if is_main and (done % cfg.log_interval == 0 or done == total_steps):
            now = time.time()
            logger.log(
                done,
                loss=train_loss,
                accuracy=train_acc,
                lr=scheduler.get_last_lr()[0],
                epoch=epoch + 1,
                grad_norm=float(grad_norm) if grad_norm is not None else None,
                seconds_per_step=(now - t_last) / max(done - last_logged, 1),
            )
            t_last, last_logged = now, done
        if val_rows and cfg.eval_interval and done % cfg.eval_interval == 0 and done < total_steps:
            evaluate(done)
        if is_main:
            bar.set_postfix(loss=f"{train_loss:.3f}", acc=f"{train_acc:.2f}")
        if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and done < total_steps:
            accelerator.wait_for_everyone()
            if is_main:
                save_checkpoint(ckpt_dir, accelerator.unwrap_model(model), optimizer, scheduler, done)
    bar.close()

    # ---- final evaluation, the demonstration shift, save
    final = evaluate(total_steps) if val_rows else {}
    summary: dict[str, Any] = {}
    if is_main:
        unwrapped = accelerator.unwrap_model(model)
        demo_src = demonstration_source(cfg)
        shift, demo_n, demo_std = 0.0, 0, None
        if demo_src:
            _, d_prompts, d_responses = load_demonstrations(demo_src, cfg.demonstrations_split)
            raw = score_texts(unwrapped, tok, d_prompts, d_responses, batch_size=cfg.eval_batch_size, shifted=False)
            shift, demo_n, demo_std = raw.mean().item(), len(raw), raw.std().item() if len(raw) > 1 else 0.0
        else:
            print("reward: no demonstrations (set `demonstrations` or world_dir) -- reward_shift left at 0")
        unwrapped.config.reward_shift = shift
        after = (
            score_texts(unwrapped, tok, d_prompts, d_responses, batch_size=cfg.eval_batch_size).mean().item()
            if demo_src
            else None
        )
        tmp = out / ".final.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_model(unwrapped, tmp, cfg.lora, tok)  # full weights, the LoRA adapter (+ config), or merged
        clear_model_files(out)  # a full model and an adapter must not sit side by side
        for f in tmp.iterdir():
            f.replace(out / f.name)
        tmp.rmdir()

        r4 = lambda v: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v  # noqa: E731
        summary = {
            "val_accuracy_train_labelers": r4(final.get("val_accuracy_train_labelers")),
            "val_accuracy_heldout_labelers": r4(final.get("val_accuracy_heldout_labelers")),
            "val_accuracy_gold": r4(final.get("val_accuracy_gold")),
            "val_expected_accuracy_train_labelers": r4(final.get("val_expected_accuracy_train_labelers")),
            "val_expected_accuracy_heldout_labelers": r4(final.get("val_expected_accuracy_heldout_labelers")),
            **{k: r4(v) for k, v in agreement.items()},
            "ceiling_train_labelers": r4(final.get("ceiling_train_labelers")),
            "ceiling_heldout_labelers": r4(final.get("ceiling_heldout_labelers")),
            "labels_vs_gold": r4(final.get("labels_vs_gold")),
            **{k: r4(v) for k, v in final.items() if k.startswith("policy_pairs")},
            "val_loss": r4(final.get("val_loss")),
            "val_pairs": final.get("val_pairs"),
            "gold_pairs": final.get("gold_pairs"),
            "final_train_loss": r4(train_loss),
            "final_train_accuracy": r4(train_acc),
            "reward_shift": r4(shift),
            "demonstrations": demo_src,
            "demonstrations_n": demo_n,
            "demonstrations_score_std": r4(demo_std),
            "demonstrations_mean_after_shift": r4(after),
            "train_prompts": n,
            "train_prompts_skipped_no_pairs": train_skipped,
            "val_prompts": len(val_rows),
            "epochs": cfg.epochs,
            "steps": total_steps,
            "seconds": round(time.time() - t_start, 1),
        }
        report = report_lines(summary)
        print("\n".join(report))
        _write_card(out, summary, report)
        logger.close()
    accelerator.wait_for_everyone()
    return summary


def report_lines(s: dict[str, Any]) -> list[str]:
    pct = lambda v: f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "n/a"  # noqa: E731
    lines = [
        f"reward: pairwise accuracy on {s['val_prompts']} held-out prompts ({s['val_pairs']} pairs)",
        "                        RM (sampled labels | expected)   labelers agree (world | these pairs)   "
        "perfect RM on these pairs",
    ]
    for who, acc, exp, agree, agree_here, ceil in (
        (
            "training labelers",
            "val_accuracy_train_labelers",
            "val_expected_accuracy_train_labelers",
            "labeler_agreement",
            "labeler_agreement_on_val_pairs",
            "ceiling_train_labelers",
        ),
        (
            "held-out labelers",
            "val_accuracy_heldout_labelers",
            "val_expected_accuracy_heldout_labelers",
            "labeler_agreement_heldout",
            "labeler_agreement_heldout_on_val_pairs",
            "ceiling_heldout_labelers",
        ),
    ):
        lines.append(
            f"  vs {who}  {pct(s.get(acc)):>6} | {pct(s.get(exp)):<6}              {pct(s.get(agree)):>6} | "
            f"{pct(s.get(agree_here)):<6}                   {pct(s.get(ceil))}"
        )
    if s.get("policy_pairs"):
        lines.append(f"  on the main policy's own {s['policy_pairs']} pairs (comparisons mixed several policies):")
        for who, acc, agree in (
            (
                "training labelers",
                "policy_pairs_accuracy_train_labelers",
                "policy_pairs_labeler_agreement_on_val_pairs",
            ),
            (
                "held-out labelers",
                "policy_pairs_accuracy_heldout_labelers",
                "policy_pairs_labeler_agreement_heldout_on_val_pairs",
            ),
        ):
            exp = "policy_pairs_val_expected_" + acc[len("policy_pairs_") :]
            lines.append(
                f"  vs {who}  {pct(s.get(acc)):>6} | {pct(s.get(exp)):<6}                     | "
                f"{pct(s.get(agree)):<6}                   {pct(s.get(acc.replace('accuracy', 'ceiling')))}"
            )
    if s.get("val_expected_accuracy_heldout_labelers") is not None:
        lines.append(
            "  (expected = in expectation over the group's labelers' choices, computed exactly like their agreement;"
            " sampled = against one sampled ranking per prompt)"
        )
    if s.get("val_accuracy_gold") is not None:
        lines.append(
            f"  vs gold (noise-free) {pct(s['val_accuracy_gold']):>6}   (training labels vs gold "
            f"{pct(s.get('labels_vs_gold'))}, on the {s.get('gold_pairs')} pairs whose gold differs)"
        )
    lines.append(
        f"  reward_shift {s['reward_shift']} (demonstrations now average {s['demonstrations_mean_after_shift']}); "
        f"{s['seconds']}s"
    )
    return lines


def _write_card(out: Path, summary: dict[str, Any], report: list[str]) -> None:
    lines = [
        "# alignlab reward model",
        "",
        "A scalar head on the SFT model, trained on ranked comparisons (all C(K,2) pairs of a prompt in one batch "
        "element). Load with plain transformers:",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        f"rm = AutoModelForSequenceClassification.from_pretrained('{out.as_posix()}', num_labels=1)",
        f"tok = AutoTokenizer.from_pretrained('{out.as_posix()}')",
        "# score at the last non-pad token (EOS); subtract rm.config.reward_shift so demonstrations average 0",
        "```",
        "",
        "```",
        *report,
        "```",
        "",
        "## Summary",
        "",
        *[f"- **{k}**: {v}" for k, v in summary.items() if not isinstance(v, (dict, list))],
        "",
        "Full config: `config.yaml`. Per-step metrics: `metrics.jsonl` (TensorBoard: `tb/`).",
    ]
    atomic_write_text(out / "README.md", "\n".join(lines) + "\n")
