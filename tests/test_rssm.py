"""The Gaussian RSSM: filtering and imagination paths, episode resets, and the KL strategies."""

import pytest
import torch as th
from torch.distributions import Independent, Normal, kl_divergence

from sb3_rssm.common.rssm import RSSM, RSSMState, kl_loss

B, T, E, A = 3, 6, 5, 2


def make_rssm() -> RSSM:
    th.manual_seed(0)
    return RSSM(embed_size=E, action_size=A, stochastic_size=4, deterministic_size=7, hidden_size=9)


def random_sequence(seed: int = 1):
    g = th.Generator().manual_seed(seed)
    return th.randn(B, T, E, generator=g), th.randn(B, T, A, generator=g), th.zeros(B, T)


def test_shapes_and_initial_state():
    rssm = make_rssm()
    state = rssm.initial(B)
    assert state.deterministic.shape == (B, 7) and state.stochastic.shape == (B, 4)
    assert th.all(state.deterministic == 0) and th.all(state.stochastic == 0)
    embeds, actions, is_first = random_sequence()
    posterior, prior = rssm.observe(embeds, actions, is_first)
    for s in (posterior, prior):
        assert s.deterministic.shape == (B, T, 7)
        assert s.stochastic.shape == s.mean.shape == s.std.shape == (B, T, 4)
        assert s.features.shape == (B, T, 11)
        assert th.all(s.std >= rssm.min_std)
    # posterior and prior share the deterministic path at every step
    assert th.equal(posterior.deterministic, prior.deterministic)
    imagined, taken = rssm.imagine(posterior.flatten(), lambda s: th.tanh(s.features[:, :A]), horizon=4)
    assert imagined.features.shape == (B * T, 4, 11)
    assert taken.shape == (B * T, 4, A)
    imagined, taken = rssm.imagine(rssm.initial(B), actions)
    assert imagined.stochastic.shape == (B, T, 4)
    assert th.equal(taken, actions)


def test_step_by_step_filter_equals_observe():
    rssm = make_rssm()
    embeds, actions, is_first = random_sequence()
    is_first[:, 0] = 1
    is_first[1, 3] = 1
    th.manual_seed(5)
    posterior, prior = rssm.observe(embeds, actions, is_first)
    th.manual_seed(5)
    state = rssm.initial(B)
    for t in range(T):
        state, step_prior = rssm.observe_step(state, actions[:, t], embeds[:, t], is_first[:, t])
        for a, b in zip(state, posterior):
            th.testing.assert_close(a, b[:, t])
        for a, b in zip(step_prior, prior):
            th.testing.assert_close(a, b[:, t])


def test_action_aligned_with_following_observation():
    """actions[:, t] is a_{t-1}: it changes the state at t, never the state before t."""
    rssm = make_rssm()
    embeds, actions, is_first = random_sequence()
    changed = actions.clone()
    changed[:, 3] += 1.0
    th.manual_seed(2)
    a, _ = rssm.observe(embeds, actions, is_first)
    th.manual_seed(2)
    b, _ = rssm.observe(embeds, changed, is_first)
    th.testing.assert_close(a.deterministic[:, :3], b.deterministic[:, :3])
    assert not th.allclose(a.deterministic[:, 3], b.deterministic[:, 3])


def test_is_first_cuts_information_from_before():
    rssm = make_rssm()
    embeds, actions, is_first = random_sequence()
    other_embeds, other_actions, _ = random_sequence(seed=9)
    k = 3
    # two sequences that agree from step k on, but differ before it (including a_{k-1} at index k)
    other_embeds[:, k:] = embeds[:, k:]
    other_actions[:, k + 1 :] = actions[:, k + 1 :]
    with_reset = is_first.clone()
    with_reset[:, k] = 1
    results = []
    for e, a in ((embeds, actions), (other_embeds, other_actions)):
        th.manual_seed(3)
        results.append(rssm.observe(e, a, with_reset)[0])
    for x, y in zip(*results):
        th.testing.assert_close(x[:, k:], y[:, k:])
    # a state reset at k equals a fresh filter started at k
    th.manual_seed(3)
    rssm.observe(embeds[:, :k], actions[:, :k], is_first[:, :k])  # consume the same noise as the first k steps
    fresh, _ = rssm.observe(
        embeds[:, k:], th.cat([th.zeros_like(actions[:, k : k + 1]), actions[:, k + 1 :]], 1), is_first[:, k:]
    )
    th.testing.assert_close(fresh.deterministic, results[0].deterministic[:, k:])
    # without the reset the past leaks through
    outs = []
    for e, a in ((embeds, actions), (other_embeds, other_actions)):
        th.manual_seed(3)
        outs.append(rssm.observe(e, a, is_first)[0])
    assert not th.allclose(outs[0].deterministic[:, k:], outs[1].deterministic[:, k:])


def gaussian_state(mean: th.Tensor, std: th.Tensor) -> RSSMState:
    return RSSMState(th.zeros(*mean.shape[:-1], 1), mean, mean, std)


def test_regular_kl_matches_closed_form_and_torch():
    g = th.Generator().manual_seed(0)
    mq, mp = th.randn(4, 5, 3, generator=g), th.randn(4, 5, 3, generator=g)
    sq, sp = th.rand(4, 5, 3, generator=g) + 0.1, th.rand(4, 5, 3, generator=g) + 0.1
    loss, raw = kl_loss(gaussian_state(mq, sq), gaussian_state(mp, sp), "regular")
    closed = (th.log(sp / sq) + (sq**2 + (mq - mp) ** 2) / (2 * sp**2) - 0.5).sum(-1).mean()
    torch_kl = kl_divergence(Independent(Normal(mq, sq), 1), Independent(Normal(mp, sp), 1)).mean()
    th.testing.assert_close(loss, closed)
    th.testing.assert_close(loss, torch_kl)
    th.testing.assert_close(raw, closed)


@pytest.mark.parametrize("offset, expect_grad", [(0.1, False), (3.0, True)])
def test_free_bits_gradient(offset, expect_grad):
    mean_q = th.full((2, 3, 4), offset, requires_grad=True)
    zeros = th.zeros(2, 3, 4)
    ones = th.ones(2, 3, 4)
    loss, raw = kl_loss(gaussian_state(mean_q, ones), gaussian_state(zeros, ones), "free_bits", free_bits=1.0)
    loss.backward()
    if expect_grad:  # KL = 4 * 9 / 2 = 18 nats above the threshold: the ordinary gradient
        th.testing.assert_close(loss, raw)
        th.testing.assert_close(mean_q.grad, th.full_like(mean_q, offset / 6))
    else:  # KL = 0.02 nats: clamped to the threshold, no gradient
        assert loss.item() == pytest.approx(1.0)
        assert raw.item() < 1.0
        assert th.all(mean_q.grad == 0)


def test_balanced_kl_splits_gradient_between_prior_and_posterior():
    alpha = 0.8
    g = th.Generator().manual_seed(1)
    values = [th.randn(2, 3, 4, generator=g) for _ in range(2)] + [th.rand(2, 3, 4, generator=g) + 0.5 for _ in range(2)]

    def grads(strategy):
        mq, mp, sq, sp = (v.clone().requires_grad_(True) for v in values)
        loss, _ = kl_loss(gaussian_state(mq, sq), gaussian_state(mp, sp), strategy, balance_alpha=alpha)
        loss.backward()
        return loss, [x.grad for x in (mq, mp, sq, sp)]

    loss_b, (gmq_b, gmp_b, gsq_b, gsp_b) = grads("balanced")
    loss_r, (gmq_r, gmp_r, gsq_r, gsp_r) = grads("regular")
    th.testing.assert_close(loss_b, loss_r)  # same value, only the gradients are split
    th.testing.assert_close(gmp_b, alpha * gmp_r)
    th.testing.assert_close(gsp_b, alpha * gsp_r)
    th.testing.assert_close(gmq_b, (1 - alpha) * gmq_r)
    th.testing.assert_close(gsq_b, (1 - alpha) * gsq_r)
    assert gmp_b.abs().sum() > 0 and gmq_b.abs().sum() > 0


def test_unknown_kl_strategy():
    s = gaussian_state(th.zeros(1, 2), th.ones(1, 2))
    with pytest.raises(ValueError, match="kl_strategy"):
        kl_loss(s, s, "bogus")


def test_per_step_free_bits_gradient_only_above_the_threshold():
    # PlaNet's rule: each (batch, time) step is clamped before averaging. Step 0 has KL = 4 * 0.1^2 / 2 = 0.02
    # nats (under 1), step 1 has KL = 4 * 3^2 / 2 = 18 nats (above): only step 1 gets gradient.
    offsets = th.tensor([0.1, 3.0]).reshape(1, 2, 1).expand(1, 2, 4).clone().requires_grad_(True)
    zeros, ones = th.zeros(1, 2, 4), th.ones(1, 2, 4)
    loss, raw = kl_loss(gaussian_state(offsets, ones), gaussian_state(zeros, ones), "free_bits_per_step", free_bits=1.0)
    loss.backward()
    assert offsets.grad[0, 0].abs().sum() == 0
    # d/dm mean_t(KL_t) for the step above: m / (number of steps)
    th.testing.assert_close(offsets.grad[0, 1], th.full((4,), 3.0 / 2))
    # PlaNet's value, mean(max(0, KL - 1)), shifted by the threshold
    th.testing.assert_close(loss, th.tensor((0.0 + (18.0 - 1.0)) / 2 + 1.0))
    th.testing.assert_close(raw, th.tensor((0.02 + 18.0) / 2))
    # the batch-mean rule (Dreamer v1) gives the same two steps the same gradient: the mean is above 1
    offsets.grad = None
    loss, _ = kl_loss(gaussian_state(offsets, ones), gaussian_state(zeros, ones), "free_bits", free_bits=1.0)
    loss.backward()
    th.testing.assert_close(offsets.grad[0, 0], th.full((4,), 0.1 / 2))
