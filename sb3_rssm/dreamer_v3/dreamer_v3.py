"""
DreamerV3 (Hafner et al., 2023, "Mastering Diverse Domains through World Models") as a Stable-Baselines3
algorithm: a world model with categorical latents learned from replayed sequences, an actor learned by
REINFORCE on normalised advantages of imagined rollouts, and a two-hot critic learned on imagined and replayed
lambda-returns, with fixed hyperparameters across domains (danijar/dreamerv3).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Optional, Union

import torch as th
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, Schedule
from torch.distributions import Distribution

from sb3_rssm.common.buffers import SequenceReplayBuffer
from sb3_rssm.common.distributions import TwoHot
from sb3_rssm.common.returns import ReturnNormalizer, lambda_return
from sb3_rssm.common.rssm import LatentState, rollout
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model_algorithm import WorldModelAlgorithm
from sb3_rssm.dreamer_v3.policies import CnnPolicy, DreamerV3Policy, MlpPolicy, MultiInputPolicy


def critic_loss(
    two_hot: TwoHot,
    logits: th.Tensor,
    returns: th.Tensor,
    slow_values: th.Tensor,
    weight: th.Tensor,
    slow_regularization: float,
) -> th.Tensor:
    """
    The critic's loss on some states: ``mean(weight * (CE(twohot(R), critic) + slow_regularization *
    CE(twohot(v_slow), critic)))``: the lambda-returns are the target, and the slow critic's values hold the
    critic near its own recent past.

    :param two_hot: the critic's bins
    :param logits: (...) x bins critic logits
    :param returns: (...) lambda-returns (detached here)
    :param slow_values: (...) the slow critic's values of the same states (detached here)
    :param weight: (...) weight of each state
    :param slow_regularization: weight of the slow-critic term (DreamerV3: 1)
    """
    loss = two_hot.loss(logits, returns) + slow_regularization * two_hot.loss(logits, slow_values)
    return (weight.detach() * loss).mean()


def imagination_loss(
    actor_distribution: Distribution,
    actions: th.Tensor,
    rewards: th.Tensor,
    continuation: th.Tensor,
    critic_logits: th.Tensor,
    slow_values: th.Tensor,
    two_hot: TwoHot,
    normalizer: ReturnNormalizer,
    return_lambda: float = 0.95,
    entropy_coef: float = 3e-4,
    slow_regularization: float = 1.0,
) -> tuple[th.Tensor, th.Tensor, th.Tensor, dict[str, th.Tensor]]:
    """
    DreamerV3's actor and critic losses on imagined trajectories (danijar/dreamerv3 ``agent.py``, ``imag_loss``)
    of states ``s_0 .. s_H`` (``s_0`` a posterior state, the rest imagined, all without gradient into the
    world model), actions ``a_t`` taken in ``s_t``, predicted rewards ``r_t`` and continuations ``c_t`` (the
    discount included) of arriving in ``s_t``:

    * lambda-returns ``R_t = r_{t+1} + c_{t+1} ((1 - lambda) v(s_{t+1}) + lambda R_{t+1})``, ``R_H = v(s_H)``, from
      the critic's values;
    * weights ``w_t = c_0 c_1 ... c_t``: the probability of still being in the episode;
    * the return scale ``S`` (:class:`~sb3_rssm.common.returns.ReturnNormalizer`, updated here with these returns);
    * actor: REINFORCE with normalised advantages, for discrete and continuous actions alike:
      ``-mean(w_t (log pi(a_t | s_t) sg((R_t - v(s_t)) / S) + entropy_coef * H[pi(. | s_t)]))``;
    * critic: :func:`critic_loss` towards ``R_t`` with weights ``w_t``.

    :param actor_distribution: the actor's distribution in ``s_0 .. s_{H-1}`` (batch dims (N, H)), with gradient
    :param actions: (N, H, action_size) the actions taken
    :param rewards: (N, H + 1) predicted rewards
    :param continuation: (N, H + 1) predicted continuations
    :param critic_logits: (N, H + 1, bins) the critic's logits, with gradient
    :param slow_values: (N, H + 1) the slow critic's values
    :param two_hot: the critic's bins
    :param normalizer: the return scale, updated with the returns
    :param return_lambda: lambda
    :param entropy_coef: weight of the actor's entropy (DreamerV3: 3e-4)
    :param slow_regularization: weight of the slow-critic term of the critic loss
    :return: (actor loss, critic loss, returns (N, H), detached metrics)
    """
    rewards, continuation = rewards.detach().float(), continuation.detach().float()
    values = two_hot.decode(critic_logits.detach())
    returns = lambda_return(rewards[:, 1:], values[:, :-1], continuation[:, 1:], values[:, -1], return_lambda)
    weight = th.cumprod(continuation, dim=1)[:, :-1]
    normalizer.update(returns)
    advantage = (returns - values[:, :-1]) / normalizer.scale()
    entropy = actor_distribution.entropy()
    log_prob = actor_distribution.log_prob(actions.detach())
    actor_loss = -(weight * (log_prob * advantage + entropy_coef * entropy)).mean()
    value_loss = critic_loss(two_hot, critic_logits[:, :-1], returns, slow_values[:, :-1], weight, slow_regularization)
    metrics = dict(
        actor_entropy=entropy.detach().mean(),
        imagined_return=returns.mean(),
        imagined_value=values.mean(),
        advantage_std=advantage.std(),
        return_scale=normalizer.scale(),
        weight=weight.mean(),
    )
    return actor_loss, value_loss, returns, metrics


def replay_value_loss(
    critic_logits: th.Tensor,
    slow_values: th.Tensor,
    rewards: th.Tensor,
    terminated: th.Tensor,
    last: th.Tensor,
    bootstrap: th.Tensor,
    two_hot: TwoHot,
    gamma: float,
    return_lambda: float = 0.95,
    slow_regularization: float = 1.0,
) -> tuple[th.Tensor, th.Tensor]:
    """
    DreamerV3's critic loss on the replayed sequence (danijar/dreamerv3 ``agent.py``, ``repl_loss``): lambda-returns
    of the real rewards, bootstrapped at every step with the imagined return from that step's posterior state,
    ``R_t = r_{t+1} + gamma (1 - term_{t+1}) ((1 - lambda_{t+1}) B_{t+1} + lambda_{t+1} R_{t+1})`` with
    ``lambda_{t+1} = 0`` where the episode ends at ``t+1`` (terminated or truncated: a truncated episode bootstraps,
    a terminated one does not) and ``R_{T-1} = B_{T-1}``; then :func:`critic_loss` on steps ``0 .. T-2``, except
    the last step of an episode (whose return would reach into the next one). Its gradient flows into the world
    model's representations too.

    :param critic_logits: (B, T, bins) the critic's logits on the posterior states, with gradient
    :param slow_values: (B, T) the slow critic's values of the same states
    :param rewards: (B, T) rewards ``r_t`` of arriving at ``o_t``
    :param terminated: (B, T) 1 where ``o_t`` is terminal
    :param last: (B, T) 1 where the episode ends at ``o_t`` (terminated or truncated)
    :param bootstrap: (B, T) imagined return from each posterior state
    :param two_hot: the critic's bins
    :param gamma: discount
    :param return_lambda: lambda
    :param slow_regularization: weight of the slow-critic term
    :return: (loss, returns (B, T - 1))
    """
    rewards, terminated, last, bootstrap = (x.detach().float() for x in (rewards, terminated, last, bootstrap))
    discounts = gamma * (1.0 - terminated[:, 1:])
    lambdas = return_lambda * (1.0 - last[:, 1:])
    returns = lambda_return(rewards[:, 1:], bootstrap[:, :-1], discounts, bootstrap[:, -1], lambdas)
    weight = 1.0 - last[:, :-1]
    loss = critic_loss(two_hot, critic_logits[:, :-1], returns, slow_values[:, :-1], weight, slow_regularization)
    return loss, returns


class DreamerV3(WorldModelAlgorithm):
    """
    DreamerV3. Defaults follow the paper and danijar/dreamerv3's configuration: batches of 16 sequences of 64
    steps, imagination horizon 15, discount ``gamma = 1 - 1/333``, lambda 0.95, learning rate 4e-5 for the world
    model, actor and critic with LaProp (epsilon 1e-20, adaptive gradient clipping 0.3, 1000 warm-up updates),
    entropy regulariser 3e-4, slow critic rate 0.02 and regulariser 1, replay value loss 0.3, KL scales 0.5 (dyn)
    and 0.1 (rep) with 1 free nat, model size ``size12m`` (``policy_kwargs=dict(size=...)``, see
    :data:`~sb3_rssm.dreamer_v3.policies.MODEL_SIZES`).

    Replay ratio. DreamerV3 sets the number of updates by its ``train_ratio``, the replayed steps per env step.
    In SB3 terms each update replays ``batch_size * sequence_length`` steps, and ``gradient_steps`` updates follow
    every ``train_freq`` steps of each of the ``n_envs`` envs, so::

        train_ratio = gradient_steps * batch_size * sequence_length / (train_freq * n_envs)

    The defaults, one update of 16 x 64 every 2 steps of one env, give 512. (It counts agent steps: with an
    action-repeat wrapper it is replayed steps per ``action_repeat`` frames.) DreamerV3 used 512 or 1024 on most
    of its benchmarks (its current configuration: 256 on dm_control from pixels, 1024 from states).

    Each update (danijar/dreamerv3 ``Agent.loss``): the world-model loss on the batch; from every one of its
    ``batch_size * sequence_length`` posterior states, ``imagination_horizon`` steps imagined with the actor
    (no gradient into the world model); the actor's and critic's losses on them
    (:func:`imagination_loss`); the critic's loss on the replayed sequence (:func:`replay_value_loss`, weight
    ``replay_value_scale``); one backward pass of their sum, then the three optimizers step together and the slow
    critic moves towards the critic.

    :param policy: ``MlpPolicy``, ``CnnPolicy``, ``MultiInputPolicy`` or a :class:`DreamerV3Policy` subclass
    :param env: environment (Box or Discrete actions)
    :param learning_rate: world-model learning rate (or schedule)
    :param actor_learning_rate: actor learning rate (or schedule)
    :param critic_learning_rate: critic learning rate (or schedule)
    :param buffer_size: replay capacity in steps
    :param learning_starts: random-action steps before training (DreamerV3 starts training once its replay holds
        one batch, 16 x 64 = 1024 steps, collected by its untrained policy)
    :param batch_size: sequences per batch
    :param sequence_length: steps per sequence
    :param imagination_horizon: imagined steps from every posterior state
    :param gamma: discount, learned into the continuation head's targets (DreamerV3: 1 - 1/333)
    :param return_lambda: lambda of the lambda-returns
    :param entropy_coef: weight of the actor's entropy
    :param slow_critic_rate: rate of the slow critic's exponential moving average of the critic
    :param slow_critic_regularization: weight of the critic's loss towards the slow critic's values
    :param replay_value_scale: weight of the critic's loss on replayed sequences (0: imagination only)
    :param train_freq: steps (per env) between training phases
    :param gradient_steps: gradient steps per training phase
    :param max_grad_norm: global gradient-norm clip of each optimizer (default: none; LaProp clips each parameter
        tensor's gradient relative to the tensor, as DreamerV3 does)
    :param max_nonfinite_updates: see :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param mixed_precision: ``None``, ``"bf16"`` or ``"fp16"``, see
        :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param compile_update: ``None``, ``"cuda_graph"``, ``"reduce-overhead"``, ``"imagination"`` or ``"losses"``, see
        :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm`
    :param log_prediction_interval: updates between open-loop prediction images (image observations; 0: never)
    :param replay_buffer_class: a :class:`~sb3_rssm.common.buffers.SequenceReplayBuffer` subclass
    :param replay_buffer_kwargs: its keyword arguments
    :param policy_kwargs: policy keyword arguments (``size`` and every model size, KL settings, actor settings)
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
    policy_base: ClassVar[type[DreamerV3Policy]] = DreamerV3Policy
    policy: DreamerV3Policy
    learning_rates: ClassVar[dict[str, str]] = {
        "actor_learning_rate": "actor_optimizer",
        "critic_learning_rate": "critic_optimizer",
    }
    imagines_without_gradient: ClassVar[bool] = True
    has_single_loss: ClassVar[bool] = True

    def __init__(
        self,
        policy: Union[str, type[DreamerV3Policy]],
        env: Union[GymEnv, str, None],
        learning_rate: Union[float, Schedule] = 4e-5,
        actor_learning_rate: Union[float, Schedule] = 4e-5,
        critic_learning_rate: Union[float, Schedule] = 4e-5,
        buffer_size: int = 1_000_000,
        learning_starts: int = 1024,
        batch_size: int = 16,
        sequence_length: int = 64,
        imagination_horizon: int = 15,
        gamma: float = 1.0 - 1.0 / 333,
        return_lambda: float = 0.95,
        entropy_coef: float = 3e-4,
        slow_critic_rate: float = 0.02,
        slow_critic_regularization: float = 1.0,
        replay_value_scale: float = 0.3,
        train_freq: Union[int, tuple[int, str]] = 2,
        gradient_steps: int = 1,
        max_grad_norm: float = math.inf,
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
        self.critic_learning_rate = critic_learning_rate
        self.imagination_horizon = imagination_horizon
        self.gamma = gamma
        self.return_lambda = return_lambda
        self.entropy_coef = entropy_coef
        self.slow_critic_rate = slow_critic_rate
        self.slow_critic_regularization = slow_critic_regularization
        self.replay_value_scale = replay_value_scale
        if _init_setup_model:
            self._setup_model()

    def imagine(self, start: LatentState) -> tuple[th.Tensor, th.Tensor]:
        """
        Imagine ``imagination_horizon`` steps with actions sampled from the actor, from every start state, without
        gradient (DreamerV3 trains its actor by REINFORCE, not through the dynamics).

        :param start: (N, ...) start states
        :return: features of ``s_0 .. s_H`` (N, H + 1, F), ``s_0`` the start; actions taken in ``s_0 .. s_{H-1}``
            (N, H, action_size), unclipped samples
        """
        with th.no_grad():
            imagined, actions = rollout(start, self._imagination_runner, self.imagination_horizon)
            features = th.cat([start.features.unsqueeze(1), imagined.features], dim=1)
        return features, actions

    def _imagination_step(self, state: LatentState) -> tuple[LatentState, th.Tensor]:
        action = self.policy.actor.sample(state.features)
        return self.policy.world_model.rssm.imagine_step(state, action), action

    def _update_loss(self, batch: SequenceSamples) -> tuple[th.Tensor, dict[str, th.Tensor], LatentState]:
        """
        The sum of the world-model, actor, critic and replay-critic losses (the replay critic loss trains the world
        model's representations too), the detached metrics, and the detached posterior states (for the replay
        context).
        """
        policy = self.policy
        with self._autocast():
            model_loss, metrics, posterior = policy.world_model.loss(batch, self.gamma)
            actor_loss, critic_loss, returns, imagination_metrics = self._imagination_loss(posterior.detach().flatten())
            # the imagined return from each posterior state bootstraps the replayed returns
            replay_loss = self._replay_value_loss(batch, posterior, returns[:, 0].reshape(batch.rewards.shape))
        loss = model_loss + actor_loss + critic_loss + self.replay_value_scale * replay_loss
        metrics.update(
            imagination_metrics,
            actor_loss=actor_loss.detach(),
            critic_loss=critic_loss.detach(),
            replay_critic_loss=replay_loss.detach(),
        )
        return loss, metrics, posterior.detach()

    def _train_step(self, batch: SequenceSamples) -> dict[str, th.Tensor]:
        """:meth:`_update_loss` and one backward pass of it into the three groups; the optimizers step after it."""
        loss, metrics, posterior = self._loss_runner(batch)
        self.update.backward(loss, "model", "actor", "critic")
        self._keep_for_replay(posterior)
        return metrics

    def _imagination_loss(self, start: LatentState) -> tuple[th.Tensor, th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """:func:`imagination_loss` on trajectories imagined from ``start``."""
        policy, world_model = self.policy, self.policy.world_model
        features, actions = self.imagine(start)
        with th.no_grad():
            rewards, continuation = world_model.reward(features), world_model.continuation(features)
            slow_values = policy.predict_value(features, slow=True)
        return imagination_loss(
            policy.actor.distribution(features[:, :-1]),
            actions,
            rewards,
            continuation,
            policy.critic(features),
            slow_values,
            policy.two_hot,
            policy.return_normalizer,
            self.return_lambda,
            self.entropy_coef,
            self.slow_critic_regularization,
        )

    def _replay_value_loss(self, batch: SequenceSamples, posterior: LatentState, bootstrap: th.Tensor) -> th.Tensor:
        """:func:`replay_value_loss` on the batch's posterior states (with gradient into the world model)."""
        policy = self.policy
        features = posterior.features
        with th.no_grad():
            slow_values = policy.predict_value(features, slow=True)
        loss, _ = replay_value_loss(
            policy.critic(features),
            slow_values,
            batch.rewards,
            batch.terminated,
            th.maximum(batch.terminated, batch.truncated),
            bootstrap,
            policy.two_hot,
            self.gamma,
            self.return_lambda,
            self.slow_critic_regularization,
        )
        return loss

    def _update_once(self, batch: SequenceSamples) -> None:
        super()._update_once(batch)
        # after the critic's step, and only where it was applied: the slow critic follows the critic
        self.policy.update_slow_critic(self.slow_critic_rate, self.update.applied["critic"])
