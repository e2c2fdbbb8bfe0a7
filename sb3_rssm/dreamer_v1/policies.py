"""
Dreamer's policies: the world model plus an actor and a value network on the model state, with the
``MlpPolicy`` / ``CnnPolicy`` / ``MultiInputPolicy`` aliases.
"""

from __future__ import annotations

import math
from typing import Any, Optional, Union

import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch.distributions import Distribution, Independent, Normal, TanhTransform, TransformedDistribution

from sb3_rssm.common.distributions import OneHotCategorical
from sb3_rssm.common.networks import mlp
from sb3_rssm.common.policies import WorldModelPolicy
from sb3_rssm.common.rssm import RSSMState
from sb3_rssm.common.spaces import action_size
from sb3_rssm.common.update import OptimizerGroup


class Actor(nn.Module):
    """
    Dreamer's action model. Box actions: a tanh-transformed Normal with ``mean = mean_scale * tanh(x / mean_scale)``
    and ``std = softplus(x + softplus^-1(init_std)) + min_std``; its mode is taken as ``tanh(mean)``.
    Discrete actions: a one-hot categorical with straight-through gradients.

    :param feature_size: size of the model state
    :param action_space: Box (of any shape: the actor acts on its flattened vector) or Discrete
    :param units: hidden width
    :param layers: hidden layers
    :param activation_fn: activation
    :param init_std: initial standard deviation (Box)
    :param min_std: minimum standard deviation (Box)
    :param mean_scale: scale of the mean's soft clip (Box)
    """

    def __init__(
        self,
        feature_size: int,
        action_space: spaces.Space,
        units: int = 400,
        layers: int = 4,
        activation_fn: type[nn.Module] = nn.ELU,
        init_std: float = 5.0,
        min_std: float = 1e-4,
        mean_scale: float = 5.0,
    ) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_size = action_size(action_space)
        self.net = mlp(feature_size, self.action_size * (1 if self.discrete else 2), units, layers, activation_fn)
        self.raw_init_std = math.log(math.expm1(init_std))
        self.min_std = min_std
        self.mean_scale = mean_scale

    def distribution(self, features: th.Tensor) -> Union[Distribution, OneHotCategorical]:
        out = self.net(features)
        if self.discrete:
            return OneHotCategorical(out)
        mean, std = out.chunk(2, dim=-1)
        mean = self.mean_scale * th.tanh(mean / self.mean_scale)
        std = F.softplus(std + self.raw_init_std) + self.min_std
        normal = Normal(mean, std, validate_args=False)
        return Independent(
            TransformedDistribution(normal, TanhTransform(cache_size=1), validate_args=False), 1, validate_args=False
        )

    def mode(self, distribution: Union[Distribution, OneHotCategorical]) -> th.Tensor:
        if self.discrete:
            return distribution.mode()
        return th.tanh(distribution.base_dist.base_dist.loc)

    def sample(self, distribution: Union[Distribution, OneHotCategorical]) -> th.Tensor:
        """Reparameterized sample (straight-through for one-hot actions)."""
        if self.discrete:
            return distribution.rsample()
        return distribution.rsample()

    def entropy(self, distribution: Union[Distribution, OneHotCategorical]) -> th.Tensor:
        """Entropy; estimated from one sample for the tanh-Normal, which has no closed form."""
        if self.discrete:
            return distribution.entropy()
        return -distribution.log_prob(distribution.rsample())

    def forward(self, features: th.Tensor, deterministic: bool = False) -> th.Tensor:
        distribution = self.distribution(features)
        return self.mode(distribution) if deterministic else self.sample(distribution)

    def act(self, features: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """
        The action :meth:`forward` returns, without gradients and, for Box actions, without building the
        ``torch.distributions`` objects (about a third of an acting step): ``tanh(mean + std * eps)``, the
        same computation and random draw as the tanh-Normal's ``rsample``.
        """
        if self.discrete:
            return self.forward(features, deterministic)
        mean, std = self.net(features).chunk(2, dim=-1)
        mean = self.mean_scale * th.tanh(mean / self.mean_scale)
        if deterministic:
            return th.tanh(mean)
        std = F.softplus(std + self.raw_init_std) + self.min_std
        return th.tanh(mean + th.randn_like(std) * std)


class DreamerPolicy(WorldModelPolicy):
    """
    World model, actor and value network, each with its own optimizer. Acting: the actor's mode when
    ``deterministic``; otherwise a sample plus exploration noise (``exploration_noise``).

    :param actor_units: actor hidden width
    :param actor_layers: actor hidden layers
    :param value_units: value hidden width
    :param value_layers: value hidden layers
    :param actor_init_std: initial std of the tanh-Normal actor
    :param actor_min_std: minimum std of the tanh-Normal actor
    :param actor_mean_scale: scale of the soft clip of the actor's mean, ``mean_scale * tanh(x / mean_scale)``
        (the paper's 5)
    :param kwargs: world-model arguments of :class:`~sb3_rssm.common.policies.WorldModelPolicy`
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        actor_units: int = 400,
        actor_layers: int = 4,
        value_units: int = 400,
        value_layers: int = 3,
        actor_init_std: float = 5.0,
        actor_min_std: float = 1e-4,
        actor_mean_scale: float = 5.0,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
        **kwargs: Any,
    ) -> None:
        self.actor_kwargs = dict(
            actor_units=actor_units,
            actor_layers=actor_layers,
            value_units=value_units,
            value_layers=value_layers,
            actor_init_std=actor_init_std,
            actor_min_std=actor_min_std,
            actor_mean_scale=actor_mean_scale,
        )
        # Adam epsilon of the reference implementation (TensorFlow's default)
        optimizer_kwargs = {"eps": 1e-7} if optimizer_kwargs is None else optimizer_kwargs
        super().__init__(observation_space, action_space, lr_schedule, optimizer_kwargs=optimizer_kwargs, **kwargs)

    def _build(self) -> None:
        feature_size = self.world_model.rssm.feature_size
        activation_fn = self.world_model_kwargs["activation_fn"]
        kw = self.actor_kwargs
        self.actor = Actor(
            feature_size,
            self.action_space,
            kw["actor_units"],
            kw["actor_layers"],
            activation_fn,
            kw["actor_init_std"],
            kw["actor_min_std"],
            kw["actor_mean_scale"],
        )
        self.value = mlp(feature_size, 1, kw["value_units"], kw["value_layers"], activation_fn)
        # learning rates are set by the algorithm from its schedules before every training phase
        self.actor_optimizer = self.optimizer_class(self.actor.parameters(), lr=1e-4, **self.optimizer_kwargs)
        self.value_optimizer = self.optimizer_class(self.value.parameters(), lr=1e-4, **self.optimizer_kwargs)

    @property
    def optimizer_names(self) -> list[str]:
        return [*super().optimizer_names, "actor_optimizer", "value_optimizer"]

    def optimizer_groups(self) -> list[OptimizerGroup]:
        return [
            *super().optimizer_groups(),
            OptimizerGroup("actor", "actor", self.actor_optimizer, list(self.actor.parameters())),
            OptimizerGroup("value", "value", self.value_optimizer, list(self.value.parameters())),
        ]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.actor_kwargs)
        return data

    def predict_value(self, features: th.Tensor) -> th.Tensor:
        return self.value(features).squeeze(-1)

    def _act(self, latent: RSSMState, deterministic: bool) -> th.Tensor:
        return self.actor.act(latent.features, deterministic=deterministic)


class MlpPolicy(DreamerPolicy):
    """Dreamer policy for vector observations."""

    observation_kind = "vector"


class CnnPolicy(DreamerPolicy):
    """Dreamer policy for image observations (uint8, 64x64)."""

    observation_kind = "image"


class MultiInputPolicy(DreamerPolicy):
    """Dreamer policy for Dict observations (images and vectors)."""

    observation_kind = "dict"
