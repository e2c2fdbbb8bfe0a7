"""
DreamerV3's policies: its world model plus an actor, a critic and the critic's slow (EMA) copy on the model
state, the model-size presets of the official configuration, and the ``MlpPolicy`` / ``CnnPolicy`` /
``MultiInputPolicy`` aliases.
"""

from __future__ import annotations

import copy
import difflib
from typing import Any, Optional, Union

import torch as th
from gymnasium import spaces
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch.distributions import Distribution

from sb3_rssm.common.distributions import (
    OneHotCategorical,
    TwoHot,
    bounded_normal,
    mode_one_hot,
    sample_one_hot,
    unimix_log_probs,
)
from sb3_rssm.common.policies import BeliefPolicy
from sb3_rssm.common.returns import ReturnNormalizer
from sb3_rssm.common.rssm import LatentState
from sb3_rssm.common.spaces import action_size
from sb3_rssm.common.update import OptimizerGroup
from sb3_rssm.dreamer_v3.networks import init_, normed_mlp
from sb3_rssm.dreamer_v3.optimizers import LaProp
from sb3_rssm.dreamer_v3.world_model import DreamerV3WorldModel

#: DreamerV3's model sizes (danijar/dreamerv3 ``configs.yaml``, ``size1m`` to ``size400m``): the RSSM's
#: deterministic size, hidden width and classes per latent, the conv depth, and the width of every MLP
MODEL_SIZES: dict[str, dict[str, int]] = {
    name: dict(deterministic_size=deter, hidden_size=hidden, classes=classes, cnn_depth=depth, units=units)
    for name, (deter, hidden, classes, depth, units) in {
        "size1m": (512, 64, 4, 4, 64),
        "size12m": (2048, 256, 16, 16, 256),
        "size25m": (3072, 384, 24, 24, 384),
        "size50m": (4096, 512, 32, 32, 512),
        "size100m": (6144, 768, 48, 48, 768),
        "size200m": (8192, 1024, 64, 64, 1024),
        "size400m": (12288, 1536, 96, 96, 1536),
    }.items()
}


def model_size(size: str, **overrides: Optional[int]) -> dict[str, int]:
    """
    The sizes of preset ``size``, with every override that is not None in its place.

    :param size: a key of :data:`MODEL_SIZES`
    :param overrides: ``deterministic_size``, ``hidden_size``, ``classes``, ``cnn_depth``, and widths (``mlp_units``,
        ``reward_units``, ``actor_units``, ``critic_units``) that default to the preset's ``units``
    """
    if size not in MODEL_SIZES:
        hint = "".join(f" Did you mean {match!r}?" for match in difflib.get_close_matches(size, MODEL_SIZES, n=1))
        raise ValueError(f"Unknown DreamerV3 model size {size!r}.{hint} Choose one of {', '.join(MODEL_SIZES)}.")
    preset = MODEL_SIZES[size]
    sizes = {key: value for key, value in preset.items() if key != "units"}
    for key in ("mlp_units", "reward_units", "actor_units", "critic_units"):
        sizes[key] = preset["units"]
    sizes.update({key: value for key, value in overrides.items() if value is not None})
    return sizes


class ActorV3(nn.Module):
    """
    DreamerV3's actor: an MLP of RMSNorm + SiLU layers with an output layer initialised at 1% scale. Discrete
    actions: a one-hot categorical mixed with ``unimix`` uniform. Box actions: :func:`bounded_normal` (mean
    ``tanh``, std between ``min_std`` and ``max_std``), whose samples are clipped to [-1, 1] when acting.

    :param feature_size: size of the model state
    :param action_space: Box (acting on its flattened vector) or Discrete
    :param units: hidden width
    :param layers: hidden layers
    :param unimix: uniform share of the categorical (Discrete)
    :param min_std: smallest standard deviation (Box)
    :param max_std: largest standard deviation (Box)
    """

    def __init__(
        self,
        feature_size: int,
        action_space: spaces.Space,
        units: int = 256,
        layers: int = 3,
        unimix: float = 0.01,
        min_std: float = 0.1,
        max_std: float = 1.0,
    ) -> None:
        super().__init__()
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_size = action_size(action_space)
        self.unimix, self.min_std, self.max_std = unimix, min_std, max_std
        self.net = normed_mlp(feature_size, units, layers)
        # mean and std of Box actions share a layer: the same initialisation as two of them
        self.output = init_(nn.Linear(units, self.action_size * (1 if self.discrete else 2)), outscale=0.01)

    def forward(self, features: th.Tensor) -> th.Tensor:
        """The output layer's values: logits (Discrete), or raw mean and std side by side (Box)."""
        return self.output(self.net(features))

    def distribution(self, features: th.Tensor) -> Union[Distribution, OneHotCategorical]:
        """The action distribution in each state, over the (one-hot or flattened) action vector."""
        out = self(features)
        if self.discrete:
            return OneHotCategorical(unimix_log_probs(out, self.unimix))
        mean, std = out.chunk(2, dim=-1)
        return bounded_normal(mean, std, self.min_std, self.max_std)

    @th.no_grad()
    def sample(self, features: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """
        An action per state, without gradient and without building distribution objects: a sample (Box: not
        clipped, as imagination's log-probabilities need it), or the mode when ``deterministic``.
        """
        out = self(features)
        if self.discrete:
            log_probs = unimix_log_probs(out, self.unimix)
            return mode_one_hot(log_probs) if deterministic else sample_one_hot(log_probs, straight_through=False)
        raw_mean, raw_std = out.float().chunk(2, dim=-1)
        mean = th.tanh(raw_mean)
        if deterministic:
            return mean
        std = (self.max_std - self.min_std) * th.sigmoid(raw_std + 2.0) + self.min_std
        return mean + std * th.randn_like(std)

    def act(self, features: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """:meth:`sample`, with Box actions clipped to [-1, 1] as the env clips them: the action acting carries."""
        action = self.sample(features, deterministic)
        return action if self.discrete else action.clamp(-1.0, 1.0)


class DreamerV3Policy(BeliefPolicy):
    """
    World model, actor and critic, each with its own optimizer (:class:`~sb3_rssm.dreamer_v3.optimizers.LaProp` by
    default: the three optimizers with one learning rate are DreamerV3's single optimizer, whose clipping and
    scaling are per parameter tensor), plus the slow critic (an EMA of the critic, updated by the algorithm) and
    the return normalizer. Acting samples the actor (its mode when ``deterministic``); DreamerV3 adds no
    exploration noise.

    Sizes: ``size`` picks a preset of :data:`MODEL_SIZES`; every size left at None takes the preset's value.

    :param observation_space: observation space
    :param action_space: Box or Discrete action space
    :param lr_schedule: learning-rate schedule of the world model
    :param size: model-size preset, ``"size1m"`` to ``"size400m"`` (DreamerV3 used ``size1m`` on dm_control from
        states and ``size200m``, its default, from pixels)
    :param stochastic_size: number of categorical latents
    :param classes: classes per latent (None: preset)
    :param deterministic_size: GRU state size (None: preset)
    :param hidden_size: width of the RSSM's dense layers (None: preset)
    :param blocks: groups of the block-diagonal GRU (``deterministic_size`` must be a multiple)
    :param unimix: uniform share of the latents' categoricals
    :param cnn_depth: conv channel multiplier (None: preset)
    :param cnn_strided: stride-2 convolutions in the image encoder and decoder instead of stride 1 with max-pooling
        and upsampling (danijar/dreamerv3's ``strided``, off by default there too): a quarter of their FLOPs
    :param mlp_units: width of the encoder's and decoder's MLPs (None: preset)
    :param mlp_layers: layers of the encoder's and decoder's MLPs
    :param reward_units: width of the reward and continuation heads (None: preset)
    :param reward_layers: hidden layers of the reward head
    :param continuation_layers: hidden layers of the continuation head
    :param bins: two-hot bins of the reward head and the critic
    :param free_bits: free nats of each KL term, per step
    :param dyn_scale: weight of the dynamics KL
    :param rep_scale: weight of the representation KL
    :param actor_units: actor width (None: preset)
    :param actor_layers: actor hidden layers
    :param critic_units: critic width (None: preset)
    :param critic_layers: critic hidden layers
    :param actor_unimix: uniform share of the categorical actor (Discrete actions)
    :param actor_min_std: smallest std of the Box actor
    :param actor_max_std: largest std of the Box actor
    :param exploration_noise: extra exploration noise (see :class:`~sb3_rssm.common.policies.BeliefPolicy`; 0)
    :param optimizer_class: optimizer of every network
    :param optimizer_kwargs: its keyword arguments (LaProp's defaults are DreamerV3's)
    """

    world_model: DreamerV3WorldModel

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        size: str = "size12m",
        stochastic_size: int = 32,
        classes: Optional[int] = None,
        deterministic_size: Optional[int] = None,
        hidden_size: Optional[int] = None,
        blocks: int = 8,
        unimix: float = 0.01,
        cnn_depth: Optional[int] = None,
        cnn_strided: bool = False,
        mlp_units: Optional[int] = None,
        mlp_layers: int = 3,
        reward_units: Optional[int] = None,
        reward_layers: int = 1,
        continuation_layers: int = 1,
        bins: int = 255,
        free_bits: float = 1.0,
        dyn_scale: float = 0.5,
        rep_scale: float = 0.1,
        actor_units: Optional[int] = None,
        actor_layers: int = 3,
        critic_units: Optional[int] = None,
        critic_layers: int = 3,
        actor_unimix: float = 0.01,
        actor_min_std: float = 0.1,
        actor_max_std: float = 1.0,
        exploration_noise: float = 0.0,
        optimizer_class: type[th.optim.Optimizer] = LaProp,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        self.sizes = model_size(
            size,
            classes=classes,
            deterministic_size=deterministic_size,
            hidden_size=hidden_size,
            cnn_depth=cnn_depth,
            mlp_units=mlp_units,
            reward_units=reward_units,
            actor_units=actor_units,
            critic_units=critic_units,
        )
        self.actor_kwargs = dict(
            actor_units=actor_units,
            actor_layers=actor_layers,
            critic_units=critic_units,
            critic_layers=critic_layers,
            actor_unimix=actor_unimix,
            actor_min_std=actor_min_std,
            actor_max_std=actor_max_std,
        )
        world_model_kwargs = dict(
            size=size,
            stochastic_size=stochastic_size,
            classes=classes,
            deterministic_size=deterministic_size,
            hidden_size=hidden_size,
            blocks=blocks,
            unimix=unimix,
            cnn_depth=cnn_depth,
            cnn_strided=cnn_strided,
            mlp_units=mlp_units,
            mlp_layers=mlp_layers,
            reward_units=reward_units,
            reward_layers=reward_layers,
            continuation_layers=continuation_layers,
            bins=bins,
            free_bits=free_bits,
            dyn_scale=dyn_scale,
            rep_scale=rep_scale,
        )
        super().__init__(
            observation_space,
            action_space,
            lr_schedule,
            world_model_kwargs,
            exploration_noise,
            optimizer_class,
            optimizer_kwargs,
        )

    def make_world_model(
        self, observation_space: spaces.Space, action_space: spaces.Space, **kwargs: Any
    ) -> DreamerV3WorldModel:
        sizes = self.sizes
        return DreamerV3WorldModel(
            observation_space,
            action_space,
            stochastic_size=kwargs["stochastic_size"],
            classes=sizes["classes"],
            deterministic_size=sizes["deterministic_size"],
            hidden_size=sizes["hidden_size"],
            blocks=kwargs["blocks"],
            unimix=kwargs["unimix"],
            cnn_depth=sizes["cnn_depth"],
            mlp_units=sizes["mlp_units"],
            mlp_layers=kwargs["mlp_layers"],
            head_units=sizes["reward_units"],
            reward_layers=kwargs["reward_layers"],
            continuation_layers=kwargs["continuation_layers"],
            bins=kwargs["bins"],
            free_bits=kwargs["free_bits"],
            dyn_scale=kwargs["dyn_scale"],
            rep_scale=kwargs["rep_scale"],
            cnn_strided=kwargs["cnn_strided"],
        )

    def _build(self) -> None:
        feature_size = self.world_model.rssm.feature_size
        kw, sizes = self.actor_kwargs, self.sizes
        self.actor = ActorV3(
            feature_size,
            self.action_space,
            sizes["actor_units"],
            kw["actor_layers"],
            kw["actor_unimix"],
            kw["actor_min_std"],
            kw["actor_max_std"],
        )
        bins = self.world_model_kwargs["bins"]
        # zero-initialised output layer: every value is predicted as exactly 0 at first
        self.critic = normed_mlp(feature_size, sizes["critic_units"], kw["critic_layers"], bins, outscale=0.0)
        # the slow critic regularizes the critic (an EMA of it, moved by the algorithm, never by an optimizer)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.two_hot = TwoHot(bins)
        self.return_normalizer = ReturnNormalizer()
        # learning rates are set by the algorithm from its schedules before every training phase
        self.actor_optimizer = self.optimizer_class(self.actor.parameters(), lr=1e-4, **self.optimizer_kwargs)
        self.critic_optimizer = self.optimizer_class(self.critic.parameters(), lr=1e-4, **self.optimizer_kwargs)

    @property
    def optimizer_names(self) -> list[str]:
        return [*super().optimizer_names, "actor_optimizer", "critic_optimizer"]

    def optimizer_groups(self) -> list[OptimizerGroup]:
        return [
            *super().optimizer_groups(),
            OptimizerGroup("actor", "actor", self.actor_optimizer, list(self.actor.parameters())),
            OptimizerGroup("critic", "critic", self.critic_optimizer, list(self.critic.parameters())),
        ]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(self.actor_kwargs)
        return data

    def predict_value(self, features: th.Tensor, slow: bool = False) -> th.Tensor:
        """The critic's (or the slow critic's) value of each state, shape of ``features`` without the last dim."""
        return self.two_hot.decode((self.slow_critic if slow else self.critic)(features))

    @th.no_grad()
    def update_slow_critic(self, rate: float, applied: Optional[th.Tensor] = None) -> None:
        """
        Move the slow critic towards the critic: ``slow = rate * critic + (1 - rate) * slow``.

        :param rate: the moving average's rate
        :param applied: a boolean scalar: where false (the critic's step was skipped) nothing moves
        """
        for slow, fast in zip(self.slow_critic.parameters(), self.critic.parameters()):
            moved = th.lerp(slow, fast, rate)
            slow.copy_(moved if applied is None else th.where(applied, moved, slow))

    def _act(self, latent: LatentState, deterministic: bool) -> th.Tensor:
        return self.actor.act(latent.features, deterministic=deterministic)


class MlpPolicy(DreamerV3Policy):
    """DreamerV3 policy for vector observations."""

    observation_kind = "vector"


class CnnPolicy(DreamerV3Policy):
    """DreamerV3 policy for image observations (uint8, 64x64)."""

    observation_kind = "image"


class MultiInputPolicy(DreamerV3Policy):
    """DreamerV3 policy for Dict observations (images and vectors)."""

    observation_kind = "dict"
