"""The scaling commands: ``alignlab scaling sweep | fit | predict | demo``.

    sweep    train a family of small pretraining runs (one recipe, a grid of sizes and
             token budgets), score each on held-out fact cloze with many samples,
             write OUT/runs.csv and OUT/sweep.json
    fit      fit L(C)=a·C^b+c, Chinchilla L(N,D) and −log pass_rate=α·C^(−k) to a
             runs.csv (a sweep's or your own), with bootstrap intervals; fit.json + plots.
             A pass-rate file (C, pass_rate; or C, problem, pass_rate) gets the capability
             law alone, bootstrapped over problems
    predict  write prediction_pre.json (prediction + intervals, fit.json's hash) BEFORE
             training the target run, then train it and write prediction.json
             (predicted vs actual, error, inside the interval or not) + plots. Refused:
             a fit.json that does not match its runs file or the sweep's, a runs file
             changed since the fit, a recorded prediction for another target/fit/law,
             a target that started without the prediction
    demo     all of it along one allocation (tokens ∝ parameters), with held-out calibration
             and capability predictions: ``scaling/demo.py``

Each command is a config dataclass, a ``PRESETS`` dict and a run function, like every
stage; ``scaling/cli.py`` resolves the config (defaults -> preset -> YAML -> --key value) and runs
it the way ``stages.registry.run_stage`` does (config.yaml first, summary.json last).

The demo, on the built-in world (``alignlab pipeline --stages '[world, tokenizer]'``
first, or point ``--world/--data/--tokenizer`` at yours)::

    alignlab scaling sweep   --preset default --output_dir runs/scaling
    alignlab scaling fit     --preset default --runs runs/scaling/runs.csv --output_dir runs/scaling/fit
    alignlab scaling predict --preset default --sweep runs/scaling --fit runs/scaling/fit/fit.json \\
                             --output_dir runs/scaling/predict
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import functools
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from alignlab.config import apply, arg
from alignlab.errors import ConfigError, DataError, MissingInputError
from alignlab.outputs import atomic_write_json

# --------------------------------------------------------------------------- configs


@dataclass
class SweepConfig:
    world: str = arg(
        "runs/world", "built-in world folder (capability items come from its facts); empty = no capability metric"
    )
    data: str = arg(
        "runs/world/corpus", "text data set to pretrain on: saved datasets folder, .jsonl/.parquet or hub id"
    )
    text_column: str = arg("text", "column holding the documents")
    train_split: str = arg("train", "split to train on")
    eval_split: str = arg("validation", "held-out split: the final loss every law is fitted to")
    tokenizer: str = arg("runs/tokenizer", "tokenizer path or hub id")
    grid: list[str] = arg(
        factory=list, help="runs as WIDTHxTOKENS (e.g. [16x3e5, 64x6e5]); empty = every width x every token budget"
    )
    widths: list[int] = arg(factory=lambda: [16, 32, 64], help="model widths d_model (used when grid is empty)")
    token_budgets: list[float] = arg(
        factory=lambda: [2e5, 6e5], help="training tokens D per run (used when grid is empty)"
    )
    line_tokens: float = arg(
        0,
        "the recipe's token budget: runs with this D are the main line L(C) is fitted on "
        "(GPT-4 style: smaller copies of the target); the others only inform L(N, D). 0 = all runs",
    )
    line_seeds: list[int] = arg(
        factory=list, help="extra seeds for the main-line runs (each its own run and runs.csv row)"
    )
    n_layer: int = arg(2, "transformer layers, the same for every size")
    head_dim: int = arg(16, "attention head size; n_head = round(d_model / head_dim)")
    ffn_mult: float = arg(8 / 3, "d_ff = ffn_mult * d_model, rounded to a multiple of 8")
    seq_len: int = arg(128, "tokens per training block")
    batch_size: int = arg(8, "blocks per optimiser step (the same for every run)")
    lr_base: float = arg(6e-3, "peak lr at width lr_base_width")
    lr_base_width: int = arg(64, "width at which the peak lr is lr_base")
    lr_width_exp: float = arg(1.5, "lr = lr_base * (lr_base_width / d_model)^lr_width_exp (1 = muP-style 1/width)")
    lr_table: dict = arg(
        factory=dict, help="explicit peak lr per width, e.g. {16: 0.05, 64: 0.006}; overrides the rule"
    )
    warmup_frac: float = arg(0.05, "linear warmup, as a fraction of the run's steps")
    min_lr_ratio: float = arg(0.1, "cosine decay to this fraction of the peak lr")
    weight_decay: float = arg(0.1, "AdamW weight decay on matrices")
    eval_points: int = arg(8, "intermediate eval-loss measurements per run (kept in sweep.json)")
    eval_blocks: int = arg(256, "held-out blocks of seq_len tokens for the eval loss (the split's size caps it)")
    checkpoints_per_run: int = arg(4, "resumable checkpoints per run (0 = none: a killed run restarts)")
    keep_checkpoints: bool = arg(False, "keep each run's last resumable checkpoint after it finishes")
    n_items: int = arg(128, "fact-cloze items for the capability metric")
    samples_per_item: int = arg(48, "samples per item (0 = no capability metric)")
    temperature: float = arg(1.0, "sampling temperature for the capability metric")
    include_rumoured: bool = arg(False, "also use facts the corpus sometimes states falsely")
    gen_batch_size: int = arg(512, "sequences per generation batch")
    seed: int = arg(0, "seed of every run (init, data order), of the capability item draw and of the sampling")
    device: str = arg("auto", "auto, cpu or cuda")
    output_dir: str = arg("runs/scaling", "sweep folder: runs/<name>/, runs.csv, sweep.json")


@dataclass
class FitConfig:
    runs: str = arg(
        "runs/scaling/runs.csv",
        "runs file (CSV with N and D, or C, and loss; optional pass_rate), or a sweep folder; or a pass-rate "
        "file (C, pass_rate; or C, problem, pass_rate per problem, no loss): the capability law alone",
    )
    compute: str = arg("C", "compute column for L(C) and the capability law: C (6*N*D, N non-embedding) or C_total")
    lc_runs: str = arg(
        "main",
        "runs L(C) and the capability law are fitted on: main (the sweep's main line, column "
        "'main'; all runs if the file has none), all, or frontier (no run with <= compute has a lower loss)",
    )
    n_boot: int = arg(200, "bootstrap resamples (runs drawn with replacement) for every interval")
    level: float = arg(0.95, "interval coverage")
    chinchilla: str = arg("auto", "fit L(N, D): auto (only if N and D vary independently enough), on, off")
    chinchilla_starts: int = arg(64, "L-BFGS starts: the best k of Hoffmann et al.'s 4,500-point grid (0 = all 4,500)")
    max_corr: float = arg(0.95, "auto skips L(N, D) if |corr(log N, log D)| exceeds this")
    min_pass_rate: float = arg(1e-3, "capability fit uses runs with pass_rate in [this, 1)")
    budgets: list[float] = arg(
        factory=list, help="compute budgets for the compute-optimal N, D; empty = 10x and 100x the largest run"
    )
    seed: int = arg(0, "bootstrap seed")
    output_dir: str = arg("runs/scaling/fit", "where fit.json and the plots go")


@dataclass
class PredictConfig:
    sweep: str = arg("runs/scaling", "sweep folder (its sweep.json holds the recipe the target run follows)")
    fit: str = arg("runs/scaling/fit/fit.json", "fit.json written by `alignlab scaling fit` on that sweep")
    width: int = arg(0, "target d_model (N follows from the recipe); 0 = choose it from compute via the fitted L(N, D)")
    tokens: float = arg(0, "target training tokens D (or give steps, or compute)")
    steps: int = arg(0, "target optimiser steps (D = steps * batch_size * seq_len)")
    compute: float = arg(0, "target compute C = 6*N*D; with width it sets D; alone, N is the compute-optimal size")
    law: str = arg("loss_vs_compute", "headline loss prediction: loss_vs_compute (GPT-4 L(C)) or chinchilla (L(N, D))")
    train: bool = arg(True, "train the target after recording the prediction (false: only prediction_pre.json)")
    output_dir: str = arg("runs/scaling/predict", "prediction_pre.json, target/, prediction.json, plots")


SWEEP_PRESETS: dict[str, dict[str, Any]] = {
    # The plumbing on the smoke world: six d16-d32 runs of 50-150 steps (not a fit to trust).
    "smoke": {
        "grid": ["16x3e4", "16x8e4", "24x4e4", "24x1e5", "32x3e4", "32x8e4"],
        "seq_len": 64,
        "batch_size": 8,
        "lr_base": 0.02,
        "lr_base_width": 16,
        "lr_width_exp": 1.0,
        "eval_points": 2,
        "eval_blocks": 16,
        "checkpoints_per_run": 2,
        "n_items": 32,
        "samples_per_item": 16,
    },
    # The demo sweep.  Main line (what L(C) is fitted on, GPT-4 style: smaller copies of the
    # target under one recipe): d_model 8-48 at the recipe's D = 0.8M tokens (781 steps,
    # ~1.5 epochs of the default world corpus), compute span ~33x, each with seeds 0 and 1.
    # Four off-line runs at 0.4M and 1.6M tokens let L(N, D) separate N from D. Peak lr per
    # width from a 400k-token scan in lr steps of ~1.5x (widths 8 and 12 extrapolated).
    "default": {
        "grid": ["8x8e5", "12x8e5", "16x8e5", "24x8e5", "32x8e5", "48x8e5", "12x1.6e6", "16x4e5", "24x4e5", "48x4e5"],
        "line_tokens": 8e5,
        "line_seeds": [1],
        "lr_table": {
            8: 0.08,
            12: 0.065,
            16: 0.05,
            24: 0.035,
            32: 0.025,
            48: 0.008,
            64: 0.006,
            96: 0.006,
            128: 0.006,
            160: 0.006,
            192: 0.006,
        },
    },
}
FIT_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"n_boot": 20, "chinchilla_starts": 8, "min_pass_rate": 1e-3},
    "default": {},
}
PREDICT_PRESETS: dict[str, dict[str, Any]] = {
    "smoke": {"width": 48, "tokens": 1e5},
    "default": {"width": 160, "tokens": 8e5},
}


# --------------------------------------------------------------------------- sweep


def run_sweep(cfg: SweepConfig) -> dict[str, Any]:
    from alignlab.scaling.sweep import run_sweep as sweep

    return sweep(cfg)


# --------------------------------------------------------------------------- fit


def _runs_path(path: str | Path) -> Path:
    p = Path(path)
    return p / "runs.csv" if p.is_dir() else p


def read_runs(path: str | Path, compute: str = "C") -> dict[str, np.ndarray]:
    """N, D, C (from 6·N·D if absent), loss, and pass_rate / C_total when the file has them.

    Errors name the file, line and column (``io.read_runs_csv``).
    """
    from alignlab.scaling.io import RunsFileError, read_runs_csv

    path = _runs_path(path)
    runs = read_runs_csv(path, "loss")
    if "C" not in runs:
        if "N" not in runs or "D" not in runs:
            raise RunsFileError(path, "need a C column, or N and D to compute C = 6*N*D")
        runs["C"] = 6.0 * runs["N"] * runs["D"]
    with open(path, newline="", encoding="utf-8-sig") as fh:
        rows = list(csv.reader(fh))
    header = [h.strip().lower() for h in rows[0]]
    data = [r for r in rows[1:] if any(c.strip() for c in r)]
    if "pass_rate" in header:
        i = header.index("pass_rate")
        filled = [bool(r[i].strip()) if i < len(r) else False for r in data]
        if any(filled):  # a column left empty everywhere means "not measured"
            runs["pass_rate"] = read_runs_csv(path, "pass_rate")["pass_rate"]
    if compute == "C_total":
        if "c_total" not in header:
            raise RunsFileError(path, "compute=C_total but the file has no C_total column", column="C_total")
        i = header.index("c_total")
        vals = []
        for line, r in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in r):
                continue
            try:
                v = float(r[i])
                assert v > 0 and math.isfinite(v)
            except (ValueError, IndexError, AssertionError):
                raise RunsFileError(
                    path,
                    f"column 'C_total': bad value {r[i] if i < len(r) else ''!r}, expected a positive finite number",
                    line=line,
                    column="C_total",
                ) from None
            vals.append(v)
        runs["C_total"] = np.asarray(vals)
    elif compute != "C":
        raise ConfigError(f"compute must be C or C_total, got {compute!r}")
    if "main" in header:
        i = header.index("main")
        vals = []
        for line, r in enumerate(rows[1:], start=2):
            if not any(c.strip() for c in r):
                continue
            v = r[i].strip().lower() if i < len(r) else ""
            if v not in ("0", "1", "true", "false"):
                raise RunsFileError(path, f"column 'main': bad value {v!r}, expected 0 or 1", line=line, column="main")
            vals.append(v in ("1", "true"))
        runs["main"] = np.asarray(vals, dtype=bool)
    return runs


def _fit_settings(cfg: FitConfig) -> dict[str, Any]:
    return {
        k: getattr(cfg, k)
        for k in (
            "compute",
            "lc_runs",
            "n_boot",
            "level",
            "chinchilla",
            "chinchilla_starts",
            "max_corr",
            "min_pass_rate",
            "seed",
        )
    }


def _do_fit(
    runs: dict[str, np.ndarray], settings: dict[str, Any], targets=(), budgets=(), extra_C=()
) -> dict[str, Any]:
    from alignlab.scaling.predict import fit_runs

    C = runs[settings["compute"]]
    hi = max([float(C.max())] + [float(c) for c in extra_C])
    band = np.logspace(math.log10(C.min()) - 0.2, math.log10(hi) + 0.2, 60)
    return fit_runs(runs, band_C=band, targets=targets, budgets=budgets, **settings)


def _fit_summary_lines(fits: dict[str, Any]) -> list[str]:
    lines = []
    lc = fits["lc"]
    p = lc["params"]
    f = lc["full_fit"]
    lines.append(
        f"L(C) = a*C^b + c on {f.n_points} runs: b = {p['b']['estimate']:.4f} "
        f"[{p['b']['lo']:.4f}, {p['b']['hi']:.4f}], c = {p['c']['estimate']:.4f} "
        f"[{p['c']['lo']:.4f}, {p['c']['hi']:.4f}], residual {100 * f.residual_scale:.2f}%, "
        f"converged={f.converged}"
    )
    for key, label in (("lc", "L(C)"), ("chinchilla", "L(N,D)"), ("capability", "the capability law")):
        if fits.get(key) is None:
            continue
        ff = fits[key]["full_fit"]
        n = getattr(ff, "n_points", None) or getattr(ff, "n_used", 0)
        if n <= ff.n_params + 1:
            lines.append(
                f"warning: {label} has {n} runs for {ff.n_params} parameters: every bootstrap resample "
                "holds the same runs, so its intervals are degenerate (zero width); add runs"
            )
    if fits["chinchilla"] is not None:
        cp = fits["chinchilla"]["params"]
        ff = fits["chinchilla"]["full_fit"]
        lines.append(
            "L(N,D) = E + A/N^alpha + B/D^beta: "
            + ", ".join(
                f"{k} = {cp[k]['estimate']:.4g} [{cp[k]['lo']:.4g}, {cp[k]['hi']:.4g}]" for k in ("E", "alpha", "beta")
            )
            + f", residual {100 * ff.residual_scale:.2f}%, converged={ff.converged} ({ff.n_agree}/{ff.n_starts} starts agree)"
        )
    else:
        lines.append(f"L(N,D) skipped: {fits['chinchilla_skipped']}")
    if fits["capability"] is not None:
        kp = fits["capability"]["params"]["k"]
        fc = fits["capability"]["full_fit"]
        lines.append(
            f"-log pass_rate = alpha*C^-k on {fc.n_used} runs: k = {kp['estimate']:.4f} "
            f"[{kp['lo']:.4f}, {kp['hi']:.4f}], R^2 = {fc.r2:.3f}"
        )
    else:
        lines.append(f"capability law skipped: {fits['capability_skipped']}")
    for a in fits.get("allocation", []):
        lines.append(
            f"compute-optimal at C = {a['C']:.3g}: N = {a['N_opt']:.3g} [{a['N_opt_lo']:.3g}, "
            f"{a['N_opt_hi']:.3g}], D = {a['D_opt']:.3g} [{a['D_opt_lo']:.3g}, {a['D_opt_hi']:.3g}]"
        )
    return lines


def _write_fits(path: Path, fits: dict[str, Any], metadata: dict[str, Any]) -> None:
    from alignlab.scaling.io import write_fit_json

    items = [
        (n, fits[k])
        for n, k in (("loss_vs_compute", "lc"), ("chinchilla", "chinchilla"), ("capability", "capability"))
        if fits.get(k) is not None
    ]
    write_fit_json(path, *[b for _, b in items], names=[n for n, _ in items], metadata=metadata)


def _is_pass_rate_file(path: Path) -> bool:
    """A capability file (per-problem rows, or pass rates without a loss) rather than a runs file."""
    from alignlab.scaling.io import COLUMN_ALIASES, PROBLEM_ALIASES

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            header = {h.strip().lower() for h in next(csv.reader(fh), [])}
    except OSError:
        return False  # read_runs names the file it cannot open
    has = lambda canon: bool(header & set(COLUMN_ALIASES[canon]))  # noqa: E731
    return bool(header & set(PROBLEM_ALIASES)) or (has("pass_rate") and not has("loss"))


def _capability_lines(res: dict[str, Any]) -> list[str]:
    boot = res["capability"]
    p, f = boot["params"], boot["full_fit"]
    iv = lambda k: f"{p[k]['estimate']:.4g} [{p[k]['lo']:.4g}, {p[k]['hi']:.4g}]"  # noqa: E731
    pct = int(round(100 * boot["level"]))
    if res["mode"] == "per_problem":
        kept = res["n_problems"] - len(res["dropped_problems"])
        on = f"the mean over {kept} problems at {f.n_used} values of C (intervals: problems resampled)"
    else:
        on = f"{f.n_used} points (intervals: points resampled)"
    lines = [f"-E[log pass_rate] = alpha*C^-k on {on}: alpha = {iv('alpha')}, k = {iv('k')} ({pct}% bootstrap)"]
    if res["mode"] == "per_problem" and res["dropped_problems"]:
        lines.append(
            f"dropped {len(res['dropped_problems'])} of {res['n_problems']} problems with pass_rate 0 at some C "
            "(as GPT-4 did: the law is fitted on problems every model solves sometimes)"
        )
    if res["mode"] == "aggregate" and res["n_points_excluded"]:
        lines.append(f"left out {res['n_points_excluded']} points with pass_rate 1 or below min_pass_rate")
    return lines


def run_capability_fit(cfg: FitConfig, path: Path) -> dict[str, Any]:
    """``scaling fit`` on a pass-rate file: the capability law alone, into fit.json's ``capability`` fit."""
    from alignlab.scaling.io import read_pass_rates_csv, write_fit_json
    from alignlab.scaling.predict import fit_pass_rates, sha256_file

    data = read_pass_rates_csv(path)
    res = fit_pass_rates(path, data, n_boot=cfg.n_boot, seed=cfg.seed, level=cfg.level, min_pass_rate=cfg.min_pass_rate)
    metadata = {
        "mode": "capability",
        "runs_file": str(path.resolve()),
        "runs_sha256": sha256_file(path),
        "settings": {k: getattr(cfg, k) for k in ("n_boot", "level", "min_pass_rate", "seed")},
        "capability": {k: v for k, v in res.items() if k != "capability"},
        "capability_note": "-E[log pass_rate(C)] = alpha*C^-k (GPT-4 report); alpha is for C in the file's units",
        "created": _now(),
    }
    out = Path(cfg.output_dir) / "fit.json"
    write_fit_json(out, res["capability"], names=["capability"], metadata=metadata)
    for line in _capability_lines(res):
        print(f"[scaling fit] {line}")
    print(f"[scaling fit] {out}")
    params = res["capability"]["params"]
    return {"fit_json": str(out), "mode": res["mode"], "alpha": params["alpha"], "k": params["k"]}


def run_fit(cfg: FitConfig) -> dict[str, Any]:
    from alignlab.scaling.predict import draw_plots, sha256_file
    from alignlab.scaling.sweep import COMPUTE_NOTE

    out = Path(cfg.output_dir)
    path = _runs_path(cfg.runs)
    if _is_pass_rate_file(path):
        return run_capability_fit(cfg, path)
    runs = read_runs(path, cfg.compute)
    settings = _fit_settings(cfg)
    C = runs[cfg.compute]
    # allocation budgets are in L(N, D)'s units: C = 6·N·D, N non-embedding
    budgets = list(cfg.budgets) or [10 * float(runs["C"].max()), 100 * float(runs["C"].max())]
    fits = _do_fit(runs, settings, budgets=budgets)
    metadata = {
        "runs_file": str(path.resolve()),
        "runs_sha256": sha256_file(path),
        "settings": settings,
        "compute_definition": COMPUTE_NOTE if cfg.compute == "C" else COMPUTE_NOTE.split("; ")[1],
        "compute_span": float(C.max() / C.min()),
        "n_runs": int(len(C)),
        "lc_runs_used": [bool(v) for v in fits["lc_mask"]],
        "chinchilla_skipped": fits["chinchilla_skipped"],
        "chinchilla_warning": fits.get("chinchilla_warning"),
        "capability_skipped": fits["capability_skipped"],
        "allocation": fits.get("allocation"),
        "allocation_note": "compute-optimal N, D from the fitted L(N, D) (fit.compute_optimal); "
        "intervals are bootstrap confidence intervals",
        "band_C": fits["band"]["C"],
        "intervals_note": "params: bootstrap percentile intervals; predictions (band): prediction intervals "
        "for a new run (residual noise added), see alignlab.scaling.bootstrap",
        "created": _now(),
    }
    _write_fits(out / "fit.json", fits, metadata)
    paths = draw_plots(runs, fits, out)
    for line in _fit_summary_lines(fits):
        print(f"[scaling fit] {line}")
    print(f"[scaling fit] {out / 'fit.json'}; plots: {', '.join(Path(p).name for p in paths)}")
    return {
        "fit_json": str(out / "fit.json"),
        "compute_span": round(float(C.max() / C.min()), 2),
        "chinchilla_skipped": fits["chinchilla_skipped"],
        "capability_skipped": fits["capability_skipped"],
        "plots": paths,
    }


# --------------------------------------------------------------------------- predict


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=1)
def _target_config_class():
    """PretrainConfig plus the hash of the prediction made before this run was trained."""
    from alignlab.stages.pretrain import PretrainConfig

    @dataclass
    class ScalingTargetConfig(PretrainConfig):
        prediction_file: str = arg("", "prediction_pre.json written before this run was trained")
        prediction_sha256: str = arg("", "SHA-256 of that file: the prediction this run tests")

    return ScalingTargetConfig


def load_sweep_config(sweep_dir: str | Path) -> tuple[SweepConfig, dict[str, Any]]:
    path = Path(sweep_dir) / "sweep.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `alignlab scaling sweep` first (predict follows its recipe)")
    doc = json.loads(path.read_text())
    return apply(SweepConfig(), doc["config"], str(path)), doc


@functools.lru_cache(maxsize=4)
def _tokenizer(path: str):
    from alignlab.models.load import load_tokenizer

    return load_tokenizer(path)


def count_params(scfg: SweepConfig, spec) -> tuple[int, int]:
    """(non-embedding, total) parameters of the model a spec describes (built on the meta device)."""
    import torch
    from transformers import LlamaForCausalLM

    from alignlab.models.llama import llama_config, non_embedding_params

    tok = _tokenizer(scfg.tokenizer)
    with torch.device("meta"):
        model = LlamaForCausalLM(
            llama_config(
                len(tok),
                spec.width,
                spec.n_layer,
                spec.n_head,
                spec.d_ff,
                scfg.seq_len,
                tok.bos_token_id,
                tok.eos_token_id,
                tok.pad_token_id,
            )
        )
    return non_embedding_params(model), sum(p.numel() for p in model.parameters())


def _choose_target(cfg: PredictConfig, scfg: SweepConfig, fits_pre: dict[str, Any] | None):
    """The target run: width from cfg (or compute-optimal N), D from tokens/steps/compute."""
    from alignlab.scaling.sweep import make_spec

    given = [k for k in ("tokens", "steps", "compute") if getattr(cfg, k)]
    if not given and cfg.width and scfg.line_tokens:
        cfg = dataclasses.replace(cfg, tokens=scfg.line_tokens)  # on the sweep's main line
        given = ["tokens"]
    width = cfg.width
    if not width:
        if given != ["compute"]:
            raise ConfigError("predict: give width (with tokens, steps or compute), or compute alone")
        if fits_pre is None or fits_pre.get("chinchilla") is None:
            raise ConfigError(
                "predict: choosing the width from compute needs the L(N, D) fit, which was skipped: "
                f"{(fits_pre or {}).get('chinchilla_skipped')}; give width"
            )
        from alignlab.scaling.fit import compute_optimal

        n_opt = float(compute_optimal(fits_pre["chinchilla"]["full_fit"], [cfg.compute])[0][0])
        best = None
        candidates = sorted(int(w) for w in scfg.lr_table) if scfg.lr_table else range(8, 2049, 8)
        for w in candidates:  # widths the recipe can build (and, with an lr table, has an lr for)
            try:
                n = count_params(scfg, make_spec(scfg, w, 1))[0]
            except ValueError:
                continue
            if best is None or abs(math.log(n / n_opt)) < best[0]:
                best = (abs(math.log(n / n_opt)), w)
        if best is None:
            raise ConfigError("predict: the recipe cannot build any width; give width")
        width = best[1]
    if len(given) != 1:
        raise ConfigError(
            f"predict: give exactly one of tokens, steps, compute (got {given or 'none'}; "
            "tokens defaults to the sweep's line_tokens when it has a main line)"
        )
    probe = make_spec(scfg, width, 1)
    N, _ = count_params(scfg, probe)
    if cfg.tokens:
        tokens = cfg.tokens
    elif cfg.steps:
        tokens = cfg.steps * scfg.batch_size * scfg.seq_len
    else:
        tokens = cfg.compute / (6.0 * N)
    spec = make_spec(scfg, width, tokens)
    spec = dataclasses.replace(spec, name=f"target_{spec.name}")
    N, N_total = count_params(scfg, spec)
    return spec, N, N_total


def _check_same_fit(fit_path: Path, fit_doc: dict[str, Any], fits: dict[str, Any]) -> None:
    """The refit predict did must be the fit in fit.json (same runs file, same settings, same seed)."""
    for rec in fit_doc["fits"]:
        key = {"loss_vs_compute": "lc", "chinchilla": "chinchilla", "capability": "capability"}[rec["name"]]
        if fits.get(key) is None:
            raise ConfigError(
                f"{fit_path} is stale: it has a {rec['name']} fit that refitting its runs file does not give; "
                "rerun `alignlab scaling fit`"
            )
        now = fits[key]["full_fit"].params
        for k, v in rec["params"].items():
            if v is not None and not math.isclose(now[k], v, rel_tol=1e-6, abs_tol=1e-12):
                raise ConfigError(
                    f"{fit_path} is stale: {rec['name']}.{k} = {v} there, {now[k]} refitted from the runs "
                    "file; rerun `alignlab scaling fit`"
                )


def _load_fit(fit_path: Path, sweep_dir: Path) -> tuple[dict[str, Any], Path]:
    """fit.json and the runs file it was fitted on, refused unless both still vouch for each other.

    A prediction is only worth its timestamp if it came from the runs that exist now: so fit.json must
    record its runs file's SHA-256, that file must be unchanged, and it must be the sweep's runs.csv
    (or a byte-identical copy), else the fit predates runs the sweep has since added.
    """
    from alignlab.scaling.io import FIT_JSON_FORMAT
    from alignlab.scaling.predict import sha256_file

    if not fit_path.is_file():
        raise MissingInputError(f"{fit_path} not found: run `alignlab scaling fit` first")
    try:
        fit_doc = json.loads(fit_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{fit_path} is not a fit.json (not JSON: {e}); rerun `alignlab scaling fit`") from None
    meta = fit_doc.get("metadata") if isinstance(fit_doc, dict) else None
    if not isinstance(meta, dict) or fit_doc.get("format") != FIT_JSON_FORMAT:
        raise ConfigError(f"{fit_path} is not a fit.json written by `alignlab scaling fit` (format {FIT_JSON_FORMAT})")
    if meta.get("mode") == "capability":
        raise ConfigError(
            f"{fit_path} holds only a capability fit (a pass-rate file, no loss): predict needs a fit of a "
            "sweep's runs.csv"
        )
    if not meta.get("runs_file") or not meta.get("runs_sha256"):
        raise ConfigError(
            f"{fit_path} is stale: it records no runs_file/runs_sha256, so nothing shows which runs it was "
            "fitted on; rerun `alignlab scaling fit`"
        )
    runs_file = Path(meta["runs_file"])
    if not runs_file.is_file():
        raise MissingInputError(f"{runs_file} not found: {fit_path} was fitted on it; rerun `alignlab scaling fit`")
    now = sha256_file(runs_file)
    if now != meta["runs_sha256"]:
        raise DataError(
            f"{runs_file} changed since {fit_path} was written (SHA-256 {now[:12]} now, "
            f"{meta['runs_sha256'][:12]} when fitted); rerun `alignlab scaling fit`"
        )
    sweep_runs = sweep_dir / "runs.csv"
    if sweep_runs.is_file() and sha256_file(sweep_runs) != now:
        raise ConfigError(
            f"{fit_path} is stale: it was fitted on {runs_file}, but the sweep's {sweep_runs} holds other runs "
            f"(SHA-256 {sha256_file(sweep_runs)[:12]}, fitted {now[:12]}); rerun `alignlab scaling fit --runs {sweep_runs}`"
        )
    return fit_doc, runs_file


# what makes two predictions the same: the target run's recipe, the fit they came from, the law
_PREDICTION_KEYS = ("name", "width", "n_layer", "n_head", "d_ff", "N", "D", "steps", "lr")


def _check_recorded_prediction(pre_path: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """A prediction already on disk is reused only if it was made for this target, fit and law."""
    pairs = [(f"target.{k}", old.get("target", {}).get(k), new["target"][k]) for k in _PREDICTION_KEYS]
    pairs += [(k, old.get(k), new[k]) for k in ("fit_json_sha256", "runs_sha256", "headline_law")]
    for key, was, now in pairs:
        if was != now:
            what = "target" if key.startswith("target.") else "law" if key == "headline_law" else "fit"
            raise ConfigError(
                f"{pre_path} records a prediction for another {what} ({key}: {was!r} there, {now!r} now); "
                "a recorded prediction is never replaced: use a new output_dir"
            )


def _check_target_unstarted(target_dir: Path, pre_path: Path, pre_sha: str | None) -> None:
    """Refuse a target run that started without (or under another) registered prediction.

    With no prediction (pre_sha None) the target folder must not hold anything: a checkpoint
    or a log means training began before a prediction was recorded. With one, a started
    target must name that very file's hash in its config.yaml.
    """
    from alignlab.run_lock import LOCK_NAME

    if not target_dir.exists():
        return
    # the run lock is taken before config.yaml is written: alone, it means nothing was trained
    held = sorted(p.name for p in target_dir.iterdir() if p.name != LOCK_NAME)
    if not held:
        return
    if pre_sha is None:
        raise ConfigError(
            f"{target_dir} already holds a started run ({', '.join(held[:4])}) but {pre_path} does not exist: "
            "a prediction can only be registered before its target starts; use a new output_dir"
        )
    config = target_dir / "config.yaml"
    recorded = (yaml.safe_load(config.read_text()) or {}).get("prediction_sha256") if config.is_file() else None
    if recorded != pre_sha:
        raise ConfigError(
            f"{target_dir} was started under another prediction (its config.yaml records prediction_sha256 "
            f"{str(recorded)[:12]}, {pre_path} has {pre_sha[:12]}); use a new output_dir"
        )


def run_predict(cfg: PredictConfig) -> dict[str, Any]:
    from alignlab.scaling.capability import score_with_restriction
    from alignlab.scaling.predict import draw_plots, sha256_file
    from alignlab.scaling.sweep import capability_results, make_spec, run_record, train_run

    if cfg.law not in ("loss_vs_compute", "chinchilla"):
        raise ConfigError(f"law must be loss_vs_compute or chinchilla, got {cfg.law!r}")
    out = Path(cfg.output_dir)
    scfg, sweep_doc = load_sweep_config(cfg.sweep)
    fit_path = Path(cfg.fit)
    fit_doc, runs_file = _load_fit(fit_path, Path(cfg.sweep))
    meta = fit_doc["metadata"]
    settings = meta["settings"]
    runs = read_runs(runs_file, settings["compute"])

    # ---- the target, then the fit refitted with the target as a prediction point
    fits_pre = None
    if not cfg.width:
        fits_pre = _do_fit(runs, {**settings, "n_boot": 2})  # only to read the compute-optimal N
    spec, N, N_total = _choose_target(cfg, scfg, fits_pre)
    D = spec.tokens
    target = {"C": 6.0 * N * D, "N": float(N), "D": float(D)}
    C_t = target["C"] if settings["compute"] == "C" else 6.0 * N_total * D
    t_point = {"C": C_t, "N": float(N), "D": float(D)}
    # the allocation is in Chinchilla's units: C = 6·N·D with N non-embedding (the N of L(N, D))
    fits = _do_fit(runs, settings, targets=[t_point], budgets=[target["C"]], extra_C=[C_t])
    _check_same_fit(fit_path, fit_doc, fits)
    pred = fits["predictions"][0]
    if cfg.law == "chinchilla" and "chinchilla" not in pred:
        raise ValueError(f"law=chinchilla but the L(N, D) fit was skipped: {fits['chinchilla_skipped']}")
    C_sweep = runs[settings["compute"]]
    target_rec = {
        "name": spec.name,
        "width": spec.width,
        "n_layer": spec.n_layer,
        "n_head": spec.n_head,
        "d_ff": spec.d_ff,
        "N": N,
        "N_total": N_total,
        "D": D,
        "steps": spec.steps,
        "lr": spec.lr,
        "C": target["C"],
        "C_total": 6.0 * N_total * D,
        "compute_column": settings["compute"],
        "compute_used": C_t,
        "ratio_to_largest_fitted_run": C_t / float(C_sweep.max()),
        "compute_span_of_fitted_runs": float(C_sweep.max() / C_sweep.min()),
        "compute_span_of_lc_runs": float(C_sweep[fits["lc_mask"]].max() / C_sweep[fits["lc_mask"]].min()),
        "ratio_to_largest_lc_run": C_t / float(C_sweep[fits["lc_mask"]].max()),
    }
    notes = []
    if (
        scfg.line_tokens
        and spec.tokens != make_spec(scfg, spec.width, scfg.line_tokens).tokens
        and settings["lc_runs"] == "main"
    ):
        notes.append(
            f"the target's D ({D:,}) is off the sweep's main line (D = {scfg.line_tokens:g}) that L(C) "
            "was fitted on; L(C) assumes the main line's allocation, L(N, D) does not"
        )
    if target_rec["ratio_to_largest_fitted_run"] < 1:
        notes.append("the target has less compute than the largest fitted run: an interpolation, not a prediction")
    for n in notes:
        print(f"[scaling predict] note: {n}")
    pre = {
        "format": "alignlab.scaling.prediction_pre/1",
        "notes": notes,
        "created": _now(),
        "about": "written before the target run was trained; the target's config.yaml holds this file's SHA-256",
        "target": target_rec,
        "headline_law": cfg.law,
        "prediction": {
            "loss": pred["chinchilla"] if cfg.law == "chinchilla" else pred["loss_vs_compute"],
            "loss_vs_compute": pred["loss_vs_compute"],
            "chinchilla": pred.get("chinchilla"),
            "pass_rate": pred.get("pass_rate"),
        },
        "level": settings["level"],
        "interval_kind": "95% bootstrap prediction interval for a new run (lo/hi); confidence_lo/hi: the curve only",
        "compute_optimal_at_target": (fits.get("allocation") or [None])[0],
        "chinchilla_skipped": fits["chinchilla_skipped"],
        "capability_skipped": fits["capability_skipped"],
        "fit_json": str(fit_path.resolve()),
        "fit_json_sha256": sha256_file(fit_path),
        "runs_file": str(runs_file),
        "runs_sha256": meta["runs_sha256"],
    }
    pre_path = out / "prediction_pre.json"
    target_dir = out / "target"
    if pre_path.exists():
        try:
            old = json.loads(pre_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ConfigError(f"{pre_path} is not a readable prediction ({e}); use a new output_dir") from None
        _check_recorded_prediction(pre_path, old, pre)
        pre = old  # keep the original record (and its timestamp): it was made before training
        print(f"[scaling predict] reusing {pre_path} (made {pre['created']})")
        pre_sha = sha256_file(pre_path)
        _check_target_unstarted(target_dir, pre_path, pre_sha)
    else:
        _check_target_unstarted(target_dir, pre_path, None)
        atomic_write_json(pre_path, pre)
        pre_sha = sha256_file(pre_path)
    pl, pc = pre["prediction"]["loss"], pre["prediction"]["pass_rate"]
    print(
        f"[scaling predict] target {spec.name}: N={N:,} D={D:,} C={target['C']:.3g} "
        f"({target_rec['ratio_to_largest_fitted_run']:.1f}x the largest fitted run)"
    )
    print(
        f"[scaling predict] predicted loss ({cfg.law}) {pl['estimate']:.4f} [{pl['lo']:.4f}, {pl['hi']:.4f}]"
        + (f"; pass rate {pc['estimate']:.4f} [{pc['lo']:.4f}, {pc['hi']:.4f}]" if pc else "")
        + f" -> {pre_path} (sha256 {pre_sha[:12]}...)"
    )
    result = {"prediction_pre": str(pre_path), "prediction_sha256": pre_sha, "target": spec.name}
    if not cfg.train:
        return result

    # ---- train the target (its config records the prediction's hash), then score it
    summary = train_run(
        scfg,
        spec,
        target_dir,
        _target_config_class(),
        prediction_file=str(pre_path.resolve()),
        prediction_sha256=pre_sha,
    )
    rec = run_record(scfg, spec, target_dir, summary)
    actual = {"loss": rec["loss"]}
    cap = sweep_doc.get("capability")
    if cap and pc:
        items = json.loads((Path(cfg.sweep) / "capability_items.json").read_text())["items"]
        scores = score_with_restriction(capability_results(scfg, target_dir, items), cap)
        actual.update(scores)

    def compare(p: dict[str, Any] | None, a: float | None) -> dict[str, Any] | None:
        if p is None or a is None or not math.isfinite(a):
            return None
        return {
            "predicted": p["estimate"],
            "lo": p["lo"],
            "hi": p["hi"],
            "actual": a,
            "abs_rel_error": abs(a - p["estimate"]) / abs(a),
            "inside_interval": p["lo"] <= a <= p["hi"],
        }

    doc = {
        "format": "alignlab.scaling.prediction/1",
        "prediction_pre": str(pre_path),
        "prediction_pre_sha256": pre_sha,
        "prediction_made": pre["created"],
        "target": {
            **pre["target"],
            "epochs": rec["epochs"],
            "seconds": rec["seconds"],
            "eval_curve": rec["eval_curve"],
        },
        "headline_law": pre["headline_law"],
        "loss": compare(pl, actual["loss"]),
        "loss_vs_compute": compare(pre["prediction"]["loss_vs_compute"], actual["loss"]),
        "chinchilla": compare(pre["prediction"]["chinchilla"], actual["loss"]),
        "pass_rate": compare(pc, actual.get("pass_rate")),
        "actual": actual,
        "compute_optimal_at_target": pre["compute_optimal_at_target"],
        "level": pre["level"],
    }
    atomic_write_json(out / "prediction.json", doc)
    plot_target = {
        "C": C_t,
        "prediction": {"loss_vs_compute": pre["prediction"]["loss_vs_compute"], **({"pass_rate": pc} if pc else {})},
        "actual_loss": actual["loss"],
        "actual_pass_rate": actual.get("pass_rate"),
    }
    draw_plots(runs, fits, out, target=plot_target)
    for key, label in (("loss_vs_compute", "loss, L(C)"), ("chinchilla", "loss, L(N,D)"), ("pass_rate", "pass rate")):
        c = doc[key]
        if c:
            print(
                f"[scaling predict] {label:<13} predicted {c['predicted']:.4f} [{c['lo']:.4f}, {c['hi']:.4f}] "
                f"actual {c['actual']:.4f}  error {100 * c['abs_rel_error']:.2f}%  "
                f"{'inside' if c['inside_interval'] else 'OUTSIDE'} the {int(100 * pre['level'])}% interval"
            )
    result.update({k: doc[k] for k in ("loss", "pass_rate")})
    return result
