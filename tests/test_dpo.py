"""DPO on tiny random models: log 2 at init, one step lowers the batch loss, ranked lists give all
pairs with one forward per response, and end-to-end runs (tiny Llama and GPT-2; preference and
ranked JSONL) including an exact resume."""

from __future__ import annotations

import math
import shutil

import pytest
import torch

from alignlab.config import apply
from alignlab.data.load import load_dataset_any
from alignlab.models.load import disable_dropout, load_causal_lm
from alignlab.outputs import read_metrics
from alignlab.stages import dpo
from fixtures_rlhf import rlhf_inputs  # noqa: F401


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models: one thread is as fast, and far faster when other jobs share the CPU."""
    from alignlab.training import cpu_threads

    with cpu_threads(1):
        yield


def _cfg(inp, kind, data, out, **kw):
    base = dict(
        policy=inp[f"{kind}_policy"],
        data=inp[data],
        eval_split="",
        world_dir="",
        eval={"data": inp["prompts"], "prompts": 4, "max_new_tokens": 6},
        max_steps=2,
        batch_size=4,
        optim={"warmup_steps": 0},
        run={"checkpoint_interval": 0, "log_interval": 1, "tensorboard": False, "device": "cpu"},
        output_dir=str(out),
        max_len=64,
    )
    return apply(apply(dpo.DPOConfig(), base, "test"), kw, "test")


def _batch(inp, data, n=6):
    groups = dpo.ranked_groups(load_dataset_any(inp[data]), inp["tokenizer"], 64, data)[:n]
    return dpo.collate(groups, inp["tokenizer"].pad_token_id)


def test_ranked_lists_become_all_pairs(rlhf_inputs):
    ids, mask, labels, chosen, rejected = _batch(rlhf_inputs, "ranked", n=2)  # K=3 each: 6 sequences, 2*3 pairs
    assert ids.shape[0] == 6
    assert chosen.tolist() == [0, 0, 1, 3, 3, 4] and rejected.tolist() == [1, 2, 2, 4, 5, 5]
    assert ((labels != -100).sum(-1) > 0).all()  # every response has supervised tokens; prompts masked


@pytest.mark.parametrize("data", ["preference", "ranked"])
def test_loss_is_log2_at_init_and_one_step_lowers_it(rlhf_inputs, data):
    policy = load_causal_lm(rlhf_inputs["llama_policy"])
    ref = load_causal_lm(rlhf_inputs["llama_policy"]).eval()
    disable_dropout(policy)
    ids, mask, labels, c, r = _batch(rlhf_inputs, data)
    with torch.no_grad():
        ref_lp = dpo.sequence_logps(ref, ids, mask, labels)
    loss0, st = dpo.batch_loss(policy, ref_lp, ids, mask, labels, c, r, beta=0.1)
    assert loss0.item() == pytest.approx(math.log(2), abs=1e-6) and st["reward_margin"] == 0.0
    opt = torch.optim.SGD(policy.parameters(), lr=0.5)
    loss0.backward()
    opt.step()
    loss1, st1 = dpo.batch_loss(policy, ref_lp, ids, mask, labels, c, r, beta=0.1)
    assert loss1.item() < loss0.item() and st1["reward_margin"] > 0


@pytest.mark.parametrize(
    "kind,data", [("llama", "preference"), ("llama", "ranked"), ("gpt2", "preference"), ("gpt2", "ranked")]
)
def test_end_to_end(rlhf_inputs, tmp_path, kind, data):
    out = tmp_path / f"{kind}_{data}"
    s = dpo.run(_cfg(rlhf_inputs, kind, data, out, eval_split="train", eval_max_prompts=8))
    assert s["steps"] == 2 and math.isfinite(s["final_train_loss"]) and 0 <= s["val_reward_accuracy"] <= 1
    assert "heldout_eos_frac_final" in s
    logged = [m for m in read_metrics(out) if "reward_accuracy" in m]
    assert len(logged) == 2 and logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(out)


def test_resume_matches_uninterrupted(rlhf_inputs, tmp_path):
    full = tmp_path / "full"
    cfg = _cfg(
        rlhf_inputs,
        "llama",
        "ranked",
        full,
        max_steps=4,
        eval={"data": ""},
        run={"checkpoint_interval": 2},
        optim={"lr": 1e-3},
    )
    dpo.run(cfg)
    resumed = tmp_path / "resumed"
    shutil.copytree(full, resumed)
    dpo.run(apply(cfg, {"output_dir": str(resumed), "run": {"resume": True}}, "test"))

    def lines(d):
        return [{k: v for k, v in m.items() if k != "time"} for m in read_metrics(d)]

    assert lines(resumed) == lines(full)


def test_tied_responses_give_no_dpo_pair(rlhf_inputs, tmp_path):  # noqa: F811
    """A person's ranking with ties (alignlab label writes ``ranks``): DPO prefers only strictly better responses,
    and a prompt whose responses are all tied gives no pair at all."""
    import datasets

    rows = [
        {"prompt": "p1", "responses": ["a", "b", "c"], "ranks": [1, 2, 2]},
        {"prompt": "p2", "responses": ["d", "e"], "ranks": [1, 1]},
        {"prompt": "p3", "responses": ["f", "g", "h"]},
    ]
    groups = dpo.ranked_groups(datasets.Dataset.from_list(rows), rlhf_inputs["tokenizer"], 64, "src")
    assert len(groups) == 2  # p2: all tied
    assert dpo.group_pairs(groups[0]) == [(0, 1), (0, 2)] and dpo.n_pairs(groups[0]) == 2
    assert dpo.group_pairs(groups[1]) == [(0, 1), (0, 2), (1, 2)]  # no ranks: a strict ranking by order
    _, _, _, chosen, rejected = dpo.collate(groups, rlhf_inputs["tokenizer"].pad_token_id)
    assert chosen.tolist() == [0, 0, 3, 3, 4] and rejected.tolist() == [1, 2, 4, 5, 5]
