"""The built-in world: invented facts, a flawed pretraining corpus, instruction tasks in
9 clusters, programmatic labelers with personas, and InstructGPT-shaped splits.

    from alignlab.world import WorldConfig, build_world, write_world, load_world
    world = build_world(WorldConfig(seed=0))
    write_world(world, "runs/world")
    world = load_world("runs/world")
    score_response(world, record, "Bruk lives in Tamo.")   # record: a row of sft/rm/ppo/test
"""

from alignlab.world.agreement import labeler_agreement
from alignlab.world.build import build_world
from alignlab.world.candidates import candidate_responses
from alignlab.world.claims import Claim, extract_claims
from alignlab.world.config import PRESETS, WorldConfig
from alignlab.world.labelers import COMPONENTS, score_response
from alignlab.world.personas import (
    gold_parts,
    gold_reward,
    gold_weights,
    heldout_gold_reward,
    persona_utility,
    preference_probability,
    rank_responses,
    ranking_pairs,
    sample_preference,
)
from alignlab.world.storage import load_data, load_world, write_world
from alignlab.world.tasks import CLUSTERS, TASKS
from alignlab.world.world import World

__all__ = [
    "CLUSTERS",
    "COMPONENTS",
    "Claim",
    "PRESETS",
    "TASKS",
    "World",
    "WorldConfig",
    "build_world",
    "candidate_responses",
    "extract_claims",
    "gold_parts",
    "gold_reward",
    "gold_weights",
    "heldout_gold_reward",
    "labeler_agreement",
    "load_data",
    "load_world",
    "persona_utility",
    "preference_probability",
    "rank_responses",
    "ranking_pairs",
    "sample_preference",
    "score_response",
    "write_world",
]
