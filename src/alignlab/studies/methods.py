"""Study: which method should I use? Every method from one SFT policy and one RM (``alignlab study methods``).

AlpacaFarm's Table 2, with the world's exact labelers as the judge. For each seed the pipeline's own steps
give the SFT policy, the comparisons and the reward model; on them the study runs PPO, PPO-ptx, DPO, RLOO,
GRPO and expert iteration (pipeline steps, so a killed study resumes where it stopped and a finished method
is reused), and the evaluation judges them with best-of-n of the SFT policy by the same RM, against SFT.

Equal budgets: PPO, RLOO and GRPO sample the same number of episodes (their presets: 64 per iteration, the
same iterations), and expert iteration gets as many samples (``prompts`` = PPO's episodes / its n). DPO draws
no samples of its own (it learns from the comparisons the RM learned from); best-of-n draws n per prompt at
inference time instead of training. Each method's wall time is its step's own.

Writes ``OUT/summary.json`` (per method: the mean over seeds of each metric with a 95% t-interval over seeds,
and every seed's value), ``OUT/methods.png`` and each seed's evaluation in ``OUT/seeds/<seed>/evaluate``;
the run's report picks them up from ``RUN/study_methods``.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alignlab.config import ConfigError, arg
from alignlab.outputs import atomic_write_json, read_summary

# What every method starts from: the world, the base model, and each seed's SFT policy, comparisons and RM.
BASE_STEPS = ["world", "tokenizer", "pretrain", "sft", "compare", "reward"]
METHODS = ["ppo", "ppo_ptx", "dpo", "rloo", "grpo", "expert_iteration"]
# The table's numbers (results.json keys): the win rates, gold and KL, then the Figure-4 metadata and the tax.
METRICS = [
    "win_rate_heldout_labelers",
    "win_rate_train_labelers",
    "gold_reward",
    "kl_to_baseline",
    "over_refusal_rate",
    "unknown_false_positive_rate",
    "closed_domain_hallucination_rate",
    "constraint_failure_rate",
    "heldout_constraint_compliance",
    "heldout_ptx_loss_delta",
    "nlp_accuracy_delta",
]
# Shares of prompts (or of a labeler's preferences): their intervals are cut to [0, 1], where a t-interval over
# three seeds can reach past either end.
RATES = {m for m in METRICS if m.endswith(("_rate", "_labelers", "_compliance"))}
T_975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


@dataclass
class MethodStudyConfig:
    run_dir: str = arg("runs/default", "a pipeline run folder: missing steps (SFT, RM, the methods) are run in it")
    preset: str = arg(
        "", "the pipeline preset of the run's steps; empty = the run's own (its config.yaml), else default"
    )
    seeds: list[int] = arg(factory=lambda: [0, 1, 2], help="training seeds (each its own SFT, RM and methods)")
    methods: list[str] = arg(factory=lambda: list(METHODS), help=f"pipeline steps to compare ({', '.join(METHODS)})")
    best_of_n: list[int] = arg(
        factory=lambda: [1, 4, 16, 64], help="best-of-n of the SFT policy by the RM, judged as policies; empty = off"
    )
    eval_prompts: int = arg(0, "held-out test prompts each evaluation uses (the first N); 0 = all")
    study_dir: str = arg("", "where each seed's evaluation and summary.json go; empty = RUN/study_methods")
    redo: list[str] = arg(factory=list, help="methods (pipeline steps) or 'evaluate' to rerun")

    @property
    def output_dir(self) -> str:
        return self.study_dir or str(Path(self.run_dir) / "study_methods")

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ConfigError(f"study methods: 'methods' has unknown method(s) {unknown}; known: {', '.join(METHODS)}")
        if not self.methods and not self.best_of_n:
            raise ConfigError("study methods: nothing to compare: give 'methods' or 'best_of_n'")
        if any(n < 1 for n in self.best_of_n):
            raise ConfigError(f"study methods: every best_of_n must be >= 1, got {self.best_of_n}")
        if not self.seeds:
            raise ConfigError("study methods: 'seeds' needs at least one seed")
        bad = [r for r in self.redo if r not in [*METHODS, "evaluate"]]
        if bad:
            raise ConfigError(f"study methods: 'redo' has unknown step(s) {bad}; known: {', '.join(METHODS)}, evaluate")


PRESETS = {"smoke": {"preset": "smoke", "best_of_n": [1, 4], "seeds": [0]}, "default": {}}


def _preset(cfg: MethodStudyConfig) -> str:
    import yaml

    if cfg.preset:
        return cfg.preset
    path = Path(cfg.run_dir) / "config.yaml"
    return (yaml.safe_load(path.read_text()) or {}).get("preset", "default") if path.is_file() else "default"


def _pipeline(cfg: MethodStudyConfig, overrides: dict):
    from alignlab.stages.pipeline import PipelineConfig

    stages = BASE_STEPS + cfg.methods
    redo = [m for m in cfg.redo if m in METHODS]
    return PipelineConfig(
        preset=_preset(cfg),
        output_dir=cfg.run_dir,
        stages=stages,
        seeds=cfg.seeds,
        redo=redo,
        stage_overrides=overrides,
    )


def equal_budget(cfg: MethodStudyConfig) -> dict:
    """The stage overrides that give every sampling method PPO's episodes: RLOO and GRPO PPO's iterations and
    episodes per iteration (their prompts per batch = PPO's episodes / their group size), expert iteration
    as many prompts as PPO's episodes over its n. PPO's episodes are under "episodes"."""
    from alignlab.stages.pipeline import step_config

    pcfg, run = _pipeline(cfg, {}), Path(cfg.run_dir)
    ppo = step_config("ppo", pcfg, cfg.seeds[0], run)[1]
    per_iteration = ppo.batch_size * ppo.group_size
    out: dict[str, Any] = {"episodes": ppo.iterations * per_iteration}
    for method in ("rloo", "grpo"):
        k = step_config(method, pcfg, cfg.seeds[0], run)[1].group_size
        if per_iteration % k:
            raise ConfigError(
                f"study methods: {method}'s group_size {k} does not divide PPO's {per_iteration} episodes"
            )
        out[method] = {"iterations": ppo.iterations, "batch_size": per_iteration // k}
    n = step_config("expert_iteration", pcfg, cfg.seeds[0], run)[1].n
    out["expert_iteration"] = {"prompts": max(1, out["episodes"] // n)}
    return out


def seed_folder(run: Path, seeds: list[int], seed: int) -> Path:
    """Where the pipeline keeps a seed's steps: the run folder for the first seed, RUN/seeds/<seed> for others."""
    return run if seed == seeds[0] else run / "seeds" / str(seed)


def evaluate_seed(cfg: MethodStudyConfig, seed: int) -> Path:
    """Judge every method and best-of-n of this seed's SFT against that SFT (resumes: a finished evaluation whose
    inputs did not change since is kept). Its results.json."""
    from alignlab.stages.pipeline import newer_upstream, step_config
    from alignlab.stages.registry import run_stage

    run = seed_folder(Path(cfg.run_dir), cfg.seeds, seed)
    out = Path(cfg.output_dir) / "seeds" / str(seed) / "evaluate"
    policies = {"base": str(Path(cfg.run_dir) / "pretrain"), "sft": str(run / "sft")}
    policies.update({m: str(run / m) for m in cfg.methods})
    ev = step_config("evaluate", _pipeline(cfg, {}), seed, run)[1]
    ev = dataclasses.replace(
        ev,
        output_dir=str(out),
        policies=policies,
        best_of_n=list(cfg.best_of_n),
        best_of_n_reward_model=str(run / "reward"),
        headroom_n=[],  # the gold ceiling is the pipeline evaluation's; here the RM picks
        max_prompts=cfg.eval_prompts,
    )
    done = read_summary(out) is not None and "evaluate" not in cfg.redo
    inputs = [Path(p) for p in policies.values()] + [run / "reward"]
    if done and (newer := newer_upstream(out, inputs)):
        print(f"[study] seed {seed}: {', '.join(newer)} finished after the evaluation; evaluating again", flush=True)
        done = False
    if not done:
        print(f"[study] seed {seed}: evaluating {', '.join(policies)} and best-of-{cfg.best_of_n} -> {out}", flush=True)
        run_stage("evaluate", ev)
    return out / "results.json"


def _cost(run: Path, method: str) -> dict[str, Any]:
    """A method's policy samples and wall time, from its step's summary.json."""
    s = read_summary(run / method) or {}
    if "episodes" in s:  # ppo, ppo_ptx, rloo, grpo
        samples = s["episodes"]
    elif "n" in s and "prompts" in s:  # expert iteration: n samples for each of its prompts
        samples = s["n"] * s["prompts"]
    else:  # dpo: learns from the comparisons, samples nothing itself
        samples = 0
    return {"policy_samples": samples, "seconds": s.get("wall_seconds")}


def seed_rows(cfg: MethodStudyConfig, seed: int, results_path: Path) -> dict[str, dict[str, Any]]:
    """{method: {metric: value, policy_samples, seconds}} of one seed, best-of-n included."""
    results = json.loads(results_path.read_text())
    run = seed_folder(Path(cfg.run_dir), cfg.seeds, seed)
    rows: dict[str, dict[str, Any]] = {}
    for name, m in results["policies"].items():
        if name == "base":
            continue
        row = {k: (m.get(k) or {}).get("value") for k in METRICS}
        if name.startswith("best_of_"):
            n = int(name.removeprefix("best_of_"))
            row.update(policy_samples=0, inference_samples=n, seconds=results["seconds"]["policies"].get(name))
        elif name == "sft":
            row.update(policy_samples=0, seconds=(read_summary(run / "sft") or {}).get("wall_seconds"))
        else:
            row.update(_cost(run, name))
        rows[name] = row
    return rows


def bon_against_overoptimization(cfg: MethodStudyConfig) -> dict[str, Any] | None:
    """Best-of-n here against ``alignlab study overoptimization``'s law for the same SFT policy and RM (the
    first seed's, ``RUN/reward``): the gold gain of best-of-n over best-of-1 (paired over prompts, 95% bootstrap)
    next to the fitted R(d) = d(alpha - beta d) at the same d. None when that study or n = 1 is missing."""
    import numpy as np

    from alignlab.evaluate.overoptimization_fit import gain

    fit_path = Path(cfg.run_dir) / "study_overoptimization" / "fit.json"
    samples = Path(cfg.output_dir) / "seeds" / str(cfg.seeds[0]) / "evaluate" / "samples.jsonl"
    fit = json.loads(fit_path.read_text()).get("bon", {}).get("rm_100pct") if fit_path.is_file() else None
    if fit is None or 1 not in cfg.best_of_n or not samples.is_file():
        return None
    gold: dict[str, list[float]] = {}
    for line in samples.read_text().splitlines():
        r = json.loads(line)
        if not r.get("probe"):
            gold.setdefault(r["policy"], []).append(r["gold_reward"])
    one, rng, out = np.array(gold["best_of_1"]), np.random.default_rng(0), {}
    for n in sorted(m for m in cfg.best_of_n if m > 1):
        diff = np.array(gold[f"best_of_{n}"]) - one
        boots = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(1000)]
        d = float(np.sqrt(np.log(n) - (n - 1) / n))
        law = float(gain(d, fit["params"]["alpha"], fit["params"]["beta"], "bon"))
        low, high = (float(x) for x in np.percentile(boots, [2.5, 97.5]))
        out[n] = {"d": round(d, 4), "gain": round(float(diff.mean()), 4), "low": round(low, 4), "high": round(high, 4),
                  "law": round(law, 4), "inside": low <= law <= high}  # fmt: skip
    return {"fit": str(fit_path), "rm": "rm_100pct", "by_n": out}


def over_seeds(values: list[float | None], rate: bool = False) -> dict[str, Any]:
    """Mean over seeds with a 95% t-interval over seeds (training noise and prompt noise together: each seed
    has its own SFT, RM and methods), and the values. One seed: the mean alone. ``rate``: cut to [0, 1]."""
    import math

    vs = [v for v in values if v is not None]
    out: dict[str, Any] = {"value": None, "low": None, "high": None, "values": values}
    if not vs:
        return out
    mean = sum(vs) / len(vs)
    out["value"] = round(mean, 4)
    if len(vs) > 1:
        sd = math.sqrt(sum((v - mean) ** 2 for v in vs) / (len(vs) - 1))
        half = T_975.get(len(vs) - 1, 1.96) * sd / math.sqrt(len(vs))
        low, high = (max(mean - half, 0.0), min(mean + half, 1.0)) if rate else (mean - half, mean + half)
        out["low"], out["high"] = round(low, 4), round(high, 4)
    return out


def aggregate(per_seed: dict[int, dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """{method: {metric: over_seeds(...)}} over the methods every seed has, in the first seed's order."""
    seeds = list(per_seed)
    names = [n for n in per_seed[seeds[0]] if all(n in per_seed[s] for s in seeds)]
    keys = [*METRICS, "policy_samples", "inference_samples", "seconds"]
    return {
        name: {
            k: over_seeds([per_seed[s][name].get(k) for s in seeds], rate=k in RATES)
            for k in keys
            if k in per_seed[seeds[0]][name]
        }
        for name in names
    }


def run(cfg: MethodStudyConfig) -> dict:
    from alignlab.report import plots
    from alignlab.stages.pipeline import run as run_pipeline

    t0 = time.time()
    out = Path(cfg.output_dir)
    budget = equal_budget(cfg)
    print(
        f"[study] methods {', '.join(cfg.methods)} + best-of-{cfg.best_of_n} on seeds {cfg.seeds}; "
        f"{budget['episodes']} policy samples each (expert iteration: {budget['expert_iteration']['prompts']} prompts)",
        flush=True,
    )
    run_pipeline(_pipeline(cfg, {m: budget[m] for m in cfg.methods if m in budget and m != "episodes"}))
    per_seed = {s: seed_rows(cfg, s, evaluate_seed(cfg, s)) for s in cfg.seeds}
    table = aggregate(per_seed)
    out.mkdir(parents=True, exist_ok=True)
    plots.methods(table, out / "methods.png")
    summary = {
        "run_dir": cfg.run_dir,
        "seeds": cfg.seeds,
        "budget": budget,
        "best_of_n_against_overoptimization": bon_against_overoptimization(cfg),
        "methods": table,
        "per_seed": {str(s): rows for s, rows in per_seed.items()},
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out / "summary.json", summary)
    print_table(table)
    return summary


def print_table(table: dict[str, dict[str, Any]]) -> None:
    def pct(x: dict) -> str:
        if x["value"] is None:
            return "-"
        ci = f" [{100 * x['low']:.1f}, {100 * x['high']:.1f}]" if x["low"] is not None else ""
        return f"{100 * x['value']:.1f}%{ci}"

    print("[study] method: win vs SFT (held-out labelers); gold; KL; policy samples; seconds")
    for name, m in table.items():
        gold, kl = m["gold_reward"]["value"], m["kl_to_baseline"]["value"]
        secs = m.get("seconds", {}).get("value")
        print(
            f"  {name:<18} {pct(m['win_rate_heldout_labelers']):<22} gold {gold if gold is None else f'{gold:.3f}'}; "
            f"KL {kl if kl is None else f'{kl:.2f}'}; {m['policy_samples']['value']:.0f} samples; "
            f"{'-' if secs is None else f'{secs:.0f}'} s"
        )
