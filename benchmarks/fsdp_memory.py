"""Memory per process of SFT on 2 CPU processes: DDP against FSDP2, same model, data and batch.

    python benchmarks/fsdp_memory.py                       # defaults: Llama d=512, 8 layers, 4 steps
    python benchmarks/fsdp_memory.py --hidden 256 --layers 4 --steps 2
    python benchmarks/fsdp_memory.py --mmap-threshold 131072 --out benchmarks/results/fsdp_memory_mmap128k.json

The model is built here from a config (random weights; memory does not depend on their values): a
Llama with ``--hidden`` width and ``--layers`` layers, tied embeddings, 25.2M parameters at the
defaults. Each run is the real SFT stage, ``accelerate launch --config_file
configs/accelerate/cpu_2proc.yaml`` (DDP) or ``fsdp2_cpu_2proc.yaml`` (FSDP2) ``-m alignlab.cli sft
--run.device cpu`` in spirit: the launched script is this file, which runs ``alignlab.cli.main`` with
the SFT arguments and only adds RSS readings around it. Fresh processes for each run.

Held equal: model, tokenizer, demonstrations (same files), global batch ``--batch`` (half per rank),
``--steps`` optimiser steps (one epoch), AdamW (the stage's own: decay on matrices), fp32, one thread per
rank, validation loss only (no sampling, no base-model evaluation). What differs: the accelerate config
alone (FSDP2 shards each decoder layer, then the root; DDP keeps a whole replica per rank). FSDP2's
AdamW runs unfused (DTensors), DDP's fused; both keep the same two moments per parameter.

Measured, per rank:

* **tensor bytes** (``ALIGNLAB_MEMORY_REPORT``, ``training.write_memory_report``): after the last
  optimiser step, before the gradients are cleared, the bytes of the storages behind this rank's
  parameters, their gradients and the optimiser state, read from the live tensors (a DTensor counts
  its local shard, ``to_local()``; each storage once, by ``untyped_storage().data_ptr()``, whole, so
  FSDP2's padding and flat gradient buffers count as held). Not counted there, though resident: DDP's
  gradient buckets (a second copy of the gradients), FSDP2's all-gathered layers during a pass.
* **resident memory**: VmRSS when the rank starts (this file, before torch is imported), just before
  and just after the stage loads the model, right after the last optimiser step, and at the end; the
  peak is VmHWM of the rank's own process image (``ru_maxrss`` is recorded too, but after exec it
  keeps the launcher's resident size if that was larger). The peak includes saving: each run
  publishes the trained model, and under FSDP2 rank 0 gathers the whole model to write it.

Resident memory depends on the allocator as much as on the tensors: glibc keeps freed memory in its
heaps (its mmap threshold grows to the size of the largest block freed), and FSDP2 frees a lot -- every
rank loads the whole model, then ``fully_shard`` copies each rank's half into new storage. So RSS is
reported twice (two runs of this script): with glibc as it is, and with ``--mmap-threshold 131072``
(``MALLOC_MMAP_THRESHOLD_``), where large blocks go back to the OS when freed; the tensor bytes are the
same in both.

The target (the FSDP2 issue): FSDP2's parameter + gradient + optimiser bytes per process at most 0.6x
DDP's, measured. Prints JSON and writes benchmarks/results/fsdp_memory.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from random_llama import COLOURS, NAMES, save_random_llama  # benchmarks/, beside this script

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {
    "ddp": ROOT / "configs" / "accelerate" / "cpu_2proc.yaml",
    "fsdp2": ROOT / "configs" / "accelerate" / "fsdp2_cpu_2proc.yaml",
}
MIB = 2**20


def rss_now() -> int:
    """This process's resident set size, bytes (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def build_inputs(a, work: Path) -> dict:
    """Tokenizer, a random Llama and prompt/completion demonstrations (train and validation) under ``work``."""
    import torch

    _, model = save_random_llama(a.hidden, a.layers, a.vocab, work / "model")

    def rows(n: int, offset: int) -> str:
        out = []
        for i in range(offset, offset + n):
            name, colour = NAMES[i % len(NAMES)], COLOURS[i % len(COLOURS)]
            out.append(
                {"prompt": f"What does {name} like?", "completion": f"{name} likes {colour} hats, river {i % 7}."}
            )
        return "".join(json.dumps(r) + "\n" for r in out)

    (work / "train.jsonl").write_text(rows(a.batch * a.steps, 0))
    (work / "val.jsonl").write_text(rows(a.batch, 1000))
    return {
        "model": str(work / "model"),
        "train": str(work / "train.jsonl"),
        "val": str(work / "val.jsonl"),
        "params": sum(p.numel() for p in model.parameters()),
        "torch": torch.__version__,
    }


def sft_args(a, inputs: dict, out: Path) -> list[str]:
    cfg = {
        "model": inputs["model"],
        "data": inputs["train"],
        "eval_data": inputs["val"],
        "world_dir": "",
        "judge": "loss",
        "epochs": 1,
        "batch_size": a.batch,
        "eval_batch_size": a.batch,
        "eval_base": False,
        "lr": 1e-3,
        "warmup_steps": 1,
        "log_interval": 1,
        "seed": 0,
        "threads": 1,
        "tensorboard": False,
        "device": "cpu",
        "output_dir": str(out),
    }
    return ["sft", *[x for k, v in cfg.items() for x in (f"--{k}", str(v))]]


def rank_child(report: Path, args: list[str]) -> None:
    """One rank of a launch: the SFT stage through the CLI, with VmRSS read at start, around the model load
    and at the end; the tensor bytes come from the stage itself (ALIGNLAB_MEMORY_REPORT)."""
    rss = {"start": rss_now()}  # before torch is imported
    import resource

    from alignlab.cli import main
    from alignlab.stages import sft

    load = sft.load_for_training

    def measured_load(*args, **kwargs):
        rss["before_model_load"] = rss_now()
        result = load(*args, **kwargs)
        rss["after_model_load"] = rss_now()
        return result

    sft.load_for_training = measured_load
    t0 = time.perf_counter()
    code = main(args)
    rss["end"] = rss_now()
    rank = int(os.environ.get("RANK", "0"))
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    (report / f"rss.rank{rank}.json").write_text(
        json.dumps(
            {
                "rss_bytes": rss,
                "peak_rss_bytes": int(status["VmHWM"].split()[0]) * 1024,
                "ru_maxrss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
    )
    sys.exit(code)


def child_env(extra: dict | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false", **(extra or {})}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])
    return env


def run(cmd: list[str], env: dict, log: Path) -> int:
    """Run ``cmd`` to completion, output to ``log``; the peak RSS (KiB) of it and its waited-for descendants."""
    with open(log, "w") as f:  # a file, not a pipe: nothing to drain before reaping
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{log.read_text()[-4000:]}")
    return usage.ru_maxrss


def measure(mode: str, a, inputs: dict, work: Path) -> dict:
    """One 2-process SFT launch under ``mode``'s accelerate config; every rank's readings."""
    report = work / f"report_{mode}"
    report.mkdir()
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(CONFIGS[mode]),
        __file__,
        "--rank-child",
        str(report),
        *sft_args(a, inputs, work / f"out_{mode}"),
    ]
    t0 = time.perf_counter()
    extra = {"ALIGNLAB_MEMORY_REPORT": str(report)}
    if a.mmap_threshold:  # glibc: allocations this large get their own mapping, returned to the OS when freed
        extra["MALLOC_MMAP_THRESHOLD_"] = str(a.mmap_threshold)
    tree_kib = run(cmd, child_env(extra), work / f"{mode}.log")
    ranks = []
    for r in range(2):
        held = json.loads((report / f"memory.rank{r}.json").read_text())
        rss = json.loads((report / f"rss.rank{r}.json").read_text())
        tensors = {k: held[k] for k in ("param_bytes", "grad_bytes", "optimizer_bytes")}
        # VmHWM is kept from per-CPU counters that lag a little: never report less than a reading taken
        peak = max(rss["peak_rss_bytes"], held["peak_rss_bytes"], held["rss_bytes"], *rss["rss_bytes"].values())
        ranks.append(
            {
                "rank": r,
                "last_step": held["step"],
                "tensor_mib": {k.removesuffix("_bytes"): round(v / MIB, 2) for k, v in tensors.items()},
                "tensor_total_mib": round(sum(tensors.values()) / MIB, 2),
                "tensor_total_bytes": sum(tensors.values()),
                "rss_mib": {
                    **{k: round(v / MIB, 1) for k, v in rss["rss_bytes"].items()},
                    "after_last_step": round(held["rss_bytes"] / MIB, 1),
                },
                "model_load_mib": round(
                    (rss["rss_bytes"]["after_model_load"] - rss["rss_bytes"]["before_model_load"]) / MIB, 1
                ),
                "peak_rss_mib": round(peak / MIB, 1),
                "peak_above_before_load_mib": round((peak - rss["rss_bytes"]["before_model_load"]) / MIB, 1),
                "ru_maxrss_mib": round(rss["ru_maxrss_bytes"] / MIB, 1),
                "stage_seconds": rss["seconds"],
            }
        )
    return {
        "ranks": ranks,
        "launch_tree_ru_maxrss_mib": round(tree_kib / 1024, 1),
        "seconds": round(time.perf_counter() - t0, 1),
    }


def main() -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "--rank-child":  # a launched rank: the rest are the CLI's arguments
        rank_child(Path(sys.argv[2]), sys.argv[3:])
        return
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--layers", type=int, default=8)
    p.add_argument("--vocab", type=int, default=512)
    p.add_argument("--batch", type=int, default=8, help="global batch (examples per optimiser step)")
    p.add_argument("--steps", type=int, default=4, help="optimiser steps (one epoch of batch x steps examples)")
    p.add_argument(
        "--mmap-threshold",
        type=int,
        default=0,
        help="set MALLOC_MMAP_THRESHOLD_ (bytes) in the ranks; 0 = glibc's default (a threshold that grows)",
    )
    p.add_argument("--target", type=float, default=0.6, help="FSDP2 / DDP tensor bytes must be at most this")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fsdp_memory.json"))
    p.add_argument("--build", help=argparse.SUPPRESS)  # child: write the inputs into this folder
    a = p.parse_args()
    if a.build:
        print(json.dumps(build_inputs(a, Path(a.build))))
        return

    load_start = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="fsdp_mem_") as tmp:
        work = Path(tmp)
        build = [
            sys.executable,
            __file__,
            "--build",
            str(work),
            *[f"--{k}={getattr(a, k)}" for k in ("hidden", "layers", "vocab", "batch", "steps")],
        ]
        run(build, child_env(), work / "build.log")  # in a child, so this process never imports torch
        inputs = json.loads((work / "build.log").read_text().strip().splitlines()[-1])
        runs = {mode: measure(mode, a, inputs, work) for mode in ("ddp", "fsdp2")}
    load_end = os.getloadavg()

    ddp, fsdp2 = runs["ddp"]["ranks"], runs["fsdp2"]["ranks"]
    ratios = [f["tensor_total_bytes"] / d["tensor_total_bytes"] for d, f in zip(ddp, fsdp2)]
    worst = max(ratios)
    result = {
        "model": f"random Llama built from a config: hidden {a.hidden}, {a.layers} layers, vocab {a.vocab}, tied "
        f"embeddings, {inputs['params'] / 1e6:.1f}M parameters ({inputs['params'] * 4 / MIB:.0f} MiB in fp32)",
        "setting": {
            "stage": "sft (alignlab.cli main, 2 processes, gloo)",
            "configs": {k: str(v.relative_to(ROOT)) for k, v in CONFIGS.items()},
            "global_batch": a.batch,
            "optimizer_steps": a.steps,
            "optimizer": "AdamW (stage's own; fused under DDP, unfused under FSDP2)",
            "dtype": "float32",
            "threads_per_rank": 1,
            "malloc_mmap_threshold": a.mmap_threshold or "glibc default (dynamic)",
            "device": "cpu",
        },
        "measure": "tensor bytes: storages of this rank's parameters, gradients and optimiser state after the last "
        "optimiser step (DTensor: local shard; each storage once); RSS: VmRSS / VmHWM of each rank",
        "ddp": runs["ddp"],
        "fsdp2": runs["fsdp2"],
        "fsdp2_over_ddp_tensor_bytes_per_rank": [round(r, 3) for r in ratios],
        "fsdp2_over_ddp_peak_rss_per_rank": [
            round(f["peak_rss_mib"] / d["peak_rss_mib"], 3) for d, f in zip(ddp, fsdp2)
        ],
        "fsdp2_over_ddp_peak_rss_above_before_load_per_rank": [
            round(f["peak_above_before_load_mib"] / d["peak_above_before_load_mib"], 3) for d, f in zip(ddp, fsdp2)
        ],
        "target": a.target,
        "target_met": worst <= a.target,
        "loadavg_start": [round(x, 2) for x in load_start],
        "loadavg_end": [round(x, 2) for x in load_end],
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": inputs["torch"],
    }
    for r in range(2):
        d, f = ddp[r], fsdp2[r]
        print(
            f"rank {r}: params+grads+optimiser DDP {d['tensor_total_mib']:.1f} MiB, FSDP2 {f['tensor_total_mib']:.1f} MiB "
            f"({ratios[r]:.3f}x); peak RSS DDP {d['peak_rss_mib']:.0f} MiB, FSDP2 {f['peak_rss_mib']:.0f} MiB",
            file=sys.stderr,
        )
    print(
        f"target <= {a.target}x: {'met' if result['target_met'] else 'NOT met'} (worst rank {worst:.3f}x)",
        file=sys.stderr,
    )
    print(json.dumps(result, indent=2))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
