"""Apply the scaling demo's current capability fit to a demo whose target already trained (a check, not
a prediction: the target's result is known).

    python scripts/capability_fit_after_the_fact.py runs/default/scaling_demo --seed 0

Trains any main-line size of the current default recipe that the older demo lacks (e.g. widths 40 and 48
for a second-version demo), fits GPT-4's capability law on the ``capability_sizes`` largest sizes, and
prints each capability's prediction for the existing target beside its actual pass rate, for both
measures (sampled pass counts, and the exact pass probability, which an older demo's runs gain from
one teacher-forced pass each).
"""

from __future__ import annotations

import argparse
import json

from alignlab.scaling import demo as d
from alignlab.scaling.capability_law import capability_quantities, fit_capability_law, still_improving
from alignlab.scaling.demo_report import capability_actual


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    d.add_finished_demo_args(ap)
    a = ap.parse_args()
    demo = d.read_finished_args(a)
    cfg, problems, done, target = demo["cfg"], demo["problems"], demo["done"], demo["target"]
    fitted = d.largest_sizes(done, cfg.capability_sizes)
    result = {}
    for q, task, exact in capability_quantities(cfg.capabilities):
        pc = d.pass_counts(fitted, problems[task], exact)
        try:
            law = fit_capability_law(pc, [target["C"]], cfg.n_boot, cfg.level)
        except ValueError as e:
            result[q] = {"skipped": str(e)}
            continue
        ids = law["problems_used"]
        actual = capability_actual(target, q, ids)[0]
        pred = law["predictions"][0]
        result[q] = {
            "k": law["k"],
            "r2": law["r2"],
            "problems": len(ids),
            "predicted": pred["estimate"],
            "interval": [pred["lo"], pred["hi"]],
            "actual": actual,
            "inside": pred["lo"] <= actual <= pred["hi"],
            "still_improving": still_improving(pc, cfg.n_boot, cfg.level)["improving"],
        }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
