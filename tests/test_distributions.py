"""DreamerV3's output distributions: symlog, two-hot regression, unimix categoricals, the bounded Normal."""

import math

import pytest
import torch as th

from sb3_rssm.common.distributions import (
    TwoHot,
    bounded_normal,
    sample_one_hot,
    symexp,
    symexp_bins,
    symlog,
    unimix_log_probs,
)


def test_symlog_symexp_round_trip():
    x = th.tensor([-1e6, -100.0, -1.0, -1e-3, 0.0, 1e-3, 1.0, 100.0, 1e6], dtype=th.float64)
    th.testing.assert_close(symexp(symlog(x)), x)
    th.testing.assert_close(symlog(x), th.sign(x) * th.log(1 + x.abs()))
    assert symlog(th.tensor(0.0)) == 0


def test_symexp_bins_are_symmetric_with_a_zero():
    bins = symexp_bins(255)
    assert len(bins) == 255 and bins[127] == 0
    th.testing.assert_close(bins, -bins.flip(0))
    th.testing.assert_close(bins[-1], th.tensor(math.expm1(20.0), dtype=th.float32))
    assert th.all(bins[1:] > bins[:-1])
    even = symexp_bins(4)  # an even count has 0 twice, as danijar/dreamerv3's
    th.testing.assert_close(even, th.tensor([-math.expm1(20.0), 0.0, 0.0, math.expm1(20.0)], dtype=th.float32))
    with pytest.raises(ValueError, match="at least 2 bins"):
        symexp_bins(1)


def test_two_hot_encode_decode_round_trip():
    two_hot = TwoHot(255)
    targets = th.tensor([-3000.0, -12.5, -1.0, -0.01, 0.0, 0.3, 1.0, 7.0, 123.4, 1e5])
    weights = two_hot.encode(targets)
    th.testing.assert_close(weights.sum(-1), th.ones(len(targets)))
    assert th.all((weights > 0).sum(-1) <= 2)
    # the encoding, as probabilities, decodes back to the target
    th.testing.assert_close(two_hot.decode(th.log(weights)), targets, rtol=1e-4, atol=1e-4)
    # outside the bins' range: all weight on the end bin
    beyond = two_hot.encode(th.tensor([1e10, -1e10]))
    assert beyond[0, -1] == 1 and beyond[1, 0] == 1
    # a non-finite target is not silently put on an end bin
    assert th.isnan(two_hot.loss(th.zeros(3, 255), th.tensor([0.0, float("nan"), float("inf")])))[1:].all()


def test_two_hot_loss_against_a_hand_computation():
    two_hot = TwoHot(5)  # bins -e^20+1, -e^10+1, 0, e^10-1, e^20-1
    bins = two_hot.bins
    target = 0.25 * bins[3]  # a quarter of the way from bin 2 (0) to bin 3
    logits = th.tensor([0.1, -0.3, 0.7, 0.2, -1.0])
    log_p = logits.log_softmax(-1)
    expected = -(0.75 * log_p[2] + 0.25 * log_p[3])
    th.testing.assert_close(two_hot.loss(logits, target), expected)
    th.testing.assert_close(two_hot.encode(target), th.tensor([0.0, 0.0, 0.75, 0.25, 0.0]))


def test_two_hot_of_zero_logits_is_exactly_zero():
    # a zero-initialised head predicts exactly 0: the symmetric sum cancels the huge end bins
    assert th.all(TwoHot(255).decode(th.zeros(7, 255)) == 0)
    assert th.all(TwoHot(256).decode(th.zeros(3, 256)) == 0)


def test_unimix_log_probs():
    logits = th.tensor([[20.0, -20.0, 0.0, 0.0]])
    probs = unimix_log_probs(logits, 0.01).exp()
    expected = 0.99 * logits.softmax(-1) + 0.01 / 4
    th.testing.assert_close(probs, expected)
    assert probs.min() >= 0.0025 - 1e-7
    th.testing.assert_close(unimix_log_probs(logits, 0.0), logits.log_softmax(-1))


def test_sample_one_hot_frequencies_and_straight_through_gradient():
    th.manual_seed(0)
    log_probs = th.tensor([0.1, 0.2, 0.7]).log().expand(20000, 3)
    samples = sample_one_hot(log_probs, straight_through=False)
    assert th.all(samples.sum(-1) == 1)
    th.testing.assert_close(samples.mean(0), th.tensor([0.1, 0.2, 0.7]), atol=0.015, rtol=0)
    # probabilities that sum to a little less than 1 (rounding): a uniform number past their sum takes the last class
    short = th.tensor([0.25, 0.25, 0.4]).log().expand(20000, 3)
    samples = sample_one_hot(short, straight_through=False)
    assert th.all(samples.sum(-1) == 1)
    th.testing.assert_close(samples.mean(0), th.tensor([0.25, 0.25, 0.5]), atol=0.015, rtol=0)
    # one uniform number per categorical, whatever the leading dimensions
    th.manual_seed(0)
    draws = sample_one_hot(th.tensor([0.5, 0.5]).log().expand(4, 5, 2), straight_through=False)
    assert draws.shape == (4, 5, 2) and th.all(draws.sum(-1) == 1)
    th.manual_seed(0)
    th.testing.assert_close(draws.argmax(-1), (th.rand(4, 5, 1) >= 0.5).squeeze(-1).long())
    logits = th.randn(4, 3, requires_grad=True)
    weights = th.randn(4, 3)
    (sample_one_hot(logits.log_softmax(-1)) * weights).sum().backward()
    expected = th.autograd.grad((logits.softmax(-1) * weights).sum(), logits)[0]
    th.testing.assert_close(logits.grad, expected)


def test_bounded_normal():
    distribution = bounded_normal(th.tensor([[0.0, 100.0]]), th.tensor([[0.0, -100.0]]), 0.1, 1.0)
    th.testing.assert_close(distribution.mean, th.tensor([[0.0, 1.0]]))
    std = distribution.base_dist.scale
    th.testing.assert_close(std, th.tensor([[0.9 / (1 + math.exp(-2.0)) + 0.1, 0.1]]))
    assert distribution.log_prob(th.tensor([[0.5, 1.5]])).shape == (1,)  # summed over the action's dimensions


def test_one_hot_categorical_agrees_with_torch_and_samples_without_multinomial():
    from torch.distributions import OneHotCategorical as TorchOneHotCategorical

    from sb3_rssm.common.distributions import OneHotCategorical, one_hot_of

    logits = th.randn(4, 5, requires_grad=True)
    ours, theirs = OneHotCategorical(logits), TorchOneHotCategorical(logits=logits)
    value = one_hot_of(th.tensor([0, 4, 2, 2]), 5)
    th.testing.assert_close(ours.log_prob(value), theirs.log_prob(value))
    th.testing.assert_close(ours.entropy(), theirs.entropy())
    th.testing.assert_close(ours.probs, theirs.probs)
    assert th.equal(ours.mode(), one_hot_of(logits.argmax(-1), 5))
    assert th.equal(one_hot_of(th.tensor([[1, 0]]), 3), th.tensor([[[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]]))
    # frequencies of 20,000 samples of one categorical; straight-through gradient of rsample
    th.manual_seed(0)
    probs = th.tensor([0.1, 0.6, 0.3])
    samples = OneHotCategorical(probs.log().expand(20_000, 3)).sample()
    th.testing.assert_close(samples.mean(0), probs, atol=0.015, rtol=0)
    sample = ours.rsample()
    assert th.equal(sample.detach().sum(-1), th.ones(4))
    (sample * th.arange(5.0)).sum().backward()
    assert logits.grad is not None and logits.grad.abs().sum() > 0
