"""
Output distributions: those of DreamerV3 (Hafner et al., 2023, "Mastering Diverse Domains through World Models";
danijar/dreamerv3 ``embodied/jax/outs.py`` and ``heads.py``): symlog / symexp squashing, two-hot regression
over symexp-spaced bins (rewards and values), categoricals mixed with a uniform share (``unimix``: latents and
discrete actions) and the bounded Normal of continuous actions; and the one-hot categorical of every agent's
discrete actions (:class:`OneHotCategorical`), sampled, scored and measured without a host synchronisation
(``torch.distributions``' own validates on the host even with ``validate_args=False``, and samples through
``multinomial``), so that an update on a GPU never waits for it.
"""

from __future__ import annotations

import torch as th
import torch.nn.functional as F
from torch import nn
from torch.distributions import Independent, Normal


def symlog(x: th.Tensor) -> th.Tensor:
    """``sign(x) * log(1 + |x|)``: compresses large magnitudes, close to the identity around zero."""
    return th.sign(x) * th.log1p(x.abs())


def symexp(x: th.Tensor) -> th.Tensor:
    """``sign(x) * (exp(|x|) - 1)``, the inverse of :func:`symlog`."""
    return th.sign(x) * th.expm1(x.abs())


def symexp_bins(count: int = 255, limit: float = 20.0) -> th.Tensor:
    """
    ``count`` bins spaced evenly in symlog space over ``[-limit, limit]`` and mapped back with symexp (about
    +-4.9e8 at the ends), symmetric around zero, as ``symexp_twohot`` builds them: an odd count has a bin at 0.
    """
    if count < 2:
        raise ValueError(f"two-hot regression needs at least 2 bins, got {count}")
    half = symexp(th.linspace(-limit, 0.0, (count - 1) // 2 + 1 if count % 2 else count // 2, dtype=th.float64))
    # the negative half mirrored (without a second zero when the count is odd)
    bins = th.cat([half, -half[:-1].flip(0)] if count % 2 else [half, -half.flip(0)])
    return bins.float()


class TwoHot(nn.Module):
    """
    Two-hot regression of a scalar over fixed bins (symexp-spaced by default). A target between two neighbouring
    bins is encoded as weights on those two, linearly by distance (all weight on the end bin outside the range);
    the network predicts logits over the bins, trained by cross-entropy against the encoding, and the prediction
    is the probability-weighted mean of the bins. The bins follow the module's device and are not saved.

    :param bins: number of bins (DreamerV3: 255)
    """

    def __init__(self, bins: int = 255) -> None:
        super().__init__()
        self.register_buffer("bins", symexp_bins(bins), persistent=False)

    def encode(self, target: th.Tensor) -> th.Tensor:
        """(...) scalars to (..., bins) two-hot weights that sum to 1 (non-finite targets give non-finite weights)."""
        bins: th.Tensor = self.bins
        count = len(bins)
        target = target.float().contiguous()
        # index of the last bin <= target, and of the first bin > target
        above = th.bucketize(target, bins, right=True)
        below = (above - 1).clamp(0, count - 1)
        above = above.clamp(0, count - 1)
        equal = below == above
        to_below = th.where(equal, 1.0, (bins[below] - target).abs())
        to_above = th.where(equal, 1.0, (bins[above] - target).abs())
        total = to_below + to_above
        weights = th.zeros(*target.shape, count, device=target.device)
        weights.scatter_add_(-1, below.unsqueeze(-1), (to_above / total).unsqueeze(-1))
        weights.scatter_add_(-1, above.unsqueeze(-1), (to_below / total).unsqueeze(-1))
        # a non-finite target would land on an end bin: make it non-finite, so that the loss says so
        return th.where(th.isfinite(target).unsqueeze(-1), weights, th.nan)

    def loss(self, logits: th.Tensor, target: th.Tensor) -> th.Tensor:
        """(..., bins) logits and (...) targets to the (...) cross-entropy against the targets' encoding."""
        return -(self.encode(target.detach()) * F.log_softmax(logits.float(), dim=-1)).sum(-1)

    def decode(self, logits: th.Tensor) -> th.Tensor:
        """
        (..., bins) logits to the (...) mean of the bins under their softmax. The two halves are summed outwards
        from the middle, pairwise, so that uniform probabilities over symmetric bins give exactly 0 (a left-to-right
        sum of 255 products up to 4.9e8 leaves rounding errors of order 100): a zero-initialised head predicts 0.
        """
        probs = F.softmax(logits.float(), dim=-1)
        bins: th.Tensor = self.bins
        half = len(bins) // 2
        middle = (probs[..., half] * bins[half]) if len(bins) % 2 else 0.0
        low = (probs[..., :half] * bins[:half]).flip(-1)
        high = probs[..., -half:] * bins[-half:]
        return middle + (low + high).sum(-1)


def unimix_log_probs(logits: th.Tensor, unimix: float) -> th.Tensor:
    """
    Log-probabilities of a categorical over the last dimension mixed with a uniform one: ``(1 - unimix) *
    softmax(logits) + unimix / classes``. DreamerV3 mixes in 1% so that no class has a probability near zero,
    which keeps KL terms and log-probabilities bounded. Computed in float32.
    """
    logits = logits.float()
    if not unimix:
        return F.log_softmax(logits, dim=-1)
    probs = (1.0 - unimix) * F.softmax(logits, dim=-1) + unimix / logits.shape[-1]
    return th.log(probs)


def sample_one_hot(log_probs: th.Tensor, straight_through: bool = True) -> th.Tensor:
    """
    A one-hot sample of the categorical over the last dimension. With ``straight_through`` its gradient is that of
    the probabilities (``one_hot + probs - sg(probs)``), so the sample passes gradient on to the logits.
    """
    probs = log_probs.exp()
    classes = probs.shape[-1]
    # inverse CDF: one uniform number per categorical (a CPU draws uniforms far faster than the exponentials of
    # "first exponential clock to ring", which took a fifth of DreamerV3's imagination); the class is the number of
    # cumulative probabilities at or below it. The clamp covers a last cumulative sum that rounds below the uniform.
    uniform = th.rand((*probs.shape[:-1], 1), dtype=probs.dtype, device=probs.device)
    index = (probs.detach().cumsum(-1) <= uniform).sum(-1).clamp(max=classes - 1)
    one_hot = one_hot_of(index, classes, probs.dtype)
    # (probs - sg(probs)) is exactly 0: the sample stays exactly one-hot
    return one_hot + (probs - probs.detach()) if straight_through else one_hot


def mode_one_hot(log_probs: th.Tensor) -> th.Tensor:
    """The most likely class over the last dimension, one-hot."""
    return one_hot_of(log_probs.argmax(-1), log_probs.shape[-1], log_probs.dtype)


def one_hot_of(index: th.Tensor, classes: int, dtype: th.dtype = th.float32) -> th.Tensor:
    """
    ``F.one_hot(index, classes).to(dtype)`` by a comparison with ``arange(classes)``: ``F.one_hot`` reads the
    indices' range back to the host on a CPU.
    """
    return (index.unsqueeze(-1) == th.arange(classes, device=index.device)).to(dtype)


class OneHotCategorical:
    """
    A categorical over the last dimension of ``log_probs`` with one-hot values: the part of
    ``torch.distributions.OneHotCategorical`` the agents use (``sample`` by inverse CDF, ``rsample`` with
    straight-through gradients, ``mode``, ``log_prob``, ``entropy``, ``probs``), with no host synchronisation.

    :param logits: (..., classes) unnormalised log-probabilities
    """

    def __init__(self, logits: th.Tensor) -> None:
        self.log_probs = F.log_softmax(logits, dim=-1)

    @property
    def probs(self) -> th.Tensor:
        """(..., classes) probabilities."""
        return self.log_probs.exp()

    def sample(self) -> th.Tensor:
        """A one-hot sample (no gradient)."""
        return sample_one_hot(self.log_probs.detach(), straight_through=False)

    def rsample(self) -> th.Tensor:
        """A one-hot sample whose gradient is that of the probabilities (straight-through)."""
        return sample_one_hot(self.log_probs)

    def mode(self) -> th.Tensor:
        """The most likely class, one-hot."""
        return mode_one_hot(self.log_probs)

    def log_prob(self, value: th.Tensor) -> th.Tensor:
        """(...) log-probabilities of one-hot ``value``."""
        return (value * self.log_probs).sum(-1)

    def entropy(self) -> th.Tensor:
        """(...) entropies."""
        return -(self.log_probs.exp() * self.log_probs).sum(-1)


def bounded_normal(raw_mean: th.Tensor, raw_std: th.Tensor, min_std: float = 0.1, max_std: float = 1.0) -> Independent:
    """
    DreamerV3's continuous actions (``bounded_normal``): a Normal with mean ``tanh(raw_mean)`` in [-1, 1] and
    standard deviation ``(max_std - min_std) * sigmoid(raw_std + 2) + min_std``, independent over the last
    dimension. Samples are not squashed: they may leave [-1, 1], and the env (and the RSSM) clip them.
    """
    std = (max_std - min_std) * th.sigmoid(raw_std.float() + 2.0) + min_std
    return Independent(Normal(th.tanh(raw_mean.float()), std, validate_args=False), 1, validate_args=False)
