"""LaProp with adaptive gradient clipping and warm-up (DreamerV3's optimizer)."""

import pytest
import torch as th

from sb3_rssm.dreamer_v3.optimizers import LaProp


def test_laprop_matches_a_hand_computation():
    p = th.nn.Parameter(th.tensor([1.0, -2.0, 3.0]))
    grads = [th.tensor([0.1, 0.2, -0.3]), th.tensor([0.4, -0.1, 0.0]), th.tensor([-0.2, 0.3, 0.1])]
    optimizer = LaProp([p], lr=0.01, betas=(0.9, 0.99), eps=1e-8, agc=0.0, warmup=0)
    expected = p.detach().clone()
    nu, mu = th.zeros(3), th.zeros(3)
    for t, grad in enumerate(grads, start=1):
        p.grad = grad.clone()
        optimizer.step()
        nu = 0.99 * nu + 0.01 * grad**2
        mu = 0.9 * mu + 0.1 * grad / ((nu / (1 - 0.99**t)).sqrt() + 1e-8)
        expected -= 0.01 * mu / (1 - 0.9**t)
        th.testing.assert_close(p.detach(), expected)


def test_adaptive_gradient_clipping_bounds_the_gradient_by_the_parameter_norm():
    # with one step the update is the sign of the gradient times lr, so clipping shows in the state only
    p = th.nn.Parameter(th.tensor([3.0, 4.0]))  # norm 5: gradients above norm 0.3 * 5 = 1.5 are scaled down
    optimizer = LaProp([p], lr=0.1, agc=0.3, warmup=0)
    p.grad = th.tensor([30.0, 40.0])  # norm 50
    optimizer.step()
    clipped = th.tensor([0.9, 1.2])  # norm 1.5
    th.testing.assert_close(optimizer.state[p]["nu"], 0.001 * clipped**2)
    small = th.nn.Parameter(th.zeros(2))  # below agc_min_norm 1e-3: the limit is 0.3e-3
    optimizer = LaProp([small], lr=0.1, agc=0.3, warmup=0)
    small.grad = th.tensor([1.0, 0.0])
    optimizer.step()
    th.testing.assert_close(optimizer.state[small]["nu"], 0.001 * th.tensor([0.3e-3, 0.0]) ** 2)


def test_warmup_raises_the_learning_rate_linearly():
    p = th.nn.Parameter(th.zeros(1))
    optimizer = LaProp([p], lr=1.0, betas=(0.0, 0.0), eps=0.0, agc=0.0, warmup=4)
    steps = []
    for _ in range(6):
        before = p.detach().clone()
        p.grad = th.ones(1)
        optimizer.step()
        steps.append((before - p.detach()).item())
    # with no momentum and no averaging every update is lr_t * sign(grad)
    assert steps == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert optimizer.state[p]["step"].item() == 6


def test_invalid_settings():
    with pytest.raises(ValueError, match="Invalid LaProp settings"):
        LaProp([th.nn.Parameter(th.zeros(1))], betas=(0.9, 1.0))
