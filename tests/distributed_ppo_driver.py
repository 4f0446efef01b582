"""`python -m alignlab.cli ppo ...` with one change, for tests/test_distributed.py: rollouts are
sampled for the GLOBAL batch on every rank, from one seeded stream, and each rank keeps its share.

Why: a normal multi-process run samples each rank's share from its own stream (seed + rank), so
its episodes differ from a single-process run's and the two cannot be compared number by
number. With this rollout both runs train on the very same episodes (the weights are the same
on every rank, so every rank samples the same global batch), and any difference left comes
from splitting the scoring and the update over ranks -- which is what the test checks.
Run it as: accelerate launch ... tests/distributed_ppo_driver.py ppo --key value ...
"""

from __future__ import annotations

import sys

from alignlab.distributed import gather_shares, rank_share
from alignlab.rollout.generate import generate_responses
from alignlab.rollout.layout import Rollout
from alignlab.stages import ppo


def global_batch_rollout(self: ppo.PPOTrainer, prompt_ids: list[list[int]], iteration: int) -> Rollout:
    c = self.cfg
    everyone = gather_shares(self.acc, prompt_ids)  # the global batch, in the single-process order
    ro = generate_responses(
        self.acc.unwrap_model(self.policy),
        self.tok,
        everyone,
        max_new_tokens=c.rollout.max_new_tokens,
        temperature=c.rollout.temperature,
        batch_size=c.rollout.gen_batch_size,
        seed=c.run.seed * 1_000_003 + iteration * 7919,
    )
    mine = rank_share(range(len(everyone)), self.acc)
    return Rollout(
        ro.query[mine],
        ro.query_mask[mine],
        ro.response[mine],
        ro.response_mask[mine],
        ro.ended_with_eos[mine],
        [ro.texts[i] for i in mine],
        None,
    )


if __name__ == "__main__":
    ppo.PPOTrainer.rollout = global_batch_rollout
    from alignlab.cli import main

    sys.exit(main(sys.argv[1:]))
