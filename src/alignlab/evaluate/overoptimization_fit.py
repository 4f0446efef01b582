"""Reward-model over-optimisation laws (Gao, Schulman & Hilton 2022), as fitting functions.

With d = sqrt(KL(policy || initial policy)) and R the gold-reward *gain* over d = 0:

* best-of-n:  R(d) = d·(α − β·d)        peak at d* = α / (2β),      R* = α² / (4β)
* RL:         R(d) = d·(α − β·log d)    peak at d* = exp(α/β − 1),  R* = β·d*

Both forms are linear in (α, β) for fixed d, so the least-squares fit is a closed-form
linear solve (``scipy.linalg.lstsq``): no starting points, nothing that can fail to converge,
and a bootstrap over prompts is one matrix product per resample.

``fit_overoptimization`` fits one curve, with percentile intervals when per-prompt gold
is given (prompts resampled, the mean curve refitted). ``fit_size_trend`` fits α and β
against log RM size, as Gao et al. found both smooth in it, and predicts α, β, d*, R* at a
larger proxy RM with intervals. ``heldout_r2`` scores a law on points it was not fitted to, and
``r2_if_law_true`` says what that score would be if the law were exactly true, given each point's
measured sampling noise: a low R² is then the law's fault only when it falls below that range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy import linalg, stats

from alignlab.evaluate.headroom import best_of_n_kl

FORMS = ("bon", "rl")

__all__ = [
    "FORMS",
    "OveroptFit",
    "SizeTrend",
    "best_of_n_d",
    "best_of_n_kl",
    "fit_overoptimization",
    "fit_size_trend",
    "gain",
    "heldout_r2",
    "peak",
    "peak_then_fall",
    "percentile",
    "r2_if_law_true",
]


def best_of_n_d(n: int) -> float:
    """d = sqrt(KL) that best-of-n spends (the KL from ``headroom.best_of_n_kl``)."""
    return math.sqrt(best_of_n_kl(n))


def _check_form(form: str) -> None:
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS} (best-of-n or RL), got {form!r}")


def _features(d: np.ndarray, form: str) -> np.ndarray:
    """[points, 2] design matrix: R = α·x0 − β·x1."""
    if form == "bon":
        x1 = d**2
    else:
        x1 = d * np.log(np.where(d > 0, d, 1.0))  # d·log d → 0 as d → 0
    return np.column_stack([d, -x1])


def gain(d: ArrayLike, alpha: float, beta: float, form: str) -> np.ndarray:
    """R(d): the gold-reward gain of the ``form`` law at d = sqrt(KL)."""
    _check_form(form)
    d = np.asarray(d, dtype=float)
    return (_features(d.ravel(), form) @ np.array([alpha, beta])).reshape(d.shape)


def peak(alpha: ArrayLike, beta: ArrayLike, form: str) -> tuple[np.ndarray, np.ndarray]:
    """(d*, R*): where the gain peaks and its height; inf where β ≤ 0 (the curve never turns)."""
    _check_form(form)
    a, b = np.asarray(alpha, dtype=float), np.asarray(beta, dtype=float)
    turns = b > 0
    safe_b = np.where(turns, b, 1.0)
    if form == "bon":
        d_star, r_star = a / (2 * safe_b), a**2 / (4 * safe_b)
    else:
        # exp overflows only for a ridiculous α/β; inf is the honest answer there
        with np.errstate(over="ignore"):
            d_star = np.exp(a / safe_b - 1.0)
        r_star = safe_b * d_star
    return np.where(turns, d_star, np.inf), np.where(turns, r_star, np.inf)


def _check_points(d: ArrayLike, form: str) -> np.ndarray:
    d = np.asarray(d, dtype=float).ravel()
    if not np.all(np.isfinite(d)):
        raise ValueError("d contains NaN or infinite values")
    if form == "rl" and np.any(d <= 0):
        raise ValueError("the RL form has log d: every d = sqrt(KL) must be > 0 (drop the d = 0 point, its gain is 0)")
    if np.any(d < 0):
        raise ValueError("d = sqrt(KL) cannot be negative")
    n_distinct = len(np.unique(d[d > 0]))
    if n_distinct < 2:
        raise ValueError(f"need at least 2 distinct points with d > 0 to fit alpha and beta, got {n_distinct}")
    return d


@dataclass
class OveroptFit:
    """Result of ``fit_overoptimization``; intervals are None unless per-prompt data were given."""

    form: str
    alpha: float
    beta: float
    d_star: float
    r_star: float
    n_points: int
    residual_scale: float  # RMS of the mean curve's residuals (dof-corrected when points allow)
    n_prompts: int | None = None
    n_boot: int = 0
    level: float = 0.95
    intervals: dict[str, dict[str, float]] | None = None
    samples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)

    def predict(self, d: ArrayLike) -> np.ndarray:
        return gain(d, self.alpha, self.beta, self.form)

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "beta": self.beta, "d_star": self.d_star, "r_star": self.r_star}

    def to_dict(self) -> dict[str, Any]:
        law = "R = d*(alpha - beta*d)" if self.form == "bon" else "R = d*(alpha - beta*log d)"
        return {
            "form": self.form,
            "law": law + ", d = sqrt(KL) (Gao et al. 2022)",
            "params": self.params,
            "n_points": self.n_points,
            "n_prompts": self.n_prompts,
            "residual_scale": self.residual_scale,
            "n_boot": self.n_boot,
            "level": self.level,
            "intervals": self.intervals,
        }


def percentile(v: np.ndarray, q: ArrayLike) -> np.ndarray:
    """``np.percentile``, except where draws are infinite (a curve that never turns has d* = inf): interpolating
    between inf and a finite draw gives NaN, so there the nearest draw is the bound."""
    return np.percentile(v, q, method="nearest" if np.isinf(v).any() else "linear")


def _percentiles(samples: dict[str, np.ndarray], level: float) -> dict[str, dict[str, float]]:
    tail = 100 * (1 - level) / 2
    return {k: {"lo": float(percentile(v, tail)), "hi": float(percentile(v, 100 - tail))} for k, v in samples.items()}


def fit_overoptimization(
    d: ArrayLike,
    R: ArrayLike | None = None,
    *,
    form: str,
    per_prompt: ArrayLike | None = None,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> OveroptFit:
    """Fit R(d) of ``form`` ("bon" or "rl") by least squares, with peak d*, R*.

    Give the mean gains ``R`` (one per d), or ``per_prompt`` [prompts, points] gains: then
    the mean over prompts is fitted and ``n_boot`` resamples of prompts give percentile
    intervals for α, β, d* and R*. Prompts, not points, are resampled because one
    prompt's gold at different d are correlated (same prompt, same difficulty).
    """
    _check_form(form)
    d = _check_points(d, form)
    if (R is None) == (per_prompt is None):
        raise ValueError("give exactly one of R (mean gains) or per_prompt ([prompts, points] gains)")
    if per_prompt is not None:
        G = np.asarray(per_prompt, dtype=float)
        if G.ndim != 2 or G.shape[1] != len(d):
            raise ValueError(f"per_prompt must be [prompts, {len(d)} points], got shape {G.shape}")
        if G.shape[0] < 2:
            raise ValueError(f"per_prompt needs at least 2 prompts to resample, got {G.shape[0]}")
        y = G.mean(axis=0)
    else:
        y = np.asarray(R, dtype=float).ravel()
        if len(y) != len(d):
            raise ValueError(f"R has {len(y)} values for {len(d)} points d")
    if not np.all(np.isfinite(y)):
        raise ValueError("gains contain NaN or infinite values")
    X = _features(d, form)
    coef, *_ = linalg.lstsq(X, y)
    resid = y - X @ coef
    fit = OveroptFit(
        form=form,
        alpha=float(coef[0]),
        beta=float(coef[1]),
        d_star=float(peak(coef[0], coef[1], form)[0]),
        r_star=float(peak(coef[0], coef[1], form)[1]),
        n_points=len(d),
        residual_scale=float(np.sqrt(np.sum(resid**2) / max(len(d) - 2, 1))),
        level=level,
    )
    if per_prompt is None:
        return fit
    # the design is the same for every resample, so each refit is the pseudo-inverse times the mean curve
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, G.shape[0], size=(n_boot, G.shape[0]))
    means = G[idx].mean(axis=1)  # [n_boot, points]
    ab = means @ linalg.pinv(X).T  # [n_boot, 2]
    d_s, r_s = peak(ab[:, 0], ab[:, 1], form)
    fit.samples = {"alpha": ab[:, 0], "beta": ab[:, 1], "d_star": d_s, "r_star": r_s}
    fit.intervals = _percentiles(fit.samples, level)
    fit.n_prompts, fit.n_boot = int(G.shape[0]), n_boot
    return fit


# --------------------------------------------------------------------------- across RM sizes


@dataclass
class SizeTrend:
    """α, β linear in log N across proxy-RM sizes, and what they predict at ``N_target``."""

    form: str
    N_target: float
    coef: dict[str, tuple[float, float]]  # {"alpha": (intercept, slope per unit log N), "beta": ...}
    prediction: dict[str, dict[str, float]]  # alpha, beta, d_star, r_star -> estimate, lo, hi
    n_sizes: int
    level: float
    extrapolation: float  # log10(N_target / max N fitted): how far past the data

    def to_dict(self) -> dict[str, Any]:
        return {
            "form": self.form,
            "trend": "alpha, beta = a + b*log(N) (Gao et al. 2022: smooth in log RM size)",
            "N_target": self.N_target,
            "coef": {k: list(v) for k, v in self.coef.items()},
            "prediction": self.prediction,
            "n_sizes": self.n_sizes,
            "level": self.level,
            "decades_past_largest": self.extrapolation,
            "interval_kind": "prediction interval for the alpha, beta of one new RM (t, n-2 dof); "
            "d*, R* from joint draws of both",
        }


def fit_size_trend(
    N: ArrayLike,
    alpha: ArrayLike,
    beta: ArrayLike,
    *,
    form: str,
    N_target: float,
    level: float = 0.95,
    n_draws: int = 20000,
    seed: int = 0,
) -> SizeTrend:
    """Fit α_i, β_i (one fit per proxy-RM size N_i) linearly in log N; predict at ``N_target``.

    The interval is a prediction interval for the α, β a new RM of size ``N_target`` would
    get (the scatter of the fitted sizes around the line counts, as a new fit would scatter
    too), from a t with n − 2 degrees of freedom; d* and R* take percentiles over joint draws
    of (α, β), with the residual correlation of α and β kept, since d*, R* depend on both.
    """
    _check_form(form)
    logN = np.log(np.asarray(N, dtype=float).ravel())
    Y = np.column_stack([np.asarray(alpha, dtype=float).ravel(), np.asarray(beta, dtype=float).ravel()])
    n = len(logN)
    if Y.shape[0] != n:
        raise ValueError(f"N, alpha and beta differ in length: {n}, {Y.shape[0]}")
    if not (np.all(np.isfinite(logN)) and np.all(np.isfinite(Y))):
        raise ValueError("N must be positive and alpha, beta finite")
    if len(np.unique(logN)) < 3:
        raise ValueError(f"need at least 3 distinct RM sizes to fit a line and its scatter, got {len(np.unique(logN))}")
    if not (N_target > 0 and math.isfinite(N_target)):
        raise ValueError(f"N_target must be a positive size, got {N_target}")
    X = np.column_stack([np.ones(n), logN])
    B, *_ = linalg.lstsq(X, Y)  # [2 coefs, 2 outputs]
    resid = Y - X @ B
    dof = n - 2
    cov = resid.T @ resid / dof  # residual covariance of (alpha, beta)
    x0 = np.array([1.0, math.log(N_target)])
    lever = 1.0 + x0 @ np.linalg.inv(X.T @ X) @ x0  # new observation + uncertainty of the line
    est = x0 @ B
    t = stats.t.ppf(0.5 + level / 2, dof)
    pred: dict[str, dict[str, float]] = {}
    for j, k in enumerate(("alpha", "beta")):
        half = t * math.sqrt(cov[j, j] * lever)
        pred[k] = {"estimate": float(est[j]), "lo": float(est[j] - half), "hi": float(est[j] + half)}
    # multivariate t draws: normal with the predictive covariance, scaled by sqrt(dof / chi2)
    rng = np.random.default_rng(seed)
    z = rng.multivariate_normal(np.zeros(2), cov * lever, size=n_draws, method="eigh")
    draws = est + z * np.sqrt(dof / rng.chisquare(dof, size=n_draws))[:, None]
    d_s, r_s = peak(draws[:, 0], draws[:, 1], form)
    d0, r0 = peak(est[0], est[1], form)
    for k, v, e in (("d_star", d_s, d0), ("r_star", r_s, r0)):
        lo, hi = percentile(v, [50 * (1 - level), 50 * (1 + level)])
        pred[k] = {"estimate": float(e), "lo": float(lo), "hi": float(hi)}
    return SizeTrend(
        form=form,
        N_target=float(N_target),
        coef={k: (float(B[0, j]), float(B[1, j])) for j, k in enumerate(("alpha", "beta"))},
        prediction=pred,
        n_sizes=n,
        level=level,
        extrapolation=float(math.log10(N_target) - logN.max() / math.log(10)),
    )


# --------------------------------------------------------------------------- does the law hold?


def heldout_r2(d: ArrayLike, R: ArrayLike, form: str) -> dict[str, Any]:
    """R² of the ``form`` law on points it was not fitted to: fit on every other point (the 1st, 3rd, ...),
    score the rest, 1 − SS_res / SS_tot about the held-out points' own mean. Scoring the fitted points
    would credit any two-parameter curve for bending through noise; a law has to predict the points between.
    Points with d = 0 carry no information (every law gives R = 0 there) and are dropped first."""
    _check_form(form)
    d, y = np.asarray(d, dtype=float).ravel(), np.asarray(R, dtype=float).ravel()
    if len(d) != len(y):
        raise ValueError(f"R has {len(y)} values for {len(d)} points d")
    keep = d > 0
    d, y = d[keep], y[keep]
    fit_idx, test_idx = np.arange(0, len(d), 2), np.arange(1, len(d), 2)
    if len(np.unique(d[fit_idx])) < 2 or len(test_idx) < 2:
        return {"r2": None, "why": f"{len(d)} points with d > 0: too few to fit on half and score the other half"}
    r2 = float(_heldout_scores(_features(d, form), y[None, :])[0])
    return {"r2": r2 if math.isfinite(r2) else None, "fitted_points": len(fit_idx), "heldout_points": len(test_idx)}


def _heldout_scores(X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """``heldout_r2`` of each row of ``Y`` ([curves, points], features ``X``), every row's fit in one solve;
    NaN where the held-out points do not vary."""
    fit_idx, test_idx = np.arange(0, X.shape[0], 2), np.arange(1, X.shape[0], 2)
    coef = linalg.lstsq(X[fit_idx], Y[:, fit_idx].T)[0]  # [2, curves]
    held = Y[:, test_idx]
    ss_res = np.sum((held - (X[test_idx] @ coef).T) ** 2, axis=1)
    ss_tot = np.sum((held - held.mean(axis=1, keepdims=True)) ** 2, axis=1)
    return 1.0 - ss_res / np.where(ss_tot > 0, ss_tot, np.nan)


def r2_if_law_true(
    d: ArrayLike,
    R: ArrayLike,
    form: str,
    noise_var: ArrayLike,
    *,
    offset_var: float = 0.0,
    n_sim: int = 2000,
    seed: int = 0,
) -> dict[str, Any] | None:
    """What ``heldout_r2`` scores when the ``form`` law IS the truth and each point carries sampling noise of
    variance ``noise_var``, plus one offset of variance ``offset_var`` shared by every point (R is a gain over
    a measured start, whose own noise shifts them all): the truth is the law fitted to every point, each
    simulation adds Gaussian noise and repeats the held-out fit. So a measured R² far below this range is the
    law's fault; one inside it is what the noise allows (with noise as large as the curve's rise, a true law
    can score R² < 0). Returns the simulated R²'s median, 95% range and the share of simulations below the
    measured R²; None where ``heldout_r2`` gives none."""
    _check_form(form)
    d, y, var = (np.asarray(a, dtype=float).ravel() for a in (d, R, noise_var))
    if not len(d) == len(y) == len(var):
        raise ValueError(f"d, R and noise_var differ in length: {len(d)}, {len(y)}, {len(var)}")
    measured = heldout_r2(d, y, form)["r2"]
    keep = d > 0
    d, y, var = d[keep], y[keep], var[keep]
    if measured is None:
        return None
    X = _features(d, form)
    truth = X @ linalg.lstsq(X, y)[0]
    rng = np.random.default_rng(seed)
    Y = truth + rng.standard_normal((n_sim, len(d))) * np.sqrt(np.maximum(var, 0.0))
    Y += rng.standard_normal((n_sim, 1)) * math.sqrt(max(offset_var, 0.0))
    r2 = _heldout_scores(X, Y)
    r2 = r2[np.isfinite(r2)]
    lo, med, hi = np.percentile(r2, [2.5, 50, 97.5])
    return {
        "median": float(med),
        "lo": float(lo),
        "hi": float(hi),
        "share_below_measured": float(np.mean(r2 < measured)),
        "simulations": int(len(r2)),
    }


def peak_then_fall(gold: ArrayLike, proxy: ArrayLike, *, n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Does gold peak and then fall while the proxy keeps rising? ``gold``, ``proxy``: [prompts, points] gains
    along one curve, points in the order the optimisation reached them (n for best-of-n, iterations for
    RL, whose d need not grow every time). The peak is picked on the even-numbered prompts and the fall
    measured on the odd ones, so that the max of a noisy curve does not manufacture a fall; the fall
    (gold at the peak − gold at the last point) and the proxy's rise over the same span get 95% intervals
    from resampling those prompts. ``falls`` / ``proxy_rises``: the interval's lower bound is above 0.
    ``stalled``: gold at the last point equals gold at the peak on every measured prompt, so the fall is
    exactly 0 [0, 0], which is no evidence either way. It happens when a policy has settled on one answer
    per prompt (PPO without a KL penalty collapses so); its proxy may still drift, since the RM scores
    differences of wording that gold ignores."""
    G, P = np.asarray(gold, dtype=float), np.asarray(proxy, dtype=float)
    if G.shape != P.shape or G.ndim != 2 or G.shape[0] < 4 or G.shape[1] < 2:
        raise ValueError(f"gold and proxy must be the same [prompts >= 4, points >= 2] shape, got {G.shape}, {P.shape}")
    pick, measure = G[0::2], np.arange(1, G.shape[0], 2)
    k = int(np.argmax(pick.mean(axis=0)))
    fall, rise = G[measure, k] - G[measure, -1], P[measure, -1] - P[measure, k]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(measure), size=(n_boot, len(measure)))

    def summary(v: np.ndarray) -> dict[str, float]:
        lo, hi = np.percentile(v[idx].mean(axis=1), [2.5, 97.5])
        return {"mean": float(v.mean()), "lo": float(lo), "hi": float(hi)}

    f, r = summary(fall), summary(rise)
    last = G.shape[1] - 1
    return {
        "peak_point": k,
        "last_point": last,
        "gold_fall": f,
        "proxy_rise": r,
        "falls": bool(k < last and f["lo"] > 0),
        "proxy_rises": bool(k < last and r["lo"] > 0),
        "stalled": bool(k < last and not np.any(fall)),
    }
