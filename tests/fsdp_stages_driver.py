"""Several `python -m alignlab.cli` commands, one after another, in ONE launch, for tests/test_fsdp.py:
starting the interpreters of a 2-process launch costs more than a tiny stage's run, so the stages
whose FSDP2 runs the tests compare share one. Commands are separated by ':::'; the pseudo-command
`sampler MODEL OUT` checks the lockstep sampler (:func:`sampler_check`).
Run it as: accelerate launch ... tests/fsdp_stages_driver.py sft --key value ::: reward --key value
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from alignlab.cli import main


def commands(argv: list[str]) -> list[list[str]]:
    out: list[list[str]] = [[]]
    for arg in argv:
        if arg == ":::":
            out.append([])
        else:
            out[-1].append(arg)
    return [c for c in out if c]


def sampler_check(model_path: str, out: str) -> None:
    """Each rank samples its own prompts (rank 1 fewer: fewer batches, and none at all the second time) with
    its own seed, from the model sharded and from a whole copy; a quarter of the vocabulary counts as EOS, so rows
    and ranks stop at different steps. Writes OUT.rank<r>.json: whether the two samples are the same."""
    import torch
    from accelerate import Accelerator

    from alignlab import fsdp
    from alignlab.models.load import load_causal_lm, load_tokenizer
    from alignlab.rollout.kv_sampler import sample_with_kv_cache

    acc = Accelerator(cpu=True)  # the process group
    rank, tok = acc.process_index, load_tokenizer(model_path)
    plain, sharded = load_causal_lm(model_path), load_causal_lm(model_path)
    fsdp.shard(sharded, acc.device)
    eos = list(range(0, len(tok), 4))
    prompts = [[tok.bos_token_id] + tok(f"Where does {n} live?")["input_ids"] for n in ("Bruk", "Zel", "Mora", "Tib")]
    report = {}
    for name, mine in (("uneven", prompts if rank == 0 else prompts[:1]), ("empty", prompts if rank == 0 else [])):
        a, b = (
            sample_with_kv_cache(m, tok, mine, 10, 1.0, batch_size=2, eos_token_id=eos, seed=7 + rank)
            for m in (sharded, plain)
        )
        same = a is None if not mine else torch.equal(a.response, b.response)
        report[name] = {"same": same, "lengths": [] if a is None else a.response_mask.sum(-1).tolist()}
    Path(f"{out}.rank{rank}.json").write_text(json.dumps(report))


if __name__ == "__main__":
    for command in commands(sys.argv[1:]):
        if command[0] == "sampler":
            sampler_check(*command[1:])
        elif code := main(command):
            sys.exit(code)
