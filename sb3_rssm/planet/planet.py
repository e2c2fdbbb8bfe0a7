"""
PlaNet (Hafner et al., 2019, "Learning Latent Dynamics for Planning from Pixels") as a Stable-Baselines3
algorithm: a world model learned from replayed sequences, and model-predictive control by the
cross-entropy method in its latent space.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import numpy as np
import torch as th
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_rssm.common.buffers import SequenceReplayBuffer
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model_algorithm import WorldModelAlgorithm
from sb3_rssm.planet.policies import CnnPolicy, MlpPolicy, MultiInputPolicy, PlaNetPolicy


class PlaNet(WorldModelAlgorithm):
    """
    PlaNet. Defaults follow the paper: batches of 50 sequences of 50 steps, learning rate 1e-3, Adam
    epsilon 1e-4, gradient clip 1000, free nats 3, reward loss scale 10, exploration noise 0.3, CEM with
    horizon 12, 1000 candidates, 100 elites, 10 iterations (``policy_kwargs``). Latent overshooting is
    available with ``policy_kwargs=dict(overshooting_distance=..., overshooting_kl_scale=...)`` and off by
    default, as in the paper's final model. The paper's linear learning-rate warm-up over 10k updates is
    not built in (SB3 schedules take the remaining progress, which can approximate it); action repeat
    belongs to the env wrapper.

    :param policy: ``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a :class:`PlaNetPolicy` subclass
    :param env: environment (Box or Discrete actions)
    :param learning_rate: world-model learning rate (or schedule)
    :param buffer_size: replay capacity in steps
    :param learning_starts: random-action steps before training
    :param batch_size: sequences per batch
    :param sequence_length: steps per sequence
    :param train_freq: steps (per env) between training phases
    :param gradient_steps: gradient steps per training phase
    :param max_grad_norm: gradient-norm clip
    :param max_nonfinite_updates: see :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param mixed_precision: ``None``, ``"bf16"`` or ``"fp16"``, see
        :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param compile_update: ``None``, ``"cuda_graph"`` or ``"reduce-overhead"``, see
        :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param log_prediction_interval: updates between open-loop prediction images (image observations; 0: never)
    :param replay_buffer_class: a :class:`~sb3_rssm.common.buffers.SequenceReplayBuffer` subclass
    :param replay_buffer_kwargs: its keyword arguments
    :param policy_kwargs: policy keyword arguments (model sizes, CEM settings, KL and overshooting settings)
    :param stats_window_size: rollout statistics window
    :param tensorboard_log: TensorBoard folder
    :param verbose: verbosity
    :param seed: random seed
    :param device: torch device
    :param _init_setup_model: build the networks at construction
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy_base: ClassVar[type[PlaNetPolicy]] = PlaNetPolicy
    policy: PlaNetPolicy

    def __init__(
        self,
        policy: Union[str, type[PlaNetPolicy]],
        env: Union[GymEnv, str, None],
        learning_rate: Union[float, Schedule] = 1e-3,
        buffer_size: int = 1_000_000,
        learning_starts: int = 5000,
        batch_size: int = 50,
        sequence_length: int = 50,
        train_freq: Union[int, tuple[int, str]] = (1000, "step"),
        gradient_steps: int = 100,
        max_grad_norm: float = 1000.0,
        max_nonfinite_updates: int = 10,
        mixed_precision: Optional[str] = None,
        compile_update: Optional[str] = None,
        log_prediction_interval: int = 1000,
        replay_buffer_class: Optional[type[SequenceReplayBuffer]] = None,
        replay_buffer_kwargs: Optional[dict[str, Any]] = None,
        policy_kwargs: Optional[dict[str, Any]] = None,
        stats_window_size: int = 100,
        tensorboard_log: Optional[str] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device: Union[th.device, str] = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            sequence_length=sequence_length,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            max_grad_norm=max_grad_norm,
            max_nonfinite_updates=max_nonfinite_updates,
            mixed_precision=mixed_precision,
            compile_update=compile_update,
            log_prediction_interval=log_prediction_interval,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            seed=seed,
            device=device,
        )
        # the planner's diagnostics summed over the collection steps since the last training phase
        self._planner_sums: dict[str, th.Tensor] = {}
        self._planner_steps = 0
        if _init_setup_model:
            self._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_planner_sums", "_planner_steps"]

    def _sample_action(
        self, learning_starts: int, action_noise: Optional[ActionNoise] = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        actions = super()._sample_action(learning_starts, action_noise, n_envs)
        if self.num_timesteps >= learning_starts:  # the planner chose these actions: keep its diagnostics
            for key, value in self.policy.planner.statistics.items():
                self._planner_sums[key] = self._planner_sums.get(key, 0.0) + value.sum()
            self._planner_steps += n_envs
        return actions

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """
        Train the world model, and log the planner's diagnostics of the collection since the last call
        (means over env steps): ``planner/candidate_return_std`` (how much the model tells apart the first
        iteration's random action sequences), ``planner/elite_return`` and ``planner/elite_return_std``
        (the predicted returns of the final elites), see :class:`~sb3_rssm.planet.planning.CEMPlanner`.
        """
        if self._planner_steps:
            for key, total in self._planner_sums.items():
                self.logger.record(f"planner/{key}", float(total) / self._planner_steps)
            self._planner_sums, self._planner_steps = {}, 0
        super().train(gradient_steps, batch_size)

    def _train_step(self, batch: SequenceSamples) -> dict[str, th.Tensor]:
        _, metrics = self._train_world_model(batch)
        return metrics
