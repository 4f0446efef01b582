"""Tokenizer and pretraining: standard HF artefacts, learning, and exact resume after a kill."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.config import resolve
from alignlab.models.load import ModelLoadError, load_causal_lm
from alignlab.outputs import read_metrics
from alignlab.stages.pretrain import PRESETS, PretrainConfig
from alignlab.stages.registry import run_stage


def test_tokenizer_loads_with_autotokenizer_and_has_chat_template(tiny_corpus):
    tok = AutoTokenizer.from_pretrained(tiny_corpus["tokenizer"])
    assert tok.pad_token_id != tok.eos_token_id and tok.bos_token_id is not None
    text = "Bruk is red."
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text  # byte-level: lossless
    chat = tok.apply_chat_template(
        [{"role": "user", "content": "What colour is Bruk?"}], tokenize=False, add_generation_prompt=True
    )
    assert chat == "<|bos|><|user|>\nWhat colour is Bruk?<|end|>\n<|assistant|>\n"
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], tokenize=True
    )
    ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
    assert tok.eos_token_id in ids and tok.convert_tokens_to_ids("<|assistant|>") in ids


def _cfg(tiny_corpus, out, **kw):
    over = {
        "data": tiny_corpus["corpus"],
        "source.tokenizer": tiny_corpus["tokenizer"],
        "output_dir": str(out),
        "run.tensorboard": "false",
        **kw,
    }
    return resolve(PretrainConfig, PRESETS, "smoke", None, over)


def test_pretrain_learns_and_saves_a_plain_transformers_model(tiny_corpus, tmp_path):
    out = tmp_path / "pre"
    summary = run_stage("pretrain", _cfg(tiny_corpus, out, max_steps="150", eval_interval="50"))
    # The corpus is highly predictable: a model that learned anything beats unigram statistics by far.
    assert summary["final_eval_loss"] < 0.6 * summary["unigram_entropy"]
    assert json.loads((out / "summary.json").read_text())["final_eval_loss"] == summary["final_eval_loss"]
    assert (out / "config.yaml").exists() and (out / "model.safetensors").exists()
    losses = [m["loss"] for m in read_metrics(out) if "loss" in m]
    assert losses[-1] < losses[0]
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    # Each name has one fixed colour in the corpus (see conftest); the model must have learned them.
    names, colours = ["Bruk", "Zel", "Mora", "Tib", "Quon", "Fen"], ["red", "blue", "green", "grey"]
    right = 0
    for i, name in enumerate(names):
        x = tok(f"{name} is", return_tensors="pt", add_special_tokens=False)
        ids = torch.cat([torch.tensor([[tok.bos_token_id]]), x["input_ids"]], 1)
        y = model.generate(ids, max_new_tokens=4, do_sample=False, pad_token_id=tok.pad_token_id)
        right += tok.decode(y[0, ids.shape[1] :], skip_special_tokens=True).strip().startswith(colours[i % 4])
    assert right >= 5, f"only {right}/6 facts learned"


def _run_cli(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "alignlab.cli", "pretrain", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def test_model_loading_refuses_pickles_and_missing_paths(tmp_path):
    with pytest.raises(ModelLoadError, match="model path not found"):
        load_causal_lm(str(tmp_path / "nope"))
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").write_text("{}")
    (tmp_path / "m" / "pytorch_model.bin").write_bytes(b"")
    with pytest.raises(ModelLoadError, match=r"only pickle weights \(pytorch_model\.bin\); .*from safetensors"):
        load_causal_lm(str(tmp_path / "m"))
