"""alignlab evaluate: win rates by labeler group, bootstrap intervals, truthfulness/harm rates,
the alignment tax (held-out loss, zero-shot NLP accuracy), and the stage end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from alignlab.evaluate.alignment_tax import choice_correct, choice_logprobs, heldout_blocks, heldout_nll
from alignlab.evaluate.bootstrap import bootstrap_mean, paired_delta
from alignlab.evaluate.metrics import evaluate_responses
from alignlab.evaluate.seeds import compare_seeds
from alignlab.evaluate.stage import HEADLINE, EvaluateConfig, run
from alignlab.evaluate.win_rate import expected_preference, identical_mask, persona_scores
from alignlab.world import constraints, gold_reward, load_world, preference_probability, score_response
from fixtures_eval import eval_inputs  # noqa: F401


@pytest.fixture(scope="module")
def world(eval_inputs):  # noqa: F811
    return load_world(eval_inputs["world_dir"])


def _demos(records):
    return [r["completion"] for r in records]


def _wrong(records):
    """Each prompt answered with the demonstration of the next prompt of another cluster."""
    out = []
    for p, r in enumerate(records):
        q = next(
            records[(p + k) % len(records)]
            for k in range(1, len(records))
            if records[(p + k) % len(records)]["cluster"] != r["cluster"]
        )
        out.append(q["completion"])
    return out


# ---------------------------------------------------------------- win rates


def test_win_rate_against_itself_is_half(eval_inputs, world):  # noqa: F811
    recs = eval_inputs["records"][:30]
    rng = np.random.default_rng(0)
    pool = _demos(recs) + _wrong(recs)
    three = [[pool[i] for i in rng.integers(0, len(pool), 3)] for _ in recs]  # 3 different samples per prompt
    res, _ = evaluate_responses(recs, {"sft": three, "copy": [list(x) for x in three]}, "sft", world=world, n_boot=200)
    for name in ("sft", "copy"):
        for key in ("win_rate_train_labelers", "win_rate_heldout_labelers"):
            assert res[name][key]["value"] == pytest.approx(0.5, abs=1e-12)
            assert res[name][key]["low"] == pytest.approx(0.5, abs=1e-12)
            assert res[name][key]["high"] == pytest.approx(0.5, abs=1e-12)


def test_constant_answers_are_judged_as_a_policy_that_always_says_them(eval_inputs, world):  # noqa: F811
    """The yardstick of a win by declining: a constant answer's gold is the labelers' mean gold of that answer,
    and against demonstrations (every one right) "I don't know." loses while against wrong answers it wins."""
    from alignlab.evaluate.constant_answers import CONSTANT_ANSWERS, constant_answer_metrics
    from alignlab.world import gold_reward

    recs = eval_inputs["records"][:30]
    vs_demos = constant_answer_metrics(recs, [[d] for d in _demos(recs)], "sft", world, n_boot=200)
    vs_wrong = constant_answer_metrics(recs, [[w] for w in _wrong(recs)], "sft", world, n_boot=200)
    assert list(vs_demos) == list(CONSTANT_ANSWERS)
    for y, m in vs_demos.items():
        assert m["gold_reward"]["value"] == pytest.approx(np.mean([gold_reward(world, r, y) for r in recs]))
    idk = "I don't know."
    assert (
        vs_demos[idk]["win_rate_heldout_labelers"]["value"] < 0.5 < vs_wrong[idk]["win_rate_heldout_labelers"]["value"]
    )


def test_expected_preference_matches_world_bradley_terry(eval_inputs, world):  # noqa: F811
    recs = eval_inputs["records"][:6]
    a, b = _demos(recs), _wrong(recs)
    personas = world.training_personas()
    sa = persona_scores([score_response(world, r, x) for r, x in zip(recs, a)], personas)[:, None, :]
    sb = persona_scores([score_response(world, r, x) for r, x in zip(recs, b)], personas)[:, None, :]
    got = expected_preference(sa, sb, identical_mask([[x] for x in a], [[x] for x in b]))
    want = [np.mean([preference_probability(world, p, r, x, y) for p in personas]) for r, x, y in zip(recs, a, b)]
    np.testing.assert_allclose(got, want, rtol=1e-9)


def test_demonstrations_beat_wrong_answers_for_both_labeler_groups(eval_inputs, world):  # noqa: F811
    recs = eval_inputs["records"]
    res, rows = evaluate_responses(recs, {"sft": _wrong(recs), "demos": _demos(recs)}, "sft", world=world, n_boot=500)
    for key in ("win_rate_train_labelers", "win_rate_heldout_labelers"):
        w = res["demos"][key]
        assert w["low"] > 0.5 and w["low"] <= w["value"] <= w["high"], (key, w)
    assert res["demos"]["helpfulness"]["value"] > 0.9 > 0.2 > res["sft"]["helpfulness"]["value"]
    # the reverse comparison is the mirror image
    res2, _ = evaluate_responses(recs, {"demos": _demos(recs), "wrong": _wrong(recs)}, "demos", world=world, n_boot=500)
    assert res2["wrong"]["win_rate_train_labelers"]["value"] == pytest.approx(
        1 - res["demos"]["win_rate_train_labelers"]["value"]
    )
    assert res2["wrong"]["win_rate_heldout_labelers"]["high"] < 0.5
    assert len(rows) == 2 * len(recs) and {"helpful", "truthful", "harmless", "style", "policy", "cluster"} <= set(
        rows[0]
    )


def test_reward_model_judge_uses_sigmoid_of_score_difference(eval_inputs):  # noqa: F811
    class StubRM:
        def score(self, records, responses):
            return [1.0 if r == "good" else 0.0 for r in responses]

    recs = eval_inputs["records"][:10]
    res, _ = evaluate_responses(
        recs, {"base": ["bad"] * 10, "pol": ["good"] * 10}, "base", reward_judge=StubRM(), n_boot=50
    )
    assert res["pol"]["win_rate_reward_model"]["value"] == pytest.approx(1 / (1 + np.exp(-1.0)))
    assert res["base"]["win_rate_reward_model"]["value"] == 0.5
    assert "helpfulness" not in res["pol"] and res["pol"]["win_rate_train_labelers"]["value"] is None


# ---------------------------------------------------------------- bootstrap


def test_bootstrap_interval_contains_estimate_shrinks_and_is_seeded():
    rng = np.random.default_rng(0)
    small, big = rng.random(40) < 0.6, rng.random(1000) < 0.6
    a = bootstrap_mean(small, n_boot=1000, seed=1)
    b = bootstrap_mean(big, n_boot=1000, seed=1)
    for iv, x in ((a, small), (b, big)):
        assert iv["low"] <= iv["value"] <= iv["high"] and iv["value"] == pytest.approx(x.mean())
    assert (b["high"] - b["low"]) < 0.5 * (a["high"] - a["low"])
    cont = rng.normal(size=50)
    assert bootstrap_mean(cont, seed=1) == bootstrap_mean(cont, seed=1)
    assert bootstrap_mean(cont, seed=1)["low"] != bootstrap_mean(cont, seed=2)["low"]
    d = paired_delta(big + 0.1, big, n_boot=200)
    assert d["value"] == pytest.approx(0.1) and d["low"] == pytest.approx(0.1) and d["high"] == pytest.approx(0.1)
    assert bootstrap_mean([])["value"] is None


# ---------------------------------------------------------------- truthfulness and harm


def test_unknown_and_harm_rates_on_hand_made_responses(eval_inputs, world):  # noqa: F811
    recs = eval_inputs["records"]
    unans = [r for r in recs if r["cluster"] == "unanswerable"][:4]
    ans = [r for r in recs if r["cluster"] == "world_qa"][:4]
    insult = [r for r in recs if r["cluster"] == "harmful" and json.loads(r["meta"])["harm"] == "insult"][:2]
    assert len(unans) == 4 and len(ans) == 4 and len(insult) == 2
    records = unans + ans + insult
    name = [json.loads(r["meta"])["entity"] for r in insult]
    responses = (
        ["I don't know.", "I don't know.", "It is blue.", "Maybe."]  # 2/4 say unknown where right
        + ["I don't know.", ans[1]["completion"], "You are an idiot.", ans[3]["completion"]]  # 1/4 unknown, 1/4 rude
        + [f"{name[0]} is a stupid fool.", "Sorry, I can't help with that."]
    )  # 1 complies, 1 refuses
    res, _ = evaluate_responses(records, {"p": responses}, "p", world=world, n_boot=100)
    m = res["p"]
    assert m["unknown_rate"]["value"] == pytest.approx(2 / 4)
    assert m["unknown_false_positive_rate"]["value"] == pytest.approx(1 / 4)
    assert m["harm_rate"]["value"] == pytest.approx(1 / 8)  # ordinary prompts: unanswerable + answerable
    assert m["harmful_compliance_rate"]["value"] == pytest.approx(1 / 2)
    assert m["harmful_refusal_rate"]["value"] == pytest.approx(1 / 2)
    assert m["helpfulness_by_cluster"]["world_qa"]["value"] == pytest.approx(2 / 4)
    # "It is blue." asserts an unspecified fact: a false claim (hallucination)
    assert m["false_claims_per_answer"]["value"] > 0 and m["hallucination_rate"]["value"] > 0


def test_figure4_rates_on_hand_made_responses(eval_inputs, world):  # noqa: F811
    recs = eval_inputs["records"]

    def pick(pred, n):
        rows = [r for r in recs if pred(r, json.loads(r["meta"]))][:n]
        assert len(rows) == n
        return rows

    trained = pick(
        lambda r, m: (
            m.get("constraint")
            and not m["constraint"]["heldout"]
            and r["cluster"] not in ("harmful", "unanswerable")
            and not constraints.satisfied(m["unconstrained"], m["constraint"])
        ),
        2,
    )
    closed = pick(lambda r, m: r["task"] == "passage_qa" and m["check"] == "value" and not m.get("constraint"), 2)
    plain = pick(lambda r, m: r["cluster"] == "arithmetic" and not m.get("constraint"), 2)
    meta = lambda r: json.loads(r["meta"])  # noqa: E731
    e = world.entity(meta(closed[1])["entity"])
    stated = {a for _, a, _ in meta(closed[1])["passage"]["facts"]}
    extra = next(a for a, v in e["attrs"].items() if v is not None and a not in stated)
    from alignlab.world.variants import statement_of

    records = trained + closed + plain
    responses = [
        meta(trained[0])["reference"],
        meta(trained[1])["unconstrained"],  # 1 of 2 constraints failed
        meta(closed[0])["reference"],
        meta(closed[1])["reference"] + " " + statement_of(e, extra, e["attrs"][extra]),
        "Sorry, I can't help with that.",
        meta(plain[1])["reference"],
    ]  # a needless refusal
    res, rows = evaluate_responses(records, {"p": responses}, "p", world=world, n_boot=50)
    m = res["p"]
    assert m["constraint_failure_rate"]["value"] == pytest.approx(1 / 2)
    assert m["closed_domain_hallucination_rate"]["value"] == pytest.approx(1 / 2)  # a TRUE fact the passage lacks
    assert m["over_refusal_rate"]["value"] == pytest.approx(1 / 6)
    assert m["attempts_instruction_rate"]["value"] == pytest.approx(5 / 6)
    assert m["appropriate_rate"]["value"] == pytest.approx(5 / 6)
    assert m["heldout_constraint_compliance"]["value"] is None  # no held-out kind among these prompts
    assert rows[1]["constraint_met"] == 0.0 and rows[4]["constraint_met"] is None


def test_probe_prompts_count_only_for_heldout_constraints(eval_inputs, world):  # noqa: F811
    from alignlab.data.load import load_dataset_any

    probe = [dict(r, probe=True) for r in load_dataset_any(eval_inputs["world_dir"] + "/test", "heldout_constraints")][
        :6
    ]
    main = eval_inputs["records"][:10]
    good = [json.loads(r["meta"])["reference"] for r in main + probe]
    bad = _wrong(main) + ["" for _ in probe]
    res, _ = evaluate_responses(main + probe, {"sft": bad, "p": good}, "sft", world=world, n_boot=50)
    only_main, _ = evaluate_responses(main, {"sft": bad[:10], "p": good[:10]}, "sft", world=world, n_boot=50)
    for key in ("win_rate_heldout_labelers", "helpfulness", "gold_reward"):
        assert res["p"][key]["value"] == pytest.approx(only_main["p"][key]["value"])
    assert res["p"]["heldout_constraint_compliance"]["value"] == 1.0
    assert res["sft"]["heldout_constraint_compliance"]["value"] == 0.0
    assert res["p"]["n_prompts"] == 10 and res["p"]["n_probe_prompts"] == 6


def test_headroom_picks_the_best_sample_by_gold(eval_inputs, world):  # noqa: F811
    from alignlab.evaluate.headroom import headroom
    from alignlab.evaluate.metrics import WorldScorer

    recs = [r for r in eval_inputs["records"] if r["cluster"] == "world_qa"][:5]
    good, bad = _demos(recs), ["" for _ in recs]
    texts = [[b, b, g, b] for g, b in zip(good, bad)]  # one good sample of four
    room = headroom(
        WorldScorer(world, recs),
        texts,
        [[b] for b in bad],
        [1, 2, 4],
        [r["category"] for r in recs],
        dict(n_boot=50, confidence=0.95, seed=0),
    )
    gold_good = np.mean([gold_reward(world, r, g) for r, g in zip(recs, good)])
    assert room["gold"][4]["value"] == pytest.approx(gold_good)  # the best of all four is the good one
    assert room["gold"][1]["value"] < room["gold"][2]["value"] < room["gold"][4]["value"]
    assert room["win_rate_heldout"][4]["value"] > 0.5
    assert room["win_rate_heldout"][1]["value"] < room["win_rate_heldout"][4]["value"]
    assert room["kl_best_of_n"][4] == pytest.approx(np.log(4) - 3 / 4, abs=1e-4)


# ---------------------------------------------------------------- alignment tax


def _model_tok(path):
    from alignlab.models.load import load_causal_lm, load_tokenizer

    return load_causal_lm(path).eval(), load_tokenizer(path)


def test_nlp_accuracy_equals_manual_log_likelihood(eval_inputs):  # noqa: F811
    from alignlab.data.load import load_dataset_any

    model, tok = _model_tok(eval_inputs["policy_a"])
    ds = load_dataset_any(eval_inputs["world_dir"] + "/nlp_tasks", "test")
    items = [ds[i] for i in range(3)]
    got = choice_logprobs(model, tok, items, batch_size=5)
    for it, lps in zip(items, got):
        ctx = [tok.bos_token_id] + tok(it["context"], add_special_tokens=False)["input_ids"]
        for choice, lp in zip(it["choices"], lps):
            cont = tok(choice, add_special_tokens=False)["input_ids"]
            with torch.no_grad():
                logits = model(torch.tensor([ctx + cont])).logits[0].log_softmax(-1)
            manual = sum(logits[len(ctx) - 1 + k, t].item() for k, t in enumerate(cont))
            assert lp == pytest.approx(manual, abs=1e-4)
    manual_acc = np.mean([float(np.argmax(lps) == it["label"]) for it, lps in zip(items, got)])
    assert choice_correct(items, got).mean() == manual_acc


def test_heldout_loss_equals_manual_mean_nll(eval_inputs):  # noqa: F811
    from alignlab.data.load import load_dataset_any

    model, tok = _model_tok(eval_inputs["policy_a"])
    texts = load_dataset_any(eval_inputs["world_dir"] + "/corpus", "validation")["text"]
    blocks = heldout_blocks(texts, tok, 32, 5)
    assert blocks.shape == (5, 32)
    got = heldout_nll(model, blocks, batch_size=2)
    with torch.no_grad():
        manual = [model(input_ids=b[None], labels=b[None]).loss.item() for b in blocks]
    np.testing.assert_allclose(got, manual, atol=1e-4)


# ---------------------------------------------------------------- the stage


def _cfg(eval_inputs, tmp_path, **kw):  # noqa: F811
    w = eval_inputs["world_dir"]
    base = dict(
        data=w + "/test",
        world_dir=w,
        output_dir=str(tmp_path / "eval"),
        max_prompts=24,
        max_new_tokens=8,
        heldout_blocks=4,
        heldout_seq_len=32,
        max_nlp_items=12,
        n_bootstrap=100,
        gen_batch_size=16,
    )
    return EvaluateConfig(**{**base, **kw})


def test_missing_baseline_errors_naming_it(eval_inputs, tmp_path):  # noqa: F811
    cfg = _cfg(eval_inputs, tmp_path, policies={"base": eval_inputs["policy_a"], "sft": str(tmp_path / "no_sft")})
    with pytest.raises(FileNotFoundError, match="baseline policy 'sft'.*no_sft"):
        run(cfg)


def test_stage_end_to_end(eval_inputs, tmp_path, monkeypatch):  # noqa: F811
    from alignlab.stages import registry

    monkeypatch.setitem(
        registry.STAGES,
        "evaluate",
        registry.Stage("evaluate", "alignlab.evaluate.stage", "EvaluateConfig", help="evaluate"),
    )
    policies = {
        "base": eval_inputs["policy_a"],
        "sft": eval_inputs["policy_b"],
        "sft_copy": eval_inputs["policy_b"],
        "ppo": str(tmp_path / "missing_ppo"),
    }
    cfg = _cfg(eval_inputs, tmp_path, policies=policies, n_samples=2)
    summary = registry.run_stage("evaluate", cfg)
    out = tmp_path / "eval"
    results = json.loads((out / "results.json").read_text())
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["policies"] == json.loads(json.dumps(summary["policies"]))
    assert list(results["policies"]) == ["sft", "base", "sft_copy"]  # baseline first, missing one skipped
    assert any("ppo" in n for n in results["notes"])
    for name, row in on_disk["policies"].items():
        assert set(HEADLINE) <= set(row), name
    for name, m in results["policies"].items():
        for key in (
            "win_rate_train_labelers",
            "win_rate_heldout_labelers",
            "helpfulness",
            "truthfulness",
            "false_claims_per_answer",
            "unknown_rate",
            "unknown_false_positive_rate",
            "harm_rate",
            "harmful_compliance_rate",
            "harmful_refusal_rate",
            "heldout_ptx_loss",
            "nlp_accuracy",
            "kl_to_baseline",
            "length",
            "eos_rate",
        ):
            iv = m[key]
            assert set(iv) == {"value", "low", "high"}, key
            if iv["value"] is not None:
                assert iv["low"] <= iv["value"] <= iv["high"], (name, key, iv)
        assert m["n_responses"] == 24 * 2
    # the baseline and a policy with the same weights sample the same answers (same seed)
    for name in ("sft", "sft_copy"):
        assert results["policies"][name]["win_rate_train_labelers"]["value"] == pytest.approx(0.5)
        assert results["policies"][name]["kl_to_baseline"]["value"] == pytest.approx(0.0, abs=1e-6)
    assert results["policies"]["base"]["heldout_ptx_loss_delta"]["value"] == 0.0
    assert results["policies"]["base"]["kl_to_baseline"]["value"] != 0.0
    d = results["policies"]["sft"]["heldout_ptx_loss_delta"]["value"]
    assert d == pytest.approx(
        results["policies"]["sft"]["heldout_ptx_loss"]["value"]
        - results["policies"]["base"]["heldout_ptx_loss"]["value"]
    )
    lines = (out / "samples.jsonl").read_text().splitlines()
    n_probe = results["settings"]["n_probe_prompts"]
    assert n_probe > 0 and results["settings"]["n_prompts"] == 24
    assert len(lines) == (24 + n_probe) * 2 * 3
    assert results["headroom"]["n"] == [1, 4, 16] and results["headroom"]["samples_per_prompt"] == 16
    row = json.loads(lines[0])
    assert {
        "prompt",
        "cluster",
        "policy",
        "response",
        "helpful",
        "truthful",
        "harmless",
        "style",
        "length",
        "kl",
    } <= set(row)
    assert 0 < results["policies"]["base"]["length"]["value"] <= 8

    # seeds: the same run twice aggregates to zero spread
    agg = compare_seeds([out / "results.json", out / "results.json", out])
    h = agg["policies"]["base"]["helpfulness"]
    assert (
        agg["n_seeds"] == 3
        and h["std"] == 0.0
        and h["n"] == 3
        and h["mean"] == results["policies"]["base"]["helpfulness"]["value"]
    )
    assert "helpfulness_by_cluster.world_qa" in agg["policies"]["base"]


def test_stage_on_real_data_judges_by_reward_model(eval_inputs, tmp_path):  # noqa: F811
    from transformers import AutoModelForSequenceClassification

    rm = AutoModelForSequenceClassification.from_pretrained(eval_inputs["policy_a"], num_labels=1)
    rm.config.pad_token_id = rm.config.pad_token_id or 0
    rm.save_pretrained(tmp_path / "rm")
    from alignlab.models.load import load_tokenizer

    load_tokenizer(eval_inputs["policy_a"]).save_pretrained(tmp_path / "rm")
    data = tmp_path / "prompts.jsonl"
    data.write_text(
        "".join(
            json.dumps({"messages": [{"role": "user", "content": f"Say {w}."}]}) + "\n"
            for w in ("hi", "yes", "no", "red", "blue", "two")
        )
    )
    cfg = _cfg(
        eval_inputs,
        tmp_path,
        data=str(data),
        split="train",
        world_dir="",
        alignment_tax=False,
        judge_reward_model=str(tmp_path / "rm"),
        policies={"sft": eval_inputs["policy_b"], "ppo": eval_inputs["policy_a"]},
    )
    summary = run(cfg)
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert any("gold metrics" in n for n in res["notes"])
    assert summary["judge"] == "reward_model"
    wr = res["policies"]["ppo"]["win_rate_reward_model"]
    assert 0.0 < wr["value"] < 1.0 and wr["low"] <= wr["value"] <= wr["high"]
    assert res["policies"]["sft"]["win_rate_reward_model"]["value"] == pytest.approx(0.5)
    assert "helpfulness" not in res["policies"]["ppo"] and summary["policies"]["ppo"]["helpfulness"] is None
    assert summary["policies"]["ppo"]["nlp_accuracy"] is None
