"""LoRA through peft on the tiny random fixtures: settings from the CLI, default targets, gradients
only on adapters, adapter / merged saves that load with plain peft / transformers and with alignlab,
and the four stages (SFT, RM, PPO, DPO) with LoRA, the reference being the adapter-disabled policy."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from alignlab.config import ConfigError, apply, help_lines, resolve
from alignlab.data.chat import encode_example
from alignlab.data.collate import collate_sft
from alignlab.data.load import load_dataset_any
from alignlab.models.load import load_causal_lm
from alignlab.models.lora import (
    LoraSettings,
    apply_lora,
    clear_model_files,
    default_target_modules,
    is_adapter_folder,
    reference_model,
    save_model,
)
from alignlab.models.reward_model import load_reward_model, score_texts
from alignlab.models.value_model import ValueModel
from alignlab.outputs import read_metrics
from alignlab.rl.losses import masked_lm_loss
from alignlab.rollout.scoring import sequence_logprobs
from alignlab.stages import dpo, ppo, reward, sft
from fixtures_rlhf import rlhf_inputs  # noqa: F401

LORA = {"r": 8, "alpha": 16}


@pytest.fixture(autouse=True)
def _one_thread():
    from alignlab.training import cpu_threads

    with cpu_threads(1):
        yield


@pytest.fixture(scope="module")
def sft_files(rlhf_inputs, tmp_path_factory):
    """prompt/completion JSONL (train, validation) from the fixture's ranked answers (the best one)."""
    root = tmp_path_factory.mktemp("lora_sft")
    rows = [json.loads(line) for line in Path(rlhf_inputs["ranked"]).read_text().splitlines()]
    files = {}
    for name, part in (("train", rows[:40]), ("validation", rows[40:])):
        files[name] = root / f"{name}.jsonl"
        files[name].write_text(
            "".join(json.dumps({"prompt": r["prompt"], "completion": r["responses"][0]}) + "\n" for r in part)
        )
    return {k: str(v) for k, v in files.items()}


def _batch(inp, n=8):
    tok = inp["tokenizer"]
    rows = [json.loads(line) for line in Path(inp["ranked"]).read_text().splitlines()][:n]
    return collate_sft([encode_example(tok, r["prompt"], r["responses"][0], 64) for r in rows], tok.pad_token_id)


# ----------------------------------------------------------------------------- settings


def test_lora_settings_from_cli_and_yaml(tmp_path):
    from alignlab.config import parse_overrides

    argv = [
        "--lora.r",
        "8",
        "--lora.alpha",
        "32",
        "--lora.target_modules",
        "q_proj,v_proj",
        "--lora.merge_on_save",
        "true",
    ]
    overrides, preset, config, _ = parse_overrides(argv)
    cfg = resolve(sft.SFTConfig, sft.PRESETS, preset, config, overrides)
    assert cfg.lora == LoraSettings(r=8, alpha=32, target_modules=["q_proj", "v_proj"], merge_on_save=True)
    assert resolve(sft.SFTConfig).lora.r == 0  # off by default: the full fine-tuning path is untouched
    y = tmp_path / "c.yaml"
    y.write_text("lora:\n  r: 4\n  target_modules: [c_attn, c_fc]\n")
    assert resolve(ppo.PPOConfig, yaml_path=y).lora.target_modules == ["c_attn", "c_fc"]
    assert resolve(dpo.DPOConfig, overrides={"lora.target_modules": "[all-linear]"}).lora.target_modules == [
        "all-linear"
    ]
    with pytest.raises(ConfigError, match="lora.rank"):
        resolve(reward.RewardConfig, overrides={"lora.rank": "8"})
    assert any("--lora.r " in line for line in help_lines(reward.RewardConfig))


def test_default_targets_are_attention_and_mlp_projections(rlhf_inputs):
    llama, gpt2 = load_causal_lm(rlhf_inputs["llama_policy"]), load_causal_lm(rlhf_inputs["gpt2_policy"])
    assert default_target_modules(llama) == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert default_target_modules(gpt2) == ["c_attn", "c_proj", "c_fc"]  # Conv1D layers
    m = apply_lora(gpt2, LoraSettings(r=4, target_modules=["all-linear"]), "CAUSAL_LM")
    wrapped = {n.rsplit(".", 1)[-1] for n, mod in m.named_modules() if hasattr(mod, "lora_A")}
    assert wrapped == {"c_attn", "c_proj", "c_fc"}  # all linear layers but the output head
    with pytest.raises(ValueError, match="lora.target_modules"):
        apply_lora(load_causal_lm(rlhf_inputs["llama_policy"]), LoraSettings(r=4, target_modules=["qkv"]), "CAUSAL_LM")
    with pytest.raises(ValueError, match="lora.r"):
        apply_lora(llama, LoraSettings(r=-1), "CAUSAL_LM")
    assert apply_lora(llama, LoraSettings(), "CAUSAL_LM") is llama  # r = 0: no wrapper


# ------------------------------------------------------------- gradients, save and load


@pytest.mark.parametrize("kind", ["llama", "gpt2"])
def test_only_adapters_train_and_saves_load_with_peft_and_transformers(rlhf_inputs, tmp_path, kind):
    base_path = rlhf_inputs[f"{kind}_policy"]
    model = apply_lora(load_causal_lm(base_path), LoraSettings(r=8, alpha=16), "CAUSAL_LM")
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    b = _batch(rlhf_inputs)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(5):
        loss = masked_lm_loss(model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"])
        loss.backward()
        with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
        assert with_grad and all("lora_A" in n or "lora_B" in n for n in with_grad)
        assert with_grad == {n for n, p in model.named_parameters() if p.requires_grad}
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1, losses
    assert all(torch.equal(p, frozen[n]) for n, p in model.named_parameters() if n in frozen)  # base untouched

    model.eval()
    with torch.no_grad():
        live = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        base_logits = load_causal_lm(base_path)(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert (live - base_logits).abs().max() > 1e-3  # the adapter changed the model

    save_model(model, tmp_path / "adapter", LoraSettings(r=8, alpha=16), rlhf_inputs["tokenizer"])
    assert is_adapter_folder(tmp_path / "adapter") and not (tmp_path / "adapter" / "model.safetensors").exists()
    save_model(model, tmp_path / "merged", LoraSettings(r=8, alpha=16, merge_on_save=True))
    loaded = {
        "peft": PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_path), str(tmp_path / "adapter")),
        "transformers_merged": AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")),
        "alignlab": load_causal_lm(str(tmp_path / "adapter")),
    }
    assert not isinstance(loaded["transformers_merged"], PeftModel) and not isinstance(loaded["alignlab"], PeftModel)
    for name, m in loaded.items():
        with torch.no_grad():
            logits = m.eval()(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
        assert torch.allclose(logits, live, atol=1e-5), name
    with torch.no_grad():  # merging for the save left the live model's adapter in place
        again = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
    assert torch.equal(again, live)
    # a stage re-run into the same folder with the other kind of save leaves no stale model beside it
    clear_model_files(tmp_path / "merged")
    save_model(model, tmp_path / "merged", LoraSettings(r=8, alpha=16))
    assert is_adapter_folder(tmp_path / "merged")
    assert (
        not (tmp_path / "merged" / "model.safetensors").exists() and not (tmp_path / "merged" / "config.json").exists()
    )


# -------------------------------------------------------------------------------- stages


def test_lora_sft_stage_learns_and_saves_an_adapter(rlhf_inputs, sft_files, tmp_path):
    out = tmp_path / "sft"
    cfg = apply(
        sft.SFTConfig(),
        {
            "model": rlhf_inputs["llama_policy"],
            "data": sft_files["train"],
            "eval_data": sft_files["validation"],
            "world_dir": "",
            "epochs": 3,
            "batch_size": 8,
            "lr": 1e-2,
            "warmup_steps": 0,
            "val_max_new_tokens": 6,
            "tensorboard": False,
            "device": "cpu",
            "output_dir": str(out),
            "lora": LORA,
        },
        "test",
    )
    s = sft.run(cfg)
    assert s["chosen_val_loss"] < s["base_val_loss"] - 0.2, s
    assert is_adapter_folder(out) and not (out / "model.safetensors").exists() and not list(out.glob("best-epoch*"))
    # the kept epoch's adapter: its validation loss, measured through plain peft, is the one the stage recorded
    tok = rlhf_inputs["tokenizer"]
    rows = [json.loads(line) for line in Path(sft_files["validation"]).read_text().splitlines()]
    b = collate_sft(
        [encode_example(tok, r["prompt"], r["completion"], cfg.seq_len or 96) for r in rows], tok.pad_token_id
    )
    model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(rlhf_inputs["llama_policy"]), str(out)
    ).eval()
    with torch.no_grad():
        loss = masked_lm_loss(
            model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        ).item()
    assert loss == pytest.approx(s["chosen_val_loss"], abs=1e-3)
    # downstream stages load it through alignlab (base + adapter, merged)
    merged = load_causal_lm(str(out))
    with torch.no_grad():
        l2 = masked_lm_loss(
            merged(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits, b["labels"]
        ).item()
    assert l2 == pytest.approx(loss, abs=1e-4)


def test_lora_reward_model_trains_its_head_saves_and_loads(rlhf_inputs, sft_files, tmp_path):
    out = tmp_path / "rm"
    cfg = apply(
        reward.RewardConfig(),
        {
            "model": rlhf_inputs["llama_policy"],
            "data": rlhf_inputs["ranked"],
            "eval_split": "",
            "world_dir": "",
            "demonstrations": sft_files["train"],
            "demonstrations_split": "train",
            "batch_size": 8,
            "epochs": 2,
            "lr": 5e-3,
            "warmup_steps": 0,
            "checkpoint_interval": 0,
            "log_interval": 1,
            "tensorboard": False,
            "device": "cpu",
            "output_dir": str(out),
            "lora": LORA,
        },
        "test",
    )
    s = reward.run(cfg)
    assert is_adapter_folder(out) and not (out / "model.safetensors").exists()
    assert s["reward_shift"] != 0.0 and s["demonstrations_mean_after_shift"] == pytest.approx(0.0, abs=1e-4)
    losses = [m["loss"] for m in read_metrics(out) if "loss" in m]
    assert losses[-1] < losses[0], losses

    rm = load_reward_model(str(out))  # alignlab: base + adapter merged, reward_shift kept
    assert not isinstance(rm, PeftModel) and rm.config.reward_shift == pytest.approx(
        s["reward_shift"], abs=1e-4
    )  # summary rounds to 4 places
    torch.manual_seed(cfg.run.seed)  # the head's initial draw, as the stage made it
    fresh = AutoModelForSequenceClassification.from_pretrained(rlhf_inputs["llama_policy"], num_labels=1)
    assert not torch.allclose(rm.score.weight, fresh.score.weight)  # the score head was trained
    plain = PeftModel.from_pretrained(
        AutoModelForSequenceClassification.from_pretrained(rlhf_inputs["llama_policy"], num_labels=1), str(out)
    )
    plain.config.pad_token_id = rlhf_inputs["tokenizer"].pad_token_id
    prompts, responses = ["What colour is Zel?"] * 2, ["Zel is red.", "I don't know."]
    ours = score_texts(rm, rlhf_inputs["tokenizer"], prompts, responses, shifted=False)
    theirs = score_texts(plain, rlhf_inputs["tokenizer"], prompts, responses, shifted=False)
    assert torch.allclose(ours, theirs, atol=1e-5)


def _ppo_cfg(inp, out, **kw):
    base = dict(
        policy=inp["llama_policy"],
        reward_model=inp["llama_rm"],
        data=inp["prompts"],
        world_dir="",
        eval={"data": inp["prompts"], "prompts": 8, "greedy": False},
        ptx={"data": ""},
        iterations=2,
        batch_size=8,
        minibatch_size=4,
        ppo_epochs=2,
        rollout={"max_new_tokens": 8, "gen_batch_size": 8},
        run={"checkpoint_interval": kw.pop("checkpoint_interval", 0), "tensorboard": False, "device": "cpu"},
        output_dir=str(out),
        optim={"warmup_steps": 0, "lr": 1e-3},
        lora=LORA,
    )
    base.update(kw)
    return apply(ppo.PPOConfig(), base, "test")


def test_lora_ppo_reference_is_the_base_model_with_the_adapter_off(rlhf_inputs):
    from accelerate import Accelerator

    cfg = _ppo_cfg(rlhf_inputs, "/nonexistent")
    policy = apply_lora(load_causal_lm(cfg.policy), cfg.lora, "CAUSAL_LM")
    value = ValueModel(load_reward_model(cfg.reward_model))
    value.model = apply_lora(value.model, cfg.lora, "SEQ_CLS")
    rm = ValueModel(load_reward_model(cfg.reward_model))
    trainer = ppo.PPOTrainer(cfg, policy, None, rm, value, rlhf_inputs["tokenizer"], Accelerator(cpu=True))
    prompts = [json.loads(line)["prompt"] for line in Path(rlhf_inputs["prompts"]).read_text().splitlines()][:8]
    from alignlab.data.chat import encode_prompt

    ids = [encode_prompt(rlhf_inputs["tokenizer"], p) for p in prompts]
    base = load_causal_lm(cfg.policy).eval()
    base_params = dict(base.named_parameters())
    for it in range(3):
        result = trainer.iteration(it, ids)
        stats, exp = result.stats, result.experience
        with torch.no_grad():
            T = cfg.rollout.temperature
            base_lp = sequence_logprobs(base, exp.input_ids, exp.attention_mask, exp.response_start, T)
        assert torch.allclose(exp.ref_logprobs, base_lp.logprobs * exp.response_mask, atol=1e-5)
        assert math.isfinite(stats["pg_loss"]) and math.isfinite(stats["vf_loss"])
    # the adapter moved the policy away from the reference (k3 >= 0; the k1 estimate may be < 0 on a sample)
    assert stats["kl_k3"] > 1e-4 and not torch.allclose(exp.old_logprobs, exp.ref_logprobs, atol=1e-3)
    # only adapters (and the value head) trained: the shared base weights are the SFT model's
    for n, p in trainer.policy.get_base_model().named_parameters():
        if "lora_" not in n:
            assert torch.equal(p, base_params[n.replace(".base_layer", "")]), n
    assert trainer.ref is None  # no second copy of the policy
    with reference_model(trainer.policy, trainer.ref) as r, torch.no_grad():
        lp = sequence_logprobs(r, exp.input_ids, exp.attention_mask, exp.response_start, T).logprobs
    assert torch.allclose(lp * exp.response_mask, base_lp.logprobs * exp.response_mask, atol=1e-5)


def test_lora_ppo_stage_saves_adapters_and_resumes_exactly(rlhf_inputs, tmp_path):
    full = tmp_path / "full"
    cfg = _ppo_cfg(rlhf_inputs, full, iterations=3, checkpoint_interval=2)
    s_full = ppo.run(cfg)
    assert is_adapter_folder(full) and is_adapter_folder(full / "value_model")
    assert not (full / "model.safetensors").exists()
    ckpt = tmp_path / "resumed" / "checkpoint"
    shutil.copytree(full, tmp_path / "resumed")
    assert is_adapter_folder(ckpt / "policy") and json.loads((ckpt / "trainer_state.json").read_text())["step"] == 2
    s_res = ppo.run(apply(cfg, {"output_dir": str(tmp_path / "resumed"), "run": {"resume": True}}, "test"))
    assert s_res["resumed_from_iteration"] == 2

    def lines(d):
        return [
            {k: v for k, v in m.items() if k != "time" and not k.startswith("t_") and "per_sec" not in k}
            for m in read_metrics(d)
        ]

    assert lines(tmp_path / "resumed") == lines(full)
    assert s_res["heldout_rm_score_final"] == s_full["heldout_rm_score_final"]
    # the saved policy and value model load through alignlab (merged) and through plain peft
    policy = load_causal_lm(str(full))
    value = load_reward_model(str(full / "value_model"))
    assert value.config.reward_shift == pytest.approx(0.25)  # the RM's shift travels with the value adapter
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(rlhf_inputs["llama_policy"]), str(full))
    assert policy.config.vocab_size == len(rlhf_inputs["tokenizer"])


def test_lora_dpo_runs_with_the_adapter_disabled_policy_as_reference(rlhf_inputs, tmp_path):
    out = tmp_path / "dpo"
    cfg = apply(
        dpo.DPOConfig(),
        dict(
            policy=rlhf_inputs["gpt2_policy"],
            data=rlhf_inputs["ranked"],
            eval_split="train",
            eval_max_prompts=8,
            world_dir="",
            eval_data=rlhf_inputs["prompts"],
            eval_prompts=4,
            max_new_tokens=6,
            max_steps=3,
            batch_size=4,
            optim={"warmup_steps": 0, "lr": 1e-2},
            run={"checkpoint_interval": 0, "log_interval": 1, "tensorboard": False, "device": "cpu"},
            output_dir=str(out),
            max_len=64,
            lora=LORA,
        ),
        "test",
    )
    s = dpo.run(cfg)
    logged = [m for m in read_metrics(out) if "reward_accuracy" in m]
    assert logged[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # adapter B = 0: policy == reference at step 1
    assert logged[-1]["loss"] < logged[0]["loss"] and s["final_train_loss"] < math.log(2)
    assert is_adapter_folder(out)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(rlhf_inputs["gpt2_policy"]), str(out))
    groups = dpo.ranked_groups(load_dataset_any(rlhf_inputs["ranked"]), rlhf_inputs["tokenizer"], 64, "ranked")[:4]
    ids, mask, labels, c, r = dpo.collate(groups, rlhf_inputs["tokenizer"].pad_token_id)
    with torch.no_grad():
        pol = dpo.sequence_logps(model, ids, mask, labels)
        with model.disable_adapter():
            ref = dpo.sequence_logps(model, ids, mask, labels)
        base = dpo.sequence_logps(AutoModelForCausalLM.from_pretrained(rlhf_inputs["gpt2_policy"]), ids, mask, labels)
    assert torch.allclose(ref, base, atol=1e-4) and not torch.allclose(pol, ref, atol=1e-3)
    assert ((pol - ref)[c] - (pol - ref)[r]).mean() > 0  # the preferred responses gained relative to the reference


def test_lora_stages_chain_sft_reward_ppo(rlhf_inputs, sft_files, tmp_path):
    """Each LoRA stage's adapter folder is the next stage's input: an RM on a LoRA SFT model (an adapter whose
    base is itself an adapter folder) and PPO from both; alignlab's loaders follow the chain."""
    common = {"tensorboard": False, "device": "cpu", "lora": LORA}
    sft.run(
        apply(
            sft.SFTConfig(),
            {
                "model": rlhf_inputs["llama_policy"],
                "data": sft_files["train"],
                "eval_data": sft_files["validation"],
                "world_dir": "",
                "epochs": 1,
                "batch_size": 8,
                "lr": 1e-2,
                "warmup_steps": 0,
                "eval_base": False,
                "val_max_new_tokens": 4,
                "output_dir": str(tmp_path / "sft"),
                **common,
            },
            "test",
        )
    )
    reward.run(
        apply(
            reward.RewardConfig(),
            {
                "model": str(tmp_path / "sft"),
                "data": rlhf_inputs["ranked"],
                "eval_split": "",
                "world_dir": "",
                "batch_size": 8,
                "warmup_steps": 0,
                "checkpoint_interval": 0,
                "output_dir": str(tmp_path / "rm"),
                **common,
            },
            "test",
        )
    )
    rm_cfg = json.loads((tmp_path / "rm" / "adapter_config.json").read_text())
    assert rm_cfg["base_model_name_or_path"] == str(tmp_path / "sft")  # the RM adapter sits on the SFT model
    # the merged RM's backbone is the merged SFT model plus the RM's own adapter: not the raw base model
    sft_model, rm = load_causal_lm(str(tmp_path / "sft")), load_reward_model(str(tmp_path / "rm"))
    base = load_causal_lm(rlhf_inputs["llama_policy"])
    w = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(sft_model.state_dict()[w], base.state_dict()[w])
    assert not torch.equal(rm.state_dict()[w], sft_model.state_dict()[w])
    s = ppo.run(
        _ppo_cfg(
            rlhf_inputs, tmp_path / "ppo", policy=str(tmp_path / "sft"), reward_model=str(tmp_path / "rm"), iterations=1
        )
    )
    assert math.isfinite(s["heldout_rm_score_final"])
    assert json.loads((tmp_path / "ppo" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(
        tmp_path / "sft"
    )
    load_causal_lm(str(tmp_path / "ppo"))


def test_lora_dpo_resume_matches_uninterrupted(rlhf_inputs, tmp_path):
    """training.save_checkpoint / load_checkpoint with an adapter: only adapter weights and their optimiser state."""
    full = tmp_path / "full"
    cfg = apply(
        dpo.DPOConfig(),
        dict(
            policy=rlhf_inputs["llama_policy"],
            data=rlhf_inputs["ranked"],
            eval_split="",
            world_dir="",
            eval_data="",
            max_steps=4,
            batch_size=4,
            optim={"warmup_steps": 0, "lr": 1e-2},
            run={"checkpoint_interval": 2, "log_interval": 1, "tensorboard": False, "device": "cpu"},
            output_dir=str(full),
            max_len=64,
            lora=LORA,
        ),
        "test",
    )
    dpo.run(cfg)
    ckpt = full / "checkpoint"
    assert is_adapter_folder(ckpt) and not (ckpt / "model.safetensors").exists()
    n_trainable = sum(1 for n in torch.load(ckpt / "optimizer.pt", weights_only=True)["state"])
    assert n_trainable == 2 * 2 * 7  # lora_A and lora_B of 7 projections in each of 2 layers: nothing else
    shutil.copytree(full, tmp_path / "resumed")
    dpo.run(apply(cfg, {"output_dir": str(tmp_path / "resumed"), "run": {"resume": True}}, "test"))

    def lines(d):
        return [{k: v for k, v in m.items() if k != "time"} for m in read_metrics(d)]

    assert lines(tmp_path / "resumed") == lines(full)
    shutil.copytree(full, tmp_path / "no_lora")
    with pytest.raises(ValueError, match="holds a LoRA adapter"):  # resuming it without LoRA is refused, by name
        dpo.run(
            apply(cfg, {"output_dir": str(tmp_path / "no_lora"), "run": {"resume": True}, "lora": {"r": 0}}, "test")
        )
