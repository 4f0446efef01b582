"""Fitting the scaling laws in laws.py, with the convergence checks the literature says matter.

Three fits and one derived quantity:

* ``fit_loss_vs_compute`` — L(C) = a·C^b + c (GPT-4 report), least squares on
  log-loss residuals (run-to-run noise in loss is roughly multiplicative),
  from a small grid of starts, in normalised compute units C/C_ref.
* ``fit_chinchilla`` — Hoffmann et al. (2022) approach 3, done the way the
  paper describes it (and the way Besiroglu et al. 2024 found necessary to
  actually converge): Huber(δ=1e-3) on log-space LSE residuals, summed, L-BFGS
  from a grid of initialisations, tight tolerances, analytic gradient, and an
  explicit convergence report.
* ``fit_capability`` — −log pass_rate = α·C^(−k) (GPT-4 report), an ordinary
  least-squares line in log(−log p) vs log C on the points whose pass rate is
  resolvable.
* ``compute_optimal`` — the Chinchilla compute-optimal allocation, closed form.

Every fit returns a dataclass with ``.predict(...)``, ``.params`` (a dict of
the interpretable parameters, used by bootstrap.py), ``.log_residuals``,
``.n_params`` and ``.to_dict()``.  A fit that fails its convergence checks
emits ``FitConvergenceWarning`` rather than passing silently.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from scipy.optimize import least_squares, minimize

from alignlab.scaling import laws


class FitConvergenceWarning(UserWarning):
    """A fit's optimiser did not demonstrably reach the optimum (see the fit's report)."""


class SuspectFitWarning(FitConvergenceWarning):
    """The optimum was found but sits on a bound that makes extrapolation untrustworthy."""


# --------------------------------------------------------------------------- helpers


def _positive_1d(name: str, x: ArrayLike) -> np.ndarray:
    """Validate a 1-d array of finite, strictly positive values (loss, compute, N, D)."""
    arr = np.asarray(x, dtype=float).ravel()
    if arr.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or infinite values")
    if np.any(arr <= 0):
        raise ValueError(f"{name} must be strictly positive")
    return arr


def _same_length(**arrays: np.ndarray) -> int:
    lengths = {k: len(v) for k, v in arrays.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f"arrays differ in length: {lengths}")
    return next(iter(lengths.values()))


def _agreement(
    thetas: np.ndarray, objectives: np.ndarray, top_k: int, rtol: float, ptol: float
) -> tuple[int, float, float]:
    """How many starts reached the best optimum, and how far apart the best few are.

    Returns (n_agree, objective_spread, param_spread): n_agree counts starts
    whose objective is within ``rtol`` (relative) of the best *and* whose
    parameters are within ``ptol`` (max-abs, in the fitted parametrisation) of
    the best; the spreads are over the ``top_k`` best starts.  Several starts
    landing on the same point is the evidence Besiroglu et al. (2024) ask for:
    one start stopping early looks like any other local minimum.
    """
    order = np.argsort(objectives)
    best = objectives[order[0]]
    scale = max(abs(best), 1e-300)
    close_obj = np.abs(objectives - best) <= rtol * scale + 1e-15
    close_par = np.max(np.abs(thetas - thetas[order[0]]), axis=1) <= ptol
    n_agree = int(np.sum(close_obj & close_par))
    top = order[: max(1, min(top_k, len(order)))]
    obj_spread = float((objectives[top].max() - best) / scale)
    par_spread = float(np.max(np.abs(thetas[top] - thetas[order[0]])))
    return n_agree, obj_spread, par_spread


def _warn_if_not_converged(kind: str, converged: bool, detail: str, warn: bool) -> None:
    if warn and not converged:
        warnings.warn(f"{kind} did not converge: {detail}", FitConvergenceWarning, stacklevel=3)


# --------------------------------------------------------------------------- BLAS threads

_BLAS_THREAD_SYMBOLS = (
    # (setter, getter) for the OpenBLAS builds numpy/scipy wheels bundle
    ("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
    ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
    ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
    ("openblas_set_num_threads", "openblas_get_num_threads"),
)


def _loaded_openblas_controls() -> list[tuple[Any, Any]]:
    """(set, get) thread controls of every OpenBLAS already loaded in this process (Linux)."""
    import ctypes

    try:
        with open("/proc/self/maps") as fh:
            paths = sorted({ln.split()[-1] for ln in fh if "openblas" in ln.lower() and "/" in ln})
    except OSError:
        return []
    controls = []
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for setter, getter in _BLAS_THREAD_SYMBOLS:
            if hasattr(lib, setter) and hasattr(lib, getter):
                controls.append((getattr(lib, setter), getattr(lib, getter)))
                break
    return controls


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Run the block with BLAS limited to one thread, then restore the previous setting.

    Why: every L-BFGS-B iteration calls LAPACK on tiny (≈20×20) matrices, and
    OpenBLAS wakes its thread pool even for those.  On a busy machine that
    made a Chinchilla fit ~10× slower (measured: 30 s vs 3 s on 2 shared
    cores).  Uses threadpoolctl when installed, else the OpenBLAS libraries
    already loaded (Linux); anywhere else it does nothing.  Best effort: it
    never raises.
    """
    global _blas_limit_depth
    if _blas_limit_depth > 0:  # already limited by an enclosing block (e.g. bootstrap)
        yield
        return
    _blas_limit_depth += 1
    try:
        with _limit_blas_threads():
            yield
    finally:
        _blas_limit_depth -= 1


_blas_limit_depth = 0


@contextlib.contextmanager
def _limit_blas_threads() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found]
    except ImportError:
        threadpool_limits = None
    if threadpool_limits is not None:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    controls = _loaded_openblas_controls()
    previous = []
    for setter, getter in controls:
        try:
            previous.append((setter, int(getter())))
            setter(1)
        except Exception:  # pragma: no cover - best effort only
            pass
    try:
        yield
    finally:
        for setter, n_threads in previous:
            try:
                setter(n_threads)
            except Exception:  # pragma: no cover
                pass


# --------------------------------------------------------------------------- L(C) = a·C^b + c


@dataclass
class PowerLawFit:
    """Result of ``fit_loss_vs_compute``: L(C) = a·C^b + c.

    The fit is done on x = C / C_ref (C_ref = max(C) by default), where
    L = a_ref·x^b + c; ``a = a_ref·C_ref^(−b)`` is the same law in the
    caller's units of C.  Working in normalised units keeps the parameters
    O(1), which avoids the ill-conditioning Besiroglu et al. (2024) traced in
    the original Chinchilla fit.
    """

    a: float
    b: float
    c: float
    a_ref: float
    C_ref: float
    objective: float  # 0.5·Σ r², r = log(pred) − log(L)  (or the Huber cost)
    grad_norm: float  # first-order optimality (max-abs, bound-aware) at the optimum
    n_starts: int
    n_agree: int
    objective_spread: float
    param_spread: float
    converged: bool
    n_points: int
    residual_scale: float  # sqrt(Σ r² / (n − 3)): run-to-run noise in log loss
    message: str
    log_residuals: np.ndarray = field(repr=False)
    at_bounds: tuple[str, ...] = ()  # parameters on a bound; "c_max" or "b_max" means a suspect fit
    n_params: int = 3

    def predict(self, C: ArrayLike) -> np.ndarray:
        """Predicted loss at compute C (caller's units)."""
        x = np.asarray(C, dtype=float) / self.C_ref
        return laws.loss_vs_compute(x, self.a_ref, self.b, self.c)

    @property
    def params(self) -> dict[str, float]:
        return {"a": self.a, "b": self.b, "c": self.c, "a_ref": self.a_ref}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "loss_vs_compute",
            "law": "L(C) = a*C^b + c",
            "params": self.params,
            "C_ref": self.C_ref,
            "units_note": "fit done on C/C_ref; a_ref is the coefficient for C/C_ref, a for C",
            "convergence": {
                "converged": self.converged,
                "objective": self.objective,
                "grad_norm": self.grad_norm,
                "n_starts": self.n_starts,
                "n_agree": self.n_agree,
                "objective_spread": self.objective_spread,
                "param_spread": self.param_spread,
                "at_bounds": list(self.at_bounds),
                "message": self.message,
            },
            "n_points": self.n_points,
            "residual_scale": self.residual_scale,
        }


def _bounds_hit(theta: np.ndarray, lower: np.ndarray, upper: np.ndarray) -> tuple[str, ...]:
    """Which of (log a, b, c) sit on a bound.

    c = 0 is a legitimate answer (no irreducible loss detectable in the range);
    c at min(L) or b at 0 mean the data do not pin down a decreasing power law,
    and an extrapolation from such a fit should not be trusted.
    """
    names = ("log_a", "b", "c")
    hit = []
    for i, name in enumerate(names):
        span = upper[i] - lower[i]
        if theta[i] <= lower[i] + 1e-9 * span:
            hit.append(f"{name}_min")
        elif theta[i] >= upper[i] - 1e-9 * span:
            hit.append(f"{name}_max")
    return tuple(hit)


def _power_law_residuals(theta: np.ndarray, log_x: np.ndarray, log_L: np.ndarray) -> np.ndarray:
    log_a, b, c = theta
    return np.log(np.exp(log_a + b * log_x) + c) - log_L


def _power_law_jacobian(theta: np.ndarray, log_x: np.ndarray, log_L: np.ndarray) -> np.ndarray:
    log_a, b, c = theta
    m = np.exp(log_a + b * log_x)
    pred = m + c
    return np.column_stack([m / pred, m * log_x / pred, 1.0 / pred])


def _power_law_starts(
    log_x: np.ndarray, L: np.ndarray, b_grid: Sequence[float], c_fracs: Sequence[float]
) -> list[np.ndarray]:
    """Starting points: for each (b, c) on a grid, the a that best matches the data.

    Choosing a given (b, c) by a closed-form median puts every start on the
    data's scale, so no start wastes its iterations just finding the level.
    """
    starts = []
    L_min = float(L.min())
    for b in b_grid:
        for frac in c_fracs:
            c = frac * L_min
            log_a = float(np.median(np.log(L - c) - b * log_x))
            starts.append(np.array([log_a, b, c]))
    return starts


def fit_loss_vs_compute(
    C: ArrayLike,
    L: ArrayLike,
    *,
    C_ref: float | None = None,
    loss: str = "l2",
    delta: float = 1e-3,
    b_grid: Sequence[float] = (-0.03, -0.1, -0.3, -0.6, -1.0),
    c_fracs: Sequence[float] = (0.0, 0.5, 0.8, 0.95),
    init: PowerLawFit | Sequence[float] | None = None,
    grad_tol: float = 1e-7,
    warn: bool = True,
) -> PowerLawFit:
    """Fit L(C) = a·C^b + c (b < 0, 0 ≤ c < min L) by least squares on log loss.

    Why these choices:
    * residuals r = log(a·C^b + c) − log L: run-to-run noise in final loss is
      roughly multiplicative, and a log residual weights a 1% miss the same at
      every scale (the big run's loss is the smallest and matters most);
    * parametrisation (log a_ref, b, c) on x = C/C_ref (default C_ref = max C):
      a stays positive, and all three parameters are O(1) (Besiroglu et al.
      2024 traced the original Chinchilla fit's failure partly to scale);
    * bounds b ∈ [−5, 0), c ∈ [0, min L): the law must decrease and the
      irreducible loss cannot exceed an observed loss;
    * ``scipy.optimize.least_squares`` (trust-region reflective, analytic
      Jacobian, tolerances 1e-15) from a grid of starts (``b_grid`` ×
      ``c_fracs``·min L); the best is kept, and convergence is reported as the
      bound-aware first-order optimality and the agreement of the other starts.
    ``loss="huber"`` makes it robust to an outlier run (δ in log units).
    ``init`` (a previous fit or (log a_ref, b, c)) replaces the grid by a single
    warm start; bootstrap.py uses it.
    """
    C_arr = _positive_1d("C", C)
    L_arr = _positive_1d("L", L)
    n = _same_length(C=C_arr, L=L_arr)
    if n < 4:
        raise ValueError(f"need at least 4 runs to fit 3 parameters and check the fit, got {n}")
    if loss not in ("l2", "huber"):
        raise ValueError("loss must be 'l2' or 'huber'")
    if C_ref is None:
        C_ref = float(C_arr.max())
    log_x = np.log(C_arr / C_ref)
    log_L = np.log(L_arr)
    L_min = float(L_arr.min())
    lower = np.array([-50.0, -5.0, 0.0])
    upper = np.array([50.0, -1e-9, L_min * (1.0 - 1e-9)])

    if init is None:
        starts = _power_law_starts(log_x, L_arr, b_grid, c_fracs)
    elif isinstance(init, PowerLawFit):
        # A previous fit may have used another C_ref: re-express a in this one.
        a_here = init.a_ref * (C_ref / init.C_ref) ** init.b
        starts = [np.array([math.log(a_here), init.b, init.c])]
    else:
        starts = [np.asarray(init, dtype=float)]
    starts = [np.clip(s, lower, upper) for s in starts]

    kwargs: dict[str, Any] = dict(
        jac=_power_law_jacobian,
        bounds=(lower, upper),
        method="trf",
        x_scale="jac",
        ftol=1e-15,
        xtol=1e-15,
        gtol=1e-15,
        max_nfev=2000,
        args=(log_x, log_L),
    )
    if loss == "huber":
        kwargs.update(loss="huber", f_scale=delta)
    with single_threaded_blas():
        results = [least_squares(_power_law_residuals, s, **kwargs) for s in starts]

    objectives = np.array([r.cost for r in results])
    thetas = np.array([r.x for r in results])
    best = results[int(np.argmin(objectives))]
    n_agree, obj_spread, par_spread = _agreement(thetas, objectives, 5, rtol=1e-6, ptol=1e-3)
    grad_norm = float(best.optimality)
    converged = grad_norm <= grad_tol and (len(results) == 1 or n_agree >= 2)

    log_a, b, c = (float(v) for v in best.x)
    r = _power_law_residuals(best.x, log_x, log_L)
    fit = PowerLawFit(
        a=math.exp(log_a) * C_ref ** (-b),
        b=b,
        c=c,
        a_ref=math.exp(log_a),
        C_ref=C_ref,
        objective=float(best.cost),
        grad_norm=grad_norm,
        n_starts=len(results),
        n_agree=n_agree,
        objective_spread=obj_spread,
        param_spread=par_spread,
        converged=converged,
        n_points=n,
        residual_scale=float(np.sqrt(np.sum(r**2) / max(n - 3, 1))),
        message=str(best.message),
        log_residuals=-r,  # observed minus predicted, in log loss
        at_bounds=_bounds_hit(best.x, lower, upper),
    )
    _warn_if_not_converged(
        "fit_loss_vs_compute",
        converged,
        f"optimality {grad_norm:.2e} (tol {grad_tol:.0e}), {n_agree}/{len(results)} starts agree",
        warn,
    )
    suspect = [h for h in fit.at_bounds if h in ("c_max", "b_max")]
    if warn and suspect:
        warnings.warn(
            f"fit_loss_vs_compute: {', '.join(suspect)} on its bound — the runs do not pin down a "
            "decreasing power law above an irreducible loss; do not extrapolate from this fit",
            SuspectFitWarning,
            stacklevel=2,
        )
    return fit


# --------------------------------------------------------------------------- Chinchilla approach 3

# Hoffmann et al. (2022), appendix D.2: the grid of initialisations.
HOFFMANN_GRID: dict[str, tuple[float, ...]] = {
    "alpha": (0.0, 0.5, 1.0, 1.5, 2.0),
    "beta": (0.0, 0.5, 1.0, 1.5, 2.0),
    "e": (-1.0, -0.5, 0.0, 0.5, 1.0),
    "a": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
    "b": (0.0, 5.0, 10.0, 15.0, 20.0, 25.0),
}

_THETA_NAMES = ("a", "b", "e", "alpha", "beta")


@dataclass
class ChinchillaFit:
    """Result of ``fit_chinchilla``: L(N, D) = E + A/N^α + B/D^β.

    ``objective`` is the paper's Σ Huber_δ(LSE − log L); ``grad_norm`` is the
    max-abs gradient of that same sum at the optimum.  ``n_agree`` counts the
    starts that reached the best optimum (objective within 1e-6 relative and
    parameters within 1e-3); ``converged`` requires a small gradient and, when
    more than one start was run, at least two agreeing starts.
    """

    E: float
    A: float
    B: float
    alpha: float
    beta: float
    objective: float
    grad_norm: float
    n_starts: int
    n_agree: int
    objective_spread: float
    param_spread: float
    converged: bool
    n_points: int
    delta: float
    residual_scale: float  # RMS of log residuals, sqrt(Σ r² / (n − 5))
    message: str
    log_residuals: np.ndarray = field(repr=False)
    n_params: int = 5

    @property
    def theta(self) -> np.ndarray:
        """(log A, log B, log E, α, β): the parametrisation the optimiser works in."""
        return np.array([math.log(self.A), math.log(self.B), math.log(self.E), self.alpha, self.beta])

    def predict(self, N: ArrayLike, D: ArrayLike) -> np.ndarray:
        """Predicted loss for a model of N parameters trained on D tokens."""
        return laws.chinchilla(N, D, self.E, self.A, self.B, self.alpha, self.beta)

    def compute_optimal(
        self, C: ArrayLike, flops_per_token_param: float = laws.FLOPS_PER_TOKEN_PARAM
    ) -> tuple[np.ndarray, np.ndarray]:
        """(N_opt, D_opt) for compute budget C; see the module-level ``compute_optimal``."""
        return compute_optimal(self, C, flops_per_token_param)

    @property
    def params(self) -> dict[str, float]:
        return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha, "beta": self.beta}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "chinchilla",
            "law": "L(N, D) = E + A/N^alpha + B/D^beta",
            "params": self.params,
            "compute_optimal_exponent_N": self.beta / (self.alpha + self.beta),
            "convergence": {
                "converged": self.converged,
                "objective": self.objective,
                "objective_definition": f"sum of Huber(delta={self.delta}) of log residuals",
                "grad_norm": self.grad_norm,
                "n_starts": self.n_starts,
                "n_agree": self.n_agree,
                "objective_spread": self.objective_spread,
                "param_spread": self.param_spread,
                "message": self.message,
            },
            "n_points": self.n_points,
            "residual_scale": self.residual_scale,
        }


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
    """Huber loss: quadratic for |r| ≤ δ, linear beyond (robust to outlier runs)."""
    ar = np.abs(r)
    return np.where(ar <= delta, 0.5 * r * r, delta * (ar - 0.5 * delta))


def _chinchilla_objective(
    theta: np.ndarray, log_N: np.ndarray, log_D: np.ndarray, log_L: np.ndarray, delta: float
) -> tuple[float, np.ndarray]:
    """Σ Huber_δ(LSE − log L) / δ and its analytic gradient.

    Dividing by δ does not move the minimum but makes the objective O(n)
    instead of O(n·δ).  That matters: L-BFGS-B's ftol test is relative to
    max(|f|, 1), so on a tiny objective (the mean-scaled loss the original
    fit used, ~1e-5) it becomes an absolute test and stops early — the failure
    Besiroglu et al. (2024) found.
    """
    a, b, e, alpha, beta = theta
    # log-sum-exp of the three terms, written out: this function is called
    # ~10^5 times for the paper's 4,500-start grid, so it avoids scipy's
    # general logsumexp (4x slower on arrays this small).
    t0 = a - alpha * log_N
    t1 = b - beta * log_D
    m = np.maximum(np.maximum(t0, t1), e)
    x0, x1, x2 = np.exp(t0 - m), np.exp(t1 - m), np.exp(e - m)
    s = x0 + x1 + x2
    r = m + np.log(s) - log_L  # LSE − log L
    f = float(np.sum(_huber(r, delta))) / delta
    # d LSE / d term_i = x_i / s (softmax weights); Huber'(r) = clip(r, ±δ)
    psi = np.clip(r, -delta, delta) / (delta * s)
    g = np.array([psi @ x0, psi @ x1, psi @ x2, -(psi * x0) @ log_N, -(psi * x1) @ log_D])
    return f, g


def _grid_starts(grid: Mapping[str, Sequence[float]]) -> np.ndarray:
    missing = set(_THETA_NAMES) - set(grid)
    if missing:
        raise ValueError(f"grid lacks {sorted(missing)}; needs keys {_THETA_NAMES}")
    return np.array(list(itertools.product(*(grid[k] for k in _THETA_NAMES))), dtype=float)


def fit_chinchilla(
    N: ArrayLike,
    D: ArrayLike,
    L: ArrayLike,
    delta: float = 1e-3,
    *,
    grid: Mapping[str, Sequence[float]] | None = None,
    n_best_starts: int | None = None,
    init: ChinchillaFit | Sequence[float] | None = None,
    gtol: float = 1e-12,
    ftol: float = 1e-15,
    maxiter: int = 20000,
    grad_tol: float = 1e-6,
    warn: bool = True,
) -> ChinchillaFit:
    """Fit L(N, D) = E + A/N^α + B/D^β exactly as Hoffmann et al. (2022) approach 3.

    Parameters θ = (a=log A, b=log B, e=log E, α, β); predicted
    log L = LSE(a − α·log N, b − β·log D, e); objective Σ Huber_δ(LSE − log L)
    with δ = 1e-3 (the paper's value), summed over runs, not averaged;
    minimised by L-BFGS (scipy L-BFGS-B, analytic gradient) from every point of
    ``grid`` (default: the paper's α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1},
    a, b ∈ {0, 5, …, 25}: 4,500 starts); the best optimum is kept.

    Following Besiroglu et al. (2024), the first exit is not trusted: the
    tolerances are tight (``gtol``, ``ftol``, with the objective scaled to O(n),
    see ``_chinchilla_objective``), and the result reports the gradient norm
    of Σ Huber at the optimum and how many starts agree.  ``FitConvergenceWarning``
    is raised if the gradient exceeds ``grad_tol`` or no second start agrees.

    Speed: ``grid`` may be coarser (tests do this); ``n_best_starts`` runs
    L-BFGS only from the k grid points with the lowest initial objective
    (a pre-screen, faster but no longer the paper's procedure); ``init``
    (a previous fit, or θ) runs a single warm start.
    """
    N_arr = _positive_1d("N", N)
    D_arr = _positive_1d("D", D)
    L_arr = _positive_1d("L", L)
    n = _same_length(N=N_arr, D=D_arr, L=L_arr)
    if n < 6:
        raise ValueError(f"need at least 6 runs to fit 5 parameters, got {n}")
    log_N, log_D, log_L = np.log(N_arr), np.log(D_arr), np.log(L_arr)
    args = (log_N, log_D, log_L, delta)

    if init is not None:
        starts = np.atleast_2d(init.theta if isinstance(init, ChinchillaFit) else np.asarray(init, float))
    else:
        starts = _grid_starts(HOFFMANN_GRID if grid is None else grid)
        if n_best_starts is not None and n_best_starts < len(starts):
            f0 = np.array([_chinchilla_objective(s, *args)[0] for s in starts])
            starts = starts[np.argsort(f0, kind="stable")[:n_best_starts]]

    options = {"gtol": gtol, "ftol": ftol, "maxiter": maxiter, "maxfun": 4 * maxiter, "maxls": 50}
    with single_threaded_blas():
        results = [
            minimize(_chinchilla_objective, s, args=args, jac=True, method="L-BFGS-B", options=options) for s in starts
        ]
    objectives = np.array([r.fun for r in results])
    thetas = np.array([r.x for r in results])
    i_best = int(np.argmin(objectives))
    best = results[i_best]
    n_agree, obj_spread, par_spread = _agreement(thetas, objectives, 5, rtol=1e-6, ptol=1e-3)

    f_best, g_best = _chinchilla_objective(best.x, *args)
    grad_norm = float(np.max(np.abs(g_best))) * delta  # gradient of Σ Huber (paper's scale)
    converged = grad_norm <= grad_tol and (len(results) == 1 or n_agree >= 2)

    a, b, e, alpha, beta = (float(v) for v in best.x)
    if max(a, b, e) > 700:  # exp() would overflow: the optimiser ran away from its start(s)
        raise FloatingPointError(
            f"fit_chinchilla: L-BFGS diverged (log A={a:.3g}, log B={b:.3g}, log E={e:.3g}); "
            "refit from a grid of starts (init=None) or drop the runs that cannot be fitted"
        )
    r = log_L - laws.chinchilla_log(log_N, log_D, a, b, e, alpha, beta)
    fit = ChinchillaFit(
        E=math.exp(e),
        A=math.exp(a),
        B=math.exp(b),
        alpha=alpha,
        beta=beta,
        objective=f_best * delta,
        grad_norm=grad_norm,
        n_starts=len(results),
        n_agree=n_agree,
        objective_spread=obj_spread,
        param_spread=par_spread,
        converged=converged,
        n_points=n,
        delta=delta,
        residual_scale=float(np.sqrt(np.sum(r**2) / max(n - 5, 1))),
        message=str(best.message),
        log_residuals=r,
    )
    _warn_if_not_converged(
        "fit_chinchilla",
        converged,
        f"gradient norm {grad_norm:.2e} (tol {grad_tol:.0e}), "
        f"{n_agree}/{len(results)} starts agree; optimiser said: {best.message}",
        warn,
    )
    return fit


def compute_optimal(
    fit: ChinchillaFit, C: ArrayLike, flops_per_token_param: float = laws.FLOPS_PER_TOKEN_PARAM
) -> tuple[np.ndarray, np.ndarray]:
    """Compute-optimal (N_opt, D_opt) for budget C under C = 6·N·D (Hoffmann et al. eq. 4).

    Minimising L(N, C/(6N)) = E + A·N^−α + B·(C/6)^−β·N^β over N gives
    N_opt = G·(C/6)^(β/(α+β)), D_opt = (C/6)/N_opt = G^−1·(C/6)^(α/(α+β)),
    with G = (α·A / (β·B))^(1/(α+β)).
    """
    C_arr = np.asarray(C, dtype=float)
    if np.any(C_arr <= 0):
        raise ValueError("C must be positive")
    s = fit.alpha + fit.beta
    if fit.alpha <= 0 or fit.beta <= 0:
        raise ValueError("compute-optimal allocation needs alpha > 0 and beta > 0")
    G = (fit.alpha * fit.A / (fit.beta * fit.B)) ** (1.0 / s)
    tokens_times_params = C_arr / flops_per_token_param
    N_opt = G * tokens_times_params ** (fit.beta / s)
    D_opt = tokens_times_params / N_opt
    return N_opt, D_opt


# --------------------------------------------------------------------------- capability law


@dataclass
class CapabilityFit:
    """Result of ``fit_capability``: −log pass_rate = α·C^(−k).

    As with ``PowerLawFit`` the line is fitted on x = C/C_ref; ``alpha_ref`` is
    the coefficient for x, ``alpha = alpha_ref·C_ref^k`` the one for C.
    ``log_residuals`` are in log(−log p) — multiplicative noise on −log p — so
    bootstrap prediction intervals should be made on ``predict_neg_log``.
    """

    alpha: float
    k: float
    alpha_ref: float
    C_ref: float
    n_used: int
    n_excluded: int
    used: np.ndarray = field(repr=False)
    residual_scale: float = float("nan")  # sqrt(Σ r² / (n − 2)) in log(−log p)
    r2: float = float("nan")
    log_residuals: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    min_pass_rate: float = 0.0
    n_params: int = 2
    converged: bool = True  # closed form: always

    def predict_neg_log(self, C: ArrayLike) -> np.ndarray:
        """Predicted −log pass_rate at compute C."""
        return laws.neg_log_pass_rate(np.asarray(C, dtype=float) / self.C_ref, self.alpha_ref, self.k)

    def predict(self, C: ArrayLike) -> np.ndarray:
        """Predicted pass rate at compute C."""
        return np.exp(-self.predict_neg_log(C))

    @property
    def params(self) -> dict[str, float]:
        return {"alpha": self.alpha, "k": self.k, "alpha_ref": self.alpha_ref}

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": "capability",
            "law": "-log pass_rate = alpha*C^(-k)",
            "params": self.params,
            "C_ref": self.C_ref,
            "n_used": self.n_used,
            "n_excluded": self.n_excluded,
            "min_pass_rate": self.min_pass_rate,
            "residual_scale": self.residual_scale,
            "r2": self.r2,
        }


def fit_capability(
    C: ArrayLike, pass_rate: ArrayLike, *, min_pass_rate: float = 1e-3, C_ref: float | None = None, init: Any = None
) -> CapabilityFit:
    """Fit −log p = α·C^(−k) as the line log(−log p) = log α − k·log C.

    Only points with ``min_pass_rate`` ≤ p < 1 are used:
    * p = 0 has −log p = ∞ and p = 1 has log(−log p) = −∞ — neither carries a
      slope;
    * below ``min_pass_rate`` (default 1e-3) a pass rate estimated from a
      finite sample budget is mostly resolution noise.  This mirrors the GPT-4
      report, which restricted its fit to problems every model solves at least
      once in a large sample budget; set ``min_pass_rate`` to about
      1/(samples per problem), or lower if pass rates come from PassUntil-style
      sampling (Hu et al. 2024) which resolves tiny rates.
    The pass rate given per model is best the geometric mean over problems,
    exp(mean log p), since the report fits the mean of −log p.
    Ordinary least squares in log-log space (closed form, so always
    converged); ``init`` is accepted and ignored so bootstrap.py can treat all
    fits alike.
    """
    C_arr = _positive_1d("C", C)
    p = np.asarray(pass_rate, dtype=float).ravel()
    _same_length(C=C_arr, pass_rate=p)
    used = np.isfinite(p) & (p >= max(min_pass_rate, np.finfo(float).tiny)) & (p < 1.0)
    n_used = int(used.sum())
    if n_used < 3:
        raise ValueError(
            f"only {n_used} points have {min_pass_rate} <= pass_rate < 1; need at least 3 "
            "to fit a line and estimate its noise"
        )
    if C_ref is None:
        C_ref = float(C_arr[used].max())
    x = np.log(C_arr[used] / C_ref)
    y = np.log(-np.log(p[used]))
    slope, intercept = np.polyfit(x, y, 1)
    r = y - (intercept + slope * x)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    k = float(-slope)
    alpha_ref = float(math.exp(intercept))
    return CapabilityFit(
        alpha=alpha_ref * C_ref**k,
        k=k,
        alpha_ref=alpha_ref,
        C_ref=C_ref,
        n_used=n_used,
        n_excluded=int(len(p) - n_used),
        used=used,
        residual_scale=float(np.sqrt(np.sum(r**2) / max(n_used - 2, 1))),
        r2=float(1.0 - np.sum(r**2) / ss_tot) if ss_tot > 0 else float("nan"),
        log_residuals=r,
        min_pass_rate=min_pass_rate,
    )


def fit_capability_problems(
    neg_log: ArrayLike, *, C: ArrayLike, min_pass_rate: float = 0.0, init: Any = None
) -> CapabilityFit:
    """Fit −E[log p(C)] = α·C^(−k) on per-problem rates: ``neg_log`` is [problems, C] of −log p.

    The mean over problems is taken first (the GPT-4 report's −E[log pass_rate]), then the
    line is fitted as ``fit_capability`` does, on the geometric-mean pass rate exp(−mean).
    Problems are the rows so ``bootstrap`` resamples problems, not compute points: the
    spread between problems, not the few runs, is what makes the mean uncertain.
    ``init`` is accepted and ignored, as in ``fit_capability``.
    """
    m = np.asarray(neg_log, dtype=float)
    if m.ndim != 2 or m.shape[1] != len(np.ravel(C)):
        raise ValueError(f"neg_log must be [problems, {len(np.ravel(C))}] (one column per C), got {m.shape}")
    if not np.all(np.isfinite(m)):
        raise ValueError("neg_log has infinite values: drop the problems with pass_rate 0 first")
    return fit_capability(C, np.exp(-m.mean(axis=0)), min_pass_rate=min_pass_rate)
