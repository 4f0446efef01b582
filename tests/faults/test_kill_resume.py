"""Kill every training stage at random points, including inside a checkpoint write, resume, and
require the weights and summary of a run that was never stopped.

At CI scale each stage is killed at 5 points drawn from an uninterrupted run (every other resumed
run is killed again). The larger campaign (``scripts/fault_campaign.sh``) sets ``ALIGNLAB_FAULT_POINTS=all``
(every point the run reaches) and ``ALIGNLAB_FAULT_REPORT`` to a JSONL file that collects the counts.
"""

from __future__ import annotations

import json
import os
import random
import shutil

import pytest
from fault_harness import draw_points, kill_and_resume, run_forked, summary_differences, weight_differences
from fault_stages import STAGES_UNDER_TEST

from fixtures_pipeline import smoke_world  # noqa: F401
from fixtures_rlhf import rlhf_inputs  # noqa: F401

# kill points per stage: a number drawn at random, or "all" (every point an uninterrupted run reaches)
KILL_POINTS = os.environ.get("ALIGNLAB_FAULT_POINTS", "5")


@pytest.mark.parametrize("name", list(STAGES_UNDER_TEST))
def test_killed_and_resumed_runs_end_as_the_uninterrupted_run(name, request, tmp_path):
    fixture, build = STAGES_UNDER_TEST[name]
    run = build(request.getfixturevalue(fixture))
    timeline_file = tmp_path / "timeline.json"
    assert run_forked(lambda: run(tmp_path / "whole", False), timeline=timeline_file) == 0
    timeline = json.loads(timeline_file.read_text())
    assert timeline.count("step") >= 4 and timeline.count("checkpoint") >= 4, timeline  # room to kill in
    n = len(timeline) if KILL_POINTS == "all" else int(KILL_POINTS)
    points = draw_points(random.Random(name), timeline, n)
    fired, lost = 0, []
    for i, point in enumerate(points):
        out = tmp_path / f"killed{i}"
        kills = [point] + ([("step", 1)] if i % 2 else [])  # every other trial also kills the resumed run
        try:
            fired += kill_and_resume(run, out, kills)
            wrong = weight_differences(tmp_path / "whole", out) + summary_differences(tmp_path / "whole", out)
        except AssertionError as e:  # a resume that crashed
            wrong = [str(e)]
        if wrong:
            lost.append(f"kills at {kills}: {wrong[:3]}")
        shutil.rmtree(out, ignore_errors=True)
    if os.environ.get("ALIGNLAB_FAULT_REPORT"):
        with open(os.environ["ALIGNLAB_FAULT_REPORT"], "a") as f:
            row = {"stage": name, "kill_points": len(points), "kills": fired, "lost": len(lost), "why": lost}
            f.write(json.dumps(row) + "\n")
    assert not lost, f"{name}: runs that did not end as the uninterrupted run:\n" + "\n".join(lost)
    assert fired >= len(points), f"only {fired} of {len(points)} kill points were reached"
