"""Stage: expert iteration (AlpacaFarm, Dubois et al. 2023): SFT on the SFT policy's own best-of-n answers.

One round, in three steps, each leaving its result in ``output_dir``:

  1. select   the SFT policy samples ``n`` responses to each prompt of ``data`` (temperature 1, as PPO's
              rollouts; the prompts PPO trains on), the reward model scores every one, and the best of
              each prompt's n is kept (``evaluate/best_of_n.py``; a response that hit ``max_new_tokens``
              without EOS scores ``no_eos_penalty``, as in PPO). Written as ``best_of_n.jsonl``
              (prompt/completion, one row per prompt) and ``best_of_n.json`` (the scores and
              KL(best-of-n || SFT) = log n - (n-1)/n, the KL the selected data sit at).
  2. tune     the SFT stage (``stages/sft.py``, run through the registry as instruct_tune runs it) fine-tunes
              the SFT policy on ``best_of_n.jsonl``, in ``output_dir/sft``; its held-out share of those
              prompts picks the kept epoch by the reward model's score of greedy answers (``judge``).
  3. publish  the tuned policy is written to ``output_dir`` itself, where the evaluation reads a policy.

Unlike PPO, nothing is learned from responses worse than the best: the policy only imitates its own
selected answers, so it moves at most as far as the selected data (the best-of-n KL) per round. Resuming
(``run.resume``) reuses a finished selection and continues the SFT run from its last epoch; the sampling is
a function of the seed, so a fresh run selects the same answers.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from accelerate import PartialState

from alignlab.config import apply, arg
from alignlab.data.chat import encode_prompts, prompt_of
from alignlab.data.heldout import load_train_eval
from alignlab.errors import ConfigError
from alignlab.evaluate.best_of_n import BestOfN, Scorer, best_of_n
from alignlab.evaluate.heldout_set import world_judge
from alignlab.evaluate.judges import RewardModelJudge
from alignlab.models.load import check_model_path, context_length, load_causal_lm, load_tokenizer
from alignlab.outputs import atomic_write_json, atomic_write_text, read_summary
from alignlab.sections import RunSettings
from alignlab.stages.registry import STAGES, run_stage
from alignlab.training import cpu_threads, publish_model, resolve_device

SELECTED = "best_of_n.jsonl"  # the SFT stage's data: the kept answer of each prompt


@dataclass
class ExpertIterationConfig:
    policy: str = arg("runs/sft", "the SFT policy: it writes the n answers and is the model tuned on the best")
    reward_model: str = arg("runs/reward", "reward model that picks the best of n (and the SFT stage's kept epoch)")
    data: str = arg("runs/world/ppo", "prompts (PPO's): saved datasets folder, .jsonl/.parquet or hub id")
    split: str = arg("train", "split of `data`")
    prompt_column: str = arg("prompt", "column with the prompt (text or messages)")
    world_dir: str = arg(
        "runs/world", "built-in world: the gold reward of the samples and of the kept ones; empty = off"
    )
    prompts: int = arg(0, "prompts to sample (the first N of `data`); 0 = all")
    n: int = arg(16, "samples per prompt, the best of which is kept (AlpacaFarm's expert iteration: 16)")
    temperature: float = arg(1.0, "sampling temperature (PPO's rollouts: 1)")
    max_prompt_len: int = arg(96, "prompt tokens kept (cut from the left), as PPO's rollout.max_prompt_len")
    max_new_tokens: int = arg(32, "response length cap, as PPO's rollout.max_new_tokens")
    no_eos_penalty: float | None = arg(
        -1.0, "score of a sample that hit max_new_tokens without EOS, in place of the RM's (PPO's default); null = none"
    )
    gen_batch_size: int = arg(64, "prompts per generation batch")
    score_batch_size: int = arg(32, "responses per reward-model batch")
    epochs: int = arg(2, "SFT epochs on the selected answers")
    lr: float = arg(1e-4, "SFT peak learning rate: a tenth of SFT's own, as the model starts from the SFT policy")
    batch_size: int = arg(32, "SFT examples per optimiser step")
    judge: Literal["reward_model", "loss"] = arg(
        "reward_model", "what picks the SFT stage's kept epoch: the reward model's score of held-out answers, or loss"
    )
    run: RunSettings = arg(factory=RunSettings, help=RunSettings.HELP + " (the seed samples and trains)")
    output_dir: str = arg("runs/expert_iteration", "selected data, the SFT run (sft/) and the tuned policy")


PRESETS = {"smoke": {"prompts": 32, "n": 4, "max_new_tokens": 12, "epochs": 1, "batch_size": 16}, "default": {}}


def check_settings(cfg: ExpertIterationConfig) -> None:
    """Refuse settings expert iteration cannot run with, before any model is loaded."""
    if cfg.n < 2:
        raise ConfigError(f"n: best-of-n needs at least 2 samples per prompt to choose from, got {cfg.n}")
    if cfg.temperature <= 0:
        raise ConfigError("temperature must be > 0: greedy decoding gives the same answer n times")


# ------------------------------------------------------------------------------ 1. select


def prompt_rows(cfg: ExpertIterationConfig) -> list[dict[str, Any]]:
    """The prompts to sample: ``data``'s split (all of it: the evaluation's prompts are elsewhere), each row
    with its prompt under ``prompt`` (the judges read it there)."""
    ds = load_train_eval(cfg.data, cfg.split, "", column=cfg.prompt_column, column_key="prompt_column").train
    rows = [ds[i] for i in range(len(ds) if not cfg.prompts else min(cfg.prompts, len(ds)))]
    return [{**r, "prompt": prompt_of(r, cfg.prompt_column)} for r in rows]


def select(cfg: ExpertIterationConfig, rows: list[dict[str, Any]], scorer: Scorer) -> BestOfN:
    """The SFT policy's best of n on each prompt, by ``scorer``."""
    device = resolve_device(cfg.run.device)
    tok = load_tokenizer(cfg.policy)
    policy = load_causal_lm(cfg.policy).to(device)
    max_prompt = min(cfg.max_prompt_len, context_length(policy) - cfg.max_new_tokens - 1)
    if max_prompt < 8:
        raise ConfigError(f"max_new_tokens ({cfg.max_new_tokens}) leaves no room for a prompt in the policy's context")
    ids = encode_prompts(tok, [r["prompt"] for r in rows], max_prompt)
    return best_of_n(
        policy,
        tok,
        rows,
        ids,
        cfg.n,
        scorer,
        temperature=cfg.temperature,
        max_new_tokens=cfg.max_new_tokens,
        seed=cfg.run.seed,
        batch_size=cfg.gen_batch_size,
        no_eos_penalty=cfg.no_eos_penalty,
    )


def write_selection(out: Path, rows: list[dict[str, Any]], bon: BestOfN, gold: dict[str, float]) -> Path:
    """``best_of_n.jsonl`` (the kept answer of each prompt, the SFT stage's data) and ``best_of_n.json``."""
    import json

    lines = [json.dumps({"prompt": r["prompt"], "completion": t}) for r, t in zip(rows, bon.best_texts)]
    atomic_write_text(out / SELECTED, "".join(line + "\n" for line in lines))
    atomic_write_json(out / "best_of_n.json", {**bon.summary(), **gold, "by_n": bon.by_n(_halvings(bon.n))})
    return out / SELECTED


def _halvings(n: int) -> list[int]:
    """1, 2, 4, ... up to n (and n itself): the best-of-n curve recorded beside the kept n."""
    ns = [1]
    while ns[-1] * 2 < n:
        ns.append(ns[-1] * 2)
    return [*ns, n]


def gold_of(judge, rows: list[dict[str, Any]], bon: BestOfN) -> dict[str, float]:
    """On the built-in world (``judge``: its ``WorldJudge``, or None): the gold reward of a single sample and of
    the kept one -- does the reward model's pick raise the labelers' reward?"""
    if judge is None or "meta" not in rows[0]:
        return {}
    flat = [r for r in rows for _ in range(bon.n)]
    every = judge.gold(flat, [t for row in bon.texts for t in row])
    kept = judge.gold(rows, bon.best_texts)
    return {"gold_mean": round(sum(every) / len(every), 4), "best_gold_mean": round(sum(kept) / len(kept), 4)}


# -------------------------------------------------------------------------------- 2. tune


def sft_config(cfg: ExpertIterationConfig, data: Path, run_dir: Path, resume: bool):
    """The SFT stage's config: the SFT policy tuned on the selected answers (the SFT stage's config class)."""
    settings = {
        "model": cfg.policy,
        "data": str(data),
        "judge": cfg.judge,
        "reward_model": cfg.reward_model if cfg.judge == "reward_model" else None,
        "world_dir": "",
        "eval_base": True,  # the SFT policy's own validation numbers, for the record (epoch 0)
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "val_max_new_tokens": cfg.max_new_tokens,
        "optim": {"lr": cfg.lr, "warmup_steps": 0},
        "run": {**_run_settings(cfg), "resume": resume},
        "output_dir": str(run_dir),
    }
    return apply(STAGES["sft"].load()[0](), settings, "expert-iteration")


def _run_settings(cfg: ExpertIterationConfig) -> dict[str, Any]:
    """The run. settings the SFT run shares (SFT checkpoints every epoch: checkpoint_interval is not one)."""
    keys = ("seed", "device", "threads", "tensorboard", "log_interval", "skip_nonfinite")
    return {k: getattr(cfg.run, k) for k in keys}


# ------------------------------------------------------------------------------- the stage


def run(cfg: ExpertIterationConfig, scorer: Scorer | None = None) -> dict:
    """``scorer(records, responses)`` replaces the reward model's pick (a test's stub, or another judge)."""
    t0, out = time.time(), Path(cfg.output_dir)
    check_settings(cfg)
    check_model_path(cfg.policy)
    state = PartialState(cpu=resolve_device(cfg.run.device) == "cpu")
    with cpu_threads(cfg.run.threads):
        rows = prompt_rows(cfg)
        judge = world_judge(cfg.world_dir)  # a wrong world_dir is refused before any sampling
        data = out / SELECTED
        reuse = cfg.run.resume and data.is_file() and (out / "best_of_n.json").is_file()
        if not reuse:  # every rank samples the same answers (same seed); the main one writes them
            if scorer is None:
                check_model_path(cfg.reward_model)
                scorer = RewardModelJudge(
                    cfg.reward_model, resolve_device(cfg.run.device), batch_size=cfg.score_batch_size
                ).score
            bon = select(cfg, rows, scorer)
            if state.is_main_process:
                write_selection(out, rows, bon, gold_of(judge, rows, bon))
                print(f"expert-iteration: best of {cfg.n} on {len(rows)} prompts: {_line(bon)}")
        state.wait_for_everyone()
        sft_dir = out / "sft"
        sft = read_summary(sft_dir) if cfg.run.resume else None
        if sft is None:
            sft = run_stage("sft", sft_config(cfg, data, sft_dir, cfg.run.resume))
        if state.is_main_process:
            publish_model(out, load_causal_lm(str(sft_dir)), load_tokenizer(str(sft_dir)))
    return summarize(out, sft, len(rows), t0)


def _line(bon: BestOfN) -> str:
    s = bon.summary()
    return f"RM {s['score_mean']:.3f} per sample -> {s['best_score_mean']:.3f} kept (KL {s['kl_best_of_n']:.2f} nats)"


def summarize(out: Path, sft: dict[str, Any], prompts: int, t0: float) -> dict[str, Any]:
    """summary.json: the selection's numbers, and the SFT run's on the selected answers."""
    import json

    selection = json.loads((out / "best_of_n.json").read_text())
    keys = ("chosen_epoch", "selected_by", "best_val_reward", "base_val_reward", "chosen_val_loss", "train_examples")
    return {
        **{k: v for k, v in selection.items() if k != "by_n"},
        "best_of_n_by_n": selection["by_n"],
        "prompts": prompts,
        "selected_data": str(out / SELECTED),
        "sft": {k: sft.get(k) for k in keys},
        "seconds": round(time.time() - t0, 1),
    }
