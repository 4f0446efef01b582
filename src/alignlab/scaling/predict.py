"""From a sweep's runs to fitted laws with bootstrap intervals, and predictions at a target.

One function, ``fit_runs``, does every fit the scaling commands report, each with a
case bootstrap (``bootstrap.py``) that gives intervals for its parameters and for
predictions at the points asked for:

* L(C) = a·C^b + c on (C, final loss) — the GPT-4 report's law — on the sweep's main
  line (``lc_runs="main"``: the runs that are smaller copies of the target under one
  recipe, column ``main``; every run when the file has no such column), on every run
  (``"all"``), or on the compute frontier (``"frontier"``: a run counts only if no run
  with less or equal compute reached a lower loss).  Runs of one compute but another
  allocation of N and D have another loss, so L(C) is only a law along one recipe;
  the capability law uses the same runs;
* L(N, D) = E + A/N^α + B/D^β (Chinchilla approach 3) when N and D vary independently
  enough (``chinchilla_check`` says why not otherwise), plus the compute-optimal
  allocation N_opt(C), D_opt(C) with intervals;
* −log pass_rate = α·C^(−k) (the GPT-4 capability law) on runs with a measurable
  pass rate.

``scaling fit`` calls it with a grid of compute values (for the plotted bands);
``scaling predict`` calls it again with the same data and settings plus the target, so
its parameters are exactly those of fit.json (checked) and the target's intervals come
from the same bootstrap.  Loss intervals are *prediction* intervals (a new run's own
noise included, see bootstrap.py); allocation intervals are confidence intervals.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from alignlab.scaling import plots
from alignlab.scaling.bootstrap import bootstrap
from alignlab.scaling.fit import (
    HOFFMANN_GRID,
    compute_optimal,
    fit_capability,
    fit_capability_problems,
    fit_chinchilla,
    fit_loss_vs_compute,
)


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def frontier_mask(C: np.ndarray, L: np.ndarray) -> np.ndarray:
    """Runs on the compute-efficient frontier: no run with ≤ compute has a lower loss."""
    keep = np.zeros(len(C), dtype=bool)
    best = math.inf
    for i in np.lexsort((L, C)):
        if L[i] < best:
            keep[i] = True
            best = L[i]
    return keep


def chinchilla_check(N: np.ndarray, D: np.ndarray, min_runs: int = 6, max_corr: float = 0.95) -> str | None:
    """None if L(N, D) is identifiable from these runs; else the reason it is not."""
    if len(N) < min_runs:
        return f"only {len(N)} runs; L(N, D) has 5 parameters and needs at least {min_runs}"
    if len(np.unique(N)) < 3 or len(np.unique(D)) < 3:
        return f"{len(np.unique(N))} distinct N and {len(np.unique(D))} distinct D; need at least 3 of each"
    corr = float(np.corrcoef(np.log(N), np.log(D))[0, 1])
    if not math.isfinite(corr) or abs(corr) > max_corr:
        return (
            f"log N and log D are collinear (correlation {corr:.3f}, limit {max_corr}): "
            "the runs share one tokens-per-parameter rule, so A/N^alpha and B/D^beta cannot be told apart"
        )
    return None


def chinchilla_fit_robust(N, D, L, *, init=None, warn: bool = True, starts: int = 64):
    """``fit_chinchilla``, falling back to a fresh grid search when a warm start overflows.

    A bootstrap resample can make the warm-started L-BFGS run off to parameters whose
    exp() overflows (seen on real sweeps; ``fit_chinchilla`` then raises
    FloatingPointError); such a resample is refitted from the best
    ``starts`` points of Hoffmann et al.'s grid instead of aborting the whole bootstrap.
    """
    grid_kw = {"grid": HOFFMANN_GRID, "n_best_starts": starts if starts > 0 else None}
    if init is not None:
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                return fit_chinchilla(N, D, L, init=init, warn=warn)
        except (FloatingPointError, ValueError):
            pass
    with np.errstate(over="ignore", invalid="ignore"):
        return fit_chinchilla(N, D, L, warn=warn, **grid_kw)


def _interval(boot: dict[str, Any], sl: slice | int) -> dict[str, Any]:
    p = boot["prediction"]
    pick = lambda k: np.asarray(p[k], dtype=float)[sl]  # noqa: E731
    return {
        "estimate": pick("estimate"),
        "lo": pick("prediction_lo"),
        "hi": pick("prediction_hi"),
        "confidence_lo": pick("confidence_lo"),
        "confidence_hi": pick("confidence_hi"),
    }


def fit_runs(
    runs: dict[str, np.ndarray],
    *,
    compute: str = "C",
    lc_runs: str = "main",
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    chinchilla: str = "auto",
    chinchilla_starts: int = 64,
    max_corr: float = 0.95,
    min_pass_rate: float = 1e-3,
    band_C: Sequence[float] = (),
    targets: Sequence[dict[str, float]] = (),
    budgets: Sequence[float] = (),
) -> dict[str, Any]:
    """Fit the laws on ``runs`` (arrays "loss" and "C"/"N"/"D", optional "pass_rate").

    ``band_C``: compute values for plotted bands; ``targets``: [{"C", "N", "D"}] points to
    predict (loss by both laws, pass rate); ``budgets``: compute budgets for the
    compute-optimal allocation.  Returns {"lc", "chinchilla", "capability"} bootstrap
    results (None where a fit was not possible, with "..._skipped" saying why) and
    "predictions" at the targets.
    """
    L = runs["loss"]
    if compute not in runs:
        raise ValueError(f"the runs have no {compute!r} column (compute: C, or C_total)")
    C = runs[compute]
    band_C = np.asarray(band_C, dtype=float)
    t_C = np.array([t["C"] for t in targets], dtype=float)
    n_band = len(band_C)
    out: dict[str, Any] = {"compute_column": compute, "lc_runs": lc_runs, "n_runs": len(L)}

    # ---- L(C) = a·C^b + c
    if lc_runs not in ("main", "all", "frontier"):
        raise ValueError("lc_runs must be 'main', 'all' or 'frontier'")
    if lc_runs == "frontier":
        mask = frontier_mask(C, L)
    elif lc_runs == "main" and "main" in runs:
        mask = np.asarray(runs["main"], dtype=bool)
    else:
        mask = np.ones(len(L), dtype=bool)
    if mask.sum() < 4:
        raise ValueError(f"L(C) needs at least 4 runs, got {int(mask.sum())} ({lc_runs})")
    pts = np.concatenate([band_C, t_C])
    lc = bootstrap(
        fit_loss_vs_compute,
        (C[mask], L[mask]),
        n_boot=n_boot,
        seed=seed,
        level=level,
        predict=(lambda f: f.predict(pts)) if len(pts) else None,
    )
    out["lc"], out["lc_mask"] = lc, mask

    # ---- Chinchilla L(N, D)
    cc = None
    why = None
    if chinchilla == "off":
        why = "disabled (chinchilla=off)"
    elif "N" not in runs or "D" not in runs:
        why = "the runs file has no N and D columns"
    else:
        N, D = runs["N"], runs["D"]
        why = chinchilla_check(N, D, max_corr=max_corr)
        if why and chinchilla == "on":
            why = None  # forced: fit anyway, the report keeps the warning below
            out["chinchilla_warning"] = chinchilla_check(N, D, max_corr=max_corr)
        if why is None:
            full = chinchilla_fit_robust(N, D, L, starts=chinchilla_starts)
            t_N = np.array([t["N"] for t in targets], dtype=float)
            t_D = np.array([t["D"] for t in targets], dtype=float)
            cc = bootstrap(
                chinchilla_fit_robust,
                {"N": N, "D": D, "L": L},
                n_boot=n_boot,
                seed=seed,
                level=level,
                full_fit=full,
                fit_kwargs={"starts": chinchilla_starts},
                predict=(lambda f: f.predict(t_N, t_D)) if len(t_N) else None,
            )
            if len(budgets):
                out["allocation"], out["allocation_skipped"] = allocation(cc, budgets, level)
    out["chinchilla"], out["chinchilla_skipped"] = cc, why

    # ---- capability −log p = α·C^(−k)
    cap = None
    cap_why = None
    if "pass_rate" not in runs:
        cap_why = "the runs file has no pass_rate column"
    else:
        p = runs["pass_rate"]
        ok = mask & np.isfinite(p) & (p >= min_pass_rate) & (p < 1)
        if ok.sum() < 4:
            cap_why = f"only {int(ok.sum())} runs have {min_pass_rate} <= pass_rate < 1; need at least 4"
        else:
            cap = bootstrap(
                fit_capability,
                (C[ok], p[ok]),
                n_boot=n_boot,
                seed=seed,
                level=level,
                fit_kwargs={"min_pass_rate": min_pass_rate},
                predict=(lambda f: f.predict_neg_log(pts)) if len(pts) else None,
            )
            out["capability_mask"] = ok
    out["capability"], out["capability_skipped"] = cap, cap_why

    # ---- predictions at the targets and the bands
    preds = []
    for j, t in enumerate(targets):
        rec: dict[str, Any] = {"target": dict(t)}
        rec["loss_vs_compute"] = {k: float(v) for k, v in _interval(lc, n_band + j).items()}
        if cc is not None:
            rec["chinchilla"] = {k: float(v) for k, v in _interval(cc, j).items()}
        if cap is not None:
            nl = {k: float(v) for k, v in _interval(cap, n_band + j).items()}
            # −log p is what the law (and its noise model) lives in; map back to p (order flips).
            rec["pass_rate"] = {
                "estimate": math.exp(-nl["estimate"]),
                "lo": math.exp(-nl["hi"]),
                "hi": math.exp(-nl["lo"]),
                "confidence_lo": math.exp(-nl["confidence_hi"]),
                "confidence_hi": math.exp(-nl["confidence_lo"]),
                "neg_log": nl,
            }
        preds.append(rec)
    out["predictions"] = preds
    if n_band:
        out["band"] = {"C": band_C, "lc": _interval(lc, slice(0, n_band))}
        if cap is not None:
            nl = _interval(cap, slice(0, n_band))
            out["band"]["pass_rate"] = {
                "estimate": np.exp(-nl["estimate"]),
                "lo": np.exp(-nl["hi"]),
                "hi": np.exp(-nl["lo"]),
            }
    return out


def fit_pass_rates(
    path: str | Path,
    data: dict[str, np.ndarray],
    *,
    n_boot: int = 200,
    seed: int = 0,
    level: float = 0.95,
    min_pass_rate: float = 1e-3,
) -> dict[str, Any]:
    """The GPT-4 capability law −E[log p(C)] = α·C^(−k) on a pass-rate file, with bootstrap intervals.

    Per-problem rows (``data["problem"]``): problems with pass rate 0 at any C are dropped
    (the GPT-4 report fitted only problems every model solves sometimes; −log 0 is
    infinite), the mean of −log p over the rest is fitted, and the bootstrap resamples
    problems. Aggregate rows: points with ``min_pass_rate`` ≤ p < 1 are fitted and the
    bootstrap resamples them. Returns {"capability": bootstrap result, "mode", "n_problems",
    "dropped_problems", "n_points_used"}.
    """
    from alignlab.errors import DataError
    from alignlab.scaling.io import RunsFileError, pass_rate_matrix

    out: dict[str, Any] = {}
    try:
        if "problem" in data:
            Cs, rates, names = pass_rate_matrix(path, data)
            keep = np.all(rates > 0, axis=1)
            if keep.sum() < 3:
                raise ValueError(f"only {int(keep.sum())} problems have pass_rate > 0 at every C; need at least 3")
            out.update(mode="per_problem", n_problems=len(names), C=Cs)
            out["restriction"] = "problems with pass_rate 0 at any C dropped (min_pass_rate not used)"
            out["dropped_problems"] = [n for n, k in zip(names, keep) if not k]
            boot = bootstrap(
                fit_capability_problems,
                (-np.log(rates[keep]),),
                n_boot=n_boot,
                seed=seed,
                level=level,
                fit_kwargs={"C": Cs},
            )
        else:
            C, p = data["C"], data["pass_rate"]
            ok = (p >= min_pass_rate) & (p < 1)
            if ok.sum() < 3:
                raise ValueError(f"only {int(ok.sum())} rows have {min_pass_rate} <= pass_rate < 1; need at least 3")
            out.update(mode="aggregate", n_points=len(p), n_points_excluded=int((~ok).sum()), C=np.unique(C[ok]))
            out["restriction"] = f"points with {min_pass_rate} <= pass_rate < 1"
            boot = bootstrap(
                fit_capability,
                (C[ok], p[ok]),
                n_boot=n_boot,
                seed=seed,
                level=level,
                fit_kwargs={"min_pass_rate": min_pass_rate},
            )
    except ValueError as e:
        if isinstance(e, (DataError, RunsFileError)):
            raise
        raise DataError(f"{path}: cannot fit the capability law: {e}") from None
    out["capability"] = boot
    return out


def allocation(cc: dict[str, Any], budgets: Sequence[float], level: float) -> tuple[list | None, str | None]:
    """Compute-optimal N, D (``fit.compute_optimal``) at each budget, with bootstrap intervals.

    The interval is the percentile interval of the allocation over the bootstrap's
    parameter samples (a confidence interval: where the optimum lies, not run noise).
    Resamples whose fit has α ≤ 0 or β ≤ 0 have no optimum; they are counted and, if
    they are more than half, no interval is given.
    """
    full = cc["full_fit"]
    if full.alpha <= 0 or full.beta <= 0:
        return None, f"the fitted L(N, D) has alpha={full.alpha:.3g}, beta={full.beta:.3g}: no compute-optimal size"
    s = cc["samples"]
    ok = (s["alpha"] > 0) & (s["beta"] > 0)
    tail = 100 * (1 - level) / 2
    out = []
    for b in budgets:
        n_opt, d_opt = (float(v[0]) for v in compute_optimal(full, [b]))
        rec = {"C": float(b), "N_opt": n_opt, "D_opt": d_opt, "n_boot_without_optimum": int((~ok).sum())}
        if ok.sum() >= len(ok) / 2:
            ns = [
                compute_optimal(SimpleNamespace(alpha=s["alpha"][i], beta=s["beta"][i], A=s["A"][i], B=s["B"][i]), [b])
                for i in np.flatnonzero(ok)
            ]
            Ns = np.array([float(n[0][0]) for n in ns])
            rec.update(
                N_opt_lo=float(np.percentile(Ns, tail)),
                N_opt_hi=float(np.percentile(Ns, 100 - tail)),
                D_opt_lo=float(b / 6 / np.percentile(Ns, 100 - tail)),
                D_opt_hi=float(b / 6 / np.percentile(Ns, tail)),
            )
        out.append(rec)
    return out, None


def draw_plots(
    runs: dict[str, np.ndarray], fits: dict[str, Any], out_dir: str | Path, target: dict[str, Any] | None = None
) -> list[str]:
    """loss_vs_compute.png, capability.png, residuals.png (+ residuals_chinchilla.png), with the target if given."""
    out_dir = Path(out_dir)
    C = runs[fits["compute_column"]]
    band = fits.get("band")
    paths = []
    lc = fits["lc"]["full_fit"]
    mask = fits["lc_mask"]
    t_loss = t_cap = None
    if target is not None:
        pl = target["prediction"]["loss_vs_compute"]
        t_loss = (target["C"], target.get("actual_loss"), pl["estimate"], (pl["lo"], pl["hi"]))
        if "pass_rate" in target["prediction"]:
            pp = target["prediction"]["pass_rate"]
            t_cap = (target["C"], target.get("actual_pass_rate"), pp["estimate"], (pp["lo"], pp["hi"]))
    xlabel = f"training compute {fits['compute_column']} = 6·N·D (FLOPs" + (
        ", N non-embedding)" if fits["compute_column"] == "C" else ", N all parameters)"
    )
    paths.append(
        plots.plot_loss_vs_compute(
            C[mask],
            runs["loss"][mask],
            lc,
            interval_band=(band["C"], band["lc"]["lo"], band["lc"]["hi"]) if band else None,
            target=t_loss,
            path=out_dir / "loss_vs_compute.png",
            xlabel=xlabel,
        )
    )
    paths.append(
        plots.plot_residuals(
            C[mask],
            lc.log_residuals,
            out_dir / "residuals.png",
            residual_scale=lc.residual_scale,
            xlabel=xlabel,
            title="L(C) fit residuals (observed / predicted − 1)",
        )
    )
    if fits.get("chinchilla") is not None:
        cc = fits["chinchilla"]["full_fit"]
        paths.append(
            plots.plot_residuals(
                C,
                cc.log_residuals,
                out_dir / "residuals_chinchilla.png",
                residual_scale=cc.residual_scale,
                xlabel=xlabel,
                title="L(N, D) fit residuals (observed / predicted − 1)",
            )
        )
    if fits.get("capability") is not None:
        ok = fits["capability_mask"]
        cap = fits["capability"]["full_fit"]
        cband = band.get("pass_rate") if band else None
        paths.append(
            plots.plot_capability(
                C[ok],
                runs["pass_rate"][ok],
                cap,
                interval_band=(band["C"], cband["lo"], cband["hi"]) if cband else None,
                target=t_cap,
                path=out_dir / "capability.png",
                xlabel=xlabel,
            )
        )
    return [str(p) for p in paths]
