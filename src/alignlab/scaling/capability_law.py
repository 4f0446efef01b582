"""GPT-4's capability law on per-problem pass counts, with intervals from resampling problems *and* runs.

The GPT-4 report predicted HumanEval from small runs with

    −E_problems[log pass_rate(C)] = α·C^(−k)

fitted on the problems the small models solve at least sometimes. Here the input is a pass
count for every (problem, run): many samples per problem, several seeds per size. A model
size's pass rate on a problem pools its seeds; y(C) = mean over problems of −log of it; the
law is the line log y = log α − k·log C.

Two things make the prediction uncertain, and the bootstrap resamples both: which problems
were drawn (rows) and which seeds ran at each size (runs within a size). The prediction
interval adds the residual scatter of sizes about the line in quadrature, in log y, as
``scaling.bootstrap``'s "normal" interval does.

The problem set is fixed by the fitted runs alone (every fitted run solves the problem at
least once), so it is known before the run being predicted exists.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import norm

# each capability is measured two ways: GPT-4's sampled pass counts, on the problems every fitted run
# solves at least once; and the exact pass probability (``capability.exact_pass_probs``), as expected
# passes out of one sample, which every problem has (no floor at 1/samples)
EXACT = "_exact"


def capability_quantities(capabilities: Sequence[str]) -> list[tuple[str, str, bool]]:
    """(quantity, capability, exact?) for every capability and both measures."""
    return [(task + suffix, task, bool(suffix)) for task in capabilities for suffix in ("", EXACT)]


@dataclass
class PassCounts:
    """Pass counts of ``runs`` on ``problems``: passes[problem, run] out of samples[problem, run]."""

    problems: list[str]
    passes: np.ndarray  # [P, R]
    samples: np.ndarray  # [P, R]
    C: np.ndarray  # [R] compute of each run
    size: np.ndarray  # [R] model-size label (runs of one size are its seeds)

    def solved_by_every_run(self) -> np.ndarray:
        """GPT-4's restriction: the problems every fitted run passes at least once."""
        return np.all(self.passes > 0, axis=1)


def neg_log_by_size(pc: PassCounts, rows: np.ndarray, cols_by_size: Sequence[np.ndarray]) -> np.ndarray:
    """y per size: the mean over ``rows`` of −log(pass rate pooled over the size's ``cols``)."""
    out = []
    for cols in cols_by_size:
        rate = pc.passes[np.ix_(rows, cols)].sum(1) / pc.samples[np.ix_(rows, cols)].sum(1)
        out.append(float(np.mean(-np.log(rate))))
    return np.asarray(out)


def _line(logC: np.ndarray, logy: np.ndarray) -> tuple[float, float, np.ndarray]:
    slope, intercept = np.polyfit(logC, logy, 1)
    return float(slope), float(intercept), logy - (intercept + slope * logC)


def fit_capability_law(
    pc: PassCounts, targets_C: Sequence[float], n_boot: int = 200, level: float = 0.95, seed: int = 0
) -> dict:
    """Fit the law on ``pc`` restricted to problems every run solves; predict the pass rate at ``targets_C``.

    Returns the fit (α, k with percentile intervals, R², the sizes' y), the problems used, and per
    target the predicted y and geometric-mean pass rate exp(−y) with a prediction interval.
    """
    keep = pc.solved_by_every_run()
    rows = np.flatnonzero(keep)
    if len(rows) < 3:
        raise ValueError(f"only {len(rows)} problems are solved by every fitted run; need at least 3")
    sizes = sorted(set(pc.size.tolist()), key=lambda s: float(pc.C[pc.size == s].mean()))
    if len(sizes) < 3:
        raise ValueError(f"the capability law needs at least 3 model sizes, got {len(sizes)}")
    cols = [np.flatnonzero(pc.size == s) for s in sizes]
    logC = np.log([float(pc.C[c].mean()) for c in cols])
    y = neg_log_by_size(pc, rows, cols)
    slope, intercept, resid = _line(logC, np.log(y))
    t_logC = np.log(np.asarray(targets_C, dtype=float))
    rng = np.random.default_rng(seed)
    draws, params = [], []
    for _ in range(n_boot):
        r = rng.choice(rows, len(rows))
        cs = [rng.choice(c, len(c)) for c in cols]
        s, i, _ = _line(logC, np.log(neg_log_by_size(pc, r, cs)))
        params.append((s, i))
        draws.append(i + s * t_logC)
    draws, params = np.asarray(draws), np.asarray(params)
    sigma = math.sqrt(float(np.sum(resid**2)) / max(len(resid) - 2, 1))
    z = norm.ppf(0.5 + level / 2)
    center = intercept + slope * t_logC
    half = z * np.sqrt(draws.std(0, ddof=1) ** 2 + sigma**2) if n_boot > 1 else np.full(len(t_logC), np.inf)
    ss_tot = float(np.sum((np.log(y) - np.log(y).mean()) ** 2))
    lo_q, hi_q = 50 * (1 - level), 50 * (1 + level)
    k_draws = -params[:, 0]
    return {
        "alpha": math.exp(intercept),
        "k": -slope,
        "k_interval": [float(np.percentile(k_draws, lo_q)), float(np.percentile(k_draws, hi_q))],
        "r2": 1.0 - float(np.sum(resid**2)) / ss_tot if ss_tot > 0 else float("nan"),
        "residual_scale": sigma,
        "sizes": [{"size": s, "C": float(math.exp(lc)), "neg_log": float(v)} for s, lc, v in zip(sizes, logC, y)],
        "problems_used": [pc.problems[i] for i in rows],
        "n_problems": len(pc.problems),
        "predictions": [_prediction(c, h) for c, h in zip(center, half)],
        "level": level,
    }


def _prediction(log_y: float, half: float) -> dict:
    """exp(−y) is the geometric-mean pass rate; a larger y is a lower pass rate, so the ends swap."""
    y, y_lo, y_hi = math.exp(log_y), math.exp(log_y - half), math.exp(log_y + half)
    return {"neg_log": y, "estimate": math.exp(-y), "lo": math.exp(-y_hi), "hi": math.exp(-y_lo)}


def still_improving(pc: PassCounts, n_boot: int = 200, level: float = 0.95, seed: int = 0) -> dict:
    """Is y still falling between the two largest fitted sizes? (interval of the change, problems × seeds)."""
    rows = np.flatnonzero(pc.solved_by_every_run())
    sizes = sorted(set(pc.size.tolist()), key=lambda s: float(pc.C[pc.size == s].mean()))
    if len(rows) < 3:
        return {"between": sizes[-2:], "improving": False, "skipped": f"only {len(rows)} problems solved by every run"}
    cols = [np.flatnonzero(pc.size == s) for s in sizes[-2:]]
    rng = np.random.default_rng(seed)
    change = lambda r, cs: float(np.diff(neg_log_by_size(pc, r, cs))[0])  # noqa: E731
    draws = [change(rng.choice(rows, len(rows)), [rng.choice(c, len(c)) for c in cols]) for _ in range(n_boot)]
    lo, hi = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)])
    return {
        "between": sizes[-2:],
        "change_in_neg_log": change(rows, cols),
        "interval": [float(lo), float(hi)],
        "improving": bool(hi < 0),
    }


def geometric_pass_rate(passes: np.ndarray, samples: np.ndarray) -> tuple[float, int]:
    """exp(mean log pass rate) of one run over a problem set, and how many problems it never passed."""
    rate = passes / samples
    zeros = int(np.sum(rate == 0))
    return (0.0 if zeros else float(np.exp(np.mean(np.log(rate))))), zeros
