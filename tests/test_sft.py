"""SFT stage: the masked data path, learning on the smoke world, selection by validation reward,
epoch-level resume, and plain (no chat template) GPT-2 with JSONL data in both formats."""

from __future__ import annotations

import json
from pathlib import Path

import datasets
import pytest

pytest.register_assert_rewrite("fixtures_pipeline")
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from alignlab.data.chat import IGNORE, encode_example, encode_prompt
from alignlab.data.collate import collate_sft
from alignlab.data.load import load_demonstrations
from alignlab.evaluate.judges import WorldJudge
from alignlab.models.load import load_tokenizer
from alignlab.outputs import read_metrics
from alignlab.rl.losses import masked_lm_loss
from alignlab.rollout.generate import generate_responses
from alignlab.stages import sft as sft_stage
from fixtures_pipeline import SFT_FAST, run_stage_module

pytest_plugins = ["fixtures_pipeline"]  # session fixtures shared with the other step tests


def _sft(smoke_world, out, **kw):
    over = {
        "model": smoke_world["pretrain"],
        "data": str(Path(smoke_world["world"]) / "sft"),
        "world_dir": smoke_world["world"],
        "output_dir": str(out),
        **SFT_FAST,
        **kw,
    }
    return run_stage_module("sft", "alignlab.stages.sft", "SFTConfig", "smoke", **over)


def test_labels_mask_exactly_the_chat_template_prompt(smoke_world):
    tok = load_tokenizer(smoke_world["tokenizer"])
    _, prompts, responses = load_demonstrations(str(Path(smoke_world["world"]) / "sft"), "train")
    for p, r in list(zip(prompts, responses))[:20]:
        ex = encode_example(tok, p, r, 128)
        chat = tok.apply_chat_template([{"role": "user", "content": p}], tokenize=False, add_generation_prompt=True)
        n_prompt = len(tok(chat, add_special_tokens=False)["input_ids"])
        assert tok.decode(ex["input_ids"][:n_prompt]) == chat
        assert ex["labels"][:n_prompt] == [IGNORE] * n_prompt  # every prompt token masked ...
        assert ex["labels"][n_prompt:] == ex["input_ids"][n_prompt:]  # ... and nothing else
        assert ex["labels"][-1] == tok.eos_token_id
        assert tok.decode(ex["input_ids"][n_prompt:-1]).strip() == r.strip()
    # the messages column gives the same examples as prompt/completion
    ds = datasets.load_from_disk(str(Path(smoke_world["world"]) / "sft"))["train"]
    msgs = [m[:-1] for m in ds["messages"][:5]]
    assert [encode_prompt(tok, m) for m in msgs] == [encode_prompt(tok, p) for p in prompts[:5]]
    # padding adds only -100 labels, so the loss sees response tokens alone
    batch = collate_sft([encode_example(tok, p, r, 128) for p, r in zip(prompts[:4], responses[:4])], tok.pad_token_id)
    n_resp = sum(
        len(encode_example(tok, p, r, 128)["labels"]) - encode_example(tok, p, r, 128)["prompt_len"]
        for p, r in zip(prompts[:4], responses[:4])
    )
    assert int((batch["labels"] != IGNORE).sum()) == n_resp
    assert ((batch["attention_mask"] == 0) <= (batch["labels"] == IGNORE)).all()


def test_sft_lowers_val_loss_and_raises_gold_reward_over_base(smoke_world, smoke_sft):
    s = smoke_sft["summary"]
    assert s["selected_by"] == "val_reward" and s["judge"] == "world"
    assert s["chosen_val_loss"] < s["base_val_loss"] - 0.5
    assert s["best_val_reward"] > s["base_val_reward"] + 0.03
    assert 1 <= s["chosen_epoch"] <= s["epochs"]
    saved = json.loads((Path(smoke_sft["dir"]) / "summary.json").read_text())
    assert saved["chosen_epoch"] == s["chosen_epoch"] and "seconds" in saved
    # independent check: the saved folder is a plain transformers model that answers better than the base
    val = datasets.load_from_disk(str(Path(smoke_world["world"]) / "sft"))["validation"]
    records = [val[i] for i in range(len(val))]
    judge = WorldJudge(smoke_world["world"])
    gold = {}
    for name, path in (("base", smoke_world["pretrain"]), ("sft", smoke_sft["dir"])):
        model = AutoModelForCausalLM.from_pretrained(path)
        tok = AutoTokenizer.from_pretrained(path)
        ids = [encode_prompt(tok, r["prompt"]) for r in records]
        texts = generate_responses(model, tok, ids, 24, temperature=0.0).texts
        gold[name] = sum(judge.gold(records, texts)) / len(texts)
    assert gold["sft"] > gold["base"] + 0.03, gold
    assert abs(gold["sft"] - s["best_val_reward"]) < 1e-3  # the kept model is the one that scored best


def test_selection_keeps_the_epoch_with_best_validation_reward(smoke_world, tmp_path, monkeypatch):
    scripted = iter([0.1, 0.5, 0.9, 0.3])  # base, epoch 1, 2, 3: epoch 2 is best, although loss keeps falling
    monkeypatch.setattr(
        sft_stage, "make_judge", lambda cfg, ds, device: ("mock", lambda recs, resp: [next(scripted)] * len(resp))
    )
    out = tmp_path / "sel"
    s = _sft(smoke_world, out, epochs="3", eval_base="true")
    assert s["chosen_epoch"] == 2 and s["best_val_reward"] == 0.9 and s["selected_by"] == "val_reward"
    hist = {h["epoch"]: h for h in s["history"]}
    assert hist[3]["val_loss"] < hist[2]["val_loss"]  # not the lowest-loss epoch
    # the saved weights are epoch 2's: their val loss is epoch 2's, not epoch 3's
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    _, vp, vr = load_demonstrations(str(Path(smoke_world["world"]) / "sft"), "validation")
    b = collate_sft([encode_example(tok, p, r, 64) for p, r in zip(vp, vr)], tok.pad_token_id)
    with torch.no_grad():
        loss = masked_lm_loss(
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        ).item()
    assert abs(loss - hist[2]["val_loss"]) < 1e-3 and abs(loss - hist[3]["val_loss"]) > 1e-3
    epochs_logged = [m["epoch"] for m in read_metrics(out) if "val_loss" in m]
    assert epochs_logged == [0, 1, 2, 3]
    assert not list(out.glob("best-epoch*"))  # the temporary best-weights folder is cleaned up


def test_resume_after_a_crash_continues_from_the_epoch_checkpoint(smoke_world, tmp_path, monkeypatch):
    ref = _sft(smoke_world, tmp_path / "ref", epochs="3")
    real = sft_stage.make_judge
    calls = {"n": 0}

    def crashing(cfg, ds, device):
        name, fn = real(cfg, ds, device)

        def judge(recs, resp):
            calls["n"] += 1
            if calls["n"] == 4:  # base, epoch 1, epoch 2 fine; dies after training epoch 3
                raise RuntimeError("killed")
            return fn(recs, resp)

        return name, judge

    monkeypatch.setattr(sft_stage, "make_judge", crashing)
    with pytest.raises(RuntimeError, match="killed"):
        _sft(smoke_world, tmp_path / "crash", epochs="3")
    assert json.loads((tmp_path / "crash" / "checkpoint" / "trainer_state.json").read_text())["step"] == 2
    monkeypatch.setattr(sft_stage, "make_judge", real)
    resumed = _sft(smoke_world, tmp_path / "crash", epochs="3", **{"run.resume": "true"})
    for a, b in zip(ref["history"], resumed["history"]):
        assert a["epoch"] == b["epoch"] and abs(a["val_loss"] - b["val_loss"]) < 1e-4
        assert abs(a["val_reward"] - b["val_reward"]) < 1e-6
    assert resumed["chosen_epoch"] == ref["chosen_epoch"]


@pytest.mark.parametrize("fmt", ["pc", "msg"])
def test_sft_on_plain_gpt2_with_jsonl(tiny_gpt2, tmp_path, fmt):
    out = tmp_path / f"gpt2_{fmt}"
    s = run_stage_module(
        "sft",
        "alignlab.stages.sft",
        "SFTConfig",
        "smoke",
        model=tiny_gpt2["model"],
        data=tiny_gpt2[f"{fmt}_train"],
        eval_data=tiny_gpt2[f"{fmt}_validation"],
        world_dir="",
        epochs="2",
        batch_size="8",
        output_dir=str(out),
        **{"optim.lr": "3e-3", "run.tensorboard": "false"},
    )
    assert s["selected_by"] == "val_loss" and s["judge"] == "loss" and s["best_val_reward"] is None
    assert s["chosen_val_loss"] < s["base_val_loss"]
    model = AutoModelForCausalLM.from_pretrained(str(out))
    tok = AutoTokenizer.from_pretrained(str(out))
    assert type(model).__name__ == "GPT2LMHeadModel" and not tok.chat_template
    assert (out / "model.safetensors").exists()
    ex = encode_example(tok, "What is 2 plus 2?", "4.", 64)  # the plain format, prompt masked
    assert tok.decode(ex["input_ids"][: ex["prompt_len"]]).endswith("User: What is 2 plus 2?\nAssistant:")
    assert ex["labels"][: ex["prompt_len"]] == [IGNORE] * ex["prompt_len"]


def test_judge_world_refused_without_world_metadata(tiny_gpt2, tmp_path):
    with pytest.raises(ValueError, match="judge"):
        run_stage_module(
            "sft",
            "alignlab.stages.sft",
            "SFTConfig",
            "smoke",
            model=tiny_gpt2["model"],
            data=tiny_gpt2["pc_train"],
            eval_data=tiny_gpt2["pc_validation"],
            judge="world",
            world_dir=str(tmp_path),
            output_dir=str(tmp_path / "x"),
            **{"run.tensorboard": "false"},
        )


def test_config_sections_keep_the_defaults_and_the_old_flat_keys():
    from alignlab.config import resolve
    from alignlab.stages.reward import RewardConfig

    sft, rm = sft_stage.SFTConfig(), RewardConfig()
    assert (sft.optim.lr, sft.optim.weight_decay, sft.optim.warmup_steps, sft.run.log_interval) == (1e-3, 0.1, 10, 10)
    assert (rm.optim.lr, rm.optim.weight_decay, rm.optim.warmup_steps) == (1e-3, 0.0, 5)
    assert (rm.run.log_interval, rm.run.checkpoint_interval) == (5, 25)
    for cfg in (sft, rm):  # the AdamW both stages used before the sections: betas (0.9, 0.95), eps 1e-8
        assert (cfg.optim.beta1, cfg.optim.beta2) == (0.9, 0.95) and cfg.optim.eps == 1e-8 and cfg.run.threads == 0
    with pytest.warns(FutureWarning, match="'lr' is now 'optim.lr'"):
        old = resolve(sft_stage.SFTConfig, overrides={"lr": "2e-3", "seed": "3", "trust_remote_code": "true"})
    assert old.optim.lr == 2e-3 and old.run.seed == 3 and old.source.trust_remote_code
    assert resolve(sft_stage.SFTConfig, sft_stage.PRESETS, "smoke").optim.warmup_steps == 2
    assert resolve(RewardConfig, overrides={"checkpoint_interval": "4"}).run.checkpoint_interval == 4
