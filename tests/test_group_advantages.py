"""RLOO and GRPO advantages, the group reward spread and GRPO's k3 KL loss, against hand-computed values."""

import math

import pytest
import torch

from alignlab.rl.group_advantages import group_reward_std, grpo_advantages, rloo_advantages, token_advantages
from alignlab.rl.kl import kl_k3_loss

close = lambda a, b, tol=1e-5: torch.testing.assert_close(  # noqa: E731
    torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol, rtol=0
)


# ---------------------------------------------------------------------------------------- RLOO
def test_rloo_k4_baseline_is_the_mean_of_the_other_three():
    # group [1, 2, 3, 6], sum 12: baselines (12 - r_i) / 3 = [11/3, 10/3, 3, 2]
    # A = r - baseline = [1 - 11/3, 2 - 10/3, 3 - 3, 6 - 2] = [-8/3, -4/3, 0, 4]
    close(rloo_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 4), [-8 / 3, -4 / 3, 0.0, 4.0])


def test_rloo_k2_is_the_difference_of_the_pair():
    close(rloo_advantages(torch.tensor([0.5, -1.5]), 2), [2.0, -2.0])


def test_rloo_equal_rewards_give_zero_advantages():
    adv = rloo_advantages(torch.tensor([2.0, 2.0, 2.0, 2.0]), 4)
    assert torch.equal(adv, torch.zeros(4))


def test_rloo_mixed_batch_keeps_groups_apart():
    # groups of 2: [1, 3], [5, 5], [-2, 0] -> [-2, 2], [0, 0], [-2, 2]
    close(rloo_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0, -2.0, 0.0]), 2), [-2.0, 2.0, 0.0, 0.0, -2.0, 2.0])
    # groups of 3: [0, 3, 6] (sum 9: baselines 4.5, 3, 1.5), [1, 1, 4] (sum 6: baselines 2.5, 2.5, 1)
    close(rloo_advantages(torch.tensor([0.0, 3.0, 6.0, 1.0, 1.0, 4.0]), 3), [-4.5, 0.0, 4.5, -1.5, -1.5, 3.0])


# ---------------------------------------------------------------------------------------- GRPO
def test_grpo_k4_standardises_by_the_unbiased_group_std():
    # mean 3, deviations [-2, -1, 0, 3], unbiased variance (4 + 1 + 0 + 9) / 3 = 14/3
    std = math.sqrt(14 / 3)
    close(grpo_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 4, eps=0.0), [-2 / std, -1 / std, 0.0, 3 / std])
    eps = 1e-4  # the default: the std is padded by eps
    close(
        grpo_advantages(torch.tensor([1.0, 2.0, 3.0, 6.0]), 4),
        [-2 / (std + eps), -1 / (std + eps), 0.0, 3 / (std + eps)],
    )


def test_grpo_k2_is_plus_minus_one_over_root_two():
    # mean -0.5, deviations [1, -1], unbiased std sqrt(2): whatever the gap, +-1/sqrt(2)
    close(grpo_advantages(torch.tensor([0.5, -1.5]), 2, eps=0.0), [1 / math.sqrt(2), -1 / math.sqrt(2)])
    close(grpo_advantages(torch.tensor([10.0, -30.0]), 2, eps=0.0), [1 / math.sqrt(2), -1 / math.sqrt(2)])


def test_grpo_equal_rewards_give_zero_not_nan():
    adv = grpo_advantages(torch.tensor([2.0, 2.0, 2.0, 2.0]), 4)
    assert torch.equal(adv, torch.zeros(4))


def test_grpo_mixed_batch_keeps_groups_apart():
    # groups of 2: [1, 3], [5, 5], [-2, 0]; the two unequal groups -> +-1 / (sqrt(2) + eps), the equal one 0
    a = 1 / (math.sqrt(2) + 1e-4)
    close(grpo_advantages(torch.tensor([1.0, 3.0, 5.0, 5.0, -2.0, 0.0]), 2, eps=1e-4), [-a, a, 0.0, 0.0, -a, a])


# -------------------------------------------------------------------------------------- shared
@pytest.mark.parametrize("fn", [rloo_advantages, grpo_advantages])
def test_refuses_partial_groups_and_k_below_two(fn):
    with pytest.raises(ValueError, match="whole groups of 4"):
        fn(torch.zeros(6), 4)
    with pytest.raises(ValueError, match="k >= 2"):
        fn(torch.zeros(4), 1)


def test_group_reward_std_is_the_mean_within_group_spread():
    # groups [1, 3] (biased std 1) and [5, 5] (std 0): mean 0.5
    close(group_reward_std(torch.tensor([1.0, 3.0, 5.0, 5.0]), 2), 0.5)


def test_token_advantages_broadcast_over_the_response_and_zero_padding():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    close(token_advantages(torch.tensor([2.0, -1.0]), mask), [[2.0, 2.0, 2.0], [-1.0, 0.0, 0.0]])


# ------------------------------------------------------------------------------ GRPO's KL term
def test_kl_k3_loss_hand_computed_and_zero_at_the_reference():
    # token 1: pi 0.5, ref 0.25 -> r = 0.5: (0.5 - 1) - log 0.5 = 0.193147
    # token 2: pi 0.25, ref 0.5 -> r = 2:   (2 - 1) - log 2   = 0.306853 ; token 3 is padding
    lp = torch.log(torch.tensor([[0.5, 0.25, 0.9]]))
    ref = torch.log(torch.tensor([[0.25, 0.5, 0.1]]))
    mask = torch.tensor([[1, 1, 0]])
    close(kl_k3_loss(lp, ref, mask), (0.193147 + 0.306853) / 2)
    assert kl_k3_loss(lp, lp, mask).item() == 0.0


def test_kl_k3_loss_gradient_pulls_towards_the_reference():
    lp = torch.log(torch.tensor([[0.5, 0.25]])).requires_grad_()
    ref = torch.log(torch.tensor([[0.25, 0.5]]))
    kl_k3_loss(lp, ref, torch.ones(1, 2)).backward()
    # d/dlp [(e^(ref-lp) - 1) - (ref - lp)] = 1 - e^(ref-lp): > 0 where pi > ref (descent lowers it), < 0 where below
    close(lp.grad, [[(1 - 0.5) / 2, (1 - 2.0) / 2]])
