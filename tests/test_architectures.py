"""Any causal LM, not only the tiny Llama: SFT -> reward model -> PPO end to end on a Qwen2-style model built
from a transformers config (grouped-query attention, biased q/k/v projections, tied embeddings)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from alignlab.config import apply
from alignlab.stages.registry import STAGES, run_stage
from fixtures_rlhf import rlhf_inputs  # noqa: F401

QUIET = {"tensorboard": False, "device": "cpu", "log_interval": 1, "threads": 1}


def _run(name: str, preset: str | None, settings: dict) -> dict:
    cls, presets, _ = STAGES[name].load()
    cfg = apply(cls(), presets[preset], "preset") if preset else cls()
    return run_stage(name, apply(cfg, settings, "test"))


def _sft_file(inp, root: Path) -> str:
    rows = [json.loads(line) for line in open(inp["ranked"])]
    path = root / "sft.jsonl"
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "completion": r["responses"][0]}) + "\n" for r in rows))
    return str(path)


def test_qwen2_runs_sft_reward_and_ppo(rlhf_inputs, tmp_path):  # noqa: F811
    inp = rlhf_inputs
    policy = AutoModelForCausalLM.from_pretrained(inp["qwen2_policy"])
    attn = policy.model.layers[0].self_attn
    assert policy.config.num_key_value_heads < policy.config.num_attention_heads and attn.q_proj.bias is not None

    sft = _run(
        "sft",
        "smoke",
        {
            "model": inp["qwen2_policy"],
            "data": _sft_file(inp, tmp_path),
            "judge": "loss",
            "eval_base": False,
            "epochs": 2,
            "batch_size": 8,
            "run": QUIET,
            "output_dir": str(tmp_path / "sft"),
        },
    )
    assert math.isfinite(sft["chosen_val_loss"])
    rm = _run(
        "reward",
        "smoke",
        {
            "model": str(tmp_path / "sft"),
            "data": inp["ranked"],
            "world_dir": "",
            "epochs": 1,
            "batch_size": 8,
            "run": QUIET,
            "output_dir": str(tmp_path / "reward"),
        },
    )
    assert 0.0 <= rm["val_accuracy_train_labelers"] <= 1.0
    ppo = _run(
        "ppo",
        None,
        {
            "policy": str(tmp_path / "sft"),
            "reward_model": str(tmp_path / "reward"),
            "data": inp["prompts"],
            "world_dir": "",
            "eval": {"prompts": 4},
            "iterations": 2,
            "batch_size": 8,
            "minibatch_size": 4,
            "ppo_epochs": 1,
            "rollout": {"max_new_tokens": 8, "gen_batch_size": 8},
            "run": QUIET,
            "output_dir": str(tmp_path / "ppo"),
        },
    )
    assert math.isfinite(ppo["final_kl"])
    # every output loads with plain transformers, as the same architecture
    tuned = AutoModelForCausalLM.from_pretrained(tmp_path / "ppo")
    assert type(tuned).__name__ == "Qwen2ForCausalLM"
    assert not torch.equal(tuned.model.layers[0].self_attn.q_proj.bias, attn.q_proj.bias)  # the biases trained too
    assert type(AutoModelForSequenceClassification.from_pretrained(tmp_path / "reward")).__name__ == (
        "Qwen2ForSequenceClassification"
    )
