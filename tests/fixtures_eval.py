"""Inputs for the evaluation tests, built once per session: the smoke world written to disk,
a BPE tokenizer trained on its corpus, and two tiny random Llama "policies" saved as
plain HF folders (safetensors + tokenizer), so the stage can run end to end in seconds.

    from fixtures_eval import eval_inputs  # noqa: F401
"""

from __future__ import annotations

import pytest
import torch


def _tiny_llama(tok, seed: int, ctx: int = 96):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=ctx,
        tie_word_embeddings=True,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(cfg)
        with torch.no_grad():  # sharper than the default init, so two seeds really differ
            model.model.embed_tokens.weight.normal_(0, 0.5)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model


@pytest.fixture(scope="session")
def eval_inputs(tmp_path_factory):
    from alignlab.data.load import load_dataset_any
    from alignlab.models.tokenizer import train_bpe
    from alignlab.world.config import PRESETS, WorldConfig
    from alignlab.world.stage import run as build_world_stage

    root = tmp_path_factory.mktemp("eval")
    world_dir = root / "world"
    build_world_stage(WorldConfig(**{**PRESETS["smoke"], "output_dir": str(world_dir)}))
    corpus = load_dataset_any(str(world_dir / "corpus"), "train")
    tok = train_bpe(list(corpus["text"])[:400], vocab_size=384)
    paths = {}
    for name, seed in (("policy_a", 0), ("policy_b", 1)):
        model = _tiny_llama(tok, seed)
        path = root / name
        model.save_pretrained(path)
        tok.save_pretrained(path)
        paths[name] = str(path)
    test = load_dataset_any(str(world_dir / "test"), "test")
    return {"root": root, "world_dir": str(world_dir), "records": [test[i] for i in range(len(test))], **paths}
