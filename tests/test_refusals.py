"""Every refusal in the files listed in ``refusal_sites.COVERED_FILES`` (data loading, config resolution, the shared
sections, the training skeleton, model loading, and the stages' checks) is triggered here, cheaply (a config
object, a tiny file, a stub; no training), and its message checked.

Each case names its site by quoting part of the literal text of the message in the source; a test fails when a
refusal in those files has no case (add one, or a reason to EXEMPT), so the count reported by
``python scripts/raise_sites.py`` stays honest.
"""

from __future__ import annotations

import json
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from alignlab.config import ConfigError, apply, check_output_name, dotted_to_nested, load_yaml, parse_overrides, resolve
from alignlab.errors import DataError, MissingInputError, ModelLoadError, ModelNotFoundError, UserError
from fixtures_rlhf import rlhf_inputs  # noqa: F401  (ctx.inputs asks pytest for it by name)
from refusal_sites import all_sites, matching


@dataclass
class Ctx:
    """What a trigger may use: a fresh folder, the tiny models and data (built once per session), monkeypatch."""

    tmp: Path
    request: Any
    monkeypatch: Any

    @property
    def inputs(self) -> dict:
        return self.request.getfixturevalue("rlhf_inputs")

    def jsonl(self, name: str, rows: list[dict]) -> str:
        path = self.tmp / name
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        return str(path)

    def folder(self, name: str, files: dict[str, str | bytes]) -> str:
        path = self.tmp / name
        path.mkdir()
        for f, content in files.items():
            (path / f).write_bytes(content if isinstance(content, bytes) else content.encode())
        return str(path)

    def offline(self) -> None:
        import datasets.config
        import huggingface_hub.constants

        self.monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        self.monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)

    def small_vocab_model(self) -> str:
        """A tiny Llama with fewer embeddings than the tokenizer saved beside it has tokens."""
        from transformers import LlamaConfig, LlamaForCausalLM

        path = self.tmp / "small_vocab"
        cfg = LlamaConfig(
            vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2
        )
        LlamaForCausalLM(cfg).save_pretrained(path)
        self.inputs["tokenizer"].save_pretrained(path)
        return str(path)


@dataclass(frozen=True)
class Refusal:
    file: str  # under src/alignlab/
    site: str  # part of the literal text of the message where it is raised: which refusal this is
    trigger: Callable[[Ctx], object]  # must raise
    error: type[BaseException] = UserError
    message: str = ""  # a regex the message must match; default: the site text itself


def _cfg(module: str, cls: str, preset: str | None = "smoke", **overrides):
    """A stage's config resolved as from the command line (``a__b`` for ``a.b``)."""
    import importlib

    mod = importlib.import_module(module)
    dotted = {k.replace("__", "."): v for k, v in overrides.items()}
    return resolve(getattr(mod, cls), getattr(mod, "PRESETS", {}), preset, None, dotted)


def _sft(**kw):
    return _cfg("alignlab.stages.sft", "SFTConfig", **kw)


def _ppo(**kw):
    return _cfg("alignlab.stages.ppo", "PPOConfig", **kw)


def _compare(**kw):
    return _cfg("alignlab.stages.compare", "CompareConfig", **kw)


def _one_process(ctx: Ctx, module, n: int = 2) -> None:
    """The stage's accelerator reports ``n`` processes (the checks that split a batch over ranks)."""
    stub = SimpleNamespace(num_processes=n, is_main_process=True, device="cpu")
    ctx.monkeypatch.setattr(module, "make_accelerator", lambda device, stage: stub)


def _saved_splits(ctx: Ctx) -> str:
    import datasets

    path = ctx.tmp / "saved"
    datasets.DatasetDict({"train": datasets.Dataset.from_list([{"text": "x"}])}).save_to_disk(str(path))
    return str(path)


def _dataset(rows: list[dict]):
    import datasets

    return datasets.Dataset.from_list(rows)


def _mismatched_checkpoint(ctx: Ctx):
    import torch
    from safetensors.torch import save_file

    from alignlab import training

    (ctx.tmp / "ckpt").mkdir()
    save_file({"other.weight": torch.zeros(2, 2)}, str(ctx.tmp / "ckpt" / "model.safetensors"))
    return training.load_checkpoint(ctx.tmp / "ckpt", torch.nn.Linear(2, 2), None, None)


def _sharded_checkpoint(ctx: Ctx):
    import torch

    from alignlab import training

    (ctx.tmp / "ckpt" / "sharded").mkdir(parents=True)
    return training.load_checkpoint(ctx.tmp / "ckpt", torch.nn.Linear(2, 2), None, None)


def _no_cuda(ctx: Ctx):
    import torch

    from alignlab.training import resolve_device

    ctx.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    return resolve_device("cuda")


def _world_stub(heldout: list) -> SimpleNamespace:
    return SimpleNamespace(heldout_personas=lambda: heldout)


def _world_dir(ctx: Ctx, clusters: list[str]) -> Path:
    (ctx.tmp / "world").mkdir()
    (ctx.tmp / "world" / "stats.json").write_text(json.dumps({"clusters": clusters}))
    return ctx.tmp / "world"


def _clusters(ctx: Ctx, heldout: list[str], exclude: list[str]):
    from alignlab.stages.instruct_tune import InstructTuneConfig, check_clusters

    world = _world_dir(ctx, ["world_qa", "extraction"])
    return check_clusters(InstructTuneConfig(heldout_clusters=heldout, exclude_clusters=exclude), world)


def _pipeline(**kw):
    from alignlab.stages.pipeline import PipelineConfig, run

    return run(PipelineConfig(**kw))


def _ppo_models_small_vocab(ctx: Ctx):
    from alignlab.stages.ppo_setup import load_models

    cfg = _ppo(policy=ctx.small_vocab_model(), reward_model=ctx.inputs["llama_rm"])
    return load_models(cfg, None, use_rm=True)


def _world_reward(reward_fn, judge):
    from alignlab.stages.ppo_setup import world_reward_fn

    inputs = SimpleNamespace(judge=judge, rows=[{"prompt": "p"}])
    return world_reward_fn(_ppo(reward_source="world"), inputs, reward_fn)


def _check_shapes(n_proc: int, has_reward: bool = True, blocks=None, has_value: bool = True, **kw):
    from alignlab.stages.ppo_setup import check_shapes

    return check_shapes(_ppo(**kw), n_proc, has_reward, blocks, has_value)


def _check_settings(**kw):
    from alignlab.stages.ppo_setup import check_settings

    return check_settings(_ppo(**kw))


def _check_sharded(**kw):
    from alignlab.stages.ppo_setup import check_sharded

    return check_sharded(_ppo(**kw))


def _vllm_missing(ctx: Ctx):
    from alignlab.stages import ppo_setup

    ctx.monkeypatch.setattr(ppo_setup, "vllm_unavailable_reason", lambda: "vllm is not installed")
    return _check_settings(rollout__backend="vllm")


def _ei_check(**kw):
    from alignlab.stages.expert_iteration import check_settings

    return check_settings(_cfg("alignlab.stages.expert_iteration", "ExpertIterationConfig", **kw))


def _ei_select(ctx: Ctx, **kw):
    from alignlab.stages.expert_iteration import select

    cfg = _cfg("alignlab.stages.expert_iteration", "ExpertIterationConfig", policy=ctx.inputs["llama_policy"], **kw)
    return select(cfg, [{"prompt": "p"}], lambda records, texts: [0.0] * len(texts))


def _make_judge(**kw):
    from alignlab.stages.sft import make_judge

    return make_judge(_sft(**kw), _dataset([{"prompt": "p", "completion": "c"}]), "cpu")


def _sft_run(**kw):
    from alignlab.stages.sft import run

    return run(_sft(**kw))


def _with_warnings_off(fn):
    def call(ctx):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            return fn(ctx)

    return call


# fmt: off
CASES: list[Refusal] = [
    # ------------------------------------------------------------------------------------------- data/load.py
    Refusal("data/load.py", "at column", lambda c: _load(_write(c.tmp / "bad.jsonl", '{"text": "ok"}\n{"text": x}\n')),
            DataError, r"bad\.jsonl:2: malformed JSON \(.* at column \d+\)"),
    Refusal("data/load.py", "expected a JSON object per line, got",
            lambda c: _load(_write(c.tmp / "l.jsonl", '{"text": "a"}\n[1, 2]\n')), DataError,
            r"l\.jsonl:2: expected a JSON object per line, got list"),
    Refusal("data/load.py", ": no rows", lambda c: _load(_write(c.tmp / "e.jsonl", "\n\n")), DataError,
            r"e\.jsonl: no rows"),
    Refusal("data/load.py", "has different columns from row 1",
            lambda c: _load(c.jsonl("d.jsonl", [{"a": 1}, {"b": 2}])), DataError,
            r"row 2 has different columns from row 1 \(missing \['a'\], extra \['b'\]\)"),
    Refusal("data/load.py", "malformed JSON (…)", lambda c: _load(_write(c.tmp / "a.json", '[{"text": x}]')),
            DataError, r"a\.json:1: malformed JSON \("),
    Refusal("data/load.py", "unsupported file type", lambda c: _load(_write(c.tmp / "f.csv", "a\n1\n")), DataError,
            r"unsupported file type '\.csv' \(use \.jsonl, \.json, \.parquet or a saved datasets folder\)"),
    Refusal("data/load.py", "not a folder written by datasets.save_to_disk", lambda c: _load(c.folder("empty", {})),
            DataError),
    Refusal("data/load.py", "no split '", lambda c: _load(_saved_splits(c), "test"), DataError,
            r"no split 'test' \(splits: train\)"),
    Refusal("data/load.py", "data not found: ", lambda c: _load("./nowhere.jsonl"), DataError,
            r"data not found: \./nowhere\.jsonl"),
    Refusal("data/load.py", "_hub_failure(…)", lambda c: c.offline() or _load("org/data-not-cached"), DataError,
            r"data not found: 'org/data-not-cached' is no local file or folder, is not in the Hugging Face cache"),
    Refusal("data/load.py", "match no known format", lambda c: _detect([{"foo": 1}]), DataError,
            r"columns \['foo'\] match no known format; accepted: text \['text'\]"),
    Refusal("data/load.py", "this stage accepts", lambda c: _require([{"prompt": "p"}], ("preference",)), DataError,
            r"d: has columns \['prompt'\]; this stage accepts preference \(preference: missing \['chosen', 'rejected'\]\)"),
    Refusal("data/load.py", "to the column to use", lambda c: _column([{"body": "x"}], "text", "ptx.text_column"),
            DataError, r"src: no column 'text'; columns: \['body'\]; set ptx\.text_column to the column to use"),
    Refusal("data/load.py", "empty completion",
            lambda c: _demos(c.jsonl("s.jsonl", [{"prompt": "p", "completion": " "}])), DataError,
            r"s\.jsonl \(train split\) row 0: empty completion"),
    Refusal("data/load.py", "row …: …",
            lambda c: _demos(c.jsonl("m.jsonl", [{"messages": [{"role": "user", "content": "hi"}]}])), DataError,
            r"m\.jsonl \(train split\) row 0: messages: the last message must be the assistant's answer"),
    # ---------------------------------------------------------------------------------------------- config.py
    Refusal("config.py", "may not be null", lambda c: apply(_sft(), {"epochs": None}, "x.yaml"), ConfigError,
            r"x\.yaml: 'epochs' may not be null \(expected int\)"),
    Refusal("config.py", "expects true/false", lambda c: _sft(run__resume="maybe"), ConfigError,
            r"command line: 'run\.resume' expects true/false, got 'maybe'"),
    Refusal("config.py", "expects an integer", lambda c: apply(_sft(), {"epochs": True}, "x.yaml"), ConfigError,
            r"'epochs' expects an integer, got True"),
    Refusal("config.py", "expects an integer", lambda c: _sft(epochs="three"), ConfigError,
            r"'epochs' expects an integer, got 'three'"),
    Refusal("config.py", "expects a number", lambda c: _sft(optim__lr="fast"), ConfigError,
            r"'optim\.lr' expects a number, got 'fast'"),
    Refusal("config.py", "expects a string", lambda c: apply(_sft(), {"model": [1]}, "x.yaml"), ConfigError,
            r"'model' expects a string, got \[1\]"),
    Refusal("config.py", "expects a list", lambda c: _pipeline_cfg({"seeds": 5}), ConfigError,
            r"'seeds' expects a list, got 5"),
    Refusal("config.py", "expects a mapping", lambda c: _pipeline_cfg({"stage_overrides": "[1, 2]"}), ConfigError,
            r"'stage_overrides' expects a mapping, got \[1, 2\]"),
    Refusal("config.py", "must be one of", lambda c: _ppo(rollout__backend="tpu"), ConfigError,
            r"'rollout\.backend' must be one of \['transformers', 'vllm'\], got 'tpu'"),
    Refusal("config.py", "' is not valid YAML", lambda c: _pipeline_cfg({"stage_overrides": "{a: [1"}), ConfigError,
            r"'stage_overrides' is not valid YAML"),
    Refusal("config.py", "both given, with different values",
            _with_warnings_off(lambda c: apply(_sft(), {"lr": 1.0, "optim": {"lr": 2.0}}, "x.yaml")), ConfigError,
            r"x\.yaml: 'lr' and 'optim\.lr' both given, with different values"),
    Refusal("config.py", "unknown key '", lambda c: _sft(epoch_s="1"), ConfigError,
            r"command line: unknown key 'epoch_s' \(did you mean 'epochs'\?\); known keys: "),
    Refusal("config.py", "is a section; give it as a mapping", lambda c: apply(_sft(), {"optim": 3}, "x.yaml"),
            ConfigError, r"x\.yaml: 'optim' is a section; give it as a mapping of its keys"),
    Refusal("config.py", "is not a plain name", lambda c: check_output_name("../x", "clusters[0]"), ConfigError,
            r"clusters\[0\]: '\.\./x' is not a plain name; outputs are written only inside the output folder"),
    Refusal("config.py", "conflicts with another override", lambda c: dotted_to_nested({"a": 1, "a.b": 2}),
            ConfigError, r"command line: 'a\.b' conflicts with another override"),
    Refusal("config.py", "config file not found", lambda c: load_yaml(c.tmp / "none.yaml"), ConfigError),
    Refusal("config.py", ": not valid YAML", lambda c: load_yaml(_write(c.tmp / "b.yaml", "a: [1\n")), ConfigError,
            r"b\.yaml line \d+: not valid YAML"),
    Refusal("config.py", "expected a mapping of config keys at the top level",
            lambda c: load_yaml(_write(c.tmp / "l.yaml", "- 1\n- 2\n")), ConfigError),
    Refusal("config.py", "unknown preset '", lambda c: _cfg("alignlab.stages.sft", "SFTConfig", preset="huge"),
            ConfigError, r"unknown preset 'huge'; choose from: smoke, default"),
    Refusal("config.py", "unexpected argument", lambda c: parse_overrides(["sft"]), ConfigError,
            r"command line: unexpected argument 'sft' \(keys are given as --key value\)"),
    # -------------------------------------------------------------------------------------------- training.py
    Refusal("training.py", "device: expected auto, cpu or cuda", lambda c: _device("tpu"), ConfigError,
            r"device: expected auto, cpu or cuda, got 'tpu'"),
    Refusal("training.py", "cuda requested but no CUDA device", _no_cuda, ConfigError),
    Refusal("training.py", "checkpoint does not match the model", _mismatched_checkpoint, ConfigError,
            r"ckpt: checkpoint does not match the model \(missing \['weight', 'bias'\], unexpected \['other\.weight'\]\)"),
    Refusal("training.py", "holds FSDP2 shards", _sharded_checkpoint, ConfigError,
            r"ckpt: this checkpoint holds FSDP2 shards; resume it with run.fsdp"),
    Refusal("training.py", "became", lambda c: _finite(float("nan")), FloatingPointError,
            r"sft: loss became nan at step 3, before the weights were updated; no checkpoint was written yet"),
    # ------------------------------------------------------------------------------------------ models/load.py
    # load_policy (the compare stage's and alignlab label's sampler), reached through the compare stage
    Refusal("models/load.py", "embeddings (give the SFT output",
            lambda c: _compare_policy(c.small_vocab_model()), ModelLoadError,
            r"small_vocab: tokenizer has \d+ tokens but the model only 64 embeddings"),
    Refusal("models/load.py", "model path not found", lambda c: _model_path("does/not/exist"), ModelNotFoundError,
            r"model path not found: does/not/exist"),
    Refusal("models/load.py", "LoRA adapter folder without",
            lambda c: _model_path(c.folder("lora", {"adapter_config.json": "{}"})), ModelLoadError,
            r"lora: LoRA adapter folder without adapter_model\.safetensors"),
    Refusal("models/load.py", "not a Hugging Face model folder (no config.json)",
            lambda c: _model_path(c.folder("m", {"weights.safetensors": b""})), ModelLoadError),
    Refusal("models/load.py", "only pickle weights",
            lambda c: _model_path(c.folder("p", {"config.json": "{}", "pytorch_model.bin": b""})), ModelLoadError,
            r"p: only pickle weights \(pytorch_model\.bin\); .* convert it once"),
    Refusal("models/load.py", "no *.safetensors weights",
            lambda c: _model_path(c.folder("n", {"config.json": "{}"})), ModelLoadError),
    Refusal("models/load.py", "tokenizer path not found", lambda c: _tokenizer_path("./no_tok"), ModelNotFoundError,
            r"tokenizer path not found: \./no_tok"),
    Refusal("models/load.py", "no tokenizer files", lambda c: _tokenizer_path(c.folder("t", {"config.json": "{}"})),
            ModelLoadError, r"t: no tokenizer files .*; name the tokenizer with source\.tokenizer"),
    Refusal("models/load.py", "why_not_loadable(…)", lambda c: c.offline() or _lm("org/not-cached"),
            ModelNotFoundError, r"model 'org/not-cached' not found locally \(no such folder, not in the Hugging Face"),
    # --------------------------------------------------------------------------------------- stages/compare.py
    Refusal("stages/compare.py", "'k' must be between", lambda c: _compare(k="3"), ConfigError,
            r"compare: 'k' must be between 4 and 9 \(InstructGPT ranks K=4\.\.9 responses per prompt\), got 3"),
    Refusal("stages/compare.py", "'temperature' must be >= 0", lambda c: _compare(temperature="-1"), ConfigError),
    Refusal("stages/compare.py", "slots per prompt", lambda c: _compare(k="4", policies="[a, b, c, d]"), ConfigError,
            r"compare: 5 sources but only k=4 slots per prompt"),
    Refusal("stages/compare.py", "is not 'path' or 'path@temperature'", lambda c: _compare(policies="[a@hot]"),
            ConfigError, r"compare: 'policies\[0\]': 'a@hot' is not 'path' or 'path@temperature' \(temperature 'hot'"),
    Refusal("stages/compare.py", "temperature in ", lambda c: _compare(policies="['a@-1']"), ConfigError,
            r"compare: 'policies\[0\]': temperature in 'a@-1' must be >= 0"),
    Refusal("stages/compare.py", "empty model path in", lambda c: _compare(policy="", policies="['@0.5']"), ConfigError),
    Refusal("stages/compare.py", "the world has no held-out labelers", lambda c: _compare_jobs(c, []), DataError),
    Refusal("stages/compare.py", "the labelers need the world's prompt/task/meta columns",
            lambda c: _compare_jobs(c, ["a held-out labeler"], prompts=4), DataError,
            r"p\.jsonl \(train split\): the labelers need the world's prompt/task/meta columns \(got \['prompt'\]\)"),
    Refusal("stages/compare.py", "no_eval_message(…)", lambda c: _compare_jobs(c, ["a held-out labeler"]), DataError,
            r"compare: no held-out data in .*p\.jsonl \(a single distinct prompt\); compare needs some"),
    Refusal("stages/compare.py", "are both", lambda c: _compare(train_split="train", eval_split="train"), ConfigError,
            r"compare: 'train_split' and 'eval_split' are both 'train'"),
    # ------------------------------------------------------------------------------------------- stages/dpo.py
    Refusal("stages/dpo.py", "no prompt with at least two responses",
            lambda c: _dpo_groups([{"prompt": "p", "chosen": "same", "rejected": " same"}]), DataError,
            r"src: no prompt with at least two responses"),
    Refusal("stages/dpo.py", "must be a multiple of the number of processes", lambda c: _dpo_setup(c), ConfigError,
            r"batch_size \(3\) must be a multiple of the number of processes \(2\)"),
    # ---------------------------------------------------------------------------------- stages/instruct_tune.py
    Refusal("stages/instruct_tune.py", "has no stats.json",
            lambda c: _instruct_tune_check(c.tmp / "nowhere"), MissingInputError,
            r"nowhere has no stats\.json; build the world with `alignlab world --output_dir "),
    Refusal("stages/instruct_tune.py", "unknown cluster(s)", lambda c: _clusters(c, ["poetry"], []), ConfigError,
            r"heldout_clusters: unknown cluster\(s\) \['poetry'\]; the world has \['extraction', 'world_qa'\]"),
    Refusal("stages/instruct_tune.py", "heldout_clusters and exclude_clusters overlap",
            lambda c: _clusters(c, ["world_qa"], ["world_qa"]), ConfigError),
    # ------------------------------------------------------------------------------ stages/expert_iteration.py
    Refusal("stages/expert_iteration.py", "needs at least 2 samples per prompt", lambda c: _ei_check(n="1"),
            ConfigError, r"n: best-of-n needs at least 2 samples per prompt to choose from, got 1"),
    Refusal("stages/expert_iteration.py", "greedy decoding gives the same answer n times",
            lambda c: _ei_check(temperature="0"), ConfigError),
    Refusal("stages/expert_iteration.py", "leaves no room for a prompt in the policy's context",
            lambda c: _ei_select(c, max_new_tokens="90"), ConfigError,
            r"max_new_tokens \(90\) leaves no room for a prompt in the policy's context"),
    # -------------------------------------------------------------------------------------- stages/pipeline.py
    Refusal("stages/pipeline.py", "the pipeline writes each step in RUN/<step>",
            lambda c: _pipeline(output_dir=str(c.tmp), stage_overrides={"sft": {"output_dir": "/tmp/x"}}), ConfigError,
            r"stage_overrides\.sft\.output_dir: the pipeline writes each step in RUN/<step>"),
    Refusal("stages/pipeline.py", "stages/redo: unknown step(s)",
            lambda c: _pipeline(output_dir=str(c.tmp), stages=["world", "rlhf"]), ConfigError,
            r"stages/redo: unknown step\(s\) \['rlhf'\]; known: world, tokenizer"),
    Refusal("stages/pipeline.py", "stage_overrides: unknown step(s)",
            lambda c: _pipeline(output_dir=str(c.tmp), stage_overrides={"sf": {}}), ConfigError,
            r"stage_overrides: unknown step\(s\) \['sf'\]"),
    Refusal("stages/pipeline.py", "seeds: give at least one seed", lambda c: _pipeline(output_dir=str(c.tmp), seeds=[]),
            ConfigError),
    # ------------------------------------------------------------------------------------- stages/ppo_setup.py
    Refusal("stages/ppo_setup.py", "must be a multiple of minibatch_size",
            lambda c: _check_settings(batch_size="10", minibatch_size="4"), ConfigError,
            r"batch_size \(10\) must be a multiple of minibatch_size \(4\)"),
    Refusal("stages/ppo_setup.py", "must be a multiple of minibatch_size",
            lambda c: _check_settings(advantage="rloo", group_size="3", batch_size="4", minibatch_size="8"),
            ConfigError, r"batch_size x group_size \(4 x 3 = 12 episodes\) must be a multiple of minibatch_size \(8\)"),
    Refusal("stages/ppo_setup.py", "needs advantage rloo or grpo", lambda c: _check_settings(group_size="4"),
            ConfigError, r"group_size 4 needs advantage rloo or grpo: gae samples one response per prompt"),
    Refusal("stages/ppo_setup.py", "needs group_size >= 2",
            lambda c: _check_settings(advantage="grpo", group_size="1"), ConfigError,
            r"advantage 'grpo' needs group_size >= 2 \(its baseline is the other samples of the same prompt\), got 1"),
    Refusal("stages/ppo_setup.py", "advantage 'gae' needs a value model",
            lambda c: _check_shapes(1, has_value=False), ConfigError),
    Refusal("stages/ppo_setup.py", "temperature must be > 0", lambda c: _check_settings(rollout__temperature="0"),
            ConfigError),
    Refusal("stages/ppo_setup.py", "eval.draws must be >= 1", lambda c: _check_settings(eval__draws="0"),
            ConfigError, r"eval\.draws must be >= 1 \(responses per held-out prompt\), got 0"),
    Refusal("stages/ppo_setup.py", "rollout.backend='vllm': ", _vllm_missing, ConfigError,
            r"rollout\.backend='vllm': vllm is not installed; use rollout\.backend='transformers'"),
    Refusal("stages/ppo_setup.py", "under FSDP2: its engine", lambda c: _check_sharded(rollout__backend="vllm"),
            ConfigError, r"rollout\.backend='vllm' under FSDP2: its engine would need the sharded policy gathered"),
    Refusal("stages/ppo_setup.py", "PPO needs a reward model or a reward_fn",
            lambda c: _check_shapes(1, has_reward=False), ConfigError),
    Refusal("stages/ppo_setup.py", "both are global, split over the ranks",
            lambda c: _check_shapes(3, batch_size="8", minibatch_size="4"), ConfigError,
            r"batch_size \(8\) and minibatch_size \(4\) must be divisible by the number of processes \(3\)"),
    Refusal("stages/ppo_setup.py", "ptx.coef > 0 needs pretraining blocks", lambda c: _check_shapes(1, ptx__coef="1"),
            ConfigError, r"ptx\.coef > 0 needs pretraining blocks \(set ptx\.data\)"),
    Refusal("stages/ppo_setup.py", "ptx.batch_size (…) must be divisible",
            lambda c: _check_shapes(2, blocks=object(), ptx__coef="1", ptx__batch_size="3"), ConfigError,
            r"ptx\.batch_size \(3\) must be divisible by the number of processes \(2\)"),
    Refusal("stages/ppo_setup.py", "tokens but the policy's embedding only", _ppo_models_small_vocab, ModelLoadError,
            r"tokenizer has \d+ tokens but the policy's embedding only 64"),
    Refusal("stages/ppo_setup.py", "leaves no room for a prompt", lambda c: _ppo_inputs(ctx_len=64, new_tokens="60"),
            ConfigError, r"max_new_tokens \(60\) leaves no room for a prompt in the 64-token context"),
    Refusal("stages/ppo_setup.py", "were both given; pass one", lambda c: _world_reward(lambda ro, recs: None, None),
            ConfigError),
    Refusal("stages/ppo_setup.py", "needs world_dir and prompts from the world's data",
            lambda c: _world_reward(None, None), ConfigError,
            r"reward_source='world' needs world_dir and prompts from the world's data \(rows with `meta`\)"),
    # -------------------------------------------------------------------------------------- stages/pretrain.py
    Refusal("stages/pretrain.py", "give a tokenizer path (source.tokenizer)", lambda c: _pretrain_corpus(), ConfigError,
            r"tokenizer: give a tokenizer path \(source\.tokenizer\), or model\.init_from"),
    Refusal("stages/pretrain.py", "must be a multiple of micro_batch_size x processes", lambda c: _pretrain_setup(c),
            ConfigError, r"batch_size \(3\) must be a multiple of micro_batch_size x processes \(1 x 2\)"),
    # ---------------------------------------------------------------------------------------- stages/reward.py
    Refusal("stages/reward.py", "responses must be strings or chat messages",
            lambda c: _comparisons(c.jsonl("r.jsonl", [{"prompt": "p", "responses": [1, 2]}])), DataError,
            r"r\.jsonl \(train split\) row 0: responses must be strings or chat messages"),
    Refusal("stages/reward.py", "no row has two different responses to compare",
            lambda c: _comparisons(c.jsonl("r.jsonl", [{"prompt": "p", "chosen": "a", "rejected": "a"}])), DataError,
            r"r\.jsonl \(train split\): no row has two different responses to compare"),
    Refusal("data/ranks.py", "'ranks' must hold one integer per response",
            lambda c: _comparisons(c.jsonl("r.jsonl", [{"prompt": "p", "responses": ["a", "b"], "ranks": [2, 1]}])),
            DataError, r"r\.jsonl \(train split\) row 0: 'ranks' must hold one integer per response in the "
            r"responses' order, best to worst \(non-decreasing; equal ranks are a tie\), got \[2, 1\] for 2 responses"),
    Refusal("stages/pretrain.py", "no_eval_message(…)", lambda c: _pretrain_one_document(c), DataError,
            r"pretrain: no held-out data in .*one\.jsonl \(a single distinct document\)"),
    # ------------------------------------------------------------------------------------------- stages/sft.py
    Refusal("stages/sft.py", "no_eval_message(…)", lambda c: _sft_one_prompt(c), DataError,
            r"sft: no held-out data in .*one\.jsonl \(a single distinct prompt\)"),
    Refusal("stages/sft.py", "judge: 'world' needs world_dir", lambda c: _make_judge(judge="world", world_dir=""),
            ConfigError, r"judge: 'world' needs world_dir with a world\.json .*\(columns: \['prompt', 'completion'\]\)"),
    Refusal("stages/sft.py", "judge: 'reward_model' needs reward_model",
            lambda c: _make_judge(judge="reward_model", reward_model=""), ConfigError),
    Refusal("stages/sft.py", "epochs: must be >= 1", lambda c: _sft_run(epochs="0"), ConfigError,
            r"epochs: must be >= 1, got 0"),
    Refusal("stages/sft.py", "SFT saves a checkpoint after every epoch",
            lambda c: _sft_run(run__checkpoint_interval="5"), ConfigError),
    # ------------------------------------------------------------------------------------- stages/tokenizer.py
    Refusal("stages/tokenizer.py", "must be at least 300", lambda c: _tokenizer_run(c, vocab_size="100"), ConfigError,
            r"vocab_size=100: must be at least 300 \(256 bytes \+ special tokens\)"),
]
# fmt: on

# Raise sites in the covered files that are not refusals of the user's input, with the reason they have no case.
EXEMPT: dict[tuple[str, str], str] = {}


# --------------------------------------------------------------------------------------- the triggers


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def _load(source, split=None):
    from alignlab.data.load import load_dataset_any

    return load_dataset_any(str(source), split)


def _detect(rows):
    from alignlab.data.load import detect_format

    return detect_format(_dataset(rows))


def _require(rows, accepted):
    from alignlab.data.load import require_format

    return require_format(_dataset(rows), accepted, "d")


def _column(rows, column, key):
    from alignlab.data.load import require_column

    return require_column(_dataset(rows), column, "src", key)


def _demos(source):
    from alignlab.data.load import load_demonstrations

    return load_demonstrations(source, "train")


def _pipeline_cfg(overrides):
    from alignlab.stages.pipeline import PipelineConfig

    return apply(PipelineConfig(), dotted_to_nested(overrides), "command line")


def _device(name):
    from alignlab.training import resolve_device

    return resolve_device(name)


def _finite(value):
    from alignlab.training import NonFiniteGuard

    return NonFiniteGuard("sft", "/nowhere/checkpoint").ok(3, loss=value)


def _model_path(path):
    from alignlab.models.load import check_model_path

    return check_model_path(path)


def _tokenizer_path(path):
    from alignlab.models.load import check_tokenizer_path

    return check_tokenizer_path(path)


def _lm(name):
    from alignlab.models.load import load_causal_lm

    return load_causal_lm(name)


def _compare_policy(path):
    from alignlab.stages.compare import _load_policy

    return _load_policy(_compare(), path, "cpu")


def _compare_jobs(ctx: Ctx, heldout: list, prompts: int = 1):
    from alignlab.stages.compare import _jobs

    data = ctx.jsonl("p.jsonl", [{"prompt": f"What colour is Bruk {i}?"} for i in range(prompts)])
    return _jobs(_compare(data=data), _world_stub(heldout))


def _dpo_groups(rows):
    from alignlab.stages.dpo import ranked_groups

    return ranked_groups(_dataset(rows), None, 64, "src")  # no group is left to tokenise


def _dpo_setup(ctx: Ctx):
    from alignlab.stages import dpo

    _one_process(ctx, dpo)
    return dpo.setup(_cfg("alignlab.stages.dpo", "DPOConfig", batch_size="3"))


def _instruct_tune_check(world_dir: Path):
    from alignlab.stages.instruct_tune import InstructTuneConfig, check_clusters

    return check_clusters(InstructTuneConfig(), world_dir)


def _ppo_inputs(ctx_len: int, new_tokens: str):
    from alignlab.stages.ppo_setup import load_inputs

    policy = SimpleNamespace(config=SimpleNamespace(max_position_embeddings=ctx_len))
    return load_inputs(_ppo(rollout__max_new_tokens=new_tokens), None, policy)


def _pretrain_corpus():
    from alignlab.stages.pretrain import load_corpus

    return load_corpus(_cfg("alignlab.stages.pretrain", "PretrainConfig", source__tokenizer="", model__init_from=""))


def _pretrain_one_document(ctx: Ctx):
    from alignlab.stages.pretrain import load_corpus

    data = ctx.jsonl("one.jsonl", [{"text": "Bruk is red."}] * 3)
    cfg = _cfg("alignlab.stages.pretrain", "PretrainConfig", data=data, source__tokenizer=ctx.inputs["llama_policy"])
    return load_corpus(cfg)


def _sft_one_prompt(ctx: Ctx):
    from alignlab.stages.sft import _setup_data

    data = ctx.jsonl("one.jsonl", [{"prompt": "p", "completion": "c"}] * 3)
    return _setup_data(_sft(data=data), None, None, 64, "cpu")


def _pretrain_setup(ctx: Ctx):
    from alignlab.stages import pretrain

    _one_process(ctx, pretrain)
    return pretrain.setup(_cfg("alignlab.stages.pretrain", "PretrainConfig", batch_size="3", micro_batch_size="1"))


def _comparisons(source):
    from alignlab.stages.reward import load_comparisons

    return load_comparisons(source, "train")


def _tokenizer_run(ctx: Ctx, **kw):
    from alignlab.stages.tokenizer import run

    data = ctx.jsonl("t.jsonl", [{"text": "Bruk is red."}] * 4)
    return run(_cfg("alignlab.stages.tokenizer", "TokenizerConfig", data=data, output_dir=str(ctx.tmp / "o"), **kw))


# ------------------------------------------------------------------------------------------------ the tests


def _case_id(case: Refusal) -> str:
    return f"{case.file}: {case.site}"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_each_refusal_says_what_is_wrong(case, tmp_path, request, monkeypatch):
    with pytest.raises(case.error) as e:
        case.trigger(Ctx(tmp_path, request, monkeypatch))
    assert re.search(case.message or re.escape(case.site), str(e.value)), str(e.value)
    if case.error is not ValueError and case.error is not FloatingPointError:  # the named refusals
        assert isinstance(e.value, UserError)


def test_every_refusal_in_the_covered_files_has_a_case():
    """A new raise in these files needs a case here (or a reason in EXEMPT); each case names exactly the
    sites it triggers, and a message two sites share needs a case per site."""
    sites = all_sites()
    uncovered, ambiguous = [], []
    for site in sites:
        short = site.file.removeprefix("src/alignlab/")
        cases = [c for c in CASES if c.file == short and c.site in site.text]
        twins = [s for s in sites if s.file == site.file and any(c.site in s.text for c in cases)]
        if not cases and not any(f == short and frag in site.text for f, frag in EXEMPT):
            uncovered.append(str(site))
        elif cases and len(cases) < len(twins):
            ambiguous.append(f"{site} (shares its text with {len(twins) - 1} other site(s); {len(cases)} case(s))")
    stale = [_case_id(c) for c in CASES if not matching(sites, f"src/alignlab/{c.file}", c.site)]
    assert not uncovered, "refusals without a case:\n" + "\n".join(uncovered)
    assert not ambiguous, "\n".join(ambiguous)
    assert not stale, "cases whose site is no longer in the code:\n" + "\n".join(stale)
