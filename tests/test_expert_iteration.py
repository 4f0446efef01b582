"""Expert iteration on tiny models: the written data hold exactly each prompt's highest-scored sample, the SFT
stage is run (through the registry) on that file from the SFT policy, the tuned policy is published, and a
resumed run reuses the selection and the finished SFT run."""

from __future__ import annotations

import hashlib
import json

import pytest

from alignlab.config import apply
from alignlab.stages import expert_iteration as ei
from alignlab.training import cpu_threads
from fixtures_rlhf import rlhf_inputs  # noqa: F401


@pytest.fixture(autouse=True)
def _one_thread():
    with cpu_threads(1):
        yield


def _cfg(inp, out, **kw):
    settings = dict(
        policy=inp["llama_policy"],
        reward_model=inp["llama_rm"],
        data=inp["prompts"],
        world_dir="",
        prompts=24,
        n=3,
        max_new_tokens=6,
        epochs=1,
        batch_size=8,
        judge="loss",
        run={"device": "cpu", "tensorboard": False},
        output_dir=str(out),
    )
    return apply(ei.ExpertIterationConfig(), {**settings, **kw}, "test")


def _preferred(record: dict, text: str) -> float:
    """The stub's score: arbitrary but fixed, so the test knows which sample it prefers."""
    return int(hashlib.sha256(f"{record['prompt']}|{text}".encode()).hexdigest()[:8], 16) / 2**32


class _Spy:
    """A stub scorer that remembers what it scored, and the SFT configs the stage ran."""

    def __init__(self, monkeypatch):
        self.scored, self.sft = [], []
        real = ei.run_stage

        def run_stage(name, cfg):
            self.sft.append((name, cfg))
            return real(name, cfg)

        monkeypatch.setattr(ei, "run_stage", run_stage)

    def __call__(self, records, texts):
        self.scored.append((records, texts))
        return [_preferred(r, t) for r, t in zip(records, texts)]


def test_trains_on_exactly_the_argmax_samples(rlhf_inputs, tmp_path, monkeypatch):
    spy, out = _Spy(monkeypatch), tmp_path / "ei"
    # no missing-EOS penalty: the tiny random policy rarely ends, and the penalty would tie its samples
    summary = ei.run(_cfg(rlhf_inputs, out, no_eos_penalty=None), scorer=spy)

    ((records, texts),) = spy.scored  # every sample scored once
    assert len(texts) == 24 * 3
    prompts = [json.loads(line)["prompt"] for line in open(rlhf_inputs["prompts"])][:24]
    best = []
    for p in range(24):  # the highest-scored of each prompt's 3 samples (the first on a tie)
        group = list(zip(records[3 * p : 3 * p + 3], texts[3 * p : 3 * p + 3]))
        assert [r["prompt"] for r, _ in group] == [prompts[p]] * 3
        best.append(max(group, key=lambda rt: _preferred(*rt))[1])
    written = [json.loads(line) for line in (out / "best_of_n.jsonl").read_text().splitlines()]
    assert [w["prompt"] for w in written] == prompts and set(written[0]) == {"prompt", "completion"}
    assert [w["completion"] for w in written] == best
    assert best != [texts[3 * p] for p in range(24)]  # not merely each prompt's first sample
    assert len({t for t in texts}) > 24  # the 3 samples of a prompt differ: a real choice was made

    ((name, sft_cfg),) = spy.sft  # the SFT stage, from the SFT policy, on that file
    assert (
        name == "sft" and sft_cfg.data == str(out / "best_of_n.jsonl") and sft_cfg.model == rlhf_inputs["llama_policy"]
    )
    assert sft_cfg.output_dir == str(out / "sft") and sft_cfg.epochs == 1 and sft_cfg.optim.lr == 1e-4
    assert (out / "sft" / "summary.json").is_file()
    assert (out / "model.safetensors").is_file() and (out / "tokenizer.json").is_file()  # the tuned policy
    from alignlab.models.load import load_causal_lm

    load_causal_lm(str(out))
    assert summary["n"] == 3 and summary["kl_best_of_n"] == 0.4319  # log 3 - 2/3
    assert summary["best_score_mean"] >= summary["score_mean"]
    assert summary["sft"]["train_examples"] < 24 and summary["prompts"] == 24  # the rest validate
    assert set(summary["best_of_n_by_n"]) == {"1", "2", "3"}


def test_resume_reuses_the_selection_and_the_finished_sft_run(rlhf_inputs, tmp_path, monkeypatch):
    out = tmp_path / "ei"
    cfg = _cfg(rlhf_inputs, out, prompts=12)
    first = ei.run(cfg, scorer=_Spy(monkeypatch))
    spy = _Spy(monkeypatch)
    again = ei.run(apply(cfg, {"run": {"resume": True}}, "test"), scorer=spy)
    assert spy.scored == [] and spy.sft == []  # nothing sampled, scored or trained again
    assert {k: v for k, v in again.items() if k != "seconds"} == {k: v for k, v in first.items() if k != "seconds"}


def test_the_reward_model_picks_and_judges_by_default(rlhf_inputs, tmp_path):
    """No stub: the RM scores the samples and the SFT stage keeps its epoch by the RM's reward."""
    out = tmp_path / "rm"
    summary = ei.run(_cfg(rlhf_inputs, out, prompts=12, judge="reward_model"))
    assert summary["sft"]["selected_by"] == "val_reward" and summary["sft"]["base_val_reward"] is not None
    assert (out / "best_of_n.json").is_file() and (out / "model.safetensors").is_file()


def test_registered_with_the_cli():
    from alignlab.stages.registry import STAGES

    cls, presets, run = STAGES["expert-iteration"].load()
    assert cls is ei.ExpertIterationConfig and run is ei.run and {"smoke", "default"} <= set(presets)
