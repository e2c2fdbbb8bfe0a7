"""
DreamerV3's world model (categorical RSSM): its posterior is built from the observations, and its loss filters with
the batch's ``is_first`` flags.
"""

import numpy as np
import torch as th
from gymnasium import spaces

from sb3_rssm.common.distributions import symlog
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.dreamer_v3.world_model import DreamerV3WorldModel

VECTOR = spaces.Box(-np.inf, np.inf, (3,), np.float32)
IMAGE = spaces.Box(0, 255, (3, 64, 64), np.uint8)
ACTION = spaces.Box(-1, 1, (2,), np.float32)
TINY = dict(
    stochastic_size=2, classes=3, deterministic_size=8, hidden_size=8, blocks=2, cnn_depth=2, mlp_units=8, mlp_layers=1
)
TINY.update(head_units=8, bins=15)


def world_model(space: spaces.Space = VECTOR, seed: int = 0, **kwargs) -> DreamerV3WorldModel:
    th.manual_seed(seed)
    return DreamerV3WorldModel(space, ACTION, **{**TINY, **kwargs})


def make_batch(space: spaces.Space = VECTOR, b: int = 3, t: int = 6, seed: int = 0) -> SequenceSamples:
    """Random observations, actions and rewards; one episode per sequence (``is_first`` at step 0 only)."""
    g = th.Generator().manual_seed(seed)
    if space.dtype == np.uint8:
        observations = th.randint(0, 256, (b, t, *space.shape), generator=g, dtype=th.uint8)
    else:
        observations = th.randn(b, t, *space.shape, generator=g)
    is_first = th.zeros(b, t)
    is_first[:, 0] = 1
    actions = th.rand(b, t, 2, generator=g) * 2 - 1
    actions[:, 0] = 0  # no action leads into an episode's first observation
    return SequenceSamples(observations, actions, th.randn(b, t, generator=g), is_first, th.zeros(b, t), th.zeros(b, t))


def posterior_of(wm: DreamerV3WorldModel, batch: SequenceSamples, seed: int = 1):
    """The posterior states the loss returns, with the same random draws for batches of the same shape."""
    th.manual_seed(seed)
    return wm.loss(batch)[2]


def test_posterior_depends_on_each_steps_observation_and_on_no_later_one():
    """
    d(posterior at t) / d(observation at t) is non-zero at every step, for the distribution (log-probabilities) and
    for the straight-through sample the heads see; observations after t have no influence (causal filtering).
    Breaks if the encoder's output or the posterior's embedding input is dropped or zeroed, if the posterior is
    the prior, or if the filter looks ahead.
    """
    wm = world_model()
    batch = make_batch()
    observations = batch.observations.clone().requires_grad_(True)
    posterior = posterior_of(wm, batch._replace(observations=observations))
    length = observations.shape[1]
    for t in range(length):
        for name in ("log_probs", "stochastic"):
            field = getattr(posterior, name)[:, t]
            # a random projection: the plain sum of the log-probabilities of a normalised distribution may cancel
            weights = th.randn(field.shape, generator=th.Generator().manual_seed(t))
            (grad,) = th.autograd.grad((field * weights).sum(), observations, retain_graph=True)
            per_step = grad.abs().flatten(2).sum(-1)  # (batch, time)
            assert (per_step[:, t] > 0).all(), f"the posterior's {name} at step {t} ignores the observation at step {t}"
            assert (per_step[:, t + 1 :] == 0).all(), f"the posterior's {name} at step {t} sees later observations"


def test_posterior_of_images_changes_with_the_frame_of_its_step_only():
    """
    With uint8 frames (no gradient to take): replacing the frame at step t changes the posterior at t and not
    before it. Breaks like the test above, for the conv encoder's path.
    """
    wm = world_model(IMAGE)
    batch = make_batch(IMAGE, b=2, t=4)
    base = posterior_of(wm, batch)
    for t in range(batch.observations.shape[1]):
        changed = batch.observations.clone()
        changed[:, t] = 255 - changed[:, t]
        posterior = posterior_of(wm, batch._replace(observations=changed))
        th.testing.assert_close(posterior.log_probs[:, :t], base.log_probs[:, :t])
        difference = (posterior.log_probs[:, t] - base.log_probs[:, t]).abs().flatten(1).amax(-1)
        assert (difference > 1e-4).all(), f"the posterior at step {t} does not change with the frame at step {t}"


def test_posterior_learns_what_only_the_observations_tell():
    """
    Sequences whose actions are all equal and whose observations are random: nothing but the observation tells the
    sequences of the batch apart, so a world model that filters without the observations can at best reconstruct
    their mean at each step (error = the batch variance). Overfitting the batch must go well below that: measured
    0.45 of it after 40 updates, while the same model with its encoder's output zeroed stays at 1.05.
    """
    wm = world_model(stochastic_size=8, classes=8, deterministic_size=32, hidden_size=32, mlp_units=32)
    batch = make_batch(b=8, t=4)
    batch = batch._replace(actions=th.zeros_like(batch.actions))
    optimizer = th.optim.Adam(wm.parameters(), lr=1e-2)
    for _ in range(40):
        loss, _, _ = wm.loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with th.no_grad():
        _, metrics, _ = wm.loss(batch)
    # the decoder predicts the observations' symlog: the best blind prediction is their batch mean at each step
    target = symlog(batch.observations)
    blind = (target - target.mean(0, keepdim=True)).pow(2).sum(-1).mean()
    error = metrics["reconstruction_loss/observation"]
    assert error < 0.7 * blind, (error.item(), blind.item())


def test_loss_filters_with_the_batchs_is_first():
    """
    A batch whose second episode starts at step 3: from there on, the posterior states the loss returns (and so
    every loss term of those steps) must not depend on anything before step 3, and the step-3 state is the first
    step from the initial state. With ``is_first`` cleared at step 3, the state there depends on the first episode.
    Breaks if the loss passes zeros (or nothing) instead of ``batch.is_first`` to ``rssm.observe``.
    """
    wm = world_model()
    batch = make_batch(b=3, t=6)
    start = 3
    is_first = batch.is_first.clone()
    is_first[:, start] = 1
    actions = batch.actions.clone()
    actions[:, start] = 0
    two_episodes = batch._replace(is_first=is_first, actions=actions)
    # another first episode (observations, actions, rewards) before the same second one
    other = make_batch(b=3, t=6, seed=7)
    keep = th.arange(6) >= start
    mixed = two_episodes._replace(
        observations=th.where(keep[None, :, None], two_episodes.observations, other.observations),
        actions=th.where(keep[None, :, None], two_episodes.actions, other.actions),
        rewards=th.where(keep[None, :], two_episodes.rewards, other.rewards),
    )
    cleared = two_episodes._replace(is_first=batch.is_first)

    posterior = posterior_of(wm, two_episodes)
    for a, b in zip(posterior, posterior_of(wm, mixed)):
        assert not th.equal(a[:, :start], b[:, :start])  # the first episodes differ...
        th.testing.assert_close(a[:, start:], b[:, start:])  # ...and nothing of them reaches the second one
    # the state at the episode start: the first filtering step from the initial state with a zero action
    rssm = wm.rssm
    with th.no_grad():
        embed = wm.encoder(two_episodes.observations[:, start])
        fresh, _ = rssm.observe_step(rssm.initial(3), th.zeros(3, 2), embed, sample=False)
    th.testing.assert_close(posterior.deterministic[:, start], fresh.deterministic)
    th.testing.assert_close(posterior.log_probs[:, start], fresh.log_probs)
    # without the flag, the first episode's state flows on into step 3
    without = posterior_of(wm, cleared)
    assert not th.allclose(without.deterministic[:, start], posterior.deterministic[:, start])
    assert not th.allclose(without.log_probs[:, start], posterior.log_probs[:, start])


def test_is_first_at_every_step_cuts_every_step_from_the_ones_before():
    """
    With ``is_first`` at every step, each posterior depends on its own observation alone: changing step 0's
    observation changes nothing later, and the actions (each leading into an episode's first observation, so
    zeroed by the reset) change nothing at all. Breaks as the test above.
    """
    wm = world_model()
    batch = make_batch(b=2, t=4)
    batch = batch._replace(is_first=th.ones_like(batch.is_first))
    base = posterior_of(wm, batch)
    observations = batch.observations.clone()
    observations[:, 0] += 1.0
    other = posterior_of(wm, batch._replace(observations=observations))
    assert not th.allclose(base.log_probs[:, 0], other.log_probs[:, 0])
    th.testing.assert_close(base.log_probs[:, 1:], other.log_probs[:, 1:])
    th.testing.assert_close(base.deterministic[:, 1:], other.deterministic[:, 1:])
    other = posterior_of(wm, batch._replace(actions=th.rand(batch.actions.shape) * 2 - 1))
    for a, b in zip(base, other):
        th.testing.assert_close(a, b)
