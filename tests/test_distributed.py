"""Multi-process training on CPU: SFT, PPO and DPO run under `accelerate launch` with 2 processes
(gloo) and match a single-process run with the same global batch.

Why they can match: every rank builds the same global batch and trains on its share
(alignlab/distributed.py); losses are weighted so that DDP's average of the ranks' gradients is
the gradient of the global batch's mean; dropout is off and seeds are the same. What is left is
floating-point summation order (a batch of 8 vs two of 4, an all-reduce instead of one sum).

How they are launched: `accelerate launch --config_file configs/accelerate/cpu_2proc.yaml`. In
accelerate 1.x, `accelerate launch --cpu --num_processes 2` starts ONE process unless MPI is set
up (its multi-CPU path goes through mpirun), so the config file launches through torchrun
instead; each stage runs with --device cpu, so the ranks use gloo even where GPUs exist.

Tolerance: measured on this machine (torch 2.13 CPU, float32): SFT per-step losses agree to 2e-7
relative and the final weights to 1.2e-7 absolute (10 Adam steps); PPO metrics to 2e-5 relative
(the largest is pg_loss, a mean of whitened advantages close to 0, so its relative error is
inflated) and the final weights to 1e-8. We assert |a - b| <= 1e-4 * max(|a|, |b|) + 1e-6 on
losses and metrics and 1e-4 absolute on weights: loose enough for other BLAS builds, far below
what a sharding mistake gives (training on half the batch moved a step's loss by 0.7%, 70x the
tolerance, see test_a_wrong_share_is_caught).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file

from alignlab.outputs import read_metrics
from fixtures_rlhf import free_port, rlhf_inputs  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
CPU_2PROC = ROOT / "configs" / "accelerate" / "cpu_2proc.yaml"
PPO_DRIVER = Path(__file__).with_name("distributed_ppo_driver.py")
LOSS_RTOL = 1e-4
WEIGHT_ATOL = 1e-4


def _env() -> dict[str, str]:
    env = dict(os.environ, OMP_NUM_THREADS="1", ACCELERATE_USE_CPU="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    return env


def _launch(nproc: int, args: list[str], script: Path | None = None) -> None:
    """One run as a subprocess: plain python (1 process) or accelerate launch with 2 processes."""
    target = [str(script)] if script else ["-m", "alignlab.cli"]
    launcher = (
        []
        if nproc == 1
        else [
            *("-m", "accelerate.commands.launch", "--config_file", str(CPU_2PROC), "--num_processes", str(nproc)),
            *("--main_process_port", str(free_port())),
        ]
    )
    cmd = [sys.executable, *launcher, *target, *args]
    r = subprocess.run(cmd, env=_env(), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"{' '.join(cmd)}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-6000:]}"


def _rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), abs(b), 1e-8)


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= LOSS_RTOL * max(abs(a), abs(b)) + 1e-6


def _max_weight_diff(a: Path, b: Path) -> float:
    wa, wb = load_file(str(a)), load_file(str(b))
    assert wa.keys() == wb.keys()
    return max((wa[k] - wb[k]).abs().max().item() for k in wa)


def _assert_written_once(out: Path, steps_logged: int) -> None:
    """Only rank 0 writes: one summary, and metrics.jsonl with each step once (no second rank's lines)."""
    assert (out / "summary.json").exists() and (out / "config.yaml").exists()
    steps = [m["step"] for m in read_metrics(out)]
    assert len(steps) == steps_logged, steps


@pytest.fixture(scope="module")
def sft_data(rlhf_inputs, tmp_path_factory):  # noqa: F811
    """Prompt/completion JSONL from the tiny fixtures: 40 training and 8 validation rows."""
    root = tmp_path_factory.mktemp("dist_sft")
    rows = [json.loads(line) for line in open(rlhf_inputs["preference"])]
    files = {}
    for name, part in (("train", rows[:40]), ("val", rows[40:])):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text(
            "".join(json.dumps({"prompt": r["prompt"], "completion": r["chosen"]}) + "\n" for r in part)
        )
    return files


def _sft_args(inp, data, out, **kw) -> list[str]:
    cfg = dict(
        model=inp["llama_policy"],
        data=str(data["train"]),
        eval_data=str(data["val"]),
        world_dir="",
        judge="loss",
        epochs=2,
        batch_size=8,
        lr=3e-3,
        warmup_steps=2,
        log_interval=1,
        eval_base=False,
        seed=0,
        tensorboard=False,
        device="cpu",
        output_dir=str(out),
    )
    cfg.update(kw)
    return ["sft", *[x for k, v in cfg.items() for x in (f"--{k}", str(v))]]


@pytest.fixture(scope="module")
def sft_one(rlhf_inputs, sft_data, tmp_path_factory):  # noqa: F811
    """SFT in 1 process (global batch 8, 2 epochs: 10 steps): the run both SFT tests compare against."""
    one = tmp_path_factory.mktemp("dist_sft_one") / "one"
    _launch(1, _sft_args(rlhf_inputs, sft_data, one))
    return one


def test_sft_two_processes_match_one(rlhf_inputs, sft_data, sft_one, tmp_path):  # noqa: F811
    """Per-step training loss, per-epoch validation loss and the final weights of SFT on 2 ranks
    (4 examples each) equal those of 1 process (8 examples) -- same global batch, same order."""
    one, two = sft_one, tmp_path / "two"
    _launch(2, _sft_args(rlhf_inputs, sft_data, two))
    m1, m2 = read_metrics(one), read_metrics(two)
    loss1 = [m["loss"] for m in m1 if "loss" in m]
    loss2 = [m["loss"] for m in m2 if "loss" in m]
    assert len(loss1) == len(loss2) == 10  # 2 epochs x 40 // 8 steps
    assert all(_close(a, b) for a, b in zip(loss1, loss2)), (loss1, loss2)
    val1 = [m["val_loss"] for m in m1 if "val_loss" in m]
    val2 = [m["val_loss"] for m in m2 if "val_loss" in m]
    assert len(val1) == 2 and all(_close(a, b) for a, b in zip(val1, val2)), (val1, val2)
    assert loss1[-1] < loss1[0]  # it did train
    assert _max_weight_diff(one / "model.safetensors", two / "model.safetensors") < WEIGHT_ATOL
    _assert_written_once(two, len(m1))
    assert not (two / "checkpoint.tmp").exists()


def test_a_wrong_share_is_caught(rlhf_inputs, sft_data, sft_one, tmp_path):  # noqa: F811
    """The comparison has teeth: a single-process run whose global batch is 4 (what a rank would see if it
    forgot the other rank's half; 1 epoch, so the same 10 steps and lr schedule as the 8-example run)
    differs from the 8-example run far beyond LOSS_RTOL."""
    half = tmp_path / "half"
    _launch(1, _sft_args(rlhf_inputs, sft_data, half, epochs=1, batch_size=4))
    loss_full = [m["loss"] for m in read_metrics(sft_one) if "loss" in m]
    loss_half = [m["loss"] for m in read_metrics(half) if "loss" in m]
    assert len(loss_full) == len(loss_half) == 10
    assert max(_rel(a, b) for a, b in zip(loss_full, loss_half)) > 20 * LOSS_RTOL, (loss_full, loss_half)


def _ppo_args(inp, out, **kw) -> list[str]:
    # minibatch_size = batch_size: one minibatch per PPO epoch, so the minibatch split over ranks
    # cannot change which episodes share an optimiser step (with smaller minibatches each rank
    # shuffles its own share: same statistics, different grouping than one process)
    cfg = {
        "policy": inp["llama_policy"],
        "reward_model": inp["llama_rm"],
        "data": inp["prompts"],
        "world_dir": "",
        "eval.data": inp["prompts"],
        "eval.prompts": 8,
        "eval.greedy": False,
        "ptx.data": "",
        "iterations": 2,
        "batch_size": 8,
        "minibatch_size": 8,
        "ppo_epochs": 2,
        "rollout.max_new_tokens": 8,
        "rollout.gen_batch_size": 8,
        "optim.warmup_steps": 0,
        "optim.lr": 1e-4,
        "run.checkpoint_interval": 1,
        "kl.adaptive": True,
        "kl.target": 0.5,
        "kl.horizon": 20,
        "run.tensorboard": False,
        "run.device": "cpu",
        "run.threads": 1,
        "output_dir": str(out),
    }
    cfg.update(kw)
    return ["ppo", *[x for k, v in cfg.items() for x in (f"--{k}", str(v))]]


@pytest.fixture(scope="module")
def ppo_runs(rlhf_inputs, tmp_path_factory):  # noqa: F811
    root = tmp_path_factory.mktemp("dist_ppo")
    _launch(1, _ppo_args(rlhf_inputs, root / "one"), script=PPO_DRIVER)
    _launch(2, _ppo_args(rlhf_inputs, root / "two"), script=PPO_DRIVER)
    return {"one": root / "one", "two": root / "two"}


def test_ppo_two_processes_match_one(ppo_runs):
    """PPO on 2 ranks vs 1 process, fed the same episodes (tests/distributed_ppo_driver.py samples
    the global batch from one stream on every rank): the reduced metrics (RM score, KL, the
    adaptive beta it drives, policy and value losses) and the final policy and value weights agree.
    This checks the scoring split (global advantage whitening), the token-weighted update, the
    metric reduction, and that only rank 0 writes."""
    one, two = ppo_runs["one"], ppo_runs["two"]
    it1 = [m for m in read_metrics(one) if "kl" in m]
    it2 = [m for m in read_metrics(two) if "kl" in m]
    assert len(it1) == len(it2) == 2
    for a, b in zip(it1, it2):
        for key in ("rm_score_mean", "kl", "beta", "pg_loss", "vf_loss", "reward_mean", "response_len"):
            assert _close(a[key], b[key]), (key, a[key], b[key])
        # not compared: explained_var, return_var, entropy, value_mean are masked statistics each rank
        # computes over its own tokens; the log holds their mean over ranks, close to but not the
        # global batch's value (documented in docs/distributed.md)
    assert it1[-1]["beta"] != it1[0]["beta"]  # the adaptive beta moved (and, checked above, alike on both runs)
    assert _max_weight_diff(one / "model.safetensors", two / "model.safetensors") < WEIGHT_ATOL
    assert (
        _max_weight_diff(one / "value_model" / "model.safetensors", two / "value_model" / "model.safetensors")
        < WEIGHT_ATOL
    )
    _assert_written_once(two, len(read_metrics(one)))
    assert (two / "checkpoint" / "trainer_state.json").exists()


def test_ppo_resumes_under_two_processes(rlhf_inputs, ppo_runs, tmp_path):  # noqa: F811
    """A copy of the 2-process run, resumed on 2 processes from its checkpoint (saved by rank 0 after
    iteration 1, both ranks waiting), redoes iteration 2 and ends with the same weights: every rank
    reloads the same policy, value model, optimisers and KL controller."""
    resumed = tmp_path / "resumed"
    shutil.copytree(ppo_runs["two"], resumed)
    _launch(2, _ppo_args(rlhf_inputs, resumed, **{"run.resume": True}), script=PPO_DRIVER)
    assert json.loads((resumed / "summary.json").read_text())["resumed_from_iteration"] == 1
    assert _max_weight_diff(ppo_runs["two"] / "model.safetensors", resumed / "model.safetensors") < WEIGHT_ATOL


def test_dpo_two_processes_match_one(rlhf_inputs, tmp_path):  # noqa: F811
    """DPO (which used to refuse more than one process) on 2 ranks matches 1 process: pair-weighted
    loss over the global batch, validation sharded and reduced, one writer."""

    def args(out):
        cfg = {
            "policy": rlhf_inputs["llama_policy"],
            "data": rlhf_inputs["ranked"],
            "eval_split": "",
            "world_dir": "",
            "eval_data": rlhf_inputs["prompts"],
            "eval_data_split": "train",
            "eval_prompts": 8,
            "max_new_tokens": 8,
            "max_steps": 4,
            "batch_size": 8,
            "warmup_steps": 1,
            "log_interval": 1,
            "checkpoint_interval": 2,
            "max_len": 64,
            "tensorboard": False,
            "device": "cpu",
            "threads": 1,
            "output_dir": str(out),
        }
        return ["dpo", *[x for k, v in cfg.items() for x in (f"--{k}", str(v))]]

    one, two = tmp_path / "one", tmp_path / "two"
    _launch(1, args(one))
    _launch(2, args(two))
    l1 = [m["loss"] for m in read_metrics(one) if "loss" in m]
    l2 = [m["loss"] for m in read_metrics(two) if "loss" in m]
    assert len(l1) == len(l2) == 4 and all(_close(a, b) for a, b in zip(l1, l2)), (l1, l2)
    assert _max_weight_diff(one / "model.safetensors", two / "model.safetensors") < WEIGHT_ATOL
    _assert_written_once(two, len(read_metrics(one)))


@pytest.mark.parametrize(
    "name",
    ["single_gpu", "multi_gpu_ddp", "fsdp", "fsdp2_cpu_2proc", "deepspeed_zero2", "deepspeed_zero3", "cpu_2proc"],
)
def test_accelerate_config_files_are_valid(name):
    """Each shipped config loads as accelerate's own config class (unknown top-level keys raise
    there), and every fsdp_config / deepspeed_config key is an option `accelerate launch` knows
    (those are copied onto the launch arguments, where a misspelt one would be silently ignored)."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    cfg = ClusterConfig.from_yaml_file(str(ROOT / "configs" / "accelerate" / f"{name}.yaml"))
    known = {a.dest for a in launch_command_parser()._actions}
    for key in list(cfg.fsdp_config) + list(cfg.deepspeed_config):
        assert key in known, f"{name}.yaml: {key} is not an accelerate launch option"
    assert cfg.num_processes >= 1


def test_sharded_parameters_and_ppo_under_deepspeed_are_refused_with_the_reason():
    """FSDP (outside fsdp.FSDP_STAGES) and ZeRO-3 would save and sample from sharded parameters;
    PPO's two optimisers do not fit one DeepSpeed engine: each is refused before any work, the others run."""
    from accelerate.utils import DistributedType

    from alignlab.distributed import unsupported_parallelism

    assert "sharded" in unsupported_parallelism(DistributedType.FSDP, None, "compare")
    assert unsupported_parallelism(DistributedType.FSDP, None, "sft") is None
    assert "ZeRO-3" in unsupported_parallelism(DistributedType.DEEPSPEED, 3, "reward")
    assert "two optimisers" in unsupported_parallelism(DistributedType.DEEPSPEED, 2, "ppo")
    assert unsupported_parallelism(DistributedType.DEEPSPEED, 2, "sft") is None
    for kind in (DistributedType.NO, DistributedType.MULTI_GPU, DistributedType.MULTI_CPU):
        assert unsupported_parallelism(kind, None, "ppo") is None
