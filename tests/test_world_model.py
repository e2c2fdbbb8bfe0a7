"""World model: encoders and decoders per space, the loss, and that it can fit data."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_rssm.common import networks
from sb3_rssm.common.networks import ConvDecoder, ConvEncoder, SquaredErrorSum, unit_gaussian_log_prob
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model import WorldModel

TINY = dict(stochastic_size=4, deterministic_size=16, hidden_size=16, cnn_depth=4, mlp_units=16, reward_units=16)
IMAGE = spaces.Box(0, 255, (3, 64, 64), np.uint8)
VECTOR = spaces.Box(-np.inf, np.inf, (5,), np.float32)
ACTION = spaces.Box(-1, 1, (2,), np.float32)


def sample_obs(space: spaces.Space, b: int, t: int, seed: int = 0):
    space.seed(seed)
    if isinstance(space, spaces.Dict):
        return {k: sample_obs(s, b, t, seed) for k, s in space.spaces.items()}
    if space.dtype == np.uint8:
        return th.as_tensor(np.stack([space.sample() for _ in range(b * t)]).reshape(b, t, *space.shape))
    return th.randn(b, t, *space.shape)


def make_batch(space, b=2, t=5, action_size=2, seed=0):
    g = th.Generator().manual_seed(seed)
    is_first = th.zeros(b, t)
    is_first[:, 0] = 1
    return SequenceSamples(
        sample_obs(space, b, t, seed),
        th.rand(b, t, action_size, generator=g) * 2 - 1,
        th.randn(b, t, generator=g),
        is_first,
        th.zeros(b, t),
        th.zeros(b, t),
    )


def test_conv_encoder_decoder_paper_shapes():
    encoder = ConvEncoder(3, depth=32)
    assert encoder.output_size == 1024
    assert encoder(th.zeros(2, 7, 3, 64, 64)).shape == (2, 7, 1024)
    decoder = ConvDecoder(230, 3, depth=32)
    assert decoder(th.zeros(2, 7, 230)).shape == (2, 7, 3, 64, 64)


@pytest.mark.parametrize(
    "space",
    [VECTOR, IMAGE, spaces.Dict({"pixels": IMAGE, "state": VECTOR, "other": spaces.Box(-1, 1, (2, 3), np.float32)})],
    ids=["vector", "image", "dict"],
)
def test_loss_shapes_and_metrics(space):
    th.manual_seed(0)
    wm = WorldModel(space, ACTION, use_continuation=True, **TINY)
    batch = make_batch(space)
    loss, metrics, posterior = wm.loss(batch)
    assert loss.shape == () and th.isfinite(loss)
    assert posterior.features.shape == (2, 5, 20)
    keys = list(space.spaces) if isinstance(space, spaces.Dict) else ["observation"]
    for key in keys:
        assert f"reconstruction_log_lik/{key}" in metrics
    for key in ("reward_log_lik", "kl", "kl_loss", "posterior_entropy", "prior_entropy", "continuation_log_lik"):
        assert th.isfinite(metrics[key])
    decoded = wm.decoder(posterior.features)
    for key in keys:
        assert decoded[key].shape == (2, 5, *(space[key].shape if isinstance(space, spaces.Dict) else space.shape))
    loss.backward()
    missing = [name for name, p in wm.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


def test_discrete_actions_are_one_hot_inputs():
    wm = WorldModel(VECTOR, spaces.Discrete(3), **TINY)
    assert wm.rssm.action_size == 3
    loss, _, _ = wm.loss(make_batch(VECTOR, action_size=3))
    assert th.isfinite(loss)


def test_continuation_trained_on_terminated_only():
    th.manual_seed(0)
    wm = WorldModel(VECTOR, ACTION, use_continuation=True, **TINY)
    batch = make_batch(VECTOR)

    def continuation_log_lik(b):
        th.manual_seed(1)
        return wm.loss(b)[1]["continuation_log_lik"]

    base = continuation_log_lik(batch)
    th.testing.assert_close(continuation_log_lik(batch._replace(truncated=th.ones_like(batch.truncated))), base)
    assert not th.allclose(continuation_log_lik(batch._replace(terminated=th.ones_like(batch.terminated))), base)


@pytest.mark.parametrize(
    "space, error, match",
    [
        # the algorithms resize other sizes (sb3_rssm.common.resize); the networks take 64x64 only
        (spaces.Box(0, 255, (3, 32, 32), np.uint8), ValueError, "32x32 does not fit.*resized_observation_space"),
        (spaces.Box(0, 255, (64, 64, 3), np.uint8), ValueError, "channel-last"),
        (spaces.Box(-1, 1, (64, 64, 3), np.float32), ValueError, "not a uint8 image"),
        (spaces.Discrete(4), ValueError, "Unsupported observation"),
        (spaces.MultiBinary(4), ValueError, "Unsupported observation"),
        (spaces.Tuple([VECTOR]), ValueError, "Unsupported observation"),
        (spaces.Dict({"a": spaces.Dict({"b": VECTOR})}), NotImplementedError, "Nested observation spaces"),
    ],
)
def test_unsupported_observation_spaces(space, error, match):
    with pytest.raises(error, match=match):
        WorldModel(space, ACTION, **TINY)


@pytest.mark.parametrize(
    "space, match",
    [
        (spaces.MultiDiscrete([2, 3]), "Unsupported action"),
        (spaces.MultiBinary(3), "Unsupported action"),
        (spaces.Box(-np.inf, np.inf, (2,), np.float32), "infinite bounds"),
    ],
)
def test_unsupported_action_spaces(space, match):
    with pytest.raises(ValueError, match=match):
        WorldModel(VECTOR, space, **TINY)


def test_multi_dimensional_box_actions_are_flattened():
    assert WorldModel(VECTOR, spaces.Box(-1, 1, (2, 3), np.float32), **TINY).rssm.action_size == 6


def test_unknown_kl_strategy_at_construction():
    with pytest.raises(ValueError, match="kl_strategy"):
        WorldModel(VECTOR, ACTION, kl_strategy="nope", **TINY)


def test_world_model_overfits_a_fixed_batch():
    """Prediction error of observations and rewards falls at least 10x within 300 updates."""
    th.manual_seed(0)
    wm = WorldModel(
        VECTOR,
        ACTION,
        kl_strategy="free_bits",
        free_bits=1.0,
        **{**TINY, "deterministic_size": 64, "mlp_units": 128, "reward_units": 128},
    )
    batch = make_batch(VECTOR, b=4, t=10)
    optimizer = th.optim.Adam(wm.parameters(), lr=3e-3)

    def error() -> float:
        with th.no_grad():
            th.manual_seed(1)
            _, _, posterior = wm.loss(batch)
            features = posterior.features
            obs_error = (wm.decoder(features)["observation"] - batch.observations).pow(2).mean()
            reward_error = (wm.reward(features) - batch.rewards).pow(2).mean()
        return (obs_error + reward_error).item()

    before = error()
    for _ in range(300):
        loss, _, _ = wm.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = error()
    assert after < before / 10, (before, after)  # measured: 1.8 -> 0.04 (40x)


def test_latent_overshooting_changes_the_loss_when_on():
    batch = make_batch(VECTOR, b=3, t=8)
    losses = {}
    for distance in (0, 4):
        th.manual_seed(0)
        wm = WorldModel(VECTOR, ACTION, kl_strategy="regular", overshooting_distance=distance, **TINY)
        th.manual_seed(1)
        losses[distance], metrics, _ = wm.loss(batch)
    assert "overshooting_kl" in metrics and metrics["overshooting_kl"] > 0
    assert not th.allclose(losses[0], losses[4])
    th.testing.assert_close(losses[4] - losses[0], metrics["overshooting_kl"], rtol=1e-4, atol=1e-4)


def test_latent_overshooting_masks_episode_starts():
    """With an episode start at every step no multi-step prediction is valid: the term vanishes."""
    th.manual_seed(0)
    wm = WorldModel(VECTOR, ACTION, kl_strategy="regular", overshooting_distance=3, **TINY)
    batch = make_batch(VECTOR, b=2, t=6)
    batch = batch._replace(is_first=th.ones_like(batch.is_first))
    assert wm.loss(batch)[1]["overshooting_kl"] == 0


@pytest.mark.parametrize("event_dims", [1, 3])
def test_unit_gaussian_log_prob_matches_torch_distributions(event_dims, monkeypatch):
    # small chunks, so that several chunks and a ragged last one are exercised
    monkeypatch.setattr(networks, "SQUARED_ERROR_CHUNK", 40)
    shape = (3, 5, 2, 4, 4) if event_dims == 3 else (3, 5, 7)
    g = th.Generator().manual_seed(0)
    # a channels-last mean against a contiguous target, as the conv decoder produces them
    mean = th.randn(*shape, generator=g, dtype=th.float64)
    if event_dims == 3:
        mean = mean.reshape(15, *shape[2:]).contiguous(memory_format=th.channels_last).reshape(shape)
    mean.requires_grad_(True)
    target = th.randn(*shape, generator=g, dtype=th.float64, requires_grad=True)
    ours = unit_gaussian_log_prob(mean, target, event_dims)
    reference = th.distributions.Independent(th.distributions.Normal(mean, 1.0), event_dims).log_prob(target)
    assert ours.shape == reference.shape == shape[:2]
    th.testing.assert_close(ours, reference)
    weights = th.randn(shape[:2], generator=g, dtype=th.float64)
    grads = th.autograd.grad((ours * weights).sum(), (mean, target))
    reference_grads = th.autograd.grad((reference * weights).sum(), (mean, target))
    for a, b in zip(grads, reference_grads):
        th.testing.assert_close(a, b)
    assert th.autograd.gradcheck(lambda m, t: SquaredErrorSum.apply(m, t, event_dims, 40), (mean, target))


def test_unit_gaussian_log_prob_of_a_bfloat16_mean_is_float32_with_a_bfloat16_gradient():
    mean = th.randn(4, 3, 8, 8).to(th.bfloat16).requires_grad_(True)
    target = th.randn(4, 3, 8, 8)
    log_prob = unit_gaussian_log_prob(mean, target, 3)
    assert log_prob.dtype == th.float32
    log_prob.sum().backward()
    assert mean.grad.dtype == th.bfloat16
    th.testing.assert_close(mean.grad.float(), (target - mean.float()), atol=0.05, rtol=0.02)


@pytest.mark.parametrize("bits", [5, 8])
def test_image_bits_quantize_and_dequantize(bits):
    from sb3_rssm.common.networks import preprocess_image

    image = th.arange(256, dtype=th.uint8).repeat(3 * 64 * 64 // 256 + 1)[: 3 * 64 * 64].reshape(1, 3, 64, 64)
    bins = 2**bits
    centred = preprocess_image(image, bits)
    if bits == 8:  # Dreamer's scaling, no noise
        th.testing.assert_close(centred, image.float() / 255 - 0.5)
        assert th.equal(preprocess_image(image, bits, dequantize=True), centred)
        return
    # without noise: the centre of each of the 2**bits bins
    level = (centred + 0.5) * bins - 0.5
    th.testing.assert_close(level, level.round())
    th.testing.assert_close(level, (image // 2 ** (8 - bits)).float())
    # with noise: somewhere within the same bin, and not always at the same place
    th.manual_seed(0)
    noisy = preprocess_image(image, bits, dequantize=True)
    offset = noisy + 0.5 - (image // 2 ** (8 - bits)).float() / bins
    assert offset.min() >= 0 and offset.max() < 1 / bins
    assert offset.std() > 0.2 / bins


def test_image_bits_apply_to_encoder_input_and_decoder_target(monkeypatch):
    wm = WorldModel(IMAGE, ACTION, image_bits=5, **TINY)
    batch = make_batch(IMAGE)
    seen = {}
    real_encoder_forward = type(wm.encoder).forward
    real_log_lik = type(wm.decoder).log_likelihood

    def encoder_forward(self, observations, images=None):
        seen["input"] = images["observation"]
        return real_encoder_forward(self, observations, images)

    def log_likelihood(self, features, observations, images):
        seen["target"] = images["observation"]
        return real_log_lik(self, features, observations, images)

    monkeypatch.setattr(type(wm.encoder), "forward", encoder_forward)
    monkeypatch.setattr(type(wm.decoder), "log_likelihood", log_likelihood)
    wm.train()
    wm.loss(batch)
    assert seen["input"] is seen["target"]
    levels = (batch.observations // 8).float() / 32 - 0.5
    offset = seen["input"] - levels
    assert offset.min() >= 0 and offset.max() < 1 / 32 and offset.std() > 0  # 5 bits, noise within the bin
    # out of training (acting, evaluation): the bin centre, so the same frame always gives the same embedding
    wm.eval()
    th.testing.assert_close(wm.encoder.preprocess(batch.observations)["observation"], levels + 1 / 64)


def test_loss_filters_with_the_batchs_is_first():
    """
    A batch whose second episode starts at step 3: from there on, the posterior states the loss returns (and so
    every loss term of those steps) must not depend on anything before step 3, and the step-3 state is the first
    step from the initial state. With ``is_first`` cleared at step 3, the state there depends on the first episode.
    Breaks if the loss passes zeros (or nothing) instead of ``batch.is_first`` to ``rssm.observe``.
    """
    th.manual_seed(0)
    wm = WorldModel(VECTOR, ACTION, **TINY)
    start, length = 3, 6
    batch = make_batch(VECTOR, b=3, t=length)
    is_first = batch.is_first.clone()
    is_first[:, start] = 1
    actions = batch.actions.clone()
    actions[:, [0, start]] = 0  # no action leads into an episode's first observation
    two_episodes = batch._replace(is_first=is_first, actions=actions)
    # another first episode (observations, actions, rewards) before the same second one
    other = make_batch(VECTOR, b=3, t=length, seed=7)
    keep = th.arange(length) >= start
    mixed = two_episodes._replace(
        observations=th.where(keep[None, :, None], two_episodes.observations, other.observations),
        actions=th.where(keep[None, :, None], two_episodes.actions, other.actions),
        rewards=th.where(keep[None, :], two_episodes.rewards, other.rewards),
    )

    def posterior_of(b):
        th.manual_seed(1)  # the same posterior samples for batches of the same shape
        return wm.loss(b)[2]

    posterior = posterior_of(two_episodes)
    for a, b in zip(posterior, posterior_of(mixed)):
        assert not th.equal(a[:, :start], b[:, :start])  # the first episodes differ...
        th.testing.assert_close(a[:, start:], b[:, start:])  # ...and nothing of them reaches the second one
    # the state at the episode start: the first filtering step from the initial state with a zero action
    with th.no_grad():
        embed = wm.encoder(two_episodes.observations[:, start])
        fresh, _ = wm.rssm.observe_step(wm.rssm.initial(3), th.zeros(3, 2), embed, sample=False)
    for name in ("deterministic", "mean", "std"):
        th.testing.assert_close(getattr(posterior, name)[:, start], getattr(fresh, name))
    # without the flag, the first episode's state flows on into step 3
    without = posterior_of(two_episodes._replace(is_first=batch.is_first))
    for name in ("deterministic", "mean", "std"):
        assert not th.allclose(getattr(without, name)[:, start], getattr(posterior, name)[:, start]), name
