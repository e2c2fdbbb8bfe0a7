"""
Returns of imagined and replayed trajectories for actor-critic learning: lambda-returns, and the return scale
of DreamerV3's advantages (the 5th to 95th percentile range of the returns, smoothed).
"""

from __future__ import annotations

from typing import Union

import torch as th
from torch import nn


def lambda_return(
    rewards: th.Tensor,
    values: th.Tensor,
    discounts: th.Tensor,
    bootstrap: th.Tensor,
    lambda_: Union[float, th.Tensor],
) -> th.Tensor:
    """
    TD(lambda) returns along the last dimension:
    ``R_t = r_t + d_t * ((1 - lambda_t) * v_{t+1} + lambda_t * R_{t+1})`` with ``R_H = bootstrap``.

    :param rewards: (..., H) rewards r_t
    :param values: (..., H) values v_t of the same states (only ``v_1 .. v_{H-1}`` are read)
    :param discounts: (..., H) discounts d_t
    :param bootstrap: (...) value after the last step
    :param lambda_: lambda, or (..., H) lambdas per step (0 where a return must not look further, e.g. at an
        episode's end)
    :return: (..., H) returns
    """
    next_values = th.cat([values[..., 1:], bootstrap.unsqueeze(-1)], dim=-1)
    # a number is filled in on the device: th.as_tensor of it would copy it from the host
    if isinstance(lambda_, th.Tensor):
        lambdas = lambda_.to(rewards.dtype).expand_as(rewards)
    else:
        lambdas = th.full_like(rewards, lambda_)
    inputs = rewards + discounts * next_values * (1.0 - lambdas)
    returns = []
    last = bootstrap
    for t in reversed(range(rewards.shape[-1])):
        last = inputs[..., t] + discounts[..., t] * lambdas[..., t] * last
        returns.append(last)
    return th.stack(returns[::-1], dim=-1)


class ReturnNormalizer(nn.Module):
    """
    DreamerV3's return normalisation (danijar/dreamerv3 ``Normalize(impl='perc')``, as ``retnorm``): exponential
    moving averages (rate ``rate``, starting at 0, not debiased) of the ``low``-th and ``high``-th percentiles of
    the returns of each update; the scale is their difference, but at least ``limit``, so that advantages are
    divided by it only when returns spread wider than ``limit`` (small returns are not blown up). The averages
    are buffers: they travel in the policy's ``state_dict``, and a resumed run continues them.

    :param rate: weight of each update's percentiles in the averages (DreamerV3: 0.01)
    :param limit: smallest scale (DreamerV3: 1)
    :param low: lower percentile (DreamerV3: 5)
    :param high: upper percentile (DreamerV3: 95)
    """

    low_average: th.Tensor
    high_average: th.Tensor

    def __init__(self, rate: float = 0.01, limit: float = 1.0, low: float = 5.0, high: float = 95.0) -> None:
        super().__init__()
        if not 0.0 <= low < high <= 100.0:
            raise ValueError(f"Return percentiles must satisfy 0 <= low < high <= 100, got low={low}, high={high}")
        self.rate, self.limit, self.low, self.high = rate, limit, low, high
        self.register_buffer("low_average", th.zeros(()))
        self.register_buffer("high_average", th.zeros(()))
        # the percentiles as a tensor that follows the module's device (not saved): built from Python numbers at
        # each update, it would be a host-to-device copy
        self.register_buffer("levels", th.tensor([low / 100.0, high / 100.0]), persistent=False)

    @th.no_grad()
    def update(self, returns: th.Tensor) -> None:
        """Move the averages towards the percentiles of ``returns`` (any shape); non-finite returns change nothing."""
        values = returns.detach().float().flatten()
        quantiles = th.quantile(values, self.levels)
        # a non-finite batch is skipped without reading the flag back to the host
        finite = th.isfinite(values).all()
        self.low_average.copy_(th.where(finite, th.lerp(self.low_average, quantiles[0], self.rate), self.low_average))
        self.high_average.copy_(th.where(finite, th.lerp(self.high_average, quantiles[1], self.rate), self.high_average))

    def scale(self) -> th.Tensor:
        """``max(limit, high average - low average)``."""
        return (self.high_average - self.low_average).clamp(min=self.limit)
