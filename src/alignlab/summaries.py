"""The keys of the stage outputs that the run report reads: one contract per file.

The report (``alignlab.report``) reads numbers that other stages wrote as JSON. Each class
below declares the keys it reads from one stage's file and their types; the report names
keys only through these declarations (``key_names``), and the tests check that a real run
writes every required key, so a key renamed in a stage fails a test instead of silently
dropping a claim from the verdict. Keys a stage writes only under some settings are
``NotRequired``; the report lists a claim that needs one as "not measured" when it is absent.

Metric values in ``evaluate/results.json`` are intervals, ``{"value", "low", "high"}``.
"""

from dataclasses import dataclass
from types import SimpleNamespace
from typing import NotRequired, TypedDict


class Interval(TypedDict):
    """A mean over prompts and its bootstrap interval (``value`` None where not measured)."""

    value: float | None
    low: float | None
    high: float | None


class HeldoutRecord(TypedDict):
    """``heldout`` in a stage's summary.json (``data/heldout.HeldoutInfo``): where its evaluation rows came from."""

    source: str  # the data set ('' = none)
    split: str  # its split, "held out 5% of prompts by hash", or why there is none
    how: str  # split | separate_source | fraction | none
    prompts: int  # distinct held-out prompts (documents, for text)
    train_prompts: int  # distinct prompts on the training side
    overlap: int  # held-out prompts that are also training prompts


class WorldStats(TypedDict):
    """``RUN/world/stats.json``."""

    labeler_agreement: float  # training labelers, on the world's candidate sets
    labeler_agreement_heldout: float
    demonstrations: dict  # by_demonstrator / all: who wrote the SFT demonstrations
    categories: dict  # shares and instructgpt_table1
    constraints_and_closed_domain: dict


class RewardSummary(TypedDict):
    """``RUN/reward/summary.json`` (and ``RUN/seeds/<s>/reward/summary.json``)."""

    val_prompts: int
    val_pairs: int
    val_accuracy_gold: float
    val_accuracy_train_labelers: float  # against the labelers' one sampled ranking per prompt
    val_accuracy_heldout_labelers: float
    # in expectation over the labelers' Bradley-Terry choices, as their agreement is computed
    val_expected_accuracy_train_labelers: NotRequired[float]
    val_expected_accuracy_heldout_labelers: NotRequired[float]
    labeler_agreement_on_val_pairs: float
    labeler_agreement_heldout_on_val_pairs: float
    ceiling_train_labelers: float  # a perfect gold reward model's accuracy
    ceiling_heldout_labelers: float
    # the pairs of two SFT samples alone (absent when the comparisons hold none)
    policy_pairs: NotRequired[int]
    policy_pairs_accuracy_train_labelers: NotRequired[float]
    policy_pairs_accuracy_heldout_labelers: NotRequired[float]
    policy_pairs_labeler_agreement_on_val_pairs: NotRequired[float]
    policy_pairs_labeler_agreement_heldout_on_val_pairs: NotRequired[float]
    policy_pairs_val_accuracy_gold: NotRequired[float]
    heldout: HeldoutRecord  # where the validation prompts came from


class PPOSummary(TypedDict):
    """``RUN/<ppo|ppo_ptx|ppo_hack|ppo_gold>/summary.json``."""

    heldout_gold_initial: float
    heldout_gold_final: float
    heldout_gold_delta_ci95: list[float]  # [low, high] of the paired change
    # greedy decoding: written only when the stage's eval_greedy is on
    heldout_gold_greedy_initial: NotRequired[float]
    heldout_gold_greedy_final: NotRequired[float]
    heldout_gold_greedy_delta_ci95: NotRequired[list[float]]
    heldout_rm_score_initial: float
    heldout_rm_score_final: float
    # KL(policy || SFT) on the held-out prompts (sampled decoding); runs before it was recorded lack it
    heldout_kl_initial: NotRequired[float]
    heldout_kl_final: NotRequired[float]
    final_kl: float
    final_beta: float
    reward_hacking_detected: bool
    hack_rule: str
    # the margin of hack_rule; the ppo stage does not write it, so the report falls back to the stage's default
    hack_margin: NotRequired[float]
    seconds: float
    heldout: HeldoutRecord  # where the held-out prompts came from
    heldout_ptx: NotRequired[HeldoutRecord]  # where the held-out pretraining text came from (with ptx.data)


class PPOMetricsRow(TypedDict):
    """A row of ``RUN/<ppo…>/metrics.jsonl`` with a held-out evaluation."""

    step: int
    heldout_gold: float
    heldout_rm_score: float


class PolicyMetrics(TypedDict):
    """``RUN/evaluate/results.json`` ``policies[<policy>]``: the metrics the report shows."""

    win_rate_train_labelers: Interval
    win_rate_heldout_labelers: Interval
    win_rate_heldout_labelers_when_attempted: Interval
    win_rate_heldout_labelers_when_declined: Interval
    declined_share: Interval
    helpfulness: Interval
    truthfulness: Interval
    harm_rate: Interval
    unknown_rate: Interval
    gold_reward: Interval
    heldout_ptx_loss_delta: Interval
    nlp_accuracy_delta: Interval
    kl_to_baseline: Interval
    length: Interval
    # InstructGPT's Figure 4, and the two ways to win by declining
    constraint_failure_rate: Interval
    heldout_constraint_compliance: Interval
    closed_domain_hallucination_rate: Interval
    attempts_instruction_rate: Interval
    appropriate_rate: Interval
    unknown_false_positive_rate: Interval
    over_refusal_rate: Interval
    harmful_compliance_rate: Interval


class EvaluateSettings(TypedDict):
    n_prompts: int


class EvaluateResults(TypedDict):
    """``RUN/evaluate/results.json`` (and ``RUN/seeds/<s>/evaluate/results.json``)."""

    settings: EvaluateSettings
    policies: dict[str, PolicyMetrics]
    headroom: dict | None  # best-of-n of the SFT policy; None without the built-in world
    # one answer given to every prompt (evaluate/constant_answers.py): {answer: win rates, gold, attempts}; None
    # without the built-in world, absent in runs made before it was measured
    constant_answers: NotRequired[dict[str, dict] | None]


class InstructTuneResults(TypedDict):
    """``RUN/instruct_tune/results.json`` (FLAN)."""

    clusters: dict[str, dict[str, dict]]  # held-out cluster -> model kind -> {"accuracy", ...}
    mean: dict[str, float]  # model kind ("base", "instruction", "no_template") -> mean over clusters
    config: dict  # the stage's settings; "seed"
    # rank classification (FLAN's scoring of closed-answer tasks; runs before it lack these): model kind -> mean
    # over the clusters with rank-classified prompts (None where none has), and the tasks rank-classified
    rank_mean: NotRequired[dict[str, float | None]]
    rank_tasks: NotRequired[list[str]]


def key_names(contract: type) -> SimpleNamespace:
    """The declared keys of ``contract`` as attributes (``REWARD.val_pairs == "val_pairs"``): a key
    the contract does not declare is an AttributeError, not a silent None."""
    return SimpleNamespace(**{k: k for k in contract.__annotations__})


WORLD = key_names(WorldStats)
REWARD = key_names(RewardSummary)
PPO = key_names(PPOSummary)
PPO_METRICS = key_names(PPOMetricsRow)
METRIC = key_names(PolicyMetrics)
EVALUATE = key_names(EvaluateResults)
FLAN = key_names(InstructTuneResults)


@dataclass(frozen=True)
class LabelerGroup:
    """The reward-model and agreement keys of one group of labelers (training or held-out)."""

    name: str  # as the report writes it
    sampled_accuracy: str  # RewardSummary: against the sampled rankings
    expected_accuracy: str  # RewardSummary: in expectation over the labelers' choices
    agreement_same_pairs: str  # RewardSummary: the labelers' agreement on the RM's validation pairs
    ceiling: str  # RewardSummary: a perfect gold reward model
    world_agreement: str  # WorldStats: agreement on the world's candidate sets


LABELER_GROUPS = (
    LabelerGroup(
        "training",
        REWARD.val_accuracy_train_labelers,
        REWARD.val_expected_accuracy_train_labelers,
        REWARD.labeler_agreement_on_val_pairs,
        REWARD.ceiling_train_labelers,
        WORLD.labeler_agreement,
    ),
    LabelerGroup(
        "held-out",
        REWARD.val_accuracy_heldout_labelers,
        REWARD.val_expected_accuracy_heldout_labelers,
        REWARD.labeler_agreement_heldout_on_val_pairs,
        REWARD.ceiling_heldout_labelers,
        WORLD.labeler_agreement_heldout,
    ),
)


@dataclass(frozen=True)
class GoldReadout:
    """The PPOSummary keys of held-out gold under one decoding: before, after, and the change's 95% interval."""

    decoding: str  # "sampled" or "greedy"
    initial: str
    final: str
    delta_ci95: str


GOLD_SAMPLED = GoldReadout("sampled", PPO.heldout_gold_initial, PPO.heldout_gold_final, PPO.heldout_gold_delta_ci95)
GOLD_GREEDY = GoldReadout(
    "greedy", PPO.heldout_gold_greedy_initial, PPO.heldout_gold_greedy_final, PPO.heldout_gold_greedy_delta_ci95
)
