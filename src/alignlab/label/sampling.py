"""K responses per prompt sampled from one or more policies, filled slot by slot as the compare stage fills them.

Slot j of a prompt comes from policy j mod n, so each policy writes about K/n of every prompt's responses
(InstructGPT's labelers ranked outputs of several models side by side). One model is in memory at a time.
Torch and transformers are imported here only, so serving a ranked file starts without them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CHUNK_PROMPTS = 64  # prompts per progress-bar step; each chunk has its own seed (rollout/k_samples.py)


def sample_responses(cfg: Any, prompts: list) -> list[list[str]]:
    """[prompt][slot] responses from ``cfg.policies`` (a ``LabelConfig``), seeded by ``cfg.seed`` and the policy."""
    from alignlab.models.load import load_policy
    from alignlab.rollout.k_samples import interleave, sample_n, slots_per_source
    from alignlab.training import resolve_device

    device = resolve_device(cfg.device)
    per_policy = []
    for j, (path, n) in enumerate(zip(cfg.policies, slots_per_source(cfg.k, len(cfg.policies)))):
        model, tok = load_policy(path, cfg.source.tokenizer, cfg.source.trust_remote_code, device)
        samples, _ = sample_n(
            model,
            tok,
            prompts,
            n,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens,
            batch_size=cfg.batch_size,
            chunk_prompts=CHUNK_PROMPTS,
            seed=cfg.seed + 1000 * j,
            desc=f"label: sampling [{j}: {Path(path).name}]",
        )
        per_policy.append(samples)
        del model
    return interleave(per_policy)[0]
