"""Shared fixtures: tiny model settings per algorithm, so contract tests run in seconds."""

import pytest
import torch as th

from sb3_rssm import DreamerV1, DreamerV3, PlaNet

TINY_WORLD_MODEL = dict(
    stochastic_size=4,
    deterministic_size=8,
    hidden_size=8,
    cnn_depth=2,
    mlp_units=8,
    mlp_layers=1,
    reward_units=8,
    reward_layers=1,
)
TINY = {
    DreamerV1: dict(actor_units=8, actor_layers=1, value_units=8, value_layers=1),
    PlaNet: dict(planning_horizon=3, num_candidates=16, num_elites=4, cem_iterations=2),
    # 2 latents of 2 classes: the same 4 stochastic features as the Gaussian models' tiny state
    DreamerV3: dict(stochastic_size=2, classes=2, blocks=2, actor_units=8, actor_layers=1, critic_units=8, critic_layers=1),
}
FAST = dict(learning_starts=20, batch_size=2, sequence_length=4, train_freq=10, gradient_steps=1)
ALGORITHMS = list(TINY)


def tiny_model(algorithm, policy, env, policy_kwargs=None, **kwargs):
    """An algorithm with tiny networks and a fast training cadence."""
    extra = dict(imagination_horizon=3) if algorithm in (DreamerV1, DreamerV3) else {}
    kw = {**FAST, **extra, **kwargs}
    return algorithm(policy, env, policy_kwargs={**TINY_WORLD_MODEL, **TINY[algorithm], **(policy_kwargs or {})}, **kw)


@pytest.fixture(autouse=True)
def _threads():
    th.set_num_threads(1)
