"""Study: does a small aligned model beat a large base model? InstructGPT's Figure 1 (``alignlab study sizes``).

InstructGPT's headline: labelers prefer the 1.3B PPO-ptx model to the 175B GPT-3, prompted or not. Here the
whole recipe runs at several model sizes on ONE world: each size gets its own pretraining, SFT, comparisons,
reward model (initialised from that size's SFT, as the pipeline does), PPO and PPO-ptx, in
``OUT/<size>/``, a pipeline run whose world and tokenizer are links to the run's. Every size is pretrained on
the same tokens (the pipeline's steps, batch and sequence length: GPT-3's sizes all saw the same 300B tokens),
and every later step keeps the pipeline's settings; only the model's shape changes.

Each size's policies -- the base model asked through the chat template ("GPT"), the base model after a
few-shot prefix ("GPT prompted", ``evaluate.few_shot``), SFT, PPO and PPO-ptx -- are judged against the
LARGEST size's SFT policy, by the training labelers and by held-out labelers (``OUT/evaluate/<size>``). A
head-to-head evaluation (``OUT/evaluate/head_to_head``) then answers the headline directly: the smallest
PPO-ptx against the largest base model, unprompted and prompted.

Steps are pipeline steps and evaluations are kept once finished, so a killed study resumes where it stopped.
Writes ``OUT/summary.json`` (every point with its 95% interval) and ``OUT/sizes.png``; the run's report picks
them up from ``RUN/study_sizes``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.config import ConfigError, arg, check_output_name
from alignlab.outputs import atomic_write_json, read_summary
from alignlab.studies.flan_sizes import flan_across_sizes
from alignlab.studies.links import link_finished_step

# The steps each size runs; the world and tokenizer are the run's own (linked).
SIZE_STEPS = ["pretrain", "sft", "compare", "reward", "ppo", "ppo_ptx"]
# The lines of Figure 1 (evaluation policy name -> label), in the paper's order.
METHODS = {
    "base": "base (GPT)",
    "base_prompted": "base, few-shot prompted (GPT prompted)",
    "sft": "SFT",
    "ppo": "PPO",
    "ppo_ptx": "PPO-ptx",
}
SHAPE_KEYS = ("d_model", "n_layer", "n_head", "d_ff")
# The pipeline's default pretraining shape (stages/pretrain.py ModelConfig) and two smaller ones, each halving
# d_model and d_ff at the same depth (heads 32 wide), so every step divides the non-embedding parameters by 4:
# 53.5k, 214k, 853k (16x; InstructGPT's 1.3B to 175B is 135x). Estimated 25-30 min on 2 idle CPU cores: the
# pipeline's own d128 steps (about 11 min) plus the smaller sizes, whose pretraining steps take 0.6x and 0.43x as
# long and whose sampling-bound steps (comparisons, PPO) barely shrink.
DEFAULT_SIZES = [
    {"name": "d32", "d_model": 32, "n_layer": 4, "n_head": 1, "d_ff": 96},
    {"name": "d64", "d_model": 64, "n_layer": 4, "n_head": 2, "d_ff": 192},
    {"name": "d128", "d_model": 128, "n_layer": 4, "n_head": 4, "d_ff": 384},
]
# The smoke pipeline's shape (d_model 64, 2 layers) halved the same way: 6.7k, 26.8k, 107k.
SMOKE_SIZES = [
    {"name": "d16", "d_model": 16, "n_layer": 2, "n_head": 1, "d_ff": 48},
    {"name": "d32", "d_model": 32, "n_layer": 2, "n_head": 1, "d_ff": 96},
    {"name": "d64", "d_model": 64, "n_layer": 2, "n_head": 2, "d_ff": 192},
]


@dataclass
class SizeStudyConfig:
    run_dir: str = arg("runs/default", "a pipeline run: its world and tokenizer are every size's")
    preset: str = arg(
        "", "the pipeline preset of every size's steps; empty = the run's own (its config.yaml), else default"
    )
    sizes: list[dict] = arg(
        factory=lambda: [dict(s) for s in DEFAULT_SIZES],
        help="model shapes to train, each {name, d_model, n_layer, n_head, d_ff}; the largest (in non-embedding "
        "parameters) gives the SFT baseline",
    )
    seed: int = arg(0, "training seed of every size")
    few_shot_k: int = arg(3, "demonstrations in the prompted base model's prefix (from the world's SFT train split)")
    eval_prompts: int = arg(0, "held-out test prompts each evaluation uses (the first N); 0 = all")
    device: str = arg("auto", "auto, cpu or cuda: every step's and every evaluation's device")
    stage_overrides: dict = arg(
        factory=dict,
        help="per-step settings for every size, e.g. {ppo: {iterations: 10}} (steps: "
        f"{', '.join(SIZE_STEPS)}); the model's shape comes from `sizes`",
    )
    flan_seeds: list[int] = arg(
        factory=lambda: [0, 1, 2],
        help="seeds of FLAN's scale study (instruct-tune on each size's base model, held-out clusters); empty = skip",
    )
    study_dir: str = arg("", "where the sizes' runs, evaluations and summary.json go; empty = RUN/study_sizes")
    redo: list[str] = arg(factory=list, help="sizes to retrain from scratch, or 'evaluate' to judge again")

    @property
    def output_dir(self) -> str:
        return self.study_dir or str(Path(self.run_dir) / "study_sizes")

    def __post_init__(self) -> None:
        if len(self.sizes) < 2:
            raise ConfigError("study sizes: 'sizes' needs at least two model shapes to compare")
        for i, size in enumerate(self.sizes):
            check_size(size, f"sizes[{i}]")
        names = [s["name"] for s in self.sizes]
        if len(set(names)) < len(names):
            raise ConfigError(f"study sizes: 'sizes' names must differ, got {names}")
        bad = [s for s in self.stage_overrides if s not in SIZE_STEPS]
        if bad:
            raise ConfigError(f"study sizes: 'stage_overrides' has step(s) {bad}; a size runs {', '.join(SIZE_STEPS)}")
        if any(k.split(".")[0] == "model" for k in self.stage_overrides.get("pretrain") or {}):
            raise ConfigError("study sizes: 'stage_overrides.pretrain.model': each size's shape comes from 'sizes'")
        if self.few_shot_k < 1:
            raise ConfigError(f"study sizes: 'few_shot_k' must be >= 1, got {self.few_shot_k}")
        unknown = [r for r in self.redo if r not in [*names, "evaluate"]]
        if unknown:
            raise ConfigError(f"study sizes: 'redo' has unknown size(s) {unknown}; known: {', '.join(names)}, evaluate")


def check_size(size: Any, key: str, where: str = "study sizes") -> None:
    if not isinstance(size, dict) or set(size) != {"name", *SHAPE_KEYS}:
        got = sorted(size) if isinstance(size, dict) else size
        raise ConfigError(f"{where}: '{key}' must have exactly the keys name, {', '.join(SHAPE_KEYS)}; got {got}")
    check_output_name(str(size["name"]), f"{where}: '{key}.name'")
    for k in SHAPE_KEYS:
        if not isinstance(size[k], int) or isinstance(size[k], bool) or size[k] < 1:
            raise ConfigError(f"{where}: '{key}.{k}' must be a positive integer, got {size[k]!r}")
    if size["d_model"] % size["n_head"]:
        raise ConfigError(f"{where}: '{key}': d_model {size['d_model']} is not divisible by n_head {size['n_head']}")


PRESETS = {
    # The smoke world's context (64 tokens) leaves no room for a few-shot prefix: every size reads 128.
    "smoke": {
        "preset": "smoke",
        "sizes": SMOKE_SIZES,
        "stage_overrides": {"pretrain": {"seq_len": 128}},
        "flan_seeds": [0],
    },
    "default": {},
}


def non_embedding_params(size: dict) -> int:
    """Non-embedding parameters of a Llama of this shape (the x axis of Figure 1: Kaplan et al.'s count)."""
    from alignlab.models.llama import build_llama, llama_config
    from alignlab.models.llama import non_embedding_params as count

    shape = {k: size[k] for k in SHAPE_KEYS}
    return count(
        build_llama(llama_config(8, **shape, max_seq_len=8, bos_token_id=0, eos_token_id=1, pad_token_id=2), 0)
    )


def _preset(cfg: SizeStudyConfig) -> str:
    import yaml

    if cfg.preset:
        return cfg.preset
    path = Path(cfg.run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("preset", "default") if path.is_file() else "default"


def _overrides(cfg: SizeStudyConfig, size: dict, steps: list[str]) -> dict[str, dict]:
    """Each step's overrides: the study's, the size's shape for pretraining, and the device."""
    from alignlab.config import dotted_to_nested

    out = {step: dotted_to_nested(dict(cfg.stage_overrides.get(step) or {})) for step in steps}
    out["pretrain"]["model"] = {k: size[k] for k in SHAPE_KEYS}
    if cfg.device != "auto":
        for step in steps:
            out[step]["run"] = {**out[step].get("run", {}), "device": cfg.device}
    return out


def size_pipeline(cfg: SizeStudyConfig, size: dict, steps: list[str] = SIZE_STEPS):
    """The pipeline of one size in OUT/<size>: the run's world and tokenizer (linked), the size's own ``steps``
    (a prefix of SIZE_STEPS, starting with pretraining)."""
    from alignlab.stages.pipeline import PipelineConfig

    return PipelineConfig(
        preset=_preset(cfg),
        output_dir=str(Path(cfg.output_dir) / size["name"]),
        stages=list(steps),
        seeds=[cfg.seed],
        redo=list(steps) if size["name"] in cfg.redo else [],
        stage_overrides=_overrides(cfg, size, steps),
    )


def train_size(cfg: SizeStudyConfig, size: dict, steps: list[str] = SIZE_STEPS) -> dict[str, Any]:
    """Run (or resume) one size's ``steps``; each step's wall time (its summary.json's own)."""
    from alignlab.stages.pipeline import run as run_pipeline

    pcfg = size_pipeline(cfg, size, steps)
    folder, run = Path(pcfg.output_dir), Path(cfg.run_dir)
    folder.mkdir(parents=True, exist_ok=True)
    for shared in ("world", "tokenizer"):
        link_finished_step(run / shared, folder / shared)
    shape = ", ".join(f"{k} {size[k]}" for k in SHAPE_KEYS)
    print(f"[study] size {size['name']} ({shape}) -> {folder}", flush=True)
    run_pipeline(pcfg)
    return {step: (read_summary(folder / step) or {}).get("wall_seconds") for step in steps}


def evaluate_config(cfg: SizeStudyConfig, out: Path, policies: dict[str, Path], baseline: str, few_shot: list[str]):
    """The pipeline's evaluation settings at the run's preset, judging ``policies`` against ``baseline``."""
    from alignlab.config import resolve
    from alignlab.stages.registry import STAGES

    cls, presets, _ = STAGES["evaluate"].load()
    preset = _preset(cfg)
    return dataclasses.replace(
        resolve(cls, presets, preset if preset in presets else None),
        data=str(Path(cfg.run_dir) / "world" / "test"),
        world_dir=str(Path(cfg.run_dir) / "world"),
        output_dir=str(out),
        policies={k: str(v) for k, v in policies.items()},
        seed=cfg.seed,
        baseline=baseline,
        base="base",
        few_shot=few_shot,
        few_shot_k=cfg.few_shot_k,
        max_prompts=cfg.eval_prompts,
        device=cfg.device,
        # Figure 1 is win rates: the alignment tax, the gold ceiling and the held-out constraint probe are the
        # pipeline evaluation's
        alignment_tax=False,
        headroom_n=[],
        probe_split="",
    )


def evaluate(cfg: SizeStudyConfig, out: Path, policies: dict[str, Path], baseline: str, few_shot: list[str]) -> dict:
    """Judge ``policies`` against ``baseline`` into ``out``; a finished evaluation is kept unless a policy finished
    after it or its settings changed. Its results.json."""
    from alignlab.stages.pipeline import config_changes, newer_upstream
    from alignlab.stages.registry import run_stage

    ev = evaluate_config(cfg, out, policies, baseline, few_shot)
    done = read_summary(out) is not None and "evaluate" not in cfg.redo
    if done and (why := newer_upstream(out, sorted(set(policies.values()))) or config_changes(out, ev)):
        print(f"[study] {out.name}: changed since it was evaluated ({'; '.join(why)}); evaluating again", flush=True)
        done = False
    if done:
        print(f"[study] {out.name}: already evaluated ({out}), skipping", flush=True)
    else:
        print(f"[study] evaluating {', '.join(policies)} against {baseline} -> {out}", flush=True)
        run_stage("evaluate", ev)
    return json.loads((out / "results.json").read_text())


def largest(cfg: SizeStudyConfig, params: dict[str, int]) -> dict:
    return max(cfg.sizes, key=lambda s: params[s["name"]])


def smallest(cfg: SizeStudyConfig, params: dict[str, int]) -> dict:
    return min(cfg.sizes, key=lambda s: params[s["name"]])


def evaluate_size(cfg: SizeStudyConfig, size: dict, baseline_sft: Path) -> dict:
    """One size's policies against the largest size's SFT."""
    folder = Path(cfg.output_dir) / size["name"]
    policies = {m: folder / ("pretrain" if m.startswith("base") else m) for m in METHODS}
    policies["largest_sft"] = baseline_sft
    return evaluate(cfg, Path(cfg.output_dir) / "evaluate" / size["name"], policies, "largest_sft", ["base_prompted"])


def head_to_head(cfg: SizeStudyConfig, small: dict, large: dict, params: dict[str, int]) -> dict[str, Any]:
    """The smallest PPO-ptx against the largest base model, unprompted and prompted. One evaluation with the
    PPO-ptx as its baseline: a base model's win rate w against it is PPO-ptx's 1 - w (P(a>b) + P(b>a) = 1 for
    every pair), its interval [1 - high, 1 - low]."""
    out = Path(cfg.output_dir) / "evaluate" / "head_to_head"
    base = Path(cfg.output_dir) / large["name"] / "pretrain"
    policies = {"base": base, "base_prompted": base, "ppo_ptx": Path(cfg.output_dir) / small["name"] / "ppo_ptx"}
    results = evaluate(cfg, out, policies, "ppo_ptx", ["base_prompted"])["policies"]
    wins = ("win_rate_heldout_labelers", "win_rate_train_labelers")
    return {
        "smallest": small["name"],
        "smallest_params": params[small["name"]],
        "largest": large["name"],
        "largest_params": params[large["name"]],
        **{opponent: {k: flip(results[opponent][k]) for k in wins} for opponent in ("base", "base_prompted")},
    }


def flip(x: dict) -> dict:
    """The other side's win rate and interval."""
    if x.get("value") is None:
        return dict(x)
    low, high = x.get("low"), x.get("high")
    return {
        "value": round(1 - x["value"], 6),
        "low": None if high is None else round(1 - high, 6),
        "high": None if low is None else round(1 - low, 6),
    }


POINT_METRICS = ("win_rate_heldout_labelers", "win_rate_train_labelers", "gold_reward")


def points(cfg: SizeStudyConfig, params: dict[str, int], results: dict[str, dict]) -> list[dict[str, Any]]:
    """Every (size, method) with its win rates and gold, each {value, low, high}."""
    return [
        {
            "size": s["name"],
            "non_embedding_params": params[s["name"]],
            "method": m,
            **{k: results[s["name"]]["policies"][m][k] for k in POINT_METRICS},
        }
        for s in sorted(cfg.sizes, key=lambda s: params[s["name"]])
        for m in METHODS
        if m in results[s["name"]]["policies"]
    ]


def size_rows(cfg: SizeStudyConfig, params: dict[str, int], seconds: dict[str, dict]) -> list[dict[str, Any]]:
    """Per size: its shape, parameters, pretraining held-out loss and tokens, and each step's seconds."""
    rows = []
    for s in sorted(cfg.sizes, key=lambda s: params[s["name"]]):
        pre = read_summary(Path(cfg.output_dir) / s["name"] / "pretrain") or {}
        rows.append(
            {
                **s,
                "non_embedding_params": params[s["name"]],
                "total_params": pre.get("total_params"),
                "pretrain_eval_loss": pre.get("final_eval_loss"),
                "tokens_seen": pre.get("tokens_seen"),
                "seconds": seconds[s["name"]],
            }
        )
    return rows


def run(cfg: SizeStudyConfig) -> dict:
    from alignlab.report import plots

    t0 = time.time()
    out = Path(cfg.output_dir)
    params = {s["name"]: non_embedding_params(s) for s in cfg.sizes}
    large, small = largest(cfg, params), smallest(cfg, params)
    print(
        f"[study] sizes {', '.join(f'{n} ({p:,} non-embedding params)' for n, p in params.items())}: "
        f"{params[large['name']] / params[small['name']]:.1f}x; baseline: SFT {large['name']}",
        flush=True,
    )
    seconds = {s["name"]: train_size(cfg, s) for s in cfg.sizes}
    baseline = out / large["name"] / "sft"
    results = {s["name"]: evaluate_size(cfg, s, baseline) for s in cfg.sizes}
    summary = {
        "run_dir": cfg.run_dir,
        "seed": cfg.seed,
        "baseline": f"SFT {large['name']}",
        "methods": METHODS,
        "few_shot": results[large["name"]].get("few_shot"),
        "n_prompts": results[large["name"]]["settings"]["n_prompts"],
        "sizes": size_rows(cfg, params, seconds),
        "points": points(cfg, params, results),
        "head_to_head": head_to_head(cfg, small, large, params),
        "flan": flan_across_sizes(cfg, params),
        "seconds": round(time.time() - t0, 1),
    }
    out.mkdir(parents=True, exist_ok=True)
    plots.sizes(summary, out / "sizes.png")
    if summary["flan"]:
        plots.flan_sizes(summary["flan"], out / "flan_sizes.png")
    atomic_write_json(out / "summary.json", summary)
    print_table(summary)
    return summary


def print_table(summary: dict[str, Any]) -> None:
    def pct(x: dict) -> str:
        if x.get("value") is None:
            return "-"
        ci = f" [{100 * x['low']:.1f}, {100 * x['high']:.1f}]" if x.get("low") is not None else ""
        return f"{100 * x['value']:.1f}%{ci}"

    print(f"[study] win rate against {summary['baseline']} (held-out labelers):")
    for p in summary["points"]:
        print(
            f"  {p['size']:<8} {p['non_embedding_params']:>10,}  {p['method']:<14} {pct(p['win_rate_heldout_labelers'])}"
        )
    h = summary["head_to_head"]
    for opponent in ("base", "base_prompted"):
        win = pct(h[opponent]["win_rate_heldout_labelers"])
        print(f"  PPO-ptx {h['smallest']} preferred to {opponent} {h['largest']} (held-out labelers): {win}")
