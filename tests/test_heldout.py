"""Held-out means held out (``data/heldout.py``): the split rule itself, every stage's own data set-up given a
single JSONL file (its training and evaluation prompts never meet), and the built-in world's splits."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from types import SimpleNamespace

import datasets
import pytest

from alignlab.config import ConfigError, apply
from alignlab.data import packing
from alignlab.data.heldout import canonical, group_keys, heldout_groups, load_train_eval, split_by_prompt
from alignlab.data.load import DataError
from alignlab.models.load import load_causal_lm
from alignlab.stages import compare, dpo, ppo, ppo_setup, pretrain, reward, sft
from fixtures_rlhf import rlhf_inputs  # noqa: F401

# ------------------------------------------------------------------ helpers


def _rows(n_prompts: int, copies=(1, 2, 3), seed: int = 0) -> list[dict]:
    """Rows of ``n_prompts`` distinct prompts, each repeated 1-3 times (as pairs of one ranking are)."""
    rng = random.Random(seed)
    return [
        {"prompt": f"question {i}?", "chosen": f"yes {j}", "rejected": f"no {j}"}
        for i in range(n_prompts)
        for j in range(rng.choice(copies))
    ]


def _jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def _prompts(rows) -> set[str]:
    """Distinct prompts of rows (dicts or a Dataset), as plain strings (independent of the module under test)."""
    return {r["prompt"] if isinstance(r["prompt"], str) else json.dumps(r["prompt"], sort_keys=True) for r in rows}


def _spy(monkeypatch, module, name: str) -> list:
    """Record the positional arguments of every call to ``module.name`` (which still runs)."""
    calls, real = [], getattr(module, name)

    def wrapper(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    monkeypatch.setattr(module, name, wrapper)
    return calls


# ------------------------------------------------------------------ the rule


def test_fraction_holds_out_whole_prompts_disjoint_and_exact(tmp_path):
    rows = _rows(64)
    te = load_train_eval(_jsonl(tmp_path / "p.jsonl", rows), "train", "validation", 0.05)
    train, held = _prompts(te.train), _prompts(te.eval)
    assert not train & held and train | held == _prompts(rows)
    assert len(held) == 3 and len(train) == 61  # round(0.05 x 64)
    # grouped: every row of a held-out prompt is on the held-out side
    assert len(te.eval) == sum(r["prompt"] in held for r in rows) and len(te.train) + len(te.eval) == len(rows)
    info = te.info.as_dict()
    assert info == {
        "source": str(tmp_path / "p.jsonl"),
        "split": "held out 5% of prompts by hash",
        "how": "fraction",
        "prompts": 3,
        "train_prompts": 61,
        "overlap": 0,
    }
    assert "3 of 64 prompts" in te.info.line() and "training on the other 61" in te.info.line()


@pytest.mark.parametrize("n,fraction,held", [(64, 0.05, 3), (40, 0.05, 2), (10, 0.05, 1), (10, 0.5, 5), (2, 0.9, 1)])
def test_held_out_counts(n, fraction, held):
    keys = [f"p{i}" for i in range(n)]
    assert len(heldout_groups(keys, fraction)) == held  # max(1, round(f x n)), at least one left to train on


def test_the_choice_ignores_row_order_and_depends_on_the_prompts_alone(tmp_path):
    rows = _rows(50)
    shuffled = list(rows)
    random.Random(1).shuffle(shuffled)
    a = load_train_eval(_jsonl(tmp_path / "a.jsonl", rows), "train", "validation", 0.1)
    b = load_train_eval(_jsonl(tmp_path / "b.jsonl", shuffled), "train", "validation", 0.1)
    assert _prompts(a.eval) == _prompts(b.eval) and _prompts(a.train) == _prompts(b.train)
    # the rows keep their order on each side
    assert list(b.train["prompt"]) == [r["prompt"] for r in shuffled if r["prompt"] in _prompts(b.train)]
    # the same prompts as their own hash ranks them (nothing of this machine or process goes in)
    ranked = sorted({r["prompt"] for r in rows}, key=lambda p: hashlib.sha256(p.encode()).hexdigest())
    assert _prompts(a.eval) == set(ranked[:5])


def test_no_evaluation_when_fraction_is_zero_or_one_prompt(tmp_path):
    none = load_train_eval(_jsonl(tmp_path / "p.jsonl", _rows(20)), "train", "validation", 0.0)
    assert none.eval is None and none.info.how == "none" and len(none.train) == len(_rows(20))
    assert "eval_fraction is 0" in none.info.line() and "no evaluation" in none.info.line()
    one = load_train_eval(_jsonl(tmp_path / "one.jsonl", _rows(1, copies=(3,))), "train", "validation", 0.5)
    assert one.eval is None and one.info.how == "none" and "single distinct prompt" in one.info.split
    off = load_train_eval(_jsonl(tmp_path / "p.jsonl", _rows(20)), "train", "", 0.5)  # eval_split '' = off
    assert off.eval is None and off.info.how == "none"
    with pytest.raises(ConfigError, match="eval_fraction"):
        load_train_eval(str(tmp_path / "p.jsonl"), "train", "validation", 1.0)


def test_a_saved_split_is_used_as_saved_and_a_missing_one_is_held_out_of_train(tmp_path):
    dd = datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(_rows(30)), "validation": datasets.Dataset.from_list(_rows(5, seed=7))}
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    te = load_train_eval(str(tmp_path / "dd"), "train", "validation", 0.5)
    assert te.info.how == "split" and te.info.split == "validation"
    assert list(te.eval["prompt"]) == list(dd["validation"]["prompt"]) and len(te.train) == len(dd["train"])
    assert te.info.overlap == 5  # this data set's validation prompts are training prompts too: said, not hidden
    assert "WARNING: 5 held-out prompts also appear in the training data" in te.info.line()
    # no 'test' split: a fraction of train's prompts
    frac = load_train_eval(str(tmp_path / "dd"), "train", "test", 0.2)
    assert frac.info.how == "fraction" and len(_prompts(frac.eval)) == 6
    assert not _prompts(frac.train) & _prompts(frac.eval)
    # a single saved Dataset has no splits either
    datasets.Dataset.from_list(_rows(30)).save_to_disk(str(tmp_path / "single"))
    assert load_train_eval(str(tmp_path / "single"), "train", "validation", 0.2).info.how == "fraction"
    with pytest.raises(DataError, match="is the training split"):
        load_train_eval(str(tmp_path / "dd"), "train", "train", 0.2)


def test_separate_eval_data_is_used_whole_unless_it_is_the_training_data(tmp_path):
    train = _jsonl(tmp_path / "train.jsonl", _rows(20))
    other = _jsonl(tmp_path / "eval.jsonl", _rows(4, seed=5)[:3] + [{"prompt": "new?", "chosen": "a", "rejected": "b"}])
    te = load_train_eval(train, "train", "validation", 0.2, eval_data=other)
    assert te.info.how == "separate_source" and len(te.eval) == 4 and len(te.train) == len(_rows(20))
    assert te.info.overlap == len(_prompts(te.eval) & _prompts(te.train))
    same = load_train_eval(train, "train", "validation", 0.2, eval_data=train)  # the training file itself
    assert same.info.how == "fraction" and not _prompts(same.train) & _prompts(same.eval)


def test_chat_prompts_and_messages_rows_are_grouped_by_their_prompt():
    msgs = [{"content": "hi", "role": "user"}]
    rows = [
        {"prompt": msgs, "completion": "a"},
        {"prompt": [{"role": "user", "content": "hi"}], "completion": "b"},  # the same prompt, keys reordered
    ]
    keys = group_keys(datasets.Dataset.from_list(rows))
    assert keys[0] == keys[1] == canonical([{"role": "user", "content": "hi"}])
    conv = [
        {"messages": [{"role": "user", "content": f"q{i % 5}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(30)
    ]
    train, held = split_by_prompt(datasets.Dataset.from_list(conv), 0.4)
    context = lambda ds: {m[0]["content"] for m in ds["messages"]}  # noqa: E731
    assert len(context(held)) == 2 and not context(train) & context(held) and len(held) == 12


def test_text_is_grouped_by_document(tmp_path):
    docs = [{"text": f"doc {i % 40}"} for i in range(100)]
    te = load_train_eval(_jsonl(tmp_path / "c.jsonl", docs), "train", "validation", 0.1, column="text", text=True)
    train, held = set(te.train["text"]), set(te.eval["text"])
    assert len(held) == 4 and not train & held and "documents" in te.info.line()


# ------------------------------------------------------------------ every stage, given one JSONL file


@pytest.fixture(scope="module")
def data_files(rlhf_inputs, tmp_path_factory):  # noqa: F811
    """The rlhf fixture's prompts (48 rows, repeated prompts) in each stage's format, one file each."""
    root = tmp_path_factory.mktemp("heldout")
    prompts = [json.loads(line)["prompt"] for line in Path(rlhf_inputs["prompts"]).read_text().splitlines()]
    assert len(set(prompts)) < len(prompts)  # some prompts repeat: grouping matters
    demos = [{"prompt": p, "completion": f"answer {i}"} for i, p in enumerate(prompts)]
    worldish = [{"prompt": p, "task": "t", "meta": "{}"} for p in prompts]
    return {
        "demos": _jsonl(root / "demos.jsonl", demos),
        "worldish": _jsonl(root / "worldish.jsonl", worldish),
        "n_prompts": len(set(prompts)),
    }


def _disjoint(train: set, held: set, n: int | None = None) -> None:
    assert train and held, "both sides must hold prompts"
    assert not train & held, f"prompts both trained on and evaluated on: {sorted(train & held)[:3]}"
    if n is not None:
        assert len(train) + len(held) == n


def test_pretrain_corpus(rlhf_inputs, monkeypatch):  # noqa: F811
    packed = _spy(monkeypatch, packing, "pack_documents")  # pretrain packs through packing.packed_blocks
    cfg = apply(
        pretrain.PretrainConfig(),
        {"data": rlhf_inputs["corpus"], "eval_fraction": 0.2, "source": {"tokenizer": rlhf_inputs["llama_policy"]}},
        "test",
    )
    corpus = pretrain.load_corpus(cfg)
    (train_docs, *_), (eval_docs, *_) = packed
    _disjoint(set(train_docs), set(eval_docs))
    assert corpus.heldout.how == "fraction" and set(corpus.sample_docs) <= set(eval_docs)
    with pytest.raises(DataError, match="--eval_fraction"):
        pretrain.load_corpus(apply(cfg, {"eval_fraction": 0.0}, "test"))


def test_sft_demonstrations(rlhf_inputs, data_files, monkeypatch):  # noqa: F811
    read = _spy(monkeypatch, sft, "demonstrations")
    cfg = apply(sft.SFTConfig(), {"data": data_files["demos"], "eval_fraction": 0.2, "judge": "loss"}, "test")
    model = load_causal_lm(rlhf_inputs["llama_policy"])
    _, val = sft._setup_data(cfg, rlhf_inputs["tokenizer"], model, 64, "cpu")
    (train_ds, _), (val_ds, _) = read
    _disjoint(_prompts(train_ds), _prompts(val_ds), data_files["n_prompts"])
    assert set(val.prompts) == _prompts(val_ds) and val.heldout.how == "fraction"
    with pytest.raises(DataError, match="--eval_data FILE"):
        sft._setup_data(apply(cfg, {"eval_fraction": 0.0}, "test"), rlhf_inputs["tokenizer"], model, 64, "cpu")


def test_reward_comparisons(rlhf_inputs):  # noqa: F811
    cfg = apply(
        reward.RewardConfig(), {"data": rlhf_inputs["preference"], "eval_fraction": 0.2, "world_dir": ""}, "test"
    )
    data = reward._setup_data(cfg, rlhf_inputs["tokenizer"], 64)
    _disjoint(_prompts(data.train), _prompts(data.val))
    assert data.heldout.how == "fraction" and data.heldout.prompts == len(_prompts(data.val))


def test_compare_prompts(data_files):
    cfg = apply(compare.CompareConfig(), {"data": data_files["worldish"], "eval_fraction": 0.2}, "test")
    world = SimpleNamespace(heldout_personas=lambda: ["a held-out labeler"])
    (train_job, eval_job), info = compare._jobs(cfg, world)
    _disjoint(_prompts(train_job.records), _prompts(eval_job.records), data_files["n_prompts"])
    assert info.how == "fraction"
    with pytest.raises(DataError, match="--eval_fraction"):
        compare._jobs(apply(cfg, {"eval_fraction": 0.0}, "test"), world)


def test_dpo_comparisons(rlhf_inputs, monkeypatch):  # noqa: F811
    grouped = _spy(monkeypatch, dpo, "ranked_groups")
    cfg = apply(dpo.DPOConfig(), {"data": rlhf_inputs["ranked"], "eval_fraction": 0.2, "world_dir": ""}, "test")
    data = dpo.load_comparisons(cfg, rlhf_inputs["tokenizer"], 64, is_main=True)
    (train_ds, *_), (val_ds, *_) = grouped
    _disjoint(_prompts(train_ds), _prompts(val_ds))
    assert data.val and data.heldout.how == "fraction" and data.train_keys == _prompts(train_ds)


def test_ppo_prompts_and_ptx_text(rlhf_inputs, monkeypatch):  # noqa: F811
    packed = _spy(monkeypatch, ppo_setup, "pack_documents")
    settings = {
        "data": rlhf_inputs["prompts"],
        "world_dir": "",
        "eval_fraction": 0.2,
        "eval": {"data": "", "prompts": 100},
        "ptx": {"data": rlhf_inputs["corpus"], "coef": 1.0},
    }
    cfg = apply(ppo.PPOConfig(), settings, "test")
    policy = load_causal_lm(rlhf_inputs["llama_policy"])
    inputs = ppo_setup.load_inputs(cfg, rlhf_inputs["tokenizer"], policy)
    _disjoint(_prompts(inputs.rows), _prompts(inputs.eval_rows))
    assert inputs.heldout.how == "fraction" and len(inputs.prompt_ids) == len(inputs.rows)
    (train_docs, *_), (eval_docs, *_) = packed
    _disjoint(set(train_docs), set(eval_docs))  # PPO-ptx never measures its pretraining loss on what it trains on
    assert inputs.heldout_ptx.how == "fraction"
    # eval.prompts 0: no held-out samples asked for, so every prompt is trained on
    none = ppo_setup.load_inputs(apply(cfg, {"eval": {"prompts": 0}}, "test"), rlhf_inputs["tokenizer"], policy)
    assert none.eval_rows is None and none.heldout.how == "none" and len(none.rows) == 48


# ------------------------------------------------------------------ the built-in world


@pytest.fixture(scope="module")
def small_world(tmp_path_factory) -> Path:
    from alignlab.world import WorldConfig
    from alignlab.world.config import PRESETS
    from alignlab.world.stage import run

    out = tmp_path_factory.mktemp("world")
    run(WorldConfig(**{**PRESETS["smoke"], "output_dir": str(out)}))
    return out


def test_evaluate_measures_the_alignment_tax_on_the_documents_pretraining_held_out(rlhf_inputs, monkeypatch):  # noqa: F811
    """Given the same single corpus file, evaluate's held-out text is exactly what pretraining did not train on."""
    from types import SimpleNamespace

    from alignlab.evaluate import stage as evaluate

    packed = _spy(monkeypatch, packing, "pack_documents")  # pretrain packs through packing.packed_blocks
    settings = {
        "data": rlhf_inputs["corpus"],
        "eval_fraction": 0.2,
        "source": {"tokenizer": rlhf_inputs["llama_policy"]},
    }
    pretrain.load_corpus(apply(pretrain.PretrainConfig(), settings, "test"))
    (train_docs, *_), (pretrain_eval_docs, *_) = packed
    cfg = apply(evaluate.EvaluateConfig(), {"heldout_data": rlhf_inputs["corpus"], "eval_fraction": 0.2}, "test")
    texts, _ = evaluate._tax_data(cfg, SimpleNamespace(has_world=False), lambda msg: None)
    assert set(texts) == set(pretrain_eval_docs) and not set(texts) & set(train_docs)


def test_world_corpus_validation_and_test_prompts_are_not_pretrained_on(small_world):
    corpus = datasets.load_from_disk(str(small_world / "corpus"))
    train, val = list(corpus["train"]["text"]), list(corpus["validation"]["text"])
    assert train and val and not set(train) & set(val)  # the alignment tax is measured on unseen text
    text = "\n".join(train + val)
    test = datasets.load_from_disk(str(small_world / "test"))
    leaked = [p for split in test.values() for p in split["prompt"] if p in text]
    assert not leaked, f"test prompts in the pretraining corpus: {leaked[:3]}"


def test_the_default_worlds_corpus_splits_and_test_prompts_are_disjoint():
    """The world every README number comes from: short template documents repeat word for word, and one
    copy in each corpus split would put training text into the alignment tax's held-out loss."""
    from alignlab.world.build import build_world
    from alignlab.world.config import WorldConfig

    data = build_world(WorldConfig()).data
    train = [r["text"] for r in data["corpus"]["train"]]
    val = [r["text"] for r in data["corpus"]["validation"]]
    assert len(val) > 200 and not set(train) & set(val)
    text = "\n".join(train + val)
    leaked = [r["prompt"] for split in data["test"].values() for r in split if r["prompt"] in text]
    assert not leaked, f"test prompts in the pretraining corpus: {leaked[:3]}"


def test_instruct_tune_never_tunes_on_the_cluster_it_is_judged_on(small_world, tmp_path):
    from alignlab.stages import instruct_tune

    world_dir = small_world
    for cluster in ("world_qa", "classification"):
        data = instruct_tune.tuning_data(world_dir, cluster, ["unanswerable", "harmful"], True, tmp_path / cluster)
        tuned = datasets.load_from_disk(str(data))
        asked = instruct_tune.heldout_prompts(world_dir, cluster, 10_000, seed=0)
        _disjoint(_prompts(tuned["train"]) | _prompts(tuned["validation"]), _prompts(asked))
        assert not _prompts(tuned["train"]) & _prompts(tuned["validation"])  # the tuning run's own validation
    info = instruct_tune.heldout_info(
        world_dir, ["world_qa"], [], {"world_qa": instruct_tune.heldout_prompts(world_dir, "world_qa", 50, 0)}
    )
    assert info.how == "split" and info.overlap == 0 and info.prompts > 0


def test_world_sources_use_their_saved_splits(small_world):
    """The world's data sets are DatasetDicts with their splits: every stage reads them as saved."""
    for name, train, held in (
        ("sft", "train", "validation"),
        ("rm", "train", "validation"),
        ("corpus", "train", "validation"),
    ):
        column, text = ("text", True) if name == "corpus" else ("prompt", False)
        te = load_train_eval(str(small_world / name), train, held, 0.05, column=column, text=text)
        saved = datasets.load_from_disk(str(small_world / name))
        assert te.info.how == "split" and te.info.overlap == 0
        assert len(te.train) == len(saved[train]) and len(te.eval) == len(saved[held])
    ppo_eval = load_train_eval(str(small_world / "ppo"), "train", "test", 0.05, eval_data=str(small_world / "test"))
    assert ppo_eval.info.how == "separate_source" and ppo_eval.info.overlap == 0
