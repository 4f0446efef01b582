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
