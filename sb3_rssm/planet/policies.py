"""
PlaNet's policies: the world model plus a cross-entropy-method planner in its latent space, with the
``MlpPolicy`` / ``CnnPolicy`` / ``MultiInputPolicy`` aliases.
"""

from __future__ import annotations

from typing import Any, Optional

import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_rssm.common.planning import CEMPlanner
from sb3_rssm.common.policies import WorldModelPolicy
from sb3_rssm.common.rssm import RSSMState


class PlaNetPolicy(WorldModelPolicy):
    """
    World model and CEM planner. Acting plans from the belief state with the prior and the reward head and
    returns the first action of the final mean (Discrete: of the final most likely action); during collection
    (``deterministic=False``) exploration noise is added. With ``deterministic=True`` CEM samples from a fixed
    seed, so the same belief always gives the same action. PlaNet's defaults: ReLU, reward loss scale 10,
    Adam epsilon 1e-4, CEM horizon 12 with 1000 candidates, 100 elites and 10 iterations.

    :param planning_horizon: imagined steps per candidate
    :param num_candidates: candidate action sequences per env
    :param num_elites: elites the distribution is refitted to
    :param cem_iterations: refitting iterations
    :param kwargs: world-model arguments of :class:`~sb3_rssm.common.policies.WorldModelPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        planning_horizon: int = 12,
        num_candidates: int = 1000,
        num_elites: int = 100,
        cem_iterations: int = 10,
        activation_fn: type[nn.Module] = nn.ReLU,
        reward_scale: float = 10.0,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        self.planner_kwargs = dict(
            planning_horizon=planning_horizon,
            num_candidates=num_candidates,
            num_elites=num_elites,
            cem_iterations=cem_iterations,
        )
        optimizer_kwargs = {"eps": 1e-4} if optimizer_kwargs is None else optimizer_kwargs
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            activation_fn=activation_fn,
            reward_scale=reward_scale,
            optimizer_kwargs=optimizer_kwargs,
            **kwargs,
        )

    def _build(self) -> None:
        kw = self.planner_kwargs
        self.planner = CEMPlanner(
            self.model_action_size,
            discrete=isinstance(self.action_space, spaces.Discrete),
            horizon=kw["planning_horizon"],
            num_candidates=kw["num_candidates"],
            num_elites=kw["num_elites"],
            iterations=kw["cem_iterations"],
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.planner_kwargs)
        return data

    def _act(self, latent: RSSMState, deterministic: bool) -> th.Tensor:
        if not deterministic:
            return self.planner.plan(self.world_model, latent)
        # a deterministic plan is a function of the belief alone: CEM's sampling runs on a fixed seed,
        # without touching the global random state
        devices = [self.device] if self.device.type == "cuda" else []
        with th.random.fork_rng(devices=devices):
            th.manual_seed(0)
            return self.planner.plan(self.world_model, latent)


class MlpPolicy(PlaNetPolicy):
    """PlaNet policy for vector observations."""

    observation_kind = "vector"


class CnnPolicy(PlaNetPolicy):
    """PlaNet policy for image observations (uint8, 64x64)."""

    observation_kind = "image"


class MultiInputPolicy(PlaNetPolicy):
    """PlaNet policy for Dict observations (images and vectors)."""

    observation_kind = "dict"
