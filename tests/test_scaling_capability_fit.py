"""``alignlab scaling fit`` on the user's own pass rates: GPT-4's −E[log pass_rate(C)] = α·C^(−k).

Synthetic files from a known law: per-problem rows (the bootstrap resamples problems) and one
aggregate pass rate per run; then the errors a bad file gets, each naming file, line and column.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignlab import cli
from alignlab.scaling.io import RunsFileError, read_pass_rates_csv

ALPHA, K = 2.0, 0.4
C_GRID = np.logspace(0, 3, 6)  # compute in units of the smallest run: −log p falls from 2.0 to 0.13


def _per_problem_csv(path: Path, n_problems: int = 200, n_unsolved: int = 5, seed: int = 0) -> None:
    """−log p_jC = α·C^−k·u_j·ε_jC with E[u] = E[ε] = 1: the mean over problems follows the law.

    u_j (σ=0.5) makes problems differ in difficulty, ε_jC (σ=0.1) is per-run noise; the last
    ``n_unsolved`` problems have pass rate 0 at the smallest C and must be dropped.
    """
    rng = np.random.default_rng(seed)
    u = np.exp(0.5 * rng.standard_normal(n_problems) - 0.125)
    eps = np.exp(0.1 * rng.standard_normal((n_problems, len(C_GRID))) - 0.005)
    p = np.exp(-ALPHA * C_GRID**-K * u[:, None] * eps)
    lines = ["C,problem,pass_rate"]
    for j in range(n_problems + n_unsolved):
        for i, c in enumerate(C_GRID):
            rate = p[j, i] if j < n_problems else (0.0 if i == 0 else 0.5)
            lines.append(f"{c:.17g},q{j},{rate:.17g}")
    path.write_text("\n".join(lines) + "\n")


def _fit(path: Path, out: Path, *extra: str) -> int:
    return cli.main(["scaling", "fit", "--runs", str(path), "--output_dir", str(out), *extra])


def test_per_problem_fit_recovers_alpha_and_k_with_intervals_covering_truth(tmp_path, capsys):
    path = tmp_path / "pass_rates.csv"
    _per_problem_csv(path)
    assert _fit(path, tmp_path / "fit", "--n_boot", "200") == 0
    printed = capsys.readouterr().out
    assert "dropped 5 of 205 problems with pass_rate 0 at some C" in printed
    assert "alpha = " in printed and "k = " in printed
    doc = json.loads((tmp_path / "fit" / "fit.json").read_text())
    (cap,) = doc["fits"]
    assert cap["name"] == "capability" and doc["metadata"]["mode"] == "capability"
    assert doc["metadata"]["capability"]["mode"] == "per_problem"
    assert doc["metadata"]["capability"]["dropped_problems"] == [f"q{j}" for j in range(200, 205)]
    iv = cap["intervals"]["params"]
    # Problem-to-problem spread (σ=0.5 over 200 problems) puts ~4% on α; k is set by ε: ~0.005.
    assert iv["alpha"]["lo"] <= ALPHA <= iv["alpha"]["hi"] and iv["k"]["lo"] <= K <= iv["k"]["hi"]
    assert abs(iv["alpha"]["estimate"] - ALPHA) < 0.15 and abs(iv["k"]["estimate"] - K) < 0.02
    assert iv["alpha"]["hi"] - iv["alpha"]["lo"] < 0.5  # an interval, not the whole line


def test_aggregate_pass_rates_are_fitted_by_resampling_points(tmp_path, capsys):
    rng = np.random.default_rng(1)
    C = np.repeat(C_GRID, 2)  # two seeds per size
    p = np.exp(-ALPHA * C**-K * np.exp(0.05 * rng.standard_normal(len(C))))
    path = tmp_path / "agg.csv"
    path.write_text("C,pass_rate\n" + "".join(f"{c:.17g},{r:.17g}\n" for c, r in zip(C, p)) + f"{2e3},1\n")
    assert _fit(path, tmp_path / "fit", "--n_boot", "100") == 0
    printed = capsys.readouterr().out
    assert "points resampled" in printed and "left out 1 points with pass_rate 1" in printed
    iv = json.loads((tmp_path / "fit" / "fit.json").read_text())["fits"][0]["intervals"]["params"]
    assert iv["k"]["lo"] <= K <= iv["k"]["hi"] and iv["alpha"]["lo"] <= ALPHA <= iv["alpha"]["hi"]


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("C,pass_rate\n1,0.5\n2,1.5\n", "line 3", "column 'pass_rate': bad value '1.5', expected a number in (0, 1]"),
        ("C,pass_rate\n1,0.5\n2,0\n", "line 3", "bad value '0', expected a number in (0, 1]"),
        ("C,pass_rate\n1,0.5\nlots,0.6\n", "line 3", "column 'C': bad value 'lots'"),
        ("C,problem,pass_rate\n1,a,0.5\n2,a,\n", "line 3", "column 'pass_rate': missing value"),
        ("C,problem,rate\n1,a,0.5\n", "line 1", "missing column 'pass_rate'"),
        ("problem,pass_rate\na,0.5\n", "line 1", "missing column 'C'"),
        ("C,problem,pass_rate\n1,a,0.5\n1,a,0.6\n", "line 3", "problem 'a' has a second row at C = 1"),
        ("C,problem,pass_rate\n1,a,0.5\n1,b,0.5\n2,a,0.4\n", "", "problem 'b' has no row at C = 2"),
    ],
)
def test_bad_pass_rate_file_errors_name_file_line_and_column(tmp_path, capsys, text, where, says):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    assert _fit(path, tmp_path / "fit") == 2
    err = capsys.readouterr().err
    assert f"{path}{', ' + where if where else ''}: " in err and says in err


def test_too_few_solvable_problems_is_a_named_error(tmp_path, capsys):
    path = tmp_path / "hard.csv"
    rows = [f"{c},{q},{0.0 if q != 'a' else 0.5}" for c in (1, 2, 3, 4) for q in "abcd"]
    path.write_text("C,problem,pass_rate\n" + "\n".join(rows) + "\n")
    assert _fit(path, tmp_path / "fit") == 2
    err = capsys.readouterr().err
    assert f"{path}: cannot fit the capability law: only 1 problems have pass_rate > 0 at every C" in err


def test_reader_keeps_problem_ids_and_lines(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("compute,Problem,pass rate\n1,x,0\n\n2,x,0.25\n")
    data = read_pass_rates_csv(path)
    assert list(data["problem"]) == ["x", "x"] and list(data["line"]) == [2, 4]
    with pytest.raises(RunsFileError, match=r"line 2: column 'pass rate' \(pass_rate\): bad value '-1'"):
        path.write_text("C,pass rate\n1,-1\n")
        read_pass_rates_csv(path)
