"""Build a whole world from a config: facts, corpus, prompts, comparisons, held-out tasks.

Every part draws from its own random stream, ``random.Random(f"{seed}-{part}")``, so
parts are independent (changing the corpus size does not change the facts or the
prompts) and the same seed always gives the same world, in any process (string seeds
are hashed with SHA-512, not Python's per-process hash).
"""

from __future__ import annotations

import dataclasses
import random
from collections import Counter
from typing import Any

from alignlab.world import agreement, corpus, data_stats, demonstrators, facts, nlp_tasks, splits
from alignlab.world.comparisons import make_comparisons, to_pairs
from alignlab.world.config import WorldConfig, validate
from alignlab.world.personas import default_personas, gold_reward
from alignlab.world.tasks import CLUSTERS, TASKS, Pools
from alignlab.world.world import World


def _rng(seed: int, part: str) -> random.Random:
    return random.Random(f"{seed}-{part}")


def make_facts(cfg: WorldConfig) -> World:
    """The world without data: entities, rumours, personas (noise not yet calibrated)."""
    entities, bystanders = facts.make_entities(
        _rng(cfg.seed, "entities"), cfg.n_entities, cfg.n_ghosts, cfg.unspecified_rate
    )
    rumours = facts.make_rumours(
        _rng(cfg.seed, "rumours"), entities, cfg.rumoured_fact_frac, lambda k, a: facts.values_for(entities, k, a)
    )
    return World(
        seed=cfg.seed,
        config=dataclasses.asdict(cfg),
        entities=entities,
        rumours=rumours,
        bystanders=bystanders,
        personas=default_personas(),
    )


def _calibrate(world: World, cfg: WorldConfig, prompts: list[dict]) -> dict[str, Any]:
    records = prompts[: cfg.agreement_prompts]
    diffs = agreement.pair_differences(agreement.candidate_components(world, records, cfg.k_responses, cfg.seed))
    if cfg.calibrate_noise:
        world.noise_scale = agreement.calibrate_noise(world.personas, diffs, cfg.target_agreement)
    return {
        "labeler_agreement": agreement.expected_agreement(diffs, world.training_personas()),
        "labeler_agreement_heldout": agreement.expected_agreement(diffs, world.heldout_personas()),
        "agreement_pairs": int(len(diffs)),
        "agreement_prompts": len(records),
        "noise_scale": world.noise_scale,
    }


def build_world(cfg: WorldConfig) -> World:
    validate(cfg)
    world = make_facts(cfg)

    docs, corpus_stats = corpus.make_corpus(
        world, _rng(cfg.seed, "corpus"), cfg.corpus_chars, cfg.rumour_rate, cfg.madeup_rate, cfg.rude_rate
    )
    n_val = max(10, round(len(docs) * cfg.corpus_val_frac)) if cfg.corpus_val_frac > 0 else 0
    corpus_train, corpus_val = docs[: len(docs) - n_val], docs[len(docs) - n_val :]
    # Short template documents (a bio, a list) can come out word for word twice; one in each split would
    # put training text into the held-out loss the alignment tax is measured with.
    seen = set(corpus_train)
    corpus_val = [d for d in corpus_val if d not in seen]

    sizes = {**splits.split_sizes(cfg.scale, cfg.val_frac, cfg.test_min), splits.PROBE: cfg.heldout_probe_prompts}
    recs, exhausted = splits.make_splits(Pools(world), sizes, _rng(cfg.seed, "prompts"), cfg.closed_domain_rate)
    recs = splits.add_constraints(recs, cfg.constraint_rate, cfg.heldout_constraints, _rng(cfg.seed, "constraints"))
    demo_rng = _rng(cfg.seed, "demonstrators")  # its own stream: the mixture changes nothing but the SFT answers
    for name in ("sft_train", "sft_validation"):
        recs[name] = demonstrators.demonstrate(world, recs[name], cfg.demonstrators, demo_rng)

    agree = _calibrate(world, cfg, recs["rm_train"] + recs["rm_validation"] + recs["sft_train"])

    comp_rng = _rng(cfg.seed, "comparisons")
    comps = {s: make_comparisons(world, recs[f"rm_{s}"], comp_rng, cfg.k_responses) for s in ("train", "validation")}
    nlp = nlp_tasks.make_nlp_tasks(world, _rng(cfg.seed, "nlp"), cfg.n_nlp_items)

    world.data = {
        "corpus": {"train": [{"text": d} for d in corpus_train], "validation": [{"text": d} for d in corpus_val]},
        "sft": {"train": recs["sft_train"], "validation": recs["sft_validation"]},
        "rm": {"train": splits.prompt_only(recs["rm_train"]), "validation": splits.prompt_only(recs["rm_validation"])},
        "ppo": {"train": splits.prompt_only(recs["ppo_train"])},
        "test": {"test": recs["test"], **({"heldout_constraints": recs[splits.PROBE]} if recs[splits.PROBE] else {})},
        "comparisons": comps,
        "pairs": {s: to_pairs(c) for s, c in comps.items()},
        "nlp_tasks": {"test": nlp},
    }
    world.stats = _stats(world, cfg, corpus_stats, agree)
    world.stats["demonstrations"] = data_stats.demonstrators(world, recs["sft_train"])
    world.stats["constraints_and_closed_domain"] = data_stats.constraints_and_closed(recs)
    world.stats["exhausted_clusters"] = exhausted  # non-empty: raise n_entities or lower scale
    return world


def _stats(world: World, cfg: WorldConfig, corpus_stats: dict, agree: dict) -> dict[str, Any]:
    data = world.data
    split_sizes = {f"{name}_{split}": len(rows) for name, d in data.items() for split, rows in d.items()}
    templates = {c: sum(len(t.templates) for t in TASKS if t.cluster == c) for c in CLUSTERS}
    all_prompts = [r for name in ("sft", "rm", "ppo", "test") for rows in data[name].values() for r in rows]
    test = data["test"]["test"]
    return {
        **agree,
        "labeler_agreement_target": cfg.target_agreement if cfg.calibrate_noise else None,
        "n_clusters": len(CLUSTERS),
        "clusters": list(CLUSTERS),
        "templates_per_cluster": templates,
        "tasks": [t.name for t in TASKS],
        "prompts_per_cluster": dict(sorted(Counter(r["cluster"] for r in all_prompts).items())),
        "categories": data_stats.categories(all_prompts),
        "split_sizes": split_sizes,
        "n_entities": len(world.real_entities()),
        "n_ghosts": len(world.ghosts()),
        "n_facts": len(facts.specified_facts(world)),
        "n_unspecified": len(facts.unspecified_facts(world)),
        "n_rumoured_facts": sum(len(v) for v in world.rumours.values()),
        "corpus_chars": corpus_stats["chars"],
        "corpus_docs": corpus_stats["docs"],
        "corpus": corpus_stats,
        "personas": [
            {"name": p["name"], "heldout": p["heldout"], "tau": round(p["tau"], 5), "weights": p["weights"]}
            for p in world.personas
        ],
        "gold_reward_test_demonstrations": sum(gold_reward(world, r, r["completion"]) for r in test)
        / max(1, len(test)),
    }
