"""FSDP2 (torch fully_shard) on 2 CPU processes (gloo): each stage that supports it matches a 1-process
run, its parameters really are sharded, and what it saves is a whole model plain transformers loads.

Launched with `accelerate launch --config_file configs/accelerate/fsdp2_cpu_2proc.yaml`: accelerate
itself does not shard on CPU (it would wrap in DDP), so the stage reads the FSDP request from the launch
environment and calls fully_shard (alignlab/fsdp.py). ALIGNLAB_FSDP_REPORT makes each rank write, per
sharded model, every parameter's type and local/full shape: the proof that each rank held half.

Cost: starting a 2-process launch (interpreters, imports) costs more than a tiny stage's run, so the
1-process reference runs happen in the test process, and pretrain, SFT, the reward model and DPO share one
sharded launch (tests/fsdp_stages_driver.py); PPO has its own (it is killed and resumed).

Tolerances: losses as in test_distributed.py (see its docstring); weights within 1e-5 (FSDP_WEIGHT_ATOL),
except the reward model's. What is left between the runs is summation order (reduce-scatter instead of one
sum) and the unfused AdamW that DTensors need. The reward model's published weights differ from 1 process
by 5.2e-5 in one element (every other below 1e-6), and a DDP run on 2 processes with the same settings
differs by exactly the same 5.2e-5 (measured once, a one-off diagnostic): it is the 2-process gradient
sum's rounding, which Adam at lr 5e-3 turns into a step on a near-zero gradient, not sharding. So the
reward model is held to DDP's tolerance (WEIGHT_ATOL, 1e-4).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alignlab.outputs import read_metrics
from fixtures_rlhf import free_port, rlhf_inputs  # noqa: F401
from test_distributed import PPO_DRIVER, WEIGHT_ATOL, _close, _max_weight_diff, _ppo_args, _sft_args, sft_data  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
FSDP_2PROC = ROOT / "configs" / "accelerate" / "fsdp2_cpu_2proc.yaml"
STAGES_DRIVER = Path(__file__).with_name("fsdp_stages_driver.py")
FSDP_WEIGHT_ATOL = 1e-5


def _launch(args: list[str], report: Path | None = None, script: Path | None = None, kill: str = "") -> None:
    """A run sharded over 2 processes: accelerate launch with the FSDP2 CPU config. ``kill``: every rank
    SIGKILLs itself at that fault point (alignlab/faults.py), and the launch must fail."""
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", ALIGNLAB_KILL_AT=kill)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), env.get("PYTHONPATH", "")])
    if report is not None:
        env["ALIGNLAB_FSDP_REPORT"] = str(report)
    target = [str(script)] if script else ["-m", "alignlab.cli"]
    launch = [
        "-m",
        "accelerate.commands.launch",
        "--config_file",
        str(FSDP_2PROC),
        "--main_process_port",
        str(free_port()),
    ]
    cmd = [sys.executable, *launch, *target, *args]
    r = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert (r.returncode != 0) == bool(kill), (
        f"{' '.join(cmd)}\n--- stdout\n{r.stdout[-3000:]}\n--- stderr\n{r.stderr[-6000:]}"
    )


def _run_here(args: list[str], monkeypatch=None) -> None:
    """The 1-process reference run, in this process with 1 thread like each rank: no interpreter to start
    (its imports cost ~8 s on 2 busy cores). ``monkeypatch``: with the PPO driver's global-batch rollout."""
    from alignlab.cli import main
    from alignlab.training import cpu_threads

    if monkeypatch is not None:
        from alignlab.stages import ppo
        from distributed_ppo_driver import global_batch_rollout

        monkeypatch.setattr(ppo.PPOTrainer, "rollout", global_batch_rollout)
    with cpu_threads(1):
        assert main(args) == 0


def _assert_sharded(report: Path, tag: str) -> None:
    """Every parameter is a DTensor on both ranks, and the two local shards add up to the full tensor."""
    ranks = [json.loads((report / f"{tag}.rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0].keys() == ranks[1].keys() and ranks[0]
    for name, (kind, local, full) in ranks[0].items():
        other = ranks[1][name]
        assert kind == other[0] == "DTensor", (name, kind)
        assert local[0] + other[1][0] == full[0] and local[1:] == full[1:], (name, local, other[1], full)
        assert local[0] < full[0] or full[0] == 1, (name, local, full)  # really split (but a 1-row tensor)


def _loads_and_generates(folder: Path, auto_cls: str = "AutoModelForCausalLM") -> None:
    import torch
    import transformers

    model = getattr(transformers, auto_cls).from_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    assert not any(a.startswith("FSDP") for a in config["architectures"]), config["architectures"]
    if auto_cls == "AutoModelForCausalLM":
        out = model.generate(torch.tensor([[1, 5, 7]]), max_new_tokens=4, do_sample=False)
        assert out.shape[1] > 3


def _dpo_args(inp, out, **kw) -> list[str]:
    cfg = {
        "policy": inp["llama_policy"],
        "data": inp["ranked"],
        "eval_split": "",
        "world_dir": "",
        "eval_data": inp["prompts"],
        "eval_data_split": "train",
        "eval_prompts": 5,
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
    cfg.update(kw)
    return ["dpo", *[x for k, v in cfg.items() for x in (f"--{k}", str(v))]]


def _reward_args(inp, data, out) -> list[str]:
    cfg = {
        "model": inp["llama_policy"],
        "data": inp["ranked"],
        "eval_fraction": 0.1,  # 5 held-out prompts, 9 and 6 responses: rank 1 has a batch fewer (idle_forwards)
        "world_dir": "",
        "demonstrations": str(data["val"]),
        "demonstrations_split": "train",
        "batch_size": 8,
        "epochs": 1,
        "max_prompts": 32,  # 4 steps
        "eval_batch_size": 3,
        "lr": 5e-3,
        "warmup_steps": 0,
        "checkpoint_interval": 2,
        "log_interval": 1,
        "tensorboard": False,
        "device": "cpu",
        "output_dir": str(out),
    }
    return ["reward", *[x for k, v in cfg.items() for x in (f"--{k}", str(v))]]


def _pretrain_args(corpus, out) -> list[str]:
    cfg = {
        "data": corpus["corpus"],
        "source.tokenizer": corpus["tokenizer"],
        "max_steps": 4,
        "eval_interval": 2,
        "eval_blocks": 5,  # the held-out loss: every rank runs every block (no split, same forwards)
        "run.checkpoint_interval": 2,
        "run.log_interval": 1,
        "run.tensorboard": False,
        "run.device": "cpu",
        "output_dir": str(out),
    }
    return ["pretrain", "--preset", "smoke", *[x for k, v in cfg.items() for x in (f"--{k}", str(v))]]


@pytest.fixture(scope="module")
def stage_runs(rlhf_inputs, sft_data, tiny_corpus, tmp_path_factory):  # noqa: F811
    """SFT (on the qwen2 kind: grouped-query attention, biased q/k/v, tied embeddings), the reward model, DPO
    and pretraining, each run by 1 process here and sharded over 2 in one launch (tests/fsdp_stages_driver.py)."""
    root = tmp_path_factory.mktemp("fsdp_stages")
    args = {
        "sft": lambda out: _sft_args(rlhf_inputs, sft_data, out, model=rlhf_inputs["qwen2_policy"]),
        "reward": lambda out: _reward_args(rlhf_inputs, sft_data, out),
        "dpo": lambda out: _dpo_args(rlhf_inputs, out),
        "pretrain": lambda out: _pretrain_args(tiny_corpus, out),
    }
    for stage, make in args.items():
        _run_here(make(root / stage / "one"))
    sharded = [x for stage, make in args.items() for x in [":::", *make(root / stage / "two")]]
    sampler = ["sampler", rlhf_inputs["llama_policy"], str(root / "sampler")]
    _launch([*sampler, *sharded], report=root / "report", script=STAGES_DRIVER)
    return root


def test_sharded_sampling_keeps_ranks_in_step(stage_runs):
    """The KV-cache sampler on a sharded model: ranks with different numbers of prompts (one batch against
    two, then none against two) and rows stopping at different steps sample exactly what the whole model
    samples with the same seed, and nobody hangs (every forward is a collective: kv_sampler's lockstep)."""
    ranks = [json.loads((stage_runs / f"sampler.rank{r}.json").read_text()) for r in (0, 1)]
    for r in ranks:
        assert r["uneven"]["same"] and r["empty"]["same"], ranks
    assert len(set(ranks[0]["uneven"]["lengths"])) > 1, ranks  # rows did stop at different steps
    assert ranks[1]["empty"]["lengths"] == [] and len(ranks[0]["empty"]["lengths"]) == 4


def _compare(root: Path, stage: str, keys: tuple[str, ...]) -> tuple[Path, Path]:
    """The 1-process and the sharded run of ``stage``: the same numbers under ``keys`` at every step, the same
    weights; the sharded one's parameters were split between the ranks and its model loads with transformers."""
    one, two = root / stage / "one", root / stage / "two"
    m1, m2 = read_metrics(one), read_metrics(two)
    for key in keys:
        a, b = [m[key] for m in m1 if key in m], [m[key] for m in m2 if key in m]
        assert len(a) == len(b) > 0 and all(_close(x, y) for x, y in zip(a, b)), (key, a, b)
    atol = WEIGHT_ATOL if stage == "reward" else FSDP_WEIGHT_ATOL  # see the module notes
    assert _max_weight_diff(one / "model.safetensors", two / "model.safetensors") < atol
    _assert_sharded(root / "report", stage)
    assert (two / "checkpoint" / "sharded").is_dir() and not (two / "checkpoint" / "optimizer.pt").exists()
    return one, two


def test_sft_fsdp2_matches_one_process(stage_runs):
    """SFT sharded over 2 ranks: per-step and validation losses (a rank runs a throwaway validation batch) and
    the published weights match 1 process; the checkpoint of epoch 1 holds shards; the model generates."""
    _, two = _compare(stage_runs, "sft", ("loss", "val_loss"))
    _loads_and_generates(two)


def test_reward_fsdp2_matches_one_process(stage_runs):
    """The reward model (a sequence classifier) sharded over 2 ranks: per-step loss and accuracy, the
    validation loss, the reward shift measured on the demonstrations and the weights match 1 process."""
    one, two = _compare(stage_runs, "reward", ("loss", "accuracy", "val_loss"))
    s1, s2 = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert s1["val_pairs"] == s2["val_pairs"] and _close(s1["reward_shift"], s2["reward_shift"])
    _loads_and_generates(two, "AutoModelForSequenceClassification")


def test_dpo_fsdp2_matches_one_process(stage_runs):
    """DPO with the policy sharded over 2 ranks (the frozen reference whole on each): per-step losses and the
    published weights match 1 process."""
    _, two = _compare(stage_runs, "dpo", ("loss",))
    _loads_and_generates(two)


def test_pretrain_fsdp2_matches_one_process(stage_runs):
    """Pretraining sharded over 2 ranks: per-step and held-out losses and the published weights match 1 process;
    rank 0 samples its peek from the published copy."""
    _, two = _compare(stage_runs, "pretrain", ("loss", "eval_loss"))
    _loads_and_generates(two)
    assert json.loads((two / "samples.json").read_text())


def test_ppo_fsdp2_killed_and_resumed_matches_one_process(rlhf_inputs, tmp_path, monkeypatch):  # noqa: F811
    """PPO with the policy and the value model sharded over 2 ranks (reference and reward model whole on
    each), fed the same episodes as 1 process (tests/distributed_ppo_driver.py), SIGKILLed on both ranks
    after iteration 2 and resumed from the sharded checkpoint of iteration 1 (both models and both
    optimisers, torch.distributed.checkpoint): every iteration's reduced metrics and the published policy
    and value weights match the uninterrupted 1-process run; both trained models were split between the
    ranks; the published folders load with plain transformers."""
    one, two, report = tmp_path / "one", tmp_path / "two", tmp_path / "report"
    _run_here(_ppo_args(rlhf_inputs, one), monkeypatch)
    _launch(_ppo_args(rlhf_inputs, two), report=report, script=PPO_DRIVER, kill="step:2")
    assert (two / "checkpoint" / "sharded").is_dir() and not (two / "summary.json").exists()
    _assert_sharded(report, "policy")
    _assert_sharded(report, "value")
    _launch(_ppo_args(rlhf_inputs, two, **{"run.resume": True}), script=PPO_DRIVER)
    assert json.loads((two / "summary.json").read_text())["resumed_from_iteration"] == 1
    it1 = [m for m in read_metrics(one) if "kl" in m]
    it2 = [m for m in read_metrics(two) if "kl" in m]
    assert len(it1) == len(it2) == 2
    for a, b in zip(it1, it2):
        for key in ("rm_score_mean", "kl", "beta", "pg_loss", "vf_loss", "reward_mean", "response_len"):
            assert _close(a[key], b[key]), (key, a[key], b[key])
    for part in ("", "value_model"):
        assert _max_weight_diff(one / part / "model.safetensors", two / part / "model.safetensors") < FSDP_WEIGHT_ATOL
    _loads_and_generates(two)
    _loads_and_generates(two / "value_model", "AutoModelForSequenceClassification")


def test_what_fsdp2_cannot_run_is_refused_by_name(monkeypatch):
    """Refused at start, with the reason: a stage without FSDP2 support (run.fsdp, or an FSDP launch, which
    accelerate reports as plain multi-process on CPU), one process, LoRA, and PPO's vLLM rollouts."""
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from alignlab import fsdp
    from alignlab.distributed import unsupported_parallelism
    from alignlab.errors import ConfigError
    from alignlab.stages import ppo, ppo_setup
    from alignlab.stages.ppo_config import RolloutSettings

    two = SimpleNamespace(num_processes=2)
    with pytest.raises(ConfigError, match="compare: run.fsdp is not supported for this stage yet"):
        fsdp.check_supported(two, "compare")
    with pytest.raises(ConfigError, match="needs 2 or more processes"):
        fsdp.check_supported(SimpleNamespace(num_processes=1), "sft")
    with pytest.raises(ConfigError, match="LoRA under FSDP2 is not supported"):
        fsdp.check_supported(two, "ppo", lora=True)
    with pytest.raises(ConfigError, match="rollout.backend='vllm' under FSDP2"):
        ppo_setup.check_sharded(ppo.PPOConfig(rollout=RolloutSettings(backend="vllm")))
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    assert fsdp.launched_with_fsdp() and fsdp.requested(two, False)
    assert "sharded" in unsupported_parallelism(DistributedType.FSDP, None, "compare")
    assert unsupported_parallelism(DistributedType.FSDP, None, "ppo") is None
