"""Stage: the whole recipe, each stage in its own folder under one run folder.

    RUN/world -> RUN/tokenizer -> RUN/pretrain -> ...

A stage whose folder already holds ``summary.json`` finished and is skipped (unless
named in ``redo``); one without it is (re)started with ``resume`` on, so a killed
pipeline continues where it stopped. Per-stage settings: ``--stage_overrides
'{pretrain: {max_steps: 100}}'`` or the same mapping in a YAML file.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass, fields
from pathlib import Path

from alignlab.config import ConfigError, apply, arg, dotted_to_nested, resolve
from alignlab.outputs import read_summary
from alignlab.stages.registry import STAGES, run_stage

ORDER = ["world", "tokenizer", "pretrain"]


@dataclass
class PipelineConfig:
    preset: str = arg("default", "preset applied to every stage (smoke: about a minute; default: the real demo)")
    output_dir: str = arg("runs/default", "the run folder; each stage writes a sub-folder")
    stages: list[str] = arg(factory=lambda: list(ORDER), help="stages to run, in order")
    redo: list[str] = arg(factory=list, help="stages to rerun even if finished ('all' for every stage)")
    seed: int = arg(0, "seed for every stage")
    stage_overrides: dict = arg(factory=dict, help="per-stage config overrides, e.g. {pretrain: {max_steps: 100}}")


PRESETS = {"smoke": {"preset": "smoke"}, "default": {"preset": "default"}}


def wiring(stage: str, run: Path) -> dict:
    """How each stage's inputs point at earlier stages' outputs inside the run folder."""
    return {
        "world": {},
        "tokenizer": {"data": str(run / "world" / "corpus")},
        "pretrain": {"data": str(run / "world" / "corpus"), "tokenizer": str(run / "tokenizer")},
    }[stage]


def stage_config(stage: str, cfg: PipelineConfig):
    cls, presets, _ = STAGES[stage].load()
    run = Path(cfg.output_dir)
    c = resolve(cls, presets, cfg.preset if cfg.preset in presets else None)
    names = {f.name for f in fields(cls)}
    base = {"output_dir": str(run / stage), **wiring(stage, run)}
    if "seed" in names:
        base["seed"] = cfg.seed
    c = apply(c, base, f"pipeline wiring for '{stage}'")
    extra = cfg.stage_overrides.get(stage, {})
    if extra:
        c = apply(c, dotted_to_nested(extra) if any("." in k for k in extra) else extra, f"stage_overrides.{stage}")
    return c


def run(cfg: PipelineConfig) -> dict:
    unknown = [s for s in cfg.stages + [r for r in cfg.redo if r != "all"] if s not in STAGES or s == "pipeline"]
    if unknown:
        raise ConfigError(f"stages/redo: unknown stage(s) {unknown}; known: {', '.join(ORDER)}")
    bad = [s for s in cfg.stage_overrides if s not in cfg.stages]
    if bad:
        raise ConfigError(f"stage_overrides: {bad} not among the stages run ({cfg.stages})")
    run_dir = Path(cfg.output_dir)
    times: dict[str, float] = {}
    results: dict[str, dict] = {}
    t0 = time.time()
    for stage in cfg.stages:
        sc = stage_config(stage, cfg)
        out = Path(sc.output_dir)
        if stage in cfg.redo or "all" in cfg.redo:
            shutil.rmtree(out, ignore_errors=True)
        done = read_summary(out)
        if done is not None:
            print(f"[pipeline] {stage}: already finished ({out}), skipping")
            results[stage] = done
            times[stage] = 0.0
            continue
        if hasattr(sc, "resume"):
            sc = apply(sc, {"resume": True}, "pipeline")  # continue a killed stage from its checkpoint
        print(f"[pipeline] {stage} -> {out}")
        t = time.time()
        results[stage] = run_stage(stage, sc)
        times[stage] = round(time.time() - t, 1)
        print(f"[pipeline] {stage} finished in {times[stage]:.1f}s")
    total = round(time.time() - t0, 1)
    print("\n[pipeline] stage times (s): " + ", ".join(f"{k} {v}" for k, v in times.items()) + f"; total {total}")
    return {"stage_seconds": times, "total_seconds": total, "stages": results}
