"""Tests of the latent-space CEM planner on toy models with known optima, and on a real tiny world model."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_rssm.common.rssm import RSSMState
from sb3_rssm.common.world_model import WorldModel
from sb3_rssm.planet.planning import CEMPlanner


class DummyRSSM:
    """Imagination that stores the action taken in the stochastic state and keeps the deterministic one."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, bool]] = []

    def imagine_step(self, state: RSSMState, action: th.Tensor, sample: bool = True) -> RSSMState:
        self.calls.append((action.shape[0], sample))
        return RSSMState(state.deterministic, action, action, th.ones_like(action))


class DummyModel:
    """
    Toy model whose reward depends only on the last action and a per-env parameter ``w`` held in the
    deterministic state (features = ``cat(action, w)``):

    * ``"distance"``: ``-||a - w||^2``, maximized at ``a = w``
    * ``"linear"``: ``a . w``, maximized by the one-hot of ``argmax(w)``
    """

    def __init__(self, action_size: int, kind: str = "distance") -> None:
        self.action_size = action_size
        self.kind = kind
        self.rssm = DummyRSSM()

    def reward(self, features: th.Tensor) -> th.Tensor:
        action, w = features[..., : self.action_size], features[..., self.action_size :]
        if self.kind == "distance":
            return -((action - w) ** 2).sum(-1)
        return (action * w).sum(-1)


def dummy_belief(params: list[list[float]]) -> RSSMState:
    w = th.tensor(params, dtype=th.float32)
    return RSSMState(w, th.zeros_like(w), th.zeros_like(w), th.ones_like(w))


def test_cem_finds_optimum_of_toy_objective():
    th.manual_seed(0)
    target = th.tensor([0.3, -0.5])
    planner = CEMPlanner(action_size=2, horizon=3, num_candidates=500, num_elites=50, iterations=8)
    action = planner.plan(DummyModel(2), dummy_belief([target.tolist()]))
    assert action.shape == (1, 2)
    assert not action.requires_grad
    assert th.allclose(action[0], target, atol=0.05), action


def test_elite_refit_shrinks_std():
    th.manual_seed(1)
    planner = CEMPlanner(action_size=2, horizon=3, num_candidates=500, num_elites=50, iterations=8)
    action, mean, std = planner.plan(DummyModel(2), dummy_belief([[0.3, -0.5]]), return_distribution=True)
    assert mean.shape == std.shape == (1, 3, 2)
    assert th.equal(action, mean[:, 0])
    # Every step of the sequence is rewarded, so every step's distribution concentrates on the target.
    assert th.allclose(mean[0], th.tensor([0.3, -0.5]).expand(3, 2), atol=0.05)
    assert std.max() < 0.2, std


def test_min_std_floors_refitted_std():
    th.manual_seed(2)
    planner = CEMPlanner(action_size=2, horizon=3, num_candidates=200, num_elites=20, iterations=6, min_std=0.3)
    _, _, std = planner.plan(DummyModel(2), dummy_belief([[0.3, -0.5]]), return_distribution=True)
    assert th.all(std >= 0.3)


def test_candidates_stay_in_normalized_action_range():
    th.manual_seed(3)
    # The optimum lies outside [-1, 1]: the best feasible action is the clipped corner.
    planner = CEMPlanner(action_size=2, horizon=2, num_candidates=300, num_elites=30, iterations=6)
    action = planner.plan(DummyModel(2), dummy_belief([[3.0, -3.0]]))
    assert th.all(action.abs() <= 1.0)
    assert th.allclose(action[0], th.tensor([1.0, -1.0]), atol=0.05), action


def test_batched_envs_plan_independently():
    th.manual_seed(4)
    targets = [[0.3, -0.5], [-0.6, 0.4]]
    planner = CEMPlanner(action_size=2, horizon=3, num_candidates=500, num_elites=50, iterations=8)
    model = DummyModel(2)
    batched = planner.plan(model, dummy_belief(targets))
    assert batched.shape == (2, 2)
    for i, target in enumerate(targets):
        assert th.allclose(batched[i], th.tensor(target), atol=0.05), (i, batched)
    assert not th.allclose(batched[0], batched[1], atol=0.5)
    alone = planner.plan(model, dummy_belief(targets[:1]))
    assert th.allclose(alone[0], batched[0], atol=0.05), (alone, batched)


def test_all_candidates_evaluated_in_one_batch_per_step():
    th.manual_seed(5)
    model = DummyModel(2)
    planner = CEMPlanner(action_size=2, horizon=4, num_candidates=30, num_elites=5, iterations=3, sample_latents=False)
    planner.plan(model, dummy_belief([[0.1, 0.2], [0.3, 0.4], [0.5, 0.6]]))
    # One imagine_step per (iteration, horizon step), each over all envs' candidates, with the sample flag passed on.
    assert model.rssm.calls == [(3 * 30, False)] * (3 * 4)


def test_discrete_plan_returns_one_hot_of_best_action():
    th.manual_seed(6)
    planner = CEMPlanner(action_size=4, discrete=True, horizon=3, num_candidates=200, num_elites=20, iterations=5)
    model = DummyModel(4, kind="linear")
    # Env 0 prefers action 2 (with 1 a close second), env 1 prefers action 0.
    belief = dummy_belief([[0.0, 0.8, 1.0, 0.2], [1.0, 0.0, 0.5, 0.0]])
    action, probs, std = planner.plan(model, belief, return_distribution=True)
    assert action.shape == (2, 4)
    assert action.dtype == th.float32
    assert th.all((action == 0.0) | (action == 1.0))
    assert th.all(action.sum(-1) == 1.0)
    assert action[0].argmax().item() == 2
    assert action[1].argmax().item() == 0
    assert probs.shape == std.shape == (2, 3, 4)
    assert th.allclose(probs.sum(-1), th.ones(2, 3))
    assert probs[0, 0, 2] > 0.9 and probs[1, 0, 0] > 0.9, probs


def test_real_world_model_continuous():
    th.manual_seed(7)
    wm = WorldModel(
        spaces.Box(-1, 1, (3,), np.float32),
        spaces.Box(-1, 1, (2,), np.float32),
        stochastic_size=4,
        deterministic_size=8,
        hidden_size=8,
        mlp_units=8,
        reward_units=8,
    )
    planner = CEMPlanner(action_size=2, horizon=4, num_candidates=64, num_elites=8, iterations=3)
    action = planner.plan(wm, wm.rssm.initial(2))
    assert action.shape == (2, 2)
    assert th.all(th.isfinite(action))
    assert th.all(action.abs() <= 1.0)
    assert not action.requires_grad


def test_real_world_model_discrete():
    th.manual_seed(8)
    wm = WorldModel(
        spaces.Box(-1, 1, (3,), np.float32),
        spaces.Discrete(3),
        stochastic_size=4,
        deterministic_size=8,
        hidden_size=8,
        mlp_units=8,
        reward_units=8,
    )
    planner = CEMPlanner(action_size=3, discrete=True, horizon=4, num_candidates=64, num_elites=8, iterations=3)
    action = planner.plan(wm, wm.rssm.initial(2))
    assert action.shape == (2, 3)
    assert th.all(action.sum(-1) == 1.0)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(action_size=0), "action_size must be a positive integer"),
        (dict(action_size=2, horizon=0), "horizon must be a positive integer"),
        (dict(action_size=2, num_candidates=-1), "num_candidates must be a positive integer"),
        (dict(action_size=2, num_elites=0), "num_elites must be a positive integer"),
        (dict(action_size=2, iterations=0), "iterations must be a positive integer"),
        (dict(action_size=2, horizon=2.5), "horizon must be a positive integer"),
        (dict(action_size=2, num_candidates=10, num_elites=20), r"num_elites \(20\) must not exceed num_candidates \(10\)"),
        (dict(action_size=2, min_std=-0.1), "min_std must be >= 0"),
    ],
)
def test_argument_validation(kwargs, match):
    th.manual_seed(9)
    with pytest.raises(ValueError, match=match):
        CEMPlanner(**kwargs)


def tiny_pendulum_model(seed: int) -> WorldModel:
    th.manual_seed(seed)
    return WorldModel(
        spaces.Box(-1, 1, (3,), np.float32),
        spaces.Box(-1, 1, (1,), np.float32),
        stochastic_size=4,
        deterministic_size=8,
        hidden_size=8,
        mlp_units=8,
        reward_units=8,
    )


@pytest.mark.parametrize("sample_latents", [False, True])
def test_scores_on_prior_mean_are_a_function_of_the_belief(sample_latents):
    wm = tiny_pendulum_model(10)
    planner = CEMPlanner(1, horizon=5, num_candidates=32, num_elites=4, iterations=2, sample_latents=sample_latents)
    belief = RSSMState(th.randn(32, 8), th.randn(32, 4), th.zeros(32, 4), th.ones(32, 4))
    candidates = th.rand(32, 5, 1) * 2 - 1
    with th.no_grad():
        first, second = planner._evaluate(wm, belief, candidates), planner._evaluate(wm, belief, candidates)
    # scoring the prior mean draws no random numbers: the same belief and candidates give the same scores
    assert th.equal(first, second) == (not sample_latents)
