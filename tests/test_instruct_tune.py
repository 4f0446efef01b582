"""The instruct-tune stage (FLAN): what it tunes on leaves the judged cluster out, rank classification picks the
option the model scores highest (a stub with known log-likelihoods, and a tiny Llama against a teacher-forced
sum), every option is an answer the world's checker grades, and the smoke run reports both accuracies."""

from __future__ import annotations

import json
from types import SimpleNamespace

import datasets
import numpy as np
import pytest
import torch
from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

from alignlab.data.heldout import canonical
from alignlab.evaluate.rank_classification import RANKED_TASKS, Options, option_logprobs, options_for, rank_classify
from alignlab.stages import instruct_tune
from alignlab.stages.instruct_tune import InstructTuneConfig
from alignlab.world import load_world
from alignlab.world.checkers import task_score
from alignlab.world.tasks import tasks_in

EXCLUDE = ["unanswerable", "harmful"]


def _world_rows(world_dir) -> list[dict]:
    return [
        r
        for name in ("sft", "test")
        for split in datasets.load_from_disk(str(world_dir / name)).values()
        for r in split
    ]


# ------------------------------------------------------------------ held out means held out


def test_tuning_data_leaves_out_the_heldout_cluster_and_the_excluded_ones(smoke_pipeline_run, tmp_path):
    world_dir = smoke_pipeline_run / "world"
    sft = datasets.load_from_disk(str(world_dir / "sft"))
    for heldout in InstructTuneConfig().heldout_clusters:
        assert any(r["cluster"] == heldout for split in sft.values() for r in split)  # there is something to leave out
        held_tasks = {t.name for t in tasks_in(heldout)}
        asked = instruct_tune.heldout_prompts(world_dir, heldout, 10_000, seed=0)
        assert asked and {r["cluster"] for r in asked} == {heldout}
        for instructions in (True, False):
            tuned = datasets.load_from_disk(
                str(
                    instruct_tune.tuning_data(
                        world_dir, heldout, EXCLUDE, instructions, tmp_path / f"{heldout}{instructions}"
                    )
                )
            )
            for split in ("train", "validation"):
                kept = [r for r in sft[split] if r["cluster"] != heldout and r["cluster"] not in EXCLUDE]
                assert {r["cluster"] for r in kept}.isdisjoint({heldout, *EXCLUDE})
                assert {r["task"] for r in kept}.isdisjoint(held_tasks)
                # row for row the kept rows (prompt, or its raw inputs without the template; the reference answer)
                metas = [json.loads(r["meta"]) for r in kept]
                want = (
                    [r["prompt"] for r in kept] if instructions else [instruct_tune.no_template_input(m) for m in metas]
                )
                assert tuned[split]["prompt"] == want
                assert tuned[split]["completion"] == [m["reference"] for m in metas]
            tuned_prompts = {canonical(p) for split in tuned.values() for p in split["prompt"]}
            assert not tuned_prompts & {canonical(r["prompt"]) for r in asked}
        assert instruct_tune.tuned_prompts(world_dir, heldout, EXCLUDE).isdisjoint(
            canonical(r["prompt"]) for r in asked
        )
    clusters = InstructTuneConfig().heldout_clusters
    asked = {c: instruct_tune.heldout_prompts(world_dir, c, 40, 0) for c in clusters}
    assert instruct_tune.heldout_info(world_dir, clusters, EXCLUDE, asked).overlap == 0


# ------------------------------------------------------------------ rank classification


class BigramLM(torch.nn.Module):
    """The next token's log-probs depend only on the current token (row ``t`` of ``probs``): every option's
    log-likelihood is a sum read off the table."""

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        self.logp = torch.nn.Parameter(probs.log(), requires_grad=False)
        self.config = SimpleNamespace(max_position_embeddings=64)

    def forward(self, input_ids, attention_mask=None, position_ids=None, use_cache=None):
        return SimpleNamespace(logits=self.logp[input_ids])


VOCAB = {"<pad>": 0, " ": 1, "a": 2, "b": 3, "c": 4}
PROBS = torch.tensor(
    [
        [0.2, 0.2, 0.2, 0.2, 0.2],
        [0.02, 0.02, 0.2, 0.46, 0.3],  # after " ": a .2, b .46, c .3
        [0.2, 0.2, 0.2, 0.2, 0.2],
        [0.1, 0.2, 0.2, 0.2, 0.3],  # after "b": c .3
        [0.2, 0.2, 0.2, 0.2, 0.2],
    ]
)


class CharTokenizer:
    pad_token_id = 0

    def __call__(self, texts, add_special_tokens=False):
        return {"input_ids": [[VOCAB[ch] for ch in t] for t in texts]}


def test_rank_classification_picks_the_option_the_model_scores_highest():
    model, tok = BigramLM(PROBS), CharTokenizer()
    # after "Answer:" each option is scored with its lead space: " a" = log .2, " bc" = log .46 + log .3, " c" = log .3
    lp = {"a": np.log(0.2), "bc": np.log(0.46) + np.log(0.3), "c": np.log(0.3)}
    records = [
        {"prompt": "1", "template": 0},  # a vs bc: "a" by the sum; a per-token mean would pick bc (-0.99 > -1.61)
        {"prompt": "2", "template": 0},  # a, bc, c: picks c, the right answer is bc
        {"prompt": "3", "template": 1},  # no options: generation only
        {"prompt": "4", "template": 1},  # bc vs a: picks a, right
    ]
    answers = [["a", "bc"], ["a", "bc", "c"], None, ["bc", "a"]]
    options = [None if a is None else Options(a, a, gold) for a, gold in zip(answers, [0, 1, 0, 1])]
    prompts = [[2], [3, 2], [4], [2, 2, 3]]  # any prompt: the first option token's column is the same for all options

    kept = [i for i, a in enumerate(answers) if a is not None]
    picks, logprobs = rank_classify(
        model, tok, [prompts[i] for i in kept], [[" " + o for o in answers[i]] for i in kept]
    )
    assert picks == [0, 2, 1]
    for i, got in zip(kept, logprobs):
        p = PROBS[prompts[i][-1], 1].log().item()  # the lead space after the prompt
        assert got == pytest.approx([p + lp[o] for o in answers[i]], abs=1e-5)

    cfg = InstructTuneConfig(eval_batch_size=2)
    res = instruct_tune.rank_accuracy(model, tok, prompts, records, options, [0.0, 1.0, 1.0, 0.0], True, cfg)
    # right, wrong (template 0: 1/2); right (template 1: 1/1); averaged over templates as accuracy is
    assert res["rank_accuracy"] == pytest.approx(0.75)
    assert res["rank_generation_accuracy"] == pytest.approx(0.25)  # generation on the same 3 prompts: 1 of 2, 0 of 1
    assert [e["pick"] for e in res["rank_examples"]] == ["a", "c", "a"]
    none = instruct_tune.rank_accuracy(model, tok, prompts, records, [None] * 4, [0.0] * 4, True, cfg)
    assert none["rank_accuracy"] is None


def test_option_logprobs_equal_teacher_forced_sums_on_a_tiny_llama(tiny_corpus):
    tok = AutoTokenizer.from_pretrained(tiny_corpus["tokenizer"])
    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=256,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
    )
    model = LlamaForCausalLM(cfg).eval()
    records = [{"prompt": "Is Bruk red?"}, {"prompt": "Where does Zel live? Answer briefly, please."}]
    options = [["Yes.", "No."], ["Zel lives by river 3.", "Zel lives by river 5.", "Mora."]]
    for plain in (True, False):  # the base model's Q&A form and a tuned model's chat format
        prompts = instruct_tune.asked_ids(tok, records, plain)
        conts = [[instruct_tune.option_suffix(tok, o, plain) for o in opts] for opts in options]
        picks, got = rank_classify(model, tok, prompts, conts, batch_size=2)  # mixed lengths in a padded batch
        for prompt, opts, lps, pick in zip(prompts, conts, got, picks):
            manual = []
            for o in opts:
                cont = tok(o, add_special_tokens=False)["input_ids"]
                with torch.no_grad():
                    logits = model(torch.tensor([prompt + cont])).logits[0].log_softmax(-1)
                manual.append(sum(logits[len(prompt) - 1 + k, t].item() for k, t in enumerate(cont)))
            assert lps == pytest.approx(manual, abs=1e-4)
            assert pick == int(np.argmax(manual))
    # a prompt too long for the context is cut from the left, the option kept whole
    model.config.max_position_embeddings = 12
    prompt, cont = (
        instruct_tune.asked_ids(tok, records[1:], False)[0],
        tok("Mora.", add_special_tokens=False)["input_ids"],
    )
    (got,) = option_logprobs(model, [prompt], [[cont]], tok.pad_token_id, 4)
    cut = prompt[-(12 - len(cont)) :]
    with torch.no_grad():
        logits = model(torch.tensor([cut + cont])).logits[0].log_softmax(-1)
    assert got[0] == pytest.approx(sum(logits[len(cut) - 1 + k, t].item() for k, t in enumerate(cont)), abs=1e-4)


def test_options_are_the_answers_the_checker_grades(smoke_pipeline_run):
    """For every record of a task with a closed answer set, the right option is the record's reference answer
    (the tuned models' answer form, constraint applied) and the checker gives it 1 and every other option 0."""
    world_dir = smoke_pipeline_run / "world"
    world = load_world(str(world_dir))
    tok = AutoTokenizer.from_pretrained(str(smoke_pipeline_run / "pretrain"))
    seen = set()
    for r in _world_rows(world_dir):
        opts = options_for(r, world)
        assert (opts is not None) == (r["task"] in RANKED_TASKS), r["task"]
        if opts is None:
            continue
        seen.add(r["task"])
        meta = json.loads(r["meta"])
        assert opts.texts[opts.gold] == meta["reference"] and len(set(opts.texts)) == len(opts.texts)
        assert [task_score(world, meta, t) for t in opts.texts] == [
            float(i == opts.gold) for i in range(len(opts.texts))
        ]
        # the base model's options after "Answer:" tokenise as they would inside the corpus's Q&A text
        q = instruct_tune.BASE_PROMPT.format(prompt=r["prompt"])
        for t in opts.texts[:3]:
            joint = tok(q + " " + t, add_special_tokens=False)["input_ids"]
            assert (
                joint
                == tok(q, add_special_tokens=False)["input_ids"] + tok(" " + t, add_special_tokens=False)["input_ids"]
            )
    assert {"attribute_qa", "fact_yes_no", "is_category", "category_of", "sentiment", "older"} <= seen
    # open answer sets stay generation-scored
    assert not {"sort_numbers", "sort_words", "extract_number", "passage_qa"} & set(RANKED_TASKS)


# ------------------------------------------------------------------ the stage end to end


def test_smoke_run_reports_generation_and_rank_accuracy_for_every_model(smoke_pipeline_run):
    """The smoke pipeline's instruct-tune step (base, instruction-tuned and no-template models, two held-out
    clusters): both accuracies per cluster and model, over the prompts the summary says were rank-classified."""
    out = smoke_pipeline_run / "instruct_tune"
    summary = json.loads((out / "summary.json").read_text())
    results = json.loads((out / "results.json").read_text())
    kinds = ["base", "instruction", "no_template"]
    world = load_world(str(smoke_pipeline_run / "world"))
    cfg = results["config"]
    assert summary["heldout"]["overlap"] == 0
    for cluster in summary["heldout_clusters"]:
        res = results["clusters"][cluster]
        records = instruct_tune.heldout_prompts(
            smoke_pipeline_run / "world", cluster, cfg["max_eval_prompts"], cfg["seed"]
        )
        ranked = [r for r in records if options_for(r, world) is not None]
        assert 0 < res["rank_n"] == len(ranked) == summary["rank_prompts"][cluster] <= res["n_prompts"]
        assert set(res["rank_tasks"]) == {r["task"] for r in ranked} <= set(summary["rank_classified_tasks"])
        assert 0 < res["rank_chance"] < 1
        for k in kinds:
            for key in ("accuracy", "rank_accuracy", "rank_generation_accuracy"):
                assert 0.0 <= res[k][key] <= 1.0, (cluster, k, key)
            assert summary["accuracy"][cluster][k] == round(res[k]["accuracy"], 4)
            assert summary["rank_accuracy"][cluster][k] == round(res[k]["rank_accuracy"], 4)
    assert set(summary["mean_accuracy"]) == set(summary["mean_rank_accuracy"]) == set(kinds)
    assert results["rank_tasks"] == summary["rank_classified_tasks"]
    assert set(summary["rank_classified_tasks"]) <= set(RANKED_TASKS)
