"""RL core (GAE, KL rewards/controllers, PPO losses, ranking/DPO/SFT losses) against hand-computed values."""

import math

import pytest
import torch

from alignlab.rl.gae import compute_gae
from alignlab.rl.kl import AdaptiveKLController, FixedKLController, kl_k1, kl_k3, per_token_kl_rewards
from alignlab.rl.losses import dpo_loss, masked_lm_loss, ranking_loss
from alignlab.rl.ppo_loss import (
    entropy_from_logits,
    explained_variance,
    masked_mean,
    masked_var,
    masked_whiten,
    ppo_policy_loss,
    ppo_value_loss,
)

close = lambda a, b, tol=1e-5: torch.testing.assert_close(  # noqa: E731
    torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=0
)


# ---------------------------------------------------------------- GAE
def test_gae_three_tokens_gamma1_lambda095():
    # rewards r = [0, 0, 1], values V = [0.5, 0.6, 0.7], gamma = 1, lambda = 0.95; token 2 is terminal.
    # t=2: delta = 1 + 0 - 0.7 = 0.3                        A2 = 0.3
    # t=1: delta = 0 + 0.7 - 0.6 = 0.1   A1 = 0.1 + 0.95*0.3   = 0.385
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1   A0 = 0.1 + 0.95*0.385 = 0.46575
    # returns = A + V = [0.96575, 0.985, 1.0]
    rewards, values = torch.tensor([[0.0, 0.0, 1.0]]), torch.tensor([[0.5, 0.6, 0.7]])
    adv, ret = compute_gae(rewards, values, torch.ones(1, 3), gamma=1.0, lam=0.95)
    close(adv, [[0.46575, 0.385, 0.3]])
    close(ret, [[0.96575, 0.985, 1.0]])


def test_gae_masking_makes_last_valid_token_terminal():
    # row 1 ended after 2 tokens; padding holds junk (reward 99, value 42) that must not leak back.
    # t=1 is terminal: delta = 1 + 0 - 0.6 = 0.4 -> A1 = 0.4
    # t=0: delta = 0 + 0.6 - 0.5 = 0.1 -> A0 = 0.1 + 0.95*0.4 = 0.48 ; returns [0.98, 1.0, 0]
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 99.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.5, 0.6, 42.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    adv, ret = compute_gae(rewards, values, mask, 1.0, 0.95)
    close(adv, [[0.46575, 0.385, 0.3], [0.48, 0.4, 0.0]])
    close(ret, [[0.96575, 0.985, 1.0], [0.98, 1.0, 0.0]])


def test_gae_gamma_discounts():
    # gamma = 0.5, lambda = 1, r = [0, 1], V = [0, 0]: A1 = 1, A0 = 0 + 0.5*0 - 0 + 0.5*1 = 0.5
    adv, _ = compute_gae(torch.tensor([[0.0, 1.0]]), torch.zeros(1, 2), torch.ones(1, 2), 0.5, 1.0)
    close(adv, [[0.5, 1.0]])


# ---------------------------------------------------------------- KL rewards and controllers
def test_per_token_kl_rewards_score_at_last_valid_token():
    beta = 0.1
    logp = torch.tensor([[-1.0, -2.0, -1.5], [-0.5, -1.0, -3.0]])
    ref = torch.tensor([[-1.5, -1.0, -1.5], [-1.0, -1.0, -0.1]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])  # row 1 ended early (EOS at t=1)
    scores = torch.tensor([2.0, -1.0])
    # row 0: -0.1*[0.5, -1.0, 0.0] = [-0.05, 0.1, 0.0]; score 2.0 at t=2 -> [-0.05, 0.1, 2.0]
    # row 1: -0.1*[0.5, 0.0, masked] = [-0.05, 0.0, 0]; score -1.0 at t=1 (NOT t=2) -> [-0.05, -1.0, 0.0]
    r = per_token_kl_rewards(logp, ref, scores, mask, beta)
    close(r, [[-0.05, 0.1, 2.0], [-0.05, -1.0, 0.0]])


def test_adaptive_kl_controller_one_step_and_clip():
    # init beta 0.1, target 6, horizon 10000, 512 episodes per batch
    c = AdaptiveKLController(init_beta=0.1, target=6.0, horizon=10_000)
    # KL 6.6: e = 6.6/6 - 1 = 0.1 -> beta = 0.1 * (1 + 0.1*512/10000) = 0.1 * 1.00512 = 0.100512
    assert c.update(6.6, 512) == pytest.approx(0.100512, abs=1e-12)
    # KL 30: e = 4 -> clipped to 0.2 -> beta *= 1 + 0.2*512/10000 = 1.01024
    assert c.update(30.0, 512) == pytest.approx(0.100512 * 1.01024, abs=1e-12)
    # KL 0: e = -1 -> clipped to -0.2 -> beta *= 0.98976
    c2 = AdaptiveKLController(0.1, 6.0, 10_000)
    assert c2.update(0.0, 512) == pytest.approx(0.098976, abs=1e-12)
    assert FixedKLController(0.02).update(100.0, 512) == 0.02


def test_kl_estimators():
    logp = torch.tensor([[-1.0, -2.0, -5.0]])
    ref = torch.tensor([[-1.5, -1.0, 0.0]])
    mask = torch.tensor([[1, 1, 0]])
    # k1 = (0.5) + (-1.0) = -0.5   (padding ignored)
    close(kl_k1(logp, ref, mask), -0.5)
    # k3 with log r = ref - logp = [-0.5, 1.0]: (e^-0.5 - 1 + 0.5) + (e^1 - 1 - 1)
    #    = (0.606531 - 0.5) + (2.718282 - 2) = 0.106531 + 0.718282 = 0.824812, >= 0 even though k1 < 0
    close(kl_k3(logp, ref, mask), 0.824812)


# ---------------------------------------------------------------- PPO losses
def test_ppo_policy_loss_clip_binds_and_not():
    old = torch.full((1, 3), math.log(0.5))
    # ratios 1.5, 1.1, 1.5 ; advantages +1, +1, -1 ; clip 0.2
    new = old + torch.log(torch.tensor([[1.5, 1.1, 1.5]]))
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    # t0: max(-1.5, -1.2) = -1.2 (clip binds)   t1: max(-1.1, -1.1) = -1.1 (no clip)
    # t2: max(+1.5, +1.2) = 1.5 (negative advantage: unclipped, pessimistic term kept)
    loss, stats = ppo_policy_loss(new, old, adv, torch.ones(1, 3), clip=0.2)
    close(loss, (-1.2 - 1.1 + 1.5) / 3)
    close(stats["clipfrac"], 1 / 3)
    # approx_kl (k3 of the ratio): mean((r-1) - log r) over [1.5, 1.1, 1.5]
    #  = ((0.5 - 0.405465) + (0.1 - 0.0953102) + (0.5 - 0.405465)) / 3 = 0.0644...
    close(stats["approx_kl"], (2 * (0.5 - 0.4054651) + (0.1 - 0.0953102)) / 3)
    # masking token 0 drops the clipped token: loss = (-1.1 + 1.5) / 2 = 0.2, clipfrac 0
    loss, stats = ppo_policy_loss(new, old, adv, torch.tensor([[0, 1, 1]]), clip=0.2)
    close(loss, 0.2)
    close(stats["clipfrac"], 0.0)


def test_ppo_policy_loss_gradient_zero_when_clipped():
    old = torch.zeros(1, 1)
    new = torch.log(torch.tensor([[1.5]])).requires_grad_()
    loss, _ = ppo_policy_loss(new, old, torch.ones(1, 1), torch.ones(1, 1), 0.2)
    loss.backward()
    close(new.grad, [[0.0]])


def test_ppo_value_loss_clip():
    old = torch.tensor([[1.0, 1.0]])
    new = torch.tensor([[1.5, 1.1]])
    R = torch.tensor([[2.0, 2.0]])
    # t0: V_clip = 1 + clip(0.5) = 1.2; (1.5-2)^2 = 0.25 < (1.2-2)^2 = 0.64 -> 0.64 (clipped taken)
    # t1: V_clip = 1.1 = V; both 0.81 -> 0.81
    # loss = 0.5 * (0.64 + 0.81) / 2 = 0.3625 ; vf_clipfrac = 1/2
    loss, stats = ppo_value_loss(new, old, R, torch.ones(1, 2), clip=0.2)
    close(loss, 0.3625)
    close(stats["vf_clipfrac"], 0.5)


def test_masked_mean_var_whiten():
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0, 100.0]])
    m = torch.tensor([[1, 1, 1, 1, 0]])
    # mean 2.5 ; squared deviations 2.25 + 0.25 + 0.25 + 2.25 = 5 ; biased 5/4, unbiased 5/3
    close(masked_mean(x, m), 2.5)
    close(masked_var(x, m, unbiased=False), 1.25)
    close(masked_var(x, m, unbiased=True), 5 / 3)
    s = math.sqrt(1.25)
    w = masked_whiten(x, m)  # (x - 2.5)/sqrt(1.25), 0 on padding
    close(w, [[-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0.0]])
    close(masked_mean(w, m), 0.0)
    close(masked_var(w, m, unbiased=False), 1.0, 1e-4)
    w2 = masked_whiten(x, m, shift_mean=False)  # scaled, mean 2.5 kept
    close(w2, [[-1.5 / s + 2.5, -0.5 / s + 2.5, 0.5 / s + 2.5, 1.5 / s + 2.5, 0.0]])
    close(masked_mean(w2, m), 2.5)


def test_entropy_and_explained_variance():
    # uniform over 4 -> log 4 ; one-hot-ish (one logit huge) -> 0
    close(entropy_from_logits(torch.tensor([[0.0, 0.0, 0.0, 0.0], [1e4, 0.0, 0.0, 0.0]])), [math.log(4), 0.0])
    R = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    m = torch.ones(1, 4)
    close(explained_variance(R, R, m), 1.0)
    close(explained_variance(torch.full_like(R, 2.5), R, m), 0.0)  # predicting the mean explains nothing


# ---------------------------------------------------------------- ranking, DPO, SFT losses
def test_ranking_loss_k4_is_mean_of_six_pairs_and_variable_k():
    # row 0, K=4, r = [2, 1, 0.5, -1] (best -> worst). Pair margins and -log sigmoid(d) = log(1 + e^-d):
    #  (0,1) d=1.0 0.313262 | (0,2) d=1.5 0.201413 | (0,3) d=3.0 0.048587
    #  (1,2) d=0.5 0.474077 | (1,3) d=2.0 0.126928 | (2,3) d=1.5 0.201413
    #  sum 1.365680 / 6 = 0.227613, all 6 pairs correct
    r4 = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    loss, acc = ranking_loss(r4, torch.tensor([4]))
    close(loss, 1.365680 / 6)
    close(acc, 1.0)
    # row 1, K=3 (slot 3 is padding, even NaN): r = [0, 1, 0]
    #  (0,1) d=-1 log(1+e)=1.313262 | (0,2) d=0 log 2=0.693147 | (1,2) d=1 0.313262
    #  sum 2.319671 / 3 = 0.773224 ; correct pairs: only (1,2) -> 1/3
    r = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 1.0, 0.0, float("nan")]])
    loss, acc = ranking_loss(r, torch.tensor([4, 3]))
    close(loss, (0.227613 + 0.773224) / 2)  # mean over prompts, each prompt weighs the same
    close(acc, 7 / 9)  # pooled over the 6 + 3 pairs
    # a [B, K] mask is accepted too
    loss_m, _ = ranking_loss(r, torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]], dtype=torch.bool))
    close(loss_m, loss)


def test_ranking_loss_with_ties_leaves_tied_pairs_out():
    # row 0: r = [2, 1, 0.5, -1], ranks [1, 2, 2, 3]: the (1,2) pair is tied; the other five as in the K=4 case:
    #  0.313262 + 0.201413 + 0.048587 + 0.126928 + 0.201413 = 0.891603 / 5 = 0.178321, all 5 correct
    # row 1: r = [0, 1, 0, nan], ranks [1, 1, 2, pad]: (0,1) tied; (0,2) d=0 0.693147, (1,2) d=1 0.313262
    #  mean 0.503205; correct: (1,2) only
    # row 2: r = [3, 1, pad, pad], ranks [1, 1]: all tied, adds nothing to the mean over prompts
    r = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 1.0, 0.0, float("nan")], [3.0, 1.0, 0.0, 0.0]], requires_grad=True)
    ranks = torch.tensor([[1, 2, 2, 3], [1, 1, 2, 9], [1, 1, 9, 9]])
    loss, acc = ranking_loss(r, torch.tensor([4, 3, 2]), ranks)
    close(loss, (0.891603 / 5 + 0.503205) / 2)
    close(acc, 6 / 7)
    loss.backward()
    close(r.grad[2], [0.0, 0.0, 0.0, 0.0])  # a tie gives no gradient
    assert r.grad[1, 0] < 0 and r.grad[1, 1] < 0 < r.grad[1, 2]  # both tied-best pushed up, the worst down
    # ranks need not follow slot order: [2, 1] means slot 1 is better (d = 1 - 0 = 1)
    loss, acc = ranking_loss(torch.tensor([[0.0, 1.0]]), torch.tensor([2]), torch.tensor([[2, 1]]))
    close(loss, 0.313262)
    close(acc, 1.0)
    # strictly increasing ranks are exactly the rankings without ties
    r4 = torch.tensor([[2.0, 1.0, 0.5, -1.0], [0.0, 1.0, 0.0, 5.0]])
    close(
        ranking_loss(r4, torch.tensor([4, 3]), torch.tensor([[1, 2, 3, 4], [1, 2, 3, 4]]))[0],
        ranking_loss(r4, torch.tensor([4, 3]))[0],
    )


def test_ranking_loss_grad_is_finite_with_nan_padding():
    r = torch.tensor([[0.0, 1.0, float("nan")]], requires_grad=True)
    loss, _ = ranking_loss(r, torch.tensor([2]))
    loss.backward()
    assert torch.isfinite(r.grad).all()


def test_dpo_loss_hand_computed():
    # ex 0: beta 0.1, policy (chosen, rejected) = (-10, -12), ref = (-11, -11)
    #   chosen reward 0.1*(1) = 0.1, rejected 0.1*(-1) = -0.1, margin 0.2 -> log(1 + e^-0.2) = 0.598139
    # ex 1: policy (-5, -4), ref (-5, -5): chosen 0, rejected 0.1, margin -0.1 -> log(1 + e^0.1) = 0.744397
    pol_c, pol_r = torch.tensor([-10.0, -5.0]), torch.tensor([-12.0, -4.0])
    ref_c, ref_r = torch.tensor([-11.0, -5.0]), torch.tensor([-11.0, -5.0])
    loss, cr, rr, acc = dpo_loss(pol_c, pol_r, ref_c, ref_r, beta=0.1)
    close(loss, (0.598139 + 0.744397) / 2)
    close(cr, [0.1, 0.0])
    close(rr, [-0.1, 0.1])
    close(acc, 0.5)


def test_masked_lm_loss_ignores_prompt_tokens():
    V = 8
    labels = torch.tensor([[-100, -100, -100, 5, 6, -100]])  # 3 prompt tokens, 2 response tokens, 1 pad
    # all-zero logits: every counted token costs log V -> loss = log 8 = 2.079442
    close(masked_lm_loss(torch.zeros(1, 6, V), labels), math.log(V))
    torch.manual_seed(0)
    logits = torch.randn(1, 6, V)
    base = masked_lm_loss(logits, labels)
    # positions 0, 1 predict prompt tokens 1, 2; position 4, 5 predict pad / nothing: no effect
    changed = logits.clone()
    changed[:, [0, 1, 4, 5]] = torch.randn(1, 4, V) * 10
    close(masked_lm_loss(changed, labels), base)
    # position 2 (last prompt token) predicts the first response token: it must count
    changed = logits.clone()
    changed[:, 2] += torch.randn(V) * 10
    assert not torch.allclose(masked_lm_loss(changed, labels), base)
    # and it equals the mean CE of the two response predictions
    lsm = logits.log_softmax(-1)
    close(base, -(lsm[0, 2, 5] + lsm[0, 3, 6]) / 2)


# ---------------------------------------------------------------- Experience.select
def _experience():
    """3 episodes, query width 4 (left-padded), response width 3 (right-padded); every tensor's entries
    are distinct so a wrong row or column shows."""
    from alignlab.rl.rollout_batch import Experience

    query_mask = torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [1, 1, 1, 1]])
    response_mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1]])
    per_token = lambda k: torch.arange(9, dtype=torch.float32).view(3, 3) + 10 * k  # noqa: E731
    return Experience(
        input_ids=torch.arange(21).view(3, 7),
        attention_mask=torch.cat([query_mask, response_mask], 1),
        response_start=4,
        response_mask=response_mask,
        old_logprobs=per_token(1),
        ref_logprobs=per_token(2),
        values=per_token(3),
        scores=torch.tensor([0.5, 1.5, 2.5]),
        rewards=per_token(4),
        advantages=per_token(5),
        returns=per_token(6),
    )


def test_experience_select_takes_rows_and_cuts_shared_padding():
    exp = _experience()
    mb = exp.select(torch.tensor([1, 0]))
    # rows 1 and 0 share one column of left padding (query column 0) and their longest response is 2
    # tokens: the minibatch keeps query columns 1-3 and response columns 0-1, rows in the order asked
    assert mb.batch_size == 2 and mb.response_start == 3
    assert torch.equal(mb.input_ids, exp.input_ids[[1, 0]][:, 1:6])
    assert torch.equal(mb.attention_mask, torch.tensor([[1, 1, 1, 1, 0], [0, 1, 1, 1, 1]]))
    for name in ("response_mask", "old_logprobs", "ref_logprobs", "values", "rewards", "advantages", "returns"):
        assert torch.equal(getattr(mb, name), getattr(exp, name)[[1, 0], :2]), name
    assert torch.equal(mb.scores, torch.tensor([1.5, 0.5]))
    # the response still starts at the same token: what was column 4 is column 3 now
    assert torch.equal(mb.input_ids[:, mb.response_start], exp.input_ids[[1, 0], exp.response_start])


def test_experience_select_keeps_everything_a_row_uses():
    exp = _experience()
    mb = exp.select(torch.tensor([2]))  # no left padding, the full response width
    assert mb.response_start == 4 and torch.equal(mb.input_ids, exp.input_ids[[2]])
    assert torch.equal(mb.returns, exp.returns[[2]])
    whole = exp.select(torch.arange(3))
    for name in ("input_ids", "attention_mask", "response_mask", "advantages", "scores"):
        assert torch.equal(getattr(whole, name), getattr(exp, name)), name
