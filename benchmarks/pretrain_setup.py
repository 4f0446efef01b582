"""The fixed cost a pretraining run pays before its first step and after its last, on a scaling corpus.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/pretrain_setup.py \
        --corpus runs/default/scaling_demo/corpus --blocks runs/default/scaling_demo/pack_cache

A scaling sweep trains dozens of small models on one corpus of ~0.5M documents, so what each run
does once (reading the documents to check that none of the held-out ones is trained on, counting
unigrams for the summary) is paid dozens of times. Two ways of each, timed side by side in this
process, best of ``--repeats``, and checked to give the same result:

1. the documents of the training split as a Python list: iterating ``ds[column]`` (datasets 4+
   hands back a lazy column that formats one row at a time; what the stage did) vs
   ``data.load.column_values`` (one bulk slice; what it does now);
2. the unigram entropy of the packed blocks: a ``collections.Counter`` over the token list (before)
   vs ``torch.bincount`` (``data.packing.unigram_entropy``, now).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from collections import Counter
from pathlib import Path

import torch


def best_of(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return min(times), out


def counter_entropy(blocks: torch.Tensor) -> float:
    counts = Counter(blocks.flatten().tolist())
    total = sum(counts.values())
    return -sum(c / total * math.log(c / total) for c in counts.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", default="runs/default/scaling_demo/corpus", help="saved DatasetDict with a train split")
    ap.add_argument("--blocks", default="runs/default/scaling_demo/pack_cache", help="a pack cache folder (*.pt)")
    ap.add_argument("--column", default="text")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="benchmarks/results/pretrain_setup.json")
    args = ap.parse_args()

    import datasets

    from alignlab.data.load import column_values
    from alignlab.data.packing import unigram_entropy

    load_start = os.getloadavg()
    if not (Path(args.corpus) / "dataset_dict.json").is_file():
        raise SystemExit(f"{args.corpus}: no saved DatasetDict; run the scaling demo or sweep first")
    train = datasets.load_from_disk(args.corpus)["train"]
    rowwise_s, rowwise = best_of(lambda: list(train[args.column]), args.repeats)
    bulk_s, bulk = best_of(lambda: column_values(train, args.column), args.repeats)
    assert rowwise == bulk, "the bulk read differs from the row-by-row one"

    cached = sorted(Path(args.blocks).glob("*.pt"), key=lambda f: f.stat().st_size)[::-1]  # the training split's
    if not cached:
        raise SystemExit(f"{args.blocks}: no pack cache (*.pt); run the scaling demo or sweep first")
    blocks = torch.load(cached[0], weights_only=True).long()
    counter_s, h_counter = best_of(lambda: counter_entropy(blocks), args.repeats)
    bincount_s, h_bincount = best_of(lambda: unigram_entropy(blocks), args.repeats)
    assert abs(h_counter - h_bincount) < 1e-9, (h_counter, h_bincount)

    result = {
        "documents": len(train),
        "tokens": blocks.numel(),
        "column_read": {"rowwise_s": rowwise_s, "bulk_s": bulk_s, "speedup": rowwise_s / bulk_s},
        "unigram_entropy": {"counter_s": counter_s, "bincount_s": bincount_s, "speedup": counter_s / bincount_s},
        # a run reads the training split's documents once (the held-out split is small) and counts once
        "saved_per_run_s": (rowwise_s - bulk_s) + (counter_s - bincount_s),
        "torch_threads": torch.get_num_threads(),
        "loadavg": {"start": load_start, "end": os.getloadavg()},
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
