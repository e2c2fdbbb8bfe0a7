"""
The policy bases: a world model that filters observations into a belief state, and a recurrent ``predict``
that carries that state between calls the way sb3-contrib's ``RecurrentPPO`` does, so ``evaluate_policy`` and
``EvalCallback`` work unchanged (:class:`BeliefPolicy`, every policy's base); and the base of the policies on
the Gaussian world model, PlaNet's and DreamerV1's (:class:`WorldModelPolicy`).
"""

from __future__ import annotations

import warnings
from typing import Any, Optional, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_rssm.common.distributions import one_hot_of
from sb3_rssm.common.resize import ImageResizer
from sb3_rssm.common.rssm import LatentState
from sb3_rssm.common.spaces import check_action_space, one_hot_to_index, split_observation_space
from sb3_rssm.common.update import OptimizerGroup
from sb3_rssm.common.world_model import WorldModel, WorldModelBase

# (deterministic h, stochastic s, previous action) per env
RecurrentState = tuple[th.Tensor, th.Tensor, th.Tensor]

# SB3's own words (BasePolicy.predict) for the tuple that gymnasium's env.reset() returns
GYM_TUPLE_ERROR = (
    "You have passed a tuple to the predict() function instead of a Numpy array or a Dict. "
    "You are probably mixing Gym API with SB3 VecEnv API: `obs, info = env.reset()` (Gym) "
    "vs `obs = vec_env.reset()` (SB3 VecEnv). "
    "See related issue https://github.com/DLR-RM/stable-baselines3/issues/1694 "
    "and documentation for more information: "
    "https://stable-baselines3.readthedocs.io/en/master/guide/vec_envs.html#vecenv-api-vs-gym-api"
)

STATELESS_PREDICT_WARNING = (
    "predict() was called again without state= and episode_start=: every such call starts from an empty belief, as "
    "if each step began an episode, and acts far worse than a policy that remembers. Pass the returned state back, "
    "as with sb3-contrib's RecurrentPPO: `action, state = model.predict(obs, state=state, episode_start=episode_start)`, "
    "with episode_start the previous step's dones (True at the first call). evaluate_policy and EvalCallback do this."
)


def starts_tensor(episode_start: Optional[np.ndarray], n_envs: int, device: th.device) -> Optional[th.Tensor]:
    """
    Episode-start flags as the float tensor :meth:`WorldModelPolicy.step` takes, or None when no env starts an
    episode (the common case when acting: the belief reset is then skipped).
    """
    if episode_start is None:
        return None
    flags = np.asarray(episode_start, dtype=np.float32).reshape(n_envs)
    return th.as_tensor(flags, device=device) if flags.any() else None


class BeliefPolicy(BasePolicy):
    """
    A world model plus the acting loop on its belief state: the base of every policy of this package. A subclass
    builds its world model (:meth:`make_world_model`), chooses actions from the belief (:meth:`_act`) and may add
    networks and optimizers (:meth:`_build`).

    The recurrent state passed through :meth:`predict` is a tuple of numpy arrays ``(h, s, a)`` of shapes
    (n_envs, deterministic_size), (n_envs, stochastic features) and (n_envs, action_size): the belief after the
    last observation and the action then taken (in the normalized space: [-1, 1] for Box, flattened; one-hot for
    Discrete). Where ``episode_start`` is true it is reset to zeros before the observation is filtered.

    :param observation_space: observation space
    :param action_space: Box (of any shape: the model acts on its flattened vector) or Discrete action space
    :param lr_schedule: learning-rate schedule of the world model
    :param world_model_kwargs: keyword arguments of :meth:`make_world_model`, which are constructor parameters of
        the subclass (saved with the policy)
    :param exploration_noise: exploration of the collection policy (``deterministic=False``): Box actions
        get Normal(0, exploration_noise) noise, clipped to the bounds; Discrete actions are replaced by a
        uniformly random one with probability exploration_noise
    :param optimizer_class: optimizer of every network
    :param optimizer_kwargs: keyword arguments of every optimizer (e.g. ``eps``)
    """

    # "vector", "image" or "dict": the observations the alias (MlpPolicy, ...) is meant for; None accepts all
    observation_kind: Optional[str] = None
    world_model: WorldModelBase

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        world_model_kwargs: dict[str, Any],
        exploration_noise: float,
        optimizer_class: type[th.optim.Optimizer],
        optimizer_kwargs: Optional[dict[str, Any]],
    ) -> None:
        check_action_space(action_space)
        self.exploration_noise = exploration_noise
        self._check_observation_kind(observation_space)
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=isinstance(action_space, spaces.Box),
        )
        self.world_model_kwargs = world_model_kwargs
        # images of another size than the networks' (an eval env without the algorithm's wrappers) are resized
        self.image_resizer = ImageResizer(observation_space)
        # whether the last predict() call had neither state nor episode_start, and whether a second one in a
        # row was warned about (once per policy)
        self._last_predict_stateless = False
        self._warned_stateless_predict = False
        self.world_model = self.make_world_model(observation_space, action_space, **world_model_kwargs)
        self.world_model_optimizer = self.optimizer_class(
            self.world_model.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self._build()

    def make_world_model(self, observation_space: spaces.Space, action_space: spaces.Space, **kwargs: Any) -> WorldModelBase:
        """The world model, from the spaces and ``world_model_kwargs``."""
        raise NotImplementedError

    def _check_observation_kind(self, observation_space: spaces.Space) -> None:
        images, _ = split_observation_space(observation_space)
        kind = "dict" if isinstance(observation_space, spaces.Dict) else ("image" if images else "vector")
        expected = self.observation_kind
        if expected is None or kind == expected:
            return
        alias = {"vector": "MlpPolicy", "image": "CnnPolicy", "dict": "MultiInputPolicy"}
        raise ValueError(
            f"{alias[expected]} is for {expected} observations, but the observation space {observation_space} holds "
            f"{kind} observations: use {alias[kind]}."
        )

    def _build(self) -> None:
        """Build the networks and optimizers a subclass adds (called at the end of ``__init__``)."""

    def set_training_mode(self, mode: bool) -> None:
        """
        Put every network in training or evaluation mode. Collection calls this at every step; walking the
        ~50 submodules each time cost a quarter of an acting step, so nothing happens when the mode is
        already set (modes are only ever changed through this method).
        """
        if self.training != mode:
            super().set_training_mode(mode)

    @property
    def device(self) -> th.device:
        """
        Where the networks are. SB3's property walks the module tree to find a parameter, and acting reads it
        every step: the RSSM's answer is one attribute lookup (``.to()`` moves its parameters like every other).
        """
        return self.world_model.rssm.device

    @property
    def optimizer_names(self) -> list[str]:
        """Attribute names of every optimizer, saved and restored with the model."""
        return ["world_model_optimizer"]

    def optimizer_groups(self) -> list[OptimizerGroup]:
        """Every optimizer with the parameters it trains (the update steps them after all losses are computed)."""
        return [OptimizerGroup("model", "world model", self.world_model_optimizer, list(self.world_model.parameters()))]

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        # the world model scales its images itself (preprocess_image): SB3's flag is no parameter of this policy
        data.pop("normalize_images", None)
        data.update(self.world_model_kwargs)
        data.update(
            # as in SB3's policies: a policy saved alone (policy.save) is loaded to act, not to train
            lr_schedule=self._dummy_schedule,
            exploration_noise=self.exploration_noise,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    @property
    def model_action_size(self) -> int:
        return self.world_model.rssm.action_size

    def initial_state(self, n_envs: int) -> RecurrentState:
        """Belief and previous action at the start of an episode."""
        latent = self.world_model.rssm.initial(n_envs)
        return latent.deterministic, latent.stochastic, latent.stochastic.new_zeros(n_envs, self.model_action_size)

    def filter(
        self, observation: PyTorchObs, state: RecurrentState, episode_start: Optional[th.Tensor], sample: bool
    ) -> LatentState:
        """
        Fold one observation per env into the belief: reset where ``episode_start`` (None: no env starts an
        episode, which skips the reset), then a posterior step with the previous action.
        """
        deterministic, stochastic, action = state
        rssm = self.world_model.rssm
        previous = rssm.from_belief(deterministic, stochastic)
        embed = self.world_model.encoder(observation)
        is_first = None if episode_start is None else episode_start.float()
        posterior, _ = rssm.observe_step(previous, action, embed, is_first, sample=sample, with_prior=False)
        return posterior

    def obs_to_tensor(self, observation: Union[np.ndarray, dict[str, np.ndarray]]) -> tuple[PyTorchObs, bool]:
        """
        SB3's conversion (channel-last images transposed, a single observation given a batch dimension), after
        resizing image entries of another height and width than the networks' 64x64, on the policy's device
        (see :mod:`sb3_rssm.common.resize`): ``predict`` takes the frames of an env that the algorithm did not wrap.

        :return: (observation as tensors, whether it was a batch)
        """
        return super().obs_to_tensor(self.image_resizer(observation, self.device))

    def _act(self, latent: LatentState, deterministic: bool) -> th.Tensor:
        """
        Choose actions from the belief, in the normalized action space (Box: [-1, 1]; Discrete: one-hot),
        before exploration noise.
        """
        raise NotImplementedError

    def explore(self, action: th.Tensor) -> th.Tensor:
        """Exploration of the collection policy (see ``exploration_noise``)."""
        if self.exploration_noise <= 0:
            return action
        if isinstance(self.action_space, spaces.Discrete):
            n = action.shape[-1]
            random = one_hot_of(th.randint(0, n, action.shape[:1], device=action.device), n, action.dtype)
            replace = th.rand(action.shape[:1], device=action.device) < self.exploration_noise
            return th.where(replace[:, None], random, action)
        return th.clamp(action + self.exploration_noise * th.randn_like(action), -1.0, 1.0)

    def step(
        self,
        observation: PyTorchObs,
        state: RecurrentState,
        episode_start: Optional[th.Tensor],
        deterministic: bool = False,
        action: Optional[th.Tensor] = None,
    ) -> tuple[th.Tensor, RecurrentState]:
        """
        One acting step: filter ``observation`` into the belief, then act on it.

        :param episode_start: (n_envs,) flags where the state is reset first; None when no env starts
        :param action: the normalized action to take instead of the policy's (random warm-up actions),
            so that the next step is filtered with the action actually taken
        :return: (normalized action, new recurrent state)
        """
        latent = self.filter(observation, state, episode_start, sample=not deterministic)
        if action is None:
            action = self._act(latent, deterministic)
            if not deterministic:
                action = self.explore(action)
        return action, (latent.deterministic, latent.stochastic, action)

    def to_env_action(self, model_action: th.Tensor) -> np.ndarray:
        """
        Normalized actions (n_envs, action_size) to the env's action space: Box actions rescaled to the bounds and
        shaped as the space (n_envs, *shape); Discrete ones as indices (n_envs,).
        """
        if isinstance(self.action_space, spaces.Discrete):
            return one_hot_to_index(model_action, self.action_space).cpu().numpy()
        flat = np.clip(model_action.cpu().numpy(), -1.0, 1.0)
        return self.unscale_action(flat.reshape(-1, *self.action_space.shape))

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Stateless prediction (each observation treated as an episode's first); prefer :meth:`predict`."""
        n_envs = next(iter(observation.values())).shape[0] if isinstance(observation, dict) else observation.shape[0]
        episode_start = th.ones(n_envs, device=self.device)
        action, _ = self.step(observation, self.initial_state(n_envs), episode_start, deterministic)
        return action

    def predict(  # type: ignore[override]
        self,
        observation: Union[np.ndarray, dict[str, np.ndarray]],
        state: Optional[tuple[np.ndarray, ...]] = None,
        episode_start: Optional[np.ndarray] = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """
        Act on one observation per env, carrying the belief state between calls.

        :param observation: a batch of observations (one per env), or a single unbatched observation
        :param state: the state returned by the previous call, or None at the start
        :param episode_start: (n_envs,) flags; where true the state is reset before filtering
        :param deterministic: no sampling and no exploration noise
        :return: (actions in the env's space, new state as a tuple of numpy arrays (h, s, a))
        """
        if isinstance(observation, tuple) and len(observation) == 2 and isinstance(observation[1], dict):
            raise ValueError(GYM_TUPLE_ERROR)
        self._check_state_is_passed_back(state, episode_start)
        self.set_training_mode(False)
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        n_envs = next(iter(obs_tensor.values())).shape[0] if isinstance(obs_tensor, dict) else obs_tensor.shape[0]
        with th.no_grad():
            if state is None:
                torch_state = self.initial_state(n_envs)
            else:
                if len(state) != 3 or any(np.shape(x)[0] != n_envs for x in state):
                    raise ValueError(
                        f"state must be the (h, s, a) tuple returned by the previous predict() call for {n_envs} envs; "
                        "pass state=None to start fresh."
                    )
                torch_state = tuple(th.as_tensor(np.asarray(x), dtype=th.float32, device=self.device) for x in state)
            starts = starts_tensor(episode_start, n_envs, self.device)
            model_action, new_state = self.step(obs_tensor, torch_state, starts, deterministic)  # type: ignore[arg-type]
        actions = self.to_env_action(model_action)
        if not vectorized_env:
            actions = actions.squeeze(axis=0)
        return actions, tuple(x.cpu().numpy() for x in new_state)

    def _check_state_is_passed_back(
        self, state: Optional[tuple[np.ndarray, ...]], episode_start: Optional[np.ndarray]
    ) -> None:
        """
        Warn (once per policy) when ``predict`` is called a second time in a row with neither ``state`` nor
        ``episode_start``: a plain SB3 loop (``action, _ = model.predict(obs)``) that silently drops the belief.
        One such call is fine (the first step, or a single decision).
        """
        stateless = state is None and episode_start is None
        if stateless and self._last_predict_stateless and not self._warned_stateless_predict:
            self._warned_stateless_predict = True
            warnings.warn(STATELESS_PREDICT_WARNING, stacklevel=4)
        self._last_predict_stateless = stateless


class WorldModelPolicy(BeliefPolicy):
    """
    The policy base of PlaNet and DreamerV1: a :class:`BeliefPolicy` on the Gaussian
    :class:`~sb3_rssm.common.world_model.WorldModel`. Subclasses choose actions from the belief (:meth:`_act`)
    and may add networks and optimizers (:meth:`_build`).

    :param observation_space: observation space
    :param action_space: Box (of any shape: the model acts on its flattened vector) or Discrete action space
    :param lr_schedule: learning-rate schedule of the world model
    :param stochastic_size: RSSM stochastic state size
    :param deterministic_size: RSSM GRU size
    :param hidden_size: RSSM dense width
    :param min_std: RSSM minimum standard deviation
    :param cnn_depth: conv encoder/decoder depth
    :param mlp_units: width of the vector encoder/decoder MLPs
    :param mlp_layers: hidden layers of the vector encoder/decoder MLPs
    :param reward_units: width of the reward (and continuation) head
    :param reward_layers: hidden layers of the reward (and continuation) head
    :param use_continuation: learn a continuation head from ``terminated``
    :param kl_strategy: ``regular``, ``free_bits`` (Dreamer v1: on the batch mean), ``free_bits_per_step``
        (PlaNet: on every step) or ``balanced``
    :param free_bits: free nats
    :param kl_balance_alpha: alpha of the balanced KL
    :param kl_scale: weight of the KL term
    :param reward_scale: weight of the reward log-likelihood
    :param overshooting_distance: latent overshooting distance (0: off)
    :param overshooting_kl_scale: weight of the latent-overshooting KL
    :param activation_fn: activation of dense layers
    :param cnn_activation_fn: activation of conv layers
    :param image_bits: bits per image channel (8: Dreamer; PlaNet: 5, with dequantization noise in training)
    :param exploration_noise: see :class:`BeliefPolicy`
    :param optimizer_class: optimizer of every network
    :param optimizer_kwargs: keyword arguments of every optimizer (e.g. ``eps``)
    """

    world_model: WorldModel

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        stochastic_size: int = 30,
        deterministic_size: int = 200,
        hidden_size: int = 200,
        min_std: float = 0.1,
        cnn_depth: int = 32,
        mlp_units: int = 400,
        mlp_layers: int = 2,
        reward_units: int = 400,
        reward_layers: int = 2,
        use_continuation: bool = False,
        kl_strategy: str = "free_bits",
        free_bits: float = 3.0,
        kl_balance_alpha: float = 0.8,
        kl_scale: float = 1.0,
        reward_scale: float = 1.0,
        overshooting_distance: int = 0,
        overshooting_kl_scale: float = 1.0,
        activation_fn: type[nn.Module] = nn.ELU,
        cnn_activation_fn: type[nn.Module] = nn.ReLU,
        image_bits: int = 8,
        exploration_noise: float = 0.3,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: Optional[dict[str, Any]] = None,
    ) -> None:
        world_model_kwargs = dict(
            stochastic_size=stochastic_size,
            deterministic_size=deterministic_size,
            hidden_size=hidden_size,
            min_std=min_std,
            cnn_depth=cnn_depth,
            mlp_units=mlp_units,
            mlp_layers=mlp_layers,
            reward_units=reward_units,
            reward_layers=reward_layers,
            use_continuation=use_continuation,
            kl_strategy=kl_strategy,
            free_bits=free_bits,
            kl_balance_alpha=kl_balance_alpha,
            kl_scale=kl_scale,
            reward_scale=reward_scale,
            overshooting_distance=overshooting_distance,
            overshooting_kl_scale=overshooting_kl_scale,
            activation_fn=activation_fn,
            cnn_activation_fn=cnn_activation_fn,
            image_bits=image_bits,
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

    def make_world_model(self, observation_space: spaces.Space, action_space: spaces.Space, **kwargs: Any) -> WorldModel:
        return WorldModel(observation_space, action_space, **kwargs)
