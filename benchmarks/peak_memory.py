"""Peak resident memory (RSS) of each training stage, each run in a fresh process.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/peak_memory.py --runs runs/default

Each stage runs through the CLI (``python -m alignlab.cli <stage> --preset <preset> ...``) in its own
child process, on the models and data of a finished pipeline run (``--runs``), with a few steps
only and outputs in a temporary folder; the parent reads that child's ``ru_maxrss`` from
``os.wait4``. The first row, ``import``, is a child that only imports the stages (Python, torch,
transformers, accelerate): the floor under every stage. Peak RSS includes evaluation and
generation that the stage does before/after training (held-out samples, validation).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def stage_args(runs: Path, out: Path, preset: str) -> dict[str, list[str]]:
    """CLI arguments of each stage: the run's own models and data, few steps, small evaluations."""
    world = runs / "world"
    common = ["--preset", preset, "--tensorboard", "false", "--device", "cpu"]
    return {
        "sft": [
            *common,
            "--model",
            str(runs / "pretrain"),
            "--data",
            str(world / "sft"),
            "--world_dir",
            str(world),
            "--epochs",
            "1",
            "--val_prompts",
            "64",
            "--output_dir",
            str(out / "sft"),
        ],
        "reward": [
            *common,
            "--model",
            str(runs / "sft"),
            "--data",
            str(runs / "compare" / "comparisons"),
            "--world_dir",
            str(world),
            "--max_prompts",
            "128",
            "--checkpoint_interval",
            "0",
            "--output_dir",
            str(out / "reward"),
        ],
        "ppo": [
            *common,
            "--policy",
            str(runs / "sft"),
            "--reward_model",
            str(runs / "reward"),
            "--data",
            str(world / "ppo"),
            "--world_dir",
            str(world),
            "--ptx_data",
            str(world / "corpus"),
            "--iterations",
            "2",
            "--eval_prompts",
            "32",
            "--checkpoint_interval",
            "0",
            "--output_dir",
            str(out / "ppo"),
        ],
        "dpo": [
            *common,
            "--policy",
            str(runs / "sft"),
            "--data",
            str(runs / "compare" / "comparisons"),
            "--world_dir",
            str(world),
            "--max_steps",
            "4",
            "--eval_prompts",
            "32",
            "--eval_max_prompts",
            "32",
            "--checkpoint_interval",
            "0",
            "--output_dir",
            str(out / "dpo"),
        ],
    }


def run_child(cmd: list[str], env: dict[str, str], log: Path) -> dict:
    t = time.perf_counter()
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    res = {
        "peak_rss_mib": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
        "seconds": round(time.perf_counter() - t, 1),
        "exit_code": proc.returncode,
    }
    if proc.returncode:
        res["log_tail"] = log.read_text()[-2000:]
    return res


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="runs/default", help="a finished pipeline run: its models and data are read")
    p.add_argument("--preset", default="default", help="preset of every stage (default or smoke)")
    p.add_argument("--stages", default="sft,reward,ppo,dpo")
    p.add_argument("--threads", type=int, default=1, help="OMP_NUM_THREADS of the children")
    p.add_argument("--out", default="benchmarks/results/peak_memory.json")
    a = p.parse_args()
    runs = Path(a.runs).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench_mem_"))
    env = {**os.environ, "OMP_NUM_THREADS": str(a.threads), "TOKENIZERS_PARALLELISM": "false"}
    src = Path(__file__).resolve().parents[1] / "src"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(src), env.get("PYTHONPATH")]))  # this checkout's alignlab
    result = {
        "setting": {**vars(a), "runs": str(runs)},
        "loadavg_start": os.getloadavg(),
        "machine": platform.processor() or platform.machine(),
        "python": sys.executable,
        "stages": {},
    }
    imports = (
        "import torch, transformers, accelerate; import alignlab.stages.sft, alignlab.stages.reward, "
        "alignlab.stages.ppo, alignlab.stages.dpo"
    )
    result["stages"]["import"] = run_child([sys.executable, "-c", imports], env, tmp / "import.log")
    print(f"{'import':8} {result['stages']['import']['peak_rss_mib']:8.1f} MiB")
    args = stage_args(runs, tmp / "out", a.preset)
    for stage in a.stages.split(","):
        res = run_child([sys.executable, "-m", "alignlab.cli", stage, *args[stage]], env, tmp / f"{stage}.log")
        res["command"] = f"python -m alignlab.cli {stage} " + " ".join(args[stage]).replace(str(tmp), "$TMP")
        result["stages"][stage] = res
        flag = "" if res["exit_code"] == 0 else f"  FAILED (exit {res['exit_code']}):\n{res['log_tail']}"
        print(f"{stage:8} {res['peak_rss_mib']:8.1f} MiB  ({res['seconds']} s){flag}")
    result["loadavg_end"] = os.getloadavg()
    shutil.rmtree(tmp, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {a.out}")
    if any(r["exit_code"] for r in result["stages"].values()):
        sys.exit(1)


if __name__ == "__main__":
    main()
