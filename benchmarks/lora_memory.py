"""Peak memory of PPO with full fine-tuning against PPO with LoRA, same model and settings.

    python benchmarks/lora_memory.py                       # defaults: Llama d=512, 8 layers, 3 iterations
    python benchmarks/lora_memory.py --hidden 256 --layers 4 --iterations 2

The model is built here from a config (random weights; memory does not depend on their values):
a Llama with ``--hidden`` width and ``--layers`` layers, big enough that weights, gradients and
optimiser state dominate the process's memory. Its reward model is the same network with a
scalar head. Each run is ``alignlab.stages.ppo.run`` in a FRESH subprocess (so one run's freed
memory cannot hide the other's peak), with held-out evaluation and ptx off; the peak resident
set size is the child's ``ru_maxrss`` read with ``os.wait4``. A third child only imports
alignlab and loads nothing, so the models' share of each peak can be read off.

What differs (``--lora.r`` alone): full PPO holds policy + frozen reference + reward model +
value model, with gradients and two AdamW moments for policy and value; LoRA PPO holds one
policy (its reference is the same weights with the adapter off), the reward model and the value
model, with gradients and AdamW state only for the adapters and the value head.
Prints JSON and writes benchmarks/results/lora_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from random_llama import NAMES, save_random_llama  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]


def build_inputs(a, work: Path) -> dict[str, str]:
    """Tokenizer, a random Llama policy and its reward model, and a prompts file, under ``work``."""
    from transformers import AutoModelForSequenceClassification

    tok, policy = save_random_llama(a.hidden, a.layers, a.vocab, work / "policy")
    rm = AutoModelForSequenceClassification.from_pretrained(work / "policy", num_labels=1)
    rm.config.pad_token_id = tok.pad_token_id
    rm.save_pretrained(work / "rm")
    (work / "prompts.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What colour is {n}?"}) + "\n" for n in NAMES * 8)
    )
    n_params = sum(p.numel() for p in policy.parameters())
    return {
        "policy": str(work / "policy"),
        "rm": str(work / "rm"),
        "prompts": str(work / "prompts.jsonl"),
        "params": n_params,
    }


def child(a) -> None:
    """One process: ``build`` writes the inputs; ``baseline`` imports only; ``full`` / ``lora`` run PPO."""
    import torch

    if a.mode == "build":
        info = build_inputs(a, Path(a.workdir))
        print(json.dumps({**info, "torch": torch.__version__}))
        return
    from alignlab.config import apply
    from alignlab.stages import ppo

    torch.set_num_threads(1)
    if a.mode == "baseline":
        print(json.dumps({"mode": a.mode}))
        return
    inputs = json.loads(a.inputs)
    cfg = apply(
        ppo.PPOConfig(),
        dict(
            policy=inputs["policy"],
            reward_model=inputs["rm"],
            data=inputs["prompts"],
            world_dir="",
            eval_data="",
            ptx_data="",
            iterations=a.iterations,
            batch_size=a.batch,
            minibatch_size=a.minibatch,
            ppo_epochs=2,
            max_new_tokens=a.max_new_tokens,
            gen_batch_size=a.batch,
            warmup_iterations=0,
            checkpoint_interval=0,
            tensorboard=False,
            device="cpu",
            threads=1,
            output_dir=str(Path(a.workdir) / f"out_{a.mode}"),
            lora={"r": a.r if a.mode == "lora" else 0, "alpha": 2 * a.r},
        ),
        "bench",
    )
    t0 = time.perf_counter()
    s = ppo.run(cfg)
    print(
        json.dumps(
            {
                "mode": a.mode,
                "seconds": round(time.perf_counter() - t0, 2),
                "seconds_per_iteration": {
                    k[len("seconds_per_iteration_") :]: v
                    for k, v in s.items()
                    if k.startswith("seconds_per_iteration_")
                },
            }
        )
    )


def measure(mode: str, a, inputs: dict, work: Path) -> dict:
    """Run one child to completion; its own peak RSS from the kernel's accounting (ru_maxrss, KiB on Linux).

    This parent never imports torch: a child's ru_maxrss can include the parent's resident memory at
    fork/exec time, so the parent stays a small plain-Python process."""
    cmd = [
        sys.executable,
        __file__,
        "--child",
        "--mode",
        mode,
        "--workdir",
        str(work),
        "--inputs",
        json.dumps(inputs),
        "--iterations",
        str(a.iterations),
        "--batch",
        str(a.batch),
        "--minibatch",
        str(a.minibatch),
        "--max_new_tokens",
        str(a.max_new_tokens),
        "--r",
        str(a.r),
        "--hidden",
        str(a.hidden),
        "--layers",
        str(a.layers),
        "--vocab",
        str(a.vocab),
    ]
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(ROOT / "src") + os.pathsep + os.environ.get("PYTHONPATH", ""),
    }
    out_f, err_f = work / f"{mode}.out", work / f"{mode}.err"
    with open(out_f, "w") as out, open(err_f, "w") as err:  # files, not pipes: nothing to drain before reaping
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # reap it ourselves: wait4 returns this child's own rusage
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run failed:\n{err_f.read_text()[-3000:]}")
    out = out_f.read_text()
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mib"] = round(usage.ru_maxrss / 1024, 1)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--r", type=int, default=8, help="LoRA rank of the LoRA run")
    p.add_argument("--iterations", type=int, default=3)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--minibatch", type=int, default=4)
    p.add_argument("--max_new_tokens", type=int, default=16)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "lora_memory.json"))
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", choices=["build", "baseline", "full", "lora"], help=argparse.SUPPRESS)
    p.add_argument("--workdir", help=argparse.SUPPRESS)
    p.add_argument("--inputs", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a)
        return

    with tempfile.TemporaryDirectory(prefix="lora_mem_") as tmp:
        work = Path(tmp)
        inputs = measure("build", a, {}, work)  # in a child too, so this process stays small
        runs = {mode: measure(mode, a, inputs, work) for mode in ("baseline", "full", "lora")}
    print(f"parent peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB", file=sys.stderr)
    base = runs["baseline"]["peak_rss_mib"]
    full, lora = runs["full"]["peak_rss_mib"], runs["lora"]["peak_rss_mib"]
    result = {
        "model": f"random Llama built from a config: hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}, "
        f"{inputs['params'] / 1e6:.1f}M parameters ({inputs['params'] * 4 / 2**20:.0f} MiB in fp32)",
        "setting": {
            "iterations": a.iterations,
            "batch": a.batch,
            "minibatch": a.minibatch,
            "ppo_epochs": 2,
            "max_new_tokens": a.max_new_tokens,
            "lora_r": a.r,
            "lora_alpha": 2 * a.r,
            "threads": 1,
            "device": "cpu",
        },
        "measure": "peak RSS (ru_maxrss via os.wait4) of a fresh subprocess per run",
        "peak_rss_mib": {"import_only": base, "full_ppo": full, "lora_ppo": lora},
        "above_import_mib": {"full_ppo": round(full - base, 1), "lora_ppo": round(lora - base, 1)},
        "lora_over_full": round(lora / full, 3),
        "lora_over_full_above_import": round((lora - base) / (full - base), 3),
        "seconds": {"full_ppo": runs["full"]["seconds"], "lora_ppo": runs["lora"]["seconds"]},
        "seconds_per_iteration": {
            "full_ppo": runs["full"]["seconds_per_iteration"],
            "lora_ppo": runs["lora"]["seconds_per_iteration"],
        },
        "machine": platform.machine(),
        "python": platform.python_version(),
        "torch": inputs["torch"],
    }
    print(json.dumps(result, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
