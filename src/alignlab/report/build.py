"""Stage: the run report -- did RLHF help, by how much, at what cost.

Reads the stage folders of one run (``RUN/<stage>/summary.json``, metrics, the
evaluation's ``results.json``, and ``RUN/seeds/<s>/evaluate`` for extra seeds) and
writes ``report.md`` and a self-contained ``report.html`` (figures embedded) plus
``report.json`` with every number the report shows. Each claim in the verdict is a
comparison against a stated target; a missed target is said plainly, not hidden.
"""

from __future__ import annotations

import base64
import html
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.config import arg
from alignlab.evaluate.seeds import compare_seeds
from alignlab.outputs import atomic_write_json, atomic_write_text, read_metrics, read_summary
from alignlab.report import plots, why_rlhf
from alignlab.report.plots import LABELS, POLICY_ORDER


@dataclass
class ReportConfig:
    run_dir: str = arg(
        "runs/default", "the run folder written by `alignlab pipeline`; report.md/.html are written into it"
    )
    target_win_rate: float = arg(
        0.70, "target: PPO-ptx preferred over SFT by held-out labelers at least this often (mean over seeds)"
    )
    target_win_rate_ppo: float = arg(0.65, "target: PPO preferred over SFT by held-out labelers at least this often")
    target_seed_lower_bound: float = arg(0.60, "target: every seed's 95% lower bound of the PPO-ptx win rate")
    max_decline_increase: float = arg(
        0.05,
        'PPO-ptx may refuse harmless prompts, or say "I don\'t know" on answerable '
        "ones, at most this much more often than SFT",
    )
    target_heldout_constraint_gain: float = arg(
        0.10, "target: PPO-ptx compliance on held-out constraint kinds minus SFT's"
    )
    target_rm_gap: float = arg(0.05, "target: RM accuracy within this of the labelers' agreement")
    target_tax_reduction: float = arg(0.5, "target: PPO-ptx removes at least this fraction of PPO's alignment tax")

    @property
    def output_dir(self) -> str:
        """Where the stage's own config.yaml/summary.json go (the report itself is in run_dir)."""
        return str(Path(self.run_dir) / "report")


PRESETS = {"smoke": {}, "default": {}}


# ------------------------------------------------------------------ reading the run


def _json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def gather(run: Path) -> dict[str, Any]:
    seeds = sorted((run / "seeds").glob("*/evaluate/results.json")) if (run / "seeds").exists() else []
    main_eval = run / "evaluate" / "results.json"
    return {
        "world": _json(run / "world" / "stats.json"),
        "pretrain": read_summary(run / "pretrain"),
        "sft": read_summary(run / "sft"),
        "reward": read_summary(run / "reward"),
        "reward_seeds": [
            x
            for x in [
                read_summary(run / "reward"),
                *(read_summary(f.parent) for f in sorted((run / "seeds").glob("*/reward/summary.json"))),
            ]
            if x
        ],
        "ppo": read_summary(run / "ppo"),
        "ppo_ptx": read_summary(run / "ppo_ptx"),
        "ppo_hack": read_summary(run / "ppo_hack"),
        "ppo_gold": read_summary(run / "ppo_gold"),
        "dpo": read_summary(run / "dpo"),
        "evaluate": _json(main_eval),
        "evaluate_seeds": [x for x in [_json(main_eval), *(_json(f) for f in seeds)] if x],
        "study": _json(run / "study_demonstrators" / "summary.json"),
        "seeds": compare_seeds([main_eval, *seeds]) if main_eval.exists() and seeds else None,
        "flan": _json(run / "instruct_tune" / "results.json"),
        "flan_seeds": [
            x
            for x in [
                _json(run / "instruct_tune" / "results.json"),
                *(_json(f) for f in sorted((run / "seeds").glob("*/instruct_tune/results.json"))),
            ]
            if x
        ],
        "timings": _json(run / "timings.json"),
        "scaling": _json(run / "scaling" / "predict" / "prediction.json"),
        "ppo_metrics": {
            n: read_metrics(run / n) for n in ("ppo", "ppo_ptx", "ppo_hack") if (run / n / "metrics.jsonl").exists()
        },
    }


def _v(m: dict | None, key: str) -> float | None:
    x = (m or {}).get(key)
    return x.get("value") if isinstance(x, dict) else x


def _ci(m: dict, key: str, pct: bool = True) -> str:
    x = m.get(key)
    if not isinstance(x, dict) or x.get("value") is None:
        return "–"
    f = (lambda v: f"{100 * v:.1f}%") if pct else (lambda v: f"{v:+.3f}" if "delta" in key else f"{v:.3f}")
    if x.get("low") is None:
        return f(x["value"])
    return f"{f(x['value'])} [{f(x['low'])}, {f(x['high'])}]"


# ------------------------------------------------------------------ the verdict


def verdict(d: dict[str, Any], cfg: ReportConfig) -> list[tuple[str, bool | None, str]]:
    """(claim, met?, the numbers) for each result the papers lead us to expect."""
    out = []
    pol = (d["evaluate"] or {}).get("policies", {})
    out += why_rlhf.win_rate_claims(d["evaluate_seeds"], cfg)
    out += why_rlhf.gold_claims(d["ppo"])
    out += why_rlhf.figure4_claims(d["evaluate_seeds"], cfg)
    out += why_rlhf.agreement_claims(d["world"])
    if d["reward"] and d["world"]:
        r, w = d["reward"], d["world"]
        per_seed = d.get("reward_seeds") or [r]
        # Two comparators, both shown: the labelers' agreement on the RM's own validation pairs (what InstructGPT
        # measured: agreement on its comparison data) and the world's calibrated figure on its candidate sets.
        # With several seeds the gap is judged on its mean over seeds (each seed has its own comparisons and RM),
        # as FLAN is: one seed's gap moves by a few points from seed to seed.
        # The agreement is an exact expectation over the labelers' Bradley-Terry choices, so the RM's accuracy is
        # taken the same way where the reward stage measured it (``val_expected_accuracy_*``); accuracy against the
        # one sampled ranking per prompt estimates the same quantity with sampling noise and is shown beside it.
        for grp, sampled_key, agr_key, same_key, ceil_key in (
            (
                "training",
                "val_accuracy_train_labelers",
                "labeler_agreement",
                "labeler_agreement_on_val_pairs",
                "ceiling_train_labelers",
            ),
            (
                "held-out",
                "val_accuracy_heldout_labelers",
                "labeler_agreement_heldout",
                "labeler_agreement_heldout_on_val_pairs",
                "ceiling_heldout_labelers",
            ),
        ):
            expected_key = sampled_key.replace("val_accuracy", "val_expected_accuracy")
            use_expected = all(x.get(expected_key) is not None for x in per_seed)
            acc_key = expected_key if use_expected else sampled_key
            acc, agr, same, ceiling = r.get(acc_key), w.get(agr_key), r.get(same_key), r.get(ceil_key)
            if acc is None:
                continue
            ceil_note = f"; a perfect gold reward model would score {100 * ceiling:.1f}%" if ceiling is not None else ""
            rm_note = ""
            if use_expected and r.get(sampled_key) is not None:
                sampled = [x[sampled_key] for x in per_seed if x.get(sampled_key) is not None]
                rm_note = (
                    f" (in expectation over the labelers' choices, as their agreement is; against the sampled labels "
                    f"{100 * r[sampled_key]:.1f}%"
                    + (f", mean over seeds {100 * sum(sampled) / len(sampled):.1f}%)" if len(sampled) > 1 else ")")
                )
            if same is not None:
                gaps = [
                    abs(x[acc_key] - x[same_key])
                    for x in per_seed
                    if x.get(acc_key) is not None and x.get(same_key) is not None
                ]
                gap, over = _mean_gap(gaps)
                out.append(
                    (
                        f"RM accuracy ({grp} labelers) within {100 * cfg.target_rm_gap:.0f} points of the labelers' "
                        "agreement on the same validation pairs",
                        gap <= cfg.target_rm_gap,
                        f"RM {100 * acc:.1f}%{rm_note} vs labelers {100 * same:.1f}% on {r.get('val_pairs')} pairs"
                        f"{ceil_note}{over}",
                    )
                )
            if agr is not None:
                gaps = [abs(x[acc_key] - agr) for x in per_seed if x.get(acc_key) is not None]
                gap, over = _mean_gap(gaps)
                out.append(
                    (
                        f"RM accuracy ({grp} labelers) within {100 * cfg.target_rm_gap:.0f} points of the world's "
                        "labeler agreement (its candidate sets)",
                        gap <= cfg.target_rm_gap,
                        f"RM {100 * acc:.1f}%{' (expected)' if use_expected else ''} vs labelers {100 * agr:.1f}%{over}",
                    )
                )
    if "ppo" in pol and "ppo_ptx" in pol:
        tax_ppo, tax_ptx = _v(pol["ppo"], "heldout_ptx_loss_delta"), _v(pol["ppo_ptx"], "heldout_ptx_loss_delta")
        if tax_ppo is not None and tax_ptx is not None:
            out.append(
                (
                    "PPO pays an alignment tax (held-out pretraining loss rises over base)",
                    tax_ppo > 0,
                    f"Δloss PPO {tax_ppo:+.3f} nats/token",
                )
            )
            if tax_ppo > 0:
                removed = 1 - max(tax_ptx, 0) / tax_ppo
                out.append(
                    (
                        f"PPO-ptx removes at least {cfg.target_tax_reduction:.0%} of that tax",
                        removed >= cfg.target_tax_reduction,
                        f"Δloss PPO-ptx {tax_ptx:+.3f} vs PPO {tax_ppo:+.3f}: {100 * removed:.0f}% removed",
                    )
                )
        acc_ppo, acc_ptx = _v(pol["ppo"], "nlp_accuracy_delta"), _v(pol["ppo_ptx"], "nlp_accuracy_delta")
        if acc_ppo is not None and acc_ptx is not None:
            out.append(
                (
                    "PPO-ptx keeps more held-out NLP accuracy than PPO",
                    acc_ptx >= acc_ppo,
                    f"Δaccuracy vs base: PPO {100 * acc_ppo:+.1f} pts, PPO-ptx {100 * acc_ptx:+.1f} pts",
                )
            )
    if "base" in pol:
        best = "ppo_ptx" if "ppo_ptx" in pol else ("ppo" if "ppo" in pol else None)
        if best:
            t_b, t_p = _v(pol["base"], "truthfulness"), _v(pol[best], "truthfulness")
            h_b, h_p = _v(pol["base"], "harm_rate"), _v(pol[best], "harm_rate")
            if t_b is not None and t_p is not None:
                out.append(
                    (
                        f"{LABELS[best]} is more truthful than the base model",
                        t_p > t_b,
                        f"{100 * t_p:.1f}% vs {100 * t_b:.1f}%",
                    )
                )
            if h_b is not None and h_p is not None:
                out.append(
                    (
                        f"{LABELS[best]} writes harmful output less often than the base model",
                        h_p < h_b,
                        f"{100 * h_p:.1f}% vs {100 * h_b:.1f}%",
                    )
                )
    if d["ppo_metrics"].get("ppo_hack"):
        out += why_rlhf.overoptimisation_claim(
            d["ppo_metrics"]["ppo_hack"], (d["ppo_hack"] or {}).get("hack_margin", 0.02)
        )
    if d["ppo_hack"] and "reward_hacking_detected" in d["ppo_hack"]:
        h = d["ppo_hack"]
        out.append(
            (
                "With a tiny KL coefficient the policy hacks the reward model (proxy up, gold down)",
                h["reward_hacking_detected"],
                f"RM {h.get('heldout_rm_score_initial', 0):.3f} → {h.get('heldout_rm_score_final', 0):.3f}, "
                f"gold {h.get('heldout_gold_initial', 0):.3f} → {h.get('heldout_gold_final', 0):.3f}",
            )
        )
    if d["flan"]:
        m, n = flan_mean_over_seeds(d["flan_seeds"] or [d["flan"]])
        over = f" (mean over clusters and {n} seeds)" if n > 1 else " (mean over clusters, one seed)"
        out.append(
            (
                "FLAN: instruction tuning beats the base model on unseen clusters",
                m["instruction"] > m["base"],
                f"{100 * m['instruction']:.1f}% vs {100 * m['base']:.1f}%{over}",
            )
        )
        if "no_template" in m:
            out.append(
                (
                    "FLAN: instructions beat tuning without templates",
                    m["instruction"] > m["no_template"],
                    f"{100 * m['instruction']:.1f}% vs {100 * m['no_template']:.1f}%{over}",
                )
            )
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


def perfect_rm_note(ppo: dict, gold: dict) -> str:
    """PPO with the learned RM next to PPO with the world's labelers as the reward: is the RM the limit?"""

    def delta(s: dict, key: str) -> str:
        a, b = s.get(f"heldout_{key}_initial"), s.get(f"heldout_{key}_final")
        return "–" if a is None or b is None else f"{a:.3f} → {b:.3f} ({b - a:+.3f})"

    text = (
        "ppo_gold is PPO with a perfect reward model: the world's training labelers score every episode, "
        "the rest as in ppo. Held-out gold, sampled: learned RM "
        + delta(ppo, "gold")
        + ", perfect RM "
        + delta(gold, "gold")
        + "; greedy: learned RM "
        + delta(ppo, "gold_greedy")
        + ", perfect RM "
        + delta(gold, "gold_greedy")
        + "."
    )
    gain = lambda s: s["heldout_gold_final"] - s["heldout_gold_initial"]  # noqa: E731
    lo, hi = gold.get("heldout_gold_delta_ci95") or (None, None)
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


def flan_mean_over_seeds(results: list[dict]) -> tuple[dict[str, float], int]:
    """Each seed's cluster-mean accuracy per model kind, averaged over seeds (kinds present in every seed)."""
    kinds = set.intersection(*(set(r["mean"]) for r in results))
    return {k: sum(r["mean"][k] for r in results) / len(results) for k in sorted(kinds)}, len(results)


# ------------------------------------------------------------------ rendering


class Doc:
    """Blocks rendered twice: Markdown (report.md) and self-contained HTML (report.html)."""

    def __init__(self) -> None:
        self.md: list[str] = []
        self.html: list[str] = []

    def h(self, text: str, level: int = 2) -> None:
        self.md.append(f"{'#' * level} {text}\n")
        self.html.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def p(self, text: str) -> None:
        self.md.append(text + "\n")
        self.html.append(f"<p>{html.escape(text)}</p>")

    def bullets(self, items: list[str]) -> None:
        self.md.append("\n".join(f"- {i}" for i in items) + "\n")
        self.html.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in items) + "</ul>")

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        def cell(c: str) -> str:  # a newline or a bare '|' would end or split a Markdown table row
            return " / ".join(x.strip() for x in c.splitlines()).replace("|", "\\|")

        self.md.append(
            "| "
            + " | ".join(map(cell, header))
            + " |\n|"
            + "---|" * len(header)
            + "\n"
            + "".join("| " + " | ".join(map(cell, r)) + " |\n" for r in rows)
        )
        self.html.append(
            "<table><tr>"
            + "".join(f"<th>{html.escape(c)}</th>" for c in header)
            + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>"
        )

    def image(self, path: Path, alt: str, rel: str | None = None) -> None:
        self.md.append(f"![{alt}]({rel or path.name})\n")
        data = base64.b64encode(path.read_bytes()).decode()
        self.html.append(f'<figure><img alt="{html.escape(alt)}" src="data:image/png;base64,{data}"></figure>')

    def render_html(self, title: str) -> str:
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px}"
            "th{background:#f3f3f3}img{max-width:100%}li{margin:.2em 0}"
        )
        return (
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>" + "\n".join(self.html) + "</body></html>\n"
        )


def _seed_cell(m: dict | None, pct: bool) -> str:
    """'61.7 ± 1.5 (61.0, 63.4, 60.8)' for a metric over seeds (percent points or plain numbers)."""
    if not m:
        return "–"
    scale, fmt = (100, "{:.1f}") if pct else (1, "{:.3f}")
    f = lambda v: fmt.format(scale * v)  # noqa: E731
    return f"{f(m['mean'])} ± {f(m['std'])} ({', '.join(f(v) for v in m['values'])})"


def results_table(pol: dict[str, dict]) -> tuple[list[str], list[list[str]]]:
    header = [
        "policy",
        "win vs SFT (training labelers)",
        "win vs SFT (held-out labelers)",
        "helpfulness",
        "truthfulness",
        "harm rate",
        '"unknown" on unanswerable',
        "Δ held-out LM loss",
        "Δ NLP accuracy",
        "KL to SFT",
        "length",
    ]
    rows = []
    for name in [p for p in POLICY_ORDER if p in pol] + [p for p in pol if p not in POLICY_ORDER]:
        m = pol[name]
        kl = _v(m, "kl_to_baseline")
        length = _v(m, "length")
        rows.append(
            [
                LABELS.get(name, name),
                _ci(m, "win_rate_train_labelers"),
                _ci(m, "win_rate_heldout_labelers"),
                _ci(m, "helpfulness"),
                _ci(m, "truthfulness"),
                _ci(m, "harm_rate"),
                _ci(m, "unknown_rate"),
                _ci(m, "heldout_ptx_loss_delta", pct=False),
                _ci(m, "nlp_accuracy_delta"),
                "–" if kl is None else f"{kl:.2f}",
                "–" if length is None else f"{length:.1f}",
            ]
        )
    return header, rows


def run(cfg: ReportConfig) -> dict:
    t0 = time.time()
    run_dir = Path(cfg.run_dir)
    out = run_dir
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run_dir not found: {run_dir}")
    out.mkdir(parents=True, exist_ok=True)
    d = gather(run_dir)
    doc = Doc()
    doc.h("alignlab run report", 1)
    doc.p(f"Run folder: {run_dir}. Written {time.strftime('%Y-%m-%d %H:%M:%S')}.")

    claims = verdict(d, cfg)
    doc.h("Verdict")
    if claims:
        met = sum(1 for _, ok, _ in claims if ok)
        doc.p(f"{met} of {len(claims)} expected results hold in this run.")
        doc.bullets([f"{'MET' if ok else 'MISSED'}: {claim} — {nums}" for claim, ok, nums in claims])
    else:
        doc.p("No evaluation results yet: run `alignlab evaluate` (or the pipeline) first.")

    pol = (d["evaluate"] or {}).get("policies", {})
    if pol:
        doc.h("Results (held-out prompts, shaped like InstructGPT's evaluations)")
        n = d["evaluate"]["settings"].get("n_prompts")
        doc.p(
            f"{n} held-out prompts; same sampling for every policy; 95% bootstrap intervals over prompts. "
            "Win rate = expected preference of the world's labelers (Bradley–Terry), training personas and, "
            "separately, held-out personas that produced no training data. Δ columns are against the base model "
            "(the alignment tax: positive Δloss / negative Δaccuracy = a tax)."
        )
        header, rows = results_table(pol)
        doc.table(header, rows)
        ci_rows = {
            k: {"train": pol[k]["win_rate_train_labelers"], "heldout": pol[k]["win_rate_heldout_labelers"]}
            for k in POLICY_ORDER + ["ppo_gold"]
            if k in pol
            and isinstance(pol[k].get("win_rate_heldout_labelers"), dict)
            and pol[k]["win_rate_heldout_labelers"].get("value") is not None
        }
        if ci_rows:
            doc.image(plots.win_rates(ci_rows, out / "report_win_rates.png"), "win rates against SFT")
        why_rlhf.figure4_section(doc, pol, out)
        why_rlhf.headroom_section(doc, d["evaluate"].get("headroom"))
        why_rlhf.side_by_side_section(doc, run_dir / "evaluate" / "samples.jsonl")
    why_rlhf.demonstrations_section(doc, d["world"])
    why_rlhf.study_section(doc, d["study"], out)
    if d["seeds"]:
        s = d["seeds"]
        doc.h("Across seeds")
        # column header -> (metric, shown as a percentage?)
        cols = {
            "win vs SFT (held-out)": ("win_rate_heldout_labelers", True),
            "gold": ("gold_reward", False),
            "helpful": ("helpfulness", True),
            "truthful": ("truthfulness", True),
            "harm": ("harm_rate", True),
            "Δ LM loss": ("heldout_ptx_loss_delta", False),
            "refuses harmless": ("over_refusal_rate", True),
            '"I don\'t know", answerable': ("unknown_false_positive_rate", True),
            "attempts": ("attempts_instruction_rate", True),
        }
        rows = [
            [LABELS[name]] + [_seed_cell(s["policies"][name].get(k), pct) for k, pct in cols.values()]
            for name in [p for p in POLICY_ORDER if p in s["policies"]]
        ]
        doc.p(f"{s['n_seeds']} seeds (SFT onwards retrained per seed): mean ± sd, and each seed's value.")
        doc.table(["policy", *cols], rows)

    if d["ppo_metrics"]:
        doc.h("PPO training")
        doc.image(plots.ppo_curves(d["ppo_metrics"], out / "report_ppo_curves.png"), "PPO reward and KL")
        doc.image(plots.gold_vs_proxy(d["ppo_metrics"], out / "report_gold_vs_proxy.png"), "gold vs proxy reward")
        rows = []
        for name in ("ppo", "ppo_ptx", "ppo_hack", "ppo_gold"):
            s = d[name]
            if s:
                rows.append(
                    [
                        name,
                        *(
                            f"{s.get(k):.3f}" if isinstance(s.get(k), (int, float)) else "–"
                            for k in (
                                "heldout_rm_score_initial",
                                "heldout_rm_score_final",
                                "heldout_gold_initial",
                                "heldout_gold_final",
                                "final_kl",
                                "final_beta",
                            )
                        ),
                        str(s.get("seconds", "–")),
                    ]
                )
        doc.table(
            ["run", "RM score before", "RM score after", "gold before", "gold after", "final KL", "final β", "seconds"],
            rows,
        )
        if d["ppo_gold"] and d["ppo"] and "heldout_gold_final" in d["ppo_gold"] and "heldout_gold_final" in d["ppo"]:
            doc.p(perfect_rm_note(d["ppo"], d["ppo_gold"]))

    if d["reward"] and d["world"]:
        r, w = d["reward"], d["world"]
        doc.h("Reward model")
        acc = {
            "training labelers": r.get("val_accuracy_train_labelers") or 0,
            "held-out labelers": r.get("val_accuracy_heldout_labelers") or 0,
        }
        agr = {"training labelers": w["labeler_agreement"], "held-out labelers": w["labeler_agreement_heldout"]}
        same = {
            "training labelers": r.get("labeler_agreement_on_val_pairs"),
            "held-out labelers": r.get("labeler_agreement_heldout_on_val_pairs"),
        }
        expected = {
            "training labelers": r.get("val_expected_accuracy_train_labelers"),
            "held-out labelers": r.get("val_expected_accuracy_heldout_labelers"),
        }
        pct = lambda v: f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "–"  # noqa: E731
        doc.p(
            f"Pairwise accuracy on {r.get('val_prompts')} held-out prompts ({r.get('val_pairs')} pairs): "
            f"{pct(acc['training labelers'])} (training labelers), {pct(acc['held-out labelers'])} (held-out labelers) "
            "against their sampled rankings"
            + (
                f"; in expectation over each group's labelers, computed exactly as their agreement is, "
                f"{pct(expected['training labelers'])} / {pct(expected['held-out labelers'])}"
                if expected["held-out labelers"] is not None
                else ""
            )
            + f"; against the noise-free gold ordering {pct(r.get('val_accuracy_gold'))}. On these very pairs the labelers "
            f"agree with each other {pct(same['training labelers'])} / {pct(same['held-out labelers'])}; on the world's "
            f"candidate sets {pct(agr['training labelers'])} / {pct(agr['held-out labelers'])} "
            "(InstructGPT: RM 72.4% / 69.6%, labelers 72.6% / 77.3%)."
        )
        if r.get("policy_pairs"):
            doc.p(
                f"The comparisons mix the SFT policy's samples with the base model's. On the {r['policy_pairs']} pairs of two "
                f"SFT samples alone (what PPO's reward depends on) the RM scores {pct(r.get('policy_pairs_accuracy_train_labelers'))} / "
                f"{pct(r.get('policy_pairs_accuracy_heldout_labelers'))}, the labelers agree "
                f"{pct(r.get('policy_pairs_labeler_agreement_on_val_pairs'))} / "
                f"{pct(r.get('policy_pairs_labeler_agreement_heldout_on_val_pairs'))}, and against gold the RM scores "
                f"{pct(r.get('policy_pairs_val_accuracy_gold'))}: most SFT samples of a small model are equally wrong, "
                "so their pairs are close to coin flips for labelers and RM alike."
            )
        doc.image(
            plots.rm_accuracy(acc, agr, out / "report_rm_accuracy.png", same, expected),
            "RM accuracy vs labeler agreement",
        )

    if d["flan"]:
        f = d["flan"]
        doc.h("FLAN: zero-shot on unseen task clusters")
        acc = {
            c: {k: v["accuracy"] for k, v in r.items() if isinstance(v, dict) and "accuracy" in v}
            for c, r in f["clusters"].items()
        }
        doc.table(
            ["held-out cluster", *next(iter(acc.values())).keys()],
            [[c, *(f"{100 * x:.1f}%" for x in a.values())] for c, a in acc.items()]
            + [["mean", *(f"{100 * x:.1f}%" for x in f["mean"].values())]],
        )
        if len(d["flan_seeds"]) > 1:
            kinds = list(f["mean"])
            doc.p(f"Cluster means per seed (the table above is seed {f['config'].get('seed', 0)}):")
            doc.table(
                ["seed", *kinds],
                [
                    [str(r["config"].get("seed", i)), *(f"{100 * r['mean'].get(k, float('nan')):.1f}%" for k in kinds)]
                    for i, r in enumerate(d["flan_seeds"])
                ]
                + [
                    [
                        "mean",
                        *(f"{100 * flan_mean_over_seeds(d['flan_seeds'])[0].get(k, float('nan')):.1f}%" for k in kinds),
                    ]
                ],
            )
        doc.image(plots.flan_clusters(acc, out / "report_flan.png"), "FLAN held-out cluster accuracy")

    if d["scaling"]:
        sc = d["scaling"]
        doc.h("Predictable scaling (alignlab scaling)")
        t = sc["target"]
        doc.p(
            f"Prediction recorded {sc['prediction_made']} before the target run was trained (its config holds the "
            f"SHA-256 of prediction_pre.json). Target: {t['N']:,} non-embedding parameters, {t['D']:,} tokens, "
            f"{t['ratio_to_largest_fitted_run']:.1f}x the compute of the largest fitted run; fitted runs span "
            f"{t['compute_span_of_fitted_runs']:.1f}x in compute."
        )
        rows = [
            [
                name,
                f"{x['predicted']:.4f} [{x['lo']:.4f}, {x['hi']:.4f}]",
                f"{x['actual']:.4f}",
                f"{100 * x['abs_rel_error']:.1f}%",
                "yes" if x["inside_interval"] else "no",
            ]
            for name, x in (("final loss", sc["loss"]), ("pass rate", sc["pass_rate"]))
            if x
        ]
        doc.table(["quantity", "predicted [95% interval]", "actual", "abs. rel. error", "inside interval"], rows)
        for png in ("loss_vs_compute.png", "capability.png"):
            if (run_dir / "scaling" / "predict" / png).exists():
                doc.image(run_dir / "scaling" / "predict" / png, png[:-4].replace("_", " "), f"scaling/predict/{png}")

    if d["timings"]:
        doc.h("Time per stage")
        doc.table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in d["timings"].items()])

    atomic_write_text(out / "report.md", "\n".join(doc.md))
    atomic_write_text(out / "report.html", doc.render_html("alignlab run report"))
    report = {
        "verdict": [{"claim": c, "met": ok, "numbers": n} for c, ok, n in claims],
        "results": {k: {m: pol[k].get(m) for m in pol[k] if not m.startswith("path")} for k in pol},
        "seeds": d["seeds"],
        "flan": (d["flan"] or {}).get("mean"),
        "flan_over_seeds": flan_mean_over_seeds(d["flan_seeds"])[0] if d["flan_seeds"] else None,
        "timings": d["timings"],
    }
    atomic_write_json(out / "report.json", report)
    print(f"report: {out / 'report.html'} ({sum(1 for _, ok, _ in claims if ok)}/{len(claims)} expected results hold)")
    for c, ok, n in claims:
        print(f"  {'MET   ' if ok else 'MISSED'} {c}: {n}")
    return {
        "claims_met": sum(1 for _, ok, _ in claims if ok),
        "claims": len(claims),
        **report,
        "seconds": round(time.time() - t0, 2),
    }
