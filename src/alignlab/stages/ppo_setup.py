"""PPO's set-up: the settings checked before anything loads, the four models, the inputs (training prompts with
their records, the gold judge, held-out rows, pretraining blocks), the learning-rate schedule, and the check
that packed episodes score as padded ones do."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from alignlab.data.chat import encode_prompt_rows
from alignlab.data.heldout import HeldoutInfo, TrainEval, load_train_eval
from alignlab.data.packing import pack_documents
from alignlab.errors import ConfigError, ModelLoadError
from alignlab.evaluate.heldout_set import heldout_source, world_judge
from alignlab.models.load import check_model_path, context_length, load_causal_lm, load_tokenizer
from alignlab.models.lora import apply_lora, load_adapter_weights
from alignlab.models.reward_model import load_reward_model
from alignlab.models.value_model import ValueModel
from alignlab.rollout.backends import make_rollout_backend, vllm_unavailable_reason
from alignlab.rollout.layout import Rollout
from alignlab.rollout.packed import packing_matches_padding


def uses_value_model(cfg) -> bool:
    """Whether the run loads, trains and saves a value model: gae only (rloo and grpo baseline on the group)."""
    return cfg.advantage == "gae"


def check_settings(cfg) -> None:
    """Refuse settings PPO cannot run with, before any model is loaded."""
    episodes = cfg.batch_size * cfg.group_size
    if episodes % cfg.minibatch_size:
        what = f"batch_size ({cfg.batch_size})"
        if cfg.group_size != 1:
            what = f"batch_size x group_size ({cfg.batch_size} x {cfg.group_size} = {episodes} episodes)"
        raise ConfigError(f"{what} must be a multiple of minibatch_size ({cfg.minibatch_size})")
    if cfg.advantage == "gae" and cfg.group_size != 1:
        raise ConfigError(
            f"group_size {cfg.group_size} needs advantage rloo or grpo: gae samples one response per prompt"
        )
    if cfg.advantage != "gae" and cfg.group_size < 2:
        raise ConfigError(
            f"advantage '{cfg.advantage}' needs group_size >= 2 (its baseline is the other samples of the same "
            f"prompt), got {cfg.group_size}"
        )
    if cfg.rollout.temperature <= 0:
        raise ConfigError("temperature must be > 0: PPO needs sampled responses and their probabilities")
    if cfg.eval.draws < 1:
        raise ConfigError(f"eval.draws must be >= 1 (responses per held-out prompt), got {cfg.eval.draws}")
    if cfg.rollout.backend == "vllm" and vllm_unavailable_reason():
        raise ConfigError(f"rollout.backend='vllm': {vllm_unavailable_reason()}; use rollout.backend='transformers'")


def check_sharded(cfg) -> None:
    """Refuse what FSDP2 PPO cannot run: a vLLM engine would need the policy's weights gathered after
    every update (not implemented)."""
    if cfg.rollout.backend != "transformers":
        raise ConfigError(
            f"rollout.backend='{cfg.rollout.backend}' under FSDP2: its engine would need the sharded policy gathered "
            "after every update (not implemented); use rollout.backend='transformers'"
        )


def check_shapes(cfg, n_proc: int, has_reward: bool, ptx_blocks: torch.Tensor | None, has_value: bool = True) -> None:
    """Batch sizes are global: each must split evenly over the ``n_proc`` ranks. (Prompts are split, so each
    rank samples whole groups: rloo and grpo never need another rank's samples.)"""
    if not has_reward:
        raise ConfigError("PPO needs a reward model or a reward_fn")
    if uses_value_model(cfg) and not has_value:
        raise ConfigError("advantage 'gae' needs a value model (PPOTrainer's value_model is None)")
    if cfg.batch_size % n_proc or cfg.minibatch_size % n_proc:
        raise ConfigError(
            f"batch_size ({cfg.batch_size}) and minibatch_size ({cfg.minibatch_size}) must be "
            f"divisible by the number of processes ({n_proc}): both are global, split over the ranks"
        )
    if cfg.ptx.coef > 0 and ptx_blocks is None:
        raise ConfigError("ptx.coef > 0 needs pretraining blocks (set ptx.data)")
    if cfg.ptx.coef > 0 and cfg.ptx.batch_size % n_proc:
        raise ConfigError(
            f"ptx.batch_size ({cfg.ptx.batch_size}) must be divisible by the number of processes "
            f"({n_proc}): it is global, split over the ranks"
        )


@dataclass
class PPOModels:
    tokenizer: Any
    policy: Any  # the SFT model (its LoRA adapter on top with LoRA), trained
    ref: Any  # the frozen SFT model; None with LoRA (the policy with its adapter off)
    rm: ValueModel | None  # the frozen reward model; None when a reward_fn replaces it
    value: ValueModel | None  # a copy of the RM (or value_model), trained; None for rloo and grpo


def load_models(cfg, ckpt_dir: Path | None, use_rm: bool) -> PPOModels:
    """The four models (three for rloo and grpo: no value model); ``ckpt_dir`` (a resume) supplies the trained
    policy and value model.

    LoRA: adapters on the policy and the value model; the reference is the policy with its adapter
    off (no second copy); a checkpoint holds the adapters, loaded onto the same bases. The load order
    is fixed: a LoRA adapter's initialisation draws from the torch RNG."""
    trust, lora = cfg.source.trust_remote_code, cfg.lora.enabled
    check_model_path(cfg.policy)  # a missing policy is named as such, not as its tokenizer
    tok = load_tokenizer(cfg.source.tokenizer or cfg.policy, trust, "tokenizer" if cfg.source.tokenizer else "policy")
    policy = load_causal_lm(str(ckpt_dir / "policy") if ckpt_dir and not lora else cfg.policy, trust)
    policy = apply_lora(policy, cfg.lora, "CAUSAL_LM")
    ref = None if lora else load_causal_lm(cfg.policy, trust)
    rm = ValueModel(load_reward_model(cfg.reward_model, trust)) if use_rm else None
    value = _value_model(cfg, ckpt_dir) if uses_value_model(cfg) else None  # rloo, grpo: none at all
    if ckpt_dir and lora:
        load_adapter_weights(policy, ckpt_dir / "policy")
        if value is not None:
            load_adapter_weights(value.model, ckpt_dir / "value_model")
    n_embed = policy.get_input_embeddings().num_embeddings
    if len(tok) > n_embed:
        raise ModelLoadError(f"tokenizer has {len(tok)} tokens but the policy's embedding only {n_embed}")
    return PPOModels(tok, policy, ref, rm, value)


def _value_model(cfg, ckpt_dir: Path | None) -> ValueModel:
    """The value model: the checkpoint's (a resume), else value_model, else a copy of the reward model."""
    lora = cfg.lora.enabled
    value_src = str(ckpt_dir / "value_model") if ckpt_dir and not lora else (cfg.value_model or cfg.reward_model)
    value = ValueModel(load_reward_model(value_src, cfg.source.trust_remote_code))
    value.model = apply_lora(value.model, cfg.lora, "SEQ_CLS")
    return value


@dataclass
class PPOInputs:
    rows: list[dict[str, Any]]  # the training prompts' records (prompt, and on the world task/meta for gold)
    prompt_ids: list[list[int]]  # ... encoded, cut to max_prompt_len
    max_prompt_len: int  # rollout.max_prompt_len, capped so prompt + response fit the context
    judge: Any  # WorldJudge for gold rewards, or None (no world_dir)
    eval_rows: list[dict[str, Any]] | None  # the fixed held-out prompts, or None
    ptx_blocks: torch.Tensor | None  # [N, seq] packed pretraining text for PPO-ptx
    ptx_eval: torch.Tensor | None  # [n, seq] held-out blocks for the pretraining loss before/after
    heldout: HeldoutInfo  # where eval_rows came from (summary.json's heldout)
    heldout_ptx: HeldoutInfo | None  # where ptx_eval came from (summary.json's heldout_ptx); None without ptx.data


def load_inputs(cfg, tok, policy) -> PPOInputs:
    ctx = context_length(policy)
    max_prompt_len = min(cfg.rollout.max_prompt_len, ctx - cfg.rollout.max_new_tokens - 1)
    if max_prompt_len < 8:
        raise ConfigError(
            f"max_new_tokens ({cfg.rollout.max_new_tokens}) leaves no room for a prompt in the {ctx}-token context"
        )
    prompts = prompt_split(cfg)
    rows = _rows(prompts.train)
    prompt_ids = encode_prompt_rows(tok, rows, cfg.prompt_column, max_prompt_len)
    judge = world_judge(cfg.world_dir)
    eval_rows = _rows(prompts.eval)[: cfg.eval.prompts] if prompts.eval is not None else None
    ptx_blocks, ptx_eval, ptx_info = _pretraining_blocks(cfg, tok, ctx)
    return PPOInputs(rows, prompt_ids, max_prompt_len, judge, eval_rows, ptx_blocks, ptx_eval, prompts.info, ptx_info)


def prompt_split(cfg) -> TrainEval:
    """The training prompts and the held-out ones (``data/heldout.py``): eval.data, else the world's test
    prompts, else -- so that PPO never trains on the prompts it is judged on -- ``data``'s eval.split, or
    eval_fraction of its prompts. eval.prompts 0: nothing held out, every prompt trained on."""
    if cfg.eval.prompts == 0:
        none = load_train_eval(cfg.data, cfg.split, "", column=cfg.prompt_column, column_key="prompt_column")
        return TrainEval(none.train, None, none.info.unused("eval.prompts is 0"))
    eval_data = heldout_source(cfg.eval.data, cfg.world_dir)
    return load_train_eval(
        cfg.data,
        cfg.split,
        cfg.eval.split,
        cfg.eval_fraction,
        eval_data=eval_data,
        column=cfg.prompt_column,
        column_key="prompt_column",
    )


def _rows(ds) -> list[dict[str, Any]]:
    return [ds[i] for i in range(len(ds))]


def _pretraining_blocks(cfg, tok, ctx: int) -> tuple[torch.Tensor | None, torch.Tensor | None, HeldoutInfo | None]:
    """(blocks PPO-ptx trains on, held-out blocks for the pretraining loss, where those came from), packed from
    ptx.data: its validation split, else eval_fraction of its documents (never the ones PPO-ptx trains on)."""
    if not cfg.ptx.data or not (cfg.ptx.coef > 0 or Path(cfg.ptx.data).exists()):
        return None, None, None
    seq = min(cfg.ptx.seq_len, ctx)
    text = load_train_eval(
        cfg.ptx.data,
        "train",
        "validation",
        cfg.eval_fraction,
        column=cfg.ptx.text_column,
        text=True,
        column_key="ptx.text_column",
    )
    blocks = pack_documents(list(text.train[cfg.ptx.text_column]), tok, seq) if cfg.ptx.coef > 0 else None
    if text.eval is None:  # no held-out text: the pretraining loss before/after is not measured
        return blocks, None, text.info
    val = pack_documents(list(text.eval[cfg.ptx.text_column][:2000]), tok, seq)[: cfg.ptx.eval_blocks]
    return blocks, val, text.info


def world_reward_fn(cfg, inputs: PPOInputs, reward_fn: Callable | None) -> Callable | None:
    """``reward_source: world``: the world's labelers score each episode (a perfect reward model)."""
    if cfg.reward_source != "world":
        return reward_fn
    if reward_fn is not None:
        raise ConfigError("reward_source='world' and a reward_fn were both given; pass one")
    judge = inputs.judge
    if judge is None or "meta" not in inputs.rows[0]:
        raise ConfigError(
            f"reward_source='world' needs world_dir and prompts from the world's data (rows with "
            f"`meta`); data={cfg.data!r} world_dir={cfg.world_dir!r}"
        )

    def gold(ro: Rollout, records: list | None) -> torch.Tensor:
        return torch.tensor(judge.gold(records, ro.texts))

    return gold


def lr_schedule(opt, cfg, updates_per_iteration: int):
    """Warmup over ``optim.warmup_steps`` iterations, then constant, or linear decay to optim.min_lr_ratio x lr."""
    warmup = cfg.optim.warmup_steps * updates_per_iteration
    total = cfg.iterations * updates_per_iteration
    floor = cfg.optim.min_lr_ratio
    if cfg.lr_schedule == "constant":
        return get_constant_schedule_with_warmup(opt, warmup)
    if floor == 0:  # transformers' own schedule, to the last bit
        return get_linear_schedule_with_warmup(opt, warmup, total)

    def factor(step: int) -> float:
        if step < warmup:
            return step / max(1, warmup)
        return floor + (1 - floor) * max(0.0, (total - step) / max(1, total - warmup))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def rollout_backend(cfg, policy, tokenizer):
    """What samples the episodes: ``rollout.backend`` on ``policy`` (``rollout/backends.py``)."""
    return make_rollout_backend(
        cfg.rollout.backend,
        policy,
        tokenizer,
        batch_size=cfg.rollout.gen_batch_size,
        max_model_len=context_length(policy),
        gpu_memory_utilization=cfg.rollout.vllm_gpu_memory,
        seed=cfg.run.seed,
    )


@torch.no_grad()
def packing_works(trainer) -> bool:
    """Whether the trainer's models score episodes packed several per row as they score them padded. An
    architecture that ignores a 4-D attention mask or explicit positions does not: it gets the padded
    layout, with a warning, instead of wrong numbers. Checked once, on a probe batch of left-padded prompts
    and right-padded responses of different lengths (no random draw). The RM is the value model's
    architecture (the value model starts as a copy of it); rloo and grpo, without a value model, check the RM,
    which scoring packs too (and the policy alone when a reward function replaces the RM)."""
    policy = trainer.acc.unwrap_model(trainer.policy)
    values = trainer.value if trainer.value is not None else trainer.rm
    Tq, R = 6, 5
    ids = (torch.arange(3 * (Tq + R)).view(3, Tq + R) * 7 + 3) % policy.get_input_embeddings().num_embeddings
    attn = torch.ones_like(ids)
    for row, (prompt_len, response_len) in enumerate(((4, 5), (6, 2), (1, 1))):
        attn[row, : Tq - prompt_len] = 0
        attn[row, Tq + response_len :] = 0
    ids = ids.masked_fill(attn == 0, trainer.tok.pad_token_id or 0).to(trainer.acc.device)
    ok, diff = packing_matches_padding(
        trainer.policy, values, ids, attn.to(ids.device), Tq, trainer.cfg.rollout.temperature
    )
    if not ok:
        name = type(policy).__name__
        warnings.warn(
            f"pack_sequences: packed scores differ from padded ones by {diff:.3g} for {name}; using the padded layout",
            stacklevel=3,
        )
    return ok
