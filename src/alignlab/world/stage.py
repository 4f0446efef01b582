"""The ``world`` stage: build the built-in world, write it, summarise it."""

from __future__ import annotations

import time
from typing import Any

from alignlab.world.build import build_world
from alignlab.world.config import WorldConfig
from alignlab.world.storage import write_world


def run(cfg: WorldConfig) -> dict[str, Any]:
    t0 = time.perf_counter()
    world = build_world(cfg)
    t_build = time.perf_counter() - t0
    out = write_world(world, cfg.output_dir)
    t_total = time.perf_counter() - t0
    s = world.stats
    summary = {
        "output_dir": str(out),
        "seconds_build": round(t_build, 2),
        "seconds_total": round(t_total, 2),
        "labeler_agreement": round(s["labeler_agreement"], 4),
        "labeler_agreement_heldout": round(s["labeler_agreement_heldout"], 4),
        "noise_scale": round(s["noise_scale"], 4),
        "n_entities": s["n_entities"],
        "n_facts": s["n_facts"],
        "n_clusters": s["n_clusters"],
        "corpus_chars": s["corpus_chars"],
        "corpus_docs": s["corpus_docs"],
        "rumour_fraction": round(s["corpus"]["rumour_fraction"], 4),
        "rude_fraction": round(s["corpus"]["rude_fraction"], 4),
        "split_sizes": s["split_sizes"],
        "gold_reward_test_demonstrations": round(s["gold_reward_test_demonstrations"], 4),
        "demonstrators": s["demonstrations"]["by_demonstrator"],
        "demonstration_gold": s["demonstrations"]["all"]["mean_gold"],
        "careful_win_rate_heldout": s["demonstrations"]["all"]["careful_win_rate_heldout"],
        "category_shares": s["categories"]["shares"],
        "constrained_share": {k: v["constrained"] for k, v in s["constraints_and_closed_domain"].items()},
        "closed_domain_share": {k: v["closed_domain"] for k, v in s["constraints_and_closed_domain"].items()},
    }
    sz = s["split_sizes"]
    print(f"world: {s['n_entities']} entities, {s['n_facts']} facts, {s['n_clusters']} task clusters -> {out}")
    print(
        f"  corpus: {sz['corpus_train']}+{sz['corpus_validation']} docs, {s['corpus_chars']:,} chars "
        f"(rumours {s['corpus']['rumour_fraction']:.1%} of fact mentions, rude {s['corpus']['rude_fraction']:.1%} of docs)"
    )
    print(
        f"  prompts: sft {sz['sft_train']}+{sz['sft_validation']}, rm {sz['rm_train']}+{sz['rm_validation']}, "
        f"ppo {sz['ppo_train']}, test {sz['test_test']}; comparisons {sz['comparisons_train']} "
        f"({sz['pairs_train']} pairs), nlp items {sz['nlp_tasks_test']}"
    )
    print(
        f"  labeler agreement: training {s['labeler_agreement']:.1%}, held-out {s['labeler_agreement_heldout']:.1%} "
        f"(InstructGPT: 72.6% / 77.3%)"
    )
    demo = s["demonstrations"]
    print(
        "  demonstrations: "
        + ", ".join(f"{n} {d['share']:.0%} (gold {d['mean_gold']:.2f})" for n, d in demo["by_demonstrator"].items())
        + f"; held-out labelers prefer the careful answer {demo['all']['careful_win_rate_heldout']:.1%} of the time"
    )
    rm = s["constraints_and_closed_domain"]["rm_train"]
    print(
        f"  RM prompts: {rm['constrained']:.0%} with an explicit constraint, {rm['closed_domain']:.0%} closed-domain "
        f"(InstructGPT Table 7: 26.3%, 19.4%); held-out constraint kinds: {', '.join(cfg.heldout_constraints)}"
    )
    if s.get("exhausted_clusters"):
        print(
            f"  warning: clusters ran out of distinct prompts and were filled by others: "
            f"{', '.join(s['exhausted_clusters'])} (raise n_entities or lower scale)"
        )
    print(f"  built in {t_build:.1f}s, written in {t_total - t_build:.1f}s")
    return summary
