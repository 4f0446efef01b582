"""Figures for predictable scaling: the fit, its band, and the held-out big run.

The figures mirror the GPT-4 report's: compute on a log x-axis, the small
runs used for the fit, the fitted curve carried out to the big run, and the
big run's actual value next to its prediction and interval — the one picture
that shows whether the prediction made before training held.

Figures are drawn on a ``matplotlib.figure.Figure`` with the Agg canvas
directly, never through ``pyplot``: no global backend switch, no open-figure
state, safe in tests, servers and notebooks alike.  Every function returns
the path it saved.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from numpy.typing import ArrayLike

Band = tuple[ArrayLike, ArrayLike, ArrayLike]  # (x grid, lower, upper)
Target = tuple[float, float | None, float, Sequence[float] | None]  # (x, actual, predicted, (lo, hi))


def _new_axes(title: str | None) -> tuple[Figure, Any]:
    fig = Figure(figsize=(6.4, 4.4), dpi=120)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    if title:
        ax.set_title(title)
    ax.grid(True, which="both", alpha=0.25)
    return fig, ax


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path)
    return path


def _curve_grid(x: np.ndarray, target_x: float | None) -> np.ndarray:
    hi = max(float(x.max()), target_x or 0.0)
    return np.logspace(np.log10(x.min()) - 0.2, np.log10(hi) + 0.2, 200)


def _draw_target(ax: Any, target: Target | None, transform: Any = lambda v: v) -> None:
    """The held-out big run: its prediction with interval, and its actual value if known."""
    if target is None:
        return
    x_t, actual, predicted, interval = target
    if interval is not None:
        lo, hi = sorted((float(transform(interval[0])), float(transform(interval[1]))))
        ax.plot([x_t, x_t], [lo, hi], "-", marker="_", markersize=12, color="tab:red", label="target: 95% interval")
    ax.plot([x_t], [transform(predicted)], "s", color="tab:red", label="target: prediction")
    if actual is not None:
        ax.plot([x_t], [transform(actual)], "*", color="black", markersize=13, label="target: actual (held out)")


def plot_loss_vs_compute(
    C: ArrayLike,
    L: ArrayLike,
    fit: Any,
    interval_band: Band | None = None,
    target: Target | None = None,
    path: str | os.PathLike[str] = "loss_vs_compute.png",
    *,
    title: str | None = "Predictable scaling: final loss vs compute",
    xlabel: str = "training compute C (FLOPs)",
) -> Path:
    """Fitted runs, L(C) = a·C^b + c carried to the target, the 95% band, and the held-out run.

    ``interval_band`` is (C grid, lower, upper) — e.g. bootstrap prediction
    intervals on a grid; ``target`` is (C, actual or None, predicted, (lo, hi)
    or None).  The irreducible loss c is drawn as a dotted line: the curve
    should approach it, never cross it.
    """
    C = np.asarray(C, dtype=float)
    L = np.asarray(L, dtype=float)
    fig, ax = _new_axes(title)
    grid = _curve_grid(C, None if target is None else float(target[0]))
    if interval_band is not None:
        bx, blo, bhi = (np.asarray(v, dtype=float) for v in interval_band)
        ax.fill_between(bx, blo, bhi, color="tab:blue", alpha=0.2, label="95% interval")
    label = f"fit: {fit.a:.3g}·C^{fit.b:.3f} + {fit.c:.3f}" if hasattr(fit, "a") else "fit"
    ax.plot(grid, fit.predict(grid), color="tab:blue", label=label)
    if hasattr(fit, "c"):
        ax.axhline(fit.c, color="gray", linestyle=":", label="irreducible loss c")
    ax.plot(C, L, "o", color="tab:blue", markeredgecolor="white", label="fitted runs")
    _draw_target(ax, target)
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("final loss")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_capability(
    C: ArrayLike,
    pass_rate: ArrayLike,
    fit: Any,
    interval_band: Band | None = None,
    target: Target | None = None,
    path: str | os.PathLike[str] = "capability.png",
    *,
    title: str | None = "Capability: −log pass rate vs compute",
    xlabel: str = "training compute C (FLOPs)",
) -> Path:
    """−log pass_rate against compute on log-log axes, where the law α·C^(−k) is a line.

    Points the fit excluded (pass rate 0, 1, or below its ``min_pass_rate``)
    are drawn hollow so the reader sees what the fit ignored.  ``target``
    and ``interval_band`` are in pass-rate units and converted here.
    """
    C = np.asarray(C, dtype=float)
    p = np.asarray(pass_rate, dtype=float)
    used = np.asarray(getattr(fit, "used", np.ones(len(p), dtype=bool)), dtype=bool)
    neg_log = lambda v: -np.log(np.clip(np.asarray(v, dtype=float), 1e-300, None))  # noqa: E731
    fig, ax = _new_axes(title)
    grid = _curve_grid(C, None if target is None else float(target[0]))
    if interval_band is not None:
        bx, blo, bhi = (np.asarray(v, dtype=float) for v in interval_band)
        ax.fill_between(bx, neg_log(blo), neg_log(bhi), color="tab:green", alpha=0.2, label="95% interval")
    ax.plot(grid, fit.predict_neg_log(grid), color="tab:green", label=f"fit: α·C^(−k), k={fit.k:.3f}")
    ax.plot(C[used], neg_log(p[used]), "o", color="tab:green", markeredgecolor="white", label="fitted")
    shown = ~used & (p > 0) & (p < 1)
    if shown.any():
        ax.plot(C[shown], neg_log(p[shown]), "o", mfc="none", color="gray", label="excluded")
    _draw_target(ax, target, transform=lambda v: float(neg_log(v)))
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("−log pass rate")
    ax.legend(fontsize=8)
    return _save(fig, path)


def plot_residuals(
    x: ArrayLike,
    log_residuals: ArrayLike,
    path: str | os.PathLike[str] = "residuals.png",
    *,
    residual_scale: float | None = None,
    xlabel: str = "training compute C (FLOPs)",
    title: str | None = "Fit residuals (observed / predicted − 1)",
) -> Path:
    """Residuals against x on a log axis: a trend means the functional form is wrong.

    Log residuals are shown as percentages (exp(r) − 1).  A curve in the
    residuals at the large-x end is the warning sign for extrapolation: the
    law is bending away exactly where the prediction will be made.
    """
    x = np.asarray(x, dtype=float)
    r = np.asarray(log_residuals, dtype=float)
    fig, ax = _new_axes(title)
    ax.axhline(0.0, color="black", linewidth=0.8)
    if residual_scale is not None:
        s = 100.0 * (np.exp(residual_scale) - 1.0)
        ax.axhspan(-2 * s, 2 * s, color="gray", alpha=0.15, label="±2σ")
    ax.plot(x, 100.0 * np.expm1(r), "o", color="tab:purple")
    ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("residual (%)")
    if residual_scale is not None:
        ax.legend(fontsize=8)
    return _save(fig, path)
