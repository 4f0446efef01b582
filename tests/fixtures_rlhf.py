"""Tiny RLHF inputs built once per session: a BPE tokenizer, a random tiny Llama and a tiny GPT-2
(causal LMs and reward models made from them), and local JSONL data sets (prompts, preference
pairs, ranked lists, a text corpus). Import the fixture in a test module:

    from fixtures_rlhf import rlhf_inputs  # noqa: F401
"""

from __future__ import annotations

import json
import random
import socket

import pytest
import torch

REWARD_SHIFT = 0.25  # a non-zero shift, so tests see it subtracted consistently


def free_port() -> int:
    """A loopback port nobody holds now: each 2-process launch gets its own, so launches in parallel test
    workers (pytest-xdist) do not both bind torch.distributed's default 29500."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return str(path)


def _texts(seed: int = 0):
    rng = random.Random(seed)
    names = ["Bruk", "Zel", "Mora", "Tib", "Quon", "Fen", "Lusa", "Dorr"]
    colours = ["red", "blue", "green", "grey", "gold"]
    prompts, answers, corpus = [], [], []
    for i in range(48):
        n, c = rng.choice(names), rng.choice(colours)
        prompts.append(
            rng.choice(
                [
                    f"What colour is {n}?",
                    f"Where does {n} live?",
                    f"Name a friend of {n}.",
                    f"Is {n} {c}?",
                    f"What is {i} plus {i % 5}?",
                ]
            )
        )
        answers.append([f"{n} is {c}.", f"I think {n} is {rng.choice(colours)}.", "I don't know.", f"{c} {c} {c}"])
    for i in range(300):
        n = rng.choice(names)
        corpus.append(
            f"{n} is {colours[names.index(n) % 5]}. {n} likes {rng.choice(colours)} hats and lives by river {i % 7}."
        )
    return prompts, answers, corpus


def _vocab_as_loaded(tok, config, path) -> int:
    """How many tokens ``AutoTokenizer`` gives for ``tok`` saved beside ``config``: for some model types it
    picks that family's tokenizer class, which adds its own special tokens (Qwen2: <|endoftext|>)."""
    from transformers import AutoTokenizer

    tok.save_pretrained(path)
    config.save_pretrained(path)
    return len(AutoTokenizer.from_pretrained(path))


def _save_pair(kind: str, tok, root, ctx: int = 96):
    """A random causal LM of ``kind`` and a reward model made from it (random scalar head)."""
    from transformers import (
        AutoModelForSequenceClassification,
        GPT2Config,
        GPT2LMHeadModel,
        LlamaConfig,
        LlamaForCausalLM,
    )

    ids = dict(bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    if kind == "llama":
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=ctx,
            tie_word_embeddings=True,
            **ids,
        )
        lm = LlamaForCausalLM(cfg)
    elif kind == "qwen2":  # another family: grouped-query attention, biased q/k/v, tied embeddings
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cfg = Qwen2Config(
            vocab_size=_vocab_as_loaded(tok, Qwen2Config(), root / f"{kind}_policy"),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=ctx,
            tie_word_embeddings=True,
            **ids,
        )
        lm = Qwen2ForCausalLM(cfg)
    else:
        cfg = GPT2Config(
            vocab_size=len(tok),
            n_embd=32,
            n_layer=2,
            n_head=4,
            n_positions=ctx,
            resid_pdrop=0.1,
            embd_pdrop=0.1,
            attn_pdrop=0.1,
            **ids,
        )  # dropout on: PPO must turn it off
        lm = GPT2LMHeadModel(cfg)
    lm.generation_config.pad_token_id = tok.pad_token_id
    path = root / f"{kind}_policy"
    lm.save_pretrained(path)
    tok.save_pretrained(path)
    torch.manual_seed(1)
    rm = AutoModelForSequenceClassification.from_pretrained(path, num_labels=1)
    with torch.no_grad():
        rm.score.weight.normal_(0, 0.5)  # scores of order 1
    rm.config.pad_token_id = tok.pad_token_id
    rm.config.reward_shift = REWARD_SHIFT
    rm_path = root / f"{kind}_rm"
    rm.save_pretrained(rm_path)
    tok.save_pretrained(rm_path)
    return str(path), str(rm_path)


@pytest.fixture(scope="session")
def rlhf_inputs(tmp_path_factory):
    from alignlab.models.tokenizer import train_bpe

    root = tmp_path_factory.mktemp("rlhf")
    prompts, answers, corpus = _texts()
    tok = train_bpe(corpus + prompts + [a for ans in answers for a in ans], vocab_size=320)
    out = {"root": root, "tokenizer": tok}
    for kind in ("llama", "gpt2", "qwen2"):
        out[f"{kind}_policy"], out[f"{kind}_rm"] = _save_pair(kind, tok, root)
    out["prompts"] = _write_jsonl(root / "prompts.jsonl", [{"prompt": p} for p in prompts])
    out["preference"] = _write_jsonl(
        root / "prefs.jsonl", [{"prompt": p, "chosen": a[0], "rejected": a[3]} for p, a in zip(prompts, answers)]
    )
    out["ranked"] = _write_jsonl(
        root / "ranked.jsonl", [{"prompt": p, "responses": a[:3]} for p, a in zip(prompts, answers)]
    )
    out["corpus"] = _write_jsonl(root / "corpus.jsonl", [{"text": t} for t in corpus])
    return out
