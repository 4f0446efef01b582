"""The report's figures, one function each, drawn with matplotlib's Agg canvas (no display)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from alignlab.stages.registry import STEPS, policy_key, policy_steps

# How each policy is ordered, named and coloured in the report's tables and figures: as the pipeline's
# steps declare them (stages/registry.py). Diagnostic policies get a label but no place in the order.
POLICY_ORDER = [policy_key(s) for s in policy_steps() if not s.diagnostic]
LABELS = {policy_key(s): s.policy for s in policy_steps(optional=True)}
POLICY_COLOURS = {policy_key(s): s.colour for s in STEPS.values() if s.colour}


def _save(fig: Figure, path: Path) -> Path:
    FigureCanvasAgg(fig)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return path


def ppo_curves(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Reward (proxy and gold) and KL over PPO iterations, one line per run."""
    fig = Figure(figsize=(11, 3.4))
    ax_rm, ax_gold, ax_kl = fig.subplots(1, 3)
    for name, rows in runs.items():
        rows = [r for r in rows if "rm_score_mean" in r]
        if not rows:
            continue
        step = [r["step"] for r in rows]
        c = POLICY_COLOURS.get(name)
        ax_rm.plot(step, [r["rm_score_mean"] for r in rows], label=name, color=c)
        if "gold_mean" in rows[0]:
            ax_gold.plot(step, [r["gold_mean"] for r in rows], label=name, color=c)
        ax_kl.plot(step, [r["kl"] for r in rows], label=name, color=c)
    ax_rm.set(title="reward-model score (proxy)", xlabel="PPO iteration")
    ax_gold.set(title="gold reward (world labelers)", xlabel="PPO iteration")
    ax_kl.set(title="KL to SFT (nats / response)", xlabel="PPO iteration")
    ax_rm.legend(fontsize=8)
    return _save(fig, path)


def gold_vs_proxy(runs: dict[str, list[dict[str, Any]]], path: Path) -> Path:
    """Gold against proxy reward along each PPO run: over-optimisation bends the curve down."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    for name, rows in runs.items():
        rows = [r for r in rows if "rm_score_mean" in r and "gold_mean" in r]
        if rows:
            ax.plot(
                [r["rm_score_mean"] for r in rows],
                [r["gold_mean"] for r in rows],
                "o-",
                ms=2.5,
                label=name,
                color=POLICY_COLOURS.get(name),
                alpha=0.8,
            )
    ax.set(xlabel="reward-model score (proxy)", ylabel="gold reward", title="gold vs proxy reward during PPO")
    ax.legend(fontsize=8)
    return _save(fig, path)


def rm_accuracy(
    acc: dict[str, float],
    agreement: dict[str, float],
    path: Path,
    same_pairs: dict[str, float | None] | None = None,
    expected: dict[str, float | None] | None = None,
) -> Path:
    """RM pairwise accuracy (against the sampled labels and, when known, in expectation over the
    labelers' choices) beside the labelers' own agreement (its practical ceiling): on the RM's
    validation pairs, when known, and on the world's candidate sets."""
    fig = Figure(figsize=(5.5, 3.4))
    ax = fig.subplots()
    groups = ["training labelers", "held-out labelers"]
    xs = range(len(groups))
    bars = [("RM vs sampled labels", acc, "#4c72b0")]
    if expected and all(expected.get(g) is not None for g in groups):
        bars.append(("RM, expected over labelers", expected, "#8172b3"))
    if same_pairs and all(same_pairs.get(g) is not None for g in groups):
        bars.append(("labelers agree, same pairs", same_pairs, "#dd8452"))
    bars.append(("labelers agree, world candidates", agreement, "#aaaaaa"))
    width = 0.8 / len(bars)
    for b, (label, values, color) in enumerate(bars):
        ax.bar(
            [x - 0.4 + width * (b + 0.5) for x in xs],
            [values.get(g) or 0 for g in groups],
            width,
            label=label,
            color=color,
        )
    ax.set_xticks(list(xs), groups)
    ax.set(ylim=(0.5, 1.0), ylabel="pairwise agreement", title="reward model vs labelers")
    ax.legend(fontsize=8, loc="upper left")
    return _save(fig, path)


def win_rates(rows: dict[str, dict[str, dict[str, float]]], path: Path) -> Path:
    """Win rate against SFT with 95% intervals, by training and by held-out labelers."""
    fig = Figure(figsize=(6, 3.6))
    ax = fig.subplots()
    names = list(rows)
    for j, (key, label, colour) in enumerate(
        [("train", "training labelers", "#4c72b0"), ("heldout", "held-out labelers", "#55a868")]
    ):
        xs = [i + (j - 0.5) * 0.35 for i in range(len(names))]
        vals = [rows[n][key]["value"] for n in names]
        err = [
            [v - rows[n][key]["low"] for n, v in zip(names, vals)],
            [rows[n][key]["high"] - v for n, v in zip(names, vals)],
        ]
        ax.bar(xs, vals, 0.35, yerr=err, capsize=3, label=label, color=colour)
    ax.axhline(0.5, color="k", lw=0.8, ls="--")
    ax.set_xticks(range(len(names)), names)
    ax.set(ylim=(0, 1), ylabel="P(preferred over SFT)", title="win rate against SFT (95% CI)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def flan_clusters(results: dict[str, dict[str, float]], path: Path) -> Path:
    """Zero-shot accuracy on each held-out cluster: base, instruction-tuned, no-template."""
    fig = Figure(figsize=(7, 3.6))
    ax = fig.subplots()
    clusters = list(results)
    variants = [v for v in ("base", "instruction", "no_template") if all(v in results[c] for c in clusters)]
    colours = {"base": "#888888", "instruction": "#55a868", "no_template": "#dd8452"}
    w = 0.8 / max(len(variants), 1)
    for j, v in enumerate(variants):
        ax.bar(
            [i + (j - (len(variants) - 1) / 2) * w for i in range(len(clusters))],
            [results[c][v] for c in clusters],
            w,
            label=v,
            color=colours[v],
        )
    ax.set_xticks(range(len(clusters)), clusters, fontsize=8)
    ax.set(ylabel="zero-shot accuracy", title="FLAN: accuracy on unseen task clusters")
    ax.legend(fontsize=8)
    return _save(fig, path)


def figure4(metrics: dict[str, dict[str, dict[str, float | None]]], labels: dict[str, str], path: Path) -> Path:
    """InstructGPT's Figure 4 for our policies: one panel per metadata rate, a bar per policy with its 95% CI.

    ``metrics[metric][policy] = {"value", "low", "high"}``; ``labels[metric]`` the panel title."""
    names = list(labels)
    policies = list(dict.fromkeys(p for m in names for p in metrics.get(m, {})))
    cols = 4
    rows_n = (len(names) + cols - 1) // cols
    fig = Figure(figsize=(3.1 * cols, 2.7 * rows_n))
    axes = fig.subplots(rows_n, cols, squeeze=False).reshape(-1)
    for ax, metric in zip(axes, names):
        cells = metrics.get(metric, {})
        ps = [p for p in policies if cells.get(p, {}).get("value") is not None]
        vals = [cells[p]["value"] for p in ps]
        err = [
            [v - (cells[p]["low"] if cells[p]["low"] is not None else v) for p, v in zip(ps, vals)],
            [(cells[p]["high"] if cells[p]["high"] is not None else v) - v for p, v in zip(ps, vals)],
        ]
        ax.bar(range(len(ps)), vals, yerr=err, capsize=2, color=[POLICY_COLOURS.get(p, "#999999") for p in ps])
        ax.set_xticks(range(len(ps)), ps, fontsize=7, rotation=30)
        ax.set_ylim(0, 1)
        ax.set_title(labels[metric], fontsize=9)
    for ax in axes[len(names) :]:
        ax.axis("off")
    fig.suptitle("InstructGPT Figure 4 metadata, held-out prompts (95% CI)", fontsize=10)
    return _save(fig, path)


def demonstration_quality(points: list[dict[str, Any]], path: Path) -> Path:
    """Why RLHF helps: win rate of PPO-ptx over its SFT, and gold of both, against the demonstrations' quality.

    ``points``: [{"setting", "demo_gold", "win": {value, low, high}, "sft_gold": {...}, "ptx_gold": {...}}]."""
    fig = Figure(figsize=(10, 3.6))
    ax_win, ax_gold = fig.subplots(1, 2)
    pts = sorted(points, key=lambda p: p["demo_gold"])
    x = [p["demo_gold"] for p in pts]

    def bars(key):
        v = [p[key]["value"] for p in pts]
        return v, [[a - p[key]["low"] for a, p in zip(v, pts)], [p[key]["high"] - a for a, p in zip(v, pts)]]

    v, e = bars("win")
    ax_win.errorbar(x, v, yerr=e, fmt="o-", capsize=3, color=POLICY_COLOURS["ppo_ptx"])
    for p, xi, yi in zip(pts, x, v):
        ax_win.annotate(p["setting"], (xi, yi), textcoords="offset points", xytext=(4, 6), fontsize=8)
    ax_win.axhline(0.5, color="k", lw=0.8, ls="--")
    ax_win.set(
        xlabel="mean gold reward of the demonstrations",
        ylabel="PPO-ptx win rate vs its SFT",
        title="RLHF gain (held-out labelers, 95% CI)",
    )
    for key, name in (("sft_gold", "sft"), ("ptx_gold", "ppo_ptx")):
        v, e = bars(key)
        ax_gold.errorbar(x, v, yerr=e, fmt="o-", capsize=3, label=name, color=POLICY_COLOURS[name])
    ax_gold.set(
        xlabel="mean gold reward of the demonstrations",
        ylabel="gold reward, held-out prompts",
        title="gold of SFT and PPO-ptx",
    )
    ax_gold.legend(fontsize=8)
    return _save(fig, path)


def _interval_errors(points: list[dict[str, Any]]) -> list[list[float]] | None:
    """matplotlib yerr for {value, low, high} points (None when they have no interval: one seed)."""
    if any(p["low"] is None for p in points):
        return None
    return [[p["value"] - p["low"] for p in points], [p["high"] - p["value"] for p in points]]


def methods(table: dict[str, dict[str, Any]], path: Path) -> Path:
    """The methods study: held-out win rate against SFT by wall time, and gold against sqrt(KL to SFT); trained
    methods are points, best-of-n of SFT by the RM a line over n. ``table``: study summary "methods"."""
    fig = Figure(figsize=(11, 4))
    ax_win, ax_gold = fig.subplots(1, 2)
    bon = sorted((n for n in table if n.startswith("best_of_")), key=lambda n: int(n.removeprefix("best_of_")))
    trained = [n for n in table if n not in bon and n != "sft"]
    for name in trained:
        m, c = table[name], POLICY_COLOURS.get(name)
        win, secs = m["win_rate_heldout_labelers"], m["seconds"]["value"]
        if win["value"] is not None and secs:
            ax_win.errorbar([secs], [win["value"]], yerr=_interval_errors([win]), fmt="o", capsize=3, color=c,
                            label=LABELS.get(name, name))  # fmt: skip
        gold, kl = m["gold_reward"], m["kl_to_baseline"]["value"]
        if gold["value"] is not None and kl is not None:
            ax_gold.errorbar([max(kl, 0.0) ** 0.5], [gold["value"]], yerr=_interval_errors([gold]), fmt="o",
                             capsize=3, color=c, label=LABELS.get(name, name))  # fmt: skip
    if bon:
        ns = [int(n.removeprefix("best_of_")) for n in bon]
        wins = [table[n]["win_rate_heldout_labelers"] for n in bon]
        secs = [table[n]["seconds"]["value"] or 0.0 for n in bon]
        ax_win.errorbar(secs, [w["value"] for w in wins], yerr=_interval_errors(wins), fmt="s-", capsize=3,
                        color="#555555", label="best-of-n of SFT (RM)")  # fmt: skip
        golds = [table[n]["gold_reward"] for n in bon]
        d = [max(table[n]["kl_to_baseline"]["value"] or 0.0, 0.0) ** 0.5 for n in bon]
        ax_gold.errorbar(d, [g["value"] for g in golds], yerr=_interval_errors(golds), fmt="s-", capsize=3,
                         color="#555555", label="best-of-n of SFT (RM)")  # fmt: skip
        for n, x, y, xg, yg in zip(ns, secs, [w["value"] for w in wins], d, [g["value"] for g in golds]):
            ax_win.annotate(f"n={n}", (x, y), textcoords="offset points", xytext=(3, -10), fontsize=7)
            ax_gold.annotate(f"n={n}", (xg, yg), textcoords="offset points", xytext=(3, -10), fontsize=7)
    ax_win.axhline(0.5, color="k", lw=0.8, ls="--")
    ax_win.set_xscale("log")
    ax_win.set(xlabel="wall time (s): training, or sampling + scoring for best-of-n", ylabel="win rate vs SFT",
               title="held-out labelers (mean over seeds, 95% CI)")  # fmt: skip
    ax_gold.set(xlabel="sqrt(KL to SFT), nats^0.5", ylabel="gold reward, held-out prompts",
                title="gold against distance from SFT")  # fmt: skip
    if "sft" in table and table["sft"]["gold_reward"]["value"] is not None:
        ax_gold.axhline(table["sft"]["gold_reward"]["value"], color=POLICY_COLOURS["sft"], lw=0.8, ls=":", label="SFT")
    ax_win.legend(fontsize=7)
    ax_gold.legend(fontsize=7)
    return _save(fig, path)


def sizes(summary: dict[str, Any], path: Path) -> Path:
    """InstructGPT's Figure 1: each method's win rate against the largest size's SFT by model size (non-embedding
    parameters, log axis), 95% intervals; held-out labelers left, training labelers right. ``summary``: the
    sizes study's summary.json ("methods": name -> label, "points": one per size and method)."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2, sharey=True)
    groups = (("win_rate_heldout_labelers", "held-out labelers"), ("win_rate_train_labelers", "training labelers"))
    for ax, (key, judges) in zip(axes, groups):
        for method, label in summary["methods"].items():
            pts = [p for p in summary["points"] if p["method"] == method and p[key]["value"] is not None]
            if pts:
                prompted = method == "base_prompted"  # the same model as base, asked differently: same colour
                ax.errorbar([p["non_embedding_params"] for p in pts], [p[key]["value"] for p in pts],
                            yerr=_interval_errors([p[key] for p in pts]), fmt="s--" if prompted else "o-",
                            capsize=3, color=POLICY_COLOURS.get(method.removesuffix("_prompted")),
                            mfc="white" if prompted else None, label=label)  # fmt: skip
        ax.axhline(0.5, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        sizes = {p["size"]: p["non_embedding_params"] for p in summary["points"]}
        ax.set_xticks(list(sizes.values()), [f"{n}\n{p:,}" for n, p in sizes.items()])
        ax.minorticks_off()
        ax.set(xlabel="model size: non-embedding parameters", title=f"{judges} (95% CI)")
    axes[0].set_ylabel(f"win rate vs {summary['baseline']}")
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def flan_sizes(flan: dict[str, Any], path: Path) -> Path:
    """FLAN's Figure 7: zero-shot accuracy on held-out clusters by model size, instruction-tuned against base,
    95% intervals over (cluster, seed) cells; rank classification left, generation right."""
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    scored = (("rank_accuracy", "rank classification"), ("accuracy", "generation (task checker)"))
    x = [p["non_embedding_params"] for p in flan["points"]]
    for ax, (score, how) in zip(axes, scored):
        for kind, label, fmt in (("instruction", "instruction-tuned", "o-"), ("base", "base model", "s--")):
            pts = [p[score][kind] for p in flan["points"]]
            ax.errorbar(x, [q["value"] for q in pts], yerr=_interval_errors(pts), fmt=fmt, capsize=3, label=label)
        ax.set_xscale("log")
        ax.set_xticks(x, [f"{p['size']}\n{p['non_embedding_params']:,}" for p in flan["points"]])
        ax.minorticks_off()
        ax.set(xlabel="model size: non-embedding parameters", ylabel="zero-shot accuracy, unseen clusters",
               title=f"{how} (95% CI over clusters x seeds)")  # fmt: skip
        ax.legend(fontsize=7)
    return _save(fig, path)


RM_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


def overoptimization(
    points: dict[str, dict[str, Any]],
    fits: dict[str, dict[str, dict[str, float]]],
    method: str,
    path: Path,
    constant_answers: dict[str, float] | None = None,
) -> Path:
    """Gao et al. (2022) Figure 1 (``method`` "best_of_n") or 2 ("rl"): gold and proxy (RM) gain over the
    initial policy against d = sqrt(KL), one colour per proxy RM, the fitted law drawn over the gold points
    (with +-2 standard errors of sampling where the points were measured with several draws per prompt).
    ``points``: the over-optimisation study's summary "points"; ``fits``: its "fits" ({form: {rm: params}});
    ``constant_answers``: {answer: gold gain of giving it to every prompt}, the best drawn as a reference."""
    from alignlab.evaluate.overoptimization_fit import gain

    form = "bon" if method == "best_of_n" else "rl"
    fig = Figure(figsize=(10, 3.8))
    ax_gold, ax_proxy = fig.subplots(1, 2)
    for i, (name, p) in enumerate(points.items()):
        c, curve = RM_COLOURS[i % len(RM_COLOURS)], p[method]
        noise = curve.get("gold_noise_var")  # measured with several draws per prompt: +-2 standard errors
        err = None if noise is None else [2 * max(v, 0.0) ** 0.5 for v in noise]
        ax_gold.errorbar(curve["d"], curve["gold"], yerr=err, fmt="o", color=c, label=name, capsize=2)
        ax_proxy.plot(curve["d"], curve["proxy"], "o-", color=c, label=name)
        f = fits[form][name]
        if f:  # None: too few measurements to fit
            d = [max(curve["d"]) * k / 100 for k in range(1, 101)]
            ax_gold.plot(d, gain(d, f["alpha"], f["beta"], form), "-", color=c, lw=1)
    if constant_answers:
        best = max(constant_answers, key=constant_answers.get)
        ax_gold.axhline(constant_answers[best], color="grey", ls=":", lw=1.2, label=f"always {best!r}")
    law = "d(α − β d)" if form == "bon" else "d(α − β log d)"
    title = "best-of-n" if form == "bon" else "PPO"
    ax_gold.axhline(0, color="k", lw=0.6)
    ax_gold.set(xlabel="d = sqrt(KL to SFT), nats^0.5", ylabel="gold gain over SFT",
                title=f"{title}: gold (points) and fit R = {law}")  # fmt: skip
    ax_proxy.set(xlabel="d = sqrt(KL to SFT), nats^0.5", ylabel="proxy (RM) gain over SFT",
                 title=f"{title}: the proxy RM's own score")  # fmt: skip
    ax_gold.legend(fontsize=7, title="proxy RM", title_fontsize=7)
    return _save(fig, path)


PART_COLOURS = {"helpful": "#4c72b0", "truthful": "#55a868", "harmless": "#c44e52", "style": "#8172b3"}


def overoptimization_parts(
    points: dict[str, dict[str, Any]], method: str, path: Path, constant_answers: dict[str, float] | None = None
) -> Path:
    """What the gold gain is made of along best-of-n (``method`` "best_of_n") or PPO ("rl"): one panel per
    proxy RM, each gold component's part (weight x score) as a gain over the initial policy against d, with the
    gold gain (their sum) in black and the best constant answer's gain dotted. Over-optimisation shows as a part
    that falls while the proxy still rises."""
    best = max(constant_answers, key=constant_answers.get) if constant_answers else None
    fig = Figure(figsize=(3.2 * len(points), 3.4))
    axes = fig.subplots(1, len(points), sharey=True, squeeze=False)[0]
    for ax, (name, p) in zip(axes, points.items()):
        curve = p[method]
        for c, v in curve["parts"].items():
            ax.plot(curve["d"], v, "o-", ms=3, color=PART_COLOURS.get(c), label=c)
        ax.plot(curve["d"], curve["gold"], "k--", lw=1.2, label="gold (sum)")
        if best:
            ax.axhline(constant_answers[best], color="grey", ls=":", lw=1.2, label=f"always {best!r}")
        ax.axhline(0, color="k", lw=0.5)
        ax.set(xlabel="d = sqrt(KL to SFT)", title=f"RM {name}")
    axes[0].set_ylabel("gain over SFT, by gold component")
    axes[0].legend(fontsize=7, loc="center right", framealpha=0.8)
    fig.suptitle(f"{'best-of-n' if method == 'best_of_n' else 'PPO'}: what the gold gain is made of", fontsize=10)
    return _save(fig, path)
