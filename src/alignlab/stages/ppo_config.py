"""PPO's own config sections (the KL leash, sampling the episodes, PPO-ptx, the held-out evaluation), the
flat keys they replaced, and the presets (PPO's, and the value-free RLOO and GRPO modes of the same stage).

``PPOConfig`` (``stages/ppo.py``) holds the sections as ``kl.``, ``rollout.``, ``ptx.`` and ``eval.`` beside
the shared ``run.``, ``source.`` and ``optim.`` sections; the flat keys they replace are listed in
``RENAMED`` and keep working for one release, with a warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from alignlab.config import arg
from alignlab.sections import HeldoutSampling


@dataclass
class KLConfig:
    beta: float = arg(0.02, "KL coefficient (initial value when adaptive); InstructGPT: 0.02")
    adaptive: bool = arg(False, "adapt beta towards `target` KL (Ziegler et al. 2019) instead of keeping it fixed")
    target: float = arg(4.0, "adaptive: target KL(pi || pi_SFT) in nats per response (the k1 estimate logged as `kl`)")
    horizon: float = arg(
        10_000, "adaptive: beta changes by at most +-20% x episodes/horizon per iteration (reference: 10000)"
    )


@dataclass
class RolloutSettings:
    max_prompt_len: int = arg(96, "prompt tokens kept (cut from the left); capped so prompt+response fits the context")
    max_new_tokens: int = arg(32, "response length cap; longer responses get the missing-EOS penalty")
    temperature: float = arg(1.0, "rollout temperature, also used when scoring log-probs (InstructGPT: 1)")
    gen_batch_size: int = arg(64, "prompts per generate() call")
    backend: Literal["transformers", "vllm"] = arg(
        "transformers",
        "who samples the episodes: transformers (KV-cache loop on the policy itself; CPU or GPU) "
        "or vllm (a vLLM engine on the GPU, policy weights pushed into it after every update)",
    )
    vllm_gpu_memory: float = arg(0.3, "vllm backend: fraction of GPU memory the engine may take (weights + KV cache)")
    pack_sequences: bool = arg(
        True,
        "score and train on episodes packed several per row with one attention block "
        "each (no padding; the same numbers up to float rounding); false = the padded layout",
    )


@dataclass
class PtxSettings:
    """PPO-ptx: after each minibatch's PPO backward, coef x (mean per-token LM loss on ``batch_size`` packed
    blocks of ``data``) is backpropagated into the same gradients and one optimiser step takes both
    (InstructGPT: "accumulated in consecutive steps"). Both losses are per-token means, so gamma weighs a
    pretraining token against a PPO token. InstructGPT's 27.8 came with 8x as many pretraining examples as
    episodes and 175B-scale batches; where a step's pretraining blocks hold about as many tokens as one PPO
    minibatch (4 blocks x 128 tokens: about the tokens of 16 episodes), gamma = 1 gives the two losses equal
    say per token. Pick gamma as the smallest that brings the held-out pretraining loss back to the SFT
    model's without giving up the held-out gold gain (both are in the run's summary.json)."""

    coef: float = arg(0.0, "PPO-ptx gamma: weight of the pretraining LM loss (0 = plain PPO)")
    data: str = arg("runs/world/corpus", "pretraining text for ptx and for the held-out pretraining loss; empty = off")
    text_column: str = arg("text", "column of ptx.data with the documents")
    batch_size: int = arg(4, "packed pretraining blocks per optimiser step (ptx; global, across processes)")
    seq_len: int = arg(128, "tokens per pretraining block (capped at the model's context)")
    eval_blocks: int = arg(64, "held-out (validation split) blocks for the pretraining loss before/after")


@dataclass
class EvalSettings(HeldoutSampling):
    greedy: bool = arg(True, "also evaluate greedy decoding on the held-out prompts (keys *_greedy)")
    interval: int = arg(0, "iterations between extra held-out evaluations (0 = only before and after)")
    draws: int = arg(
        1,
        "sampled responses per held-out prompt at each measurement, scored as their mean per prompt (the first "
        "draw is the one-draw measurement; more draws shrink sampling noise, and 2+ let heldout_curve.jsonl "
        "measure it)",
    )


# Old flat key -> its place in PPOConfig now (the shared sections' keys are aliased without being listed).
RENAMED = {
    "warmup_iterations": "optim.warmup_steps",
    "adam_eps": "optim.eps",
    "rollout_backend": "rollout.backend",
    **{k: f"rollout.{k}" for k in ("max_prompt_len", "max_new_tokens", "temperature", "gen_batch_size")},
    **{k: f"rollout.{k}" for k in ("vllm_gpu_memory", "pack_sequences")},
    **{f"ptx_{k}": f"ptx.{k}" for k in ("coef", "data", "text_column", "batch_size", "seq_len", "eval_blocks")},
    **{f"eval_{k}": f"eval.{k}" for k in ("data", "split", "prompts", "temperature", "greedy", "interval")},
}


# Adaptive KL for the built-in world. The target is the KL at which the `hack` preset's run (beta 0)
# reaches its highest training-prompt gold reward (5-iteration mean): past it, more KL buys proxy
# reward, not gold; it is set from the world with demonstrators of varied quality (where SFT leaves
# more to gain, and the peak comes later than with perfect demonstrations). The horizon lets beta
# move +-4% per iteration. beta is in units of the RM's score, so its start scales with the RM's
# spread over demonstrations: pick it so the first iterations stay well below the target (about a
# quarter of it); an RM half as spread needs half the beta.
_LEASH = {"adaptive": True, "beta": 0.2, "target": 4.0, "horizon": 320}

PRESETS = {
    "smoke": {
        "iterations": 2,
        "batch_size": 8,
        "minibatch_size": 4,
        "ppo_epochs": 2,
        "rollout": {"max_new_tokens": 12},
        "eval": {"prompts": 8, "greedy": False},
        "ptx": {"eval_blocks": 4},
        "optim": {"warmup_steps": 0},
        "run": {"checkpoint_interval": 1, "threads": 1},
    },
    # The demo: a KL leash with a target (beta adapts; horizon scaled to our ~1.5k-episode run).
    "default": {"kl": _LEASH},
    # PPO-ptx: gamma = 1 at our scale (see the module notes for why not InstructGPT's 27.8).
    "ptx": {"kl": _LEASH, "ptx": {"coef": 1.0}, "output_dir": "runs/ppo_ptx"},
    # Reward hacking on purpose: no KL leash, more and bigger steps; held-out evals every 10
    # iterations trace the over-optimisation curve (gold peaks, then falls while the RM climbs).
    "hack": {
        "kl": {"beta": 0.0, "adaptive": False},
        "iterations": 40,
        "optim": {"lr": 1e-4},
        "eval": {"interval": 10},
        "output_dir": "runs/ppo_hack",
    },
    # PPO against a perfect reward model (the world's labelers): is the RM what limits PPO here? Gold scores
    # spread less than the pipeline RM's, so beta starts lower in the same proportion.
    "gold": {"kl": {**_LEASH, "beta": 0.05}, "reward_source": "world", "output_dir": "runs/ppo_gold"},
}

# RLOO and GRPO: the same stage with the value model replaced by the other samples of the same prompt
# (``advantage``; the maths in ``rl/group_advantages.py``). What defines each estimator follows its paper:
#   rloo  k = 4 (Ahmadian et al. 2024 report k = 2 and 4, 4 the better; TRL's default is 2); the reward of a
#         response is its RM score - beta x its KL summed over the response (the KL in the reward, as there and
#         in TRL's RLOOTrainer); leave-one-out baseline; the advantage on every response token; not whitened
#         (the paper's REINFORCE estimator; TRL's normalize_advantages is off by default).
#   grpo  k = 4 (the paper sampled 64 per prompt, TRL 8: at our 64 episodes per iteration that would leave 1 or
#         8 prompts per batch); advantage (r - group mean) / (group std + grpo_eps); the KL as a k3 LOSS term
#         beta x mean_t k3, as in the paper, not in the reward: dividing by each group's std would rescale a KL
#         paid in the reward by a different factor in every group, most in the groups that scored alike. beta
#         starts at the paper's 0.04 (TRL's default is 0: no KL term at all).
# What is not the estimator stays PPO's, so that a comparison of the three varies the advantage alone: the
# clipped loss, 4 passes over 16-episode minibatches (the papers take one step per batch, where the clip never
# binds; --ppo_epochs 1 --minibatch_size 64 gives that), the learning rate, and the adaptive KL leash to the same
# target (rloo pays it where PPO does, so from PPO's beta). 16 prompts x 4 samples = PPO's 64 episodes per
# iteration, so the three see the same number of episodes (rloo and grpo on a quarter as many prompts).
_GROUPS = {"batch_size": 16, "group_size": 4, "whiten_advantages": False}
PRESETS["rloo"] = {**_GROUPS, "advantage": "rloo", "kl": _LEASH, "output_dir": "runs/rloo"}
PRESETS["grpo"] = {**_GROUPS, "advantage": "grpo", "kl": {**_LEASH, "beta": 0.04}, "output_dir": "runs/grpo"}


def method_name(cfg) -> str:
    """How the progress bar, the non-finite guard and the model card name a run: ppo, rloo or grpo (+ -ptx)."""
    base = "ppo" if cfg.advantage == "gae" else cfg.advantage
    return base if cfg.ptx.coef == 0 else f"{base}-ptx"


def kl_in_loss(cfg) -> bool:
    """Whether the KL to the reference is a loss term (grpo) rather than paid in the reward (gae, rloo)."""
    return cfg.advantage == "grpo"
