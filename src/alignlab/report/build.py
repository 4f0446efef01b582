"""Stage: the run report -- did RLHF help, by how much, at what cost.

Reads the stage folders of one run (``RUN/<stage>/summary.json``, metrics, the
evaluation's ``results.json``, and ``RUN/seeds/<s>/evaluate`` for extra seeds) and
writes ``report.md`` and a self-contained ``report.html`` (figures embedded) plus
``report.json`` with every number the report shows. Each claim in the verdict is a
comparison against a stated target; a missed target is said plainly, not hidden.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.config import arg
from alignlab.errors import MissingInputError
from alignlab.evaluate.seeds import compare_seeds
from alignlab.outputs import atomic_write_json, atomic_write_text, read_metrics, read_summary
from alignlab.report import methods_study, overoptimization_study, plots, sizes_study, why_rlhf
from alignlab.report.claim import Claim, status
from alignlab.report.doc import Doc
from alignlab.report.plots import LABELS, POLICY_ORDER
from alignlab.report.verdict import flan_mean_over_seeds, perfect_rm_note, verdict
from alignlab.summaries import EVALUATE, FLAN, GOLD_SAMPLED, LABELER_GROUPS, METRIC, PPO, REWARD


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
        "study_methods": _json(run / "study_methods" / "summary.json"),
        "study_overoptimization": _json(run / "study_overoptimization" / "summary.json"),
        "study_overoptimization_rm_sizes": _json(run / "study_overoptimization_rm_sizes" / "summary.json"),
        "study_sizes": _json(run / "study_sizes" / "summary.json"),
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


# ------------------------------------------------------------------ rendering


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
        raise MissingInputError(f"run_dir not found: {run_dir}")
    out.mkdir(parents=True, exist_ok=True)
    d = gather(run_dir)
    doc = Doc()
    doc.h("alignlab run report", 1)
    doc.p(f"Run folder: {run_dir}. Written {time.strftime('%Y-%m-%d %H:%M:%S')}.")
    claims = verdict(d, cfg)
    verdict_section(doc, claims)
    pol = (d["evaluate"] or {}).get(EVALUATE.policies, {})
    if pol:
        results_section(doc, d["evaluate"], out)
        why_rlhf.figure4_section(doc, pol, out, d["evaluate"].get(EVALUATE.constant_answers))
        why_rlhf.headroom_section(doc, d["evaluate"].get(EVALUATE.headroom))
        why_rlhf.side_by_side_section(doc, run_dir / "evaluate" / "samples.jsonl")
    why_rlhf.demonstrations_section(doc, d["world"])
    why_rlhf.study_section(doc, d["study"], out)
    methods_study.methods_section(doc, d["study_methods"], out)
    overoptimization_study.overoptimization_section(doc, d["study_overoptimization"], out)
    overoptimization_study.overoptimization_section(doc, d["study_overoptimization_rm_sizes"], out)
    sizes_study.sizes_section(doc, d["study_sizes"], out)
    if d["seeds"]:
        seeds_section(doc, d["seeds"])
    if d["ppo_metrics"]:
        ppo_section(doc, d, out)
    if d["reward"] and d["world"]:
        reward_section(doc, d["reward"], d["world"], out)
    if d["flan"]:
        flan_section(doc, d["flan"], d["flan_seeds"], out)
    if d["scaling"]:
        scaling_section(doc, d["scaling"], run_dir)
    if d["timings"]:
        doc.h("Time per stage")
        doc.table(["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in d["timings"].items()])

    atomic_write_text(out / "report.md", "\n".join(doc.md))
    atomic_write_text(out / "report.html", doc.render_html("alignlab run report"))
    report = {
        "verdict": [{"claim": c, "met": ok, "numbers": n} for c, ok, n in claims],
        "results": {k: {m: pol[k].get(m) for m in pol[k] if not m.startswith("path")} for k in pol},
        "seeds": d["seeds"],
        "flan": (d["flan"] or {}).get(FLAN.mean),
        "flan_over_seeds": flan_mean_over_seeds(d["flan_seeds"])[0] if d["flan_seeds"] else None,
        "timings": d["timings"],
    }
    atomic_write_json(out / "report.json", report)
    print(f"report: {out / 'report.html'} ({sum(1 for _, ok, _ in claims if ok)}/{len(claims)} expected results hold)")
    for c, ok, n in claims:
        print(f"  {status(ok):<6} {c}: {n}")
    return {
        "claims_met": sum(1 for _, ok, _ in claims if ok),
        "claims": len(claims),
        **report,
        "seconds": round(time.time() - t0, 2),
    }


def verdict_section(doc: Doc, claims: list[Claim]) -> None:
    doc.h("Verdict")
    measured = [c for c in claims if c[1] is not None]
    if not measured:
        doc.p("No evaluation results yet: run `alignlab evaluate` (or the pipeline) first.")
    else:
        met = sum(1 for _, ok, _ in claims if ok)
        unmeasured = len(claims) - len(measured)
        doc.p(
            f"{met} of {len(claims)} expected results hold in this run"
            + (f"; {unmeasured} could not be measured." if unmeasured else ".")
        )
    doc.bullets([f"{status(ok)}: {claim} — {nums}" for claim, ok, nums in claims])


def results_section(doc: Doc, results: dict, out: Path) -> None:
    pol = results[EVALUATE.policies]
    doc.h("Results (held-out prompts, shaped like InstructGPT's evaluations)")
    n = results[EVALUATE.settings].get("n_prompts")
    doc.p(
        f"{n} held-out prompts; same sampling for every policy; 95% bootstrap intervals over prompts. "
        "Win rate = expected preference of the world's labelers (Bradley–Terry), training personas and, "
        "separately, held-out personas that produced no training data. Δ columns are against the base model "
        "(the alignment tax: positive Δloss / negative Δaccuracy = a tax)."
    )
    header, rows = results_table(pol)
    doc.table(header, rows)
    train, heldout = METRIC.win_rate_train_labelers, METRIC.win_rate_heldout_labelers
    ci_rows = {
        k: {"train": pol[k][train], "heldout": pol[k][heldout]}
        for k in POLICY_ORDER + ["ppo_gold"]
        if k in pol and isinstance(pol[k].get(heldout), dict) and pol[k][heldout].get("value") is not None
    }
    if ci_rows:
        doc.image(plots.win_rates(ci_rows, out / "report_win_rates.png"), "win rates against SFT")


# column header -> (metric, shown as a percentage?)
SEED_COLUMNS = {
    "win vs SFT (held-out)": (METRIC.win_rate_heldout_labelers, True),
    "gold": (METRIC.gold_reward, False),
    "helpful": (METRIC.helpfulness, True),
    "truthful": (METRIC.truthfulness, True),
    "harm": (METRIC.harm_rate, True),
    "Δ LM loss": (METRIC.heldout_ptx_loss_delta, False),
    "refuses harmless": (METRIC.over_refusal_rate, True),
    '"I don\'t know", answerable': (METRIC.unknown_false_positive_rate, True),
    "attempts": (METRIC.attempts_instruction_rate, True),
}


def seeds_section(doc: Doc, s: dict) -> None:
    doc.h("Across seeds")
    rows = [
        [LABELS[name]] + [_seed_cell(s["policies"][name].get(k), pct) for k, pct in SEED_COLUMNS.values()]
        for name in [p for p in POLICY_ORDER if p in s["policies"]]
    ]
    doc.p(f"{s['n_seeds']} seeds (SFT onwards retrained per seed): mean ± sd, and each seed's value.")
    doc.table(["policy", *SEED_COLUMNS], rows)


# the PPO runs' table: its columns' summary keys
PPO_COLUMNS = (
    PPO.heldout_rm_score_initial,
    PPO.heldout_rm_score_final,
    PPO.heldout_gold_initial,
    PPO.heldout_gold_final,
    PPO.final_kl,
    PPO.final_beta,
)


def ppo_section(doc: Doc, d: dict[str, Any], out: Path) -> None:
    doc.h("PPO training")
    doc.image(plots.ppo_curves(d["ppo_metrics"], out / "report_ppo_curves.png"), "PPO reward and KL")
    doc.image(plots.gold_vs_proxy(d["ppo_metrics"], out / "report_gold_vs_proxy.png"), "gold vs proxy reward")
    rows = [
        [
            name,
            *(f"{d[name].get(k):.3f}" if isinstance(d[name].get(k), (int, float)) else "–" for k in PPO_COLUMNS),
            str(d[name].get(PPO.seconds, "–")),
        ]
        for name in ("ppo", "ppo_ptx", "ppo_hack", "ppo_gold")
        if d[name]
    ]
    doc.table(
        ["run", "RM score before", "RM score after", "gold before", "gold after", "final KL", "final β", "seconds"],
        rows,
    )
    ppo, gold = d["ppo"], d["ppo_gold"]
    if gold and ppo and GOLD_SAMPLED.final in gold and GOLD_SAMPLED.final in ppo:
        doc.p(perfect_rm_note(ppo, gold))


def _pct(v) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "–"


def reward_section(doc: Doc, r: dict, w: dict, out: Path) -> None:
    doc.h("Reward model")
    train, held = LABELER_GROUPS
    acc = {
        "training labelers": r.get(train.sampled_accuracy) or 0,
        "held-out labelers": r.get(held.sampled_accuracy) or 0,
    }
    agr = {"training labelers": w[train.world_agreement], "held-out labelers": w[held.world_agreement]}
    same = {
        "training labelers": r.get(train.agreement_same_pairs),
        "held-out labelers": r.get(held.agreement_same_pairs),
    }
    expected = {"training labelers": r.get(train.expected_accuracy), "held-out labelers": r.get(held.expected_accuracy)}
    doc.p(
        f"Pairwise accuracy on {r.get(REWARD.val_prompts)} held-out prompts ({r.get(REWARD.val_pairs)} pairs): "
        f"{_pct(acc['training labelers'])} (training labelers), {_pct(acc['held-out labelers'])} (held-out labelers) "
        "against their sampled rankings"
        + (
            f"; in expectation over each group's labelers, computed exactly as their agreement is, "
            f"{_pct(expected['training labelers'])} / {_pct(expected['held-out labelers'])}"
            if expected["held-out labelers"] is not None
            else ""
        )
        + f"; against the noise-free gold ordering {_pct(r.get(REWARD.val_accuracy_gold))}. On these very pairs the "
        f"labelers agree with each other {_pct(same['training labelers'])} / {_pct(same['held-out labelers'])}; on "
        f"the world's candidate sets {_pct(agr['training labelers'])} / {_pct(agr['held-out labelers'])} "
        "(InstructGPT: RM 72.4% / 69.6%, labelers 72.6% / 77.3%)."
    )
    if r.get(REWARD.policy_pairs):
        doc.p(
            f"The comparisons mix the SFT policy's samples with the base model's. On the {r[REWARD.policy_pairs]} "
            f"pairs of two SFT samples alone (what PPO's reward depends on) the RM scores "
            f"{_pct(r.get(REWARD.policy_pairs_accuracy_train_labelers))} / "
            f"{_pct(r.get(REWARD.policy_pairs_accuracy_heldout_labelers))}, the labelers agree "
            f"{_pct(r.get(REWARD.policy_pairs_labeler_agreement_on_val_pairs))} / "
            f"{_pct(r.get(REWARD.policy_pairs_labeler_agreement_heldout_on_val_pairs))}, and against gold the RM "
            f"scores {_pct(r.get(REWARD.policy_pairs_val_accuracy_gold))}: most SFT samples of a small model are "
            "equally wrong, so their pairs are close to coin flips for labelers and RM alike."
        )
    doc.image(
        plots.rm_accuracy(acc, agr, out / "report_rm_accuracy.png", same, expected), "RM accuracy vs labeler agreement"
    )


def flan_section(doc: Doc, f: dict, flan_seeds: list[dict], out: Path) -> None:
    doc.h("FLAN: zero-shot on unseen task clusters")
    acc = {
        c: {k: v["accuracy"] for k, v in r.items() if isinstance(v, dict) and "accuracy" in v}
        for c, r in f[FLAN.clusters].items()
    }
    doc.table(
        ["held-out cluster", *next(iter(acc.values())).keys()],
        [[c, *(f"{100 * x:.1f}%" for x in a.values())] for c, a in acc.items()]
        + [["mean", *(f"{100 * x:.1f}%" for x in f[FLAN.mean].values())]],
    )
    if len(flan_seeds) > 1:
        kinds = list(f[FLAN.mean])
        over_seeds = flan_mean_over_seeds(flan_seeds)[0]
        doc.p(f"Cluster means per seed (the table above is seed {f[FLAN.config].get('seed', 0)}):")
        doc.table(
            ["seed", *kinds],
            [
                [
                    str(r[FLAN.config].get("seed", i)),
                    *(f"{100 * r[FLAN.mean].get(k, float('nan')):.1f}%" for k in kinds),
                ]
                for i, r in enumerate(flan_seeds)
            ]
            + [["mean", *(f"{100 * over_seeds.get(k, float('nan')):.1f}%" for k in kinds)]],
        )
    doc.image(plots.flan_clusters(acc, out / "report_flan.png"), "FLAN held-out cluster accuracy")


def scaling_section(doc: Doc, sc: dict, run_dir: Path) -> None:
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
