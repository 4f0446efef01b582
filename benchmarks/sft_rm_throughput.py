"""Training throughput of alignlab's SFT and reward stages against TRL's SFTTrainer and RewardTrainer.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/sft_rm_throughput.py \
        --model runs/default/sft --sft_data runs/default/world/sft \
        --rm_data runs/default/compare/comparisons

Both sides run their real training loop (our ``stages.sft.run`` / ``stages.reward.run``, TRL's
``Trainer.train``) and are timed over ``--steps`` optimiser steps after ``--warmup`` steps.
We time each side from inside its loop: ours at the start of each step (the SFT stage's collator
call, the reward stage's ``forward_scores`` call), TRL's at each ``on_step_end``; a wrapper around
each side's collator counts the tokens of every batch, so the headline -- non-pad tokens trained
per second -- counts exactly what each loop consumed.

Held equal: the model (the default preset's SFT Llama, fp32, CPU), the token ids (TRL gets the
sequences our stages' own encoders produce: chat template, prompt masked with -100, EOS), right
padding to the longest row of each batch, batch size, AdamW with the same lr / betas / eps /
weight decay, gradient clipping at 1.0, cosine schedule with warm-up, logging every 10 steps,
one torch thread, the same process, no gradient checkpointing (TRL's configs turn it on by
default, which recomputes the forward pass in the backward: we turn it off, as our stages
never recompute), fp32 (TRL's default would be bf16).

Not equal:
  * data order: each library shuffles with its own generator, so batches differ; tokens are
    counted per batch, so the rate is still per token actually trained;
  * RM data are pairs (K = 2): TRL's RewardTrainer only takes chosen/rejected, so both train on
    (best, worst) of each ranked list; our stage's K-way lists (K = 4 in the default data) are
    not what is measured here;
  * how each computes the same loss: TRL's SFT loss runs its chunked "fused LM head" over every
    position (on CPU) and also computes entropy and top-1 accuracy every step; our SFT stage
    runs the output layer only where a response token is predicted (models/response_logits.py).
    TRL's RM pads each batch (chosen + rejected) to its longest sequence; our reward stage runs
    the same batch in up to 3 passes of similar lengths (data/length_groups.py), padding less;
  * what else each loop does per step (our stage's NaN check and progress bar, TRL's metric
    gathering and callbacks) is left in: it is part of each trainer's cost.
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


class Meter:
    """Start time and token counts of each step a training loop runs (a step may collate several batches)."""

    def __init__(self):
        self.times: list[tuple[float, float]] = []  # (wall, CPU time of this process)
        self.tokens: list[int] = []  # non-pad tokens
        self.padded: list[int] = []  # tokens including padding (what the model computes on)
        self.rows: list[int] = []

    def step(self) -> None:
        self.times.append(now())
        self.tokens.append(0)
        self.padded.append(0)
        self.rows.append(0)

    def add(self, attention_mask: torch.Tensor) -> None:
        self.tokens[-1] += int(attention_mask.sum())
        self.padded[-1] += attention_mask.numel()
        self.rows[-1] += attention_mask.shape[0]


def now() -> tuple[float, float]:
    """(wall clock, CPU time of this process). The machine is shared: CPU time leaves out the moments
    another job held the core, so it is the steadier of the two; both are reported."""
    return time.perf_counter(), time.process_time()


def window(times: list[tuple[float, float]], meter: Meter, warmup: int, steps: int, pairs: bool = False) -> dict:
    """Throughput over steps [warmup, warmup + steps), timed by times[warmup] -> times[warmup + steps]."""
    if len(times) < warmup + steps + 1 or len(meter.tokens) < warmup + steps:
        raise RuntimeError(f"only {len(times)} timestamps / {len(meter.tokens)} batches for {warmup}+{steps} steps")
    sl = slice(warmup, warmup + steps)
    wall = times[warmup + steps][0] - times[warmup][0]
    cpu = times[warmup + steps][1] - times[warmup][1]
    tokens, padded, rows = sum(meter.tokens[sl]), sum(meter.padded[sl]), sum(meter.rows[sl])
    res = {
        "steps": steps,
        "seconds": round(wall, 3),
        "seconds_per_step": round(wall / steps, 4),
        "cpu_seconds": round(cpu, 3),
        "tokens": tokens,
        "padded_tokens": padded,
        "padding_share": round(1 - tokens / padded, 3),
        "tokens_per_sec": round(tokens / wall, 1),
        "tokens_per_cpu_sec": round(tokens / cpu, 1),
    }
    if pairs:  # RM batches hold chosen then rejected (TRL) or each pair's 2 responses (ours)
        res.update({"pairs": rows // 2, "pairs_per_sec": round(rows / 2 / wall, 2)})
    else:
        res.update({"examples": rows, "examples_per_sec": round(rows / wall, 2)})
    return res


# ------------------------------------------------------------------------------------ SFT


def trl_meters(collator_cls, meter: Meter, ends: list):
    """TRL's collator, counting each step's tokens into ``meter``, and a callback stamping step ends."""
    from transformers import TrainerCallback

    class CountingCollator(collator_cls):
        def torch_call(self, batch_examples):
            batch = super().torch_call(batch_examples)
            meter.step()
            meter.add(batch["attention_mask"])
            return batch

    class Clock(TrainerCallback):
        def on_train_begin(self, args_, state, control, **kw):
            ends.append(now())

        def on_step_end(self, args_, state, control, **kw):
            ends.append(now())

    return CountingCollator, Clock


def sft_examples(a, tok) -> list[dict]:
    from alignlab.data.chat import encode_example
    from alignlab.data.load import load_demonstrations

    _, prompts, responses = load_demonstrations(a.sft_data, "train")
    return [encode_example(tok, p, r, a.seq_len) for p, r in zip(prompts, responses)]


def sft_ours(a, tmp: Path) -> dict:
    import alignlab.stages.sft as sft
    from alignlab.sections import OptimSettings, RunSettings

    meter = Meter()
    original = sft.collate_sft

    def counting_collate(examples, pad_token_id):  # micro_batch = batch: one call per step
        meter.step()
        batch = original(examples, pad_token_id)
        meter.add(batch["attention_mask"])
        return batch

    cfg = sft.SFTConfig(
        model=a.model,
        data=a.sft_data,
        judge="loss",
        world_dir=None,
        seq_len=a.seq_len,
        epochs=1,
        batch_size=a.batch,
        optim=OptimSettings(lr=a.lr, warmup_steps=10, weight_decay=0.1),
        eval_base=False,
        val_max_new_tokens=1,
        eval_batch_size=256,
        run=RunSettings(log_interval=10, seed=a.seed, device="cpu", tensorboard=False),
        output_dir=str(tmp / "ours_sft"),
    )
    sft.collate_sft = counting_collate
    try:
        sft.run(cfg)
    finally:
        sft.collate_sft = original
    # train batches are the first ones collated; the end-of-epoch validation comes after
    return window(meter.times, meter, a.warmup, a.steps)


def sft_trl(a, tok, examples, tmp: Path) -> dict:
    import datasets
    import trl
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    meter, ends = Meter(), []
    CountingCollator, Clock = trl_meters(DataCollatorForLanguageModeling, meter, ends)

    ds = datasets.Dataset.from_list([{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples])
    args = SFTConfig(
        output_dir=str(tmp / "trl_sft"),
        per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1,
        learning_rate=a.lr,
        weight_decay=0.1,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine",
        warmup_steps=10,
        optim="adamw_torch",
        max_steps=a.warmup + a.steps + 1,
        max_length=a.seq_len,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=a.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        data_collator=CountingCollator(pad_token_id=tok.pad_token_id),
        callbacks=[Clock()],
    )
    trainer.train()
    # ends[0] is the start; ends[i] the end of step i, which consumed batch i-1 -> drop ends[0]
    res = window(ends[1:], meter, a.warmup, a.steps)
    res["trl_version"] = trl.__version__
    return res


# ------------------------------------------------------------------------------------- RM


def write_pairs(a, path: Path) -> list[dict]:
    """(best, worst) of each ranked list, as preference rows; the first --rm_prompts prompts."""
    from alignlab.stages.reward import load_comparisons

    rows, _ = load_comparisons(a.rm_data, "train")
    rows = rows[: (a.warmup + a.steps + 2) * a.batch]
    pairs = [{"prompt": r["prompt"], "chosen": r["responses"][0], "rejected": r["responses"][-1]} for r in rows]
    path.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    return pairs


def rm_ours(a, data: Path, tmp: Path) -> dict:
    import alignlab.stages.reward as reward
    from alignlab.sections import OptimSettings, RunSettings

    meter = Meter()
    original_collate, original_forward = reward.collate_sequences, reward.forward_scores

    def counting_forward(*args, **kwargs):  # one call per step (micro_batch = batch)
        meter.step()
        return original_forward(*args, **kwargs)

    def counting_collate(seqs, pad_token_id):  # each length group of the step
        batch = original_collate(seqs, pad_token_id)
        meter.add(batch["attention_mask"])
        return batch

    cfg = reward.RewardConfig(
        model=a.model,
        data=str(data),
        eval_split="",
        world_dir=None,
        demonstrations=None,
        seq_len=a.seq_len,
        epochs=1,
        batch_size=a.batch,
        optim=OptimSettings(lr=a.lr, warmup_steps=5, weight_decay=0.0),
        run=RunSettings(checkpoint_interval=0, log_interval=10, seed=a.seed, device="cpu", tensorboard=False),
        output_dir=str(tmp / "ours_rm"),
    )
    reward.collate_sequences, reward.forward_scores = counting_collate, counting_forward
    try:
        reward.run(cfg)
    finally:
        reward.collate_sequences, reward.forward_scores = original_collate, original_forward
    return window(meter.times, meter, a.warmup, a.steps, pairs=True)


def rm_trl(a, tok, pairs: list[dict], tmp: Path) -> dict:
    import datasets
    import trl
    from transformers import AutoModelForSequenceClassification
    from trl import RewardConfig, RewardTrainer
    from trl.trainer.reward_trainer import DataCollatorForPreference

    from alignlab.stages.reward import encode_sequences

    meter, ends = Meter(), []
    CountingCollator, Clock = trl_meters(DataCollatorForPreference, meter, ends)

    rows = [{"prompt": p["prompt"], "responses": [p["chosen"], p["rejected"]]} for p in pairs]
    encode_sequences(tok, rows, a.seq_len)  # the very ids our stage trains on
    ds = datasets.Dataset.from_list([{"chosen_ids": r["ids"][0], "rejected_ids": r["ids"][1]} for r in rows])
    args = RewardConfig(
        output_dir=str(tmp / "trl_rm"),
        per_device_train_batch_size=a.batch,
        gradient_accumulation_steps=1,
        learning_rate=a.lr,
        weight_decay=0.0,
        adam_beta1=0.9,
        adam_beta2=0.95,
        adam_epsilon=1e-8,
        max_grad_norm=1.0,
        lr_scheduler_type="cosine",
        warmup_steps=5,
        optim="adamw_torch",
        max_steps=a.warmup + a.steps + 1,
        max_length=a.seq_len,
        logging_steps=10,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        bf16=False,
        fp16=False,
        gradient_checkpointing=False,
        seed=a.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
    torch.manual_seed(a.seed)
    model = AutoModelForSequenceClassification.from_pretrained(a.model, num_labels=1, dtype=torch.float32)
    model.config.pad_token_id = tok.pad_token_id
    trainer = RewardTrainer(
        model=model,
        args=args,
        train_dataset=ds,
        processing_class=tok,
        data_collator=CountingCollator(pad_token_id=tok.pad_token_id),
        callbacks=[Clock()],
    )
    trainer.train()
    res = window(ends[1:], meter, a.warmup, a.steps, pairs=True)
    res["trl_version"] = trl.__version__
    return res


# ----------------------------------------------------------------------------------- main


def best(runs: list[dict]) -> dict:
    """The fastest of repeated runs (the least disturbed by other jobs on a shared machine), plus all rates."""
    top = max(runs, key=lambda r: r["tokens_per_sec"])
    return {
        **top,
        "tokens_per_sec_all_runs": [r["tokens_per_sec"] for r in runs],
        "tokens_per_cpu_sec_best": max(r["tokens_per_cpu_sec"] for r in runs),
        "tokens_per_cpu_sec_all_runs": [r["tokens_per_cpu_sec"] for r in runs],
    }


def compare(a, trl_name: str, ours_fn, trl_fn) -> dict:
    """Alternate our run and TRL's ``a.repeats`` times; keep each side's fastest run and the ratios."""
    ours, trl_runs = [], []
    for _ in range(a.repeats):
        ours.append(ours_fn())
        if not a.skip_trl:
            trl_runs.append(trl_fn())
    out = {"alignlab": best(ours)}
    if trl_runs:
        out[trl_name] = best(trl_runs)
        out["ratio_tokens_per_sec_ours_over_trl"] = round(
            out["alignlab"]["tokens_per_sec"] / out[trl_name]["tokens_per_sec"], 3
        )
        out["ratio_tokens_per_cpu_sec_ours_over_trl"] = round(
            out["alignlab"]["tokens_per_cpu_sec_best"] / out[trl_name]["tokens_per_cpu_sec_best"], 3
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="runs/default/sft")
    p.add_argument("--sft_data", default="runs/default/world/sft")
    p.add_argument("--rm_data", default="runs/default/compare/comparisons")
    p.add_argument("--batch", type=int, default=32, help="examples (SFT) or pairs (RM) per optimiser step")
    p.add_argument("--seq_len", type=int, default=128, help="max tokens per sequence (the default model's context)")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--steps", type=int, default=20, help="timed optimiser steps")
    p.add_argument("--repeats", type=int, default=2, help="alternating runs per side; the fastest counts")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--only", choices=["sft", "rm", "both"], default="both")
    p.add_argument("--skip_trl", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="benchmarks/results/sft_rm_throughput.json")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    import alignlab
    from alignlab.models.load import load_tokenizer

    result = {
        "setting": {k: v for k, v in vars(a).items() if k != "out"},
        "alignlab_code": alignlab.__file__,
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "loadavg_start": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    tok = load_tokenizer(a.model)
    tmp = Path(tempfile.mkdtemp(prefix="bench_sft_rm_"))
    try:
        if a.only in ("sft", "both"):
            examples = sft_examples(a, tok)
            result["sft"] = compare(
                a, "trl_sfttrainer", lambda: sft_ours(a, tmp), lambda: sft_trl(a, tok, examples, tmp)
            )
        if a.only in ("rm", "both"):
            pairs = write_pairs(a, tmp / "pairs.jsonl")
            result["rm"] = compare(
                a, "trl_rewardtrainer", lambda: rm_ours(a, tmp / "pairs.jsonl", tmp), lambda: rm_trl(a, tok, pairs, tmp)
            )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = os.getloadavg()

    for stage in ("sft", "rm"):
        for side, r in result.get(stage, {}).items():
            if isinstance(r, dict):
                unit = "pairs/s" if stage == "rm" else "examples/s"
                rate = r.get("pairs_per_sec", r.get("examples_per_sec"))
                print(
                    f"{stage:3} {side:18}: {r['tokens_per_sec']:9.1f} non-pad tokens/s, {rate:7.2f} {unit}, "
                    f"{r['seconds_per_step'] * 1000:6.1f} ms/step, padding {100 * r['padding_share']:.0f}% "
                    f"(runs: {r['tokens_per_sec_all_runs']}; per CPU second: {r['tokens_per_cpu_sec_all_runs']})"
                )
        ratio = result.get(stage, {}).get("ratio_tokens_per_sec_ours_over_trl")
        if ratio is not None:
            print(
                f"{stage:3} ratio ours / TRL, tokens per wall second: {ratio}, per CPU second: "
                f"{result[stage]['ratio_tokens_per_cpu_sec_ours_over_trl']}"
            )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}  (load average {result['loadavg_start']} -> {result['loadavg_end']})")


if __name__ == "__main__":
    main()
