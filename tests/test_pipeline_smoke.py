"""The built-in world through to a base model, as `make demo` runs it (smoke preset)."""

from __future__ import annotations

import json

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.config import resolve
from alignlab.stages.pipeline import PRESETS, PipelineConfig
from alignlab.stages.registry import run_stage


def test_smoke_pipeline_world_tokenizer_pretrain(tmp_path):
    run = tmp_path / "run"
    cfg = resolve(PipelineConfig, PRESETS, "smoke", None,
                  {"output_dir": str(run), "stages": "[world, tokenizer, pretrain]"})
    summary = run_stage("pipeline", cfg)
    stats = json.loads((run / "world" / "stats.json").read_text())
    assert 0.65 <= stats["labeler_agreement"] <= 0.80
    pre = json.loads((run / "pretrain" / "summary.json").read_text())
    assert pre["final_eval_loss"] < pre["unigram_entropy"]
    assert set(summary["stage_seconds"]) == {"world", "tokenizer", "pretrain"}

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
