"""DreamerV1's own pieces: lambda-returns, the actor, which optimizer moves which network."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_rssm import DreamerV1
from sb3_rssm.common.envs import PointMassEnv
from sb3_rssm.dreamer_v1.dreamer_v1 import lambda_return
from sb3_rssm.dreamer_v1.policies import Actor
from tests.conftest import tiny_model


def test_lambda_return_limits():
    g = th.Generator().manual_seed(0)
    rewards, values = th.randn(3, 5, generator=g), th.randn(3, 5, generator=g)
    discounts, bootstrap = th.full((3, 5), 0.9), th.randn(3, generator=g)
    # lambda = 1: discounted Monte-Carlo return bootstrapped at the end
    mc = lambda_return(rewards, values, discounts, bootstrap, 1.0)
    expected = bootstrap.clone()
    for t in reversed(range(5)):
        expected = rewards[:, t] + 0.9 * expected
        th.testing.assert_close(mc[:, t], expected)
    # lambda = 0: one-step TD targets
    td = lambda_return(rewards, values, discounts, bootstrap, 0.0)
    next_values = th.cat([values[:, 1:], bootstrap[:, None]], 1)
    th.testing.assert_close(td, rewards + 0.9 * next_values)


def test_box_actor_bounds_mode_and_gradient():
    """
    The mode is ``tanh`` of the soft-clipped mean (the class docstring), and ``act``, which acting uses, returns that
    mode when deterministic and otherwise the tanh-Normal's reparameterized sample with the same random draw.
    Breaks if ``act`` or ``mode`` drops the soft clip or the tanh, or ``act`` samples with another std or draw.
    """
    th.manual_seed(0)
    actor = Actor(6, spaces.Box(-1, 1, (2,)), units=8, layers=1)
    features = th.randn(100, 6) * 3
    distribution = actor.distribution(features)
    sample = actor.sample(distribution)
    assert sample.shape == (100, 2) and sample.abs().max() <= 1
    sample.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())
    with th.no_grad():
        mean = actor.net(features).chunk(2, dim=-1)[0]
        mode = th.tanh(actor.mean_scale * th.tanh(mean / actor.mean_scale))
        th.testing.assert_close(actor(features, deterministic=True), mode)
        th.testing.assert_close(actor.act(features, deterministic=True), mode)
        th.manual_seed(1)
        expected = actor(features)
        th.manual_seed(1)
        acted = actor.act(features)
    th.testing.assert_close(acted, expected)
    assert acted.abs().max() <= 1 and not th.allclose(acted, mode, atol=0.1)  # a sample, spread around the mode
    assert th.isfinite(actor.entropy(distribution)).all()


def test_discrete_actor_straight_through():
    th.manual_seed(0)
    actor = Actor(6, spaces.Discrete(4), units=8, layers=1)
    action = actor(th.randn(50, 6))
    one_hot = th.nn.functional.one_hot(action.detach().argmax(-1), 4).float()
    th.testing.assert_close(action.detach(), one_hot)
    (action * th.arange(4.0)).sum().backward()
    assert actor.net[-1].weight.grad.abs().sum() > 0  # gradient flows through the one-hot sample


@pytest.mark.parametrize("which", ["world_model", "actor", "value"])
def test_each_optimizer_moves_only_its_network(which):
    zero = {"learning_rate": 0.0, "actor_learning_rate": 0.0, "value_learning_rate": 0.0}
    key = {"world_model": "learning_rate", "actor": "actor_learning_rate", "value": "value_learning_rate"}[which]
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), seed=0, **{**zero, key: 1e-2})
    model.learn(30)
    policy = model.policy
    nets = {"world_model": policy.world_model, "actor": policy.actor, "value": policy.value}
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}
    model.train(gradient_steps=2, batch_size=2)
    for name, net in nets.items():
        changed = any(not th.equal(a, b) for a, b in zip(before[name], net.parameters()))
        assert changed == (name == which), f"{name} changed={changed} when only {which} may learn"


def test_actor_gradient_flows_through_imagined_dynamics():
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(30)
    batch = model.replay_buffer.sample(2)
    _, _, posterior = model.policy.world_model.loss(batch)
    model.policy.zero_grad(set_to_none=True)
    _, returns, weights, _ = model.imagine(posterior.detach().flatten())
    model.update.backward(-(weights * returns).mean(), "actor")
    # the first action only affects returns through the dynamics, so a non-zero gradient proves the path
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.policy.actor.parameters())
    assert all(p.grad is None for p in model.policy.world_model.parameters())
    assert np.isfinite(returns.detach().numpy()).all()


def test_all_three_losses_before_any_optimizer_steps():
    # as danijar/dreamer: the actor imagines with the world model the batch's posterior came from
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), seed=0, learning_rate=1e-2)
    model.learn(30)
    policy = model.policy
    nets = {"world_model": policy.world_model, "actor": policy.actor, "value": policy.value}
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in nets.items()}
    model._train_step(model.replay_buffer.sample(2))
    for name, net in nets.items():
        assert all(th.equal(a, b) for a, b in zip(before[name], net.parameters())), f"{name} stepped before the others"
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters()), name
    model.update.step()
    for name, net in nets.items():
        assert any(not th.equal(a, b) for a, b in zip(before[name], net.parameters())), name


def test_actor_mean_scale_reaches_the_actor_and_the_mirrored_point_mass_rewards_the_mirror_image():
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), policy_kwargs=dict(actor_mean_scale=2.0))
    assert model.policy.actor.mean_scale == 2.0 and model.policy._get_constructor_parameters()["actor_mean_scale"] == 2.0
    env = PointMassEnv(start=0.0, target=0.5, mirrored=True)
    env.reset(seed=0)
    _, reward, _, _, _ = env.step(np.array([-1.0], np.float32))  # to -0.1: 0.4 from the mirror image -0.5
    assert reward == pytest.approx(-0.4)


@pytest.mark.parametrize("coef", [0.0, 1e-2])
def test_actor_entropy_holds_a_saturating_actor_off_the_bound(coef):
    """
    With the reward and value heads zeroed the returns carry no gradient, so the actor's gradient is the entropy
    term's alone: with ``actor_entropy_coef`` it pulls a mean pushed towards the upper bound back (the tanh-squashed
    distribution's entropy falls towards a bound); without it there is none.
    """
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), seed=0, actor_entropy_coef=coef)
    model.learn(30)
    policy = model.policy
    with th.no_grad():
        for head in (policy.world_model.reward_head, policy.value):
            last = [m for m in head.modules() if isinstance(m, th.nn.Linear)][-1]
            last.weight.zero_()
            last.bias.zero_()
        output = [m for m in policy.actor.modules() if isinstance(m, th.nn.Linear)][-1]
        output.bias[0] = 3.0  # the mean's pre-activation, near the bound (mean scale 5: tanh(5 tanh(0.6)) = 0.998)
    batch = model.replay_buffer.sample(2)
    _, _, posterior = policy.world_model.loss(batch)
    policy.zero_grad(set_to_none=True)
    model._train_actor(posterior.detach())
    gradient = output.bias.grad[0].item()
    if coef == 0:
        assert gradient == 0.0
    else:
        assert gradient > 0  # a descent step lowers the mean: away from the bound
