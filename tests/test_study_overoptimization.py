"""alignlab study overoptimization: proxy RMs of 3 data sizes, best-of-n and PPO against each, Gao et al.'s fits,
and the largest RM's peak predicted before it is measured."""

from __future__ import annotations

import itertools
import json
import shutil

import numpy as np
import pytest
import yaml

from alignlab.config import ConfigError, resolve
from alignlab.evaluate.overoptimization_fit import best_of_n_d
from alignlab.stages.registry import STAGES, run_stage
from alignlab.studies.overoptimization import OveroptStudyConfig, _expected_of_pick

STUDY = "study_overoptimization"


def _study(run, **extra):
    cls, presets, _ = STAGES["study overoptimization"].load()
    return run_stage("study overoptimization", resolve(cls, presets, "smoke", None, {"run_dir": str(run), **extra}))


@pytest.fixture(scope="module")
def study_run(smoke_pipeline_run, tmp_path_factory):
    """A copy of the shared smoke pipeline run with the smoke study run in it (RUN/reward is its largest RM)."""
    run = tmp_path_factory.mktemp("overopt") / "run"
    shutil.copytree(smoke_pipeline_run, run, symlinks=True)
    _study(run, n_boot="100")
    return run


def _read(path):
    return json.loads(path.read_text())


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ConfigError, match="fractions"):
        OveroptStudyConfig(fractions=[0.5, 1.0])
    with pytest.raises(ConfigError, match="n_max"):
        OveroptStudyConfig(n_max=12)
    with pytest.raises(ConfigError, match="iterations"):
        OveroptStudyConfig(iterations=4, eval_interval=3)
    with pytest.raises(ConfigError, match="prompts"):
        OveroptStudyConfig(prompts=3)
    with pytest.raises(ConfigError, match="ppo_seeds"):
        OveroptStudyConfig(ppo_seeds=0)
    with pytest.raises(ConfigError, match="eval_draws"):
        OveroptStudyConfig(eval_draws=0)


def test_expected_pick_is_the_mean_over_every_subset():
    rng = np.random.default_rng(0)
    key, value = rng.standard_normal((3, 6)), rng.standard_normal((3, 6))
    for m in (1, 2, 4, 6):
        brute = [
            np.mean([value[p, s[int(np.argmax(key[p, list(s)]))]] for s in itertools.combinations(range(6), m)])
            for p in range(3)
        ]
        assert np.allclose(_expected_of_pick(key, value, m), brute)


def test_smoke_study_fits_every_rm_and_predicts_the_largest_before_measuring_it(study_run):
    out = study_run / STUDY
    s = _read(out / "summary.json")
    names = list(s["rms"])
    assert [s["rms"][n]["comparisons"] for n in names] == sorted(s["rms"][n]["comparisons"] for n in names)
    assert s["rms"][names[-1]]["folder"] == str(study_run / "reward")  # the run's own RM is the "all" one
    # best-of-n: d of every n, from one set of draws scored by every RM
    bon = s["points"][names[0]]["best_of_n"]
    assert bon["n"] == [1, 2, 4, 8, 16] and bon["d"] == [best_of_n_d(n) for n in bon["n"]] and bon["gold"][0] == 0
    assert len(_read(out / "best_of_n" / "samples.json")["texts"][0]) == 16
    # RL: held-out KL measured along each run, exactly 0 before the first update (the policy is the reference)
    curve = [json.loads(line) for line in (out / f"ppo_{names[0]}" / "heldout_curve.jsonl").read_text().splitlines()]
    assert [c["step"] for c in curve] == [0, 2, 4] and all(k == 0 for k in curve[0]["kl"])
    assert "heldout_kl_final" in _read(out / f"ppo_{names[0]}" / "summary.json")
    fit = _read(out / "fit.json")
    assert {"alpha", "beta", "d_star", "r_star"} <= set(fit["bon"][names[0]]["params"])
    assert fit["bon"][names[0]]["n_prompts"] == 8 and "trend_in_log_comparisons" in fit["rl"]
    for form in ("bon", "rl"):  # every curve is checked: the law on held-out points, and peak-then-fall
        c = fit[form]["checks"][names[0]]
        assert {"heldout_r2", "falls", "proxy_rises", "gold_fall"} <= set(c) and c["falls"] == s["checks"][form][
            names[0]
        ]["falls"]
    # the prediction was written after the smaller RMs were measured and before the largest one was
    pre = _read(out / "prediction_pre.json")
    at = pre["written_at"]
    assert pre["target_rm"] == names[-1] and set(pre["from_rms"]) == set(names[:-1])
    for n in names[:-1]:
        assert _read(out / "best_of_n" / f"{n}.json")["finished_at"] < at
        assert _read(out / f"ppo_{n}" / "summary.json")["finished_at"] < at
    assert _read(out / "best_of_n" / f"{names[-1]}.json")["finished_at"] > at
    assert _read(out / f"ppo_{names[-1]}" / "summary.json")["finished_at"] > at
    checked = _read(out / "prediction.json")
    for form in ("bon", "rl"):
        assert "skipped" in checked[form] or {"estimate", "lo", "hi", "actual", "inside"} <= set(
            checked[form]["d_star"]
        )
    assert (out / "best_of_n.png").stat().st_size > 0 and (out / "rl.png").stat().st_size > 0


def test_every_gold_gain_splits_into_its_components(study_run):
    """Gold is a weighted sum of components, so each point's gold gain is the sum of its parts' gains: per prompt
    in PPO's held-out curve, and per point of both curves in the summary; the figures and the report show them."""
    from alignlab.world import COMPONENTS

    out = study_run / STUDY
    s = _read(out / "summary.json")
    for name, p in s["points"].items():
        for method in ("best_of_n", "rl"):
            curve = p[method]
            assert set(curve["parts"]) == set(COMPONENTS)
            total = np.sum([curve["parts"][c] for c in COMPONENTS], axis=0)
            assert np.allclose(total, curve["gold"], atol=1e-9), (name, method)
            a = s["parts_at_peak"][name][method]
            i = int(np.argmax(curve["gold"]))
            assert a["peak_d"] == curve["d"][i] and a["to_peak"]["style"] == curve["parts"]["style"][i]
            assert np.isclose(sum(a["to_peak"].values()) + sum(a["after_peak"].values()), curve["gold"][-1])
        for line in (out / f"ppo_{name}" / "heldout_curve.jsonl").read_text().splitlines():
            row = json.loads(line)
            assert np.allclose(np.sum([row["gold_parts"][c] for c in COMPONENTS], axis=0), row["gold"], atol=1e-9)
    assert (out / "best_of_n_parts.png").stat().st_size > 0 and (out / "rl_parts.png").stat().st_size > 0


def test_the_gold_of_saying_nothing_is_measured_against_the_sft_samples(study_run):
    """Each constant answer's gold gain: its gold on the study's prompts minus the SFT samples' mean, per prompt."""
    import datasets

    from alignlab.evaluate.constant_answers import CONSTANT_ANSWERS
    from alignlab.evaluate.judges import WorldJudge

    s = _read(study_run / STUDY / "summary.json")
    sft = np.mean(_read(study_run / STUDY / "best_of_n" / "samples.json")["gold"], axis=1)
    test = datasets.load_from_disk(str(study_run / "world" / "test"))["test"]
    prompts = [test[i] for i in range(len(sft))]
    judge = WorldJudge(str(study_run / "world"))
    assert list(s["constant_answers"]) == list(CONSTANT_ANSWERS)
    for y, g in s["constant_answers"].items():
        assert g == pytest.approx(np.mean(np.asarray(judge.gold(prompts, [y] * len(prompts))) - sft))


def test_the_report_has_the_section(study_run):
    from alignlab.report.build import ReportConfig
    from alignlab.report.build import run as build_report

    build_report(ReportConfig(run_dir=str(study_run)))
    md = (study_run / "report.md").read_text()
    assert "## Reward over-optimisation (Gao et al. 2022)" in md and "Predicted before rm_100pct" in md
    assert (study_run / "report_overopt_rl.png").is_file()
    assert "What the gold gain is made of" in md and (study_run / "report_overopt_rl_parts.png").is_file()
    assert "What saying nothing earns" in md and '("I don\'t know.")' in md


def test_a_second_run_reuses_every_piece(study_run, capsys):
    out = study_run / STUDY
    kept = [p for p in out.rglob("*") if p.is_file() and p.parent != out] + [out / "prediction_pre.json"]
    kept += [study_run / "reward" / "summary.json"]
    before = {p: p.stat().st_mtime_ns for p in kept}
    _study(study_run, n_boot="100")
    assert {p: p.stat().st_mtime_ns for p in kept} == before
    assert "reward model on" not in capsys.readouterr().out
    # pieces made with other settings are not reused silently
    with pytest.raises(ConfigError, match="n_max"):
        _study(study_run, n_max="8")


# ----------------------------------------------------------------------------- the size axis (Gao et al.'s own)


@pytest.fixture(scope="module")
def size_study_run(smoke_pipeline_run, tmp_path_factory):
    """A copy of the smoke run with the size-axis study in it: RMs of d_model 16, 32 and the run's own 64."""
    run = tmp_path_factory.mktemp("overopt_sizes") / "run"
    shutil.copytree(smoke_pipeline_run, run, symlinks=True)
    cls, presets, _ = STAGES["study overoptimization"].load()
    extra = {"run_dir": str(run), "n_boot": "100", "ppo_seeds": "2", "eval_draws": "3"}
    cfg = resolve(cls, presets, "smoke_rm_sizes", None, extra)
    run_stage("study overoptimization", cfg)
    return run


def test_rm_sizes_are_checked_by_name():
    from alignlab.studies.overoptimization import SMOKE_RM_SIZE_SHAPES

    with pytest.raises(ConfigError, match="'rm_sizes' needs >= 3"):
        OveroptStudyConfig(rm_sizes=SMOKE_RM_SIZE_SHAPES[:2])
    bad = [dict(s) for s in SMOKE_RM_SIZE_SHAPES]
    bad[0]["d_model"] = 0
    with pytest.raises(ConfigError, match=r"study overoptimization: 'rm_sizes\[0\]\.d_model'"):
        OveroptStudyConfig(rm_sizes=bad)
    same = [dict(s) for s in SMOKE_RM_SIZE_SHAPES]
    same[1] = {**same[0], "name": "again"}
    with pytest.raises(ConfigError, match="distinct parameter counts"):
        OveroptStudyConfig(rm_sizes=same)


def test_size_axis_trains_each_rm_from_its_own_sft_on_the_same_comparisons(size_study_run):
    run = size_study_run
    out = run / "study_overoptimization_rm_sizes"
    s = _read(out / "summary.json")
    assert s["axis"] == "params" and list(s["rms"]) == ["rm_d16", "rm_d32", "rm_d64"]
    params = [rm["params"] for rm in s["rms"].values()]
    assert params == sorted(params) and len(set(params)) == 3
    # only the size differs: every RM saw all the run's comparisons
    assert {rm["comparisons"] for rm in s["rms"].values()} == {_read(run / "reward" / "summary.json")["train_prompts"]}
    assert s["rms"]["rm_d64"]["folder"] == str(run / "reward")  # the run's own shape is the run's own RM
    for name, width in (("rm_d16", 16), ("rm_d32", 32)):
        rm = out / name
        assert _read(rm / "config.json")["hidden_size"] == width
        sft = out / "sizes" / name.removeprefix("rm_") / "sft"
        assert (sft / "summary.json").is_file() and str(sft) in (rm / "config.yaml").read_text()
        assert 0 <= s["rms"][name]["gold_accuracy"] <= 1
    pre = _read(out / "prediction_pre.json")
    assert pre["axis"] == "params" and pre["target_rm"] == "rm_d64" and pre["target_size"] == params[-1]
    assert "trend_in_log_params" in _read(out / "fit.json")["bon"]
    # two PPO runs per RM, other seeds; the RL curve is their mean, prompt by prompt
    runs = [out / "ppo_rm_d16", out / "ppo_rm_d16_seed1"]
    assert [yaml.safe_load((r / "config.yaml").read_text())["run"]["seed"] for r in runs] == [0, 1]
    curve = [[json.loads(line) for line in (r / "heldout_curve.jsonl").read_text().splitlines()] for r in runs]
    gold_gain = [np.mean(np.subtract(c[-1]["gold"], c[0]["gold"])) for c in curve]
    rl = s["points"]["rm_d16"]["rl"]
    assert rl["gold"][-1] == pytest.approx(np.mean(gold_gain)) and len(rl["runs"]) == 2
    assert rl["kl"][-1] == pytest.approx(np.mean([np.mean(c[-1]["kl"]) for c in curve]))
    assert "ppo_rm_d16_seed1/heldout_curve.jsonl" in pre["inputs_sha256"]  # both runs fed the prediction
    # the data-axis study's folder is untouched: the two axes do not share pieces
    assert not (run / STUDY).exists()


def test_several_draws_per_prompt_measure_each_points_sampling_noise(study_run, size_study_run):
    out = size_study_run / "study_overoptimization_rm_sizes"
    runs = [out / "ppo_rm_d16", out / "ppo_rm_d16_seed1"]
    curves = [[json.loads(line) for line in (r / "heldout_curve.jsonl").read_text().splitlines()] for r in runs]
    for row in (row for c in curves for row in c):
        draws = np.asarray(row["gold_by_draw"])  # [3 draws, 8 prompts]; each prompt scored by their mean
        assert draws.shape == (3, 8) and np.allclose(draws.mean(axis=0), row["gold"])
    assert any(not np.allclose(d[0], d[1]) for d in (np.asarray(row["gold_by_draw"]) for row in curves[0][1:]))
    # each point's variance: the draws' spread per prompt, / 3 draws, / 8^2 prompts, / 2^2 runs
    want = [
        sum(np.asarray(c[i]["gold_by_draw"]).var(axis=0, ddof=1).sum() / 3 / 64 for c in curves) / 4
        for i in range(len(curves[0]))
    ]
    s = _read(out / "summary.json")
    assert s["ppo"]["eval_draws"] == 3
    from alignlab.studies.overoptimization import rl_curve

    assert rl_curve(runs)["gold_noise_var"] == pytest.approx(want)
    # and from run to run: the spread of the two runs' mean gains, / 2 runs (none with one run)
    means = [[np.mean(np.subtract(row["gold"], c[0]["gold"])) for row in c] for c in curves]
    assert rl_curve(runs)["gold_run_var"] == pytest.approx((np.var(means, axis=0, ddof=1) / 2).tolist())
    assert rl_curve(runs[:1])["gold_run_var"] is None
    # the first draw IS the one-draw measurement: the same RM (RUN/reward), PPO seed and settings as the data
    # axis's one-draw run, so the same training and the same first draw at every point
    one = [
        json.loads(line)
        for line in (study_run / STUDY / "ppo_rm_100pct" / "heldout_curve.jsonl").read_text().splitlines()
    ]
    three = [json.loads(line) for line in (out / "ppo_rm_d64" / "heldout_curve.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in one] == [r["gold_by_draw"][0] for r in three]
    assert "gold_by_draw" not in one[0] and rl_curve([study_run / STUDY / "ppo_rm_100pct"])["gold_noise_var"] is None


def test_the_report_has_a_section_for_the_size_axis(size_study_run):
    from alignlab.report.build import ReportConfig
    from alignlab.report.build import run as build_report

    build_report(ReportConfig(run_dir=str(size_study_run)))
    md = (size_study_run / "report.md").read_text()
    assert "## Reward over-optimisation (Gao et al. 2022) on the built-in world: proxy RMs of several sizes" in md
    assert "non-embedding params" in md and "Predicted before rm_d64" in md
    assert (size_study_run / "report_overopt_rm_sizes_rl.png").is_file()
