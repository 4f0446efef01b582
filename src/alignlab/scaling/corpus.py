"""The scaling demo's corpus: the world's prose, as much of it as the largest run reads, long-tailed.

Two differences from the world's own pretraining corpus (``world/corpus.py``), each for a reason:

* **size**: a sweep along one allocation (tokens ∝ parameters) needs as many tokens as its
  largest run trains on, read once. Repeating the world's 0.6M tokens for tens of epochs would
  bend the loss curve away from the law (Muennighoff et al. 2023: repeated tokens lose value
  after ~4 epochs), so the same generator simply writes more documents.
* **a long tail**: entities are talked about with Zipf frequencies (weight 1/rank^s; s = 1 is
  Zipf's law) instead of equally often, as names are in web text. Facts about the tail are
  seen a handful of times by a small run and dozens of times by a large one, so recalling them
  keeps improving with compute (Kandpal et al. 2023: LMs' accuracy on a fact follows how often
  its entity appears in pretraining), where recall of common facts saturates early.

The rank order of entities is a seeded shuffle, written to ``entity_ranks.json`` beside the data.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import datasets
import yaml

from alignlab.outputs import atomic_write_json
from alignlab.world.corpus import make_corpus
from alignlab.world.storage import load_world

FORMAT = "alignlab.scaling.corpus/1"


def entity_ranks(world, seed: int) -> list[str]:
    """The world's real entities from most to least talked about (a seeded shuffle)."""
    names = [e["name"] for e in world.real_entities()]
    random.Random(f"entity_ranks/{seed}").shuffle(names)
    return names


def _world_rates(world_dir: Path) -> dict[str, float]:
    """The world's corpus flaw rates (rumours, made-up facts, rudeness), from its config.yaml."""
    path = world_dir / "config.yaml"
    saved = (yaml.safe_load(path.read_text()) or {}) if path.is_file() else {}
    defaults = {"rumour_rate": 0.1, "madeup_rate": 0.3, "rude_rate": 0.05}
    return {k: float(saved.get(k, v)) for k, v in defaults.items()}


def write_corpus(
    world_dir: str | Path, out: str | Path, chars: int, zipf: float, val_docs: int = 2000, seed: int = 0
) -> dict[str, Any]:
    """Write ``out`` (a datasets folder: train, validation) unless it already holds this very corpus."""
    out = Path(out)
    meta = {"format": FORMAT, "world": str(Path(world_dir).resolve()), "chars": int(chars), "zipf": zipf}
    meta.update(val_docs=val_docs, seed=seed)
    done = out / "corpus.json"
    if done.is_file():
        old = json.loads(done.read_text())
        if {k: old.get(k) for k in meta} == meta:
            return old
        raise ValueError(
            f"{out} holds another corpus ({old.get('chars')} chars, zipf {old.get('zipf')}); use a new folder"
        )
    world = load_world(world_dir)
    ranks = entity_ranks(world, seed)
    weights = {name: 1.0 / (r + 1) ** zipf for r, name in enumerate(ranks)}
    rng = random.Random(f"scaling_corpus/{seed}")
    docs, stats = make_corpus(world, rng, int(chars), **_world_rates(Path(world_dir)), entity_weights=weights)
    n_val = max(20, min(val_docs, len(docs) // 50))  # at most 2% of the documents
    val = docs[-n_val:]
    seen = set(docs[:-n_val])
    ds = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_dict({"text": docs[:-n_val]}),
            # a document that also occurs in training would make the held-out loss a memory test
            "validation": datasets.Dataset.from_dict({"text": [d for d in val if d not in seen]}),
        }
    )
    ds.save_to_disk(str(out))
    atomic_write_json(out / "entity_ranks.json", {"zipf": zipf, "most_to_least_mentioned": ranks})
    doc = {**meta, "stats": stats, "docs": {k: len(v) for k, v in ds.items()}}
    atomic_write_json(done, doc)  # last: a folder without it was interrupted and is rewritten
    return doc


def tail_entities(corpus_dir: str | Path, fraction: float = 0.5) -> list[str]:
    """The least-mentioned ``fraction`` of entities of a corpus written by ``write_corpus``."""
    ranks = json.loads((Path(corpus_dir) / "entity_ranks.json").read_text())["most_to_least_mentioned"]
    return ranks[int(round(len(ranks) * (1 - fraction))) :]
