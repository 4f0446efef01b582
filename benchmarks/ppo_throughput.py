"""Throughput of one RL iteration: alignlab's PPO, RLOO and GRPO against TRL's RLOOTrainer and GRPOTrainer.

    OMP_NUM_THREADS=1 python benchmarks/ppo_throughput.py --policy runs/default/sft \
        --reward_model runs/default/reward --data runs/default/world/ppo --threads 1 --iterations 3 \
        --out benchmarks/results/ppo_throughput.json

Held equal: the policy checkpoint (fp32, CPU or the same GPU), the reward model, the prompts
(chat template applied by each library), episodes per iteration (``--batch``), response cap
(``--max_new_tokens``), sampling temperature 1 with no top-k/top-p, minibatch size, passes over
each batch (``--epochs``: our ppo_epochs = TRL's num_iterations), a KL-to-reference term
(so all three load and run the frozen reference: TRL's beta = 0.02), AdamW, threads, and no
activation checkpointing (TRL turns it on by default, which recomputes every forward in the
backward; ``--trl_gradient_checkpointing`` measures TRL with its default).

Same algorithm, too: our ``advantage: rloo`` and ``advantage: grpo`` modes of the PPO stage run the
same work as TRL's RLOOTrainer / GRPOTrainer: ``--batch`` episodes as batch/group prompts x ``--group``
samples, no value model, KL 0.02 (RLOO in the reward, GRPO as the k3 loss term, as TRL puts them),
unwhitened advantages. Each TRL trainer is paired with our PPO and with our mode of the same name
(``--ours_group false`` leaves the latter out).

Not equal, by algorithm (TRL 1.x has no PPO in its stable API, only RLOO/GRPO), for our PPO:
  * RLOO and GRPO have no value model: they skip the value forward/backward and its optimiser
    that PPO pays for, and need >= 2 samples per prompt (``--group``), so the same number of
    episodes covers batch/group distinct prompts;
  * response lengths come from each policy's own sampling, so we count the tokens actually
    generated: the headline is generated response tokens per second of wall time over whole
    iterations (generation + scoring + updates), after one warm-up iteration each.

Interleaved, because the machine is shared: our iterations run inside TRL's training loop (a
callback at the end of each TRL iteration runs one of ours), so both see the same load; each
side's clock excludes the other's iterations. The pairing is per TRL trainer: ratios compare TRL
with our iterations that ran between its own. Load average is recorded at start and end.

Per-phase split: ours from the trainer's timers (rollout = generation; score = policy/ref/value/RM
forwards, rewards, GAE; update = PPO epochs). TRL's from its own profiling timers (we capture
``trl.extras.profiling`` durations, which TRL only sends to wandb/mlflow/trackio): generation =
``transformers.generate``; score = ``_prepare_inputs`` minus generation (old/ref log-probs, rewards,
advantages); update = the rest of the iteration (forward, backward, optimiser steps).
Prints a table and writes JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


class Ours:
    """Our PPO trainer (``advantage`` gae, rloo or grpo), stepped one iteration at a time (so it can be
    interleaved with TRL's). rloo/grpo: a.batch episodes as a.batch / a.group prompts x a.group samples."""

    def __init__(self, a, rows, tok, advantage: str = "gae"):
        from accelerate import Accelerator

        from alignlab.config import apply
        from alignlab.data.chat import encode_prompt_rows
        from alignlab.models.load import load_causal_lm
        from alignlab.models.reward_model import load_reward_model
        from alignlab.models.value_model import ValueModel
        from alignlab.stages.ppo import PPOConfig, PPOTrainer

        group = 1 if advantage == "gae" else a.group
        overrides = dict(
            policy=a.policy,
            reward_model=a.reward_model,
            advantage=advantage,
            group_size=group,
            batch_size=a.batch // group,  # prompts: a.batch episodes either way
            minibatch_size=a.minibatch,
            ppo_epochs=a.epochs,
            rollout={"max_new_tokens": a.max_new_tokens, "gen_batch_size": a.batch, "temperature": 1.0},
            iterations=1000,
            optim={"warmup_steps": 0},
            run={"device": a.device, "seed": a.seed},
        )
        for key, name in (("pack_sequences", "pack_sequences"), ("rollout_backend", "backend")):
            if getattr(a, key) is not None:
                overrides["rollout"][name] = getattr(a, key)
        if advantage != "gae":  # TRL's settings for the same algorithm: beta 0.02, advantages not whitened
            overrides.update(whiten_advantages=False, kl={"beta": 0.02, "adaptive": False})
        cfg = apply(PPOConfig(), overrides, "bench")
        self.trainer = PPOTrainer(
            cfg,
            load_causal_lm(a.policy),
            load_causal_lm(a.policy),
            ValueModel(load_reward_model(a.reward_model)),
            ValueModel(load_reward_model(a.reward_model)) if advantage == "gae" else None,
            tok,
            Accelerator(cpu=a.device == "cpu"),
        )
        self.prompts = encode_prompt_rows(tok, rows, "prompt", 96)
        self.batch, self.n_prompts, self.it = a.batch, a.batch // group, 0
        self.records: list[dict] = []
        self.step(timed=False)  # warm-up

    def step(self, timed: bool = True, phase: str = "") -> None:
        n = self.n_prompts
        batch = [self.prompts[(self.it * n + i) % len(self.prompts)] for i in range(n)]
        t0 = time.perf_counter()
        result = self.trainer.iteration(self.it, batch)
        wall = time.perf_counter() - t0
        self.it += 1
        if timed:
            self.records.append(
                {
                    "phase": phase,
                    "wall": wall,
                    "tokens": int(result.rollout.response_mask.sum()),
                    "rollout": result.stats["t_rollout"],
                    "score": result.stats["t_score"],
                    "update": result.stats["t_update"],
                }
            )

    def summary(self, phase: str) -> dict:
        recs = [r for r in self.records if r["phase"] == phase]
        return _summary(
            sum(r["tokens"] for r in recs),
            len(recs) * self.batch,
            sum(r["wall"] for r in recs),
            {p: sum(r[p] for r in recs) for p in ("rollout", "score", "update")},
            len(recs),
            optimizer_steps_per_iteration=self.trainer.updates_per_iteration,
        )


def _summary(tokens: float, episodes: int, wall: float, parts: dict[str, float], iterations: int, **extra) -> dict:
    out = {
        "iterations": iterations,
        "response_tokens": round(tokens),
        "episodes": episodes,
        "seconds": round(wall, 3),
        "response_tokens_per_sec": round(tokens / wall, 2),
        "episodes_per_sec": round(episodes / wall, 3),
        "seconds_per_iteration": {k: round(v / iterations, 3) for k, v in parts.items()},
        "generation_tokens_per_sec": round(tokens / parts["rollout"], 1) if parts.get("rollout") else None,
        "training_tokens_per_sec": round(tokens / (parts["score"] + parts["update"]), 1) if "update" in parts else None,
    }
    out.update(extra)
    return out


def bench_trl(kind: str, a, rows, tok, ours: list[Ours]) -> dict:
    """One TRL trainer (``kind`` = "rloo" or "grpo") for 1 + a.iterations iterations, with one iteration
    of each of ``ours`` run after each of its timed ones."""
    import datasets
    import trl
    import trl.extras.profiling as trl_profiling
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback

    steps_per_gen = a.batch // a.minibatch
    per_gen = steps_per_gen * a.epochs  # optimiser steps per generation round = one iteration
    common = dict(
        output_dir=tempfile.mkdtemp(prefix=f"trl_{kind}_"),
        per_device_train_batch_size=a.minibatch,
        gradient_accumulation_steps=1,
        steps_per_generation=steps_per_gen,
        num_generations=a.group,
        num_iterations=a.epochs,
        max_completion_length=a.max_new_tokens,
        temperature=1.0,
        top_k=0,
        top_p=1.0,
        beta=0.02,
        learning_rate=1e-5,
        max_steps=(a.iterations + 1) * per_gen,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        use_cpu=a.device == "cpu",
        bf16=False,
        seed=a.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        gradient_checkpointing=a.trl_gradient_checkpointing,
    )
    if kind == "rloo":
        from trl import RLOOConfig as Config
        from trl import RLOOTrainer as Trainer
    else:
        from trl import GRPOConfig as Config
        from trl import GRPOTrainer as Trainer
    args = Config(**common)

    timers: list[tuple[float, str, float]] = []  # (when, name, seconds) from TRL's own profiling contexts
    original_log = trl_profiling.ProfilingContext._log_metrics

    def capture(self, duration):
        timers.append((time.perf_counter(), self.name, duration))
        return original_log(self, duration)

    ends, resumes, lengths = {}, {}, []

    class Interleave(TrainerCallback):
        def on_step_end(self, args_, state, control, **kw):
            if state.global_step % per_gen == 0:
                i = state.global_step // per_gen  # TRL iteration i-1 just ended (0 = warm-up)
                ends[i - 1] = time.perf_counter()
                if i - 1 >= 1:
                    for o in ours:  # one of each of ours, between two of TRL's
                        o.step(phase=kind)
                resumes[i - 1] = time.perf_counter()

        def on_log(self, args_, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append((state.global_step, logs["completions/mean_length"]))

    ds = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
    rm = AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1)
    trainer = Trainer(
        model=AutoModelForCausalLM.from_pretrained(a.policy),
        reward_funcs=rm,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        reward_processing_classes=tok,
        callbacks=[Interleave()],
    )
    trl_profiling.ProfilingContext._log_metrics = capture
    try:
        trainer.train()
    finally:
        trl_profiling.ProfilingContext._log_metrics = original_log
        shutil.rmtree(args.output_dir, ignore_errors=True)

    gen_lengths = {}
    for step, length in lengths:  # logged at every step of a round; the first of a round is its batch's
        gen_lengths.setdefault((step - 1) // per_gen, length)
    tokens = wall = 0.0
    parts = {"rollout": 0.0, "score": 0.0, "update": 0.0}
    for i in range(1, a.iterations + 1):
        t0, t1 = resumes[i - 1], ends[i]
        tokens += gen_lengths.get(i, 0.0) * a.batch
        wall += t1 - t0
        inside = [(n, d) for when, n, d in timers if t0 <= when <= t1]
        gen = sum(
            d for n, d in inside if n.endswith(".transformers.generate") or n.endswith(".transformers.generate_batch")
        )
        prep = sum(d for n, d in inside if n.endswith("._prepare_inputs"))
        parts["rollout"] += gen
        parts["score"] += max(prep - gen, 0.0)
        parts["update"] += (t1 - t0) - prep
    if parts["rollout"] == 0.0:  # this TRL version names its timers otherwise: no split
        parts = {}
    return _summary(
        tokens,
        a.iterations * a.batch,
        wall,
        parts,
        a.iterations,
        trl_version=trl.__version__,
        group_size=a.group,
        optimizer_steps_per_iteration=per_gen,
        phase_split="from TRL's profiling timers" if parts else "unavailable (timer names not found)",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="runs/default/sft")
    p.add_argument("--reward_model", default="runs/default/reward")
    p.add_argument("--data", default="runs/default/world/ppo")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations per TRL trainer (after one warm-up)")
    p.add_argument("--batch", type=int, default=64, help="episodes per iteration")
    p.add_argument("--minibatch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4, help="passes over each batch (ppo_epochs / num_iterations)")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--group", "--rloo_k", type=int, default=2, help="RLOO/GRPO samples per prompt")
    p.add_argument(
        "--pack_sequences",
        type=lambda s: s.lower() in ("1", "true", "yes"),
        default=None,
        help="ours: packed scoring/training (default: the config's default)",
    )
    p.add_argument("--rollout_backend", default=None, help="ours: transformers or vllm (default: the config's)")
    p.add_argument(
        "--trl_gradient_checkpointing",
        action="store_true",
        help="TRL with its default activation checkpointing (off by default: not the same work as ours)",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trl", default="rloo,grpo", help="TRL trainers to compare with (comma list; empty = ours only)")
    p.add_argument(
        "--ours_group",
        type=lambda s: s.lower() in ("1", "true", "yes"),
        default=True,
        help="also time our rloo/grpo mode beside each TRL trainer of the same name",
    )
    p.add_argument("--out", default="benchmarks/results/ppo_throughput.json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from alignlab.data.load import load_dataset_any
    from alignlab.models.load import load_tokenizer

    load_start = os.getloadavg()
    tok = load_tokenizer(a.policy)
    rows = list(load_dataset_any(a.data, "train"))[: a.batch * (2 * a.iterations + 2)]
    result = {
        "setting": {k: v for k, v in vars(a).items() if k != "out"},
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "load_average_start": [round(x, 2) for x in load_start],
    }
    ours = Ours(a, rows, tok)
    kinds = [k for k in a.trl.split(",") if k]
    if not kinds:
        for _ in range(a.iterations):
            ours.step(phase="alone")
        result["alignlab_ppo"] = ours.summary("alone")
        _print("alignlab PPO", result["alignlab_ppo"])
    for kind in kinds:
        same = Ours(a, rows, tok, kind) if a.ours_group else None  # our mode of the same algorithm
        trl_res = bench_trl(kind, a, rows, tok, [ours] + ([same] if same else []))
        result[f"trl_{kind}"] = trl_res
        ours_res = ours.summary(kind)
        result[f"alignlab_ppo_during_{kind}"] = ours_res
        _print("alignlab PPO", ours_res)
        if same is not None:
            result[f"alignlab_{kind}_during_{kind}"] = same.summary(kind)
            _print(f"alignlab {kind.upper()}", same.summary(kind))
        _print(f"TRL {kind.upper()} {trl_res['trl_version']}", trl_res)
        result[f"ratio_ours_over_trl_{kind}"] = _ratio(ours_res, trl_res)
        print(f"ratio ours (PPO) / TRL {kind.upper()}: {result[f'ratio_ours_over_trl_{kind}']}")
        if same is not None:
            result[f"ratio_ours_{kind}_over_trl_{kind}"] = _ratio(same.summary(kind), trl_res)
            print(f"ratio ours ({kind.upper()}) / TRL {kind.upper()}: {result[f'ratio_ours_{kind}_over_trl_{kind}']}")
            del same
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average (1, 5, 15 min): start {result['load_average_start']}, end {result['load_average_end']}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


def _ratio(ours_res: dict, trl_res: dict) -> dict:
    """Ours over TRL's, for each rate both measured."""
    ratio = {
        "response_tokens_per_sec": round(ours_res["response_tokens_per_sec"] / trl_res["response_tokens_per_sec"], 3),
        "episodes_per_sec": round(ours_res["episodes_per_sec"] / trl_res["episodes_per_sec"], 3),
    }
    for key in ("generation_tokens_per_sec", "training_tokens_per_sec"):
        if ours_res.get(key) and trl_res.get(key):
            ratio[key] = round(ours_res[key] / trl_res[key], 3)
    return ratio


def _print(name: str, r: dict) -> None:
    print(
        f"{name:22s}: {r['response_tokens_per_sec']:8.1f} response tokens/s ({r['episodes_per_sec']:.2f} episodes/s); "
        f"s/iteration {r['seconds_per_iteration']}; generation {r.get('generation_tokens_per_sec')} tok/s, "
        f"training {r.get('training_tokens_per_sec')} tok/s"
    )


if __name__ == "__main__":
    main()
