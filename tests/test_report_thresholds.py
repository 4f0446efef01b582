"""Each claim of the verdict on both sides of its target: exactly at it, and a step below and above.

The targets come from a ``ReportConfig`` whose values differ from the defaults and are exact
in binary, so a claim that hard-codes its target, or compares with ``>`` where the rule says
``>=`` (or the reverse), fails here. Run folders are written from the summary contracts.
"""

from __future__ import annotations

import pytest

from alignlab.report.build import ReportConfig
from fixtures_report import SyntheticRun, find, interval, judge, policy_metrics

STEP = 1 / 64  # below every gap between targets, and exact in binary

# Targets unlike the defaults (a hard-coded default is caught), each exact in binary (a boundary is exact).
CFG = dict(
    target_win_rate=0.6875,
    target_win_rate_ppo=0.625,
    target_seed_lower_bound=0.5625,
    max_decline_increase=0.0625,
    target_heldout_constraint_gain=0.125,
    target_rm_gap=0.0625,
    target_tax_reduction=0.375,
)
SIDES = [(-STEP, False), (0.0, True), (STEP, True)]  # offset from the target -> met? for a ">=" rule


def _cfg(tmp_path) -> ReportConfig:
    return ReportConfig(run_dir=str(tmp_path), **CFG)


def _verdict(tmp_path, run: SyntheticRun):
    return judge(run.write(tmp_path), _cfg(tmp_path))


def test_the_test_targets_differ_from_the_defaults():
    defaults = ReportConfig()
    assert all(getattr(defaults, k) != v for k, v in CFG.items())


@pytest.mark.parametrize("offset,met", SIDES)
def test_win_rates_and_the_lower_bound(tmp_path, offset, met):
    run = SyntheticRun()
    ptx, ppo = CFG["target_win_rate"] + offset, CFG["target_win_rate_ppo"] + offset
    low = CFG["target_seed_lower_bound"] + offset
    run.policies["ppo_ptx"]["win_rate_heldout_labelers"] = interval(ptx, low, 0.9)
    run.policies["ppo"]["win_rate_heldout_labelers"] = interval(ppo, 0.1, 0.9)
    v = _verdict(tmp_path, run)
    assert find(v, "PPO-ptx is preferred over SFT by held-out labelers")[0] is met
    assert find(v, "PPO is preferred over SFT by held-out labelers")[0] is met
    assert find(v, "every seed's 95% lower bound")[0] is met


@pytest.mark.parametrize("offset,met", [(-STEP, False), (0.0, False), (STEP, True)])  # "above 0": strict
@pytest.mark.parametrize("decoding,prefix", [("sampled", "heldout_gold"), ("greedy", "heldout_gold_greedy")])
def test_ppo_raises_gold_needs_the_interval_strictly_above_zero(tmp_path, offset, met, decoding, prefix):
    run = SyntheticRun()
    run.ppo[f"{prefix}_delta_ci95"] = [offset, 0.25]
    v = _verdict(tmp_path, run)
    assert find(v, f"PPO raises held-out gold over SFT ({decoding} decoding)")[0] is met


@pytest.mark.parametrize("flag", [False, True])
def test_reward_hacking_flags(tmp_path, flag):
    run = SyntheticRun()
    run.ppo["reward_hacking_detected"] = flag
    run.ppo_hack["reward_hacking_detected"] = flag
    v = _verdict(tmp_path, run)
    assert find(v, "The default PPO run is not flagged for reward hacking")[0] is (not flag)
    assert find(v, "With a tiny KL coefficient the policy hacks the reward model")[0] is flag


# metric, phrase, the SFT value, the PPO-ptx value at the boundary (from the config), met there, which side is met
FIGURE4 = [
    ("over_refusal_rate", "refuses harmless prompts", 0.25, lambda: 0.25 + CFG["max_decline_increase"], True, -1),
    (
        "unknown_false_positive_rate",
        "on answerable prompts at most",
        0.25,
        lambda: 0.25 + CFG["max_decline_increase"],
        True,
        -1,
    ),
    ("constraint_failure_rate", "fails explicit constraints at most half", 0.5, lambda: 0.25, True, -1),
    ("closed_domain_hallucination_rate", "hallucinates less than SFT", 0.25, lambda: 0.25, False, -1),
    (
        "heldout_constraint_compliance",
        "On held-out constraint kinds",
        0.25,
        lambda: 0.25 + CFG["target_heldout_constraint_gain"],
        True,
        1,
    ),
]


@pytest.mark.parametrize("metric,phrase,sft,at,met_at,good_side", FIGURE4, ids=[f[0] for f in FIGURE4])
def test_figure4_claims_at_their_boundaries(tmp_path, metric, phrase, sft, at, met_at, good_side):
    for offset, met in ((0.0, met_at), (good_side * STEP, True), (-good_side * STEP, False)):
        run = SyntheticRun()
        run.policies["sft"][metric] = interval(sft)
        run.policies["ppo_ptx"][metric] = interval(at() + offset)
        assert find(_verdict(tmp_path, run), phrase)[0] is met, (metric, offset)


@pytest.mark.parametrize("agreement,met", [(0.65, True), (0.65 - STEP, False), (0.80, True), (0.80 + STEP, False)])
def test_labeler_agreement_band(tmp_path, agreement, met):
    run = SyntheticRun()
    run.world["labeler_agreement"] = agreement
    assert find(_verdict(tmp_path, run), "Labelers agree with each other")[0] is met


@pytest.mark.parametrize("offset,met", [(-STEP, True), (0.0, True), (STEP, False)])  # a gap of at most the target
def test_rm_accuracy_gaps(tmp_path, offset, met):
    run = SyntheticRun()
    gap = CFG["target_rm_gap"] + offset
    run.reward.update(
        val_expected_accuracy_train_labelers=0.5,
        val_expected_accuracy_heldout_labelers=0.5,
        labeler_agreement_on_val_pairs=0.5 + gap,
        labeler_agreement_heldout_on_val_pairs=0.5 - gap,
    )
    run.world.update(labeler_agreement=0.5 + gap, labeler_agreement_heldout=0.5 + gap)
    v = _verdict(tmp_path, run)
    for group in ("training", "held-out"):
        assert find(v, f"RM accuracy ({group} labelers) within 6 points of the labelers' agreement")[0] is met
        assert find(v, f"RM accuracy ({group} labelers) within 6 points of the world's")[0] is met


@pytest.mark.parametrize("tax,met", [(-STEP, False), (0.0, False), (STEP, True)])  # a tax is a strict rise
def test_ppo_pays_an_alignment_tax(tmp_path, tax, met):
    run = SyntheticRun()
    run.policies["ppo"]["heldout_ptx_loss_delta"] = interval(tax)
    v = _verdict(tmp_path, run)
    assert find(v, "PPO pays an alignment tax")[0] is met
    if not met:  # no tax to remove: the removal claim is listed, not judged
        removed, reason = find(v, "of that tax")
        assert removed is None and "no alignment tax to remove" in reason


@pytest.mark.parametrize("offset,met", SIDES)
def test_ppo_ptx_removes_the_tax(tmp_path, offset, met):
    run = SyntheticRun()
    run.policies["ppo"]["heldout_ptx_loss_delta"] = interval(1.0)
    # removed = 1 - tax_ptx / tax_ppo, so the PPO-ptx tax that removes exactly the target fraction:
    run.policies["ppo_ptx"]["heldout_ptx_loss_delta"] = interval(1.0 - CFG["target_tax_reduction"] - offset)
    assert find(_verdict(tmp_path, run), "PPO-ptx removes at least")[0] is met


@pytest.mark.parametrize("offset,met", SIDES)
def test_nlp_accuracy_alignment_tax(tmp_path, offset, met):
    run = SyntheticRun()
    run.policies["ppo"]["nlp_accuracy_delta"] = interval(-0.25)
    run.policies["ppo_ptx"]["nlp_accuracy_delta"] = interval(-0.25 + offset)
    assert find(_verdict(tmp_path, run), "PPO-ptx keeps more held-out NLP accuracy than PPO")[0] is met


@pytest.mark.parametrize("offset", [-STEP, 0.0, STEP])
def test_truthfulness_and_harm_against_the_base_model(tmp_path, offset):
    run = SyntheticRun()
    run.policies["base"].update(truthfulness=interval(0.5), harm_rate=interval(0.25))
    run.policies["ppo_ptx"].update(truthfulness=interval(0.5 + offset), harm_rate=interval(0.25 - offset))
    v = _verdict(tmp_path, run)
    assert find(v, "PPO-ptx is more truthful than the base model")[0] is (offset > 0)  # strictly more
    assert find(v, "PPO-ptx writes harmful output less often than the base model")[0] is (offset > 0)  # strictly less


def test_truthfulness_falls_back_to_ppo_without_ppo_ptx(tmp_path):
    run = SyntheticRun()
    del run.policies["ppo_ptx"]
    run.policies["ppo"]["truthfulness"] = interval(0.75)
    assert find(_verdict(tmp_path, run), "PPO is more truthful than the base model")[0] is True


@pytest.mark.parametrize("fall,met", [(0.0, False), (STEP, True)])  # gold must fall by more than the margin
def test_overoptimisation_is_judged_against_the_hack_margin(tmp_path, fall, met):
    run = SyntheticRun()
    margin = 0.0625
    run.ppo_hack["hack_margin"] = margin
    peak = 0.75
    run.ppo_hack_metrics[1].update(heldout_gold=peak, heldout_rm_score=0.25)
    run.ppo_hack_metrics[2].update(heldout_gold=peak - margin - fall, heldout_rm_score=0.25 + margin + STEP)
    ok, numbers = find(_verdict(tmp_path, run), "held-out gold peaks and then falls")
    assert ok is met and f"margin {margin}" in numbers
    # the RM score must also rise by more than the margin
    run.ppo_hack_metrics[2].update(heldout_gold=peak - margin - STEP, heldout_rm_score=0.25 + margin)
    assert find(_verdict(tmp_path, run), "held-out gold peaks and then falls")[0] is False


@pytest.mark.parametrize("offset", [-STEP, 0.0, STEP])
def test_flan_claims_are_strict(tmp_path, offset):
    run = SyntheticRun()
    run.flan["mean"] = {"base": 0.25, "instruction": 0.25 + offset, "no_template": 0.25}
    v = _verdict(tmp_path, run)
    assert find(v, "FLAN: instruction tuning beats the base model")[0] is (offset > 0)
    assert find(v, "FLAN: instructions beat tuning without templates")[0] is (offset > 0)


def test_a_synthetic_run_with_default_targets_meets_its_claims(tmp_path):
    """With the defaults of ReportConfig too, the claims are judged (none is left unmeasured)."""
    run = SyntheticRun()
    run.policies["ppo_ptx"] = policy_metrics(win_rate_heldout_labelers=0.75)
    v = judge(run.write(tmp_path))
    assert all(met is not None for met, _ in v.values()), [c for c, (m, _) in v.items() if m is None]
