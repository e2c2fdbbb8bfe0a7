"""
The RSSMs' shared contract (filtering and imagination paths, episode resets), for the Gaussian and the categorical
RSSM alike; the Gaussian RSSM's shapes; and the KL strategies.
"""

import pytest
import torch as th
from torch.distributions import Independent, Normal, OneHotCategorical, kl_divergence

from sb3_rssm.common.rssm import RSSM, RSSMBase, RSSMState, kl_loss
from sb3_rssm.dreamer_v3.categorical_rssm import CategoricalRSSM, CategoricalRSSMState

B, T, E, A = 3, 6, 5, 2
KINDS = ["gaussian", "categorical"]


def make_rssm(kind: str = "gaussian") -> RSSMBase:
    th.manual_seed(0)
    if kind == "categorical":
        return CategoricalRSSM(E, A, stochastic_size=3, classes=4, deterministic_size=8, hidden_size=9, blocks=2)
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


@pytest.mark.parametrize("kind", KINDS)
def test_step_by_step_filter_equals_observe(kind):
    rssm = make_rssm(kind)
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


@pytest.mark.parametrize("kind", KINDS)
def test_action_aligned_with_following_observation(kind):
    """actions[:, t] is a_{t-1}: it changes the state at t, never the state before t."""
    rssm = make_rssm(kind)
    embeds, actions, is_first = random_sequence()
    changed = actions.clone()
    changed[:, 3] += 1.0
    th.manual_seed(2)
    a, _ = rssm.observe(embeds, actions, is_first)
    th.manual_seed(2)
    b, _ = rssm.observe(embeds, changed, is_first)
    th.testing.assert_close(a.deterministic[:, :3], b.deterministic[:, :3])
    assert not th.allclose(a.deterministic[:, 3], b.deterministic[:, 3])


@pytest.mark.parametrize("kind", KINDS)
def test_is_first_cuts_information_from_before(kind):
    rssm = make_rssm(kind)
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


def categorical_state(log_probs: th.Tensor) -> CategoricalRSSMState:
    lead = log_probs.shape[:-2]
    return CategoricalRSSMState(th.zeros(*lead, 1), th.zeros(*lead, log_probs.shape[-2:].numel()), log_probs)


def test_dyn_rep_kl_sends_each_term_to_its_side():
    # DreamerV3: the dynamics term KL(sg(q) || p) trains only the prior, the representation term KL(q || sg(p))
    # only the posterior, each clamped at free_bits per (batch, time) step and weighted by its scale
    g = th.Generator().manual_seed(0)
    raw_q, raw_p = 3 * th.randn(2, 3, 4, 5, generator=g), 3 * th.randn(2, 3, 4, 5, generator=g)

    def grads(dyn_scale, rep_scale, free_bits=0.0):
        q, p = raw_q.clone().requires_grad_(True), raw_p.clone().requires_grad_(True)
        posterior, prior = (categorical_state(x.log_softmax(-1)) for x in (q, p))
        loss, raw = kl_loss(posterior, prior, "dyn_rep", free_bits, dyn_scale=dyn_scale, rep_scale=rep_scale)
        loss.backward()
        return loss, raw, q.grad, p.grad

    _, _, q_grad, p_grad = grads(1.0, 0.0)
    assert q_grad.abs().sum() == 0 and p_grad.abs().sum() > 0
    _, _, q_grad, p_grad = grads(0.0, 1.0)
    assert q_grad.abs().sum() > 0 and p_grad.abs().sum() == 0
    # together, with weights: the regular KL's gradients, each side scaled by its term's weight
    _, _, q_regular, p_regular = grads(1.0, 1.0)
    loss, raw, q_grad, p_grad = grads(0.5, 0.1)
    th.testing.assert_close(q_grad, 0.1 * q_regular)
    th.testing.assert_close(p_grad, 0.5 * p_regular)
    kl = kl_divergence(Independent(OneHotCategorical(logits=raw_q), 1), Independent(OneHotCategorical(logits=raw_p), 1))
    th.testing.assert_close(raw, kl.mean())
    th.testing.assert_close(loss, 0.6 * kl.mean())


def test_dyn_rep_kl_free_bits_per_step():
    # step (0, 0) has KL 0 (same distributions): clamped to 1 nat, no gradient; the others are far above 1 nat
    g = th.Generator().manual_seed(1)
    raw_q, raw_p = 5 * th.randn(1, 2, 4, 5, generator=g), 5 * th.randn(1, 2, 4, 5, generator=g)
    raw_q[0, 0] = raw_p[0, 0]
    q, p = raw_q.clone().requires_grad_(True), raw_p.clone().requires_grad_(True)
    loss, _ = kl_loss(categorical_state(q.log_softmax(-1)), categorical_state(p.log_softmax(-1)), "dyn_rep", 1.0)
    loss.backward()
    kl = kl_divergence(Independent(OneHotCategorical(logits=raw_q), 1), Independent(OneHotCategorical(logits=raw_p), 1))
    assert kl[0, 0] < 1e-6 and kl[0, 1] > 1.0
    th.testing.assert_close(loss, (0.5 + 0.1) * (1.0 + kl[0, 1]) / 2)
    assert q.grad[0, 0].abs().sum() == 0 and p.grad[0, 0].abs().sum() == 0
    assert q.grad[0, 1].abs().sum() > 0 and p.grad[0, 1].abs().sum() > 0


def test_categorical_rssm_samples_one_hot_with_straight_through_gradient_and_unimix():
    rssm = make_rssm("categorical")
    embeds, actions, is_first = random_sequence()
    posterior, prior = rssm.observe(embeds, actions, is_first)
    assert posterior.deterministic.shape == (B, T, 8) and posterior.stochastic.shape == (B, T, 12)
    assert posterior.log_probs.shape == prior.log_probs.shape == (B, T, 3, 4)
    assert posterior.features.shape == (B, T, rssm.feature_size) == (B, T, 20)
    one_hot = posterior.stochastic.detach().reshape(B, T, 3, 4)
    assert th.all(one_hot.sum(-1) == 1) and th.all((one_hot == 0) | (one_hot == 1))
    # the prior of observe() is the mode of its distribution; both are mixed with 1% uniform
    th.testing.assert_close(prior.stochastic.reshape(B, T, 3, 4).argmax(-1), prior.log_probs.argmax(-1))
    for state in (posterior, prior):
        th.testing.assert_close(state.log_probs.exp().sum(-1), th.ones(B, T, 3))
        assert state.log_probs.exp().min() >= 0.01 / 4 - 1e-7
    # straight-through: the one-hot sample passes gradient to the posterior's parameters
    (posterior.stochastic * th.randn_like(posterior.stochastic)).sum().backward()
    assert rssm.posterior_head[-1].weight.grad.abs().sum() > 0


@pytest.mark.parametrize("gru_layers", [0, 1, 2])
def test_categorical_rssm_block_gru_equals_the_block_layers_on_embeddings_copied_into_every_group(gru_layers):
    # The reference's block GRU (danijar/dreamerv3 rssm.py), written out: each group's part of h_{t-1} beside a copy
    # of the three embeddings, through the block-diagonal layers. A faster form of the step (e.g. the embeddings'
    # share of the first block layer as one dense product) must give the same values and gradients, up to the order
    # of the float sums.
    th.manual_seed(0)
    rssm = CategoricalRSSM(E, A, 3, 4, deterministic_size=12, hidden_size=5, blocks=3, gru_layers=gru_layers)
    with th.no_grad():
        for parameter in rssm.parameters():  # biases and norm scales too: every term shows
            parameter.normal_()
    h = th.randn(B, 12, requires_grad=True)
    s = th.nn.functional.one_hot(th.randint(0, 4, (B, 3)), 4).flatten(1).float()
    state = CategoricalRSSMState(h, s, th.zeros(B, 3, 4))
    action = th.rand(B, A) * 2 - 1
    weights = th.randn(B, 12)

    def written_out():
        inputs = th.cat([rssm.deterministic_input(h), rssm.stochastic_input(s), rssm.action_input(action)], -1)
        x = th.cat([h.reshape(B, 3, 4), inputs.unsqueeze(1).expand(B, 3, 15)], -1).reshape(B, -1)
        gates = rssm.gru_gates(rssm.gru_hidden(x)).reshape(B, 3, 3, -1)
        reset, candidate, update = (gates[:, :, i].reshape(B, -1) for i in range(3))
        update = th.sigmoid(update - 1.0)
        return update * th.tanh(th.sigmoid(reset) * candidate) + (1.0 - update) * h

    results = []
    for step in (written_out, lambda: rssm.deterministic_step(state, action)):
        rssm.zero_grad()
        h.grad = None
        out = step()
        (out * weights).sum().backward()
        results.append((out.detach(), h.grad.clone(), [p.grad.clone() for p in rssm.parameters() if p.grad is not None]))
    (expected, expected_h, expected_params), (actual, actual_h, actual_params) = results
    th.testing.assert_close(actual, expected, rtol=1e-5, atol=1e-5)
    th.testing.assert_close(actual_h, expected_h, rtol=1e-5, atol=1e-5)
    stepped = [name for name, _ in rssm.named_parameters() if not name.startswith(("prior_head", "posterior_head"))]
    assert len(actual_params) == len(expected_params) == len(stepped)  # every parameter of the step had a gradient
    for a, b in zip(actual_params, expected_params):
        th.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


def test_categorical_rssm_initial_state_actions_and_blocks():
    rssm = make_rssm("categorical")
    state = rssm.initial(B)
    assert th.all(state.deterministic == 0) and th.all(state.stochastic == 0)
    # actions outside [-1, 1] (unsquashed Normal samples) act as the clipped ones, as the env clips them
    x = rssm.deterministic_step(state, th.tensor([[3.0, -0.5]]).expand(B, A))
    th.testing.assert_close(x, rssm.deterministic_step(state, th.tensor([[1.0, -0.5]]).expand(B, A)))
    with pytest.raises(ValueError, match="multiple of blocks=3"):
        CategoricalRSSM(E, A, deterministic_size=8, blocks=3)
    # the carried (h, s) of acting rebuild a state that steps like the original
    posterior, _ = rssm.observe(*random_sequence())
    last = type(posterior)(*(x[:, -1] for x in posterior))
    carried = rssm.from_belief(last.deterministic, last.stochastic)
    th.testing.assert_close(rssm.deterministic_step(carried, th.ones(B, A)), rssm.deterministic_step(last, th.ones(B, A)))
