"""The report's over-optimisation table says why a curve shows no fall, not only that it shows none."""

from alignlab.report.overoptimization_study import _check_cells

BASE = {
    "heldout_r2": {"r2": 0.91},
    "gold_fall": {"mean": 0.02, "lo": 0.01, "hi": 0.03},
    "falls": True,
    "proxy_rises": True,
    "stalled": False,
    "peak_point": 3,
    "last_point": 9,
}


def _check(**over):
    return _check_cells({**BASE, **over})


def test_fall_cells_tell_a_fall_a_stalled_policy_and_a_peak_at_the_end_apart():
    assert _check() == ["0.91", "yes: 0.020 [0.010, 0.030]"]
    zero = {"mean": 0.0, "lo": 0.0, "hi": 0.0}
    stalled = _check(falls=False, proxy_rises=False, stalled=True, gold_fall=zero)[1]
    assert stalled.startswith("no (gold ends at its peak's value on every prompt")
    assert _check(falls=False, proxy_rises=False, peak_point=9)[1].startswith("no (gold is highest at the last point)")
    assert _check(falls=False, heldout_r2={"r2": None})[0] == "–"
    # a summary written before "stalled" existed still reads
    old = {k: v for k, v in BASE.items() if k not in ("stalled", "peak_point", "last_point")}
    assert _check_cells({**old, "falls": False})[1].startswith("no:")


def test_the_r2_a_true_law_would_score_shows_only_when_measured():
    from alignlab.report.overoptimization_study import _checks_table

    class Doc:
        def table(self, head, rows):
            self.head, self.rows = head, rows

        def p(self, text):
            self.text = text

    sims = {"4_draws": {"median": 0.62, "lo": -0.8, "hi": 0.95}, "1_draw": {"median": 0.21, "lo": -3.0, "hi": 0.9}}
    checks = {"bon": {"rm": BASE}, "rl": {"rm": {**BASE, "r2_if_law_true": sims}}}
    doc = Doc()
    _checks_table(doc, checks, {"rm": {}}, 4)
    assert doc.head[-1] == "PPO: R² if the law were true (4 draws)"
    assert doc.rows[0][-1] == "0.62 [-0.80, 0.95]; one draw 0.21" and "sampling noise" in doc.text
    # several runs per RM add the R² a true law scores with the runs' spread
    runs = {"runs": {"median": 0.4, "lo": -2.0, "hi": 0.9}}
    _checks_table(doc, {"bon": {"rm": BASE}, "rl": {"rm": {**BASE, "r2_if_law_true": {**sims, **runs}}}}, {"rm": {}}, 4)
    assert doc.rows[0][-1] == "0.62 [-0.80, 0.95]; one draw 0.21; runs' spread 0.40 [-2.00, 0.90]"
    _checks_table(doc, {"bon": {"rm": BASE}, "rl": {"rm": {**BASE, "r2_if_law_true": runs}}}, {"rm": {}}, 1)
    assert doc.head[-1] == "PPO: R² if the law were true" and doc.rows[0][-1] == "runs' spread 0.40 [-2.00, 0.90]"
    # a study with one draw per prompt and one run has no noise measured: the table keeps its five columns
    _checks_table(doc, {"bon": {"rm": BASE}, "rl": {"rm": BASE}}, {"rm": {}}, 1)
    assert len(doc.head) == 5 and all(len(r) == 5 for r in doc.rows) and "sampling noise" not in doc.text


def test_the_intro_says_how_many_runs_and_draws_each_ppo_point_holds():
    from alignlab.report.overoptimization_study import _seeds

    assert _seeds({"ppo": {}}) == ""  # a study saved before either setting existed
    both = _seeds({"ppo": {"seeds": 4, "eval_draws": 4}})
    assert "4 runs per RM" in both and "samples every prompt 4 times (error bars" in both
