"""alignlab study demonstrators: one setting per demonstrator mixture, on the run's own base model."""

from __future__ import annotations

import json
import shutil
import time

import datasets
import pytest

from alignlab.config import ConfigError, resolve
from alignlab.stages.registry import STAGES, run_stage
from alignlab.studies.demonstrators import DemonstratorStudyConfig


@pytest.fixture(scope="module")
def smoke_run(smoke_pipeline_run, tmp_path_factory):
    """The shared smoke run's world, tokenizer, base model and settings: what the study builds on."""
    run = tmp_path_factory.mktemp("study") / "run"
    for step in ("world", "tokenizer", "pretrain"):
        shutil.copytree(smoke_pipeline_run / step, run / step)
    shutil.copy(smoke_pipeline_run / "config.yaml", run / "config.yaml")
    return run


def test_unknown_mixture_is_refused_by_name():
    with pytest.raises(ConfigError, match="unknown mixture"):
        DemonstratorStudyConfig(settings=["careful", "sloppy"])


def test_study_runs_each_mixture_on_the_runs_base_model(smoke_run):
    cls, presets, _ = STAGES["study demonstrators"].load()
    cfg = resolve(cls, presets, "smoke", None, {"run_dir": str(smoke_run), "settings": "[careful, poor]"})
    summary = run_stage("study demonstrators", cfg)
    out = smoke_run / "study_demonstrators"
    points = {p["setting"]: p for p in summary["points"]}
    assert set(points) == {"careful", "poor"}
    assert points["careful"]["demo_gold"] == pytest.approx(1.0) and points["poor"]["demo_gold"] < 0.95
    for p in points.values():
        assert 0.0 <= p["win"]["low"] <= p["win"]["value"] <= p["win"]["high"] <= 1.0
        assert p["sft_gold"]["value"] is not None and p["ptx_gold"]["value"] is not None
    assert (out / "demonstration_quality.png").is_file() and (out / "summary.json").is_file()
    # the base model is the run's own (a link), and only the SFT answers differ from the run's world
    assert (out / "careful" / "pretrain").is_symlink()
    assert (out / "careful" / "pretrain").resolve() == (smoke_run / "pretrain").resolve()
    for name in ("test", "rm", "ppo"):
        mine = datasets.load_from_disk(str(out / "careful" / "world" / name))
        theirs = datasets.load_from_disk(str(smoke_run / "world" / name))
        assert all(mine[s]["prompt"] == theirs[s]["prompt"] for s in theirs)
    sft = datasets.load_from_disk(str(out / "careful" / "world" / "sft"))["train"]
    assert all(json.loads(m)["demonstrator"] == "careful" for m in sft["meta"])
    # finished settings are not rerun
    t0 = time.time()
    again = run_stage("study demonstrators", cfg)
    assert time.time() - t0 < 30 and [p["win"] for p in again["points"]] == [p["win"] for p in summary["points"]]
