"""PPO's results: the final model and samples written, summary.json's numbers, the printed line, the model card.

The summary compares the held-out numbers before and after training (same prompts, same seed), the
training curve's first and last iterations, and flags reward hacking: the proxy (RM) score up while
the gold reward goes down."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

from alignlab.evaluate.heldout_samples import paired_delta_ci
from alignlab.outputs import atomic_write_json, write_model_card
from alignlab.summaries import PPOSummary
from alignlab.training import publish_model

CARD = """## Method
PPO against a frozen reward model with a per-token KL penalty to the SFT policy (InstructGPT).
The value model (`value_model/`) is a copy of the reward model whose scalar head is applied at
every token; load it with `AutoModelForSequenceClassification`. Held-out numbers compare the
SFT policy (before) and this policy (after) on the same prompts with the same sampling seed."""

# rloo and grpo: the same stage without a value model (``advantage``)
GROUP_CARD = {
    "rloo": "RLOO (Ahmadian et al. 2024): {k} samples per prompt, each judged against the mean reward of the "
    "other {k1}; the reward is the RM score minus beta x the KL to the SFT policy summed over the response.",
    "grpo": "GRPO (Shao et al. 2024): {k} samples per prompt, each reward standardised by its group's mean and "
    "std; the KL to the SFT policy is a k3 loss term weighted by beta.",
}
GROUP_CARD_TAIL = """ PPO's clipped policy loss with these advantages on every response token; no value model.
Held-out numbers compare the SFT policy (before) and this policy (after) on the same prompts with the same
sampling seed."""


def card(cfg) -> str:
    """The model card's method section for the run's advantage mode."""
    if cfg.advantage == "gae":
        return CARD
    text = GROUP_CARD[cfg.advantage].format(k=cfg.group_size, k1=cfg.group_size - 1)
    return "## Method\n" + text + GROUP_CARD_TAIL


def progress(metrics: dict[str, float]) -> dict[str, str]:
    """The progress bar's numbers of one iteration."""
    post = {"rm": f"{metrics['rm_score_mean']:.2f}", "kl": f"{metrics['kl']:.2f}", "beta": f"{metrics['beta']:.3g}"}
    if "gold_mean" in metrics:
        post["gold"] = f"{metrics['gold_mean']:.3f}"
    return post


def finish(
    out: Path, cfg, trainer, tokenizer, heldout, initial: dict, final, final_pt, facts: dict, gathered=None
) -> dict:
    """Publish the policy and value model (gae; rloo and grpo have none), write samples.json, the summary line
    and the model card; return the summary. ``heldout``: the run's ``ppo_eval.HeldoutEval``, ``final`` its last
    measurement; ``facts``: method (``ppo_config.method_name``), start (iteration resumed from), t_start,
    max_prompt_len, history. ``gathered``: (policy, value model or None) gathered from FSDP2 shards
    (``ppo_checkpoint.gathered``), published instead of the trainer's sharded models."""
    acc = trainer.acc
    if gathered is not None:
        policy, value = gathered
    else:
        policy = acc.unwrap_model(trainer.policy)
        value = None if trainer.value is None else acc.unwrap_model(trainer.value).model
    parts = {} if value is None else {"value_model": value}
    publish_model(out, policy, tokenizer, cfg.lora, parts=parts)
    atomic_write_json(out / "samples.json", {"before": initial.get("samples"), "after": heldout.samples(final)})
    facts = {**facts, "heldout_sampling": heldout.description(), "heldout_records": heldout.records()}
    summary = summarize(cfg, initial, final, final_pt, facts["history"], trainer.kl_ctl.beta, facts)
    print_summary(summary, facts["method"])
    write_model_card(out, facts["method"], summary, extra=card(cfg))
    return summary


def summarize(cfg, initial: dict, final, final_pt, history: list[dict], beta: float, facts: dict) -> PPOSummary:
    """summary.json's numbers (the keys the report reads: ``summaries.PPOSummary``); ``final`` is a
    ``ppo_eval.Heldout``."""
    s: dict[str, Any] = {
        "iterations": cfg.iterations,
        "episodes": cfg.iterations * cfg.batch_size * cfg.group_size,
        "advantage": cfg.advantage,  # gae (PPO), rloo or grpo
        "group_size": cfg.group_size,  # samples per prompt
        "ptx_coef": cfg.ptx.coef,
        "resumed_from_iteration": facts["start"] or None,
    }
    for key in ("rm_score", "gold", "eos_frac", "response_len", "rm_score_greedy", "gold_greedy", "kl"):
        a, b = initial.get(f"heldout_{key}"), final.metrics.get(f"heldout_{key}")
        if a is not None and b is not None:
            s[f"heldout_{key}_initial"], s[f"heldout_{key}_final"] = round(a, 4), round(b, 4)
    s["heldout_sampling"] = facts["heldout_sampling"]
    s.update(facts.get("heldout_records", {}))  # where the held-out prompts and pretraining text came from
    if history:
        s["train_rm_score_first5"] = _mean(history, "rm_score_mean", last=False)
        s["train_rm_score_last5"] = _mean(history, "rm_score_mean", last=True)
        if "gold_mean" in history[0]:
            s["train_gold_first5"] = _mean(history, "gold_mean", last=False)
            s["train_gold_last5"] = _mean(history, "gold_mean", last=True)
        s["final_kl"] = _mean(history, "kl", last=True)
        s["final_entropy"] = _mean(history, "entropy", last=True)
        for part in ("t_rollout", "t_score", "t_update"):
            s[f"seconds_per_iteration_{part[2:]}"] = round(statistics.fmean(h[part] for h in history), 3)
    s["final_beta"] = round(beta, 6)
    s["kl_adaptive"] = cfg.kl.adaptive
    if cfg.kl.adaptive:
        s["kl_target"] = cfg.kl.target
    if initial.get("pretrain_loss") is not None and final_pt is not None:
        s["pretrain_loss_initial"], s["pretrain_loss_final"] = round(initial["pretrain_loss"], 4), round(final_pt, 4)
    if "heldout_rm_score_initial" in s and "heldout_gold_initial" in s:
        s.update(_hacking(s, initial.get("gold_scores") or {}, final.gold_scores, cfg.hack_margin))
    s["max_prompt_len"] = facts["max_prompt_len"]
    s["seconds"] = round(time.time() - facts["t_start"], 1)
    return s


def _mean(history: list[dict], key: str, last: bool, n: int = 5) -> float | None:
    """Mean of ``key`` over the first (or last) ``n`` iterations (a batch skipped as non-finite logged None)."""
    vals = [h[key] for h in (history[-n:] if last else history[:n]) if h.get(key) is not None]
    return round(statistics.fmean(vals), 4) if vals else None


def _hacking(s: dict, gold_before: dict, gold_after: dict, m: float) -> dict[str, Any]:
    """Reward hacking: held-out RM score up by more than ``m`` and gold down by more than ``m``, under
    sampled or greedy decoding; with the bootstrap interval of each gold change."""
    hacked, out = [], {}
    for suffix in ("", "_greedy"):
        if f"heldout_gold{suffix}_initial" in s:
            d_rm = s[f"heldout_rm_score{suffix}_final"] - s[f"heldout_rm_score{suffix}_initial"]
            d_gold = s[f"heldout_gold{suffix}_final"] - s[f"heldout_gold{suffix}_initial"]
            hacked.append(d_rm > m and d_gold < -m)
    out["reward_hacking_detected"] = any(hacked)
    for suffix, before in gold_before.items():
        if suffix in gold_after:
            out[f"heldout_gold{suffix}_delta_ci95"] = paired_delta_ci(before, gold_after[suffix])
    out["hack_rule"] = f"held-out RM score up by > {m} and gold down by > {m} (sampled or greedy decoding)"
    out["hack_margin"] = m  # the report judges over-optimisation with the margin the run used
    return out


def print_summary(s: dict[str, Any], method: str = "ppo") -> None:
    parts = [f"{method}: {s['iterations']} iterations in {s['seconds']}s"]
    if "heldout_rm_score_initial" in s:
        parts.append(f"held-out RM {s['heldout_rm_score_initial']:.3f} -> {s['heldout_rm_score_final']:.3f}")
    if "heldout_gold_initial" in s:
        parts.append(f"gold {s['heldout_gold_initial']:.3f} -> {s['heldout_gold_final']:.3f}")
    if s.get("final_kl") is not None:
        parts.append(f"KL {s['final_kl']:.2f} (beta {s['final_beta']:.4g})")
    if "pretrain_loss_initial" in s:
        parts.append(f"pretrain loss {s['pretrain_loss_initial']:.3f} -> {s['pretrain_loss_final']:.3f}")
    print("; ".join(parts))
    if s.get("reward_hacking_detected"):
        print("  REWARD HACKING: the proxy reward rose while the gold reward fell (raise kl.beta or stop earlier)")
