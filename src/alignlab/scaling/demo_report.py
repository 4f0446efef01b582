"""The scaling demo's verdicts, figures and report: the registered predictions against what the runs did."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignlab.scaling.capability_law import EXACT, capability_quantities, geometric_pass_rate

LABELS = {
    "loss_vs_compute": "loss, L(C)",
    "chinchilla": "loss, L(N,D)",
    "rare_facts": "rare-fact recall",
    "word_reversal": "word reversal",
    "arithmetic": "arithmetic",
    "rare_facts" + EXACT: "rare-fact recall, exact p",
    "word_reversal" + EXACT: "word reversal, exact p",
    "arithmetic" + EXACT: "arithmetic, exact p",
}


def _actual(rec: dict[str, Any], quantity: str, fit: dict[str, Any]) -> tuple[float, int]:
    """A run's value of a quantity; for a capability, on the problems that fit used (and its zeros)."""
    if quantity in ("loss_vs_compute", "chinchilla"):
        return float(rec["loss"]), 0
    return capability_actual(rec, quantity, fit["capability_fits"][quantity]["problems_used"])


def capability_actual(rec: dict[str, Any], quantity: str, ids: list[str]) -> tuple[float, int]:
    """A run's geometric-mean pass rate on problems ``ids``, by the quantity's measure (and its zeros)."""
    if quantity.endswith(EXACT):  # the exact pass probability: one "sample" that passes with that probability
        return geometric_pass_rate(np.array([rec["pass_prob"][i] for i in ids], dtype=float), np.ones(len(ids)))
    passes = np.array([rec["passes"][i] for i in ids], dtype=float)
    return geometric_pass_rate(passes, np.full(len(ids), float(rec["samples"])))


def _verdict(pred: dict[str, Any], actual: float, zeros: int, relative: bool) -> dict[str, Any]:
    err = abs(actual - pred["estimate"])
    return {
        "predicted": pred["estimate"],
        "lo": pred["lo"],
        "hi": pred["hi"],
        "actual": actual,
        "error": err / abs(actual) if relative else err,
        "error_kind": "relative" if relative else "absolute",
        "inside_interval": bool(pred["lo"] <= actual <= pred["hi"]),
        **({"problems_never_passed": zeros} if zeros else {}),
    }


def _quantities(cfg, fit: dict[str, Any], target_name: str, rec: dict[str, Any]) -> dict[str, Any]:
    preds = fit["targets"][target_name]
    out = {}
    for q in ("loss_vs_compute", "chinchilla", *(c for c, _, _ in capability_quantities(cfg.capabilities))):
        if preds.get(q) is None:
            continue
        actual, zeros = _actual(rec, q, fit)
        out[q] = _verdict(preds[q], actual, zeros, relative=q in ("loss_vs_compute", "chinchilla"))
    return out


def compare_headline(cfg, pre: dict[str, Any], target: dict[str, Any], problems) -> dict[str, Any]:
    """The target against ``prediction_pre.json``."""
    return {
        "target": target["name"],
        "C": target["C"],
        "ratio_to_largest_fitted": target["C"] / pre["largest_fitted"],
        "capability_ratio": target["C"] / pre.get("largest_fitted_capability", pre["largest_fitted"]),
        "prediction_made": pre["created"],
        "quantities": _quantities(cfg, pre, target["name"], target),
    }


def calibration_table(cfg, out: Path, by_name: dict[str, dict], problems) -> dict[str, Any]:
    """Every held-out prediction (calibration/pre_k*.json) against its run; coverage per quantity.

    Each actual is measured at the resolution its law's interval describes. L(C)'s interval is for one
    run (runs scatter about the curve), so the loss is the named run's. The capability law's interval is
    for a model size (sizes scatter about the line, each pooling its seeds' samples), so a fitted size's
    capability is pooled over all its seeds, every one trained after the prediction was registered;
    one seed's 48 samples would read a rarely solved problem as a pass rate of 0."""
    rows = []
    for path in sorted((out / "calibration").glob("pre_k*.json"), key=lambda p: int(p.stem[5:])):
        fit = json.loads(path.read_text())
        fitted_C = max(r["C"] for r in by_name.values() if r["width"] in fit["fitted_sizes"])
        for name in fit["targets"]:
            rec = _pooled_capabilities(by_name, name)
            for q, v in _quantities(cfg, fit, name, rec).items():
                rows.append({"fit": path.stem, "fitted_sizes": fit["fitted_sizes"], "target": name, "quantity": q})
                pooled = 1 if q in ("loss_vs_compute", "chinchilla") else rec["seeds_pooled"]
                rows[-1].update(ratio=rec["C"] / fitted_C, seeds_pooled=pooled, **v)
    coverage = {}
    for q in dict.fromkeys(r["quantity"] for r in rows):
        mine = [r for r in rows if r["quantity"] == q]
        coverage[q] = {"predictions": len(mine), "inside": sum(r["inside_interval"] for r in mine)}
    return {"rows": rows, "coverage": coverage}


def _pooled_capabilities(by_name: dict[str, dict], name: str) -> dict[str, Any]:
    """The run ``name`` with its capability counts and probabilities pooled over its size's main-line seeds."""
    rec = by_name[name]
    if name.startswith("target"):
        return {**rec, "seeds_pooled": 1}
    seeds = [r for r in by_name.values() if r["width"] == rec["width"] and not r["name"].startswith("target")]
    ids = list(rec["passes"])
    return {
        **rec,
        "passes": {i: sum(r["passes"][i] for r in seeds) for i in ids},
        "samples": sum(r["samples"] for r in seeds),
        "pass_prob": {i: sum(r["pass_prob"][i] for r in seeds) / len(seeds) for i in ids},
        "seeds_pooled": len(seeds),
    }


# --------------------------------------------------------------------------- figures


def _axes(n: int, width: float = 4.2) -> tuple[Figure, list[Any]]:
    fig = Figure(figsize=(width * n, 3.8), dpi=110)
    FigureCanvasAgg(fig)
    return fig, [fig.add_subplot(1, n, i + 1) for i in range(n)]


def _target_marks(
    ax, x: float, pred: dict[str, Any], actual: float, to_y=lambda v: v, color="tab:red", what=""
) -> None:
    lo, hi = sorted((to_y(pred["lo"]), to_y(pred["hi"])))
    mid = to_y(pred["estimate"])
    prefix = f"{what}: " if what else ""
    ax.errorbar(
        [x], [mid], yerr=[[mid - lo], [hi - mid]], fmt="o", color=color, capsize=5, label=f"{prefix}prediction (95%)"
    )
    ax.plot([x], [to_y(actual)], "*", color=color, mec="black", markersize=13, label=f"{prefix}actual")


def plot_predictions(out: Path, pre: dict[str, Any], done: list[dict], target: dict[str, Any], cfg) -> Path:
    """GPT-4's figure, one panel per quantity: small runs, fitted law, the target's prediction and actual."""
    quantities = ["loss_vs_compute", *cfg.capabilities]
    fig, axes = _axes(len(quantities))
    t_pred = pre["targets"][target["name"]]
    C_max = float(target["C"])
    grid = np.logspace(np.log10(min(r["C"] for r in done)) - 0.1, np.log10(C_max) + 0.1, 200)
    for ax, q in zip(axes, quantities):
        ax.set_xscale("log")
        ax.set_xlabel("compute C = 6ND (FLOPs)")
        ax.grid(True, which="both", alpha=0.25)
        if q == "loss_vs_compute":
            f = pre["loss_fit"]
            fitted = [r for r in done if r["width"] in pre.get("loss_widths", [r["width"]])]
            others = [r for r in done if r not in fitted]
            ax.plot([r["C"] for r in fitted], [r["loss"] for r in fitted], "o", color="tab:blue", alpha=0.7,
                    label="fitted runs")  # fmt: skip
            if others:
                ax.plot([r["C"] for r in others], [r["loss"] for r in others], "o", mfc="none", color="tab:blue",
                        alpha=0.7, label="capability-only runs (not in the loss fit)")  # fmt: skip
            ax.plot(grid, f["a"] * grid ** f["b"] + f["c"], "-", color="tab:blue", alpha=0.6, label="L(C) = aC^b + c")
            _target_marks(ax, C_max, t_pred[q], target["loss"])
            ax.set_ylabel("held-out loss (nats/token)")
        else:
            _capability_panel(ax, pre, target, q, grid, C_max)
        ax.set_title(LABELS[q])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path = out / "predictions.png"
    fig.savefig(path)
    return path


def _capability_panel(ax, pre: dict[str, Any], target: dict[str, Any], task: str, grid, C_max: float) -> None:
    """One capability, both measures: the fitted sizes' −E[log p], the law, the prediction and the actual."""
    ax.set_yscale("log")
    skipped = []
    for q, color, what in ((task, "tab:green", "sampled"), (task + EXACT, "tab:purple", "exact p")):
        fit = pre["capability_fits"].get(q)
        if fit is not None and "skipped" in fit:
            skipped.append(f"{what}: no law (the report says why)")
            continue
        if fit is None or q not in pre["targets"][target["name"]]:
            continue  # a demo from before the exact measure
        ax.plot([s["C"] for s in fit["sizes"]], [s["neg_log"] for s in fit["sizes"]], "o", color=color,
                label=f"{what}: fitted sizes ({len(fit['problems_used'])} problems)")  # fmt: skip
        ax.plot(grid, fit["alpha"] * grid ** (-fit["k"]), "-", color=color, alpha=0.6, label=f"{what}: αC^-k")
        actual = _actual(target, q, pre)[0]
        to_y = lambda p: -np.log(max(p, 1e-12))  # noqa: E731
        _target_marks(ax, C_max, pre["targets"][target["name"]][q], actual, to_y, color, what)
    if skipped:
        ax.text(0.02, 0.02, "\n".join(skipped), fontsize=7, transform=ax.transAxes)
    ax.set_ylabel("−E[log pass rate]")


def _style(q: str) -> tuple[str, str]:
    """A quantity's colour (its capability's, so both measures of one share it) and marker (square: exact p)."""
    base = q.removesuffix(EXACT)
    return f"C{list(LABELS).index(base)}", "s" if q.endswith(EXACT) else "o"


def plot_calibration(out: Path, calibration: dict[str, Any]) -> Path:
    """Error against extrapolation ratio for every held-out prediction; hollow = outside its interval."""
    fig, (ax_l, ax_c) = _axes(2, 5.0)
    for r in calibration["rows"]:
        ax = ax_l if r["error_kind"] == "relative" else ax_c
        y = 100 * r["error"] if ax is ax_l else r["error"]
        color, marker = _style(r["quantity"])
        ax.plot([r["ratio"]], [y], marker, color=color, mfc=color if r["inside_interval"] else "none", markersize=7)
    for ax, q_list, ylabel in (
        (ax_l, ["loss_vs_compute"], "loss error (%)"),
        (ax_c, [q for q in LABELS if q not in ("loss_vs_compute", "chinchilla")], "pass-rate error (absolute)"),
    ):
        for q in q_list:
            color, marker = _style(q)
            ax.plot([], [], marker, color=color, label=LABELS[q])
        ax.set_xscale("log")
        ax.set_xlabel("target compute / largest fitted run's")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7, title="hollow: outside the 95% interval", title_fontsize=7)
    fig.tight_layout()
    path = out / "calibration.png"
    fig.savefig(path)
    return path


# --------------------------------------------------------------------------- report


def _fmt(q: str, v: dict[str, Any]) -> str:
    if v["error_kind"] == "relative":
        return (
            f"| {LABELS[q]} | {v['predicted']:.4f} [{v['lo']:.4f}, {v['hi']:.4f}] | {v['actual']:.4f} | "
            f"{100 * v['error']:.2f}% | {'yes' if v['inside_interval'] else '**no**'} |"
        )
    return (
        f"| {LABELS[q]} | {_p(v['predicted'])} [{_p(v['lo'])}, {_p(v['hi'])}] | {_p(v['actual'])} | "
        f"{_p(v['error'])} | {'yes' if v['inside_interval'] else '**no**'} |"
    )


def _p(x: float) -> str:
    """A pass rate: three decimals, or three significant digits when it is too small for them to show."""
    return f"{x:.3f}" if x == 0 or abs(x) >= 0.01 else f"{x:.2e}"


def report_lines(results: dict[str, Any], pre: dict[str, Any]) -> list[str]:
    h = results["headline"]
    lines = [
        "# Predictable scaling: predicted before training, then checked",
        "",
        f"Recipe: {results['recipe']}.",
        "",
        f"The prediction was registered at {h['prediction_made']}; the target {h['target']} has "
        f"{h['ratio_to_largest_fitted']:.0f}x the compute of the largest run the loss laws were fitted on "
        f"(widths {pre.get('loss_widths', 'all')}) and {h.get('capability_ratio', h['ratio_to_largest_fitted']):.0f}x "
        f"that of the largest the capability law was fitted on (widths {pre.get('capability_widths', 'the largest')}).",
        "",
        "| quantity | predicted [95%] | actual | error | inside |",
        "|---|---|---|---|---|",
        *[_fmt(q, v) for q, v in h["quantities"].items()],
        *(
            [f"- {LABELS['chinchilla']}: no prediction ({pre['chinchilla_skipped']})"]
            if pre.get("chinchilla_skipped")
            else []
        ),
        *[
            f"- {LABELS[q]}: no prediction ({f['skipped']})"
            for q, f in pre["capability_fits"].items()
            if "skipped" in f
        ],
        "",
        "Capabilities are the geometric-mean pass rate exp(E[log pass rate]) over the problems every fitted "
        "run solved at least once (GPT-4's restriction); the law is −E[log pass rate] = αC^−k. "
        'An "exact p" row fits the same law to each problem\'s exact pass probability (one teacher-forced '
        "pass: P(the answer's tokens) × P(the word ends), at the sampling temperature) on every problem, "
        "so a small model's rare passes are measured rather than rounded to zero.",
        "",
        "## Is each capability still improving at the largest fitted size?",
        "",
    ]
    for t, v in results["still_improving"].items():
        if "skipped" in v:
            lines.append(f"- {LABELS[t]}: not measurable ({v['skipped']})")
            continue
        lo, hi = v["interval"]
        verdict = "yes" if v["improving"] else "**no: the law cannot be trusted past the fitted runs**"
        lines.append(
            f"- {LABELS[t]}: −E[log p] changed by {v['change_in_neg_log']:+.3f} [{lo:+.3f}, {hi:+.3f}] "
            f"from width {v['between'][0]} to {v['between'][1]}: {verdict}"
        )
    lines += ["", "## Calibration: every held-out prediction", "", "![calibration](calibration.png)", ""]
    lines += ["| quantity | predictions | inside the 95% interval |", "|---|---|---|"]
    for q, c in results["calibration"]["coverage"].items():
        lines.append(f"| {LABELS[q]} | {c['predictions']} | {c['inside']} |")
    lines += [
        "",
        "The loss is checked on the named run, as L(C)'s interval is for one run; a capability on all seeds of "
        "the named run's size, pooled, as the capability law's interval is for a size.",
        "",
        "| fitted widths | target | ratio | quantity | error | inside |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["calibration"]["rows"]:
        err = f"{100 * r['error']:.2f}%" if r["error_kind"] == "relative" else _p(r["error"])
        lines.append(
            f"| {r['fitted_sizes']} | {r['target']} | {r['ratio']:.1f}x | {LABELS[r['quantity']]} | {err} | "
            f"{'yes' if r['inside_interval'] else 'no'} |"
        )
    lines += ["", "![predictions](predictions.png)", "", f"Wall time: {results['seconds'] / 60:.1f} min."]
    return lines


def write_report(out: Path, results: dict[str, Any], pre: dict[str, Any], done, target, cfg) -> Path:
    plot_predictions(out, pre, done, target, cfg)
    plot_calibration(out, results["calibration"])
    path = out / "report.md"
    path.write_text("\n".join(report_lines(results, pre)) + "\n")
    return path
