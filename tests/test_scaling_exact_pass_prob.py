"""The exact pass probability of a capability problem (one teacher-forced pass) is the probability of the
event ``passes`` checks on sampled text, and an old sweep's cached pass counts gain it without resampling."""

from __future__ import annotations

import json
import math
import shutil
from types import SimpleNamespace

import pytest
import torch

from alignlab.scaling.capability import exact_pass_probs, item_token_ids, passes, word_end_mask


@pytest.fixture(scope="module")
def tok():
    from alignlab.models.tokenizer import train_bpe

    texts = [f"{a} plus {b} is {a + b}. {a} times {b} is {a * b}, said Bruk." for a in range(12) for b in range(12)]
    return train_bpe(texts, vocab_size=300)


class Bigram(torch.nn.Module):
    """A language model whose next-token logits depend on the last token only: probabilities by hand."""

    def __init__(self, table: torch.Tensor):
        super().__init__()
        self.table = torch.nn.Parameter(table)

    def forward(self, input_ids):
        return SimpleNamespace(logits=self.table[input_ids])


def _peaked_bigram(tok, prompt: list[int], value: list[int], seed: int = 0) -> Bigram:
    """Random logits, with the value's path after the prompt made likely, and after it both a word end (".")
    and a digit that would continue the number (so the word-end factor matters)."""
    g = torch.Generator().manual_seed(seed)
    V = len(tok)
    table = torch.randn(V, V, generator=g)
    path = [prompt[-1], *value]
    for a, b in zip(path, path[1:]):
        table[a, b] += 8.0
    (dot,) = tok(".", add_special_tokens=False)["input_ids"]
    digit = tok("7", add_special_tokens=False)["input_ids"][0]
    table[value[-1], dot] += 7.0
    table[value[-1], digit] += 7.0
    return Bigram(table)


def _sampled_pass_rate(model: Bigram, tok, prompt, value_text: str, n_new: int, n: int, temperature: float) -> float:
    g = torch.Generator().manual_seed(1)
    last = torch.full((n,), prompt[-1])
    rows = []
    with torch.no_grad():
        for _ in range(n_new):
            probs = torch.softmax(model.table[last] / temperature, -1)
            last = torch.multinomial(probs, 1, generator=g)[:, 0]
            rows.append(last)
    seqs = torch.stack(rows, 1).tolist()
    return sum(passes(tok.decode(s, skip_special_tokens=True), value_text) for s in seqs) / n


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_exact_pass_prob_is_the_probability_that_a_sample_passes(tok, temperature):
    item = {"prompt": "11 plus 8 is", "value": "19"}
    prompts, values = item_token_ids(tok, [item])
    model = _peaked_bigram(tok, prompts[0], values[0])
    (exact,) = exact_pass_probs(model, tok, prompts, values, temperature)
    # by hand: the path's bigram probabilities, times the mass on tokens that end the word
    logp = torch.log_softmax(model.table.detach().double() / temperature, -1)
    path = [prompts[0][-1], *values[0]]
    log_value = sum(float(logp[a, b]) for a, b in zip(path, path[1:]))
    log_end = float(torch.logsumexp(logp[values[0][-1]][word_end_mask(tok)], 0))
    assert exact["value_prob"] == pytest.approx(math.exp(log_value), rel=1e-9)
    assert exact["pass_prob"] == pytest.approx(math.exp(log_value + log_end), rel=1e-9)
    assert 0.05 < exact["pass_prob"] < exact["value_prob"] < 1  # the digit that continues "19" is not a pass
    # and it is what sampling estimates: the same event, read from decoded text by ``passes``
    n = 20_000
    rate = _sampled_pass_rate(model, tok, prompts[0], item["value"], len(values[0]) + 1, n, temperature)
    se = math.sqrt(exact["pass_prob"] * (1 - exact["pass_prob"]) / n)
    assert abs(rate - exact["pass_prob"]) < 4 * se + 1e-3  # 1e-3: other tokenizations of " 19", unboosted


def test_word_end_mask_reads_tokens_as_passes_does(tok):
    mask = word_end_mask(tok)
    for i in range(len(tok)):
        text = tok.decode([i])
        assert bool(mask[i]) == passes(" 19" + text, "19"), (i, text)
    assert mask[tok.eos_token_id] and not mask[tok("7", add_special_tokens=False)["input_ids"][0]]


def test_an_old_capability_cache_gains_exact_probs_and_keeps_its_counts(smoke_pipeline_run, tmp_path):
    from alignlab.scaling.sweep import capability_results

    run_dir = tmp_path / "run"
    shutil.copytree(smoke_pipeline_run / "pretrain", run_dir)
    items = [{"id": "a", "prompt": "3 plus 4 is", "value": "7"}, {"id": "b", "prompt": "2 times 5 is", "value": "10"}]
    old = [{**it, "passes": 3 + j, "samples": 8, "value_prob": 0.5} for j, it in enumerate(items)]
    (run_dir / "capability.json").write_text(json.dumps({"samples_per_item": 8, "temperature": 1.0, "results": old}))
    cfg = SimpleNamespace(samples_per_item=8, temperature=1.0, device="cpu")
    results = capability_results(cfg, run_dir, items)
    assert [r["passes"] for r in results] == [3, 4]  # the sampled counts are not redrawn
    assert all(0 < r["pass_prob"] <= r["value_prob"] < 1 for r in results)
    cached = json.loads((run_dir / "capability.json").read_text())["results"]
    assert [r["pass_prob"] for r in cached] == [r["pass_prob"] for r in results]
