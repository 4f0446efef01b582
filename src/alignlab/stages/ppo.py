"""Stage: PPO and PPO-ptx against a reward model, with a KL leash to the SFT policy (InstructGPT step 3).

Read top to bottom: config; the trainer (one iteration = rollout -> scoring -> PPO epochs);
the stage's run(): load, resume, loop, held-out evaluation, save. Loading and inputs live in
``ppo_setup.py``, the held-out evaluation in ``ppo_eval.py``, checkpoints in ``ppo_checkpoint.py``,
the summary and model card in ``ppo_summary.py``.

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
               numbers), unless ``rollout.pack_sequences`` is off or the model fails the packing
               check (run once, when the trainer is built).
  3. update    ``ppo_epochs`` passes over shuffled minibatches: clipped policy loss +
               vf_coef * clipped value loss, backward; then (PPO-ptx) ptx.coef * LM loss on
               a batch of packed pretraining text, backward into the same gradients
               ("accumulated in consecutive steps", InstructGPT); clip; step.

Optimisers: policy and value model are separate networks with SEPARATE AdamW optimisers
(``optim.lr``, ``value_lr``) and separately clipped gradients; one backward of
pg_loss + vf_coef * vf_loss feeds both. (With Adam, vf_coef mostly matters through the
value model's gradient clipping, since Adam is invariant to the loss scale.)
Dropout is off in all four models. The reference policy and the RM are frozen.

Value model: a copy of the RM whose scalar head is applied at every token
(``models/value_model.py``): before training, V(s_t) = RM score of prompt + response[:t].

The config's sections, its renamed keys and the presets are in ``ppo_config.py``; PPO-ptx
(``ptx.coef`` > 0) is described at ``PtxSettings`` there.

Advantage modes (``advantage``; the ``rloo`` and ``grpo`` presets): RLOO and GRPO are this stage with the
value model replaced by the other samples of the same prompt. They share the rollout, the scoring (log-probs,
the RM, the missing-EOS penalty, the KL) and the clipped policy loss; what changes, and where:
  1. rollout   each prompt is sampled ``group_size`` times in a row (``_grouped``): B prompts, B x k episodes.
  2. scoring   no value model: the per-token rewards are summed into one sequence reward per response
               (score - beta x KL for rloo; the score alone for grpo, whose KL is a loss term), and
               ``rl/group_advantages.py`` turns each group's rewards into advantages, put on every token of
               the response; the batch's mean within-group reward std is logged as ``group_reward_std``.
  3. update    the clipped policy loss alone (``_group_backward``), + beta x the k3 KL for grpo; one
               optimiser, no value model saved (no ``value_model/`` in the output or the checkpoint).
The default, ``gae``, is the PPO described above, number for number.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from alignlab import fsdp, training
from alignlab.config import arg
from alignlab.data.heldout import DEFAULT_EVAL_FRACTION
from alignlab.data.packing import block_indices
from alignlab.distributed import make_accelerator, masked_whiten_across, rank_share, reduce_means, token_share
from alignlab.faults import fault_point
from alignlab.models.load import disable_dropout
from alignlab.models.lora import LoraSettings, reference_model
from alignlab.models.value_model import ValueModel, response_values, rm_scores
from alignlab.outputs import read_metrics
from alignlab.rl.gae import compute_gae
from alignlab.rl.group_advantages import group_reward_std, grpo_advantages, rloo_advantages, token_advantages
from alignlab.rl.kl import AdaptiveKLController, FixedKLController, kl_k1, kl_k3, kl_k3_loss, per_token_kl_rewards
from alignlab.rl.ppo_loss import explained_variance, masked_mean, masked_var, ppo_policy_loss, ppo_value_loss
from alignlab.rl.rollout_batch import Experience
from alignlab.rollout.layout import Rollout, with_eos
from alignlab.rollout.packed import pack_sequences, packed_last_values, packed_logprobs, packed_values
from alignlab.rollout.scoring import sequence_logprobs
from alignlab.sections import ModelSource, OptimSettings, RunSettings
from alignlab.seeds import derived_seed
from alignlab.stages import ppo_checkpoint, ppo_setup, ppo_summary
from alignlab.stages.ppo_config import PRESETS as PRESETS  # the registry reads ppo.PRESETS
from alignlab.stages.ppo_config import (
    RENAMED,
    EvalSettings,
    KLConfig,
    PtxSettings,
    RolloutSettings,
    kl_in_loss,
    method_name,
)
from alignlab.stages.ppo_eval import HeldoutEval


@dataclass
class PPOConfig:
    RENAMED: ClassVar[dict[str, str]] = RENAMED  # old flat key -> its place now

    policy: str = arg("runs/sft", "SFT model (hub id or path): initial policy and frozen KL reference")
    reward_model: str = arg(
        "runs/reward", "reward model (*ForSequenceClassification, num_labels=1; reward_shift in its config)"
    )
    value_model: str = arg("", "initial value model (a reward-model folder); empty = a copy of reward_model")
    data: str = arg("runs/world/ppo", "prompts: saved datasets folder, .jsonl/.parquet or hub id (no labels needed)")
    split: str = arg("train", "split of `data`")
    eval_fraction: float = arg(
        DEFAULT_EVAL_FRACTION,
        "share of the distinct prompts of `data` held out for the held-out evaluation when neither eval.data nor "
        "world_dir gives held-out prompts and `data` has no eval.split split (a single .jsonl file): never trained "
        "on, chosen by prompt hash; the same share of ptx.data's documents when it has no validation split; 0 = none",
    )
    prompt_column: str = arg("prompt", "column with the prompt (text or messages); else a `messages` column's context")
    world_dir: str = arg("runs/world", "built-in world folder for GOLD rewards (reward-hacking check); empty = off")
    iterations: int = arg(24, "PPO iterations (rollout + update)")
    batch_size: int = arg(64, "prompts per iteration, global (episodes: batch_size x group_size)")
    minibatch_size: int = arg(16, "episodes per optimiser step (global, across processes)")
    ppo_epochs: int = arg(4, "passes over each rollout batch")
    value_lr: float = arg(1e-4, "value-model learning rate (its own AdamW; the policy's is optim.lr)")
    lr_schedule: Literal["constant", "linear"] = arg(
        "constant", "after warmup: constant (InstructGPT) or linear decay to optim.min_lr_ratio x lr (reference: to 0)"
    )
    clip: float = arg(0.2, "PPO policy ratio clip")
    vf_clip: float = arg(0.2, "value clip around the rollout values")
    vf_coef: float = arg(0.1, "value-loss coefficient")
    gamma: float = arg(1.0, "discount (InstructGPT: no discount)")
    lam: float = arg(0.95, "GAE lambda")
    whiten_advantages: bool = arg(
        True, "normalise advantages per batch (mean 0, std 1); every mode (the rloo and grpo presets turn it off)"
    )
    advantage: Literal["gae", "rloo", "grpo"] = arg(
        "gae",
        "the baseline the advantages are measured against: gae = a value model and GAE per token (PPO, "
        "InstructGPT); rloo = the mean reward of the prompt's other group_size-1 samples, with the KL to the "
        "reference in the sequence reward (Ahmadian et al. 2024); grpo = (reward - group mean) / (group std + "
        "grpo_eps), with the KL as a k3 loss term (Shao et al. 2024). rloo and grpo load, train and save no value "
        "model (value_model, value_lr, vf_* and lam do nothing there); see the `rloo` and `grpo` presets",
    )
    group_size: int = arg(
        1,
        "responses sampled per prompt: a batch of batch_size prompts gives batch_size x group_size episodes "
        "(minibatch_size counts episodes); 1 for gae, >= 2 for rloo and grpo (the group is their baseline)",
    )
    grpo_eps: float = arg(1e-4, "grpo: added to the group's std, so a group whose rewards are all equal gets 0")
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
    hack_margin: float = arg(
        0.02, "reward hacking = held-out RM score up AND gold down (sampled or greedy), each by more than this"
    )
    kl: KLConfig = arg(factory=KLConfig, help="KL penalty to the SFT policy")
    rollout: RolloutSettings = arg(factory=RolloutSettings, help="sampling the episodes and scoring them")
    ptx: PtxSettings = arg(factory=PtxSettings, help="PPO-ptx: pretraining gradients mixed into each step")
    eval: EvalSettings = arg(factory=EvalSettings, help="held-out prompts sampled before, after (and during)")
    run: RunSettings = arg(
        factory=lambda: RunSettings(log_interval=1, checkpoint_interval=20),
        help=RunSettings.HELP + " (PPO's steps are iterations)",
    )
    source: ModelSource = arg(factory=ModelSource, help=ModelSource.HELP + " (the policy's)")
    optim: OptimSettings = arg(
        factory=lambda: OptimSettings(lr=4e-5, warmup_steps=2, min_lr_ratio=0.0, eps=1e-5),
        help=OptimSettings.HELP + " of the policy (the value model's: value_lr, the rest shared); PPO's "
        "warmup_steps count ITERATIONS; eps 1e-5 (the reference's TF Adam behaves like a larger eps early on)",
    )
    lora: LoraSettings = arg(
        factory=LoraSettings,
        help="LoRA adapters (--lora.r 8) on the policy and the value model; the reference is the policy with "
        "its adapter off; r=0 trains all weights",
    )
    output_dir: str = arg("runs/ppo", "where the policy, value model, metrics and checkpoints go")


# ----------------------------------------------------------------------------- the trainer


@dataclass
class IterationResult:
    stats: dict[str, float]  # the iteration's numbers for the global batch (what run() logs)
    experience: Experience  # this rank's scored episodes
    rollout: Rollout  # ... and the rollout they came from


class PPOTrainer:
    """Owns the four models and the two optimisers (rloo, grpo: three models, the policy's optimiser);
    ``iteration(it)`` does one rollout + update.

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
        value_model: ValueModel | None,
        tokenizer,
        accelerator: Accelerator,
        ptx_blocks: torch.Tensor | None = None,
        reward_fn: Callable[[Rollout, list | None], torch.Tensor] | None = None,
        sharded: bool = False,
    ):
        has_reward = reward_model is not None or reward_fn is not None
        value_model = value_model if ppo_setup.uses_value_model(cfg) else None  # rloo, grpo: the group is the baseline
        ppo_setup.check_shapes(cfg, accelerator.num_processes, has_reward, ptx_blocks, value_model is not None)
        self.cfg, self.tok, self.acc = cfg, tokenizer, accelerator
        self.ref, self.rm, self.reward_fn = ref_policy, reward_model, reward_fn
        for m in (policy, ref_policy, value_model, reward_model):
            if m is not None:
                disable_dropout(m)
        for m in (ref_policy, reward_model):
            if m is not None:
                m.eval().requires_grad_(False)
        self.ptx_blocks = ptx_blocks if cfg.ptx.coef > 0 else None
        local_batch = cfg.batch_size * cfg.group_size // accelerator.num_processes  # episodes
        self.local_minibatch = cfg.minibatch_size // accelerator.num_processes  # one local minibatch per rank
        self.updates_per_iteration = cfg.ppo_epochs * math.ceil(local_batch / self.local_minibatch)
        self.sharded = sharded
        if sharded:  # the trained models, before their optimisers; the frozen reference and RM stay whole
            for name, m in (("policy", policy), ("value", value_model)):
                if m is not None:
                    fsdp.shard(m, accelerator.device)
                    fsdp.write_shard_report(m, name)
        o = cfg.optim
        self.opt_policy = training.make_optimizer(policy, o.lr, o.weight_decay, (o.beta1, o.beta2), o.eps)
        self.sched_policy = ppo_setup.lr_schedule(self.opt_policy, cfg, self.updates_per_iteration)
        k = cfg.kl
        self.kl_ctl = AdaptiveKLController(k.beta, k.target, k.horizon) if k.adaptive else FixedKLController(k.beta)
        if value_model is None:
            self.value, self.opt_value, self.sched_value = None, None, None
            self.policy = policy
            if not sharded:
                self.policy, self.opt_policy = accelerator.prepare(policy, self.opt_policy)
        else:
            self.opt_value = training.make_optimizer(
                value_model, cfg.value_lr, o.weight_decay, (o.beta1, o.beta2), o.eps
            )
            self.sched_value = ppo_setup.lr_schedule(self.opt_value, cfg, self.updates_per_iteration)
            self.policy, self.value = policy, value_model
            if not sharded:
                self.policy, self.value, self.opt_policy, self.opt_value = accelerator.prepare(
                    policy, value_model, self.opt_policy, self.opt_value
                )
        for m in (self.ref, self.rm):
            if m is not None:
                m.to(accelerator.device)
        self.backend = ppo_setup.rollout_backend(cfg, accelerator.unwrap_model(self.policy), tokenizer)
        # the row width of a packed batch trades dense work against attention work
        pc = accelerator.unwrap_model(self.policy).config
        self._pack_hidden = int(getattr(pc, "hidden_size", None) or getattr(pc, "n_embd", None) or 256)
        self.pack = cfg.rollout.pack_sequences and ppo_setup.packing_works(self)
        self.guard = training.NonFiniteGuard(
            method_name(cfg), Path(cfg.output_dir) / "checkpoint", cfg.run.skip_nonfinite
        )

    def optimizers(self) -> list[tuple[torch.optim.Optimizer, Any]]:
        """(optimiser, schedule) of each trained model: the policy's, and the value model's (gae only)."""
        pairs = [(self.opt_policy, self.sched_policy)]
        return pairs if self.opt_value is None else [*pairs, (self.opt_value, self.sched_value)]

    # -- 1. rollout
    def rollout(self, prompt_ids: list[list[int]], iteration: int) -> Rollout:
        c = self.cfg
        return self.backend.generate(
            prompt_ids,
            max_new_tokens=c.rollout.max_new_tokens,
            temperature=c.rollout.temperature,
            seed=derived_seed(c.run.seed, iteration * 7919 + self.acc.process_index),
        )

    # -- 2. scoring: everything about the episodes that needs no gradient, computed once
    @torch.no_grad()
    def score(self, ro: Rollout, records: list | None = None) -> tuple[Experience, dict[str, float]]:
        c, T = self.cfg, self.cfg.rollout.temperature
        ids, attn, Tq, mask = ro.input_ids, ro.attention_mask, ro.response_start, ro.response_mask
        policy = self.acc.unwrap_model(self.policy)
        if self.pack:  # same numbers as the padded branch, without computing on padding
            packed = pack_sequences(ids, attn, Tq, self._pack_hidden)
            pol = packed_logprobs(self.policy, packed, T, return_entropy=True)
            with reference_model(policy, self.ref) as ref_model:  # LoRA: the policy with its adapter off
                ref = packed_logprobs(ref_model, packed, T)
        else:
            pol = sequence_logprobs(self.policy, ids, attn, Tq, T, return_entropy=True)
            with reference_model(policy, self.ref) as ref_model:
                ref = sequence_logprobs(ref_model, ids, attn, Tq, T)
        raw = self._raw_scores(ro, records)
        penalty = torch.full_like(raw, c.no_eos_penalty)
        scores = torch.where(ro.ended_with_eos, raw, penalty if c.no_eos_mode == "replace" else raw + penalty)
        values = None
        if self.value is not None:
            values = (
                packed_values(self.value, packed)
                if self.pack
                else response_values(self.value(ids, attn), Tq, mask.shape[1])
            ) * mask
        beta = self.kl_ctl.beta
        beta_reward = 0.0 if kl_in_loss(c) else beta  # grpo pays its KL in the loss (_group_backward)
        rewards = per_token_kl_rewards(pol.logprobs, ref.logprobs, scores, mask, beta_reward)
        if values is not None:
            advantages, returns = compute_gae(rewards, values, mask, c.gamma, c.lam)
        else:  # one number per response, from its group, on every token; no value targets
            advantages, returns = token_advantages(self._group_advantages(rewards.sum(-1)), mask), None
        if c.whiten_advantages:
            advantages = masked_whiten_across(self.acc, advantages, mask)  # statistics of the global batch
        exp = Experience(
            ids, attn, Tq, mask, pol.logprobs * mask, ref.logprobs * mask, values, scores, rewards, advantages, returns
        )
        stats = {
            "rm_score_mean": raw.mean().item(),
            "rm_score_std": raw.std(unbiased=False).item(),
            "reward_mean": scores.mean().item(),
            "kl": kl_k1(pol.logprobs, ref.logprobs, mask).item(),
            "kl_k3": kl_k3(pol.logprobs, ref.logprobs, mask).item(),
            "beta": beta,
            "kl_reward_mean": (-beta_reward * (pol.logprobs - ref.logprobs) * mask).sum(-1).mean().item(),
            "entropy": masked_mean(pol.entropy, mask).item(),
            "response_len": mask.sum(-1).float().mean().item(),
            "eos_frac": ro.ended_with_eos.float().mean().item(),
        }
        if values is not None:
            stats["value_mean"] = masked_mean(values, mask).item()
            stats["return_mean"] = masked_mean(returns, mask).item()
            stats["explained_var"] = explained_variance(values, returns, mask).item()
            stats["return_var"] = masked_var(returns, mask, unbiased=False).item()
        else:  # how much the samples of one prompt differ: 0 = no signal in this batch
            stats["group_reward_std"] = group_reward_std(rewards.sum(-1), c.group_size).item()
        return exp, stats

    def _group_advantages(self, seq_rewards: torch.Tensor) -> torch.Tensor:
        """[B*k] sequence rewards, grouped by prompt -> [B*k] rloo or grpo advantages (``rl/group_advantages.py``)."""
        c = self.cfg
        if c.advantage == "rloo":
            return rloo_advantages(seq_rewards, c.group_size)
        return grpo_advantages(seq_rewards, c.group_size, c.grpo_eps)

    def _raw_scores(self, ro: Rollout, records: list | None) -> torch.Tensor:
        """[B] the reward function's or the RM's score of prompt + response (+ EOS where it was cut off)."""
        if self.reward_fn is not None:
            return self.reward_fn(ro, records).to(ro.input_ids.device).float()
        eos, pad = self.tok.eos_token_id, self.tok.pad_token_id
        rm_ids, rm_mask = with_eos(ro.input_ids, ro.attention_mask, ro.ended_with_eos, eos, pad)
        if self.pack:
            packed = pack_sequences(rm_ids, rm_mask, ro.response_start, self._pack_hidden)
            return packed_last_values(self.rm, packed).float()
        return rm_scores(self.rm, rm_ids, rm_mask).float()

    def _rewards_finite(self, scores: torch.Tensor, raw_mean: float, iteration: int) -> bool:
        """Whether the update may use these rewards. The raw reward counts too: a NaN score replaced by the
        missing-EOS penalty still says the reward model broke. Every rank checks all ranks' numbers, so
        every rank stops, or skips, together."""
        every = torch.cat([scores.float(), torch.tensor([raw_mean], device=scores.device)])
        every = self.acc.gather(every) if self.acc.num_processes > 1 else every
        return self.guard.ok(iteration + 1, reward=every)

    # -- 3. update: PPO epochs over minibatches (+ ptx gradients in the same optimiser step)
    def update(self, exp: Experience, iteration: int) -> list[dict[str, float]]:
        c = self.cfg
        self.policy.train()
        if self.value is not None:
            self.value.train()
        g = torch.Generator().manual_seed(derived_seed(c.run.seed, iteration))
        mb_stats = []
        for _ in range(c.ppo_epochs):
            perm = torch.randperm(exp.batch_size, generator=g).to(exp.input_ids.device)
            for start in range(0, exp.batch_size, self.local_minibatch):
                mb = exp.select(perm[start : start + self.local_minibatch])
                stats = self._ppo_backward(mb)
                if self.ptx_blocks is not None:  # PPO-ptx: pretraining gradient accumulated in a consecutive backward
                    stats["ptx_loss"] = self._ptx_backward(iteration * self.updates_per_iteration + len(mb_stats))
                self._step(stats, iteration)
                mb_stats.append(stats)
        # stats stay tensors until the end of the update: one device sync per iteration, not ~8 per minibatch
        keys = list(mb_stats[0])
        device = exp.input_ids.device
        rows = torch.stack(
            [torch.stack([torch.as_tensor(s[k], dtype=torch.float32, device=device) for k in keys]) for s in mb_stats]
        ).tolist()
        return [dict(zip(keys, row)) for row in rows]

    def _step(self, stats: dict[str, torch.Tensor], iteration: int) -> None:
        """Clip both gradients (grad_clip 0: measure their norms only), then step both optimisers and
        schedules, unless a loss or a norm is not finite: the guard then stops the run or skips the step."""
        clip = self.cfg.optim.grad_clip if self.cfg.optim.grad_clip > 0 else math.inf
        stats["grad_norm"] = self.acc.clip_grad_norm_(self.policy.parameters(), clip)
        if self.value is not None:
            stats["value_grad_norm"] = self.acc.clip_grad_norm_(self.value.parameters(), clip)
        checked = ("pg_loss", "vf_loss", "kl_loss", "ptx_loss", "grad_norm", "value_grad_norm")
        applied = self.guard.ok(iteration + 1, **{k: stats[k] for k in checked if k in stats})
        for opt, sched in self.optimizers():
            if applied:
                opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)

    def _ppo_backward(self, mb: Experience) -> dict[str, torch.Tensor]:
        c, T = self.cfg, self.cfg.rollout.temperature
        vpred = None
        if self.pack:
            packed = pack_sequences(mb.input_ids, mb.attention_mask, mb.response_start, self._pack_hidden)
            new = packed_logprobs(self.policy, packed, T)
            if self.value is not None:
                vpred = packed_values(self.value, packed)
        else:
            new = sequence_logprobs(self.policy, mb.input_ids, mb.attention_mask, mb.response_start, T)
            if self.value is not None:
                values_all = self.value(mb.input_ids, mb.attention_mask)
                vpred = response_values(values_all, mb.response_start, mb.response_mask.shape[1])
        pg_loss, pg = ppo_policy_loss(new.logprobs, mb.old_logprobs, mb.advantages, mb.response_mask, c.clip)
        if vpred is None:
            return self._group_backward(mb, new.logprobs, pg_loss, pg)
        vf_loss, vf = ppo_value_loss(vpred, mb.values, mb.returns, mb.response_mask, c.vf_clip)
        # both losses are token means: weigh this rank's tokens in the global minibatch's mean
        share = token_share(self.acc, mb.response_mask.sum())
        self.acc.backward((pg_loss + c.vf_coef * vf_loss) * share)
        return {"pg_loss": pg_loss.detach(), "vf_loss": vf_loss.detach(), **pg, **vf}

    def _group_backward(self, mb: Experience, logprobs: torch.Tensor, pg_loss, pg: dict) -> dict[str, torch.Tensor]:
        """rloo, grpo: the clipped policy loss alone (no value model), plus for grpo beta x the k3 KL to the
        reference, a token mean like the policy loss (the paper's placement: see ``ppo_config.py``)."""
        loss, stats = pg_loss, {"pg_loss": pg_loss.detach(), **pg}
        if kl_in_loss(self.cfg):
            kl_loss = kl_k3_loss(logprobs, mb.ref_logprobs, mb.response_mask)
            loss = loss + self.kl_ctl.beta * kl_loss
            stats["kl_loss"] = kl_loss.detach()
        self.acc.backward(loss * token_share(self.acc, mb.response_mask.sum()))
        return stats

    def _ptx_backward(self, step: int) -> torch.Tensor:
        """ptx.coef x the LM loss of this optimiser step's pretraining blocks, backpropagated."""
        c = self.cfg
        idx = rank_share(block_indices(step, c.ptx.batch_size, self.ptx_blocks.shape[0], c.run.seed).tolist(), self.acc)
        x = self.ptx_blocks[torch.tensor(idx)].to(self.acc.device)
        ptx_loss = self.policy(input_ids=x, labels=x, use_cache=False).loss
        self.acc.backward(c.ptx.coef * ptx_loss)
        return ptx_loss.detach()

    def iteration(self, iteration: int, prompt_ids: list[list[int]], judge=None, records=None) -> IterationResult:
        """One rollout + update on ``prompt_ids`` (this rank's prompts), each sampled group_size times."""
        t0 = time.time()
        prompt_ids, records = self._grouped(prompt_ids), None if records is None else self._grouped(records)
        ro = self.rollout(prompt_ids, iteration)
        t1 = time.time()
        exp, stats = self.score(ro, records)
        if judge is not None and records is not None:
            stats["gold_mean"] = statistics.fmean(judge.gold(records, ro.texts))
        t2 = time.time()
        if self._rewards_finite(exp.scores, stats["rm_score_mean"], iteration):
            mb = self.update(exp, iteration)
            self.backend.sync_weights(self.acc.unwrap_model(self.policy))  # the next rollout samples the new policy
        else:  # skipped: no update, the schedules still advance (as for a skipped minibatch)
            mb = [{}]
            for _ in range(self.updates_per_iteration):
                for _, sched in self.optimizers():
                    sched.step()
        t3 = time.time()
        for key in mb[0]:
            stats[key] = statistics.fmean(s[key] for s in mb)
        if "clipfrac" in mb[0]:
            stats["first_mb_clipfrac"], stats["first_mb_approx_kl"] = mb[0]["clipfrac"], mb[0]["approx_kl"]
        stats["lr"] = self.sched_policy.get_last_lr()[0]
        stats["t_rollout"], stats["t_score"], stats["t_update"] = t1 - t0, t2 - t1, t3 - t2
        stats["response_tokens_per_sec"] = ro.response_mask.sum().item() / max(t3 - t0, 1e-9)
        # every rank's numbers -> the global batch's (means over ranks; throughput summed), identical on all
        # ranks, so the adaptive KL controller moves beta the same way everywhere
        stats = reduce_means(self.acc, stats)
        stats["response_tokens_per_sec"] *= self.acc.num_processes
        self.kl_ctl.update(stats["kl"], exp.batch_size * self.acc.num_processes)  # the k1 estimate, as logged
        return IterationResult(stats, exp, ro)

    def _grouped(self, rows: list) -> list:
        """Each row group_size times in a row: a prompt's samples sit together, as the group advantages expect."""
        k = self.cfg.group_size
        return rows if k == 1 else [row for row in rows for _ in range(k)]


# ------------------------------------------------------------------------------- the stage


@training.with_run_threads
def run(cfg: PPOConfig, reward_fn: Callable[[Rollout, list | None], torch.Tensor] | None = None) -> dict:
    t_start = time.time()
    out = Path(cfg.output_dir)
    ckpt_dir = out / "checkpoint"
    accelerator = make_accelerator(training.resolve_device(cfg.run.device), "ppo")
    is_main = accelerator.is_main_process
    sharded = fsdp.requested(accelerator, cfg.run.fsdp)
    if sharded:
        fsdp.check_supported(accelerator, "ppo", cfg.lora.enabled)
        ppo_setup.check_sharded(cfg)
    ppo_setup.check_settings(cfg)
    torch.manual_seed(cfg.run.seed)
    folder = training.resumable(ckpt_dir, cfg.run.resume, is_main)  # the newest intact checkpoint, when resuming
    resuming = folder is not None
    # sharded, the checkpoint's weights are shards, restored with the optimisers (ppo_checkpoint.load_state)
    m = ppo_setup.load_models(cfg, None if sharded else folder, use_rm=reward_fn is None or bool(cfg.reward_model))
    inputs = ppo_setup.load_inputs(cfg, m.tokenizer, m.policy)
    if is_main:
        print(f"ppo: {inputs.heldout.line()}")
        if inputs.heldout_ptx is not None:
            print(f"ppo: pretraining text -- {inputs.heldout_ptx.line()}")
    reward_fn = ppo_setup.world_reward_fn(cfg, inputs, reward_fn)
    trainer = PPOTrainer(
        cfg, m.policy, m.ref, m.rm, m.value, m.tokenizer, accelerator, inputs.ptx_blocks, reward_fn, sharded
    )
    heldout = HeldoutEval(cfg, inputs, m.tokenizer, accelerator.device, ref=m.ref)
    policy = lambda: accelerator.unwrap_model(trainer.policy)  # noqa: E731

    # ---- resume, or measure the starting point
    start = 0
    if resuming:
        state = ppo_checkpoint.load_state(trainer, folder)
        start, initial = state["step"], state["initial"]
        if is_main:
            print(f"resumed from {folder} at iteration {start} (beta {trainer.kl_ctl.beta:.4g})")
    else:
        initial = heldout.initial_record(policy(), trainer.rm, out if is_main else None)
    logger = training.open_metrics(out, cfg.run.tensorboard, start if resuming else 0, is_main)
    if is_main and not resuming:
        logger.log(0, **{k: v for k, v in initial.items() if k not in ("samples", "gold_scores")})

    # ---- the loop
    name = method_name(cfg)
    bar = tqdm(range(start, cfg.iterations), initial=start, total=cfg.iterations, desc=name, disable=not is_main)
    judge = inputs.judge if "meta" in inputs.rows[0] else None
    for it in bar:
        idx = block_indices(it, cfg.batch_size, len(inputs.prompt_ids), cfg.run.seed)
        idx = rank_share(idx.tolist(), accelerator)  # this rank's share of the global batch
        result = trainer.iteration(it, [inputs.prompt_ids[i] for i in idx], judge, [inputs.rows[i] for i in idx])
        done, metrics = it + 1, dict(result.stats)
        if cfg.eval.interval and done % cfg.eval.interval == 0 and done < cfg.iterations:
            h = heldout(policy(), trainer.rm)
            metrics.update(h.metrics)
            if is_main:
                heldout.record_curve(out, done, h)
        if is_main:
            if done % cfg.run.log_interval == 0 or done == cfg.iterations:
                logger.log(done, **metrics)
            bar.set_postfix(ppo_summary.progress(metrics))
        if cfg.run.checkpoint_interval and done % cfg.run.checkpoint_interval == 0 and done < cfg.iterations:
            accelerator.wait_for_everyone()
            if is_main or sharded:  # sharded: every rank writes its shards
                ppo_checkpoint.save(trainer, ckpt_dir, done, {"initial": initial})
        fault_point("step")
    bar.close()

    # ---- held-out after, save, summary
    final, final_pt = heldout(policy(), trainer.rm), heldout.pretrain_loss(policy())
    summary: dict[str, Any] = {}
    gathered = ppo_checkpoint.gathered(trainer) if sharded else None  # collective: the models whole on rank 0
    if is_main:
        history = [h for h in read_metrics(out) if "kl" in h]  # whole run, including before a resume
        facts = dict(method=name, start=start, t_start=t_start, max_prompt_len=inputs.max_prompt_len, history=history)
        heldout.record_curve(out, cfg.iterations, final)
        summary = ppo_summary.finish(out, cfg, trainer, m.tokenizer, heldout, initial, final, final_pt, facts, gathered)
        logger.log(cfg.iterations, **final.metrics, pretrain_loss=final_pt)
        logger.close()
    accelerator.wait_for_everyone()
    return summary
