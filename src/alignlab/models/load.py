"""Load models and tokenizers by hub id or local path, the same way in every stage.

Safe by default: ``trust_remote_code`` is off unless the user asks, and weights are
read only from safetensors (pickle checkpoints can run arbitrary code on load).

A LoRA adapter folder (``adapter_config.json``, see models/lora.py) loads as its base model
plus the adapter, merged: downstream stages read a LoRA stage's output like any other.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from alignlab.errors import ModelLoadError, ModelNotFoundError
from alignlab.models.lora import ADAPTER_WEIGHTS, is_adapter_folder, load_merged

# Weights in these files are read by unpickling, which can run any code the file carries.
PICKLE_WEIGHTS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl")
# A folder holding none of these has no tokenizer (transformers then fails with a message about sentencepiece).
TOKENIZER_FILES = ("tokenizer*", "vocab*", "merges.txt", "special_tokens_map.json", "*.model", "*.spm")
CONVERT_HINT = (
    'if you trust the file, convert it once: python -c "from transformers import AutoModelForCausalLM as M; '
    "M.from_pretrained('IN', use_safetensors=False).save_pretrained('OUT')\" (OUT gets model.safetensors)"
)


def looks_local(path: str) -> bool:
    """Whether ``path`` means a folder on this machine: it exists, starts with ``.``, ``/`` or ``~``, or has
    more than one ``/`` (a hub id is ``name`` or ``org/name``)."""
    return path.startswith((".", "/", "~")) or Path(path).exists() or path.count("/") > 1


def check_model_path(path: str) -> None:
    """Refuse, by name, a model that is not there or whose weights alignlab will not read (before any loading)."""
    p = Path(path)
    if looks_local(path) and not p.exists():
        raise ModelNotFoundError(f"model path not found: {path}")
    if is_adapter_folder(p):
        if not (p / ADAPTER_WEIGHTS).is_file():
            raise ModelLoadError(f"{path}: LoRA adapter folder without {ADAPTER_WEIGHTS}")
        return
    if p.is_dir() and not (p / "config.json").exists():
        raise ModelLoadError(f"{path}: not a Hugging Face model folder (no config.json)")
    if p.is_dir() and not any(p.glob("*.safetensors")) and not (p / "model.safetensors.index.json").exists():
        pickles = sorted({f.name for pattern in PICKLE_WEIGHTS for f in p.glob(pattern)})
        if pickles:
            raise ModelLoadError(
                f"{path}: only pickle weights ({', '.join(pickles)}); alignlab loads weights only from safetensors, "
                f"because unpickling a file can run any code in it; {CONVERT_HINT}"
            )
        raise ModelLoadError(f"{path}: no *.safetensors weights (alignlab loads weights only from safetensors)")


def check_tokenizer_path(path: str) -> None:
    p = Path(path)
    if looks_local(path) and not p.exists():
        raise ModelNotFoundError(f"tokenizer path not found: {path}")
    if p.is_dir() and not any(any(p.glob(pattern)) for pattern in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{path}: no tokenizer files (tokenizer.json, tokenizer_config.json, ...); "
            "name the tokenizer with source.tokenizer (evaluate: tokenizer)"
        )


@contextlib.contextmanager
def named_load_errors(what: str, name: str):
    """Turn the ``OSError`` transformers raises for a model or tokenizer it cannot find (a hub id that is not
    cached and cannot be downloaded, a repo that does not exist, a folder missing a file) into a
    :class:`ModelNotFoundError` that says which of these it was."""
    try:
        yield
    except OSError as e:
        raise ModelNotFoundError(why_not_loadable(what, name, e)) from e


def why_not_loadable(what: str, name: str, err: BaseException) -> str:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled, RepositoryNotFoundError

    first_line = (str(err).strip().splitlines() or [type(err).__name__])[0]
    chain = _exception_chain(err)
    if Path(name).exists():
        return f"{what} {name} could not be loaded: {first_line}"
    if any(isinstance(e, RepositoryNotFoundError) for e in chain):
        return (
            f"{what} '{name}' not found: no local folder by that name, and the Hugging Face hub has no such "
            "repo (or it is private or gated: log in with `hf auth login`)"
        )
    if any(isinstance(e, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError)) for e in chain):
        return (
            f"{what} '{name}' not found locally (no such folder, not in the Hugging Face cache) and the hub "
            "could not be reached (no network, or HF_HUB_OFFLINE is set); give a local folder, or download it "
            "where there is network access"
        )
    return f"{what} '{name}' could not be loaded: {first_line}"


def _exception_chain(err: BaseException) -> list[BaseException]:
    chain: list[BaseException] = []
    while err is not None and err not in chain:
        chain.append(err)
        err = err.__cause__ or err.__context__
    return chain


def load_causal_lm(name_or_path: str, trust_remote_code: bool = False, dtype: torch.dtype | None = None):
    check_model_path(name_or_path)
    if is_adapter_folder(name_or_path):
        return load_merged(name_or_path, lambda base: load_causal_lm(base, trust_remote_code, dtype))
    with named_load_errors("model", name_or_path):
        return AutoModelForCausalLM.from_pretrained(
            name_or_path, trust_remote_code=trust_remote_code, use_safetensors=True, dtype=dtype or torch.float32
        )


def load_tokenizer(
    name_or_path: str, trust_remote_code: bool = False, what: str = "tokenizer"
) -> PreTrainedTokenizerBase:
    """``what`` names it in an error: "model" where the tokenizer is the one saved with the model the user named."""
    check_tokenizer_path(name_or_path)
    with named_load_errors(what, name_or_path):
        tok = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None or tok.pad_token_id == tok.eos_token_id:
        # A pad distinct from EOS: otherwise masking padding also masks the real EOS.
        tok.add_special_tokens({"pad_token": "<|pad|>"})
    return tok


def disable_dropout(model: torch.nn.Module) -> None:
    """RLHF reference implementations turn dropout off in every model (REFERENCES.md)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    cfg = getattr(model, "config", None)
    for key in ("attention_dropout", "hidden_dropout", "dropout", "resid_pdrop", "embd_pdrop", "attn_pdrop"):
        if cfg is not None and hasattr(cfg, key):
            setattr(cfg, key, 0.0)


def context_length(model, default: int = 2048) -> int:
    """The model's context window in tokens, from its config; ``default`` when the config does not say."""
    cfg = model.config
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        v = getattr(cfg, key, None)
        if isinstance(v, int) and v > 0:
            return v
    return default


def load_policy(path: str, tokenizer: str = "", trust_remote_code: bool = False, device: str = "cpu"):
    """A policy to sample from: the model on ``device`` in eval mode with dropout off, and its tokenizer
    (``tokenizer`` if given, else the one saved with the model). Sampling a token the model has no embedding
    for would fail deep in a forward pass, so a tokenizer larger than the model is refused here."""
    check_model_path(path)  # a missing policy is named as such, not as its tokenizer
    tok = load_tokenizer(tokenizer or path, trust_remote_code, "tokenizer" if tokenizer else "policy")
    model = load_causal_lm(path, trust_remote_code).to(device)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        raise ModelLoadError(
            f"{path}: tokenizer has {len(tok)} tokens but the model only {model.get_input_embeddings().num_embeddings} "
            "embeddings (give the SFT output, whose tokenizer matches)"
        )
    disable_dropout(model)
    return model.eval(), tok
