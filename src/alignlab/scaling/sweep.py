"""Plan and run a scaling sweep: a family of small pretraining runs under one stated recipe.

Every run is the ordinary pretraining stage (``stages/pretrain.run``) with a
generated ``PretrainConfig``, in ``OUT/runs/<name>/``; a run whose folder holds
``summary.json`` finished and is skipped, one without it resumes from its last
checkpoint, so a killed sweep continues where it stopped.

The recipe (one rule for every size, so the runs differ only in scale):

* width ``d_model`` from the grid; ``n_layer`` fixed; ``n_head = round(d_model / head_dim)``;
  ``d_ff = ffn_mult · d_model`` rounded to a multiple of 8;
* peak learning rate by a width rule, lr = lr_base · (lr_base_width / d_model)^lr_width_exp
  (exponent 1 is the muP-style 1/width rule), or an explicit per-width table;
* seeds: every run uses ``seed``; the main line is repeated with each of ``line_seeds``
  (each seed its own run and row), so the fits see run-to-run noise;
* AdamW, short linear warmup (``warmup_frac`` of the steps), cosine decay to
  ``min_lr_ratio`` of the peak, fixed batch and sequence length, the run's length
  set by its token budget D: steps = D / (batch_size · seq_len).

Compute is counted as C = 6·N·D with N the **non-embedding** parameters (Kaplan et al.
2020); C_total = 6·N_total·D, with N_total all parameters (here: non-embedding plus the
tied embedding/output matrix, so it also counts the output layer's compute, as
Porian et al. 2024 recommend at small scale), is recorded beside it.

The grid is sizes × token budgets, so tokens-per-parameter varies and N and D are not
collinear (a single shared ratio would leave Chinchilla's L(N, D) unidentifiable).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

from alignlab.config import apply, to_dict, unalias
from alignlab.outputs import atomic_write_json, atomic_write_text, read_metrics, read_summary

CSV_COLUMNS = [
    "name",
    "main",
    "seed",
    "width",
    "n_layer",
    "N",
    "N_total",
    "D",
    "C",
    "C_total",
    "loss",
    "pass_rate",
    "pass_rate_geo",
    "value_prob",
    "pass_rate_all",
    "train_loss",
    "lr",
    "steps",
    "epochs",
    "seconds",
]
COMPUTE_NOTE = (
    "C = 6*N*D with N = non-embedding parameters and D = training tokens seen "
    "(steps*batch_size*seq_len); C_total = 6*N_total*D with N_total = all parameters "
    "(non-embedding + the tied embedding/output matrix)"
)


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One planned run: its model shape, its length and its learning rate."""

    name: str
    width: int
    n_layer: int
    n_head: int
    d_ff: int
    steps: int
    lr: float
    tokens: int  # D = steps * batch_size * seq_len, exactly
    seed: int = 0


# --------------------------------------------------------------------------- the recipe


def lr_for_width(cfg, width: int) -> float:
    """The recipe's peak learning rate for a width (table entry if given, else the rule)."""
    table = {int(k): float(v) for k, v in (cfg.lr_table or {}).items()}
    if table:
        if width not in table:
            raise ValueError(f"lr_table has no entry for width {width} (has {sorted(table)})")
        return table[width]
    return cfg.lr_base * (cfg.lr_base_width / width) ** cfg.lr_width_exp


def make_spec(cfg, width: int, tokens: float, name: str | None = None, seed: int | None = None) -> RunSpec:
    """The run the recipe prescribes for a model of ``width`` trained on ~``tokens`` tokens."""
    seed = cfg.seed if seed is None else seed
    n_head = max(1, int(round(width / cfg.head_dim)))
    if width % n_head:
        raise ValueError(f"width {width} does not split into {n_head} heads of ~head_dim={cfg.head_dim}")
    if (width // n_head) % 2:
        raise ValueError(f"width {width}: head size {width // n_head} is odd (rotary embeddings need an even one)")
    tokens_per_step = cfg.batch_size * cfg.seq_len
    steps = max(1, int(round(float(tokens) / tokens_per_step)))
    d_ff = max(8, int(round(cfg.ffn_mult * width / 8)) * 8)
    name = name or f"d{width}_D{_short(steps * tokens_per_step)}" + (f"_s{seed}" if seed != cfg.seed else "")
    return RunSpec(
        name, width, cfg.n_layer, n_head, d_ff, steps, lr_for_width(cfg, width), steps * tokens_per_step, seed
    )


def _short(x: float) -> str:
    """1234567 -> '1.23M' (for run names)."""
    for unit, div in (("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.3g}{unit}"
    return str(int(x))


def parse_grid(cfg) -> list[tuple[int, float]]:
    """(width, tokens) pairs: the explicit ``grid`` ("WIDTHxTOKENS") or widths × token_budgets."""
    if cfg.grid:
        pairs = []
        for entry in cfg.grid:
            try:
                w, d = str(entry).lower().split("x")
                pairs.append((int(w), float(d)))
            except ValueError:
                raise ValueError(f"grid entry {entry!r}: expected WIDTHxTOKENS, e.g. 32x4e5") from None
        return pairs
    return [(w, float(d)) for w in cfg.widths for d in cfg.token_budgets]


def plan(cfg) -> list[RunSpec]:
    """Every grid run with the sweep's seed, plus the main line again with each of ``line_seeds``."""
    specs = [make_spec(cfg, w, d) for w, d in parse_grid(cfg)]
    extra = [s for s in dict.fromkeys(cfg.line_seeds) if s != cfg.seed]
    specs += [make_spec(cfg, sp.width, sp.tokens, seed=s) for s in extra for sp in specs if on_main_line(cfg, sp)]
    names = [s.name for s in specs]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"the grid plans the same run twice: {dupes}")
    if len(specs) < 2:
        raise ValueError("a sweep needs at least two runs")
    return specs


def pretrain_config(cfg, spec: RunSpec, output_dir: str | Path, config_class: type | None = None, **extra: Any):
    """The ``PretrainConfig`` of one run of the recipe (``config_class`` may add fields)."""
    from alignlab.stages.pretrain import PretrainConfig

    evals = max(1, spec.steps // max(1, cfg.eval_points))
    ckpt = max(1, spec.steps // max(1, cfg.checkpoints_per_run)) if cfg.checkpoints_per_run else 0
    values = {
        "data": cfg.data,
        "text_column": cfg.text_column,
        "train_split": cfg.train_split,
        "eval_split": cfg.eval_split,
        "source": {"tokenizer": cfg.tokenizer},
        "model": {"d_model": spec.width, "n_layer": spec.n_layer, "n_head": spec.n_head, "d_ff": spec.d_ff},
        "seq_len": cfg.seq_len,
        "batch_size": cfg.batch_size,
        "max_steps": spec.steps,
        "optim": {
            "lr": spec.lr,
            "min_lr_ratio": cfg.min_lr_ratio,
            "warmup_steps": max(1, int(round(cfg.warmup_frac * spec.steps))),
            "weight_decay": cfg.weight_decay,
        },
        "eval_interval": evals,
        "eval_blocks": cfg.eval_blocks,
        "run": {
            "checkpoint_interval": ckpt,
            "log_interval": max(1, min(50, spec.steps // 20)),
            "seed": spec.seed,
            "device": cfg.device,
            "resume": True,
            "tensorboard": False,
        },
        "output_dir": str(output_dir),
    }
    return apply((config_class or PretrainConfig)(), {**values, **extra}, f"scaling recipe for {spec.name}")


# --------------------------------------------------------------------------- one run


def _same_recipe(run_dir: Path, pcfg) -> str | None:
    """None if the finished run in ``run_dir`` was made with ``pcfg``; else what differs."""
    import yaml

    path = run_dir / "config.yaml"
    if not path.exists():
        return None
    # a run saved before the config had sections keeps its flat keys (lr, seed, tokenizer): move them
    old = _dotted(unalias(type(pcfg), yaml.safe_load(path.read_text()) or {}, str(path), warn=False))
    new = _dotted(to_dict(pcfg))
    diffs = [
        f"{key}: {old.get(key)!r} (on disk) vs {new.get(key)!r} (planned)"
        for key in RECIPE_KEYS
        if old.get(key) != new.get(key)
    ]
    return "; ".join(diffs) or None


# what makes two runs the same recipe (dotted config keys)
RECIPE_KEYS = (
    "model.init_from", "model.d_model", "model.n_layer", "model.n_head", "model.d_ff", "seq_len", "batch_size",
    "max_steps", "optim.lr", "optim.min_lr_ratio", "optim.warmup_steps", "optim.weight_decay", "run.seed", "data",
    "source.tokenizer",
)  # fmt: skip


def _dotted(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out.update(_dotted(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def train_run(cfg, spec: RunSpec, run_dir: Path, config_class: type | None = None, **extra: Any) -> dict[str, Any]:
    """Train one run of the recipe unless its folder already holds a finished one."""
    from alignlab.stages.registry import run_stage

    pcfg = pretrain_config(cfg, spec, run_dir, config_class, **extra)
    summary = read_summary(run_dir)
    if summary is not None:
        why = _same_recipe(run_dir, pcfg)
        if why:
            raise ValueError(
                f"{run_dir} holds a finished run made with another recipe ({why}); "
                "use a new output_dir or delete that run folder"
            )
        print(f"[scaling] {spec.name}: already finished, skipping")
        return summary
    print(
        f"[scaling] {spec.name}: d_model={spec.width} n_layer={spec.n_layer} steps={spec.steps} "
        f"D={spec.tokens:,} lr={spec.lr:.3g}"
    )
    summary = run_stage("pretrain", pcfg)
    if not cfg.keep_checkpoints:  # the latest checkpoint and the one kept before it (checkpoints.py)
        for name in ("checkpoint", "checkpoint.prev"):
            shutil.rmtree(run_dir / name, ignore_errors=True)
    return summary


def capability_results(cfg, run_dir: Path, items: list[dict[str, Any]]) -> list[dict[str, Any]] | None:
    """Per-item pass counts and exact pass probabilities of a finished run (cached in capability.json).

    A cache written before ``pass_prob`` existed keeps its sampled counts and gains the exact
    probabilities (one teacher-forced pass per item), so an old sweep is not resampled."""
    if not items:
        return None
    path = run_dir / "capability.json"
    if path.exists():
        cached = json.loads(path.read_text())
        if [r["id"] for r in cached["results"]] == [it["id"] for it in items] and cached.get(
            "samples_per_item"
        ) == cfg.samples_per_item:
            if all("pass_prob" in r for r in cached["results"]):
                return cached["results"]
            return _add_exact_probs(cfg, run_dir, path, cached)
    from alignlab.scaling.capability import evaluate_pass_rates

    model, tok = _run_model(cfg, run_dir)
    t0 = time.time()
    results = evaluate_pass_rates(
        model, tok, items, cfg.samples_per_item, cfg.temperature, cfg.gen_batch_size, seed=cfg.seed
    )
    atomic_write_json(
        path,
        {
            "samples_per_item": cfg.samples_per_item,
            "temperature": cfg.temperature,
            "seconds": round(time.time() - t0, 1),
            "results": results,
        },
    )
    return results


def _run_model(cfg, run_dir: Path):
    import torch

    from alignlab.models.load import load_causal_lm, load_tokenizer

    device = "cuda" if cfg.device != "cpu" and torch.cuda.is_available() else "cpu"
    return load_causal_lm(str(run_dir)).to(device), load_tokenizer(str(run_dir))


def _add_exact_probs(cfg, run_dir: Path, path: Path, cached: dict[str, Any]) -> list[dict[str, Any]]:
    from alignlab.scaling.capability import exact_pass_probs, item_token_ids

    model, tok = _run_model(cfg, run_dir)
    prompts, values = item_token_ids(tok, cached["results"])
    exact = exact_pass_probs(model, tok, prompts, values, cached.get("temperature", cfg.temperature))
    cached["results"] = [{**r, **e} for r, e in zip(cached["results"], exact)]
    atomic_write_json(path, cached)
    return cached["results"]


def on_main_line(cfg, spec: RunSpec) -> bool:
    """Is this run on the recipe's main line (D = line_tokens, rounded to whole steps)?"""
    if not cfg.line_tokens:
        return True
    return spec.tokens == make_spec(cfg, spec.width, cfg.line_tokens).tokens


def run_record(cfg, spec: RunSpec, run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    """Everything the fits need about one finished run (N, D, C, losses)."""
    N, N_total, D = int(summary["non_embedding_params"]), int(summary["total_params"]), int(summary["tokens_seen"])
    curve = [
        {
            "step": m["step"],
            "tokens": m["step"] * cfg.batch_size * cfg.seq_len,
            "C": 6.0 * N * m["step"] * cfg.batch_size * cfg.seq_len,
            "eval_loss": m["eval_loss"],
        }
        for m in read_metrics(run_dir)
        if m.get("eval_loss") is not None
    ]
    return {
        "name": spec.name,
        "main": int(on_main_line(cfg, spec)),
        "seed": spec.seed,
        "width": spec.width,
        "n_layer": spec.n_layer,
        "N": N,
        "N_total": N_total,
        "D": D,
        "C": 6.0 * N * D,
        "C_total": 6.0 * N_total * D,
        "loss": float(summary["final_eval_loss"]),
        "train_loss": summary.get("final_train_loss"),
        "lr": spec.lr,
        "steps": spec.steps,
        "epochs": round(D / max(1, int(summary["train_tokens"])), 3),
        "seconds": summary.get("seconds"),
        "eval_curve": curve,
    }


# --------------------------------------------------------------------------- the sweep


def capability_items(cfg, out: Path) -> list[dict[str, Any]]:
    """The sweep's fixed cloze items (written once to OUT/capability_items.json)."""
    if not cfg.world or cfg.samples_per_item <= 0:
        return []
    from alignlab.scaling.capability import fact_cloze_items

    items = fact_cloze_items(cfg.world, cfg.n_items, cfg.seed, cfg.include_rumoured)
    path = out / "capability_items.json"
    if path.exists() and json.loads(path.read_text())["items"] != items:
        raise ValueError(f"{path} holds other capability items than this config draws; use a new output_dir")
    atomic_write_json(path, {"task": "fact_cloze", "world": cfg.world, "items": items})
    return items


def write_runs_csv(path: Path, records: list[dict[str, Any]]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in records:
        w.writerow({k: _csv_value(r.get(k)) for k in CSV_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    if isinstance(v, float):
        return "" if not math.isfinite(v) else repr(v)
    return "" if v is None else v


def run_sweep(cfg) -> dict[str, Any]:
    """Train every planned run (skipping finished ones), score capability, write runs.csv/sweep.json."""
    from alignlab.scaling.capability import aggregate

    t0 = time.time()
    out = Path(cfg.output_dir)
    specs = plan(cfg)
    items = capability_items(cfg, out)
    print(f"[scaling] sweep of {len(specs)} runs -> {out / 'runs'}")
    records, per_item = [], {}
    for spec in specs:
        run_dir = out / "runs" / spec.name
        summary = train_run(cfg, spec, run_dir)
        records.append(run_record(cfg, spec, run_dir, summary))
        results = capability_results(cfg, run_dir, items)
        if results is not None:
            per_item[spec.name] = results
    restriction = None
    if per_item:
        scores, restriction = aggregate(per_item)
        for r in records:
            r.update(scores[r["name"]])
    records.sort(key=lambda r: r["C"])
    write_runs_csv(out / "runs.csv", records)
    Cs = [r["C"] for r in records]
    doc = {
        "format": "alignlab.scaling.sweep/1",
        "compute": COMPUTE_NOTE,
        "recipe": recipe_text(cfg),
        "config": to_dict(cfg),
        "compute_span": max(Cs) / min(Cs),
        "capability": None
        if restriction is None
        else {
            "task": "fact_cloze",
            "samples_per_item": cfg.samples_per_item,
            "temperature": cfg.temperature,
            "metric": "pass_rate = mean per-item pass rate over items solved at least once by some sweep model",
            **restriction,
        },
        "runs": records,
        "seconds": round(time.time() - t0, 1),
    }
    atomic_write_json(out / "sweep.json", doc)
    print(
        f"[scaling] {len(records)} runs, compute span {doc['compute_span']:.1f}x "
        f"({min(Cs):.3g} .. {max(Cs):.3g} FLOPs; {COMPUTE_NOTE.split(';')[0]})"
    )
    for r in records:
        pr = r.get("pass_rate")
        print(
            f"  {r['name']:<14} N={r['N']:>8,} D={r['D']:>10,} C={r['C']:.3g} loss={r['loss']:.4f}"
            + (f" pass_rate={pr:.4f}" if pr is not None else "")
        )
    return {
        "runs": len(records),
        "compute_span": round(doc["compute_span"], 2),
        "runs_csv": str(out / "runs.csv"),
        "sweep_json": str(out / "sweep.json"),
    }


def recipe_text(cfg) -> str:
    rule = (
        f"lr table {cfg.lr_table}"
        if cfg.lr_table
        else f"lr = {cfg.lr_base:g} * ({cfg.lr_base_width}/d_model)^{cfg.lr_width_exp:g}"
    )
    return (
        f"d_model from the grid, n_layer={cfg.n_layer}, n_head=round(d_model/{cfg.head_dim}), "
        f"d_ff={cfg.ffn_mult:g}*d_model (multiple of 8); {rule}; AdamW (wd {cfg.weight_decay:g}), "
        f"warmup {cfg.warmup_frac:g} of steps, cosine to {cfg.min_lr_ratio:g} of peak; "
        f"batch {cfg.batch_size} x seq_len {cfg.seq_len}; steps = D / (batch*seq_len); seed {cfg.seed}"
        + (f", main line also with seeds {cfg.line_seeds}" if cfg.line_seeds else "")
    )
