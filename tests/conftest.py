"""Shared fixtures: a tiny text corpus written to disk (so foundation tests do not depend on the world), and the
whole smoke pipeline run that the report and study tests share."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest


def write_corpus_jsonl(path, n_docs=400, seed=0):
    rng = random.Random(seed)
    names = ["Bruk", "Zel", "Mora", "Tib", "Quon", "Fen"]
    colours = ["red", "blue", "green", "grey"]
    with open(path, "w") as f:
        for i in range(n_docs):
            n = rng.choice(names)
            text = f"{n} is {colours[names.index(n) % 4]}. {n} likes {rng.choice(colours)} hats and lives by river {i % 7}."
            f.write(json.dumps({"text": text}) + "\n")
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """A saved DatasetDict (train/validation, column `text`) and a trained tokenizer for it."""
    import datasets

    from alignlab.models.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("corpus")
    write_corpus_jsonl(root / "train.jsonl", 400, seed=0)
    write_corpus_jsonl(root / "val.jsonl", 60, seed=1)
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_json(str(root / "train.jsonl")),
            "validation": datasets.Dataset.from_json(str(root / "val.jsonl")),
        }
    )
    dd.save_to_disk(str(root / "corpus"))
    tok = train_bpe(list(dd["train"]["text"]), vocab_size=320)
    tok.save_pretrained(str(root / "tok"))
    return {
        "root": root,
        "corpus": str(root / "corpus"),
        "tokenizer": str(root / "tok"),
        "jsonl": str(root / "train.jsonl"),
    }


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    """accelerate keeps one process-wide state: a test that made a CUDA Accelerator would make the next
    test's Accelerator(cpu=True) fail ("AcceleratorState has already been initialized"). Reset it after each test."""
    yield
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


@pytest.fixture(scope="session")
def smoke_pipeline_run(tmp_path_factory) -> Path:
    """The whole smoke pipeline, diagnostics included (ppo_gold), into a temporary folder (about 25 s). Shared:
    a test that adds steps to it works on a copy. Defined here, not in a fixtures module a test imports: an
    imported session fixture is a separate definition in each importing module, and would run once per module.
    Under pytest-xdist (``make test`` runs 2 workers) the workers share one run: the first to need it builds it
    under a file lock, and the others wait and reuse it."""
    from filelock import FileLock

    from alignlab.config import resolve
    from alignlab.stages.pipeline import PRESETS, PipelineConfig
    from alignlab.stages.registry import run_stage

    # every worker's basetemp is a child of this session's one folder; without xdist, basetemp is that folder
    base = tmp_path_factory.getbasetemp()
    base = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base
    root = base / "smoke_pipeline" / "run"
    with FileLock(str(base / "smoke_pipeline.lock")):
        if not (root / "summary.json").is_file():  # the pipeline writes it last
            run_stage(
                "pipeline",
                resolve(PipelineConfig, PRESETS, "smoke", None, {"output_dir": str(root), "diagnostics": "true"}),
            )
    return root
