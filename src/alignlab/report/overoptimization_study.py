"""The report's section on ``alignlab study overoptimization``: Gao et al.'s laws on the built-in world.

One row per proxy RM (the comparisons it was trained on or its size, how often it orders held-out pairs as gold
does, the fitted alpha, beta and gold-optimal d* of
best-of-n and of PPO), the prediction of the largest RM's peak made before it was measured against what
was measured, and the two figures (Gao et al. Figures 1 and 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignlab.report import plots


def _g(x: float | str | None) -> str:
    """A number of summary.json: None (NaN) as –, "inf" (a curve that never turns) as ∞."""
    if x is None:
        return "–"
    return {"inf": "∞", "-inf": "−∞"}.get(x, x) if isinstance(x, str) else f"{x:.3g}"


def _with_interval(value: float, interval: dict[str, float] | None) -> str:
    if not interval:
        return _g(value)
    return f"{_g(value)} [{_g(interval['lo'])}, {_g(interval['hi'])}]"


def _check_cells(c: dict[str, Any]) -> list[str]:
    """R² on held-out points; whether gold fell after its peak (with the fall's interval)."""
    r2 = c["heldout_r2"]["r2"]
    f = c["gold_fall"]
    verdict = "yes" if c["falls"] and c["proxy_rises"] else "no"
    if c.get("stalled"):
        verdict = "no (gold ends at its peak's value on every prompt: the policy stopped moving in gold)"
    elif c.get("peak_point") is not None and c["peak_point"] == c.get("last_point"):
        verdict = "no (gold is highest at the last point)"
    return ["–" if r2 is None else f"{r2:.2f}", f"{verdict}: {f['mean']:.3f} [{f['lo']:.3f}, {f['hi']:.3f}]"]


def prediction_sentences(pred: dict[str, Any]) -> list[str]:
    """One sentence per form: predicted d* and R* of the largest RM, measured, inside the interval or not."""
    out = []
    for form, name in (("bon", "best-of-n"), ("rl", "PPO")):
        p = pred.get(form)
        if not p or "skipped" in p:
            out.append(f"{name}: no prediction ({(p or {}).get('skipped', 'not made')}).")
            continue
        parts = [
            f"{label} predicted {_g(p[k]['estimate'])} [{_g(p[k]['lo'])}, {_g(p[k]['hi'])}], measured {_g(p[k]['actual'])}"
            f" ({'inside' if p[k]['inside'] else 'outside'} the interval)"
            for k, label in (("d_star", "d*"), ("r_star", "peak gain R*"))
        ]
        out.append(f"{name}: " + "; ".join(parts) + ".")
    return out


def _proxies(study: dict[str, Any]) -> str:
    """What the proxy RMs are, along the study's axis."""
    rms = list(study["rms"].values())
    if study.get("axis") == "params":
        sizes = ", ".join(f"{r['params']:,}" for r in rms)
        return (
            f"proxy reward models of {sizes} non-embedding parameters, each from its own size's SFT model, all "
            f"trained on the run's {rms[-1]['comparisons']} comparisons"
        )
    return f"proxy reward models trained on {', '.join(str(r['comparisons']) for r in rms)} of the run's comparisons"


def _seeds(study: dict[str, Any]) -> str:
    n, k = study["ppo"].get("seeds", 1), study["ppo"].get("eval_draws", 1)
    runs = "" if n == 1 else f"; {n} runs per RM, their curves averaged prompt by prompt"
    draws = "" if k == 1 else f"; each PPO measurement samples every prompt {k} times (error bars: ±2 standard errors)"
    return runs + draws


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.1f}%"


def overoptimization_section(doc, study: dict | None, out: Path) -> None:
    if not study or not study.get("fits"):
        return
    fits, iv, rms = study["fits"], study.get("fit_intervals", {}), study["rms"]
    by_size = study.get("axis") == "params"
    doc.h(
        "Reward over-optimisation (Gao et al. 2022) on the built-in world"
        + (": proxy RMs of several sizes" if by_size else "")
    )
    doc.p(
        f"From `alignlab study overoptimization` ({study.get('run_dir')}): {_proxies(study)}; best-of-n "
        f"(n up to {study['n_max']}) of the SFT policy and PPO (KL coefficient {study['ppo']['kl_beta']}{_seeds(study)}) "
        "against each, "
        f"on {study['prompts']} held-out prompts, judged by the world's labelers (the exact gold reward). "
        "d = sqrt(KL to SFT); best-of-n R = d(α − β d), PPO R = d(α − β log d); intervals: 95% bootstrap over prompts."
    )
    rows = []
    for name, rm in rms.items():
        none = dict.fromkeys(("alpha", "beta", "d_star"))
        b, r = fits["bon"][name] or none, fits["rl"][name] or none
        bi, ri = (iv.get("bon") or {}).get(name) or {}, (iv.get("rl") or {}).get(name) or {}
        size = f"{rm['params']:,}" if by_size else str(rm["comparisons"])
        rows.append(
            [name, size, _pct(rm.get("gold_accuracy")), _g(b["alpha"]), _g(b["beta"]),
             _with_interval(b["d_star"], bi.get("d_star")), _g(r["alpha"]), _g(r["beta"]),
             _with_interval(r["d_star"], ri.get("d_star"))]
        )  # fmt: skip
    head = ["proxy RM", "non-embedding params" if by_size else "comparisons", "agrees with gold"]
    doc.table(head + ["BoN α", "BoN β", "BoN d*", "PPO α", "PPO β", "PPO d*"], rows)
    doc.p("Agrees with gold: the share of held-out response pairs the RM orders as the gold reward does.")
    checks = study.get("checks")
    if checks:
        _checks_table(doc, checks, rms, study["ppo"].get("eval_draws", 1))
    pred = study.get("prediction") or {}
    if pred:
        doc.p(
            f"Predicted before {pred['target_rm']} was measured, from the smaller RMs' fits (α, β linear in log "
            f"{'parameters' if by_size else 'comparisons'}): " + " ".join(prediction_sentences(pred))
        )
    pts, const = study["points"], study.get("constant_answers")
    tag = "_rm_sizes" if by_size else ""
    if const:
        doc.p(
            "What saying nothing earns: one answer given to every held-out prompt gains "
            + ", ".join(f'{g:+.3f} ("{y}")' for y, g in const.items())
            + " of gold over the SFT policy's samples (the dotted line in the figures). Where that is as high as "
            "the optimised policies' gold, gold itself rewards evasion, and an over-optimised policy has little "
            "gold left to lose."
        )
    doc.image(
        plots.overoptimization(pts, fits, "best_of_n", out / f"report_overopt{tag}_bon.png", const),
        "best-of-n gold vs d",
    )
    doc.image(plots.overoptimization(pts, fits, "rl", out / f"report_overopt{tag}_rl.png", const), "PPO gold vs d")
    _parts_section(doc, study, out, tag)


def _parts_section(doc, study: dict[str, Any], out: Path, tag: str) -> None:
    """What each curve's gold gain is made of, up to its peak and after it (studies made before the parts were
    kept have none: the section is left out)."""
    at_peak = study.get("parts_at_peak") or {}
    forms = [
        (m, t)
        for m, t in (("best_of_n", "best-of-n"), ("rl", "PPO"))
        if all((at_peak.get(n) or {}).get(m) for n in study["rms"])
    ]
    if not forms:
        return
    comps = list(next(iter(at_peak.values()))[forms[0][0]]["to_peak"])
    rows = []
    for m, title in forms:
        for name in study["rms"]:
            a = at_peak[name][m]
            cells = [f"{a['to_peak'][c]:+.3f} / {a['after_peak'][c]:+.3f}" for c in comps]
            rows.append([title, name, f"{a['peak_d']:.2f} → {a['last_d']:.2f}", *cells])
    doc.p(
        "What the gold gain is made of: gold is a weighted sum of four components (the training labelers' mean "
        "weights), so its gain splits exactly into their parts. Each cell: the part's gain from the start to gold's "
        "peak / its change from the peak to the last point. A part that falls after the peak is what the policy "
        "traded for the proxy's score."
    )
    doc.table(["", "proxy RM", "d: gold's peak → last", *comps], rows)
    for m, title in forms:
        doc.image(plots.overoptimization_parts(study["points"], m, out / f"report_overopt{tag}_{m}_parts.png", study.get("constant_answers")),
                  f"{title}: gold by component vs d")  # fmt: skip


def _if_true_cell(c: dict[str, Any], draws: int) -> str:
    """The R² the PPO law would score if true (median [95%]) with the draws measured, with one draw, and with
    the runs' spread (several runs per RM)."""
    sims = c.get("r2_if_law_true") or {}
    parts = []
    if sims.get(f"{draws}_draws"):
        m = sims[f"{draws}_draws"]
        parts += [f"{m['median']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}]", f"one draw {sims['1_draw']['median']:.2f}"]
    if sims.get("runs"):
        m = sims["runs"]
        parts.append(f"runs' spread {m['median']:.2f} [{m['lo']:.2f}, {m['hi']:.2f}]")
    return "; ".join(parts) or "–"


def _checks_table(doc, checks: dict[str, Any], rms: dict[str, Any], draws: int) -> None:
    head = ["proxy RM", "BoN: R² held out", "BoN: gold falls", "PPO: R² held out", "PPO: gold falls"]
    rows = [[name] + [c for f in ("bon", "rl") for c in _check_cells(checks[f][name])] for name in rms]
    noise = any("r2_if_law_true" in checks["rl"][name] for name in rms)
    if noise:
        head.append("PPO: R² if the law were true" + (f" ({draws} draws)" if draws > 1 else ""))
        rows = [row + [_if_true_cell(checks["rl"][name], draws)] for row, name in zip(rows, rms)]
    doc.table(head, rows)
    doc.p(
        "R² held out: the law fitted to every other point, scored on the points between. Gold falls: the fall "
        "from the peak to the last point, the peak picked on half the prompts and the fall measured on the "
        'other half (95% interval); "yes" when its lower bound is above 0 and the proxy rose over the same span.'
        + (
            " R² if the law were true: the same held-out R² when the law fitted to every point is the truth and each "
            "point carries the sampling noise measured from its draws (simulated; median and 95%), with one draw "
            "per prompt, and (several runs per RM) with the spread of the runs' mean gains. A measured R² inside "
            "that range is as good as the measurement allows."
            if noise
            else ""
        )
    )
