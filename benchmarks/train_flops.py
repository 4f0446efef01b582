"""Achieved FLOP/s of a training step of the default model, as a fraction of this machine's matmul FLOP/s.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/train_flops.py \
        --model runs/default/sft --sft_data runs/default/world/sft

1. Peak: the best FLOP/s of fp32 ``torch.matmul`` on square matrices (sizes that saturate one
   core), best of ``--repeats``, at the same thread count as the training steps.
2. Work of one step: ``torch.utils.flop_counter.FlopCounterMode`` over forward + backward. Its
   table has no entry for PyTorch's CPU flash-attention kernel, so the count is taken on the
   same model with eager attention (the same math as matmuls it does count); the step is then
   timed with the model's own (SDPA) attention. Cross-checked against the formula
   6 * N_non-embedding * T + 12 * L * d * T_ctx per token (Kaplan et al.), plus 6 * d * V per
   position that goes through the output layer.
3. Time of one step: forward, backward, gradient clipping and AdamW, exactly as the stage computes
   it, best of ``--steps`` steps after warm-up. Fraction = counted FLOPs / step time / peak.
   "useful" counts the same formula on non-pad tokens only (padding is computed but wasted).

Both the peak and the steps are timed in wall time and in CPU time of this (one-thread) process;
the headline uses CPU time, best against best, because the machine is shared and wall time
also counts the moments another job held the core. The wall-time fractions are in the JSON.

Configurations: the default SFT step (32 demonstrations, padded to the longest, loss on response
tokens only, output layer only where a response token is predicted), the same with larger
micro-batches, the same step computing logits at every position (how the stage did it before:
more FLOPs, more of them at the matmul rate, yet a slower step -- the fraction measures how well
the machine is used, not how little work is done), and a pretraining step (32 packed blocks of
128 tokens, every position predicted). None of them changes what the default preset trains.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time leaves out the
    time other jobs held the core, so ratios of CPU times stay meaningful under load."""
    w, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w, time.process_time() - c


def matmul_peak(sizes: list[int], repeats: int) -> dict:
    """Best FLOP/s over sizes and repeats, by wall time and by CPU time."""
    wall, cpu = {}, {}
    for n in sizes:
        a, b = torch.randn(n, n), torch.randn(n, n)
        for _ in range(2):
            a @ b
        times = [timed(lambda a=a, b=b: a @ b) for _ in range(repeats)]
        wall[n] = 2 * n**3 / min(t[0] for t in times)
        cpu[n] = 2 * n**3 / max(min(t[1] for t in times), 1e-9)
    return {
        "wall": max(wall.values()),
        "cpu": max(cpu.values()),
        "by_size_wall": {str(k): round(v / 1e9, 2) for k, v in wall.items()},
        "by_size_cpu": {str(k): round(v / 1e9, 2) for k, v in cpu.items()},
    }


def formula_flops(model, batch: dict, head_positions: int) -> dict:
    """6 N T + 12 L d T_ctx per token (on padded and on non-pad tokens), plus the output layer's 6 d V per position."""
    from alignlab.models.llama import non_embedding_params

    cfg = model.config
    n, layers, d, vocab = non_embedding_params(model), cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size
    B, T = batch["input_ids"].shape
    lengths = batch["attention_mask"].sum(-1).tolist()
    padded = B * T * (6 * n + 12 * layers * d * T) + 6 * d * vocab * head_positions
    useful = sum(L * (6 * n + 12 * layers * d * L) for L in lengths) + 6 * d * vocab * head_positions
    return {"formula_flops": padded, "formula_useful_flops": useful, "non_embedding_params": n}


def make_step(model, batch: dict, lm_loss: str):
    from alignlab.models.response_logits import response_lm_loss
    from alignlab.rl.losses import masked_lm_loss
    from alignlab.training import make_optimizer

    optimizer = make_optimizer(model, 1e-4, 0.1, (0.9, 0.95))

    def forward_backward():
        if lm_loss == "response":  # the SFT stage's loss
            loss, _ = response_lm_loss(model, batch["input_ids"], batch["attention_mask"], batch["labels"])
        elif lm_loss == "full_logits":  # the same loss from logits at every position (the SFT stage before)
            loss = masked_lm_loss(
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, batch["labels"]
            )
        else:  # pretraining: every next token
            loss = model(input_ids=batch["input_ids"], labels=batch["input_ids"]).loss
        loss.backward()

    def step():
        forward_backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return forward_backward, step


def count_flops(model_path: str, batch: dict, lm_loss: str) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    from alignlab.models.load import load_causal_lm

    eager = load_causal_lm(model_path)
    eager.set_attn_implementation("eager")  # matmuls the counter sees; SDPA on CPU is not in its table
    eager.train()
    forward_backward, _ = make_step(eager, batch, lm_loss)
    with FlopCounterMode(display=False) as counter:
        forward_backward()
    return counter.get_total_flops()


def measure(name: str, model_path: str, batch: dict, lm_loss: str, steps: int, warmup: int, peak: dict) -> dict:
    from alignlab.models.load import load_causal_lm

    model = load_causal_lm(model_path)
    model.train()
    _, step = make_step(model, batch, lm_loss)
    for _ in range(warmup):
        step()
    times = [timed(step) for _ in range(steps)]
    wall, cpu = [t[0] for t in times], [t[1] for t in times]
    head_positions = (
        int((batch["labels"][:, 1:] != -100).sum()) if lm_loss == "response" else batch["input_ids"].numel()
    )
    counted = count_flops(model_path, batch, lm_loss)
    f = formula_flops(model, batch, head_positions)
    B, T = batch["input_ids"].shape
    best_cpu = max(min(cpu), 1e-9)
    res = {
        "config": name,
        "batch": B,
        "seq_len": T,
        "tokens": int(batch["attention_mask"].sum()),
        "padded_tokens": B * T,
        "output_layer_positions": head_positions,
        "seconds_per_step_wall_median": round(statistics.median(wall), 4),
        "seconds_per_step_wall_min": round(min(wall), 4),
        "seconds_per_step_cpu_min": round(best_cpu, 4),
        "counted_flops": counted,
        **f,
        "formula_over_counted": round(f["formula_flops"] / counted, 4),
        # headline: best step / best matmul, both in CPU time (robust to other jobs on the core)
        "achieved_gflops_per_sec": round(counted / best_cpu / 1e9, 2),
        "fraction_of_matmul_peak": round(counted / best_cpu / peak["cpu"], 3),
        "fraction_of_matmul_peak_wall_best": round(counted / min(wall) / peak["wall"], 3),
        "fraction_of_matmul_peak_wall_median": round(counted / statistics.median(wall) / peak["wall"], 3),
        "useful_fraction_of_matmul_peak": round(f["formula_useful_flops"] / best_cpu / peak["cpu"], 3),
    }
    print(
        f"{name:30} {B:4d} x {T:3d}: {1000 * best_cpu:7.1f} ms/step (CPU), {counted / 1e9:6.2f} GFLOP counted "
        f"(formula/counted {res['formula_over_counted']}), {res['achieved_gflops_per_sec']:6.1f} GFLOP/s = "
        f"{100 * res['fraction_of_matmul_peak']:.0f}% of peak (wall best {100 * res['fraction_of_matmul_peak_wall_best']:.0f}%, "
        f"non-pad only {100 * res['useful_fraction_of_matmul_peak']:.0f}%)"
    )
    return res


def sft_batch(a, tok, size: int) -> dict:
    from alignlab.data.chat import encode_example
    from alignlab.data.collate import collate_sft
    from alignlab.data.load import load_demonstrations

    _, prompts, responses = load_demonstrations(a.sft_data, "train")
    order = torch.randperm(len(prompts), generator=torch.Generator().manual_seed(a.seed))[:size].tolist()
    return collate_sft([encode_example(tok, prompts[i], responses[i], a.seq_len) for i in order], tok.pad_token_id)


def packed_batch(a, tok, size: int) -> dict:
    g = torch.Generator().manual_seed(a.seed)
    ids = torch.randint(
        len(tok.all_special_ids), len(tok), (size, a.seq_len), generator=g
    )  # FLOPs do not depend on ids
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": ids.clone()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/default/sft")
    p.add_argument("--sft_data", default="runs/default/world/sft")
    p.add_argument("--seq_len", type=int, default=128, help="max tokens per example / packed block length")
    p.add_argument("--batch", type=int, default=32, help="the default preset's batch (SFT and pretraining)")
    p.add_argument("--larger_batches", default="64,128", help="extra SFT micro-batch sizes to try")
    p.add_argument("--sizes", default="512,1024,2048", help="square matmul sizes for the peak")
    p.add_argument("--repeats", type=int, default=5, help="matmul repeats per size (best counts)")
    p.add_argument("--steps", type=int, default=8, help="timed training steps per configuration")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/train_flops.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    from alignlab.models.load import load_tokenizer

    result = {
        "setting": {k: v for k, v in vars(a).items() if k != "out"},
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    peak = matmul_peak([int(s) for s in a.sizes.split(",")], a.repeats)
    result["matmul_peak_gflops_per_sec"] = round(peak["cpu"] / 1e9, 2)
    result["matmul_peak_gflops_per_sec_wall"] = round(peak["wall"] / 1e9, 2)
    result["matmul_gflops_per_sec_by_size"] = {"cpu_time": peak["by_size_cpu"], "wall_time": peak["by_size_wall"]}
    print(
        f"matmul peak (fp32, {a.threads} thread(s)): {result['matmul_peak_gflops_per_sec']} GFLOP/s by CPU time "
        f"{peak['by_size_cpu']}, {result['matmul_peak_gflops_per_sec_wall']} by wall time"
    )
    tok = load_tokenizer(a.model)
    runs = [("sft default step", sft_batch(a, tok, a.batch), "response")]
    runs += [
        (f"sft micro-batch {b}", sft_batch(a, tok, b), "response")
        for b in map(int, filter(None, a.larger_batches.split(",")))
    ]
    runs += [("sft default, full logits (before)", runs[0][1], "full_logits")]
    runs += [("pretrain step (packed blocks)", packed_batch(a, tok, a.batch), "all")]
    result["configs"] = [measure(name, a.model, batch, loss, a.steps, a.warmup, peak) for name, batch, loss in runs]
    # the peak again at the end: the machine is shared, so say how much it moved
    end_peak = matmul_peak([int(s) for s in a.sizes.split(",")], a.repeats)
    result["matmul_peak_gflops_per_sec_end"] = round(end_peak["cpu"] / 1e9, 2)
    result["matmul_peak_gflops_per_sec_wall_end"] = round(end_peak["wall"] / 1e9, 2)
    default = result["configs"][0]
    result["default_step_fraction_of_peak"] = default["fraction_of_matmul_peak"]
    result["target_fraction"] = 0.40
    result["meets_target"] = default["fraction_of_matmul_peak"] > 0.40
    result["loadavg_end"] = os.getloadavg()
    print(
        f"default SFT step: {100 * default['fraction_of_matmul_peak']:.0f}% of matmul peak (target > 40%); "
        f"peak at end {result['matmul_peak_gflops_per_sec_end']} GFLOP/s; load {result['loadavg_start']} -> {result['loadavg_end']}"
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
