"""Where the time of one PPO iteration goes: a torch.profiler + cProfile breakdown on the default setting.

    OMP_NUM_THREADS=1 python benchmarks/ppo_profile.py --policy runs/default/sft \
        --reward_model runs/default/reward --data runs/default/world/ppo \
        --out benchmarks/results/ppo_profile_after.txt

Builds the PPO trainer exactly as ``benchmarks/ppo_throughput.py`` does (default preset's
batch 64, minibatch 16, 4 epochs, 32 new tokens), runs one warm-up iteration, then profiles
``--iterations`` iterations: per phase (rollout / score / update, from the trainer's own
timers), per model call inside each phase, the top torch ops, and the top Python functions
by own time (Python overhead). Writes the report as text.
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import os
import pstats
import time
from contextlib import contextmanager
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile, record_function


@contextmanager
def _labelled_forwards(trainer):
    """Wrap each model's forward in a profiler label so the op table can be grouped by model."""
    models = {
        "policy": trainer.acc.unwrap_model(trainer.policy),
        "ref": trainer.ref,
        "value": trainer.acc.unwrap_model(trainer.value),
    }
    if trainer.rm is not None:
        models["reward_model"] = trainer.rm
    saved = {}
    for name, m in models.items():
        saved[name] = m.forward

        def labelled(orig, label):
            @functools.wraps(orig)  # keeps the signature visible (callers inspect it for logits_to_keep)
            def fwd(*args, **kw):
                with record_function(label):
                    return orig(*args, **kw)

            return fwd

        m.forward = labelled(m.forward, f"model::{name}")
    try:
        yield
    finally:
        for name, m in models.items():
            m.forward = saved[name]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="runs/default/sft")
    p.add_argument("--reward_model", default="runs/default/reward")
    p.add_argument("--data", default="runs/default/world/ppo")
    p.add_argument("--iterations", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--minibatch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--rollout_backend", default="transformers")
    p.add_argument("--out", default="benchmarks/results/ppo_profile_after.txt")
    a = p.parse_args()
    torch.set_num_threads(1)

    from accelerate import Accelerator

    from alignlab.config import apply
    from alignlab.data.chat import encode_prompt_rows
    from alignlab.data.load import load_dataset_any
    from alignlab.models.load import load_causal_lm, load_tokenizer
    from alignlab.models.reward_model import load_reward_model
    from alignlab.models.value_model import ValueModel
    from alignlab.stages.ppo import PPOConfig, PPOTrainer

    tok = load_tokenizer(a.policy)
    rows = list(load_dataset_any(a.data, "train"))[: a.batch * (a.iterations + 1)]
    prompts = encode_prompt_rows(tok, rows, "prompt", 96)
    overrides = dict(
        policy=a.policy,
        reward_model=a.reward_model,
        batch_size=a.batch,
        minibatch_size=a.minibatch,
        ppo_epochs=a.epochs,
        rollout={"max_new_tokens": a.max_new_tokens, "gen_batch_size": a.batch, "backend": a.rollout_backend},
        iterations=a.iterations + 1,
        optim={"warmup_steps": 0},
        run={"device": "cpu"},
    )
    cfg = apply(PPOConfig(), overrides, "profile")
    trainer = PPOTrainer(
        cfg,
        load_causal_lm(a.policy),
        load_causal_lm(a.policy),
        ValueModel(load_reward_model(a.reward_model)),
        ValueModel(load_reward_model(a.reward_model)),
        tok,
        Accelerator(cpu=True),
    )
    batch = lambda it: [prompts[(it * a.batch + i) % len(prompts)] for i in range(a.batch)]  # noqa: E731
    trainer.iteration(0, batch(0))  # warm-up

    lines = [
        f"# PPO iteration profile ({time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, 1 thread, "
        f"load average at start {os.getloadavg()[0]:.2f})",
        f"setting: batch {a.batch}, minibatch {a.minibatch}, epochs {a.epochs}, max_new_tokens {a.max_new_tokens}, "
        f"policy {a.policy}",
        "",
    ]
    phases = {"t_rollout": 0.0, "t_score": 0.0, "t_update": 0.0}
    tokens = 0
    cp = cProfile.Profile()
    with _labelled_forwards(trainer), profile(activities=[ProfilerActivity.CPU]) as prof:
        for it in range(1, a.iterations + 1):
            cp.enable()
            result = trainer.iteration(it, batch(it))
            cp.disable()
            tokens += int(result.rollout.response_mask.sum())
            for k in phases:
                phases[k] += result.stats[k]
    total = sum(phases.values())
    lines.append(f"## Phases (trainer timers, mean over {a.iterations} iteration(s); profiler overhead included)")
    for k, v in phases.items():
        lines.append(f"  {k[2:]:8s} {v / a.iterations:7.3f} s  {100 * v / total:5.1f}%")
    lines.append(
        f"  total    {total / a.iterations:7.3f} s   ({tokens / total:.1f} response tokens/s under the profiler)"
    )
    lines.append("")
    ka = prof.key_averages()
    lines.append("## Time inside each model's forward (all phases; backward is not included here)")
    for e in sorted((e for e in ka if e.key.startswith("model::")), key=lambda e: -e.cpu_time_total):
        lines.append(f"  {e.key:22s} calls {e.count:5d}  {e.cpu_time_total / 1e6 / a.iterations:7.3f} s/iteration")
    lines.append("")
    lines.append("## Top torch ops by self CPU time")
    lines.append(ka.table(sort_by="self_cpu_time_total", row_limit=25, max_name_column_width=50))
    s = io.StringIO()
    pstats.Stats(cp, stream=s).sort_stats("tottime").print_stats(25)
    lines.append("## Top Python functions by own time (cProfile; includes time inside C ops they call directly)")
    lines.append("\n".join(l for l in s.getvalue().splitlines() if l.strip())[:8000])
    lines.append(f"\nload average at end {os.getloadavg()[0]:.2f}")
    text = "\n".join(lines) + "\n"
    print(text)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(text)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
