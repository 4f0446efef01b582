"""Bootstrap confidence intervals over prompts (or blocks, or items): seeded and vectorised.

A metric here is always a mean of per-unit values (one value per prompt: the mean over
that prompt's samples), so its uncertainty comes from which prompts happened to be in
the test set. The percentile bootstrap resamples the units with replacement ``n_boot``
times and reads the interval off the resampled means. InstructGPT reports its win rates
the same way (mean +- a 95% interval over prompts).

Every interval is returned as ``{"value", "low", "high"}`` (``value`` the plain mean, so
the point estimate never depends on the seed; ``low <= value <= high`` is enforced).
"""

from __future__ import annotations

import zlib

import numpy as np


def interval(value: float | None, low: float | None = None, high: float | None = None) -> dict:
    """The one shape every mean-with-interval takes in results.json."""
    f = lambda x: None if x is None or not np.isfinite(x) else float(x)  # noqa: E731
    return {"value": f(value), "low": f(low), "high": f(high)}


def _rng(seed: int, key: str) -> np.random.Generator:
    # A separate stream per metric name: adding a metric never changes another's interval.
    return np.random.default_rng([seed, zlib.crc32(key.encode())])


def bootstrap_mean(values, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, key: str = "") -> dict:
    """Mean of ``values`` (1-D, one per unit) with a percentile-bootstrap interval.

    Empty input -> all None. One unit (or n_boot == 0) -> a degenerate interval at the mean.
    """
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return interval(None)
    mean = float(x.mean())
    if x.size == 1 or n_boot <= 0:
        return interval(mean, mean, mean)
    idx = _rng(seed, key).integers(0, x.size, size=(n_boot, x.size))
    means = x[idx].mean(axis=1)
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return interval(mean, min(low, mean), max(high, mean))


def paired_delta(values, reference, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0, key: str = "") -> dict:
    """Mean of ``values - reference`` measured on the SAME units (blocks, items), with an
    interval from resampling the units together: the paired difference, which is much
    tighter than differencing two independent intervals."""
    a = np.asarray(values, dtype=np.float64).reshape(-1)
    b = np.asarray(reference, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"paired_delta: {a.size} values vs {b.size} reference values (must be the same units)")
    return bootstrap_mean(a - b, n_boot, confidence, seed, key)
