"""The built-in world through to a base model, as `make demo` runs it (smoke preset)."""

from __future__ import annotations

import json
import os
import shutil

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.config import resolve
from alignlab.stages.pipeline import PRESETS, PipelineConfig, newer_upstream, planned_stages, upstream_folders
from alignlab.stages.registry import run_stage


def test_smoke_pipeline_world_tokenizer_pretrain(smoke_pipeline_run, tmp_path, capsys):
    # the shared smoke run's world, tokenizer and base model (the same settings as a run of these three steps)
    run = tmp_path / "run"
    for step in ("world", "tokenizer", "pretrain"):
        shutil.copytree(smoke_pipeline_run / step, run / step)
    cfg = resolve(
        PipelineConfig, PRESETS, "smoke", None, {"output_dir": str(run), "stages": "[world, tokenizer, pretrain]"}
    )
    assert {"world", "tokenizer", "pretrain"} <= set(json.loads((smoke_pipeline_run / "timings.json").read_text()))
    stats = json.loads((run / "world" / "stats.json").read_text())
    assert 0.65 <= stats["labeler_agreement"] <= 0.80
    pre = json.loads((run / "pretrain" / "summary.json").read_text())
    assert pre["final_eval_loss"] < pre["unigram_entropy"]

    # The base model is a plain transformers model that writes world-like text.
    model = AutoModelForCausalLM.from_pretrained(str(run / "pretrain"))
    tok = AutoTokenizer.from_pretrained(str(run / "pretrain"))
    ids = torch.tensor([[tok.bos_token_id]])
    torch.manual_seed(0)
    out = model.generate(ids, max_new_tokens=30, min_new_tokens=20, do_sample=True, pad_token_id=tok.pad_token_id)
    text = tok.decode(out[0, 1:], skip_special_tokens=True)
    import datasets

    corpus = datasets.load_from_disk(str(run / "world" / "corpus"))["train"]
    vocab = {w.strip(".,!?:;'\"").lower() for doc in corpus["text"] for w in doc.split()}
    words = [w.strip(".,!?:;'\"").lower() for w in text.split()]
    words = [w for w in words if w]
    assert len(words) >= 3
    # Mostly the world's own words (names, facts, prose), not byte soup.
    assert sum(w in vocab for w in words) / len(words) >= 0.5, text

    # A second run skips every finished stage.
    again = run_stage("pipeline", cfg)
    assert all(v == 0.0 for v in again["stage_seconds"].values())

    # File times reset by a copy (cp -r writes them in copy order) do not matter: finished_at does.
    tok_summary = run / "tokenizer" / "summary.json"
    world_at = json.loads((run / "world" / "summary.json").read_text())["finished_at"]
    os.utime(run / "world" / "summary.json", (world_at + 600, world_at + 600))
    short = resolve(PipelineConfig, PRESETS, "smoke", None, {"output_dir": str(run), "stages": "[world, tokenizer]"})
    assert all(v == 0.0 for v in run_stage("pipeline", short)["stage_seconds"].values())

    # As with make: a finished step whose input step finished after it is rerun; the others are not.
    tok = json.loads(tok_summary.read_text())
    tok_summary.write_text(json.dumps({**tok, "finished_at": world_at - 60}))
    capsys.readouterr()
    again = run_stage("pipeline", short)
    assert again["stage_seconds"]["world"] == 0.0 and again["stage_seconds"]["tokenizer"] > 0.0
    assert "tokenizer: world finished after it; rerunning it" in capsys.readouterr().out
    # ... and pretrain, which read the old tokenizer, is now behind it
    assert newer_upstream(run / "pretrain", upstream_folders("pretrain", run, run)) == ["tokenizer"]

    # A finished step whose settings changed is kept, and the warning names the key.
    changed = resolve(
        PipelineConfig,
        PRESETS,
        "smoke",
        None,
        {"output_dir": str(run), "stages": "[world, tokenizer]", "stage_overrides": "{tokenizer: {min_frequency: 3}}"},
    )
    again = run_stage("pipeline", changed)
    out = capsys.readouterr().out
    assert again["stage_seconds"]["tokenizer"] == 0.0
    assert "tokenizer: finished with a different config (min_frequency (2 -> 3))" in out and "--redo" in out
    # a damaged config.yaml is named in the warning; the finished step is still kept
    (run / "tokenizer" / "config.yaml").write_text("vocab_size: [unclosed\n")
    again = run_stage("pipeline", short)
    out = capsys.readouterr().out
    assert (
        again["stage_seconds"]["tokenizer"] == 0.0 and f"{run / 'tokenizer' / 'config.yaml'} is not valid YAML" in out
    )


def test_upstream_folders_follow_the_wiring(tmp_path):
    shared, seed1 = tmp_path, tmp_path / "seeds" / "1"
    assert upstream_folders("ppo", seed1, shared) == sorted([seed1 / "reward", seed1 / "sft", shared / "world"])
    assert upstream_folders("reward", shared, shared) == sorted([shared / "compare", shared / "sft", shared / "world"])
    assert upstream_folders("world", shared, shared) == []
    evaluate = upstream_folders("evaluate", seed1, shared)
    assert shared / "pretrain" in evaluate and seed1 / "dpo" in evaluate and seed1 / "ppo_ptx" in evaluate
    assert seed1 / "reward" not in evaluate  # evaluation judges with the world's labelers, not the RM


def test_the_perfect_rm_diagnostic_runs_only_when_asked():
    default = PipelineConfig()
    assert "ppo_gold" not in planned_stages(default)
    with_gold = planned_stages(PipelineConfig(diagnostics=True))
    assert with_gold.index("ppo_hack") < with_gold.index("ppo_gold") < with_gold.index("dpo")
    assert planned_stages(PipelineConfig(stages=["ppo", "evaluate"], diagnostics=True)) == [
        "ppo",
        "ppo_gold",
        "evaluate",
    ]
    assert planned_stages(PipelineConfig(stages=["evaluate", "ppo"])) == ["evaluate", "ppo"]  # the user's order
