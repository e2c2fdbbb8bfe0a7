"""
DreamerV3 (Hafner et al., 2023, "Mastering Diverse Domains through World Models") as a Stable-Baselines3
algorithm: a world model with categorical latents learned from replayed sequences, an actor learned by
REINFORCE on normalised advantages of imagined rollouts, and a two-hot critic learned on imagined and replayed
lambda-returns, with fixed hyperparameters across domains (danijar/dreamerv3).
"""

from __future__ import annotations

import torch as th
from torch.distributions import Distribution

from sb3_rssm.common.distributions import TwoHot
from sb3_rssm.common.returns import ReturnNormalizer, lambda_return


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
