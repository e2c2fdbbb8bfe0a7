"""Shared data types: the replay samples a world model trains on."""

from __future__ import annotations

from typing import NamedTuple, Optional, Union

import torch as th

TensorObs = Union[th.Tensor, dict[str, th.Tensor]]


class SequenceSamples(NamedTuple):
    """
    A (batch, time) chunk of experience in the alignment of :mod:`sb3_rssm.common.rssm`: step t holds
    the observation o_t, the action a_{t-1} that led to it (zeros where ``is_first``), the reward r_t
    received on arriving at o_t, and flags saying whether o_t starts an episode, is terminal, or was
    cut by a time limit.

    :param observations: (batch, time, *obs_shape), or a dict of those
    :param actions: (batch, time, action_size) RSSM action vectors (Discrete actions one-hot)
    :param rewards: (batch, time)
    :param is_first: (batch, time) float, 1 at the first step of an episode
    :param terminated: (batch, time) float, 1 where o_t is terminal (no bootstrap past it)
    :param truncated: (batch, time) float, 1 where the episode was cut after o_t (time limit)
    :param context_deterministic: with the replay context (see
        :class:`~sb3_rssm.common.buffers.SequenceReplayBuffer`), the stored ``h`` of the step before each chunk,
        (batch, deterministic_size), zeros where there is none; None without it
    :param context_stochastic: the stored ``s`` of that step, (batch, stochastic features), zeros where there is none
    """

    observations: TensorObs
    actions: th.Tensor
    rewards: th.Tensor
    is_first: th.Tensor
    terminated: th.Tensor
    truncated: th.Tensor
    context_deterministic: Optional[th.Tensor] = None
    context_stochastic: Optional[th.Tensor] = None
