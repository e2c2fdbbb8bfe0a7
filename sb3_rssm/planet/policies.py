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

from sb3_rssm.common.policies import WorldModelPolicy
from sb3_rssm.common.rssm import RSSMState
from sb3_rssm.planet.planning import CEMPlanner


class PlaNetPolicy(WorldModelPolicy):
    """
    World model and CEM planner. Acting plans from the belief state with the prior and the reward head and
    returns the first action of the final mean (Discrete: of the final most likely action); during collection
    (``deterministic=False``) exploration noise is added. With ``deterministic=True`` CEM samples from a fixed
    seed, so the same belief always gives the same action.

    PlaNet's defaults (google-research/planet): ReLU; reward head of 3 layers of 300 units; reward loss
    scale 10; free nats 3 clamped on every (batch, time) step (``kl_strategy="free_bits_per_step"``); images
    reduced to 5 bits with uniform dequantization noise (``image_bits=5``); Adam epsilon 1e-4; CEM horizon
    12 with 1000 candidates, 100 elites and 10 iterations, scoring sampled prior states.

    CPU cost: the paper's CEM takes about 1 s per action on 2 CPU cores (a 10-episode evaluation of a
    200-step task: half an hour). On a CPU use a smaller search, e.g. ``num_candidates=150, num_elites=15,
    cem_iterations=4`` (the Pendulum-v1 preset of ``sb3_rssm/zoo/hyperparams/planet.yml``, which plans 20 steps
    ahead: about 75 ms).

    :param planning_horizon: imagined steps per candidate
    :param num_candidates: candidate action sequences per env
    :param num_elites: elites the distribution is refitted to
    :param cem_iterations: refitting iterations
    :param cem_min_std: lower bound of the refitted std of continuous actions (0: none, as in PlaNet)
    :param cem_sample_latents: score candidates on sampled prior states (PlaNet); ``False`` uses the prior
        mean, which makes a candidate's score a deterministic function of the belief
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
        cem_min_std: float = 0.0,
        cem_sample_latents: bool = True,
        activation_fn: type[nn.Module] = nn.ReLU,
        reward_scale: float = 10.0,
        reward_units: int = 300,
        reward_layers: int = 3,
        kl_strategy: str = "free_bits_per_step",
        image_bits: int = 5,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        self.planner_kwargs = dict(
            planning_horizon=planning_horizon,
            num_candidates=num_candidates,
            num_elites=num_elites,
            cem_iterations=cem_iterations,
            cem_min_std=cem_min_std,
            cem_sample_latents=cem_sample_latents,
        )
        optimizer_kwargs = {"eps": 1e-4} if optimizer_kwargs is None else optimizer_kwargs
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            activation_fn=activation_fn,
            reward_scale=reward_scale,
            reward_units=reward_units,
            reward_layers=reward_layers,
            kl_strategy=kl_strategy,
            image_bits=image_bits,
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
            min_std=kw["cem_min_std"],
            sample_latents=kw["cem_sample_latents"],
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
