"""The scaling commands end to end: ``alignlab scaling sweep | fit | predict`` on the smoke world.

One smoke sweep (killed after its first run, then resumed) feeds the fit and predict
tests; the fit is also checked on a user CSV written from a known law.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from alignlab import cli
from alignlab.config import resolve
from alignlab.outputs import read_metrics
from alignlab.scaling import laws
from alignlab.scaling.stage import SWEEP_PRESETS, SweepConfig
from alignlab.scaling.sweep import make_spec


@pytest.fixture(scope="module")
def smoke_inputs(smoke_pipeline_run, tmp_path_factory):
    """A smoke world and its tokenizer: the shared smoke run's, linked into a folder of this module's own."""
    root = tmp_path_factory.mktemp("scaling")
    for name in ("world", "tokenizer"):
        (root / name).symlink_to(smoke_pipeline_run / name, target_is_directory=True)
    return root


def _sweep_args(root: Path, out: Path) -> list[str]:
    return [
        "--preset",
        "smoke",
        "--world",
        str(root / "world"),
        "--data",
        str(root / "world" / "corpus"),
        "--tokenizer",
        str(root / "tokenizer"),
        "--output_dir",
        str(out),
    ]


@pytest.fixture(scope="module")
def smoke_sweep(smoke_inputs):
    """The smoke sweep, killed (SIGKILL) once its first run finished, then resumed to the end."""
    root, out = smoke_inputs, smoke_inputs / "sweep"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    p = subprocess.Popen(
        [sys.executable, "-m", "alignlab.cli", "scaling", "sweep", *_sweep_args(root, out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    scfg = resolve(SweepConfig, SWEEP_PRESETS, "smoke")
    first = make_spec(scfg, *_grid0(scfg)).name
    done = out / "runs" / first / "summary.json"
    deadline = time.time() + 120
    while not done.exists() and p.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert done.exists(), "the first run of the smoke sweep did not finish"
    killed = p.poll() is None
    if killed:
        p.send_signal(signal.SIGKILL)
    p.wait()
    before = {
        "summary": done.read_text(),
        "mtime": done.stat().st_mtime_ns,
        "metrics": (done.parent / "metrics.jsonl").read_text(),
    }
    assert cli.main(["scaling", "sweep", *_sweep_args(root, out)]) == 0
    return {"root": root, "out": out, "first": first, "before": before, "killed": killed}


def _grid0(scfg):
    w, d = scfg.grid[0].split("x")
    return int(w), float(d)


def test_sweep_writes_runs_csv_with_compute_6ND(smoke_sweep):
    out = smoke_sweep["out"]
    rows = list(csv.DictReader(open(out / "runs.csv")))
    assert len(rows) == len(SWEEP_PRESETS["smoke"]["grid"])
    for r in rows:
        N, D, N_total = int(r["N"]), int(r["D"]), int(r["N_total"])
        assert float(r["C"]) == 6 * N * D  # exactly, N non-embedding
        assert float(r["C_total"]) == 6 * N_total * D and N_total > N
        assert 0 < float(r["loss"]) < 10 and 0 <= float(r["pass_rate"]) <= 1
    doc = json.loads((out / "sweep.json").read_text())
    assert "non-embedding" in doc["compute"] and doc["compute_span"] > 1
    # a finished run keeps its model, not the checkpoints it resumed from (keep_checkpoints is off)
    assert not list((out / "runs").glob("*/checkpoint*"))
    # intermediate eval losses are kept, and the capability item set is fixed for later runs
    assert all(len(run["eval_curve"]) >= 2 for run in doc["runs"])
    assert doc["capability"]["samples_per_item"] == SWEEP_PRESETS["smoke"]["samples_per_item"]
    assert set(doc["capability"]["solved_by_any"]) <= {
        it["id"] for it in json.loads((out / "capability_items.json").read_text())["items"]
    }


def test_killed_sweep_resumes_without_retraining_finished_runs(smoke_sweep):
    assert smoke_sweep["killed"], "the sweep finished before it could be killed; make the smoke grid longer"
    done = smoke_sweep["out"] / "runs" / smoke_sweep["first"] / "summary.json"
    before = smoke_sweep["before"]
    assert done.read_text() == before["summary"] and done.stat().st_mtime_ns == before["mtime"]
    assert (done.parent / "metrics.jsonl").read_text() == before["metrics"]
    # every run finished, and a second call trains nothing (each run's summary is left as it was)
    runs = sorted((smoke_sweep["out"] / "runs").iterdir())
    stamps = {r.name: (r / "summary.json").stat().st_mtime_ns for r in runs}
    t0 = time.time()
    assert cli.main(["scaling", "sweep", *_sweep_args(smoke_sweep["root"], smoke_sweep["out"])]) == 0
    assert {r.name: (r / "summary.json").stat().st_mtime_ns for r in runs} == stamps
    assert time.time() - t0 < 30


def test_sweep_refuses_a_finished_run_made_with_another_recipe(smoke_sweep, capsys):
    args = _sweep_args(smoke_sweep["root"], smoke_sweep["out"]) + ["--lr_base", "0.5"]
    assert cli.main(["scaling", "sweep", *args]) == 1
    assert "another recipe" in capsys.readouterr().err


def test_predict_records_prediction_before_training_the_target(smoke_sweep):
    out = smoke_sweep["out"]
    assert (
        cli.main(
            ["scaling", "fit", "--preset", "smoke", "--runs", str(out / "runs.csv"), "--output_dir", str(out / "fit")]
        )
        == 0
    )
    fit = json.loads((out / "fit" / "fit.json").read_text())
    assert fit["fits"][0]["name"] == "loss_vs_compute" and "intervals" in fit["fits"][0]
    assert (
        cli.main(
            [
                "scaling",
                "predict",
                "--preset",
                "smoke",
                "--sweep",
                str(out),
                "--fit",
                str(out / "fit" / "fit.json"),
                "--output_dir",
                str(out / "predict"),
            ]
        )
        == 0
    )
    pre_path = out / "predict" / "prediction_pre.json"
    target = out / "predict" / "target"
    pre = json.loads(pre_path.read_text())
    sha = hashlib.sha256(pre_path.read_bytes()).hexdigest()
    # the target's config records the prediction it tests, and the prediction predates its first step
    assert yaml.safe_load((target / "config.yaml").read_text())["prediction_sha256"] == sha
    first_line = read_metrics(target)[0]
    assert pre_path.stat().st_mtime < first_line["time"]
    assert pre["fit_json_sha256"] == hashlib.sha256((out / "fit" / "fit.json").read_bytes()).hexdigest()
    loss = pre["prediction"]["loss"]
    assert loss["lo"] <= loss["estimate"] <= loss["hi"]
    assert pre["target"]["ratio_to_largest_fitted_run"] > 1
    doc = json.loads((out / "predict" / "prediction.json").read_text())
    for key in ("loss", "loss_vs_compute", "chinchilla", "pass_rate", "actual", "target", "prediction_pre_sha256"):
        assert key in doc
    for key in ("predicted", "lo", "hi", "actual", "abs_rel_error", "inside_interval"):
        assert key in doc["loss"]
    assert doc["loss"]["actual"] == json.loads((target / "summary.json").read_text())["final_eval_loss"]
    assert doc["prediction_pre_sha256"] == sha
    assert (out / "predict" / "loss_vs_compute.png").stat().st_size > 0
    # a second call reuses the recorded prediction (same timestamp) and the finished target
    assert (
        cli.main(
            [
                "scaling",
                "predict",
                "--preset",
                "smoke",
                "--sweep",
                str(out),
                "--fit",
                str(out / "fit" / "fit.json"),
                "--output_dir",
                str(out / "predict"),
            ]
        )
        == 0
    )
    assert json.loads(pre_path.read_text())["created"] == pre["created"]


# --------------------------------------------------------------------------- fit on a user CSV

TRUE = {"E": 1.5, "A": 40.0, "B": 60.0, "alpha": 0.35, "beta": 0.3}


def _write_user_csv(path: Path, collinear: bool = False, noise: float = 0.005) -> None:
    rng = np.random.default_rng(0)
    if collinear:
        N = np.logspace(4, 6, 12)
        D = 20 * N
    else:
        N, D = (a.ravel() for a in np.meshgrid(np.logspace(4, 6, 4), np.logspace(5.5, 7, 3)))
    L = laws.chinchilla(N, D, **TRUE) * np.exp(noise * rng.standard_normal(len(N)))
    p = laws.capability(6 * N * D / 1e12, 2.0, 0.3) * np.exp(0.02 * rng.standard_normal(len(N)))
    with open(path, "w") as f:
        f.write("N,D,loss,pass_rate,comment\n")
        for row in zip(N, D, L, p):
            f.write(",".join(repr(float(v)) for v in row) + ",user run\n")
    return N, D


def test_fit_on_user_csv_writes_intervals_for_every_parameter(tmp_path):
    path = tmp_path / "my_runs.csv"
    _write_user_csv(path)
    out = tmp_path / "fit"
    assert (
        cli.main(
            [
                "scaling",
                "fit",
                "--runs",
                str(path),
                "--output_dir",
                str(out),
                "--n_boot",
                "40",
                "--chinchilla_starts",
                "16",
            ]
        )
        == 0
    )
    doc = json.loads((out / "fit.json").read_text())
    fits = {f["name"]: f for f in doc["fits"]}
    assert set(fits) == {"loss_vs_compute", "chinchilla", "capability"}
    for f in fits.values():
        for name, iv in f["intervals"]["params"].items():
            assert iv["lo"] <= iv["hi"], name
    cc = fits["chinchilla"]["intervals"]["params"]
    assert abs(cc["alpha"]["estimate"] - TRUE["alpha"]) < 0.1 and abs(cc["beta"]["estimate"] - TRUE["beta"]) < 0.1
    assert abs(fits["capability"]["params"]["k"] - 0.3) < 0.05
    alloc = doc["metadata"]["allocation"]
    assert len(alloc) == 2 and all(a["N_opt_lo"] <= a["N_opt"] <= a["N_opt_hi"] for a in alloc)
    for png in ("loss_vs_compute.png", "capability.png", "residuals.png", "residuals_chinchilla.png"):
        assert (out / png).stat().st_size > 0
    assert all(doc["metadata"]["lc_runs_used"])  # no 'main' column: L(C) on every run


def test_fit_uses_the_main_line_for_loss_vs_compute(tmp_path):
    path = tmp_path / "runs.csv"
    N, D = _write_user_csv(path)
    lines = path.read_text().splitlines()
    main = [int(d == D.max()) for d in D]  # the runs at the largest D form the recipe's main line
    path.write_text("\n".join([lines[0] + ",main"] + [l + f",{m}" for l, m in zip(lines[1:], main)]) + "\n")
    out = tmp_path / "fit"
    assert (
        cli.main(
            [
                "scaling",
                "fit",
                "--runs",
                str(path),
                "--output_dir",
                str(out),
                "--n_boot",
                "20",
                "--chinchilla_starts",
                "8",
            ]
        )
        == 0
    )
    doc = json.loads((out / "fit.json").read_text())
    assert doc["metadata"]["lc_runs_used"] == [bool(m) for m in main]
    fits = {f["name"]: f for f in doc["fits"]}
    assert fits["loss_vs_compute"]["n_points"] == sum(main) and fits["chinchilla"]["n_points"] == len(main)


def test_fit_says_why_chinchilla_is_skipped(tmp_path, capsys):
    path = tmp_path / "collinear.csv"
    _write_user_csv(path, collinear=True)
    out = tmp_path / "fit"
    assert cli.main(["scaling", "fit", "--runs", str(path), "--output_dir", str(out), "--n_boot", "20"]) == 0
    doc = json.loads((out / "fit.json").read_text())
    assert "chinchilla" not in {f["name"] for f in doc["fits"]}
    assert "collinear" in doc["metadata"]["chinchilla_skipped"]
    assert "collinear" in capsys.readouterr().out
    # a file with only compute and loss: L(C) alone
    c_only = tmp_path / "c_only.csv"
    c_only.write_text("C,loss\n" + "".join(f"{c},{2 + 5 * c**-0.1}\n" for c in np.logspace(15, 18, 6)))
    assert (
        cli.main(["scaling", "fit", "--runs", str(c_only), "--output_dir", str(tmp_path / "f2"), "--n_boot", "20"]) == 0
    )
    meta = json.loads((tmp_path / "f2" / "fit.json").read_text())["metadata"]
    assert "no N and D" in meta["chinchilla_skipped"] and "pass_rate" in meta["capability_skipped"]


def test_bad_csv_error_names_file_and_line(tmp_path, capsys):
    path = tmp_path / "bad.csv"
    path.write_text("N,D,loss\n1e4,1e6,3.1\n2e4,1e6,oops\n")
    assert cli.main(["scaling", "fit", "--runs", str(path), "--output_dir", str(tmp_path / "fit")]) == 2
    err = capsys.readouterr().err
    assert f"{path}, line 3" in err and "loss" in err
