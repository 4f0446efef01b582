"""Session fixtures for the InstructGPT-step tests: a smoke world, its tokenizer, a briefly
pretrained base model, and (built lazily, once) the SFT model, comparisons and reward model
on top of it. Also a tiny random GPT-2 with a tokenizer WITHOUT a chat template (plain
"User:/Assistant:" format) and local JSONL files in every accepted data format.

Import the fixtures you use into a test module: ``from fixtures_pipeline import smoke_world, ...``.
"""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path

import pytest

from alignlab.config import resolve
from alignlab.outputs import write_config, write_summary


def run_stage_module(name: str, module: str, cls_name: str, preset: str | None = "smoke", **overrides) -> dict:
    """``registry.run_stage`` for a stage given by module (works before the stage is registered)."""
    from alignlab.stages import registry

    if name in registry.STAGES:
        cls, presets, _ = registry.STAGES[name].load()
        return registry.run_stage(name, resolve(cls, presets, preset, None, overrides))
    mod = importlib.import_module(module)
    cfg = resolve(getattr(mod, cls_name), mod.PRESETS, preset, None, overrides)
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    write_config(cfg.output_dir, cfg)
    t0 = time.time()
    summary = {"stage": name, **(mod.run(cfg) or {})}
    summary["wall_seconds"] = round(time.time() - t0, 2)
    write_summary(cfg.output_dir, summary)
    return summary


# Small but enough for SFT to show a clear gain on the smoke world.
SFT_FAST = {"epochs": "8", "batch_size": "8", "optim.lr": "5e-3", "optim.warmup_steps": "2", "run.tensorboard": "false"}


@pytest.fixture(scope="session")
def smoke_world(tmp_path_factory):
    """world/ tokenizer/ pretrain/ of the smoke preset (pretrain shortened)."""
    root = tmp_path_factory.mktemp("pipe")
    run_stage_module("world", "alignlab.world.stage", "WorldConfig", "smoke", output_dir=str(root / "world"))
    run_stage_module(
        "tokenizer",
        "alignlab.stages.tokenizer",
        "TokenizerConfig",
        "smoke",
        data=str(root / "world" / "corpus"),
        output_dir=str(root / "tokenizer"),
    )
    run_stage_module(
        "pretrain",
        "alignlab.stages.pretrain",
        "PretrainConfig",
        "smoke",
        data=str(root / "world" / "corpus"),
        tokenizer=str(root / "tokenizer"),
        output_dir=str(root / "pretrain"),
        max_steps="40",
        eval_interval="40",
        checkpoint_interval="0",
        tensorboard="false",
    )
    return {
        "root": root,
        "world": str(root / "world"),
        "tokenizer": str(root / "tokenizer"),
        "pretrain": str(root / "pretrain"),
    }


@pytest.fixture(scope="session")
def smoke_sft(smoke_world):
    out = smoke_world["root"] / "sft"
    summary = run_stage_module(
        "sft",
        "alignlab.stages.sft",
        "SFTConfig",
        "smoke",
        model=smoke_world["pretrain"],
        data=str(Path(smoke_world["world"]) / "sft"),
        world_dir=smoke_world["world"],
        output_dir=str(out),
        **SFT_FAST,
    )
    return {"dir": str(out), "summary": summary}


@pytest.fixture(scope="session")
def smoke_compare(smoke_world, smoke_sft):
    out = smoke_world["root"] / "compare"
    summary = run_stage_module(
        "compare",
        "alignlab.stages.compare",
        "CompareConfig",
        "smoke",
        policy=smoke_sft["dir"],
        data=str(Path(smoke_world["world"]) / "rm"),
        world_dir=smoke_world["world"],
        max_prompts="96",
        output_dir=str(out),
    )
    return {"dir": str(out), "summary": summary}


@pytest.fixture(scope="session")
def smoke_reward(smoke_world, smoke_sft, smoke_compare):
    out = smoke_world["root"] / "reward"
    summary = run_stage_module(
        "reward",
        "alignlab.stages.reward",
        "RewardConfig",
        "smoke",
        model=smoke_sft["dir"],
        data=str(Path(smoke_compare["dir"]) / "comparisons"),
        world_dir=smoke_world["world"],
        output_dir=str(out),
        **{"run.tensorboard": "false"},
    )
    return {"dir": str(out), "summary": summary}


@pytest.fixture(scope="session")
def tiny_gpt2(smoke_world, tmp_path_factory):
    """A random 2-layer GPT-2 and the world tokenizer stripped of its chat template, plus JSONL data
    in every accepted format (prompt/completion, messages, prompt/chosen/rejected, prompt/responses)."""
    import datasets
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("gpt2")
    tok = AutoTokenizer.from_pretrained(smoke_world["tokenizer"])
    tok.chat_template = None
    torch.manual_seed(0)
    cfg = GPT2Config(
        n_layer=2,
        n_embd=32,
        n_head=2,
        n_positions=128,
        vocab_size=len(tok),
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model_dir = root / "gpt2"
    GPT2LMHeadModel(cfg).save_pretrained(str(model_dir), safe_serialization=True)
    tok.save_pretrained(str(model_dir))
    for f in model_dir.glob("chat_template*"):
        f.unlink()

    sft = datasets.load_from_disk(str(Path(smoke_world["world"]) / "sft"))
    comp = datasets.load_from_disk(str(Path(smoke_world["world"]) / "comparisons"))
    files = {}
    for split in ("train", "validation"):
        rows = [sft[split][i] for i in range(min(len(sft[split]), 24))]
        files[f"pc_{split}"] = _jsonl(
            root / f"pc_{split}.jsonl", [{"prompt": r["prompt"], "completion": r["completion"]} for r in rows]
        )
        files[f"msg_{split}"] = _jsonl(root / f"msg_{split}.jsonl", [{"messages": r["messages"]} for r in rows])
        crows = [comp[split][i] for i in range(min(len(comp[split]), 24))]
        files[f"ranked_{split}"] = _jsonl(
            root / f"ranked_{split}.jsonl", [{"prompt": r["prompt"], "responses": r["responses"]} for r in crows]
        )
        files[f"pref_{split}"] = _jsonl(
            root / f"pref_{split}.jsonl",
            [{"prompt": r["prompt"], "chosen": r["responses"][0], "rejected": r["responses"][-1]} for r in crows],
        )
    return {"root": root, "model": str(model_dir), **files}


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)
