"""The report's section on ``alignlab study methods``: AlpacaFarm's method table with the exact judge beside it.

One row per method (and per best-of-n), each the mean over the study's seeds with a 95% t-interval over
seeds; the sentence above the table says which method won here, by how much over PPO, and at what cost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignlab.report import plots
from alignlab.report.why_rlhf import _ci, _frac


def _label(name: str) -> str:
    if name.startswith("best_of_"):
        return f"best-of-{name.removeprefix('best_of_')} (SFT, RM picks)"
    return plots.LABELS.get(name, name)


def _num(x: dict, fmt: str, signed: bool = False) -> str:
    v = (x or {}).get("value")
    if v is None:
        return "–"
    return format(v, ("+" if signed else "") + fmt)


def _cost(name: str, m: dict[str, Any]) -> str:
    """Policy samples a method drew: in training, or per answer at inference (best-of-n)."""
    inference = (m.get("inference_samples") or {}).get("value")
    if inference:
        return f"{inference:.0f} per answer, at inference"
    samples = (m.get("policy_samples") or {}).get("value")
    if samples:
        return f"{samples:.0f} in training"
    return "none (the demonstrations)" if name == "sft" else "none (the comparisons)"


def winner_sentence(table: dict[str, dict[str, Any]], n_seeds: int) -> str:
    """Which method has the highest held-out win rate against SFT, its margin over PPO, and its cost."""
    wins = {n: m["win_rate_heldout_labelers"]["value"] for n, m in table.items() if n != "sft"}
    wins = {n: w for n, w in wins.items() if w is not None}
    if not wins:
        return "No method has a win rate (the evaluation had no world labelers)."
    best = max(wins, key=wins.get)
    m = table[best]
    secs = (m.get("seconds") or {}).get("value")
    text = (
        f"Over {n_seeds} seed(s), {_label(best)} has the highest win rate against SFT by held-out labelers: "
        f"{_ci(m, 'win_rate_heldout_labelers')}, gold {_frac(m['gold_reward'])}, KL to SFT "
        f"{_num(m['kl_to_baseline'], '.2f')} nats, policy samples: {_cost(best, m)}"
        + (f", {secs:.0f} s" if secs else "")
        + "."
    )
    if best != "ppo" and "ppo" in wins:
        text += f" PPO: {100 * wins['ppo']:.1f}% ({100 * (wins[best] - wins['ppo']):+.1f} points)."
    low = m["win_rate_heldout_labelers"].get("low")
    others = [w for n, w in wins.items() if n != best]
    if low is not None and others and low <= max(others):
        text += " Its interval overlaps the next methods' means: with these seeds the ranking is not settled."
    return text


def methods_section(doc, study: dict | None, out: Path) -> None:
    if not study or not study.get("methods"):
        return
    table, seeds = study["methods"], study.get("seeds", [])
    doc.h("Which method? PPO, DPO, RLOO, GRPO, expert iteration and best-of-n from one SFT and RM")
    doc.p(
        f"From `alignlab study methods` ({study.get('run_dir')}, seeds {seeds}): every method starts from the same SFT "
        f"policy, comparisons and reward model of its seed; the sampling methods get PPO's "
        f"{study['budget']['episodes']} policy samples, DPO learns from the comparisons, and best-of-n samples n "
        "answers per prompt at inference. Each value is the mean over seeds with a 95% t-interval over seeds; "
        "wall time is each step's own (training; for best-of-n, sampling and scoring n per test prompt)."
    )
    doc.p(winner_sentence(table, len(seeds)))
    rows = [
        [
            _label(name),
            _ci(m, "win_rate_heldout_labelers"),
            _ci(m, "win_rate_train_labelers"),
            _frac(m["gold_reward"]),
            _num(m["kl_to_baseline"], ".2f"),
            _ci(m, "over_refusal_rate"),
            _ci(m, "closed_domain_hallucination_rate"),
            _num(m["heldout_ptx_loss_delta"], ".3f", signed=True),
            _cost(name, m),
            _num(m.get("seconds"), ".0f"),
        ]
        for name, m in table.items()
    ]
    doc.table(
        [
            "method",
            "win vs SFT (held-out labelers)",
            "(training labelers)",
            "gold",
            "KL to SFT",
            "over-refusal",
            "closed-domain hallucination",
            "Δ pretraining loss vs base",
            "policy samples",
            "seconds",
        ],
        rows,
    )
    doc.image(plots.methods(table, out / "report_methods.png"), "win rate against compute, gold against KL")
    _against_overoptimization(doc, study.get("best_of_n_against_overoptimization"))


def _against_overoptimization(doc, check: dict | None) -> None:
    """Best-of-n here against the over-optimisation study's fitted law for the same SFT policy and RM."""
    if not check:
        return
    rows = [
        [str(n), f"{x['d']:.2f}", f"{x['gain']:+.3f} [{x['low']:+.3f}, {x['high']:+.3f}]", f"{x['law']:+.3f}",
         "yes" if x["inside"] else "no"]
        for n, x in check["by_n"].items()
    ]  # fmt: skip
    doc.p(
        "Best-of-n against the over-optimisation study's law (`alignlab study overoptimization`, the same SFT policy "
        "and RM, other draws and prompts): the gold gain of best-of-n over best-of-1 here (first seed, paired over "
        "prompts, 95% bootstrap) and R(d) = d(α − β·d) fitted there, at d = sqrt(log n − (n−1)/n)."
    )
    doc.table(["n", "d", "gain here", "the law", "law inside the interval"], rows)
