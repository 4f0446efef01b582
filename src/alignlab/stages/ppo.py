"""Stage: PPO and PPO-ptx against a reward model, with a KL leash to the SFT policy (InstructGPT step 3).

Read top to bottom: config; the trainer (one iteration = rollout -> scoring -> PPO epochs);
the stage's run(): load, resume, loop, held-out evaluation, save.

One iteration:
  1. rollout   sample ``batch_size`` prompts (a function of the iteration number alone, so a
               resumed run sees the same prompts) and one response each at temperature T, by
               the rollout backend (``rollout/backends.py``: a KV-cache loop on the policy, or
               vLLM with the policy's weights pushed after every update).
  2. scoring   no grad, once per rollout: policy log-probs (the "old" ones) and reference
               log-probs, both at the SAME temperature T; the RM score of prompt+response+EOS
               minus ``reward_shift``, replaced by (or added to) ``no_eos_penalty`` for
               responses that hit the length cap; values V(s_t) of the value model;
               per-token rewards -beta*(logp - logp_ref) with the score at the last token;
               GAE (gamma 1, lambda 0.95); advantages whitened. Forwards here and in the update
               run on episodes packed several per row (``rollout/packed.py``; no padding, same
               numbers), unless ``pack_sequences`` is off or the model fails the packing check.
  3. update    ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss +
               vf_coef * clipped value loss, backward; then (PPO-ptx) ptx_coef * LM loss on
               a batch of packed pretraining text, backward into the same gradients
               ("accumulated in consecutive steps", InstructGPT); clip; step.

Optimisers: policy and value model are separate networks with SEPARATE AdamW optimisers
(``lr``, ``value_lr``) and separately clipped gradients; one backward of
pg_loss + vf_coef * vf_loss feeds both. (With Adam, vf_coef mostly matters through the
value model's gradient clipping, since Adam is invariant to the loss scale.)
Dropout is off in all four models. The reference policy and the RM are frozen.

Value model: a copy of the RM whose scalar head is applied at every token
(``models/value_model.py``): before training, V(s_t) = RM score of prompt + response[:t].

PPO-ptx: after each minibatch's PPO backward, ptx_coef * (mean per-token LM loss on
``ptx_batch_size`` packed blocks of ``ptx_data``) is backpropagated into the same gradients and
one optimiser step takes both (InstructGPT: "accumulated in consecutive steps"). Both losses are
per-token means, so gamma weighs a pretraining token against a PPO token. InstructGPT's 27.8
came with 8x as many pretraining examples as episodes and 175B-scale batches; on our scale we
use gamma = 1 with 4 blocks x 128 tokens per step (about the tokens of one 16-episode PPO
minibatch): on the built-in world it brings the pretraining loss back below the SFT model's
while keeping the held-out gold gain (numbers in the ptx preset's summary.json).
"""

from __future__ import annotations

import json
import math
import random
import shutil
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from alignlab.config import arg
from alignlab.data.chat import encode_prompt_rows
from alignlab.data.load import load_dataset_any
from alignlab.data.packing import block_indices, pack_documents
from alignlab.distributed import make_accelerator, masked_whiten_across, rank_share, reduce_means, token_share
from alignlab.evaluate.heldout_samples import paired_delta_ci, sample_and_score
from alignlab.models.load import context_length, disable_dropout, load_causal_lm, load_tokenizer
from alignlab.models.lora import (
    LoraSettings,
    apply_lora,
    clear_model_files,
    load_adapter_weights,
    reference_model,
    save_model,
)
from alignlab.models.reward_model import load_reward_model
from alignlab.models.value_model import ValueModel, response_values, rm_scores
from alignlab.outputs import MetricsLogger, atomic_replace_dir, atomic_write_json, read_metrics, write_model_card
from alignlab.rl.gae import compute_gae
from alignlab.rl.kl import AdaptiveKLController, FixedKLController, kl_k1, kl_k3, per_token_kl_rewards
from alignlab.rl.ppo_loss import explained_variance, masked_mean, masked_var, ppo_policy_loss, ppo_value_loss
from alignlab.rl.rollout_batch import Experience
from alignlab.rollout.backends import make_rollout_backend, vllm_unavailable_reason
from alignlab.rollout.layout import Rollout, with_eos
from alignlab.rollout.packed import (
    pack_sequences,
    packed_last_values,
    packed_logprobs,
    packed_values,
    packing_matches_padding,
)
from alignlab.rollout.scoring import sequence_logprobs
from alignlab.training import cpu_threads, make_optimizer, read_trainer_state, resolve_device


@dataclass
class KLConfig:
    beta: float = arg(0.02, "KL coefficient (initial value when adaptive); InstructGPT: 0.02")
    adaptive: bool = arg(False, "adapt beta towards `target` KL (Ziegler et al. 2019) instead of keeping it fixed")
    target: float = arg(4.0, "adaptive: target KL(pi || pi_SFT) in nats per response (the k1 estimate logged as `kl`)")
    horizon: float = arg(
        10_000, "adaptive: beta changes by at most +-20% x episodes/horizon per iteration (reference: 10000)"
    )


@dataclass
class PPOConfig:
    policy: str = arg("runs/sft", "SFT model (hub id or path): initial policy and frozen KL reference")
    reward_model: str = arg(
        "runs/reward", "reward model (*ForSequenceClassification, num_labels=1; reward_shift in its config)"
    )
    value_model: str = arg("", "initial value model (a reward-model folder); empty = a copy of reward_model")
    tokenizer: str = arg("", "tokenizer; empty = the one saved with the policy")
    trust_remote_code: bool = arg(False, "allow custom modelling code from the hub")
    data: str = arg("runs/world/ppo", "prompts: saved datasets folder, .jsonl/.parquet or hub id (no labels needed)")
    split: str = arg("train", "split of `data`")
    prompt_column: str = arg("prompt", "column with the prompt (text or messages); else a `messages` column's context")
    world_dir: str = arg("runs/world", "built-in world folder for GOLD rewards (reward-hacking check); empty = off")
    eval_data: str = arg("", "held-out prompts for before/after numbers; empty = world_dir/test when world_dir is set")
    eval_split: str = arg("test", "split of eval_data")
    eval_prompts: int = arg(
        256, "number of held-out prompts (the first N rows: a fixed set); 0 = no held-out evaluation"
    )
    eval_temperature: float = arg(1.0, "held-out sampling temperature (same seed before and after); 0 = greedy")
    eval_greedy: bool = arg(True, "also evaluate greedy decoding on the held-out prompts (keys *_greedy)")
    eval_interval: int = arg(0, "iterations between extra held-out evaluations (0 = only before and after)")
    max_prompt_len: int = arg(96, "prompt tokens kept (cut from the left); capped so prompt+response fits the context")
    max_new_tokens: int = arg(32, "response length cap; longer responses get the missing-EOS penalty")
    temperature: float = arg(1.0, "rollout temperature, also used when scoring log-probs (InstructGPT: 1)")
    iterations: int = arg(24, "PPO iterations (rollout + update)")
    batch_size: int = arg(64, "episodes (prompts) per iteration, global")
    minibatch_size: int = arg(16, "episodes per optimiser step (global, across processes)")
    ppo_epochs: int = arg(4, "passes over each rollout batch")
    lr: float = arg(4e-5, "policy learning rate (AdamW)")
    value_lr: float = arg(1e-4, "value-model learning rate (its own AdamW)")
    lr_schedule: Literal["constant", "linear"] = arg(
        "constant", "after warmup: constant (InstructGPT) or linear decay to 0 (reference)"
    )
    warmup_iterations: int = arg(2, "iterations of linear LR warmup")
    weight_decay: float = arg(0.0, "AdamW weight decay")
    adam_eps: float = arg(1e-5, "AdamW epsilon (the reference's TF Adam behaves like a larger eps early on)")
    grad_clip: float = arg(1.0, "clip each model's gradient norm to this (0 = off)")
    clip: float = arg(0.2, "PPO policy ratio clip")
    vf_clip: float = arg(0.2, "value clip around the rollout values")
    vf_coef: float = arg(0.1, "value-loss coefficient")
    gamma: float = arg(1.0, "discount (InstructGPT: no discount)")
    lam: float = arg(0.95, "GAE lambda")
    whiten_advantages: bool = arg(True, "normalise advantages per batch (mean 0, std 1)")
    reward_source: Literal["model", "world"] = arg(
        "model",
        "what scores an episode: the reward model, or (built-in world only) the world's training labelers "
        "directly (their noise-free mean): PPO against a perfect reward model, the ceiling that says whether the "
        "RM or the policy limits the result; the RM still initialises the value model",
    )
    no_eos_penalty: float = arg(-1.0, "score for a response that hit max_new_tokens without EOS")
    no_eos_mode: Literal["replace", "add"] = arg(
        "replace", "replace the RM score by the penalty, or add the penalty to it"
    )
    kl: KLConfig = arg(factory=KLConfig, help="KL penalty to the SFT policy")
    ptx_coef: float = arg(0.0, "PPO-ptx gamma: weight of the pretraining LM loss (0 = plain PPO)")
    ptx_data: str = arg(
        "runs/world/corpus", "pretraining text for ptx and for the held-out pretraining loss; empty = off"
    )
    ptx_text_column: str = arg("text", "column of ptx_data with the documents")
    ptx_batch_size: int = arg(4, "packed pretraining blocks per optimiser step (ptx; global, across processes)")
    ptx_seq_len: int = arg(128, "tokens per pretraining block (capped at the model's context)")
    ptx_eval_blocks: int = arg(64, "held-out (validation split) blocks for the pretraining loss before/after")
    hack_margin: float = arg(
        0.02, "reward hacking = held-out RM score up AND gold down (sampled or greedy), each by more than this"
    )
    gen_batch_size: int = arg(64, "prompts per generate() call")
    rollout_backend: Literal["transformers", "vllm"] = arg(
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
    checkpoint_interval: int = arg(20, "iterations between resumable checkpoints (0 = none)")
    log_interval: int = arg(1, "iterations between metrics.jsonl lines")
    seed: int = arg(0, "seed for prompt order, sampling and minibatch order")
    device: str = arg("auto", "auto, cpu or cuda")
    threads: int = arg(
        0, "torch CPU threads (0 = torch's default, every core); on a CPU shared with other jobs 1 can be much faster"
    )
    resume: bool = arg(False, "continue from output_dir/checkpoint if it exists")
    tensorboard: bool = arg(True, "also write TensorBoard logs to output_dir/tb")
    lora: LoraSettings = arg(
        factory=LoraSettings,
        help="LoRA adapters through peft (--lora.r 8) on the policy and the "
        "value model; the reference is the policy with its adapter off; r=0 trains all weights",
    )
    output_dir: str = arg("runs/ppo", "where the policy, value model, metrics and checkpoints go")


# Adaptive KL for the built-in world. The target is the KL at which the `hack` preset's run (beta 0)
# reaches its highest training-prompt gold reward (5-iteration mean): past it, more KL buys proxy
# reward, not gold. On the world with perfect demonstrations that was ~1 nat; on the world with
# demonstrators of varied quality (where SFT leaves more to gain) 3.9 and 4.3 nats in two seed-0
# runs, so 4 nats. beta may move +-4% per iteration. beta is in units of the RM's score, so its start
# depends on the RM's spread: the pipeline's RM (K=6 comparisons mixing SFT and base samples) scores
# demonstrations with std ~0.7; 0.2 holds the first iterations near 1-2 nats. An RM half as spread
# needs half the beta.
_LEASH = {"adaptive": True, "beta": 0.2, "target": 4.0, "horizon": 320}

PRESETS = {
    "smoke": {
        "iterations": 2,
        "batch_size": 8,
        "minibatch_size": 4,
        "ppo_epochs": 2,
        "max_new_tokens": 12,
        "eval_prompts": 8,
        "eval_greedy": False,
        "checkpoint_interval": 1,
        "ptx_eval_blocks": 4,
        "warmup_iterations": 0,
        "threads": 1,
    },
    # The demo: a KL leash with a target (beta adapts; horizon scaled to our ~1.5k-episode run).
    "default": {"kl": _LEASH},
    # PPO-ptx: gamma = 1 at our scale (see the module notes for why not InstructGPT's 27.8).
    "ptx": {"kl": _LEASH, "ptx_coef": 1.0, "output_dir": "runs/ppo_ptx"},
    # Reward hacking on purpose: no KL leash, more and bigger steps; held-out evals every 10
    # iterations trace the over-optimisation curve (gold peaks, then falls while the RM climbs).
    "hack": {
        "kl": {"beta": 0.0, "adaptive": False},
        "iterations": 40,
        "lr": 1e-4,
        "eval_interval": 10,
        "output_dir": "runs/ppo_hack",
    },
    # PPO against a perfect reward model (the world's labelers): is the RM what limits PPO here? Gold scores
    # spread about a quarter as wide as the pipeline RM's (std ~0.2 vs ~0.7), so beta starts a quarter as high.
    "gold": {"kl": {**_LEASH, "beta": 0.05}, "reward_source": "world", "output_dir": "runs/ppo_gold"},
}


# ----------------------------------------------------------------------------- the trainer


class PPOTrainer:
    """Owns the four models and the two optimisers; ``iteration(it)`` does one rollout + update.

    ``ref_policy=None`` (LoRA): the reference is ``policy`` with its adapter switched off.

    ``reward_fn(rollout, records) -> [B]`` may replace the reward model (a rule-based reward, the
    world's labelers (``reward_source: world``), or a test's); ``records`` are the rollout's prompt
    rows when the caller passes them. The missing-EOS penalty and the KL term still apply.
    """

    def __init__(
        self,
        cfg: PPOConfig,
        policy,
        ref_policy,
        reward_model: ValueModel | None,
        value_model: ValueModel,
        tokenizer,
        accelerator: Accelerator,
        ptx_blocks: torch.Tensor | None = None,
        reward_fn: Callable[[Rollout, list | None], torch.Tensor] | None = None,
    ):
        if reward_model is None and reward_fn is None:
            raise ValueError("PPO needs a reward model or a reward_fn")
        n_proc = accelerator.num_processes
        if cfg.batch_size % n_proc or cfg.minibatch_size % n_proc:
            raise ValueError(
                f"batch_size ({cfg.batch_size}) and minibatch_size ({cfg.minibatch_size}) must be "
                f"divisible by the number of processes ({n_proc}): both are global, split over the ranks"
            )
        self.cfg, self.tok, self.acc = cfg, tokenizer, accelerator
        self.ref, self.rm, self.reward_fn = ref_policy, reward_model, reward_fn
        for m in (policy, ref_policy, value_model, reward_model):
            if m is not None:
                disable_dropout(m)
        for m in (ref_policy, reward_model):
            if m is not None:
                m.eval().requires_grad_(False)
        self.ptx_blocks = ptx_blocks if cfg.ptx_coef > 0 else None
        if cfg.ptx_coef > 0 and ptx_blocks is None:
            raise ValueError("ptx_coef > 0 needs pretraining blocks (set ptx_data)")
        if cfg.ptx_coef > 0 and cfg.ptx_batch_size % accelerator.num_processes:
            raise ValueError(
                f"ptx_batch_size ({cfg.ptx_batch_size}) must be divisible by the number of processes "
                f"({accelerator.num_processes}): it is global, split over the ranks"
            )

        local_batch = cfg.batch_size // n_proc
        self.local_minibatch = cfg.minibatch_size // n_proc  # a global minibatch = one local minibatch per rank
        self.updates_per_iteration = cfg.ppo_epochs * math.ceil(local_batch / self.local_minibatch)
        total_updates = cfg.iterations * self.updates_per_iteration
        warmup = cfg.warmup_iterations * self.updates_per_iteration
        self.opt_policy = make_optimizer(policy, cfg.lr, cfg.weight_decay, eps=cfg.adam_eps)
        self.opt_value = make_optimizer(value_model, cfg.value_lr, cfg.weight_decay, eps=cfg.adam_eps)

        def schedule(opt):
            if cfg.lr_schedule == "linear":
                return get_linear_schedule_with_warmup(opt, warmup, total_updates)
            return get_constant_schedule_with_warmup(opt, warmup)

        self.sched_policy, self.sched_value = schedule(self.opt_policy), schedule(self.opt_value)
        self.kl_ctl = (
            AdaptiveKLController(cfg.kl.beta, cfg.kl.target, cfg.kl.horizon)
            if cfg.kl.adaptive
            else FixedKLController(cfg.kl.beta)
        )
        self.policy, self.value, self.opt_policy, self.opt_value = accelerator.prepare(
            policy, value_model, self.opt_policy, self.opt_value
        )
        if self.ref is not None:
            self.ref.to(accelerator.device)
        if self.rm is not None:
            self.rm.to(accelerator.device)
        self.pack = cfg.pack_sequences  # checked against the padded layout on the first rollout (score)
        self._pack_checked = False
        self.backend = make_rollout_backend(
            cfg.rollout_backend,
            accelerator.unwrap_model(self.policy),
            tokenizer,
            batch_size=cfg.gen_batch_size,
            max_model_len=context_length(accelerator.unwrap_model(self.policy)),
            gpu_memory_utilization=cfg.vllm_gpu_memory,
            seed=cfg.seed,
        )
        pc = accelerator.unwrap_model(
            self.policy
        ).config  # the row width of a packed batch trades dense work against attention work
        self._pack_hidden = int(getattr(pc, "hidden_size", None) or getattr(pc, "n_embd", None) or 256)

    # -- 1. rollout
    def rollout(self, prompt_ids: list[list[int]], iteration: int) -> Rollout:
        c = self.cfg
        return self.backend.generate(
            prompt_ids,
            max_new_tokens=c.max_new_tokens,
            temperature=c.temperature,
            seed=c.seed * 1_000_003 + iteration * 7919 + self.acc.process_index,
        )

    # -- 2. scoring: everything about the episodes that needs no gradient, computed once
    @torch.no_grad()
    def score(self, ro: Rollout, records: list | None = None) -> tuple[Experience, dict[str, float]]:
        c = self.cfg
        ids, attn, Tq, mask = ro.input_ids, ro.attention_mask, ro.response_start, ro.response_mask
        R = mask.shape[1]
        self._check_packing(ids, attn, Tq)
        policy = self.acc.unwrap_model(self.policy)
        if self.pack:  # same numbers as the padded branch, without computing on padding
            packed = pack_sequences(ids, attn, Tq, self._pack_hidden)
            pol = packed_logprobs(self.policy, packed, c.temperature, return_entropy=True)
            with reference_model(policy, self.ref) as ref_model:  # LoRA: the policy with its adapter off
                ref = packed_logprobs(ref_model, packed, c.temperature)
        else:
            pol = sequence_logprobs(self.policy, ids, attn, Tq, c.temperature, return_entropy=True)
            with reference_model(policy, self.ref) as ref_model:
                ref = sequence_logprobs(ref_model, ids, attn, Tq, c.temperature)
        if self.reward_fn is not None:
            raw = self.reward_fn(ro, records).to(ids.device).float()
        else:
            rm_ids, rm_mask = with_eos(ids, attn, ro.ended_with_eos, self.tok.eos_token_id, self.tok.pad_token_id)
            raw = (
                packed_last_values(self.rm, pack_sequences(rm_ids, rm_mask, Tq, self._pack_hidden))
                if self.pack
                else rm_scores(self.rm, rm_ids, rm_mask)
            ).float()
        penalty = torch.full_like(raw, c.no_eos_penalty)
        scores = torch.where(ro.ended_with_eos, raw, penalty if c.no_eos_mode == "replace" else raw + penalty)
        values = (
            packed_values(self.value, packed) if self.pack else response_values(self.value(ids, attn), Tq, R)
        ) * mask
        beta = self.kl_ctl.beta
        rewards = per_token_kl_rewards(pol.logprobs, ref.logprobs, scores, mask, beta)
        advantages, returns = compute_gae(rewards, values, mask, c.gamma, c.lam)
        if c.whiten_advantages:
            advantages = masked_whiten_across(self.acc, advantages, mask)  # statistics of the global batch
        exp = Experience(
            ids, attn, Tq, mask, pol.logprobs * mask, ref.logprobs * mask, values, scores, rewards, advantages, returns
        )
        kl = kl_k1(pol.logprobs, ref.logprobs, mask).item()
        stats = {
            "rm_score_mean": raw.mean().item(),
            "rm_score_std": raw.std(unbiased=False).item(),
            "reward_mean": scores.mean().item(),
            "kl": kl,
            "kl_k3": kl_k3(pol.logprobs, ref.logprobs, mask).item(),
            "beta": beta,
            "kl_reward_mean": (-beta * (pol.logprobs - ref.logprobs) * mask).sum(-1).mean().item(),
            "entropy": masked_mean(pol.entropy, mask).item(),
            "response_len": mask.sum(-1).float().mean().item(),
            "eos_frac": ro.ended_with_eos.float().mean().item(),
            "value_mean": masked_mean(values, mask).item(),
            "return_mean": masked_mean(returns, mask).item(),
            "explained_var": explained_variance(values, returns, mask).item(),
            "return_var": masked_var(returns, mask, unbiased=False).item(),
        }
        return exp, stats

    # -- 3. update: PPO epochs over minibatches (+ ptx gradients in the same optimiser step)
    def update(self, exp: Experience, iteration: int) -> list[dict[str, float]]:
        c = self.cfg
        self.policy.train()
        self.value.train()
        g = torch.Generator().manual_seed(c.seed * 1_000_003 + iteration)
        mb_stats = []
        k = 0
        for _ in range(c.ppo_epochs):
            perm = torch.randperm(exp.batch_size, generator=g).to(exp.input_ids.device)
            for start in range(0, exp.batch_size, self.local_minibatch):
                mb = exp.select(perm[start : start + self.local_minibatch])
                R = mb.response_mask.shape[1]
                if self.pack:
                    packed = pack_sequences(mb.input_ids, mb.attention_mask, mb.response_start, self._pack_hidden)
                    new = packed_logprobs(self.policy, packed, c.temperature)
                    vpred = packed_values(self.value, packed)
                else:
                    new = sequence_logprobs(
                        self.policy, mb.input_ids, mb.attention_mask, mb.response_start, c.temperature
                    )
                    vpred = response_values(self.value(mb.input_ids, mb.attention_mask), mb.response_start, R)
                pg_loss, pg = ppo_policy_loss(new.logprobs, mb.old_logprobs, mb.advantages, mb.response_mask, c.clip)
                vf_loss, vf = ppo_value_loss(vpred, mb.values, mb.returns, mb.response_mask, c.vf_clip)
                # both losses are token means: weigh this rank's tokens in the global minibatch's mean
                share = token_share(self.acc, mb.response_mask.sum())
                self.acc.backward((pg_loss + c.vf_coef * vf_loss) * share)
                # stats stay tensors until the end of the update: one device sync per iteration, not ~8 per minibatch
                stats = {"pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach(), **pg, **vf}
                if self.ptx_blocks is not None:  # PPO-ptx: pretraining gradient accumulated in a consecutive backward
                    step = iteration * self.updates_per_iteration + k
                    idx = rank_share(
                        block_indices(step, c.ptx_batch_size, self.ptx_blocks.shape[0], c.seed).tolist(), self.acc
                    )
                    x = self.ptx_blocks[torch.tensor(idx)].to(exp.input_ids.device)
                    ptx_loss = self.policy(input_ids=x, labels=x, use_cache=False).loss
                    self.acc.backward(c.ptx_coef * ptx_loss)
                    stats["ptx_loss"] = ptx_loss.detach()
                if c.grad_clip > 0:
                    stats["grad_norm"] = self.acc.clip_grad_norm_(self.policy.parameters(), c.grad_clip)
                    stats["value_grad_norm"] = self.acc.clip_grad_norm_(self.value.parameters(), c.grad_clip)
                for opt, sched in ((self.opt_policy, self.sched_policy), (self.opt_value, self.sched_value)):
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                mb_stats.append(stats)
                k += 1
        keys = list(mb_stats[0])
        values = torch.stack(
            [
                torch.stack([torch.as_tensor(s[key], dtype=torch.float32, device=exp.input_ids.device) for key in keys])
                for s in mb_stats
            ]
        ).tolist()
        return [dict(zip(keys, row)) for row in values]

    def _check_packing(self, ids: torch.Tensor, attn: torch.Tensor, Tq: int) -> None:
        """Once: an architecture that packing does not suit (it ignores a 4-D attention mask or explicit
        positions) gets the padded layout, with a warning, instead of wrong numbers. The RM is the
        value model's architecture (the value model starts as a copy of it)."""
        if not self.pack or self._pack_checked:
            return
        self._pack_checked = True
        ok, diff = packing_matches_padding(self.policy, self.value, ids, attn, Tq, self.cfg.temperature)
        if not ok:
            self.pack = False
            warnings.warn(
                f"pack_sequences: packed scores differ from padded ones by {diff:.3g} for "
                f"{type(self.acc.unwrap_model(self.policy)).__name__}; using the padded layout",
                stacklevel=2,
            )

    def iteration(self, iteration: int, prompt_ids: list[list[int]], judge=None, records=None) -> dict[str, Any]:
        t0 = time.time()
        ro = self.rollout(prompt_ids, iteration)
        t1 = time.time()
        exp, stats = self.score(ro, records)
        if judge is not None and records is not None:
            stats["gold_mean"] = statistics.fmean(judge.gold(records, ro.texts))
        t2 = time.time()
        mb = self.update(exp, iteration)
        self.backend.sync_weights(self.acc.unwrap_model(self.policy))  # the next rollout samples the new policy
        t3 = time.time()
        for key in mb[0]:
            stats[key] = statistics.fmean(s[key] for s in mb)
        stats["first_mb_clipfrac"], stats["first_mb_approx_kl"] = mb[0]["clipfrac"], mb[0]["approx_kl"]
        stats["lr"] = self.sched_policy.get_last_lr()[0]
        stats["t_rollout"], stats["t_score"], stats["t_update"] = t1 - t0, t2 - t1, t3 - t2
        n_tokens = ro.response_mask.sum().item()
        stats["response_tokens_per_sec"] = n_tokens / max(t3 - t0, 1e-9)
        # every rank's numbers -> the global batch's (means over ranks; throughput summed), identical on all
        # ranks, so the adaptive KL controller moves beta the same way everywhere
        stats = reduce_means(self.acc, stats)
        stats["response_tokens_per_sec"] *= self.acc.num_processes
        self.kl_ctl.update(stats["kl"], exp.batch_size * self.acc.num_processes)
        stats["_experience"], stats["_rollout"] = exp, ro  # for tests and samples; not logged
        return stats

    # -- checkpoints: policy, value model, both optimisers and schedules, KL controller, RNG
    def save_checkpoint(self, ckpt_dir: Path, iteration: int, extra: dict[str, Any]) -> None:
        tmp = ckpt_dir.with_name(ckpt_dir.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        self.acc.unwrap_model(self.policy).save_pretrained(tmp / "policy", safe_serialization=True)
        self.acc.unwrap_model(self.value).save_pretrained(tmp / "value_model", safe_serialization=True)
        torch.save(
            {
                "opt_policy": self.opt_policy.state_dict(),
                "opt_value": self.opt_value.state_dict(),
                "sched_policy": self.sched_policy.state_dict(),
                "sched_value": self.sched_value.state_dict(),
            },
            tmp / "optimizer.pt",
        )
        torch.save({"torch": torch.get_rng_state(), "python": random.getstate()}, tmp / "rng.pt")
        state = {"step": iteration, "kl_ctl": vars(self.kl_ctl), **extra}
        (tmp / "trainer_state.json").write_text(json.dumps(state))
        atomic_replace_dir(tmp, ckpt_dir)

    def load_optimizer_state(self, ckpt_dir: Path) -> dict[str, Any]:
        """Optimisers, schedules, KL controller and RNG from a checkpoint (weights are loaded
        by building the models from ckpt_dir/policy and ckpt_dir/value_model)."""
        opt = torch.load(ckpt_dir / "optimizer.pt", weights_only=True)
        self.opt_policy.load_state_dict(opt["opt_policy"])
        self.opt_value.load_state_dict(opt["opt_value"])
        self.sched_policy.load_state_dict(opt["sched_policy"])
        self.sched_value.load_state_dict(opt["sched_value"])
        rng = torch.load(ckpt_dir / "rng.pt", weights_only=True)
        torch.set_rng_state(rng["torch"])
        random.setstate(rng["python"])
        state = read_trainer_state(ckpt_dir)
        for key, v in state["kl_ctl"].items():
            setattr(self.kl_ctl, key, v)
        return state


# ------------------------------------------------------------------------------- the stage


def _rows(ds) -> list[dict[str, Any]]:
    return [ds[i] for i in range(len(ds))]


def run(cfg: PPOConfig, reward_fn: Callable[[Rollout, list | None], torch.Tensor] | None = None) -> dict:
    with cpu_threads(cfg.threads):
        return _run(cfg, reward_fn)


def _run(cfg: PPOConfig, reward_fn: Callable[[Rollout, list | None], torch.Tensor] | None) -> dict:
    t_start = time.time()
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoint"
    accelerator = make_accelerator(resolve_device(cfg.device), "ppo")
    is_main = accelerator.is_main_process
    if cfg.batch_size % cfg.minibatch_size:
        raise ValueError(f"batch_size ({cfg.batch_size}) must be a multiple of minibatch_size ({cfg.minibatch_size})")
    if cfg.temperature <= 0:
        raise ValueError("temperature must be > 0: PPO needs sampled responses and their probabilities")
    if cfg.rollout_backend == "vllm" and vllm_unavailable_reason():
        raise ValueError(f"rollout_backend='vllm': {vllm_unavailable_reason()}; use rollout_backend='transformers'")
    torch.manual_seed(cfg.seed)

    # ---- models: policy (SFT), frozen reference (SFT), frozen RM, value model (from RM)
    resuming = cfg.resume and (ckpt_dir / "trainer_state.json").exists()
    tok = load_tokenizer(cfg.tokenizer or cfg.policy, cfg.trust_remote_code)
    # LoRA: adapters on the policy and the value model; the reference is the policy with its adapter
    # off (no second copy); a checkpoint holds the adapters, loaded onto the same bases.
    lora = cfg.lora.enabled
    policy = load_causal_lm(str(ckpt_dir / "policy") if resuming and not lora else cfg.policy, cfg.trust_remote_code)
    policy = apply_lora(policy, cfg.lora, "CAUSAL_LM")
    ref = None if lora else load_causal_lm(cfg.policy, cfg.trust_remote_code)
    rm = (
        ValueModel(load_reward_model(cfg.reward_model, cfg.trust_remote_code))
        if reward_fn is None or cfg.reward_model
        else None
    )
    value_src = str(ckpt_dir / "value_model") if resuming and not lora else (cfg.value_model or cfg.reward_model)
    value = ValueModel(load_reward_model(value_src, cfg.trust_remote_code))
    value.model = apply_lora(value.model, cfg.lora, "SEQ_CLS")
    if resuming and lora:
        load_adapter_weights(policy, ckpt_dir / "policy")
        load_adapter_weights(value.model, ckpt_dir / "value_model")
    if len(tok) > policy.get_input_embeddings().num_embeddings:
        raise ValueError(
            f"tokenizer has {len(tok)} tokens but the policy's embedding only {policy.get_input_embeddings().num_embeddings}"
        )
    ctx = context_length(policy)
    max_prompt_len = min(cfg.max_prompt_len, ctx - cfg.max_new_tokens - 1)
    if max_prompt_len < 8:
        raise ValueError(
            f"max_new_tokens ({cfg.max_new_tokens}) leaves no room for a prompt in the {ctx}-token context"
        )

    # ---- data: prompts; gold judge and fixed held-out prompts; pretraining blocks (ptx and its eval)
    rows = _rows(load_dataset_any(cfg.data, cfg.split))
    prompt_ids = encode_prompt_rows(tok, rows, cfg.prompt_column, max_prompt_len)
    judge = eval_rows = None
    if cfg.world_dir:
        from alignlab.evaluate.judges import WorldJudge

        if not (Path(cfg.world_dir) / "world.json").exists():
            raise ValueError(
                f"world_dir={cfg.world_dir!r} has no world.json; give the world folder or --world_dir '' to turn gold rewards off"
            )
        judge = WorldJudge(cfg.world_dir)
    if cfg.reward_source == "world":
        if reward_fn is not None:
            raise ValueError("reward_source='world' and a reward_fn were both given; pass one")
        if judge is None or "meta" not in rows[0]:
            raise ValueError(
                f"reward_source='world' needs world_dir and prompts from the world's data (rows with "
                f"`meta`); data={cfg.data!r} world_dir={cfg.world_dir!r}"
            )
        world_judge = judge

        def reward_fn(ro: Rollout, records: list | None) -> torch.Tensor:
            return torch.tensor(world_judge.gold(records, ro.texts))

    eval_src = cfg.eval_data or (str(Path(cfg.world_dir) / "test") if cfg.world_dir else "")
    if eval_src:
        eval_rows = _rows(load_dataset_any(eval_src, cfg.eval_split))[: cfg.eval_prompts]
    ptx_blocks = ptx_eval = None
    if cfg.ptx_data and (cfg.ptx_coef > 0 or Path(cfg.ptx_data).exists()):
        seq = min(cfg.ptx_seq_len, ctx)
        ptx_ds = load_dataset_any(cfg.ptx_data, "train")
        if cfg.ptx_coef > 0:
            ptx_blocks = pack_documents(list(ptx_ds[cfg.ptx_text_column]), tok, seq)
        try:
            val_ds = load_dataset_any(cfg.ptx_data, "validation")
        except ValueError:
            val_ds = ptx_ds
        ptx_eval = pack_documents(list(val_ds[cfg.ptx_text_column][:2000]), tok, seq)[: cfg.ptx_eval_blocks]

    trainer = PPOTrainer(cfg, policy, ref, rm, value, tok, accelerator, ptx_blocks, reward_fn)
    device = accelerator.device

    def heldout(tag: str) -> dict[str, Any]:
        if not eval_rows:  # no held-out prompts (eval_prompts 0, or no eval data)
            return {}
        res: dict[str, Any] = {}
        temps = [("", cfg.eval_temperature)] + (
            [("_greedy", 0.0)] if cfg.eval_greedy and cfg.eval_temperature > 0 else []
        )
        for suffix, temp in temps:
            r = sample_and_score(
                accelerator.unwrap_model(trainer.policy),
                tok,
                eval_rows,
                prompt_column=cfg.prompt_column,
                max_prompt_len=max_prompt_len,
                max_new_tokens=cfg.max_new_tokens,
                temperature=temp,
                seed=cfg.seed + 12345,
                batch_size=cfg.gen_batch_size,
                rm=trainer.rm,
                judge=judge if "meta" in eval_rows[0] else None,
            )
            res.update({f"{tag}_{k}{suffix}": r[k] for k in ("rm_score", "gold", "eos_frac", "response_len") if k in r})
            if "gold_scores" in r:
                res[f"_gold_scores{suffix}"] = r["gold_scores"]
            if not suffix:
                res["_r"] = r
        return res

    @torch.no_grad()
    def pretrain_loss() -> float | None:
        if ptx_eval is None:
            return None
        m = accelerator.unwrap_model(trainer.policy)
        losses = [
            m(input_ids=x, labels=x, use_cache=False).loss.item() * x.shape[0] for x in ptx_eval.to(device).split(16)
        ]
        return sum(losses) / ptx_eval.shape[0]

    # ---- resume, or measure the starting point
    start = 0
    if resuming:
        state = trainer.load_optimizer_state(ckpt_dir)
        start, initial = state["step"], state["initial"]
        if is_main:
            print(f"resumed from {ckpt_dir} at iteration {start} (beta {trainer.kl_ctl.beta:.4g})")
    else:
        h = heldout("heldout")
        initial = {k: v for k, v in h.items() if not k.startswith("_")}
        initial["gold_scores"] = {s: h[f"_gold_scores{s}"] for s in ("", "_greedy") if f"_gold_scores{s}" in h}
        initial["pretrain_loss"] = pretrain_loss()
        initial["samples"] = _samples(eval_rows, h.get("_r"))
    logger = None
    if is_main:
        if not resuming and (out / "metrics.jsonl").exists():
            (out / "metrics.jsonl").unlink()  # a fresh start (also --resume without a checkpoint) starts a fresh log
        logger = MetricsLogger(out, cfg.tensorboard, truncate_after_step=start if resuming else None)
        if not resuming:
            logger.log(0, **{k: v for k, v in initial.items() if k not in ("samples", "gold_scores")})

    # ---- the loop
    bar = tqdm(
        range(start, cfg.iterations),
        initial=start,
        total=cfg.iterations,
        desc="ppo" if cfg.ptx_coef == 0 else "ppo-ptx",
        disable=not is_main,
        dynamic_ncols=True,
    )
    stats: dict[str, Any] = {}
    for it in bar:
        idx = block_indices(it, cfg.batch_size, len(prompt_ids), cfg.seed)
        idx = rank_share(idx.tolist(), accelerator)  # this rank's share of the global batch
        stats = trainer.iteration(
            it, [prompt_ids[i] for i in idx], judge if "meta" in rows[0] else None, [rows[i] for i in idx]
        )
        done = it + 1
        metrics = {k: v for k, v in stats.items() if not k.startswith("_")}
        for k, v in metrics.items():
            if isinstance(v, float) and not math.isfinite(v):
                raise FloatingPointError(f"ppo: {k} became {v} at iteration {done}; lower lr (now {cfg.lr})")
        if cfg.eval_interval and done % cfg.eval_interval == 0 and done < cfg.iterations:
            metrics.update({k: v for k, v in heldout("heldout").items() if not k.startswith("_")})
        if is_main:
            if done % cfg.log_interval == 0 or done == cfg.iterations:
                logger.log(done, **metrics)
            post = {
                "rm": f"{metrics['rm_score_mean']:.2f}",
                "kl": f"{metrics['kl']:.2f}",
                "beta": f"{metrics['beta']:.3g}",
            }
            if "gold_mean" in metrics:
                post["gold"] = f"{metrics['gold_mean']:.3f}"
            bar.set_postfix(post)
        if cfg.checkpoint_interval and done % cfg.checkpoint_interval == 0 and done < cfg.iterations:
            accelerator.wait_for_everyone()
            if is_main:
                trainer.save_checkpoint(ckpt_dir, done, {"initial": initial})
    bar.close()

    # ---- held-out after, save, summary
    final = heldout("heldout")
    final_pt = pretrain_loss()
    summary: dict[str, Any] = {}
    if is_main:
        unwrapped = accelerator.unwrap_model(trainer.policy)
        tmp = out / ".final.tmp"
        if tmp.exists():
            shutil.rmtree(tmp)
        save_model(unwrapped, tmp, cfg.lora, tok)  # full weights, the LoRA adapter, or the merged model
        save_model(accelerator.unwrap_model(trainer.value).model, tmp / "value_model", cfg.lora)
        if (out / "value_model").exists():
            shutil.rmtree(out / "value_model")
        clear_model_files(out)  # a full model and an adapter must not sit side by side
        for f in tmp.iterdir():
            f.replace(out / f.name)
        tmp.rmdir()
        atomic_write_json(
            out / "samples.json", {"before": initial.get("samples"), "after": _samples(eval_rows, final.get("_r"))}
        )
        history = [m for m in read_metrics(out) if "kl" in m]  # whole run, including before a resume
        summary = _summary(
            cfg, initial, final, final_pt, history, trainer, start, time.time() - t_start, max_prompt_len
        )
        _print_summary(summary)
        write_model_card(out, "ppo" if cfg.ptx_coef == 0 else "ppo-ptx", summary, extra=_CARD)
        logger.log(cfg.iterations, **{k: v for k, v in final.items() if not k.startswith("_")}, pretrain_loss=final_pt)
        logger.close()
    accelerator.wait_for_everyone()
    return summary


def _samples(rows, r, n: int = 8) -> list[dict[str, Any]] | None:
    if rows is None or r is None:
        return None
    out = []
    for i in range(min(n, len(rows))):
        s = {"prompt": rows[i].get("prompt"), "response": r["texts"][i]}
        if "rm_scores" in r:
            s["rm_score"] = round(r["rm_scores"][i], 4)
        if "gold_scores" in r:
            s["gold"] = round(r["gold_scores"][i], 4)
        out.append(s)
    return out


def _mean(history: list[dict], key: str, last: bool, n: int = 5) -> float | None:
    vals = [h[key] for h in (history[-n:] if last else history[:n]) if key in h]
    return round(statistics.fmean(vals), 4) if vals else None


def _summary(cfg, initial, final, final_pt, history, trainer, start, seconds, max_prompt_len) -> dict[str, Any]:
    s: dict[str, Any] = {
        "iterations": cfg.iterations,
        "episodes": cfg.iterations * cfg.batch_size,
        "ptx_coef": cfg.ptx_coef,
        "resumed_from_iteration": start or None,
    }
    for key in ("rm_score", "gold", "eos_frac", "response_len", "rm_score_greedy", "gold_greedy"):
        a, b = initial.get(f"heldout_{key}"), final.get(f"heldout_{key}")
        if a is not None and b is not None:
            s[f"heldout_{key}_initial"], s[f"heldout_{key}_final"] = round(a, 4), round(b, 4)
    s["heldout_sampling"] = (
        (
            "greedy"
            if cfg.eval_temperature == 0
            else f"temperature {cfg.eval_temperature}, fixed seed {cfg.seed + 12345}"
        )
        + f", first {cfg.eval_prompts} rows of {cfg.eval_data or (cfg.world_dir + '/test' if cfg.world_dir else '-')}"
        + ("; *_greedy: greedy decoding" if cfg.eval_greedy else "")
    )
    if history:
        s["train_rm_score_first5"], s["train_rm_score_last5"] = (
            _mean(history, "rm_score_mean", False),
            _mean(history, "rm_score_mean", True),
        )
        if "gold_mean" in history[0]:
            s["train_gold_first5"], s["train_gold_last5"] = (
                _mean(history, "gold_mean", False),
                _mean(history, "gold_mean", True),
            )
        s["final_kl"] = _mean(history, "kl", True)
        s["final_entropy"] = _mean(history, "entropy", True)
        for part in ("t_rollout", "t_score", "t_update"):
            s[f"seconds_per_iteration_{part[2:]}"] = round(statistics.fmean(h[part] for h in history), 3)
    s["final_beta"] = round(trainer.kl_ctl.beta, 6)
    s["kl_adaptive"] = cfg.kl.adaptive
    if cfg.kl.adaptive:
        s["kl_target"] = cfg.kl.target
    if initial.get("pretrain_loss") is not None and final_pt is not None:
        s["pretrain_loss_initial"], s["pretrain_loss_final"] = round(initial["pretrain_loss"], 4), round(final_pt, 4)
    if "heldout_rm_score_initial" in s and "heldout_gold_initial" in s:
        m = cfg.hack_margin
        hacked = []
        for suffix in ("", "_greedy"):
            if f"heldout_gold{suffix}_initial" in s:
                d_rm = s[f"heldout_rm_score{suffix}_final"] - s[f"heldout_rm_score{suffix}_initial"]
                d_gold = s[f"heldout_gold{suffix}_final"] - s[f"heldout_gold{suffix}_initial"]
                hacked.append(d_rm > m and d_gold < -m)
        s["reward_hacking_detected"] = any(hacked)
        for suffix, before in (initial.get("gold_scores") or {}).items():
            if f"_gold_scores{suffix}" in final:
                s[f"heldout_gold{suffix}_delta_ci95"] = paired_delta_ci(before, final[f"_gold_scores{suffix}"])
        s["hack_rule"] = f"held-out RM score up by > {m} and gold down by > {m} (sampled or greedy decoding)"
    s["max_prompt_len"] = max_prompt_len
    s["seconds"] = round(seconds, 1)
    return s


def _print_summary(s: dict[str, Any]) -> None:
    parts = [f"ppo: {s['iterations']} iterations in {s['seconds']}s"]
    if "heldout_rm_score_initial" in s:
        parts.append(f"held-out RM {s['heldout_rm_score_initial']:.3f} -> {s['heldout_rm_score_final']:.3f}")
    if "heldout_gold_initial" in s:
        parts.append(f"gold {s['heldout_gold_initial']:.3f} -> {s['heldout_gold_final']:.3f}")
    if s.get("final_kl") is not None:
        parts.append(f"KL {s['final_kl']:.2f} (beta {s['final_beta']:.4g})")
    if "pretrain_loss_initial" in s:
        parts.append(f"pretrain loss {s['pretrain_loss_initial']:.3f} -> {s['pretrain_loss_final']:.3f}")
    print("; ".join(parts))
    if s.get("reward_hacking_detected"):
        print("  REWARD HACKING: the proxy reward rose while the gold reward fell (raise kl.beta or stop earlier)")


_CARD = """## Method
PPO against a frozen reward model with a per-token KL penalty to the SFT policy (InstructGPT).
The value model (`value_model/`) is a copy of the reward model whose scalar head is applied at
every token; load it with `AutoModelForSequenceClassification`. Held-out numbers compare the
SFT policy (before) and this policy (after) on the same prompts with the same sampling seed."""
