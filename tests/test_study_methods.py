"""alignlab study methods: every method from one SFT policy and RM, at PPO's budget of samples, judged against SFT."""

from __future__ import annotations

import json
import math
import shutil

import pytest

from alignlab.config import ConfigError, resolve
from alignlab.report.methods_study import _label
from alignlab.stages.registry import STAGES, run_stage
from alignlab.studies.methods import MethodStudyConfig, over_seeds


@pytest.fixture(scope="module")
def smoke_run(smoke_pipeline_run, tmp_path_factory):
    """A copy of the shared smoke pipeline run: its SFT, RM and PPO are reused, RLOO and expert iteration added."""
    run = tmp_path_factory.mktemp("methods") / "run"
    shutil.copytree(smoke_pipeline_run, run, symlinks=True)
    return run


def _study(run, **extra):
    cls, presets, _ = STAGES["study methods"].load()
    settings = {"run_dir": str(run), "methods": "[ppo, rloo, expert_iteration]", "best_of_n": "[1, 2]"}
    return run_stage("study methods", resolve(cls, presets, "smoke", None, {**settings, "eval_prompts": 24, **extra}))


def test_unknown_method_and_bad_n_are_refused_by_name():
    with pytest.raises(ConfigError, match="unknown method"):
        MethodStudyConfig(methods=["ppo", "reinforce"])
    with pytest.raises(ConfigError, match="best_of_n"):
        MethodStudyConfig(best_of_n=[0, 4])


def test_every_method_gets_ppos_samples_and_is_judged_against_sft(smoke_run):
    summary = _study(smoke_run)
    methods, budget = summary["methods"], summary["budget"]
    assert list(methods) == ["sft", "ppo", "rloo", "expert_iteration", "best_of_1", "best_of_2"]
    for name in ("ppo", "rloo", "expert_iteration"):  # the same budget of policy samples, read off each step's summary
        assert methods[name]["policy_samples"]["value"] == budget["episodes"], name
        assert methods[name]["seconds"]["value"] > 0
    rloo = json.loads((smoke_run / "rloo" / "summary.json").read_text())
    assert rloo["episodes"] == budget["episodes"] and rloo["stage"] == "ppo"
    assert (
        methods["sft"]["win_rate_heldout_labelers"]["value"] == 0.5 and methods["sft"]["kl_to_baseline"]["value"] == 0
    )
    # best-of-n: the analytic KL, n samples per prompt at inference and none in training
    assert methods["best_of_2"]["kl_to_baseline"]["value"] == round(math.log(2) - 0.5, 4)
    assert (
        methods["best_of_2"]["inference_samples"]["value"] == 2 and methods["best_of_2"]["policy_samples"]["value"] == 0
    )
    results = json.loads((smoke_run / "study_methods" / "seeds" / "0" / "evaluate" / "results.json").read_text())
    assert results["settings"]["n_prompts"] == 24 and "best of 2" in results["policies"]["best_of_2"]["path"]
    assert (smoke_run / "study_methods" / "methods.png").stat().st_size > 0
    # the run's report gets the table, and names the method with the highest held-out win rate
    from alignlab.report.build import ReportConfig
    from alignlab.report.build import run as build_report

    build_report(ReportConfig(run_dir=str(smoke_run)))
    md = (smoke_run / "report.md").read_text()
    best = max((n for n in methods if n != "sft"), key=lambda n: methods[n]["win_rate_heldout_labelers"]["value"])
    assert "## Which method?" in md and "has the highest win rate against SFT" in md
    assert "| best-of-2 (SFT, RM picks) |" in md and (smoke_run / "report_methods.png").is_file()
    assert f"{_label(best)} has the highest win rate against SFT" in md


def test_a_second_run_reuses_every_finished_step(smoke_run, capsys):
    before = {p: p.stat().st_mtime_ns for p in smoke_run.glob("*/summary.json") if p.parent.name != "study_methods"}
    evaluated = smoke_run / "study_methods" / "seeds" / "0" / "evaluate" / "summary.json"
    at = evaluated.stat().st_mtime_ns
    _study(smoke_run)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert evaluated.stat().st_mtime_ns == at
    assert "already finished" in capsys.readouterr().out
    # a step that finished after the evaluation (here: redone) makes the study evaluate again
    _study(smoke_run, redo="[rloo]")
    assert evaluated.stat().st_mtime_ns > at


def test_over_seeds_is_a_t_interval_over_the_seed_values():
    x = over_seeds([0.5, 0.6, 0.7])
    half = 4.303 * 0.1 / math.sqrt(3)
    assert x["value"] == 0.6 and x["low"] == round(0.6 - half, 4) and x["high"] == round(0.6 + half, 4)
    assert over_seeds([0.55])["low"] is None and over_seeds([None, None])["value"] is None


def test_best_of_n_is_set_against_the_overoptimization_law(tmp_path):
    """Gains of best-of-n over best-of-1, paired over prompts, beside the law's R(d) at the same d."""
    from alignlab.studies.methods import bon_against_overoptimization

    study = tmp_path / "run" / "study_overoptimization"
    study.mkdir(parents=True)
    (study / "fit.json").write_text(json.dumps({"bon": {"rm_100pct": {"params": {"alpha": 0.2, "beta": 0.05}}}}))
    evaluate = tmp_path / "run" / "study_methods" / "seeds" / "0" / "evaluate"
    evaluate.mkdir(parents=True)
    gains = {1: 0.0, 4: 0.1, 16: 0.5}  # every prompt gains exactly this: a zero-width interval
    lines = [
        {"policy": f"best_of_{n}", "probe": False, "gold_reward": 0.3 + g} for _ in range(5) for n, g in gains.items()
    ]
    (evaluate / "samples.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    check = bon_against_overoptimization(
        MethodStudyConfig(run_dir=str(tmp_path / "run"), seeds=[0], best_of_n=[1, 4, 16])
    )
    d4 = math.sqrt(math.log(4) - 0.75)
    assert check["by_n"][4]["gain"] == pytest.approx(0.1) and check["by_n"][4]["law"] == pytest.approx(
        d4 * (0.2 - 0.05 * d4), abs=1e-4
    )
    assert not check["by_n"][16]["inside"]  # 0.5 is far above the law at n = 16
    assert bon_against_overoptimization(MethodStudyConfig(run_dir=str(tmp_path / "run"), best_of_n=[4, 16])) is None


def test_rate_intervals_stay_between_0_and_1():
    x = over_seeds([0.0, 0.2, 0.01], rate=True)
    assert x["low"] == 0.0 and 0.0 < x["high"] <= 1.0 and over_seeds([0.0, 0.2, 0.01])["low"] < 0
