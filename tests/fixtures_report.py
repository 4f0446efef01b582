"""A complete synthetic run folder for the report's verdict, written through the summary contracts.

``SyntheticRun`` holds one instance of each contract (``alignlab.summaries``) filled with
plain numbers; a test edits the fields it is about and calls ``write(run_dir)``, then
``judge(run_dir, cfg)`` returns the verdict as ``{claim: (met, numbers)}``.

    from fixtures_report import SyntheticRun, judge, find
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from alignlab.report.build import ReportConfig, gather
from alignlab.report.verdict import verdict
from alignlab.summaries import (
    EvaluateResults,
    InstructTuneResults,
    Interval,
    PolicyMetrics,
    PPOMetricsRow,
    PPOSummary,
    RewardSummary,
    WorldStats,
)

POLICIES = ("base", "sft", "ppo", "ppo_ptx")


def interval(v: float, lo: float | None = None, hi: float | None = None) -> Interval:
    return Interval(value=v, low=v if lo is None else lo, high=v if hi is None else hi)


def policy_metrics(**values: float) -> PolicyMetrics:
    """Every metric the report reads, 0.5 unless given."""
    return PolicyMetrics(**{k: interval(values.get(k, 0.5)) for k in PolicyMetrics.__annotations__})


def ppo_summary(**values) -> PPOSummary:
    s = PPOSummary(
        heldout_gold_initial=0.5,
        heldout_gold_final=0.625,
        heldout_gold_delta_ci95=[0.0625, 0.1875],
        heldout_gold_greedy_initial=0.5,
        heldout_gold_greedy_final=0.625,
        heldout_gold_greedy_delta_ci95=[0.0625, 0.1875],
        heldout_rm_score_initial=0.0,
        heldout_rm_score_final=0.5,
        final_kl=1.0,
        final_beta=0.1,
        reward_hacking_detected=False,
        hack_rule="held-out RM score up and gold down",
        seconds=1.0,
    )
    s.update(values)
    return s


def reward_summary(**values) -> RewardSummary:
    s = RewardSummary(
        val_prompts=10,
        val_pairs=60,
        val_accuracy_gold=0.75,
        val_accuracy_train_labelers=0.625,
        val_accuracy_heldout_labelers=0.625,
        val_expected_accuracy_train_labelers=0.625,
        val_expected_accuracy_heldout_labelers=0.625,
        labeler_agreement_on_val_pairs=0.625,
        labeler_agreement_heldout_on_val_pairs=0.625,
        ceiling_train_labelers=0.75,
        ceiling_heldout_labelers=0.75,
    )
    s.update(values)
    return s


@dataclass
class SyntheticRun:
    world: WorldStats = field(
        default_factory=lambda: WorldStats(
            labeler_agreement=0.72,
            labeler_agreement_heldout=0.77,
            demonstrations={"by_demonstrator": {}, "all": {"mean_gold": 0.5, "careful_win_rate_heldout": 0.5}},
            categories={},
            constraints_and_closed_domain={},
        )
    )
    reward: RewardSummary = field(default_factory=reward_summary)
    ppo: PPOSummary = field(default_factory=ppo_summary)
    ppo_hack: PPOSummary = field(default_factory=lambda: ppo_summary(reward_hacking_detected=True))
    ppo_hack_metrics: list[PPOMetricsRow] = field(
        default_factory=lambda: [
            PPOMetricsRow(step=0, heldout_gold=0.5, heldout_rm_score=0.0),
            PPOMetricsRow(step=10, heldout_gold=0.75, heldout_rm_score=0.5),
            PPOMetricsRow(step=20, heldout_gold=0.5, heldout_rm_score=1.0),
        ]
    )
    policies: dict[str, PolicyMetrics] = field(default_factory=lambda: {p: policy_metrics() for p in POLICIES})
    flan: InstructTuneResults = field(
        default_factory=lambda: InstructTuneResults(
            clusters={"world_qa": {"base": {"accuracy": 0.25}, "instruction": {"accuracy": 0.5}}},
            mean={"base": 0.25, "instruction": 0.5, "no_template": 0.375},
            config={"seed": 0},
        )
    )

    def write(self, run_dir: Path) -> Path:
        files = {
            "world/stats.json": self.world,
            "reward/summary.json": self.reward,
            "ppo/summary.json": self.ppo,
            "ppo_hack/summary.json": self.ppo_hack,
            "evaluate/results.json": EvaluateResults(settings={"n_prompts": 10}, policies=self.policies, headroom=None),
            "instruct_tune/results.json": self.flan,
        }
        for rel, content in files.items():
            (run_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            (run_dir / rel).write_text(json.dumps(content))
        (run_dir / "ppo_hack" / "metrics.jsonl").write_text(
            "".join(json.dumps(r) + "\n" for r in self.ppo_hack_metrics)
        )
        return run_dir


def judge(run_dir: Path, cfg: ReportConfig | None = None) -> dict[str, tuple[bool | None, str]]:
    """The verdict of the run folder: claim -> (met, numbers)."""
    cfg = cfg or ReportConfig(run_dir=str(run_dir))
    return {claim: (met, numbers) for claim, met, numbers in verdict(gather(run_dir), cfg)}


def find(verdict: dict[str, tuple[bool | None, str]], phrase: str) -> tuple[bool | None, str]:
    """The one claim whose text contains ``phrase``."""
    hits = [c for c in verdict if phrase in c]
    assert len(hits) == 1, (phrase, hits)
    return verdict[hits[0]]
