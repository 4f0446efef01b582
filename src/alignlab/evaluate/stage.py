"""Stage: evaluate policies the way the InstructGPT paper did.

For every policy (a causal-LM folder or hub id), on the same held-out prompts with the
same sampling settings and seed:

  1. sample n responses per prompt (KV cache, left padding)       -> sampling.py
  2. KL to the baseline on the policy's own samples (k1)            -> sampling.py
  3. alignment tax: held-out pretraining loss, zero-shot NLP tasks  -> alignment_tax.py
  4. judge: win rate vs the baseline by training and held-out
     labelers (or a reward model), helpfulness, truthfulness, harm,
     InstructGPT's Figure 4 metadata                                -> metrics.py
     (win_rate.py, truthfulness.py, harm.py, instruction_following.py), intervals by bootstrap.py
  5. headroom: best-of-n of the baseline by gold (built-in world)   -> headroom.py
  6. best-of-n as policies (``best_of_n``): the baseline's best of n by a reward
     model, judged like every other policy                          -> best_of_n.py

Policies named in ``few_shot`` are asked differently: in the corpus's "Question: / Answer:" form after
k demonstrations, their answer cut at the next "Question:" (InstructGPT's "GPT-3 prompted"; few_shot.py).

The prompts of ``probe_split`` (the world's test prompts with held-out constraint kinds) are
sampled too but count only for ``heldout_constraint_compliance``: the win rates and every
other number are on ``split`` alone.

Outputs in ``output_dir``: ``results.json`` (every metric per policy, means over prompts
as ``{"value", "low", "high"}``), ``samples.jsonl`` (one line per response with its
scores), and the headline table returned as the stage summary (``summary.json``).
A policy whose path does not exist is skipped with a note -- except the baseline.
"""

from __future__ import annotations

import gc
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignlab.config import arg
from alignlab.data.chat import encode_prompts, prompt_of
from alignlab.data.heldout import DEFAULT_EVAL_FRACTION, has_split, load_train_eval
from alignlab.data.load import load_dataset_any, require_column
from alignlab.errors import ConfigError, MissingInputError
from alignlab.evaluate.alignment_tax import choice_correct, choice_logprobs, heldout_blocks, heldout_nll
from alignlab.evaluate.bootstrap import bootstrap_mean, interval, paired_delta
from alignlab.evaluate.constant_answers import constant_answer_metrics
from alignlab.evaluate.few_shot import prompt_ids as few_shot_prompt_ids
from alignlab.evaluate.few_shot import stop_at_next_question
from alignlab.evaluate.metrics import evaluate_responses
from alignlab.evaluate.sampling import response_logprob_sums, same_vocabulary, sample
from alignlab.models.load import check_model_path, context_length
from alignlab.outputs import atomic_write_json, atomic_write_text

DEFAULT_POLICIES = {
    "base": "runs/pretrain",
    "sft": "runs/sft",
    "ppo": "runs/ppo",
    "ppo_ptx": "runs/ppo_ptx",
    "dpo": "runs/dpo",
}

# The headline table (summary.json "policies"): the keys the report reads, always present.
HEADLINE = [
    "win_rate_train_labelers",
    "win_rate_heldout_labelers",
    "win_rate_reward_model",
    "helpfulness",
    "truthfulness",
    "harm_rate",
    "unknown_rate",
    "gold_reward",
    "heldout_ptx_loss",
    "heldout_ptx_loss_delta",
    "nlp_accuracy",
    "nlp_accuracy_delta",
    "kl_to_baseline",
    "length",
    # InstructGPT's Figure 4, and what a policy that wins by declining would show
    "constraint_failure_rate",
    "heldout_constraint_compliance",
    "closed_domain_hallucination_rate",
    "attempts_instruction_rate",
    "appropriate_rate",
    "over_refusal_rate",
    "unknown_false_positive_rate",
    "harmful_compliance_rate",
]


@dataclass
class EvaluateConfig:
    policies: dict[str, str] = arg(
        factory=lambda: dict(DEFAULT_POLICIES),
        help="policy name -> model folder or hub id; missing paths are skipped (not the baseline)",
    )
    baseline: str = arg("sft", "policy every win rate and KL is measured against (InstructGPT: the SFT model)")
    base: str = arg("base", "pretrained model the alignment tax is measured from (deltas of loss and NLP accuracy)")
    data: str = arg("runs/world/test", "held-out prompts: saved datasets folder, .jsonl/.parquet or hub id")
    split: str = arg("test", "split of `data`")
    prompt_column: str = arg("prompt", "column with the prompt (text or messages); else a `messages` column's context")
    max_prompts: int = arg(0, "use the first N prompts (0 = all)")
    probe_split: str = arg(
        "heldout_constraints",
        "split of `data` sampled only for held-out constraint compliance "
        "(the world's probe of constraint kinds no RLHF prompt had); skipped if `data` has no such split",
    )
    headroom_n: list[int] = arg(
        factory=lambda: [1, 4, 16],
        help="best-of-n of the baseline by gold reward for these n "
        "(max(n) extra samples per prompt; built-in world only); empty = off",
    )
    best_of_n: list[int] = arg(
        factory=list,
        help="also judge best-of-n of the baseline, picked by best_of_n_reward_model, as policies best_of_<n> "
        "(max(n) extra samples per prompt at the evaluation's temperature, top_p 1; KL log n - (n-1)/n); empty = off",
    )
    best_of_n_reward_model: str = arg("", "reward model that picks the best of n (needed with best_of_n)")
    best_of_n_no_eos_penalty: float | None = arg(
        -1.0, "best_of_n: score of a sample that hit max_new_tokens without EOS (PPO's default); null = the RM's"
    )
    few_shot: list[str] = arg(
        factory=list,
        help="policies asked after a prefix of few_shot_k demonstrations in the corpus's 'Question: ... / "
        "Answer:' form (InstructGPT's 'GPT-3 prompted'; give a base model twice to have it both ways), their "
        "answer cut where they start the next question; no KL for them (their prompt is not the baseline's)",
    )
    few_shot_k: int = arg(3, "demonstrations in the few-shot prefix")
    few_shot_data: str = arg("", "demonstrations the prefix is drawn from; empty = world_dir/sft")
    few_shot_split: str = arg("train", "split of few_shot_data (never the evaluated prompts: those are left out)")
    world_dir: str = arg("runs/world", "built-in world whose labelers judge (gold metrics); empty = none")
    judge_reward_model: str = arg("", "reward model judging win rates (P = sigmoid(r_a - r_b)); needed without a world")
    tokenizer: str = arg("", "tokenizer for policy folders that have none saved")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")
    n_samples: int = arg(1, "responses sampled per prompt and policy")
    temperature: float = arg(1.0, "sampling temperature, the same for every policy (0 = greedy; KL then scored at 1)")
    top_p: float = arg(1.0, "nucleus sampling (1 = off), the same for every policy")
    max_new_tokens: int = arg(32, "response length cap")
    max_prompt_len: int = arg(96, "prompt tokens kept (cut from the left); capped so prompt+response fits the context")
    seed: int = arg(0, "sampling seed (the same for every policy) and bootstrap seed")
    gen_batch_size: int = arg(128, "prompts per generate() call")
    score_batch_size: int = arg(64, "sequences per scoring forward pass (KL, held-out loss, NLP choices)")
    alignment_tax: bool = arg(True, "measure held-out pretraining loss and zero-shot NLP accuracy")
    heldout_data: str = arg("", "held-out pretraining text; empty = world_dir/corpus")
    heldout_split: str = arg(
        "validation",
        "split of heldout_data; a source without it (one .jsonl file) gives the eval_fraction of its documents "
        "that pretraining on the same file held out (the same hash rule, data/heldout.py)",
    )
    eval_fraction: float = arg(DEFAULT_EVAL_FRACTION, "share of heldout_data's documents held out when it has no split")
    heldout_text_column: str = arg("text", "column of heldout_data with the documents")
    heldout_blocks: int = arg(128, "packed blocks of held-out text for the pretraining loss (a fixed set)")
    heldout_seq_len: int = arg(128, "tokens per block (capped at the model's context)")
    nlp_data: str = arg("", "multiple-choice items (context, choices, label, task); empty = world_dir/nlp_tasks")
    nlp_split: str = arg("test", "split of nlp_data")
    max_nlp_items: int = arg(0, "use the first N items (0 = all)")
    n_bootstrap: int = arg(1000, "bootstrap resamples for the intervals")
    confidence: float = arg(0.95, "interval coverage")
    device: str = arg("auto", "auto, cpu or cuda")
    output_dir: str = arg("runs/evaluate", "where results.json, samples.jsonl and summary.json go")


PRESETS = {"smoke": {"max_new_tokens": 24, "heldout_blocks": 16, "n_bootstrap": 500}, "default": {}}


def _is_missing(path: str) -> bool:
    """A local path that does not exist. A string that is not a local path and whose first
    component is no local folder (``gpt2``, ``org/model``) is taken as a hub id."""
    p = Path(path).expanduser()
    if p.exists():
        return False
    local_parent = str(p.parent) != "." and p.parent.exists()
    return path.startswith((".", "/", "~")) or local_parent or path.count("/") > 1


def _load(path: str, cfg: EvaluateConfig, device: str):
    from alignlab.models.load import disable_dropout, load_causal_lm, load_tokenizer

    tok_path = path if (Path(path) / "tokenizer_config.json").exists() or not Path(path).exists() else cfg.tokenizer
    if not tok_path:
        raise ConfigError(f"{path}: no tokenizer saved with the model; set `tokenizer`")
    tok = load_tokenizer(tok_path, cfg.trust_remote_code)
    model = load_causal_lm(path, cfg.trust_remote_code)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))  # the added pad token, as the SFT stage does
    model.to(device)
    disable_dropout(model)
    model.eval()
    return model, tok


class _PromptJudge:
    """A reward-model judge fed the exact prompt each policy saw (text or messages)."""

    def __init__(self, judge, column: str):
        self.judge, self.column = judge, column

    def score(self, records: list[dict], responses: list[str]) -> list[float]:
        return self.judge.score([{"prompt": prompt_of(r, self.column)} for r in records], responses)


def _rows(ds, n: int) -> list[dict]:
    n = len(ds) if n <= 0 else min(n, len(ds))
    return [ds[i] for i in range(n)]


def _probe_rows(cfg: EvaluateConfig) -> list[dict]:
    """The probe split's rows, or none when ``data`` is not a saved DatasetDict with that split (a
    single file has no splits: every split name would return the same rows)."""
    import datasets

    path = Path(cfg.data).expanduser()
    if not cfg.probe_split or cfg.probe_split == cfg.split or not (path / "dataset_dict.json").is_file():
        return []
    loaded = datasets.load_from_disk(str(path))
    return _rows(loaded[cfg.probe_split], 0) if cfg.probe_split in loaded else []


def _check(cfg: EvaluateConfig) -> None:
    if cfg.n_samples < 1:
        raise ConfigError(f"n_samples must be >= 1, got {cfg.n_samples}")
    if not 0.0 < cfg.top_p <= 1.0:
        raise ConfigError(f"top_p must be in (0, 1], got {cfg.top_p}")
    if cfg.baseline not in cfg.policies:
        raise ConfigError(f"baseline '{cfg.baseline}' is not one of the policies ({', '.join(cfg.policies)})")
    if cfg.best_of_n:
        if min(cfg.best_of_n) < 1:
            raise ConfigError(f"best_of_n: every n must be >= 1, got {cfg.best_of_n}")
        if not cfg.best_of_n_reward_model:
            raise ConfigError("best_of_n needs best_of_n_reward_model: the reward model that picks the best of n")
        if cfg.temperature <= 0:
            raise ConfigError("best_of_n needs temperature > 0: greedy decoding gives the same answer n times")
        check_model_path(cfg.best_of_n_reward_model)
    unknown = [n for n in cfg.few_shot if n not in cfg.policies]
    if unknown:
        raise ConfigError(f"few_shot: {unknown} not among the policies ({', '.join(cfg.policies)})")
    if cfg.baseline in cfg.few_shot:
        raise ConfigError(
            f"few_shot: the baseline '{cfg.baseline}' cannot be few-shot prompted (the KL of every other policy "
            "is scored by the baseline on that policy's own chat prompts)"
        )
    if cfg.few_shot and cfg.few_shot_k < 1:
        raise ConfigError(f"few_shot_k must be >= 1, got {cfg.few_shot_k}")


def _policy_paths(cfg: EvaluateConfig, note) -> tuple[dict[str, str], list[str]]:
    """The policies found on disk (the baseline must exist; others are optional), and the order to sample them."""
    paths: dict[str, str] = {}
    for name, path in cfg.policies.items():
        path = str(path)
        if _is_missing(path):
            if name == cfg.baseline:
                raise MissingInputError(
                    f"baseline policy '{name}' not found at {path} (set policies.{name} or baseline)"
                )
            note(f"policy '{name}' skipped: {path} not found")
            continue
        paths[name] = path
    order = [cfg.baseline] + [n for n in paths if n != cfg.baseline]
    if cfg.base not in paths:
        note(f"base policy '{cfg.base}' not evaluated: alignment-tax deltas are null")
    return paths, order


@dataclass
class _Judges:
    world: Any  # the built-in world, or None
    world_dir: Path | None
    has_world: bool
    reward_judge: _PromptJudge | None
    name: str  # "world_labelers", "reward_model", both joined by "+", or "none"


def _judges(cfg: EvaluateConfig, rows: list[dict], device, note) -> _Judges:
    world = None
    world_dir = Path(cfg.world_dir) if cfg.world_dir else None
    has_world = world_dir is not None and (world_dir / "world.json").is_file()
    if has_world and rows and {"task", "meta"} <= set(rows[0]):
        from alignlab.world import load_world

        world = load_world(world_dir)
    elif has_world:
        note(f"{cfg.data} has no task/meta columns: the world's labelers cannot judge it")
    elif world_dir is not None:
        note(f"no built-in world at {world_dir}")
    reward_judge = None
    if cfg.judge_reward_model:
        from alignlab.evaluate.judges import RewardModelJudge

        reward_judge = _PromptJudge(
            RewardModelJudge(cfg.judge_reward_model, device, cfg.trust_remote_code, cfg.score_batch_size),
            cfg.prompt_column,
        )
    if world is None:
        note(
            "gold metrics (helpfulness, truthfulness, harm, labeler win rates) skipped: they need the built-in world"
            + ("" if reward_judge else "; no judge_reward_model either, so no win rates")
        )
    name = (
        "+".join(
            j for j, on in (("world_labelers", world is not None), ("reward_model", reward_judge is not None)) if on
        )
        or "none"
    )
    return _Judges(world, world_dir, has_world, reward_judge, name)


def _tax_data(cfg: EvaluateConfig, judges: _Judges, note) -> tuple[list[str] | None, list[dict] | None]:
    """Held-out pretraining texts and NLP multiple-choice items for the alignment tax (None where skipped)."""
    corpus_texts, nlp_items = None, None
    if not cfg.alignment_tax:
        return corpus_texts, nlp_items
    src = cfg.heldout_data or (str(judges.world_dir / "corpus") if judges.has_world else "")
    if src:  # held-out text only: a single file's documents that pretraining on it would have trained on are left out
        text = load_train_eval(
            src,
            "train",
            cfg.heldout_split,
            cfg.eval_fraction,
            column=cfg.heldout_text_column,
            text=True,
            column_key="heldout_text_column",
        )
        print(f"evaluate: pretraining text for the alignment tax: {text.info.line()}")
        corpus_texts = list(text.eval[cfg.heldout_text_column]) if text.eval is not None else None
        if corpus_texts is None:
            note(f"held-out pretraining loss skipped: {src} has no held-out documents ({text.info.split})")
    else:
        note("held-out pretraining loss skipped: no heldout_data and no world")
    src = cfg.nlp_data or (str(judges.world_dir / "nlp_tasks") if judges.has_world else "")
    if src:
        nlp_items = _rows(load_dataset_any(src, cfg.nlp_split), cfg.max_nlp_items)
    else:
        note("NLP accuracy skipped: no nlp_data and no world")
    return corpus_texts, nlp_items


def _few_shot_demos(cfg: EvaluateConfig, judges: _Judges, prompts: list) -> dict[str, Any] | None:
    """The few-shot prefix's demonstrations, never an evaluated prompt (None without few-shot policies)."""
    if not cfg.few_shot:
        return None
    from alignlab.data.load import load_demonstrations
    from alignlab.evaluate.few_shot import pick_demonstrations

    src = cfg.few_shot_data or (str(judges.world_dir / "sft") if judges.has_world else "")
    if not src:
        raise ConfigError("few_shot: no demonstrations for the prefix: set few_shot_data (or world_dir)")
    _, demo_prompts, responses = load_demonstrations(src, cfg.few_shot_split)
    asked = {p for p in prompts if isinstance(p, str)}
    demos = pick_demonstrations(demo_prompts, responses, cfg.few_shot_k, asked, cfg.seed)
    print(
        f"evaluate: {', '.join(cfg.few_shot)} asked after {len(demos)} demonstrations of {src} ({cfg.few_shot_split})"
    )
    return {
        "source": src,
        "split": cfg.few_shot_split,
        "k": cfg.few_shot_k,
        "demonstrations": [{"prompt": p, "response": r} for p, r in demos],
    }


@dataclass
class _Sampled:
    """What sampling and scoring every policy produced, per policy name."""

    samples: dict = field(default_factory=dict)
    nll: dict = field(default_factory=dict)
    correct: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)
    n_blocks: dict = field(default_factory=dict)
    headroom_texts: list | None = None
    ref_model: Any = None
    ref_tok: Any = None
    demos: list = field(default_factory=list)  # the few-shot prefix's (prompt, response) pairs
    shown: dict = field(default_factory=dict)  # per few-shot policy: demonstrations its prompts kept, on average


def _sample_policies(cfg, paths, order, prompts, n_main, world, tax, device, note, demos=()) -> _Sampled:
    """Sample, KL and alignment tax: one policy in memory at a time (plus the baseline)."""
    score_t = cfg.temperature if cfg.temperature > 0 else 1.0
    if cfg.temperature <= 0:
        note("greedy decoding: KL to the baseline is scored at temperature 1")
    out = _Sampled(demos=list(demos))
    for name in order:
        t0 = time.time()
        try:
            model, tok = _load(paths[name], cfg, device)
        except OSError as e:  # not a local folder and not loadable as a hub id either
            if name == cfg.baseline:
                raise MissingInputError(
                    f"baseline policy '{name}' could not be loaded from {paths[name]}: {e}"
                ) from None
            note(f"policy '{name}' skipped: {paths[name]} could not be loaded ({type(e).__name__})")
            continue
        _sample_one(cfg, name, model, tok, prompts, n_main, world, tax, score_t, out, note)
        out.seconds[name] = round(time.time() - t0, 2)
        print(f"evaluate: {name} sampled and scored in {out.seconds[name]:.1f}s ({paths[name]})")
        if model is not out.ref_model:
            del model
            gc.collect()
    return out


def _sample_one(cfg, name, model, tok, prompts, n_main, world, tax, score_t, out: _Sampled, note) -> None:
    """One policy's samples, KL to the baseline (kept in ``out`` as the reference) and alignment-tax scores."""
    import torch

    ctx = context_length(model)
    if cfg.max_new_tokens >= ctx:
        raise ConfigError(f"max_new_tokens ({cfg.max_new_tokens}) must be below the context of '{name}' ({ctx})")
    few_shot = name in cfg.few_shot
    if few_shot:
        ids = _few_shot_ids(name, tok, prompts, ctx - cfg.max_new_tokens, out)
    else:
        ids = encode_prompts(tok, prompts, min(cfg.max_prompt_len, ctx - cfg.max_new_tokens))
    gen = dict(top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, batch_size=cfg.gen_batch_size)
    s, ro = sample(model, tok, ids, n_samples=cfg.n_samples, temperature=cfg.temperature, seed=cfg.seed, **gen)
    if few_shot:
        stop_at_next_question(s, tok)
        note(f"'{name}' is few-shot prompted: no KL to '{cfg.baseline}' (their prompts differ)")
    if name == cfg.baseline:
        s.kl = np.zeros_like(s.length)  # the baseline against itself: exactly 0
        out.ref_model, out.ref_tok = model, tok
        if world is not None and cfg.headroom_n:
            n = max(cfg.headroom_n)
            extra, _ = sample(
                model, tok, ids[:n_main], n_samples=n, temperature=cfg.temperature or 1.0, seed=cfg.seed + 1, **gen
            )
            out.headroom_texts = extra.texts
    elif not few_shot and same_vocabulary(tok, out.ref_tok):
        lp = response_logprob_sums(model, ro, score_t, cfg.score_batch_size)
        lp_ref = response_logprob_sums(out.ref_model, ro, score_t, cfg.score_batch_size)
        s.kl = (lp - lp_ref).reshape(s.length.shape)
    elif not few_shot:
        note(f"'{name}' has a different vocabulary from '{cfg.baseline}': no KL")
    out.samples[name] = s
    del ro
    corpus_texts, nlp_items = tax
    with torch.no_grad():
        if corpus_texts is not None:
            blocks = heldout_blocks(corpus_texts, tok, min(cfg.heldout_seq_len, ctx), cfg.heldout_blocks)
            out.n_blocks[name] = int(blocks.shape[0])
            out.nll[name] = heldout_nll(model, blocks, cfg.score_batch_size)
        if nlp_items is not None:
            out.correct[name] = choice_correct(
                nlp_items, choice_logprobs(model, tok, nlp_items, cfg.score_batch_size, ctx)
            )


def _few_shot_ids(name: str, tok, prompts: list, budget: int, out: _Sampled) -> list[list[int]]:
    """Every prompt after the few-shot prefix, within the context left for a prompt (not max_prompt_len: that
    caps a question, and the prefix needs the room); how many demonstrations they kept goes in ``out.shown``."""
    asked = [few_shot_prompt_ids(tok, out.demos, p, budget) for p in prompts]
    out.shown[name] = round(float(np.mean([shown for _, shown in asked])), 3)
    return [ids for ids, _ in asked]


def _add_best_of_n(cfg, sampled: _Sampled, rows: list[dict], prompts: list, device) -> dict[str, str]:
    """Policies ``best_of_<n>``: the baseline's max(n) samples per prompt (seed + 2: not the draws the evaluation
    or the headroom judge), the RM's pick among the first n of each. Same weights as the baseline, so the same
    alignment-tax scores; wall time pro rata to n (what drawing and scoring n per prompt costs). Their paths."""
    from alignlab.evaluate.best_of_n import best_of_n
    from alignlab.evaluate.judges import RewardModelJudge

    t0 = time.time()
    model, tok = sampled.ref_model, sampled.ref_tok
    rm = RewardModelJudge(cfg.best_of_n_reward_model, device, cfg.trust_remote_code, cfg.score_batch_size)
    n_max = max(cfg.best_of_n)
    ids = encode_prompts(tok, prompts, min(cfg.max_prompt_len, context_length(model) - cfg.max_new_tokens))
    bon = best_of_n(
        model,
        tok,
        rows,
        ids,
        n_max,
        _PromptJudge(rm, cfg.prompt_column).score,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.seed + 2,
        batch_size=cfg.gen_batch_size,
        no_eos_penalty=cfg.best_of_n_no_eos_penalty,
    )
    seconds = time.time() - t0
    paths = {}
    for n in sorted(set(cfg.best_of_n)):
        name = f"best_of_{n}"
        sampled.samples[name] = bon.as_policy(n)
        for scores in (sampled.nll, sampled.correct):
            if cfg.baseline in scores:
                scores[name] = scores[cfg.baseline]
        sampled.seconds[name] = round(seconds * n / n_max, 2)
        paths[name] = f"best of {n} of {cfg.policies[cfg.baseline]} by {cfg.best_of_n_reward_model}"
    print(f"evaluate: best-of-{n_max} of {cfg.baseline} sampled and scored by the RM in {seconds:.1f}s")
    return paths


def _headroom(cfg, world, rows: list[dict], n_main: int, sampled: _Sampled, boot: dict) -> dict | None:
    """Best-of-n of the baseline by gold reward (None when no extra samples were drawn)."""
    if sampled.headroom_texts is None:
        return None
    from alignlab.evaluate.headroom import headroom
    from alignlab.evaluate.metrics import WorldScorer

    room = headroom(
        WorldScorer(world, rows[:n_main]),
        sampled.headroom_texts,
        sampled.samples[cfg.baseline].texts[:n_main],
        sorted(cfg.headroom_n),
        [r.get("category") for r in rows[:n_main]],
        boot,
    )
    print(
        "evaluate: best-of-n of "
        + cfg.baseline
        + " by gold: "
        + ", ".join(
            f"n={n} gold {room['gold'][n]['value']:.3f} (win vs {cfg.baseline}, held-out labelers "
            f"{100 * room['win_rate_heldout'][n]['value']:.1f}%)"
            for n in room["n"]
        )
    )
    return room


# The config fields copied into results.json "settings".
SETTINGS = (
    "data",
    "split",
    "n_samples",
    "temperature",
    "top_p",
    "max_new_tokens",
    "max_prompt_len",
    "seed",
    "baseline",
    "base",
    "world_dir",
    "judge_reward_model",
    "n_bootstrap",
    "confidence",
    "heldout_blocks",
)


def _settings(cfg, rows, n_main, probe, nlp_items, judge: str, n_blocks: dict) -> dict[str, Any]:
    settings = {k: getattr(cfg, k) for k in SETTINGS}
    settings.update(
        n_prompts=n_main,
        n_probe_prompts=len(rows) - n_main,
        probe_split=cfg.probe_split if probe else None,
        n_nlp_items=len(nlp_items) if nlp_items else 0,
        judge=judge,
        n_heldout_blocks=max(n_blocks.values(), default=0),
        clusters=sorted({r.get("cluster") for r in rows if r.get("cluster")}),
    )
    return settings


def run(cfg: EvaluateConfig) -> dict:
    from alignlab.training import resolve_device

    t_start = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []

    def note(msg: str) -> None:
        print(f"evaluate: {msg}")
        notes.append(msg)

    _check(cfg)
    paths, order = _policy_paths(cfg, note)
    ds = load_dataset_any(cfg.data, cfg.split)
    require_column(ds, cfg.prompt_column, f"{cfg.data} ({cfg.split} split)", "prompt_column", alternative="messages")
    rows = _rows(ds, cfg.max_prompts)
    n_main = len(rows)
    probe = _probe_rows(cfg)
    if probe:  # sampled too, but counted only for held-out constraint compliance
        rows += [dict(r, probe=True) for r in probe]
    device = resolve_device(cfg.device)
    judges = _judges(cfg, rows, device, note)
    tax = _tax_data(cfg, judges, note)
    prompts = [prompt_of(r, cfg.prompt_column) for r in rows]
    few_shot = _few_shot_demos(cfg, judges, prompts)
    demos = [(d["prompt"], d["response"]) for d in few_shot["demonstrations"]] if few_shot else ()
    sampled = _sample_policies(cfg, paths, order, prompts, n_main, judges.world, tax, device, note, demos)
    if cfg.best_of_n:
        paths.update(_add_best_of_n(cfg, sampled, rows, prompts, device))

    # ---- judge and aggregate
    t_judge = time.time()
    boot = dict(n_boot=cfg.n_bootstrap, confidence=cfg.confidence, seed=cfg.seed)
    results, sample_rows = evaluate_responses(
        rows, sampled.samples, cfg.baseline, world=judges.world, reward_judge=judges.reward_judge, **boot
    )
    for name in list(results):
        m = results[name] = {"path": paths[name], **results[name]}
        add_tax(m, name, cfg.base, sampled.nll, sampled.correct, tax[1], boot)
    room = _headroom(cfg, judges.world, rows, n_main, sampled, boot)
    constant = None
    if judges.world is not None:  # the yardstick of a win by declining (constant_answers.py)
        constant = constant_answer_metrics(rows, sampled.samples[cfg.baseline], cfg.baseline, judges.world, **boot)
    judge_seconds = round(time.time() - t_judge, 2)

    total = round(time.time() - t_start, 2)
    report = {
        "settings": _settings(cfg, rows, n_main, probe, tax[1], judges.name, sampled.n_blocks),
        "notes": notes,
        "policies": results,
        "headroom": room,
        "constant_answers": constant,
        "few_shot": {**few_shot, "policies": cfg.few_shot, "mean_shown": sampled.shown} if few_shot else None,
        "seconds": {"policies": sampled.seconds, "judging": judge_seconds, "total": total},
    }
    atomic_write_json(out / "results.json", report)
    atomic_write_text(out / "samples.jsonl", "".join(_json_line(r) for r in sample_rows))

    table = headline(report)
    print_table(table, cfg.baseline)
    return {
        "baseline": cfg.baseline,
        "base": cfg.base,
        "judge": judges.name,
        "n_prompts": n_main,
        # evaluate trains nothing: its prompts are held out from the stages that did (the world's test split)
        "heldout": {
            "source": cfg.data,
            "split": cfg.split,
            "how": "split" if has_split(cfg.data, cfg.split) else "all rows",
            "prompts": n_main,
        },
        "n_samples": cfg.n_samples,
        "policies": table,
        "notes": notes,
        "results": str(out / "results.json"),
        "seconds": total,
    }


def add_tax(m: dict, name: str, base: str, nll: dict, correct: dict, nlp_items, boot: dict) -> None:
    """heldout_ptx_loss / nlp_accuracy (+ by task) and their paired differences from ``base``."""
    m["heldout_ptx_loss"] = bootstrap_mean(nll[name], key="heldout_ptx_loss", **boot) if name in nll else interval(None)
    m["nlp_accuracy"] = bootstrap_mean(correct[name], key="nlp_accuracy", **boot) if name in correct else interval(None)
    if name in correct:
        tasks = np.array([it.get("task", "all") for it in nlp_items])
        m["nlp_accuracy_by_task"] = {
            t: bootstrap_mean(correct[name][tasks == t], key=f"nlp.{t}", **boot) for t in sorted(set(tasks.tolist()))
        }
    for key, store in (("heldout_ptx_loss_delta", nll), ("nlp_accuracy_delta", correct)):
        if name in store and base in store and store[name].shape == store[base].shape:
            m[key] = paired_delta(store[name], store[base], key=key, **boot)
        else:
            m[key] = interval(None)


def headline(report: dict) -> dict[str, dict[str, Any]]:
    """Per policy, the value of each HEADLINE metric (None where not measured)."""
    table = {}
    for name, m in report["policies"].items():
        table[name] = {k: (m[k].get("value") if isinstance(m.get(k), dict) else m.get(k)) for k in HEADLINE}
    return table


def _json_line(row: dict) -> str:
    import json

    return json.dumps(row) + "\n"


def _fmt(v, pct: bool = False, signed: bool = False) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:+.1f}" if signed else f"{100 * v:.1f}"
    return f"{v:+.3f}" if signed else f"{v:.3f}"


def print_table(table: dict[str, dict[str, Any]], baseline: str) -> None:
    cols = [  # header, key, percent?, signed?
        ("win(train)%", "win_rate_train_labelers", True, False),
        ("win(heldout)%", "win_rate_heldout_labelers", True, False),
        ("win(RM)%", "win_rate_reward_model", True, False),
        ("helpful%", "helpfulness", True, False),
        ("truthful%", "truthfulness", True, False),
        ("harm%", "harm_rate", True, False),
        ("unknown%", "unknown_rate", True, False),
        ("ptx_loss", "heldout_ptx_loss", False, False),
        ("Δloss", "heldout_ptx_loss_delta", False, True),
        ("nlp_acc%", "nlp_accuracy", True, False),
        ("Δacc%", "nlp_accuracy_delta", True, True),
        ("KL", "kl_to_baseline", False, False),
        ("len", "length", False, False),
    ]
    cols = [c for c in cols if any(t.get(c[1]) is not None for t in table.values())]
    width = max([len(n) for n in table] + [6])
    header = f"{'policy':<{width}}  " + "  ".join(f"{h:>{max(len(h), 7)}}" for h, *_ in cols)
    print(f"\nevaluation (win rates against '{baseline}'):")
    print(header)
    for name, t in table.items():
        print(
            f"{name:<{width}}  "
            + "  ".join(f"{_fmt(t.get(k), pct, signed):>{max(len(h), 7)}}" for h, k, pct, signed in cols)
        )
