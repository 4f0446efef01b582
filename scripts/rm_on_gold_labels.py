"""Is a proxy RM limited by its labels or by its size? Train RMs on the run's own comparisons re-ranked by
the gold reward (noise-free labels) and compare their agreement with gold to the RMs trained on the
labelers' rankings (a diagnostic for ``study overoptimization``; not part of the pipeline).

    python scripts/rm_on_gold_labels.py runs/default RUN/sft RUN/study_overoptimization_rm_sizes/sizes/d16/sft

Writes RUN/diagnostics/gold_labels/comparisons (the train split ranked by gold, ties kept as ties; the
validation split untouched, so accuracy is measured on the same pairs as the pipeline's RM) and one RM per
SFT model under RUN/diagnostics/gold_labels/rm_<n>; prints each RM's agreement with gold beside the
agreement of the labels it replaced.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import datasets

from alignlab.config import apply
from alignlab.outputs import read_summary
from alignlab.stages.pipeline import PipelineConfig, step_config
from alignlab.stages.registry import run_stage


def gold_ranks(gold: list[float]) -> list[int]:
    """1 = best; equal gold, equal rank."""
    return [1 + sum(h > g for h in gold) for g in gold]


def rerank_by_gold(row: dict) -> dict:
    """The row's responses (and their gold and sources) best to worst by gold, with gold's ranks."""
    order = sorted(range(len(row["gold"])), key=lambda i: -row["gold"][i])  # stable: ties keep their order
    out = {k: [row[k][i] for i in order] for k in ("responses", "gold", "sources") if row.get(k)}
    return {**out, "ranks": gold_ranks(out["gold"])}


def write_gold_ranked(run: Path, out: Path) -> Path:
    path = out / "comparisons"
    if not path.is_dir():
        ds = datasets.load_from_disk(str(run / "compare" / "comparisons"))
        train = ds["train"].map(rerank_by_gold)
        datasets.DatasetDict({"train": train, "validation": ds["validation"]}).save_to_disk(str(path))
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir")
    ap.add_argument("sft", nargs="+", help="SFT model folders, one RM each")
    a = ap.parse_args()
    run = Path(a.run_dir)
    out = run / "diagnostics" / "gold_labels"
    data = write_gold_ranked(run, out)
    base = step_config("reward", PipelineConfig(output_dir=str(run), seeds=[0]), 0, run)[1]
    for i, sft in enumerate(a.sft):
        folder = out / f"rm_{i}"
        if read_summary(folder) is None:
            rc = dataclasses.replace(base, model=sft, data=str(data), output_dir=str(folder))
            run_stage("reward", apply(rc, {"run": {"resume": True}}, "rm_on_gold_labels"))
        s = read_summary(folder)
        print(
            f"{sft}: RM on gold-ranked labels agrees with gold on {100 * s['val_accuracy_gold']:.1f}% of held-out "
            f"pairs ({s['gold_pairs']}); the labelers' own rankings of those pairs: {100 * s['labels_vs_gold']:.1f}%"
        )


if __name__ == "__main__":
    main()
