"""
DreamerV1 (Hafner et al., 2020, "Dream to Control: Learning Behaviors by Latent Imagination") as a
Stable-Baselines3 algorithm: a world model learned from replayed sequences, and an actor and a value
network learned from imagined rollouts of the model by backpropagating lambda-returns through the
learned dynamics.
"""

from __future__ import annotations

from typing import Any, ClassVar, Optional, Union

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule

from sb3_rssm.common.buffers import SequenceReplayBuffer
from sb3_rssm.common.networks import unit_gaussian_log_prob
from sb3_rssm.common.returns import lambda_return
from sb3_rssm.common.rssm import RSSMState
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model_algorithm import WorldModelAlgorithm
from sb3_rssm.dreamer_v1.policies import CnnPolicy, DreamerPolicy, MlpPolicy, MultiInputPolicy


class DreamerV1(WorldModelAlgorithm):
    """
    DreamerV1. Defaults follow the paper and its reference implementation: batches of 50 sequences of 50
    steps, imagination horizon 15, gamma 0.99, lambda 0.95, learning rates 6e-4 (model) / 8e-5 (actor) /
    8e-5 (value), Adam epsilon 1e-7, gradient clip 100, free nats 3, KL scale 1, exploration noise 0.3,
    5000 prefill steps, then 100 gradient steps every 1000 steps.

    :param policy: ``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a :class:`DreamerPolicy` subclass
    :param env: environment (Box or Discrete actions)
    :param learning_rate: world-model learning rate (or schedule)
    :param actor_learning_rate: actor learning rate (or schedule)
    :param value_learning_rate: value learning rate (or schedule)
    :param buffer_size: replay capacity in steps
    :param learning_starts: random-action steps before training
    :param batch_size: sequences per batch
    :param sequence_length: steps per sequence
    :param imagination_horizon: imagined steps from every posterior state
    :param gamma: discount
    :param return_lambda: lambda of the lambda-returns
    :param actor_entropy_coef: weight of the actor's entropy in its objective (0, the paper's: none; DreamerV2 adds
        one). For Box actions the entropy is that of the tanh-squashed distribution, whose log-Jacobian term falls
        without bound as the mean or the samples approach an action bound: a positive weight holds the actor off
        the bounds, where tanh's vanishing gradient would otherwise keep it
    :param train_freq: steps (per env) between training phases
    :param gradient_steps: gradient steps per training phase
    :param max_grad_norm: gradient-norm clip of each optimizer
    :param max_nonfinite_updates: see :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param mixed_precision: ``None``, ``"bf16"`` or ``"fp16"``, see
        :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param compile_update: ``None``, ``"cuda_graph"`` or ``"reduce-overhead"``, see
        :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param log_prediction_interval: updates between open-loop prediction images (image observations; 0: never)
    :param replay_buffer_class: a :class:`~sb3_rssm.common.buffers.SequenceReplayBuffer` subclass
    :param replay_buffer_kwargs: its keyword arguments
    :param policy_kwargs: policy keyword arguments (all model sizes, ``exploration_noise``, KL settings)
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
    policy_base: ClassVar[type[DreamerPolicy]] = DreamerPolicy
    policy: DreamerPolicy
    learning_rates: ClassVar[dict[str, str]] = {
        "actor_learning_rate": "actor_optimizer",
        "value_learning_rate": "value_optimizer",
    }

    def __init__(
        self,
        policy: Union[str, type[DreamerPolicy]],
        env: Union[GymEnv, str, None],
        learning_rate: Union[float, Schedule] = 6e-4,
        actor_learning_rate: Union[float, Schedule] = 8e-5,
        value_learning_rate: Union[float, Schedule] = 8e-5,
        buffer_size: int = 1_000_000,
        learning_starts: int = 5000,
        batch_size: int = 50,
        sequence_length: int = 50,
        imagination_horizon: int = 15,
        gamma: float = 0.99,
        return_lambda: float = 0.95,
        actor_entropy_coef: float = 0.0,
        train_freq: Union[int, tuple[int, str]] = (1000, "step"),
        gradient_steps: int = 100,
        max_grad_norm: float = 100.0,
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
        self.actor_learning_rate = actor_learning_rate
        self.value_learning_rate = value_learning_rate
        self.imagination_horizon = imagination_horizon
        self.gamma = gamma
        self.return_lambda = return_lambda
        self.actor_entropy_coef = actor_entropy_coef
        if _init_setup_model:
            self._setup_model()

    def imagine(self, start: RSSMState) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """
        Imagine ``imagination_horizon`` steps with the actor from every start state, and evaluate them.

        :return: (features (N, H, F), lambda-returns (N, H-1), weights (N, H-1), actor entropy (N, H), with
            gradient when ``actor_entropy_coef`` is positive)
        """
        world_model, actor = self.policy.world_model, self.policy.actor
        entropies = []

        def act(state: RSSMState) -> th.Tensor:
            # the actor sees detached states; its gradient reaches it through the imagined dynamics
            distribution = actor.distribution(state.features.detach())
            entropy = actor.entropy(distribution)
            entropies.append(entropy if self.actor_entropy_coef > 0 else entropy.detach())
            return actor.sample(distribution)

        imagined, _ = world_model.rssm.imagine(start, act, self.imagination_horizon)
        features = imagined.features
        # returns are sums over 15 steps: float32 even when the networks run in bfloat16 (a no-op otherwise)
        rewards = world_model.reward(features).float()
        values = self.policy.predict_value(features).float()
        continuation = world_model.continuation(features)
        continuation = None if continuation is None else continuation.float()
        discounts = self.gamma * (th.ones_like(rewards) if continuation is None else continuation)
        returns = lambda_return(rewards[:, :-1], values[:, :-1], discounts[:, :-1], values[:, -1], self.return_lambda)
        weights = th.cumprod(th.cat([th.ones_like(discounts[:, :1]), discounts[:, :-2]], dim=1), dim=1).detach()
        return features, returns, weights, th.stack(entropies, dim=1)

    def _train_step(self, batch: SequenceSamples) -> dict[str, th.Tensor]:
        """
        The world-model, actor and value losses and their backward passes; the three optimizers then step
        together, as in the reference implementation (danijar/dreamer computes all three losses before
        applying any): the actor imagines with the world model that the batch's posterior came from.
        """
        posterior, metrics = self._train_world_model(batch)
        features, returns, weights, actor_metrics = self._train_actor(posterior)
        metrics.update(actor_metrics)
        metrics.update(self._train_value(features, returns, weights))
        return metrics

    def _train_actor(self, posterior: RSSMState) -> tuple[th.Tensor, th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        The actor's loss and backward pass: imagine from every posterior state and ascend the weighted lambda-returns.

        :return: imagined features (N, H, F), lambda-returns (N, H-1), weights (N, H-1), metrics
        """
        # the actor's gradient flows through the model and the value net, but only the actor's is kept
        with self._autocast():
            features, returns, weights, entropy = self.imagine(posterior.flatten())
            actor_loss = -(weights * returns).mean()
            if self.actor_entropy_coef > 0:
                # the entropy of the actions that lead into each weighted return (the last step's has no return)
                actor_loss = actor_loss - self.actor_entropy_coef * (weights * entropy[:, :-1].float()).mean()
        self.update.backward(actor_loss, "actor")
        metrics = dict(
            actor_loss=actor_loss.detach(), actor_entropy=entropy.detach().mean(), imagined_return=returns.mean().detach()
        )
        return features, returns, weights, metrics

    def _train_value(self, features: th.Tensor, returns: th.Tensor, weights: th.Tensor) -> dict[str, th.Tensor]:
        """The value loss and backward pass: regress the value of each imagined state (but the last) onto its lambda-return."""
        with self._autocast():
            value_prediction = self.policy.predict_value(features[:, :-1].detach()).float()
        value_loss = -(weights * unit_gaussian_log_prob(value_prediction, returns.detach())).mean()
        self.update.backward(value_loss, "value")
        return dict(value_loss=value_loss.detach(), imagined_value=value_prediction.mean().detach())
