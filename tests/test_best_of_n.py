"""Best-of-n at inference on a tiny random policy: it keeps the highest-scored of each prompt's n samples,
scores every sample with its own prompt, applies the missing-EOS penalty, and records log n - (n-1)/n."""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np
import pytest

from alignlab.data.chat import encode_prompt
from alignlab.evaluate.best_of_n import BestOfN, best_of_n
from alignlab.evaluate.headroom import best_of_n_kl
from alignlab.models.load import load_causal_lm
from fixtures_rlhf import rlhf_inputs  # noqa: F401


def _rows(inp, n=5):
    rows = [json.loads(line) for line in open(inp["prompts"])][:n]
    return rows, [encode_prompt(inp["tokenizer"], r["prompt"]) for r in rows]


def _stub_score(record: dict, text: str) -> float:
    """A deterministic score that has nothing to do with the text's quality (so the pick is checkable)."""
    return int(hashlib.sha256(f"{record['prompt']}|{text}".encode()).hexdigest()[:8], 16) / 2**32


def test_keeps_the_highest_scored_sample_of_each_prompt(rlhf_inputs):
    rows, ids = _rows(rlhf_inputs)
    calls = []

    def scorer(records, texts):
        calls.append((records, texts))
        return [_stub_score(r, t) for r, t in zip(records, texts)]

    policy = load_causal_lm(rlhf_inputs["llama_policy"])
    result = best_of_n(policy, rlhf_inputs["tokenizer"], rows, ids, 4, scorer, max_new_tokens=6, seed=3)
    assert len(calls) == 1 and len(calls[0][1]) == 5 * 4  # every sample scored once, in one call
    records, texts = calls[0]
    assert records == [r for r in rows for _ in range(4)]  # ... each with its own prompt
    assert [texts[4 * p : 4 * p + 4] for p in range(5)] == result.texts
    for p, row in enumerate(rows):
        want = max(result.texts[p], key=lambda t, r=row: _stub_score(r, t))
        assert result.best_texts[p] == want
        assert result.best_scores[p] == max(_stub_score(row, t) for t in result.texts[p])
    assert len({t for row in result.texts for t in row}) > 5  # the samples differ: the pick is a real choice
    s = result.summary()
    assert s["n"] == 4 and s["kl_best_of_n"] == round(math.log(4) - 3 / 4, 4) == 0.6363
    assert s["best_score_mean"] >= s["score_mean"]
    # the same prompts, n and seed sample the same responses
    again = best_of_n(policy, rlhf_inputs["tokenizer"], rows, ids, 4, scorer, max_new_tokens=6, seed=3)
    assert again.texts == result.texts


def test_missing_eos_penalty_replaces_the_score_of_unfinished_samples(rlhf_inputs):
    rows, ids = _rows(rlhf_inputs, 3)
    policy = load_causal_lm(rlhf_inputs["llama_policy"])
    result = best_of_n(
        policy, rlhf_inputs["tokenizer"], rows, ids, 3, lambda r, t: [5.0] * len(t), max_new_tokens=4,
        no_eos_penalty=-7.0,
    )  # fmt: skip
    assert (result.eos == 0).any()  # a random tiny policy rarely ends within 4 tokens
    assert (result.scores[result.eos == 0] == -7.0).all() and (result.scores[result.eos == 1] == 5.0).all()


def test_ties_go_to_the_first_sample_and_by_n_uses_all_samples():
    r = BestOfN(4, [["a", "b", "c", "d"]], np.array([[1.0, 4.0, 4.0, 2.0]]), np.ones((1, 4)), np.array([1]))
    assert r.best_texts == ["b"]
    # E[max of 2 of {1, 2, 4, 4}] over the 6 pairs: (2 + 4 + 4 + 4 + 4 + 4) / 6
    table = r.by_n([1, 2, 4])
    assert table[1]["score"] == 2.75 and table[2]["score"] == round(22 / 6, 4) and table[4]["score"] == 4.0
    assert [table[n]["kl_best_of_n"] for n in (1, 2, 4)] == [0.0, round(math.log(2) - 0.5, 4), 0.6363]


@pytest.mark.parametrize(("n", "kl"), [(1, 0.0), (4, 0.6363), (16, 1.8351)])
def test_best_of_n_kl_is_log_n_minus_n_minus_1_over_n(n, kl):
    assert round(best_of_n_kl(n), 4) == kl


def test_a_reward_model_judge_is_a_scorer(rlhf_inputs):
    from alignlab.evaluate.judges import RewardModelJudge
    from alignlab.models.reward_model import load_reward_model, score_texts

    rows, ids = _rows(rlhf_inputs, 2)
    judge = RewardModelJudge(rlhf_inputs["llama_rm"])
    policy = load_causal_lm(rlhf_inputs["llama_policy"])
    result = best_of_n(policy, rlhf_inputs["tokenizer"], rows, ids, 3, judge.score, max_new_tokens=5)
    rm = load_reward_model(rlhf_inputs["llama_rm"])
    for p, row in enumerate(rows):
        want = score_texts(rm, rlhf_inputs["tokenizer"], [row["prompt"]] * 3, result.texts[p]).numpy()
        np.testing.assert_allclose(result.scores[p], want, atol=1e-5)
        assert result.best[p] == int(np.argmax(want))


def test_best_of_m_reads_the_first_m_draws_and_carries_the_analytic_kl():
    scores = np.array([[1.0, 3.0, 9.0, 2.0], [5.0, 5.0, 0.0, 7.0]])
    length = np.array([[4.0, 5.0, 6.0, 7.0], [1.0, 2.0, 3.0, 4.0]])
    texts = [["a", "b", "c", "d"], ["e", "f", "g", "h"]]
    r = BestOfN(4, texts, scores, np.ones((2, 4)), np.array([2, 3]), length)
    assert r.pick(1).tolist() == [0, 0] and r.pick(2).tolist() == [1, 0] and r.pick(4).tolist() == [2, 3]
    two = r.as_policy(2)
    assert two.texts == [["b"], ["e"]] and two.length.tolist() == [[5.0], [1.0]]
    assert np.allclose(two.kl, math.log(2) - 0.5) and two.kl.shape == (2, 1)
    with pytest.raises(ValueError, match="1 <= m <= 4"):
        r.pick(5)


def test_the_evaluation_refuses_best_of_n_without_a_reward_model_or_with_greedy_decoding(tmp_path):
    from alignlab.errors import ConfigError, ModelNotFoundError
    from alignlab.evaluate.stage import EvaluateConfig, _check

    with pytest.raises(ConfigError, match="best_of_n_reward_model"):
        _check(EvaluateConfig(best_of_n=[4]))
    with pytest.raises(ConfigError, match="temperature > 0"):
        _check(EvaluateConfig(best_of_n=[4], best_of_n_reward_model="rm", temperature=0.0))
    with pytest.raises(ModelNotFoundError, match="not found"):
        _check(EvaluateConfig(best_of_n=[4], best_of_n_reward_model=str(tmp_path / "no_rm")))
