"""The report's section on ``alignlab study sizes``: InstructGPT's Figure 1 on the built-in world.

Above the tables, the headline plainly: does the smallest PPO-ptx beat the largest base model, unprompted and
few-shot prompted, by held-out labelers at a 95% lower bound above 50%? Then the sizes, and one row per method
with one column per size: its win rate against the largest size's SFT with a 95% interval over prompts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alignlab.report import plots
from alignlab.report.why_rlhf import _ci

HOW = {"base": "unprompted", "base_prompted": "few-shot prompted"}


def _beats(x: dict) -> bool | None:
    """Whether a win rate's 95% lower bound is above 50% (None: not measured)."""
    return None if x.get("low") is None else x["low"] > 0.5


def verdict_sentence(h: dict[str, Any]) -> str:
    """Whether the smallest PPO-ptx beats the largest base model (held-out labelers, 95% lower bound > 50%)."""
    key = "win_rate_heldout_labelers"
    small = f"the smallest PPO-ptx ({h['smallest']}, {h['smallest_params']:,} non-embedding parameters)"
    large = f"the largest base model ({h['largest']}, {h['largest_params']:,})"
    beats = {o: _beats(h[o][key]) for o in HOW}
    wins = {o: f"{HOW[o]}: {_ci(h[o], key)}" for o in HOW}
    if None in beats.values():
        return f"Not measured: the head-to-head of {small} and {large} has no interval (no world labelers?)."
    if all(beats.values()):
        return (
            f"Yes: held-out labelers prefer {small} to {large} both unprompted and few-shot prompted, each 95% "
            f"lower bound above 50% ({wins['base']}; {wins['base_prompted']}), as InstructGPT's 1.3B PPO-ptx "
            "beat the 175B GPT-3."
        )
    if not any(beats.values()):
        return (
            f"No: {small} does not beat {large} at a 95% lower bound above 50% by held-out labelers, neither "
            f"unprompted nor few-shot prompted ({wins['base']}; {wins['base_prompted']})."
        )
    won = next(o for o in HOW if beats[o])
    lost = next(o for o in HOW if not beats[o])
    return (
        f"Only {HOW[won]}: held-out labelers prefer {small} to {large} {HOW[won]} ({wins[won]}, 95% lower bound "
        f"above 50%), but not when it is {HOW[lost]} ({wins[lost]}: the lower bound is not above 50%)."
    )


def _size_rows(study: dict[str, Any]) -> list[list[str]]:
    rows = []
    for s in study["sizes"]:
        loss = s.get("pretrain_eval_loss")
        secs = sum(v for v in (s.get("seconds") or {}).values() if v)
        rows.append(
            [s["name"], f"d_model {s['d_model']}, layers {s['n_layer']}, heads {s['n_head']}, d_ff {s['d_ff']}",
             f"{s['non_embedding_params']:,}", "–" if loss is None else f"{loss:.3f}", f"{secs:.0f}"]
        )  # fmt: skip
    return rows


def _win_rows(study: dict[str, Any], key: str) -> list[list[str]]:
    cell = {(p["method"], p["size"]): _ci(p, key) for p in study["points"]}
    return [[label] + [cell.get((m, s["name"]), "–") for s in study["sizes"]] for m, label in study["methods"].items()]


def sizes_section(doc, study: dict | None, out: Path) -> None:
    if not study or not study.get("points"):
        return
    sizes, shot = study["sizes"], study.get("few_shot") or {}
    tokens = sizes[-1].get("tokens_seen")
    doc.h("Model size: a small aligned model against a large base model (InstructGPT Figure 1)")
    doc.p(
        f"From `alignlab study sizes` ({study.get('run_dir')}, seed {study.get('seed')}): the whole recipe at "
        f"{len(sizes)} model sizes on the run's world and tokenizer, each pretrained on the same "
        f"{'–' if tokens is None else f'{tokens:,}'} tokens, with its own SFT, comparisons, reward model (from its SFT), "
        f"PPO and PPO-ptx. Every policy is judged against {study['baseline']} on {study['n_prompts']} held-out "
        f"prompts; the prompted base model answers after {shot.get('k', '–')} demonstrations from the SFT train "
        "split in the corpus's 'Question: / Answer:' form, cut at its next question. 95% bootstrap intervals "
        "over prompts."
    )
    doc.p(verdict_sentence(study["head_to_head"]))
    doc.table(["size", "shape", "non-embedding parameters", "pretraining held-out loss", "seconds (all steps)"],
              _size_rows(study))  # fmt: skip
    header = ["method"] + [f"{s['name']} ({s['non_embedding_params']:,})" for s in sizes]
    doc.p(f"Win rate against {study['baseline']}, held-out labelers:")
    doc.table(header, _win_rows(study, "win_rate_heldout_labelers"))
    doc.p("Training labelers:")
    doc.table(header, _win_rows(study, "win_rate_train_labelers"))
    h = study["head_to_head"]
    doc.p(f"Head to head: PPO-ptx {h['smallest']} against base {h['largest']} (PPO-ptx's win rate):")
    doc.table(
        ["base model", "held-out labelers", "training labelers"],
        [[HOW[o], _ci(h[o], "win_rate_heldout_labelers"), _ci(h[o], "win_rate_train_labelers")] for o in HOW],
    )
    doc.image(plots.sizes(study, out / "report_sizes.png"), "win rate against model size (InstructGPT Figure 1)")
    flan_section(doc, study.get("flan"), out)


def _pct(x: dict | None) -> str:
    if not x or x.get("value") is None:
        return "–"
    ci = f" [{100 * x['low']:.1f}, {100 * x['high']:.1f}]" if x.get("low") is not None else ""
    return f"{100 * x['value']:.1f}%{ci}"


def flan_sentence(flan: dict[str, Any]) -> str:
    """Where instruction tuning starts to help on unseen clusters by rank classification, and whether the
    difference's interval says so or only its point estimate."""
    score = "rank_accuracy"
    diffs = "; ".join(f"{p['size']} {_signed(p[score]['difference'])}" for p in flan.get("points", []))
    where = flan["crossover"][score]
    if flan["all_tuned_above_base"][score]:
        head = "Instruction tuning helps on unseen clusters at every size here: no crossover"
    elif where is None:
        head = "No crossover: instruction tuning does not help on unseen clusters at the largest size here"
    else:
        above = [p for p in flan["points"] if p["size"] == where][0][score]["difference"]
        sure = above.get("low") is not None and above["low"] > 0
        head = f"Crossover at {where} by the point estimate" + (
            ", its 95% interval above 0" if sure else ", but its 95% interval includes 0, so it is not established"
        )
    return f"{head} (tuned − base, rank classification: {diffs})." if diffs else f"{head}."


def _signed(x: dict | None) -> str:
    if not x or x.get("value") is None:
        return "–"
    ci = f" [{100 * x['low']:+.1f}, {100 * x['high']:+.1f}]" if x.get("low") is not None else ""
    return f"{100 * x['value']:+.1f} points{ci}"


def flan_section(doc, flan: dict | None, out: Path) -> None:
    if not flan:
        return
    doc.h("Instruction tuning across sizes (FLAN Figure 7)")
    doc.p(
        f"`instruct-tune` on each size's base model, seeds {flan['seeds']}: one model per held-out cluster "
        f"({', '.join(flan['heldout_clusters'])}), asked zero-shot, against the same base model asked in the "
        f"corpus's Q/A form. Rank classification covers {', '.join(flan['rank_classified_tasks']) or 'no task'}; "
        "95% t-intervals over (cluster, seed) cells."
    )
    doc.p(flan_sentence(flan))
    rows = [
        [p["size"], f"{p['non_embedding_params']:,}"]
        + [_pct(p[score][k]) for score in ("rank_accuracy", "accuracy") for k in ("base", "instruction", "difference")]
        for p in flan["points"]
    ]
    doc.table(
        ["size", "non-embedding parameters", "rank: base", "rank: tuned", "rank: tuned − base",
         "generation: base", "generation: tuned", "generation: tuned − base"],
        rows,
    )  # fmt: skip
    doc.image(plots.flan_sizes(flan, out / "report_flan_sizes.png"), "zero-shot accuracy on unseen clusters by size")
