"""Write a built world to a folder of Hugging Face datasets, and load it back.

Layout (each data folder is a ``DatasetDict.save_to_disk`` folder)::

    world.json    facts, rumours, personas (with calibrated noise) -> load_world
    stats.json    counts, labeler agreement, corpus flaw rates
    corpus/       train, validation: text
    sft/          train, validation: prompt, completion, messages, cluster, task, template, meta
    rm/           train, validation: prompt, cluster, task, template, meta
    ppo/          train: prompt, cluster, task, template, meta
    test/         test: like sft (completion = reference answer)
    comparisons/  train, validation: prompt, responses (best -> worst), labeler, meta, cluster, task, template
    pairs/        train, validation: prompt, chosen, rejected
    nlp_tasks/    test: context, choices, label, task
"""

from __future__ import annotations

import json
from pathlib import Path

from alignlab.errors import MissingInputError
from alignlab.world.world import World

DATA_FOLDERS = ["corpus", "sft", "rm", "ppo", "test", "comparisons", "pairs", "nlp_tasks"]


def write_world(world: World, out_dir: str | Path) -> Path:
    import datasets

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "world.json").write_text(json.dumps(world.to_json(), indent=1))
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        for name in DATA_FOLDERS:
            if name not in world.data:
                continue
            dd = datasets.DatasetDict(
                {split: datasets.Dataset.from_list(rows) for split, rows in world.data[name].items()}
            )
            dd.save_to_disk(str(out / name))
    finally:
        if bars:
            datasets.enable_progress_bars()
    (out / "stats.json").write_text(json.dumps(world.stats, indent=2, default=str))
    return out


def load_world(path: str | Path) -> World:
    """The World (facts, rumours, personas, stats) from ``world.json``; no regeneration.

    The datasets are not loaded; use :func:`load_data` for them.
    """
    path = Path(path)
    if not (path / "world.json").is_file():
        raise MissingInputError(f"{path} has no world.json; build it with `alignlab world --output_dir {path}`")
    world = World.from_json(json.loads((path / "world.json").read_text()))
    if (path / "stats.json").is_file():
        world.stats = json.loads((path / "stats.json").read_text())
    return world


def load_data(path: str | Path, name: str):
    """One of the world's datasets (``"sft"``, ``"comparisons"``, ...) as a DatasetDict."""
    import datasets

    if name not in DATA_FOLDERS:
        raise ValueError(f"unknown world dataset {name!r}; choose from {DATA_FOLDERS}")
    return datasets.load_from_disk(str(Path(path) / name))
