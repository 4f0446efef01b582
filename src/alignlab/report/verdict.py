"""The report's verdict: each result the papers lead us to expect, judged against a stated target.

Every claim is always listed. One whose inputs the run lacks (a stage's file, or a key in it)
is listed as not measured with the reason, so a renamed key cannot shorten the verdict unseen.
The keys are those declared in ``alignlab.summaries``.
"""

from __future__ import annotations

from typing import Any

from alignlab.report import why_rlhf
from alignlab.report.claim import Claim, lacks, not_measured
from alignlab.report.plots import LABELS
from alignlab.summaries import (
    EVALUATE,
    FLAN,
    GOLD_GREEDY,
    GOLD_SAMPLED,
    LABELER_GROUPS,
    METRIC,
    PPO,
    REWARD,
    GoldReadout,
    LabelerGroup,
)

# The margin of the ppo stage's hack rule when the no-KL run's summary does not record it (its default).
DEFAULT_HACK_MARGIN = 0.02


def verdict(d: dict[str, Any], cfg) -> list[Claim]:
    """(claim, met? -- None when not measured, the numbers) for each result the papers lead us to expect."""
    pol = (d["evaluate"] or {}).get(EVALUATE.policies, {})
    out = []
    out += why_rlhf.win_rate_claims(d["evaluate_seeds"], cfg)
    out += why_rlhf.gold_claims(d["ppo"])
    out += why_rlhf.figure4_claims(d["evaluate_seeds"], cfg)
    out += why_rlhf.agreement_claims(d["world"])
    out += rm_claims(d["reward"], d.get("reward_seeds") or [], d["world"], cfg)
    out += tax_claims(pol, cfg)
    out += truth_and_harm_claims(pol)
    out += hacking_claims(d)
    out += flan_claims(d["flan"], d["flan_seeds"])
    return out


def _evaluated(pol: dict, *policies: str) -> str | None:
    """Why ``policies`` cannot be compared (None when every one was evaluated)."""
    if not pol:
        return "the run has no evaluate/results.json"
    missing = [p for p in policies if p not in pol]
    return f"evaluate results have no policy {missing[0]}" if missing else None


# ------------------------------------------------------------------ reward model


def rm_claims(r: dict | None, per_seed: list[dict], w: dict | None, cfg) -> list[Claim]:
    """The RM's accuracy against two comparators, for the training and the held-out labelers.

    Both comparators are shown: the labelers' agreement on the RM's own validation pairs (what InstructGPT
    measured: agreement on its comparison data) and the world's calibrated figure on its candidate sets.
    With several seeds the gap is judged on its mean over seeds (each seed has its own comparisons and RM),
    as FLAN is: one seed's gap moves by a few points from seed to seed.
    """
    out = []
    for g in LABELER_GROUPS:
        same = (
            f"RM accuracy ({g.name} labelers) within {100 * cfg.target_rm_gap:.0f} points of the labelers' "
            "agreement on the same validation pairs"
        )
        world = (
            f"RM accuracy ({g.name} labelers) within {100 * cfg.target_rm_gap:.0f} points of the world's "
            "labeler agreement (its candidate sets)"
        )
        if not r:
            out += [
                not_measured(same, "the run has no reward summary"),
                not_measured(world, "the run has no reward summary"),
            ]
            continue
        out += _rm_group_claims(g, r, per_seed or [r], w, cfg, same, world)
    return out


def _rm_group_claims(g: LabelerGroup, r: dict, per_seed: list[dict], w: dict | None, cfg, same_claim, world_claim):
    # The agreement is an exact expectation over the labelers' Bradley-Terry choices, so the RM's accuracy is
    # taken the same way where the reward stage measured it (expected accuracy); accuracy against the one
    # sampled ranking per prompt estimates the same quantity with sampling noise and is shown beside it.
    use_expected = all(x.get(g.expected_accuracy) is not None for x in per_seed)
    acc_key = g.expected_accuracy if use_expected else g.sampled_accuracy
    acc, same, ceiling = r.get(acc_key), r.get(g.agreement_same_pairs), r.get(g.ceiling)
    agr = (w or {}).get(g.world_agreement)
    if acc is None:
        reason = lacks("reward summary", acc_key)
        return [not_measured(same_claim, reason), not_measured(world_claim, reason)]
    ceil_note = f"; a perfect gold reward model would score {100 * ceiling:.1f}%" if ceiling is not None else ""
    rm_note = ""
    if use_expected and r.get(g.sampled_accuracy) is not None:
        sampled = [x[g.sampled_accuracy] for x in per_seed if x.get(g.sampled_accuracy) is not None]
        rm_note = (
            f" (in expectation over the labelers' choices, as their agreement is; against the sampled labels "
            f"{100 * r[g.sampled_accuracy]:.1f}%"
            + (f", mean over seeds {100 * sum(sampled) / len(sampled):.1f}%)" if len(sampled) > 1 else ")")
        )
    out = []
    if same is None:
        out.append(not_measured(same_claim, lacks("reward summary", g.agreement_same_pairs)))
    else:
        gaps = [
            abs(x[acc_key] - x[g.agreement_same_pairs])
            for x in per_seed
            if x.get(acc_key) is not None and x.get(g.agreement_same_pairs) is not None
        ]
        gap, over = _mean_gap(gaps)
        numbers = f"RM {100 * acc:.1f}%{rm_note} vs labelers {100 * same:.1f}% on {r.get(REWARD.val_pairs)} pairs"
        out.append((same_claim, gap <= cfg.target_rm_gap, f"{numbers}{ceil_note}{over}"))
    if agr is None:
        out.append(not_measured(world_claim, lacks("world stats", g.world_agreement) if w else "the run has no world"))
    else:
        gap, over = _mean_gap([abs(x[acc_key] - agr) for x in per_seed if x.get(acc_key) is not None])
        expected = " (expected)" if use_expected else ""
        numbers = f"RM {100 * acc:.1f}%{expected} vs labelers {100 * agr:.1f}%{over}"
        out.append((world_claim, gap <= cfg.target_rm_gap, numbers))
    return out


def _mean_gap(gaps: list[float]) -> tuple[float, str]:
    """The gap the claim is judged on (mean over seeds) and, with several seeds, a note listing them."""
    mean = sum(gaps) / len(gaps)
    if len(gaps) < 2:
        return mean, ""
    return (
        mean,
        f"; gap per seed {', '.join(f'{100 * g:.1f}' for g in gaps)} pts, mean {100 * mean:.1f} over {len(gaps)} seeds",
    )


# ------------------------------------------------------------------ evaluation


def _v(m: dict | None, key: str) -> float | None:
    x = (m or {}).get(key)
    return x.get("value") if isinstance(x, dict) else x


def tax_claims(pol: dict, cfg) -> list[Claim]:
    """The alignment tax: PPO pays it on held-out pretraining loss; PPO-ptx removes most of it and keeps NLP accuracy."""
    pays = "PPO pays an alignment tax (held-out pretraining loss rises over base)"
    removes = f"PPO-ptx removes at least {cfg.target_tax_reduction:.0%} of that tax"
    keeps = "PPO-ptx keeps more held-out NLP accuracy than PPO"
    why = _evaluated(pol, "ppo", "ppo_ptx")
    if why:
        return [not_measured(pays, why), not_measured(removes, why), not_measured(keeps, why)]
    loss, acc = METRIC.heldout_ptx_loss_delta, METRIC.nlp_accuracy_delta
    tax_ppo, tax_ptx = _v(pol["ppo"], loss), _v(pol["ppo_ptx"], loss)
    out = []
    if tax_ppo is None:
        out += [not_measured(c, lacks("evaluate results of ppo", loss)) for c in (pays, removes)]
    else:
        out.append((pays, tax_ppo > 0, f"Δloss PPO {tax_ppo:+.3f} nats/token"))
        if tax_ptx is None:
            out.append(not_measured(removes, lacks("evaluate results of ppo_ptx", loss)))
        elif tax_ppo <= 0:
            out.append(not_measured(removes, f"PPO pays no alignment tax to remove (Δloss {tax_ppo:+.3f})"))
        else:
            removed = 1 - max(tax_ptx, 0) / tax_ppo
            numbers = f"Δloss PPO-ptx {tax_ptx:+.3f} vs PPO {tax_ppo:+.3f}: {100 * removed:.0f}% removed"
            out.append((removes, removed >= cfg.target_tax_reduction, numbers))
    acc_ppo, acc_ptx = _v(pol["ppo"], acc), _v(pol["ppo_ptx"], acc)
    if acc_ppo is None or acc_ptx is None:
        out.append(not_measured(keeps, lacks(f"evaluate results of {'ppo' if acc_ppo is None else 'ppo_ptx'}", acc)))
    else:
        numbers = f"Δaccuracy vs base: PPO {100 * acc_ppo:+.1f} pts, PPO-ptx {100 * acc_ptx:+.1f} pts"
        out.append((keeps, acc_ptx >= acc_ppo, numbers))
    return out


def truth_and_harm_claims(pol: dict) -> list[Claim]:
    """The most aligned policy evaluated (PPO-ptx, else PPO) against the base model: more truthful, less harmful."""
    best = "ppo_ptx" if "ppo_ptx" in pol or "ppo" not in pol else "ppo"
    out = []
    for key, claim, ok in (
        (METRIC.truthfulness, f"{LABELS[best]} is more truthful than the base model", lambda p, b: p > b),
        (METRIC.harm_rate, f"{LABELS[best]} writes harmful output less often than the base model", lambda p, b: p < b),
    ):
        why = _evaluated(pol, "base", best)
        if why:
            out.append(not_measured(claim, why))
            continue
        base, policy = _v(pol["base"], key), _v(pol[best], key)
        if base is None or policy is None:
            out.append(not_measured(claim, lacks(f"evaluate results of {'base' if base is None else best}", key)))
        else:
            out.append((claim, ok(policy, base), f"{100 * policy:.1f}% vs {100 * base:.1f}%"))
    return out


# ------------------------------------------------------------------ reward hacking


HACKS = "With a tiny KL coefficient the policy hacks the reward model (proxy up, gold down)"


def hacking_claims(d: dict[str, Any]) -> list[Claim]:
    """The no-KL run (ppo_hack): over-optimisation along its curve, and its reward-hacking flag."""
    h = d["ppo_hack"]
    rows = d["ppo_metrics"].get("ppo_hack")
    if rows:
        out = why_rlhf.overoptimisation_claim(rows, (h or {}).get(PPO.hack_margin, DEFAULT_HACK_MARGIN))
    else:
        out = [not_measured(why_rlhf.OVEROPTIMISATION, "the run has no ppo_hack/metrics.jsonl")]
    if not h or PPO.reward_hacking_detected not in h:
        reason = lacks("ppo_hack summary", PPO.reward_hacking_detected) if h else "the run has no ppo_hack summary"
        return out + [not_measured(HACKS, reason)]
    numbers = (
        f"RM {h.get(PPO.heldout_rm_score_initial, 0):.3f} → {h.get(PPO.heldout_rm_score_final, 0):.3f}, "
        f"gold {h.get(PPO.heldout_gold_initial, 0):.3f} → {h.get(PPO.heldout_gold_final, 0):.3f}"
    )
    return out + [(HACKS, h[PPO.reward_hacking_detected], numbers)]


def perfect_rm_note(ppo: dict, gold: dict) -> str:
    """PPO with the learned RM next to PPO with the world's labelers as the reward: is the RM the limit?"""

    def delta(s: dict, readout: GoldReadout) -> str:
        a, b = s.get(readout.initial), s.get(readout.final)
        return "–" if a is None or b is None else f"{a:.3f} → {b:.3f} ({b - a:+.3f})"

    text = (
        "ppo_gold is PPO with a perfect reward model: the world's training labelers score every episode, "
        "the rest as in ppo. Held-out gold, sampled: learned RM "
        + delta(ppo, GOLD_SAMPLED)
        + ", perfect RM "
        + delta(gold, GOLD_SAMPLED)
        + "; greedy: learned RM "
        + delta(ppo, GOLD_GREEDY)
        + ", perfect RM "
        + delta(gold, GOLD_GREEDY)
        + "."
    )
    gain = lambda s: s[GOLD_SAMPLED.final] - s[GOLD_SAMPLED.initial]  # noqa: E731
    lo, hi = gold.get(GOLD_SAMPLED.delta_ci95) or (None, None)
    if lo is None:
        return text
    half = (hi - lo) / 2
    if gain(gold) > gain(ppo) + half:
        return text + (
            f" The perfect RM gains more than the learned one by more than the ±{half:.3f} interval of its "
            "own gain: that gap is what a better reward model would buy."
        )
    return text + (
        f" The perfect RM gains no more than the learned one (its gain's 95% interval is ±{half:.3f}): at "
        "this model size and PPO budget the reward model is not what limits PPO; the policy is."
    )


# ------------------------------------------------------------------ FLAN


def flan_mean_over_seeds(results: list[dict]) -> tuple[dict[str, float], int]:
    """Each seed's cluster-mean accuracy per model kind, averaged over seeds (kinds present in every seed)."""
    kinds = set.intersection(*(set(r[FLAN.mean]) for r in results))
    return {k: sum(r[FLAN.mean][k] for r in results) / len(results) for k in sorted(kinds)}, len(results)


def flan_claims(flan: dict | None, flan_seeds: list[dict]) -> list[Claim]:
    """Instruction tuning (FLAN) on unseen clusters: beats the base model, and tuning without templates."""
    checks = (
        ("FLAN: instruction tuning beats the base model on unseen clusters", "base"),
        ("FLAN: instructions beat tuning without templates", "no_template"),
    )
    if not flan:
        return [not_measured(claim, "the run has no instruct_tune/results.json") for claim, _ in checks]
    m, n = flan_mean_over_seeds(flan_seeds or [flan])
    over = f" (mean over clusters and {n} seeds)" if n > 1 else " (mean over clusters, one seed)"
    out = []
    for claim, other in checks:
        missing = [k for k in ("instruction", other) if k not in m]
        if missing:
            out.append(not_measured(claim, f"instruct_tune results lack model kind {missing[0]} in every seed's mean"))
        else:
            out.append(
                (claim, m["instruction"] > m[other], f"{100 * m['instruction']:.1f}% vs {100 * m[other]:.1f}%{over}")
            )
    return out
