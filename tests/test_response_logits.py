"""response_lm_loss: the SFT loss with the output layer run only where a response token is predicted."""

from __future__ import annotations

import pytest
import torch

from alignlab.models.llama import build_llama, llama_config
from alignlab.models.response_logits import lm_head_only_at, response_lm_loss
from alignlab.rl.losses import masked_lm_loss


@pytest.fixture()
def model_and_batch():
    model = build_llama(
        llama_config(
            vocab_size=97,
            d_model=32,
            n_layer=2,
            n_head=2,
            d_ff=64,
            max_seq_len=32,
            bos_token_id=1,
            eos_token_id=2,
            pad_token_id=0,
        ),
        seed=0,
    )
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(3, 97, (3, 12), generator=g)
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :5] = -100  # prompt
    for row, length in ((1, 9), (2, 7)):  # right padding
        ids[row, length:], mask[row, length:], labels[row, length:] = 0, 0, -100
    labels[2, :] = -100  # a row with no response token at all
    return model, ids, mask, labels


def grads(model):
    return [p.grad.clone() for p in model.parameters()]


def test_same_loss_and_gradients_as_full_logits(model_and_batch):
    model, ids, mask, labels = model_and_batch
    full = masked_lm_loss(model(input_ids=ids, attention_mask=mask).logits, labels)
    full.backward()
    g_full = grads(model)
    model.zero_grad()
    loss, n = response_lm_loss(model, ids, mask, labels)
    loss.backward()
    assert n == int((labels[:, 1:] != -100).sum()) == 7 + 4
    torch.testing.assert_close(loss, full)
    for a, b in zip(grads(model), g_full):
        torch.testing.assert_close(a, b)


def test_no_response_tokens_gives_zero_and_a_usable_graph(model_and_batch):
    model, ids, mask, _ = model_and_batch
    loss, n = response_lm_loss(model, ids, mask, torch.full_like(ids, -100))
    loss.backward()
    assert n == 0 and loss.item() == 0.0


def test_hook_is_removed_and_ddp_style_wrapper_works(model_and_batch):
    model, ids, mask, labels = model_and_batch

    class Wrapper(torch.nn.Module):  # like DDP: the model sits in .module
        def __init__(self, m):
            super().__init__()
            self.module = m

        def forward(self, **kw):
            return self.module(**kw)

    keep = torch.zeros_like(ids, dtype=torch.bool)
    keep[0, 3] = keep[1, 0] = True
    with lm_head_only_at(Wrapper(model), keep):
        assert model(input_ids=ids, attention_mask=mask).logits.shape == (2, 97)
    assert model(input_ids=ids, attention_mask=mask).logits.shape == (3, 12, 97)  # outside: full logits again
    with pytest.raises(ValueError, match="keep mask"):
        with lm_head_only_at(model, keep[:, :5]):
            model(input_ids=ids, attention_mask=mask)
