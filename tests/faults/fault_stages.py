"""The stages the fault tests kill, corrupt and poison, each a tiny run: ``run(out, resume)``."""

from __future__ import annotations

import json
from pathlib import Path

from alignlab.config import apply, resolve
from alignlab.stages.registry import STAGES, run_stage


def stage_runner(name: str, preset: str | None, settings: dict):
    """``run(out, resume)`` for stage ``name`` with these settings, written as the CLI writes it."""
    cls, presets, _ = STAGES[name].load()

    def run(out: Path, resume: bool):
        cfg = resolve(cls, presets, preset, None, {}) if preset else cls()
        cfg = apply(cfg, {**settings, "output_dir": str(out)}, "faults")
        cfg = apply(cfg, {"run": {"resume": resume}} if hasattr(cfg, "run") else {}, "faults")
        return run_stage(name, cfg)

    return run


def _sft_data(inp) -> str:
    path = Path(inp["root"]) / "sft.jsonl"
    if not path.exists():
        rows = [json.loads(line) for line in open(inp["ranked"])]
        path.write_text(
            "".join(json.dumps({"prompt": r["prompt"], "completion": r["responses"][0]}) + "\n" for r in rows)
        )
    return str(path)


def ppo_settings(inp, ptx: float) -> dict:
    return {
        "policy": inp["llama_policy"],
        "reward_model": inp["llama_rm"],
        "data": inp["prompts"],
        "world_dir": "",
        "eval": {"data": inp["prompts"], "prompts": 8},
        "ptx": {"data": inp["corpus"], "coef": ptx, "eval_blocks": 4, "seq_len": 32, "batch_size": 4},
        "iterations": 8,
        "batch_size": 8,
        "minibatch_size": 4,
        "ppo_epochs": 1,
        "rollout": {"max_new_tokens": 8, "gen_batch_size": 8},
        "run": {"checkpoint_interval": 2, "tensorboard": False, "device": "cpu"},
        "optim": {"warmup_steps": 0},
    }


def rloo_settings(inp) -> dict:
    """PPO's fault run as RLOO: 4 prompts x 2 samples = the same 8 episodes per iteration, no value model. The
    missing-EOS penalty is added to the RM score, so the tiny policy's groups (which never end in 8 tokens)
    still differ and the updates move the weights."""
    settings = ppo_settings(inp, 0.0)
    return {**settings, "advantage": "rloo", "group_size": 2, "batch_size": 4, "no_eos_mode": "add"}


QUIET = {"tensorboard": False, "device": "cpu", "log_interval": 1}


def pretrain(corpus):
    settings = {
        "data": corpus["corpus"],
        "source": {"tokenizer": corpus["tokenizer"]},
        "max_steps": 12,
        "eval_interval": 6,
        "run": {**QUIET, "checkpoint_interval": 2},
    }
    return stage_runner("pretrain", "smoke", settings)


def sft(inp):
    settings = {"model": inp["llama_policy"], "data": _sft_data(inp), "judge": "loss", "eval_base": False}
    return stage_runner("sft", "smoke", {**settings, "epochs": 4, "batch_size": 8, "run": QUIET})


def reward(inp):
    settings = {"model": inp["llama_policy"], "data": inp["ranked"], "world_dir": "", "epochs": 2, "batch_size": 8}
    return stage_runner("reward", "smoke", {**settings, "run": {**QUIET, "checkpoint_interval": 2}})


def dpo(inp, **run):
    """8 steps of DPO, a checkpoint every 2; ``run`` adds keys of the run. section."""
    settings = {"policy": inp["llama_policy"], "data": inp["ranked"], "world_dir": "", "eval": {"data": ""}}
    run = {**QUIET, "checkpoint_interval": 2, **run}
    return stage_runner("dpo", None, {**settings, "max_steps": 8, "batch_size": 4, "run": run})


def instruct_tune(world):
    settings = {"world_dir": world["world"], "model": world["pretrain"], "heldout_clusters": ["classification"]}
    return stage_runner(
        "instruct-tune", "smoke", {**settings, "no_template": False, "epochs": 3, "max_eval_prompts": 8}
    )


def expert_iteration(inp):
    """Best of 3 on 24 prompts, then 4 epochs of SFT on the kept answers: a kill in the SFT run, and a resume
    that reuses the selection and continues it."""
    settings = {"policy": inp["llama_policy"], "reward_model": inp["llama_rm"], "data": inp["prompts"], "world_dir": ""}
    settings.update(prompts=24, n=3, max_new_tokens=6, no_eos_penalty=None, epochs=4, batch_size=8, judge="loss")
    return stage_runner("expert-iteration", None, {**settings, "run": QUIET})


def pipeline(_):
    """The pipeline's first steps (world, tokenizer, a short pretraining): a kill anywhere, including
    between steps, and a rerun must finish each step once, as if never stopped."""
    overrides = {"pretrain": {"max_steps": 16, "eval_interval": 16, "run": {**QUIET, "checkpoint_interval": 4}}}
    settings = {"stages": ["world", "tokenizer", "pretrain"], "stage_overrides": overrides}
    return stage_runner("pipeline", "smoke", settings)


# stage -> (the fixture it is built from, how)
STAGES_UNDER_TEST = {
    "pretrain": ("tiny_corpus", pretrain),
    "sft": ("rlhf_inputs", sft),
    "reward": ("rlhf_inputs", reward),
    "dpo": ("rlhf_inputs", dpo),
    "ppo": ("rlhf_inputs", lambda inp: stage_runner("ppo", None, ppo_settings(inp, 0.0))),
    "ppo_ptx": ("rlhf_inputs", lambda inp: stage_runner("ppo", None, ppo_settings(inp, 0.5))),
    "rloo": ("rlhf_inputs", lambda inp: stage_runner("ppo", None, rloo_settings(inp))),
    "instruct_tune": ("smoke_world", instruct_tune),
    "expert_iteration": ("rlhf_inputs", expert_iteration),
    "pipeline": ("tmp_path", pipeline),
}
