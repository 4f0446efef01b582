"""Stage: train a reward model on ranked comparisons (InstructGPT step 2).

Read top to bottom: config, data (ranked lists; pairs are K=2), scoring and accuracies, the
world's extras, then ``run`` (setup, the step loop, the finish) and the pieces it calls in that
order: the setup (the SFT model with a fresh scalar head,
``AutoModelForSequenceClassification(num_labels=1)``), one optimiser step, evaluation against
training labelers, held-out labelers and the noise-free gold ordering, the demonstration shift,
publish, summary and report.

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
the summary). A person may also tie two different responses (``alignlab label``; InstructGPT's
labelers could): a ranked row with ``ranks`` (one per response, 1 = best, equal = tied) gives
the pairs of different rank only; a tied pair gives no gradient and counts in no accuracy, and a
row whose responses all tie is skipped like one without two distinct responses. Rows without
``ranks`` are ranked strictly by their order, as before.

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
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from alignlab import fsdp, training
from alignlab.config import arg
from alignlab.data.batches import StepPlan, epoch_order, micro_batch, plan_steps
from alignlab.data.chat import encode_prompt, encode_response
from alignlab.data.collate import collate_sequences
from alignlab.data.heldout import DEFAULT_EVAL_FRACTION, EVAL_FRACTION_HELP, HeldoutInfo, load_train_eval
from alignlab.data.length_groups import length_groups
from alignlab.data.load import DataError, load_dataset_any, load_demonstrations, require_format
from alignlab.data.ranks import row_ranks, strict_pairs
from alignlab.distributed import make_accelerator, map_sharded, rank_share
from alignlab.faults import fault_point
from alignlab.models.lora import LoraSettings
from alignlab.models.prepare import load_for_training
from alignlab.models.reward_model import load_reward_model, score_texts
from alignlab.models.trainee import Trainee
from alignlab.outputs import atomic_write_text
from alignlab.rl.losses import ranking_loss
from alignlab.sections import ModelSource, OptimSettings, RunSettings
from alignlab.summaries import RewardSummary


@dataclass
class RewardConfig:
    model: str = arg("runs/sft", "model the reward model starts from (the SFT model); a fresh scalar head is added")
    data: str = arg(
        "runs/compare/comparisons",
        "comparisons: ranked (prompt, responses best->worst) or "
        "preference (prompt, chosen, rejected); saved datasets folder, .jsonl/.parquet or hub id",
    )
    train_split: str = arg("train", "split to train on")
    eval_split: str = arg("validation", "held-out prompts for accuracy (empty = no evaluation)")
    eval_fraction: float = arg(DEFAULT_EVAL_FRACTION, EVAL_FRACTION_HELP)
    eval_data: str = arg(
        "",
        "held-out comparisons from another source (e.g. a second .jsonl); "
        "empty = data's eval_split, else eval_fraction of its prompts",
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
    eval_interval: int = arg(0, "steps between evaluations on the held-out prompts (0 = only at the end)")
    eval_batch_size: int = arg(128, "sequences per scoring batch")
    # run.seed also seeds the fresh scalar head's initialisation.
    run: RunSettings = arg(factory=lambda: RunSettings(log_interval=5, checkpoint_interval=25), help=RunSettings.HELP)
    source: ModelSource = arg(factory=ModelSource, help=ModelSource.HELP)
    # lr 1e-3 suits the small built-in models; use ~1e-5 for real LMs. Cosine decay to 10% of lr.
    optim: OptimSettings = arg(
        factory=lambda: OptimSettings(lr=1e-3, weight_decay=0.0, warmup_steps=5, min_lr_ratio=0.1, grad_clip=1.0),
        help=OptimSettings.HELP,
    )
    lora: LoraSettings = arg(
        factory=LoraSettings,
        help="LoRA adapters through peft (--lora.r 8); the score head is trained in full; r=0 trains all weights",
    )
    output_dir: str = arg("runs/reward", "where the reward model, metrics and checkpoints go")


PRESETS = {
    "smoke": {
        "batch_size": 16,
        "optim": {"lr": 1e-3, "warmup_steps": 2},
        "run": {"log_interval": 2, "checkpoint_interval": 0},
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
    return comparison_rows(load_dataset_any(source, split), f"{source} ({split} split)")


def comparison_rows(ds, where: str) -> tuple[list[dict[str, Any]], int]:
    """``load_comparisons`` of loaded rows; ``where`` names them in errors."""
    fmt = require_format(ds, ("ranked", "preference"), where)
    rows, skipped = [], 0
    for i, rec in enumerate(ds):
        if fmt == "ranked":
            ranked = [_text(r) for r in rec["responses"]]
        else:
            ranked = [_text(rec["chosen"]), _text(rec["rejected"])]
        if not all(isinstance(r, str) for r in ranked):
            raise DataError(f"{where} row {i}: responses must be strings or chat messages")
        resp = distinct(ranked)
        ranks = row_ranks(rec, ranked, resp, f"{where} row {i}") if fmt == "ranked" else None
        if len(resp) < 2 or (ranks is not None and len(set(ranks)) < 2):
            skipped += 1
            continue
        row: dict[str, Any] = {"prompt": rec["prompt"], "responses": resp, "record": rec}
        if ranks is not None:
            row["ranks"] = ranks
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
        raise DataError(f"{where}: no row has two different responses to compare")
    return rows, skipped


def rank_tensor(rows: list[dict], k_max: int) -> torch.Tensor | None:
    """[B, k_max] ranks for ``ranking_loss`` when some row carries ties (a row without: 1..K_b, its order);
    None when none does, so the loss is computed exactly as for strict rankings."""
    if not any("ranks" in row for row in rows):
        return None
    out = torch.full((len(rows), k_max), k_max + 1, dtype=torch.long)  # padding: masked by valid anyway
    for b, row in enumerate(rows):
        ranks = row.get("ranks") or list(range(1, len(row["responses"]) + 1))
        out[b, : len(ranks)] = torch.tensor(ranks)
    return out


def tie_counts(train: list[dict], val: list[dict]) -> dict[str, int]:
    """With ties in the data: the training pairs the loss uses and the tied pairs it leaves out (train and
    validation); empty without ties, so summaries of strict rankings are unchanged."""
    if not any("ranks" in row for row in train + val):
        return {}
    n_all = lambda rows: sum(len(r["responses"]) * (len(r["responses"]) - 1) // 2 for r in rows)  # noqa: E731
    n_strict = lambda rows: sum(len(strict_pairs(len(r["responses"]), r.get("ranks"))) for r in rows)  # noqa: E731
    return {
        "train_pairs": n_strict(train),
        "train_pairs_tied": n_all(train) - n_strict(train),
        "val_pairs_tied": n_all(val) - n_strict(val),
    }


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
    loss, acc = ranking_loss(rewards, valid, rank_tensor(rows, rewards.shape[1]))
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


def pair_accuracy(
    orders: list[list[str]], rows: list[dict], scores: list[list[float]], ranks: list | None = None
) -> tuple[float, int]:
    """Share of (better, worse) pairs of each ranking that the RM scores strictly in that order; pairs a
    ranking ties (``ranks[n]``, aligned with ``orders[n]``) are left out."""
    right = total = 0
    for n, (order, row, sc) in enumerate(zip(orders, rows, scores)):
        by_text = dict(zip(row["responses"], sc))
        for i, j in strict_pairs(len(order), ranks[n] if ranks else None):
            total += 1
            right += by_text[order[i]] > by_text[order[j]]
    return (right / total if total else float("nan")), total


def ranks_of(rows: list[dict]) -> list[list[int] | None]:
    """Each row's ranks (None: a strict ranking), aligned with its ``responses``."""
    return [row.get("ranks") for row in rows]


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
        for i, j in strict_pairs(len(g), row.get("ranks")):  # i ranked above j by the training labeler
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
        for key in ("gold", "gold_heldout", "components", "ranks"):
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


@dataclass
class Comparisons:
    """Train and validation rows (``load_comparisons``, encoded), the world's extras, and the step plan."""

    train: list[dict]
    train_skipped: int
    val: list[dict]
    world: Any  # the built-in world, or None: then no held-out labelers, gold or agreement
    agreement: dict[str, Any]
    plan: StepPlan
    heldout: HeldoutInfo  # where the validation rows came from (summary.json's heldout)
    ties: dict[str, int] = field(default_factory=dict)  # tie_counts: only when the rankings have ties


@dataclass
class TrainStats:
    """The last step's loss and pairwise accuracy (reduced over processes)."""

    loss: float = float("nan")
    accuracy: float = float("nan")


@dataclass
class DemoShift:
    """The demonstrations' mean raw score (stored as ``reward_shift``), their count and spread, and their mean after."""

    source: str | None = None
    shift: float = 0.0
    n: int = 0
    std: float | None = None
    after: float | None = None


def run(cfg: RewardConfig) -> dict:
    with training.cpu_threads(cfg.run.threads):
        t_start, out = time.time(), Path(cfg.output_dir)
        accelerator = make_accelerator(training.resolve_device(cfg.run.device), "reward")
        sharded = fsdp.requested(accelerator, cfg.run.fsdp)
        if sharded:
            fsdp.check_supported(accelerator, "reward", cfg.lora.enabled)
        micro = micro_batch(cfg.batch_size, cfg.micro_batch_size, accelerator.num_processes)
        model, tok, seq_len = load_for_training(
            load_reward_model, cfg.model, cfg.source, cfg.lora, "SEQ_CLS", cfg.seq_len, head_seed=cfg.run.seed
        )
        data = _setup_data(cfg, tok, seq_len)
        if accelerator.is_main_process:
            print(f"reward: {data.heldout.line()}")
        if sharded:  # before the optimiser, which must hold the sharded parameters
            fsdp.shard(model, accelerator.device)
            fsdp.write_shard_report(model, "reward")
        optimizer, scheduler = training.optimizer_and_schedule(model, cfg.optim, data.plan.total_steps)
        start_step, _ = training.resume_step(
            out / "checkpoint", cfg.run.resume, model, optimizer, scheduler, accelerator.is_main_process, sharded
        )
        if not sharded:
            model, optimizer = accelerator.prepare(model, optimizer)
        guard = training.NonFiniteGuard("reward", out / "checkpoint", cfg.run.skip_nonfinite)
        t = Trainee(accelerator, model, tok, optimizer, scheduler, micro, guard, sharded)
        logger = training.open_metrics(out, cfg.run.tensorboard, start_step, t.is_main)

        stats = _train(cfg, out, t, data, logger, start_step)

        final = _evaluate(cfg, t, data, logger, data.plan.total_steps) if data.val else {}
        demo = gathered = None
        if sharded:  # every rank scores the demonstrations (sharded forwards), then the model is gathered
            demo = _demonstration_shift(cfg, t.model, tok)
            gathered = fsdp.Gathered(t.model)
        summary = _finish(cfg, out, t, data, final, stats, t_start, demo, gathered) if t.is_main else {}
        if logger is not None:
            logger.close()
        accelerator.wait_for_everyone()
        return summary


# ------------------------------------------------------------------------- setup


def _setup_data(cfg: RewardConfig, tok, seq_len: int) -> Comparisons:
    """Ranked lists (pairs = K of 2), one prompt per batch element; with the world, its extras on the validation rows."""
    split = load_train_eval(cfg.data, cfg.train_split, cfg.eval_split, cfg.eval_fraction, cfg.eval_data)
    train_rows, train_skipped = comparison_rows(split.train, f"{cfg.data} ({cfg.train_split} split)")
    val_rows, _ = (
        comparison_rows(split.eval, f"{split.info.source} ({split.info.split})") if split.eval is not None else ([], 0)
    )
    if cfg.max_prompts and cfg.max_prompts < len(train_rows):
        g = torch.Generator().manual_seed(cfg.run.seed)
        keep = torch.randperm(len(train_rows), generator=g)[: cfg.max_prompts]
        train_rows = [train_rows[i] for i in sorted(keep.tolist())]
    encode_sequences(tok, train_rows, seq_len)
    encode_sequences(tok, val_rows, seq_len)
    world, agreement = world_extras(cfg.world_dir, val_rows, cfg.run.seed) if val_rows else (None, {})
    p_rows = policy_view(val_rows, [[0.0] * len(r["responses"]) for r in val_rows])[0] if world is not None else []
    if p_rows:
        _, p_agree = world_extras(cfg.world_dir, p_rows, cfg.run.seed)
        agreement.update({"policy_pairs_" + k: v for k, v in p_agree.items() if k.endswith("on_val_pairs")})
    plan = plan_steps(len(train_rows), cfg.batch_size, cfg.epochs)
    return Comparisons(
        train_rows, train_skipped, val_rows, world, agreement, plan, split.info, tie_counts(train_rows, val_rows)
    )


# ------------------------------------------------------------------------- training


def _train(cfg: RewardConfig, out: Path, t: Trainee, data: Comparisons, logger, start_step: int) -> TrainStats:
    """The step loop: data order is a function of (seed, step) alone, so resume is exact."""
    plan, stats = data.plan, TrainStats()
    t.model.train()
    bar = tqdm(
        range(start_step, plan.total_steps),
        initial=start_step,
        total=plan.total_steps,
        desc="reward",
        disable=not t.is_main,
        dynamic_ncols=True,
    )
    t_last, last_logged = time.time(), start_step
    for step in bar:
        epoch, s = divmod(step, plan.steps_per_epoch)
        perm = epoch_order(len(data.train), cfg.run.seed, epoch)
        done = step + 1
        stats, grad_norm = _train_step(cfg, t, data.train, perm[s * plan.batch : (s + 1) * plan.batch], done)
        if t.is_main and (done % cfg.run.log_interval == 0 or done == plan.total_steps):
            now = time.time()
            logger.log(
                done,
                loss=stats.loss,
                accuracy=stats.accuracy,
                lr=t.scheduler.get_last_lr()[0],
                epoch=epoch + 1,
                grad_norm=float(grad_norm) if grad_norm is not None else None,
                seconds_per_step=(now - t_last) / max(done - last_logged, 1),
            )
            t_last, last_logged = now, done
        if data.val and cfg.eval_interval and done % cfg.eval_interval == 0 and done < plan.total_steps:
            _evaluate(cfg, t, data, logger, done)
        if t.is_main:
            bar.set_postfix(loss=f"{stats.loss:.3f}", acc=f"{stats.accuracy:.2f}")
        if cfg.run.checkpoint_interval and done % cfg.run.checkpoint_interval == 0 and done < plan.total_steps:
            t.accelerator.wait_for_everyone()
            if t.sharded:  # every rank writes its shards
                training.save_sharded_checkpoint(
                    t.accelerator, out / "checkpoint", t.model, t.optimizer, t.scheduler, done
                )
            elif t.is_main:
                training.save_checkpoint(out / "checkpoint", t.bare(), t.optimizer, t.scheduler, done)
        fault_point("step")
    bar.close()
    return stats


def _train_step(cfg: RewardConfig, t: Trainee, rows: list[dict], global_idx: list[int], step: int):
    """One optimiser step on the global batch of prompts ``global_idx``; (its loss and accuracy, the gradient norm)."""
    accelerator, device = t.accelerator, t.accelerator.device
    idx = rank_share(global_idx, accelerator)  # this rank's share of the global batch
    w = accelerator.num_processes / len(global_idx)  # a chunk's weight in the mean over the GLOBAL batch's prompts
    # (x processes because DDP averages gradients over ranks)
    chunks = [idx[i : i + t.micro] for i in range(0, len(idx), t.micro)]
    loss_sum = torch.zeros((), device=device)
    acc_sum = torch.zeros((), device=device)
    for m, chunk in enumerate(chunks):
        ctx = accelerator.no_sync(t.model) if m < len(chunks) - 1 else nullcontext()
        with ctx:
            loss, acc, _ = rows_loss(t.model, [rows[j] for j in chunk], t.tok.pad_token_id, device)
            loss = loss * (len(chunk) * w)  # mean over the step's prompts
            accelerator.backward(loss)
        loss_sum += loss.detach()
        acc_sum += acc * (len(chunk) * w)
    stats = TrainStats(accelerator.reduce(loss_sum, "mean").item(), accelerator.reduce(acc_sum, "mean").item())
    return stats, t.optimizer_step(cfg.optim.grad_clip, step, loss=stats.loss)


# ------------------------------------------------------------------------- evaluation


def _evaluate(cfg: RewardConfig, t: Trainee, data: Comparisons, logger, step: int) -> dict[str, Any]:
    """Loss and accuracies on the validation prompts; with several policies' responses, also on the main policy's."""
    t.model.eval()  # each rank scores its share of the prompts (the bare model: no DDP hooks); all get all scores
    bare, device = t.bare(), t.accelerator.device
    rows = data.val

    def part_scores(part: list[dict]) -> list[list[float]]:
        if not t.sharded:
            return score_rows(bare, part, t.tok.pad_token_id, device, cfg.eval_batch_size)
        # sharded forwards are collectives: a rank with fewer batches runs throwaway ones after its own
        short = fsdp.forwards_short(-(-sum(len(r["ids"]) for r in part) // cfg.eval_batch_size), device)
        res = score_rows(bare, part, t.tok.pad_token_id, device, cfg.eval_batch_size)
        fsdp.idle_forwards(bare, short, device)
        return res

    scores = map_sharded(t.accelerator, part_scores, rows)
    with torch.no_grad():
        k_max = max(len(s) for s in scores)
        r = torch.tensor([s + [0.0] * (k_max - len(s)) for s in scores])
        loss, _ = ranking_loss(r, torch.tensor([len(s) for s in scores]), rank_tensor(rows, k_max))
    t.model.train()
    acc_train, n_pairs = pair_accuracy([row["responses"] for row in rows], rows, scores, ranks_of(rows))
    res: dict[str, Any] = {"val_loss": loss.item(), "val_accuracy_train_labelers": acc_train, "val_pairs": n_pairs}
    if all("heldout" in row for row in rows):
        res["val_accuracy_heldout_labelers"] = pair_accuracy([row["heldout"] for row in rows], rows, scores)[0]
    res.update(gold_accuracy(rows, scores))
    res.update(expected_accuracies(data.world, rows, scores))
    res.update(_policy_pairs_accuracies(data.world, rows, scores))
    if t.is_main:
        logger.log(step, **{k: v for k, v in res.items() if not k.endswith("pairs")})
    return res


def _policy_pairs_accuracies(world, rows: list[dict], scores: list[list[float]]) -> dict[str, Any]:
    """When the comparisons mixed several policies: the accuracies on the main policy's own pairs."""
    p_rows, p_scores = policy_view(rows, scores)
    if not p_rows:
        return {}
    acc, n = pair_accuracy([r["responses"] for r in p_rows], p_rows, p_scores, ranks_of(p_rows))
    res: dict[str, Any] = {"policy_pairs": n, "policy_pairs_accuracy_train_labelers": acc}
    if all("heldout" in r for r in p_rows):
        res["policy_pairs_accuracy_heldout_labelers"] = pair_accuracy([r["heldout"] for r in p_rows], p_rows, p_scores)[
            0
        ]
    res.update({f"policy_pairs_{k}": v for k, v in gold_accuracy(p_rows, p_scores).items()})
    res.update({f"policy_pairs_{k}": v for k, v in expected_accuracies(world, p_rows, p_scores).items()})
    return res


# ------------------------------------------------------------------------- finish (main process)


def _finish(
    cfg: RewardConfig,
    out: Path,
    t: Trainee,
    data: Comparisons,
    final: dict,
    stats: TrainStats,
    t_start: float,
    demo: DemoShift | None = None,
    gathered: fsdp.Gathered | None = None,
) -> dict[str, Any]:
    """Shift the scores so demonstrations average 0, publish the model, write the summary, report and card.
    Sharded, the shift was measured on every rank (``demo``) and the model is published from ``gathered``."""
    model = t.bare() if gathered is None else gathered
    demo = _demonstration_shift(cfg, model, t.tok) if demo is None else demo
    training.publish_model(out, model, t.tok, cfg.lora)  # full weights, the LoRA adapter (+ config), or merged
    summary = _summary(cfg, data, final, stats, demo)
    summary["seconds"] = round(time.time() - t_start, 1)
    report = report_lines(summary)
    print("\n".join(report))
    _write_card(out, summary, report)
    return summary


def _demonstration_shift(cfg: RewardConfig, model, tok) -> DemoShift:
    """Set ``model.config.reward_shift`` to the demonstrations' mean raw score (0 without demonstrations)."""
    demo = DemoShift(source=demonstration_source(cfg))
    if demo.source:
        _, prompts, responses = load_demonstrations(demo.source, cfg.demonstrations_split)
        raw = score_texts(model, tok, prompts, responses, batch_size=cfg.eval_batch_size, shifted=False)
        demo.shift, demo.n, demo.std = raw.mean().item(), len(raw), raw.std().item() if len(raw) > 1 else 0.0
    else:
        print("reward: no demonstrations (set `demonstrations` or world_dir) -- reward_shift left at 0")
    model.config.reward_shift = demo.shift
    if demo.source:
        demo.after = score_texts(model, tok, prompts, responses, batch_size=cfg.eval_batch_size).mean().item()
    return demo


def _summary(cfg: RewardConfig, data: Comparisons, final: dict, stats: TrainStats, demo: DemoShift) -> RewardSummary:
    """summary.json's numbers (the keys the report reads: ``summaries.RewardSummary``)."""
    r4 = lambda v: round(v, 4) if isinstance(v, float) and math.isfinite(v) else v  # noqa: E731
    return {
        "val_accuracy_train_labelers": r4(final.get("val_accuracy_train_labelers")),
        "val_accuracy_heldout_labelers": r4(final.get("val_accuracy_heldout_labelers")),
        "val_accuracy_gold": r4(final.get("val_accuracy_gold")),
        "val_expected_accuracy_train_labelers": r4(final.get("val_expected_accuracy_train_labelers")),
        "val_expected_accuracy_heldout_labelers": r4(final.get("val_expected_accuracy_heldout_labelers")),
        **{k: r4(v) for k, v in data.agreement.items()},
        "ceiling_train_labelers": r4(final.get("ceiling_train_labelers")),
        "ceiling_heldout_labelers": r4(final.get("ceiling_heldout_labelers")),
        "labels_vs_gold": r4(final.get("labels_vs_gold")),
        **{k: r4(v) for k, v in final.items() if k.startswith("policy_pairs")},
        "val_loss": r4(final.get("val_loss")),
        "val_pairs": final.get("val_pairs"),
        "gold_pairs": final.get("gold_pairs"),
        "final_train_loss": r4(stats.loss),
        "final_train_accuracy": r4(stats.accuracy),
        "reward_shift": r4(demo.shift),
        "demonstrations": demo.source,
        "demonstrations_n": demo.n,
        "demonstrations_score_std": r4(demo.std),
        "demonstrations_mean_after_shift": r4(demo.after),
        "train_prompts": len(data.train),
        "train_prompts_skipped_no_pairs": data.train_skipped,
        **data.ties,
        "val_prompts": len(data.val),
        "epochs": cfg.epochs,
        "steps": data.plan.total_steps,
        "heldout": data.heldout.as_dict(),
    }


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
    if "train_pairs_tied" in s:
        lines.append(
            f"  ties: trained on {s['train_pairs']} ranked pairs; {s['train_pairs_tied']} tied training pairs and "
            f"{s['val_pairs_tied']} tied held-out pairs left out (equal ranks)"
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
