"""Gao et al. (2022) over-optimisation laws: recovery of known α, β and peaks, intervals, bad inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from alignlab.evaluate import headroom
from alignlab.evaluate.overoptimization_fit import (
    best_of_n_d,
    best_of_n_kl,
    fit_overoptimization,
    fit_size_trend,
    gain,
    heldout_r2,
    peak,
    peak_then_fall,
    r2_if_law_true,
)

BON = {"alpha": 1.0, "beta": 0.25}  # peak d* = 2.0 (best-of-~64), R* = 1.0
RL = {"alpha": 1.2, "beta": 0.5}  # peak d* = exp(1.4) = 4.06, R* = 2.03
D_BON = np.array([best_of_n_d(n) for n in (2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)])
D_RL = np.linspace(0.25, 8.0, 12)


def _per_prompt(d: np.ndarray, form: str, truth: dict, n_prompts: int = 400, seed: int = 0) -> np.ndarray:
    """[prompts, points] gains: the law scaled per prompt (mean 1) plus per-(prompt, d) noise."""
    rng = np.random.default_rng(seed)
    scale = 1 + 0.5 * rng.standard_normal((n_prompts, 1))
    return gain(d, **truth, form=form) * scale + 0.3 * rng.standard_normal((n_prompts, len(d)))


def test_best_of_n_kl_is_headrooms():
    assert best_of_n_kl is headroom.best_of_n_kl  # reused, not copied
    assert best_of_n_d(16) == pytest.approx(math.sqrt(math.log(16) - 15 / 16))
    assert best_of_n_d(1) == 0.0


def test_peaks_match_the_closed_forms_and_the_curves():
    d_star, r_star = peak(1.0, 0.25, "bon")
    assert (d_star, r_star) == (2.0, 1.0)
    d_star, r_star = peak(1.2, 0.5, "rl")
    assert d_star == pytest.approx(math.exp(1.4)) and r_star == pytest.approx(0.5 * math.exp(1.4))
    for form, truth in (("bon", BON), ("rl", RL)):
        d = np.linspace(0.01, 10, 20001)
        R = gain(d, **truth, form=form)
        ds, rs = peak(truth["alpha"], truth["beta"], form)
        assert d[np.argmax(R)] == pytest.approx(ds, abs=1e-3) and R.max() == pytest.approx(rs, rel=1e-6)
    assert np.isinf(peak(1.0, -0.1, "bon")[0])  # a curve that never turns has no peak


@pytest.mark.parametrize(("form", "truth", "d"), [("bon", BON, D_BON), ("rl", RL, D_RL)])
def test_recovers_alpha_beta_and_peak_from_noisy_points(form, truth, d):
    rng = np.random.default_rng(1)
    R = gain(d, **truth, form=form) + 0.02 * rng.standard_normal(len(d))
    fit = fit_overoptimization(d, R, form=form)
    assert fit.alpha == pytest.approx(truth["alpha"], abs=0.05) and fit.beta == pytest.approx(truth["beta"], abs=0.03)
    ds, rs = peak(truth["alpha"], truth["beta"], form)
    assert fit.d_star == pytest.approx(ds, rel=0.1) and fit.r_star == pytest.approx(rs, rel=0.05)
    assert fit.intervals is None and fit.to_dict()["params"]["d_star"] == fit.d_star


@pytest.mark.parametrize(("form", "truth", "d"), [("bon", BON, D_BON), ("rl", RL, D_RL)])
def test_prompt_bootstrap_intervals_cover_the_truth(form, truth, d):
    fit = fit_overoptimization(d, form=form, per_prompt=_per_prompt(d, form, truth), n_boot=2000)
    ds, rs = peak(truth["alpha"], truth["beta"], form)
    for k, v in {**truth, "d_star": ds, "r_star": rs}.items():
        iv = fit.intervals[k]
        assert iv["lo"] <= v <= iv["hi"], (k, v, iv)
        assert iv["lo"] <= fit.params[k] <= iv["hi"]
    assert fit.n_prompts == 400 and len(fit.samples["alpha"]) == 2000
    # the same seed gives the same intervals
    again = fit_overoptimization(d, form=form, per_prompt=_per_prompt(d, form, truth), n_boot=2000)
    assert again.intervals == fit.intervals


def test_degenerate_inputs_are_refused_with_the_reason():
    with pytest.raises(ValueError, match="at least 2 distinct points with d > 0"):
        fit_overoptimization([1.0], [0.5], form="bon")
    with pytest.raises(ValueError, match="at least 2 distinct points with d > 0"):
        fit_overoptimization([0.0, 1.0, 1.0], [0.0, 0.5, 0.5], form="bon")
    with pytest.raises(ValueError, match="RL form has log d: every d = sqrt\\(KL\\) must be > 0"):
        fit_overoptimization([0.0, 1.0, 2.0], [0.0, 0.5, 0.7], form="rl")
    with pytest.raises(ValueError, match="cannot be negative"):
        fit_overoptimization([-1.0, 1.0, 2.0], [0.0, 0.5, 0.7], form="bon")
    with pytest.raises(ValueError, match="form must be one of"):
        fit_overoptimization([1.0, 2.0], [0.5, 0.7], form="ppo")
    with pytest.raises(ValueError, match="R has 2 values for 3 points"):
        fit_overoptimization([1.0, 2.0, 3.0], [0.5, 0.7], form="bon")
    with pytest.raises(ValueError, match=r"per_prompt must be \[prompts, 3 points\]"):
        fit_overoptimization([1.0, 2.0, 3.0], form="bon", per_prompt=np.zeros((5, 2)))
    with pytest.raises(ValueError, match="exactly one of R"):
        fit_overoptimization([1.0, 2.0], form="bon")
    # the d = 0 point is allowed for best-of-n (its gain is 0 by definition)
    assert fit_overoptimization([0.0, 1.0, 2.0], [0.0, 0.75, 1.0], form="bon").beta == pytest.approx(0.25)


@pytest.mark.parametrize(("form", "beta0", "beta1"), [("bon", 0.6, -0.02), ("rl", 0.3, 0.01)])
def test_size_trend_predicts_a_larger_rm_within_its_interval(form, beta0, beta1):
    """α, β linear in log N over 6 proxy sizes (3e6-3e8); predict at 3e9, one decade past (d* ≈ 4 there)."""
    rng = np.random.default_rng(2)
    N = np.logspace(6.5, 8.5, 6)
    a_true = lambda n: 0.2 + 0.05 * np.log(n)  # noqa: E731
    b_true = lambda n: beta0 + beta1 * np.log(n)  # noqa: E731
    alpha = a_true(N) + 0.01 * rng.standard_normal(len(N))
    beta = b_true(N) + 0.005 * rng.standard_normal(len(N))
    trend = fit_size_trend(N, alpha, beta, form=form, N_target=3e9)
    ds, rs = peak(a_true(3e9), b_true(3e9), form)
    truth = {"alpha": a_true(3e9), "beta": b_true(3e9), "d_star": ds, "r_star": rs}
    for k, v in truth.items():
        p = trend.prediction[k]
        assert p["lo"] <= v <= p["hi"] and p["lo"] <= p["estimate"] <= p["hi"], (k, v, p)
    assert trend.coef["alpha"][1] == pytest.approx(0.05, abs=0.01)
    assert trend.extrapolation == pytest.approx(math.log10(3e9 / 10**8.5))
    with pytest.raises(ValueError, match="at least 3 distinct RM sizes"):
        fit_size_trend(N[:2], alpha[:2], beta[:2], form=form, N_target=1e9)


@pytest.mark.parametrize(("form", "truth", "d"), [("bon", BON, D_BON), ("rl", RL, D_RL)])
def test_heldout_r2_is_high_for_the_law_and_low_for_noise(form, truth, d):
    rng = np.random.default_rng(1)
    law = gain(d, **truth, form=form) + 0.02 * rng.standard_normal(len(d))
    assert heldout_r2(d, law, form)["r2"] > 0.95
    # a curve with no shape: the fit on half the points cannot predict the other half
    assert heldout_r2(d, rng.standard_normal(len(d)), form)["r2"] < 0.5
    r = heldout_r2(d, law, form)
    assert r["fitted_points"] + r["heldout_points"] == np.sum(d > 0)
    assert heldout_r2(d[:3], law[:3], form)["r2"] is None  # 3 points: 2 to fit, 1 to score: too few


def test_r2_if_law_true_tells_the_laws_misfit_from_the_measurements_noise():
    d = D_RL
    rng = np.random.default_rng(3)
    law = gain(d, **RL, form="rl")
    # a true law measured with little noise: R² near 1, and the measured R² is typical of the simulations
    quiet = r2_if_law_true(d, law + 0.02 * rng.standard_normal(len(d)), "rl", np.full(len(d), 0.02**2))
    assert quiet["median"] > 0.95 and 0.025 < quiet["share_below_measured"] < 0.975
    # the same true law with noise as large as the curve's structure: even the truth scores a low R²
    noisy = r2_if_law_true(d, law, "rl", np.full(len(d), 0.6**2))
    assert noisy["median"] < 0.5 and noisy["lo"] < 0 and noisy["simulations"] > 1900
    # a curve the law cannot follow (it zigzags), measured with little noise: its R² is far below the range
    zigzag = law + np.where(np.arange(len(d)) % 2, 0.5, -0.5)
    bad = r2_if_law_true(d, zigzag, "rl", np.full(len(d), 0.02**2))
    assert heldout_r2(d, zigzag, "rl")["r2"] < bad["lo"] and bad["share_below_measured"] == 0
    # a noisy start shifts every gain alike: the law through 0 no longer fits, even when each point is exact
    exact = r2_if_law_true(d, law, "rl", np.zeros(len(d)))
    shifted = r2_if_law_true(d, law, "rl", np.zeros(len(d)), offset_var=1.0)  # an offset half the peak gain
    assert exact["lo"] == pytest.approx(1.0) and shifted["median"] < 0.9 and shifted["lo"] < 0
    assert r2_if_law_true(d[:3], law[:3], "rl", np.ones(3)) is None  # too few points for a held-out R²
    with pytest.raises(ValueError, match="differ in length"):
        r2_if_law_true(d, law, "rl", np.ones(3))


def test_peak_then_fall_sees_a_fall_and_not_a_plateau():
    d = np.linspace(0.25, 4.0, 12)  # past the peak at 2: gold falls back to 0 at d = 4
    rng = np.random.default_rng(2)
    proxy = np.tile(d, (200, 1)) + 0.3 * rng.standard_normal((200, len(d)))  # keeps rising
    falling = _per_prompt(d, "bon", BON, n_prompts=200)  # peaks at d = 2 and falls after
    out = peak_then_fall(falling, proxy)
    assert out["falls"] and out["proxy_rises"] and 0 < out["peak_point"] < out["last_point"]
    assert out["gold_fall"]["lo"] > 0 and out["gold_fall"]["lo"] < out["gold_fall"]["mean"] < out["gold_fall"]["hi"]
    # rises then stays flat: noise picks some peak, but the other prompts show no fall
    flat = np.minimum(np.tile(d, (200, 1)), 1.0) + 0.3 * rng.standard_normal((200, len(d)))
    assert not peak_then_fall(flat, proxy)["falls"]
    assert not peak_then_fall(flat, proxy)["stalled"] and not peak_then_fall(falling, proxy)["stalled"]
    # a policy that stopped changing at its peak (point 3): every later point repeats it, on every prompt
    stuck_g, stuck_p = falling.copy(), proxy.copy()
    stuck_g[:, 3:], stuck_p[:, 3:] = stuck_g[:, [3]] + 1.0, stuck_p[:, [3]]
    stuck = peak_then_fall(stuck_g, stuck_p)
    assert stuck["stalled"] and not stuck["falls"] and stuck["gold_fall"]["hi"] == 0.0
    # gold frozen while the RM's score still drifts (wording gold does not score): stalled too
    stuck_p[:, 3:] += 0.01 * rng.standard_normal(stuck_p[:, 3:].shape)
    assert peak_then_fall(stuck_g, stuck_p)["stalled"]
    # one prompt whose gold ends below its peak value: a measured (tiny) fall, not a stalled curve
    moved = stuck_g.copy()
    moved[1, -1] -= 0.5
    assert not peak_then_fall(moved, stuck_p)["stalled"]
    with pytest.raises(ValueError, match="same"):
        peak_then_fall(falling, proxy[:, :3])
