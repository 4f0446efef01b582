"""Throughput of one RL iteration: alignlab's PPO against TRL's RLOOTrainer, same model and setting.

    python benchmarks/ppo_throughput.py --policy runs/default/sft --reward_model runs/default/reward \
        --data runs/default/world/ppo --iterations 3 --out benchmarks/results/ppo_throughput.json

Held equal: the policy checkpoint (fp32, CPU or the same GPU), the reward model, the prompts
(chat template applied by each library), episodes per iteration (``--batch``), response cap
(``--max_new_tokens``), sampling temperature 1 with no top-k/top-p, minibatch size, passes over
each batch (``--epochs``: our ppo_epochs = TRL's num_iterations), a KL-to-reference term
(so both load and run the frozen reference), AdamW, threads.

Not equal, by algorithm (TRL 1.x has no PPO in its stable API, only RLOO/GRPO):
  * RLOO has no value model: it skips the value forward/backward and its optimiser that PPO
    pays for, and it needs >= 2 samples per prompt (``--rloo_k``), so the same number of
    episodes covers batch/k distinct prompts;
  * response lengths come from each policy's own sampling, so we count the tokens actually
    generated: the headline is generated response tokens per second of wall time over whole
    iterations (generation + scoring + updates), after one warm-up iteration.
Prints a table and writes JSON (tokens/s each, and ours/TRL).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import tempfile
import time
from pathlib import Path

import torch


def bench_ours(a, rows, tok) -> dict:
    from accelerate import Accelerator

    from alignlab.config import apply
    from alignlab.evaluate.heldout_samples import encode_prompts
    from alignlab.models.load import load_causal_lm
    from alignlab.models.reward_model import load_reward_model
    from alignlab.models.value_model import ValueModel
    from alignlab.stages.ppo import PPOConfig, PPOTrainer

    cfg = apply(PPOConfig(), dict(policy=a.policy, reward_model=a.reward_model, batch_size=a.batch, minibatch_size=a.minibatch,
                                  ppo_epochs=a.epochs, max_new_tokens=a.max_new_tokens, gen_batch_size=a.batch,
                                  temperature=1.0, iterations=a.iterations + 1, warmup_iterations=0,
                                  device=a.device, seed=a.seed), "bench")
    acc = Accelerator(cpu=a.device == "cpu")
    trainer = PPOTrainer(cfg, load_causal_lm(a.policy), load_causal_lm(a.policy),
                         ValueModel(load_reward_model(a.reward_model)), ValueModel(load_reward_model(a.reward_model)),
                         tok, acc)
    prompts = encode_prompts(tok, rows, "prompt", 96)
    tokens = episodes = 0
    parts = {"rollout": 0.0, "score": 0.0, "update": 0.0}
    t0 = None
    for it in range(a.iterations + 1):
        batch = [prompts[(it * a.batch + i) % len(prompts)] for i in range(a.batch)]
        if it == 1:
            t0 = time.perf_counter()  # iteration 0 is the warm-up
        s = trainer.iteration(it, batch)
        if it >= 1:
            tokens += int(s["_rollout"].response_mask.sum())
            episodes += a.batch
            for p in parts:
                parts[p] += s[f"t_{p}"]
    wall = time.perf_counter() - t0
    return {"response_tokens": tokens, "episodes": episodes, "seconds": round(wall, 3),
            "response_tokens_per_sec": round(tokens / wall, 2), "episodes_per_sec": round(episodes / wall, 3),
            "seconds_per_iteration": {k: round(v / a.iterations, 3) for k, v in parts.items()},
            "optimizer_steps_per_iteration": trainer.updates_per_iteration}


def bench_trl(a, rows, tok) -> dict:
    import datasets
    import trl
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, TrainerCallback
    from trl import RLOOConfig, RLOOTrainer

    steps_per_gen = a.batch // a.minibatch
    args = RLOOConfig(
        output_dir=tempfile.mkdtemp(prefix="trl_rloo_"), per_device_train_batch_size=a.minibatch,
        gradient_accumulation_steps=1, steps_per_generation=steps_per_gen, num_generations=a.rloo_k,
        num_iterations=a.epochs, max_completion_length=a.max_new_tokens, temperature=1.0, top_k=0, top_p=1.0,
        beta=0.02, learning_rate=1e-5, max_steps=(a.iterations + 1) * steps_per_gen * a.epochs,
        logging_steps=1, save_strategy="no", report_to="none", use_cpu=a.device == "cpu", bf16=False,
        seed=a.seed, dataloader_num_workers=0, disable_tqdm=True,
    )
    per_gen = steps_per_gen * a.epochs
    marks, lengths = {}, []

    class Clock(TrainerCallback):
        def on_step_end(self, args_, state, control, **kw):
            marks[state.global_step] = time.perf_counter()

        def on_log(self, args_, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append((state.global_step, logs["completions/mean_length"]))

    ds = datasets.Dataset.from_list([{"prompt": [{"role": "user", "content": r["prompt"]}]} for r in rows])
    rm = AutoModelForSequenceClassification.from_pretrained(a.reward_model, num_labels=1)
    trainer = RLOOTrainer(model=AutoModelForCausalLM.from_pretrained(a.policy), reward_funcs=rm, args=args,
                          train_dataset=ds, processing_class=tok, reward_processing_classes=tok, callbacks=[Clock()])
    trainer.train()
    shutil.rmtree(args.output_dir, ignore_errors=True)
    # iterations 1..N (step per_gen ends the warm-up); each iteration generates `batch` completions
    t0, t1 = marks[per_gen], marks[(a.iterations + 1) * per_gen]
    gen_lengths = {}
    for step, length in lengths:  # completions/mean_length is logged at every step of a generation round
        gen_lengths.setdefault((step - 1) // per_gen, length)
    tokens = sum(gen_lengths.get(i, 0.0) * a.batch for i in range(1, a.iterations + 1))
    wall = t1 - t0
    return {"trl_version": trl.__version__, "response_tokens": round(tokens), "episodes": a.iterations * a.batch,
            "seconds": round(wall, 3), "response_tokens_per_sec": round(tokens / wall, 2),
            "episodes_per_sec": round(a.iterations * a.batch / wall, 3), "rloo_k": a.rloo_k,
            "optimizer_steps_per_iteration": per_gen}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--policy", default="runs/default/sft")
    p.add_argument("--reward_model", default="runs/default/reward")
    p.add_argument("--data", default="runs/default/world/ppo")
    p.add_argument("--iterations", type=int, default=3, help="timed iterations (after one warm-up)")
    p.add_argument("--batch", type=int, default=64, help="episodes per iteration")
    p.add_argument("--minibatch", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4, help="passes over each batch (ppo_epochs / num_iterations)")
    p.add_argument("--max_new_tokens", type=int, default=32)
    p.add_argument("--rloo_k", type=int, default=2, help="RLOO samples per prompt")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip_trl", action="store_true")
    p.add_argument("--out", default="benchmarks/results/ppo_throughput.json")
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    from alignlab.data.load import load_dataset_any
    from alignlab.models.load import load_tokenizer

    tok = load_tokenizer(a.policy)
    rows = list(load_dataset_any(a.data, "train"))[: a.batch * (a.iterations + 1)]
    result = {"setting": {k: v for k, v in vars(a).items() if k != "out"}, "torch_threads": torch.get_num_threads(),
              "machine": platform.processor() or platform.machine(), "torch": torch.__version__}
    result["alignlab_ppo"] = bench_ours(a, rows, tok)
    print(f"alignlab PPO : {result['alignlab_ppo']['response_tokens_per_sec']:8.1f} response tokens/s "
          f"({result['alignlab_ppo']['episodes_per_sec']:.2f} episodes/s) {result['alignlab_ppo']['seconds_per_iteration']}")
    if not a.skip_trl:
        result["trl_rloo"] = bench_trl(a, rows, tok)
        print(f"TRL RLOO     : {result['trl_rloo']['response_tokens_per_sec']:8.1f} response tokens/s "
              f"({result['trl_rloo']['episodes_per_sec']:.2f} episodes/s), TRL {result['trl_rloo']['trl_version']}")
        result["ratio_ours_over_trl"] = round(result["alignlab_ppo"]["response_tokens_per_sec"]
                                              / result["trl_rloo"]["response_tokens_per_sec"], 3)
        result["ratio_episodes_ours_over_trl"] = round(result["alignlab_ppo"]["episodes_per_sec"]
                                                       / result["trl_rloo"]["episodes_per_sec"], 3)
        print(f"ratio (ours / TRL), response tokens/s: {result['ratio_ours_over_trl']}; episodes/s: {result['ratio_episodes_ours_over_trl']}")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
