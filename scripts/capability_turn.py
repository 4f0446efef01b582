"""Where does a capability leave its law? Train extra main-line widths between a finished demo's largest
fitted size and its target, and set each one's capabilities beside the law fitted on the demo's sizes.

    python scripts/capability_turn.py runs/default/scaling_demo_v4_seed5 --seed 5 --widths 64 80 96 128

A diagnostic after the fact (the target's result is known): the extra runs follow the demo's recipe
(``demo.spec_for``: D = 20 N, the 1/width learning rate, one seed) and go to ``runs/`` beside the
demo's own, named ``w<width>_s<seed>``. For each capability and both measures it prints, per width, the
measured −E[log p] over the law's problems and the law's value there, and writes the table to
``capability_turn.json``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

from alignlab.outputs import atomic_write_json
from alignlab.scaling import demo as d
from alignlab.scaling.capability_law import EXACT, capability_quantities, fit_capability_law
from alignlab.scaling.demo_report import capability_actual


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d.add_finished_demo_args(ap)
    ap.add_argument("--widths", type=int, nargs="+", required=True, help="extra widths, between the fitted and target")
    a = ap.parse_args()
    demo = d.read_finished_args(a)
    cfg, scfg, problems, done = demo["cfg"], demo["scfg"], demo["problems"], demo["done"]
    bad = [w for w in a.widths if not cfg.widths[-1] < w < cfg.target_width]
    if bad:
        raise SystemExit(f"--widths {bad}: each must lie between {cfg.widths[-1]} and {cfg.target_width}")
    extra = [d.train_and_score(cfg, scfg, d.spec_for(cfg, scfg, w, seed=cfg.seeds[0]), problems) for w in a.widths]
    target = demo["target"]
    out = Path(a.output_dir)
    fitted = d.largest_sizes(done, cfg.capability_sizes)
    first_seeds = [r for r in done if r["seed"] == cfg.seeds[0]]
    table = {}
    for q, task, exact in capability_quantities(cfg.capabilities):
        try:
            law = fit_capability_law(d.pass_counts(fitted, problems[task], exact), [1.0], cfg.n_boot, cfg.level)
        except ValueError as e:
            table[q] = {"skipped": str(e)}
            continue
        rows = []
        for r in [*first_seeds, *extra, target]:
            geo, zeros = capability_actual(r, q, law["problems_used"])
            law_y = law["alpha"] * r["C"] ** (-law["k"])
            rows.append({"run": r["name"], "width": r["width"], "C": r["C"], "loss": r["loss"],
                         "geo_pass": geo, "zeros": zeros, "law_geo_pass": math.exp(-law_y)})  # fmt: skip
        table[q] = {"k": law["k"], "r2": law["r2"], "problems": len(law["problems_used"]), "rows": rows}
    atomic_write_json(out / "capability_turn.json", table)
    _print(table)
    _plot(table, set(a.widths), out / "capability_turn.png")


def _print(table: dict) -> None:
    for q, t in table.items():
        if "skipped" in t:
            print(f"{q}: no law ({t['skipped']})")
            continue
        print(
            f"\n{q}: law fitted on the demo's capability sizes, k={t['k']:.2f}, R²={t['r2']:.2f}, {t['problems']} problems"
        )
        print(f"{'run':>12} {'C':>9} {'loss':>6} {'geo pass':>9} {'law':>9}")
        for r in t["rows"]:
            print(f"{r['run']:>12} {r['C']:9.3g} {r['loss']:6.3f} {r['geo_pass']:9.3g} {r['law_geo_pass']:9.3g}")


def _plot(table: dict, extra_widths: set[int], path: Path) -> None:
    """One panel per capability: −E[log p] against C for both measures, the law dashed, the extra widths hollow."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    tasks = list(dict.fromkeys(q.removesuffix(EXACT) for q in table))
    fig = Figure(figsize=(4.4 * len(tasks), 3.8), dpi=110)
    FigureCanvasAgg(fig)
    for j, task in enumerate(tasks):
        ax = fig.add_subplot(1, len(tasks), j + 1)
        for q, color, what in ((task, "tab:green", "sampled"), (task + EXACT, "tab:purple", "exact p")):
            t = table.get(q, {})
            if "rows" not in t:
                continue
            rows = [r for r in t["rows"] if r["geo_pass"] > 0]
            C = [r["C"] for r in t["rows"]]
            ax.plot(C, [-math.log(r["law_geo_pass"]) for r in t["rows"]], "--", color=color, alpha=0.6,
                    label=f"{what}: law on the demo's sizes")  # fmt: skip
            for r in rows:
                fill = "none" if r["width"] in extra_widths else color
                marker = "*" if r["run"].startswith("target") else "o"
                ax.plot([r["C"]], [-math.log(r["geo_pass"])], marker, color=color, mfc=fill, markersize=8)
            ax.plot([], [], "o", color=color, label=f"{what}: measured (hollow: extra widths)")
        ax.set(xscale="log", yscale="log", xlabel="compute C = 6ND (FLOPs)", ylabel="−log geometric-mean pass rate")
        ax.set_title(task)
        ax.grid(True, which="both", alpha=0.25)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)


if __name__ == "__main__":
    main()
