"""The functional forms of predictable scaling, as plain vectorised functions.

Three laws are used by alignlab's scaling stage:

* ``loss_vs_compute``: the GPT-4 technical report's L(C) = a·C^b + c, a power
  law in training compute with an *irreducible* loss term c (b < 0).  The
  irreducible term is what lets a fit on runs with 1/10,000 of the compute
  bend correctly towards the big run instead of predicting a loss that keeps
  falling forever.
* ``chinchilla``: Hoffmann et al. (2022) approach 3, L(N, D) = E + A/N^α + B/D^β
  in parameters N and training tokens D.  ``chinchilla_log`` is the same law
  written as the log-sum-exp the paper actually fits, which is numerically
  stable for any parameter values an optimiser may try.
* ``capability``: the GPT-4 report's capability law −log pass_rate = α·C^(−k)
  (it writes −E[log pass_rate(C)] = α·C^(−k)), and its inverse.

Nothing here fits anything: see ``fit.py``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from scipy.special import logsumexp

# Training FLOPs per parameter per token, C ≈ 6·N·D (Kaplan et al. 2020;
# Hoffmann et al. 2022): 2 for the forward pass, 4 for the backward pass.
FLOPS_PER_TOKEN_PARAM = 6.0


def loss_vs_compute(C: ArrayLike, a: float, b: float, c: float) -> np.ndarray:
    """L(C) = a·C^b + c (GPT-4 report).  b < 0; c is the irreducible loss.

    The units of ``a`` depend on the units of ``C``: a fit done on C / C_ref
    has a_ref = a·C_ref^b (see ``PowerLawFit`` in fit.py).
    """
    C = np.asarray(C, dtype=float)
    return a * np.power(C, b) + c


def chinchilla(N: ArrayLike, D: ArrayLike, E: float, A: float, B: float, alpha: float, beta: float) -> np.ndarray:
    """L(N, D) = E + A/N^α + B/D^β (Hoffmann et al. 2022, eq. 2).

    E is the entropy of natural text (irreducible), A/N^α the shortfall of a
    finite model trained to convergence, B/D^β the shortfall of finite data.
    Published fit: E=1.69, A=406.4, B=410.7, α=0.34, β=0.28.
    """
    N = np.asarray(N, dtype=float)
    D = np.asarray(D, dtype=float)
    return E + A * np.power(N, -alpha) + B * np.power(D, -beta)


def chinchilla_log(
    log_N: ArrayLike, log_D: ArrayLike, a: float, b: float, e: float, alpha: float, beta: float
) -> np.ndarray:
    """log L = LSE(a − α·log N, b − β·log D, e), with a=log A, b=log B, e=log E.

    This is the form Hoffmann et al. minimise (their eq. in appendix D.2):
    working with log A, log B, log E keeps A, B, E positive without bounds
    and the log-sum-exp never overflows, whatever the optimiser tries.
    """
    log_N = np.asarray(log_N, dtype=float)
    log_D = np.asarray(log_D, dtype=float)
    terms = np.stack(np.broadcast_arrays(a - alpha * log_N, b - beta * log_D, e + 0.0 * log_N))
    return logsumexp(terms, axis=0)


def neg_log_pass_rate(C: ArrayLike, alpha: float, k: float) -> np.ndarray:
    """−log pass_rate(C) = α·C^(−k) (GPT-4 report, capability prediction).

    The GPT-4 report fits the *mean over problems* of −log pass_rate, so the
    natural aggregate to feed this law is −mean(log p) per model, i.e. the
    log of the geometric-mean pass rate.
    """
    C = np.asarray(C, dtype=float)
    return alpha * np.power(C, -k)


def capability(C: ArrayLike, alpha: float, k: float) -> np.ndarray:
    """pass_rate(C) = exp(−α·C^(−k)): the capability law mapped back to a pass rate."""
    return np.exp(-neg_log_pass_rate(C, alpha, k))


def compute_for_pass_rate(pass_rate: ArrayLike, alpha: float, k: float) -> np.ndarray:
    """Inverse of ``capability``: the compute C at which pass_rate is reached.

    From −log p = α·C^(−k):  C = (−log p / α)^(−1/k).  Defined for 0 < p < 1.
    """
    p = np.asarray(pass_rate, dtype=float)
    if np.any((p <= 0) | (p >= 1)):
        raise ValueError("pass_rate must lie strictly between 0 and 1")
    return np.power(-np.log(p) / alpha, -1.0 / k)


def tokens_from_compute(C: ArrayLike, N: ArrayLike, flops_per_token_param: float = FLOPS_PER_TOKEN_PARAM) -> np.ndarray:
    """D = C / (6·N): tokens implied by the C ≈ 6·N·D approximation.

    Used when a data set (e.g. the points digitised from Chinchilla's figure 4)
    records compute and model size but not tokens.
    """
    return np.asarray(C, dtype=float) / (flops_per_token_param * np.asarray(N, dtype=float))
