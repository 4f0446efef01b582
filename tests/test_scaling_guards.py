"""``alignlab scaling predict`` refuses a prediction that could not be trusted, one guard per test.

Each test builds a tiny sweep by hand (sweep.json with a recipe, a runs.csv of six runs on a known
L(C), a fit.json from ``scaling fit``); the model size comes from a stub instead of a tokenizer, and
no target is trained (``train=false``, or a target folder written by hand), so each test is fast.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignlab import cli
from alignlab.config import resolve
from alignlab.errors import ConfigError, DataError, MissingInputError
from alignlab.scaling import stage


def _params(scfg, spec) -> tuple[int, int]:
    """Parameters of a recipe's model without loading a tokenizer (12·layers·width² + embeddings)."""
    n = 12 * spec.n_layer * spec.width**2
    return n, n + 1000 * spec.width


@pytest.fixture
def sweep(tmp_path, monkeypatch):
    from alignlab.scaling import predict as predict_module

    monkeypatch.setattr(stage, "count_params", _params)
    monkeypatch.setattr(predict_module, "draw_plots", lambda *a, **k: [])  # plots are tested elsewhere; slow here
    root = tmp_path / "sweep"
    root.mkdir()
    (root / "sweep.json").write_text(json.dumps({"config": {"seq_len": 64, "batch_size": 8, "lr_base_width": 16}}))
    C = np.logspace(8, 10, 6)
    L = 2.0 + 30.0 * C**-0.15
    (root / "runs.csv").write_text("C,loss\n" + "".join(f"{c:.6g},{v:.9g}\n" for c, v in zip(C, L)))
    fit(root / "runs.csv", root / "fit")
    return root


def fit(runs: Path, out: Path, seed: int = 0) -> Path:
    args = ["scaling", "fit", "--runs", str(runs), "--output_dir", str(out), "--n_boot", "8", "--seed", str(seed)]
    assert cli.main(args) == 0
    return out / "fit.json"


def predict(root: Path, width: int = 48, fit_json: Path | None = None, **over):
    """run_predict on the hand-made sweep; only prediction_pre.json is written (no training)."""
    values = {
        "sweep": str(root),
        "fit": str(fit_json or root / "fit" / "fit.json"),
        "width": width,
        "tokens": 1e5,
        "train": False,
        "output_dir": str(root / "predict"),
        **over,
    }
    return stage.run_predict(resolve(stage.PredictConfig, {}, None, None, values))


def test_normal_path_records_and_then_reuses_the_prediction(sweep):
    first = predict(sweep)
    pre = sweep / "predict" / "prediction_pre.json"
    created = json.loads(pre.read_text())["created"]
    assert predict(sweep)["prediction_sha256"] == first["prediction_sha256"]
    assert json.loads(pre.read_text())["created"] == created


# ---- (a) a stale fit.json


def test_refuses_a_fit_that_records_no_runs_hash(sweep):
    path = sweep / "fit" / "fit.json"
    doc = json.loads(path.read_text())
    del doc["metadata"]["runs_sha256"]
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"fit\.json is stale: it records no runs_file/runs_sha256"):
        predict(sweep)


def test_refuses_a_fit_whose_parameters_the_runs_do_not_give(sweep):
    path = sweep / "fit" / "fit.json"
    doc = json.loads(path.read_text())
    doc["fits"][0]["params"]["b"] *= 1.1  # an edited fit, or one made by another version
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"fit\.json is stale: loss_vs_compute\.b = "):
        predict(sweep)


def test_refuses_a_fit_of_other_runs_than_the_sweeps(sweep):
    # fitted on a copy of runs.csv; the sweep has since added a run
    copy = sweep / "old_runs.csv"
    copy.write_text((sweep / "runs.csv").read_text())
    old_fit = fit(copy, sweep / "old_fit")
    with open(sweep / "runs.csv", "a") as f:
        f.write("3e10,2.5\n")
    with pytest.raises(
        ConfigError, match=r"old_fit/fit\.json is stale: it was fitted on .*old_runs\.csv, but the sweep"
    ):
        predict(sweep, fit_json=old_fit)


def test_refuses_a_missing_fit_or_runs_file_naming_it(sweep, tmp_path):
    with pytest.raises(MissingInputError, match=r"nowhere/fit\.json not found: run `alignlab scaling fit` first"):
        predict(sweep, fit_json=tmp_path / "nowhere" / "fit.json")
    (sweep / "runs.csv").rename(sweep / "moved.csv")
    with pytest.raises(MissingInputError, match=r"runs\.csv not found: .*fit\.json was fitted on it"):
        predict(sweep)


def test_refuses_a_capability_only_fit(sweep):
    rates = sweep / "pass_rates.csv"
    rates.write_text("C,pass_rate\n" + "".join(f"{c},{0.9 - 0.1 * i}\n" for i, c in enumerate((1, 2, 4, 8))))
    with pytest.raises(ConfigError, match=r"holds only a capability fit \(a pass-rate file, no loss\)"):
        predict(sweep, fit_json=fit(rates, sweep / "cap_fit"))


# ---- (b) the runs file changed since the fit


def test_refuses_a_runs_file_changed_since_the_fit(sweep, capsys):
    with open(sweep / "runs.csv", "a") as f:
        f.write("3e10,2.5\n")
    with pytest.raises(DataError, match=r"runs\.csv changed since .*fit\.json was written \(SHA-256 \w{12} now"):
        predict(sweep)
    # from the command line: one line, status 2
    args = ["scaling", "predict", "--sweep", str(sweep), "--fit", str(sweep / "fit" / "fit.json")]
    args += ["--width", "48", "--tokens", "1e5", "--train", "false", "--output_dir", str(sweep / "p2")]
    assert cli.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("alignlab scaling predict: error: ") and "changed since" in err and "\n" not in err


# ---- (c) a prediction already recorded for another target, fit or law


def test_refuses_an_old_prediction_for_another_target(sweep):
    predict(sweep, width=48)
    with pytest.raises(ConfigError, match=r"prediction for another target \(target\.name: 'target_d48_\S+' there"):
        predict(sweep, width=64)


def test_refuses_an_old_prediction_from_another_fit(sweep):
    predict(sweep)
    fit(sweep / "runs.csv", sweep / "fit", seed=1)  # same runs, another bootstrap: another fit.json
    with pytest.raises(ConfigError, match=r"prediction for another fit \(fit_json_sha256: "):
        predict(sweep)


def test_refuses_an_edited_prediction_once_the_target_started(sweep):
    predict(sweep)
    target = sweep / "predict" / "target"
    target.mkdir()
    pre = sweep / "predict" / "prediction_pre.json"
    (target / "config.yaml").write_text(f"prediction_sha256: {stage_sha(pre)}\n")
    predict(sweep)  # the target named this prediction: fine
    doc = json.loads(pre.read_text())
    doc["prediction"]["loss"]["estimate"] += 0.1  # moved after the target started
    pre.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match=r"target was started under another prediction"):
        predict(sweep)


# ---- (d) a target that started with no registered prediction


def test_refuses_a_target_started_without_a_prediction(sweep):
    target = sweep / "predict" / "target"
    (target / "checkpoint").mkdir(parents=True)
    with pytest.raises(ConfigError, match=r"target already holds a started run \(checkpoint\) but .*prediction_pre"):
        predict(sweep)
    assert not (sweep / "predict" / "prediction_pre.json").exists()


def test_a_run_lock_alone_is_not_a_started_target(sweep):
    # the lock is taken before config.yaml: a run killed between the two trained nothing
    target = sweep / "predict" / "target"
    target.mkdir(parents=True)
    (target / ".alignlab.lock").write_text("")
    predict(sweep)
    assert (sweep / "predict" / "prediction_pre.json").exists()


def stage_sha(path: Path) -> str:
    from alignlab.scaling.predict import sha256_file

    return sha256_file(path)
