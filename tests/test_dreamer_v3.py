"""DreamerV3's own pieces: model sizes, world model loss, actor, and the actor-critic losses."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_rssm.common.distributions import TwoHot
from sb3_rssm.common.returns import ReturnNormalizer
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.dreamer_v3.dreamer_v3 import imagination_loss, replay_value_loss
from sb3_rssm.dreamer_v3.policies import MODEL_SIZES, ActorV3, DreamerV3Policy, model_size

TINY_V3 = dict(size="size1m", stochastic_size=2, classes=3, deterministic_size=8, hidden_size=8, blocks=2, cnn_depth=2)
TINY_V3.update(mlp_units=8, mlp_layers=1, reward_units=8, actor_units=8, actor_layers=1, critic_units=8, critic_layers=1)


def tiny_policy(observation_space=None, action_space=None, **kwargs) -> DreamerV3Policy:
    th.manual_seed(0)
    observation_space = observation_space or spaces.Box(-1, 1, (2,))
    action_space = action_space or spaces.Box(-1, 1, (1,))
    return DreamerV3Policy(observation_space, action_space, lambda _: 1e-3, **{**TINY_V3, **kwargs})


def test_model_sizes_follow_the_official_presets():
    assert MODEL_SIZES["size1m"] == dict(deterministic_size=512, hidden_size=64, classes=4, cnn_depth=4, units=64)
    assert MODEL_SIZES["size12m"] == dict(deterministic_size=2048, hidden_size=256, classes=16, cnn_depth=16, units=256)
    sizes = model_size("size12m", classes=8, actor_units=None)
    assert sizes["classes"] == 8 and sizes["actor_units"] == sizes["critic_units"] == sizes["mlp_units"] == 256
    with pytest.raises(ValueError, match=r"Unknown DreamerV3 model size 'size12M'\. Did you mean 'size12m'"):
        model_size("size12M")


def test_policy_built_from_a_preset():
    policy = DreamerV3Policy(spaces.Box(-1, 1, (2,)), spaces.Discrete(3), lambda _: 1e-3, size="size1m")
    rssm = policy.world_model.rssm
    assert (rssm.deterministic_size, rssm.hidden_size, rssm.classes, rssm.stochastic_size) == (512, 64, 4, 32)
    assert policy.actor.net[0].out_features == policy.world_model.encoder.mlp_units == 64
    assert policy.get_parameter("critic.0.weight").shape == (64, 512 + 32 * 4)  # type: ignore[attr-defined]
    # the paper's KL scales and free bits, the reference's heads and optimizer
    world_model = policy.world_model
    assert (world_model.dyn_scale, world_model.rep_scale, world_model.free_bits) == (0.5, 0.1, 1.0)
    assert world_model.two_hot.bins.shape == (255,) and rssm.blocks == 8 and rssm.unimix == 0.01
    defaults = policy.world_model_optimizer.defaults
    assert (defaults["lr"], defaults["eps"], defaults["agc"], defaults["warmup"]) == (1e-3, 1e-20, 0.3, 1000)


def test_reward_and_critic_heads_start_at_exactly_zero():
    policy = tiny_policy()
    features = th.randn(5, 7, policy.world_model.rssm.feature_size) * 10
    assert th.all(policy.world_model.reward(features) == 0)
    assert th.all(policy.predict_value(features) == 0) and th.all(policy.predict_value(features, slow=True) == 0)
    assert not any(p.requires_grad for p in policy.slow_critic.parameters())


def sequence(batch=2, length=5, terminated=None, truncated=None, seed=0) -> SequenceSamples:
    g = th.Generator().manual_seed(seed)
    zeros = th.zeros(batch, length)
    is_first = zeros.clone()
    is_first[:, 0] = 1
    return SequenceSamples(
        th.randn(batch, length, 2, generator=g),
        th.rand(batch, length, 1, generator=g) * 2 - 1,
        th.randn(batch, length, generator=g),
        is_first,
        zeros if terminated is None else terminated,
        zeros if truncated is None else truncated,
    )


def test_world_model_loss_learns_continuation_from_termination_only():
    policy = tiny_policy()
    world_model = policy.world_model
    flags = th.zeros(2, 5)
    flags[0, 3] = 1
    losses = {}
    for name, batch in {
        "none": sequence(),
        "truncated": sequence(truncated=flags),
        "terminated": sequence(terminated=flags),
    }.items():
        th.manual_seed(1)
        _, metrics, _ = world_model.loss(batch)
        losses[name] = metrics["continuation_loss"]
    assert losses["truncated"] == losses["none"]  # a time limit is no termination: the episode would go on
    assert losses["terminated"] != losses["none"]
    # the target is the discount where the episode goes on, 0 where it terminates
    th.manual_seed(1)
    _, _, posterior = world_model.loss(sequence(terminated=flags), discount=0.9)
    logits = world_model.continuation_head(posterior.features).squeeze(-1)
    target = 0.9 * (1 - flags)
    expected = th.nn.functional.binary_cross_entropy_with_logits(logits, target)
    th.manual_seed(1)
    _, metrics, _ = world_model.loss(sequence(terminated=flags), discount=0.9)
    th.testing.assert_close(metrics["continuation_loss"], expected)


def test_world_model_loss_terms_and_gradients():
    policy = tiny_policy()
    world_model = policy.world_model
    loss, metrics, posterior = world_model.loss(sequence())
    expected = (
        metrics["reconstruction_loss/observation"] + metrics["reward_loss"] + metrics["continuation_loss"] + metrics["kl_loss"]
    )
    th.testing.assert_close(loss.detach(), expected)
    th.testing.assert_close(metrics["reward_loss"], th.tensor(np.log(255.0), dtype=th.float32))  # uniform over bins
    assert posterior.features.requires_grad  # for the replay value loss
    # the reward loss alone trains the representation (DreamerV3's reward gradient reaches the RSSM)
    with th.no_grad():  # the zero-initialised output layer passes no gradient at first
        world_model.reward_head[-1].weight.normal_()
    world_model.two_hot.loss(world_model.reward_head(posterior.features), sequence().rewards).mean().backward()
    assert world_model.rssm.posterior_head[0].weight.grad.abs().sum() > 0


def test_actor_discrete_and_box():
    th.manual_seed(0)
    actor = ActorV3(6, spaces.Discrete(4), units=8, layers=1)
    features = th.randn(50, 6)
    action = actor.act(features)
    assert th.all(action.sum(-1) == 1)
    distribution = actor.distribution(features)
    assert distribution.probs.min() >= 0.01 / 4 - 1e-7  # unimix
    assert distribution.log_prob(action).shape == (50,)
    box = ActorV3(6, spaces.Box(-1, 1, (3,)), units=8, layers=1)
    samples = box.act(features)
    assert samples.shape == (50, 3) and samples.abs().max() <= 1
    distribution = box.distribution(features)
    th.testing.assert_close(box.act(features, deterministic=True), distribution.mean)
    # the output layer starts at 1% scale: means near 0, std near (1 - 0.1) * sigmoid(2) + 0.1
    assert distribution.mean.abs().max() < 0.1
    th.testing.assert_close(distribution.base_dist.scale, th.full((50, 3), 0.9 * 0.8808 + 0.1), atol=0.02, rtol=0)


def test_imagination_loss_against_a_hand_computation():
    two_hot, normalizer = TwoHot(255), ReturnNormalizer(rate=1.0)
    # one trajectory s_0, s_1, s_2 with values 1, 2, 3, rewards and continuations of arriving at each state
    values = th.tensor([[1.0, 2.0, 3.0]])
    critic_logits = th.log(two_hot.encode(values)).clamp(min=-50).requires_grad_(True)
    rewards = th.tensor([[0.0, 0.5, -1.0]])
    continuation = th.tensor([[0.9, 0.8, 0.5]])
    slow_values = th.tensor([[0.0, 1.0, 2.0]])
    raw_logits = th.tensor([[[0.3, -0.2], [0.1, 0.4]]], requires_grad=True)
    distribution = th.distributions.OneHotCategorical(logits=raw_logits)
    actions = th.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    actor_loss, critic_loss, returns, metrics = imagination_loss(
        distribution, actions, rewards, continuation, critic_logits, slow_values, two_hot, normalizer, 0.5, 0.1, 1.0
    )
    # R_1 = r_2 + c_2 * v_2; R_0 = r_1 + c_1 * (0.5 * v_1 + 0.5 * R_1)
    r1 = -1.0 + 0.5 * 3.0
    r0 = 0.5 + 0.8 * (0.5 * 2.0 + 0.5 * r1)
    th.testing.assert_close(returns, th.tensor([[r0, r1]]))
    weight = th.tensor([0.9, 0.9 * 0.8])
    scale = max(1.0, np.percentile([r0, r1], 95) - np.percentile([r0, r1], 5))
    advantage = (th.tensor([r0, r1]) - values[0, :2]) / scale
    log_probs = raw_logits[0].log_softmax(-1)
    entropy = -(log_probs.exp() * log_probs).sum(-1)
    log_prob = th.stack([log_probs[0, 0], log_probs[1, 1]])
    th.testing.assert_close(actor_loss, -(weight * (log_prob * advantage + 0.1 * entropy)).mean())
    head = critic_logits[0, :2]
    target_ce = two_hot.loss(head, th.tensor([r0, r1])) + two_hot.loss(head, slow_values[0, :2])
    th.testing.assert_close(critic_loss, (weight * target_ce).mean())
    th.testing.assert_close(metrics["return_scale"], th.tensor(scale, dtype=th.float32))
    # the actor's loss reaches the actor only through log-probabilities and entropy (REINFORCE), the critic's
    # loss only the critic's logits
    (actor_grad,) = th.autograd.grad(actor_loss, raw_logits, retain_graph=True)
    assert actor_grad.abs().sum() > 0
    assert th.autograd.grad(actor_loss, critic_logits, allow_unused=True)[0] is None
    assert th.autograd.grad(critic_loss, raw_logits, allow_unused=True)[0] is None


def test_replay_value_loss_bootstraps_truncation_but_not_termination():
    two_hot = TwoHot(255)
    rewards = th.tensor([[0.0, 1.0, 2.0, 0.0, 3.0, 4.0]])
    # episode 1 terminates at step 2; episode 2 starts at 3 and is truncated at 5 (the last step)
    terminated = th.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 0.0]])
    last = th.tensor([[0.0, 0.0, 1.0, 0.0, 0.0, 1.0]])
    bootstrap = th.tensor([[10.0, 20.0, 30.0, 40.0, 50.0, 60.0]])
    logits = th.zeros(1, 6, 255, requires_grad=True)
    loss, returns = replay_value_loss(
        logits, th.zeros(1, 6), rewards, terminated, last, bootstrap, two_hot, gamma=0.5, return_lambda=0.8
    )
    r4 = 4.0 + 0.5 * 60.0  # step 5 ends the episode: bootstrap from the imagined return there
    r3 = 3.0 + 0.5 * (0.2 * 50.0 + 0.8 * r4)
    r2 = 0.0 + 0.5 * (0.2 * 40.0 + 0.8 * r3)  # step 2 was the last: its return reaches into the next episode, masked
    r1 = 2.0  # step 2 is terminal: no bootstrap
    r0 = 1.0 + 0.5 * (0.2 * 20.0 + 0.8 * r1)
    th.testing.assert_close(returns, th.tensor([[r0, r1, r2, r3, r4]]))
    weight = th.tensor([1.0, 1.0, 0.0, 1.0, 1.0])
    zero = th.zeros(())
    expected = weight * (two_hot.loss(logits[0, :5], returns[0]) + two_hot.loss(logits[0, :5], zero.expand(5)))
    th.testing.assert_close(loss, expected.mean())


def trained_v3(**kwargs):
    from sb3_rssm import DreamerV3
    from sb3_rssm.common.envs import PointMassEnv
    from tests.conftest import tiny_model

    model = tiny_model(DreamerV3, "MlpPolicy", PointMassEnv(), seed=0, **kwargs)
    model.learn(30)
    return model


def parameters_of(module):
    return [p.detach().clone() for p in module.parameters()]


def test_one_backward_pass_trains_each_group_with_its_losses():
    model = trained_v3()
    policy = model.policy
    batch = model.replay_buffer.sample(2)
    groups = {"model": policy.world_model, "actor": policy.actor, "critic": policy.critic}

    normalizer = {key: value.clone() for key, value in policy.return_normalizer.state_dict().items()}

    def gradients(**scales):
        for name, value in scales.items():
            setattr(model, name, value)
        policy.zero_grad(set_to_none=True)
        policy.return_normalizer.load_state_dict(normalizer)  # each call updates it
        th.manual_seed(3)
        model._train_step(batch)
        model.update._checks.clear()  # this test reads the gradients, it steps nothing
        return {name: [p.grad for p in net.parameters()] for name, net in groups.items()}

    with_replay = gradients(replay_value_scale=0.3)
    without_replay = gradients(replay_value_scale=0.0)
    # every group gets gradient from the one backward pass; the replay value loss reaches the world model and
    # the critic, and nothing else
    for name in groups:
        assert any(g is not None and g.abs().sum() > 0 for g in with_replay[name]), name
    for name, changed in (("model", True), ("critic", True), ("actor", False)):
        differs = any(not th.equal(a, b) for a, b in zip(with_replay[name], without_replay[name]))
        assert differs == changed, name
    assert all(p.grad is None for p in policy.slow_critic.parameters())


def test_imagination_has_no_gradient_and_samples_unclipped_actions():
    model = trained_v3(imagination_horizon=4)
    policy = model.policy
    _, _, posterior = policy.world_model.loss(model.replay_buffer.sample(2))
    features, actions = model.imagine(posterior.detach().flatten())
    assert features.shape == (2 * 4, 5, policy.world_model.rssm.feature_size) and actions.shape == (8, 4, 1)
    assert not features.requires_grad and not actions.requires_grad
    th.testing.assert_close(features[:, 0], posterior.features.detach().flatten(0, 1))
    with th.no_grad():
        policy.actor.output.bias.fill_(20.0)  # means at tanh(20) = 1: about half the samples fall beyond 1
    _, actions = model.imagine(posterior.detach().flatten())
    assert actions.max() > 1.0
    assert policy.actor.act(features[:, 0]).max() <= 1.0  # acting clips, as the env does


def test_all_losses_before_any_step_and_the_slow_critic_follows_applied_critic_steps():
    model = trained_v3(learning_rate=1e-2, actor_learning_rate=1e-2, critic_learning_rate=1e-2)
    policy = model.policy
    with th.no_grad():  # a slow critic apart from the critic, so that its moving average shows
        for p in policy.slow_critic.parameters():
            p.add_(0.5)
    nets = {"world_model": policy.world_model, "actor": policy.actor, "critic": policy.critic}
    before = {name: parameters_of(net) for name, net in nets.items()}
    slow_before, critic_before = parameters_of(policy.slow_critic), parameters_of(policy.critic)
    model._train_step(model.replay_buffer.sample(2))
    for name, net in nets.items():  # nothing stepped yet: the actor imagined with the batch's world model
        assert all(th.equal(a, b) for a, b in zip(before[name], net.parameters())), name
    model.update.step()
    policy.update_slow_critic(model.slow_critic_rate, model.update.applied["critic"])
    for name, net in nets.items():
        assert any(not th.equal(a, b) for a, b in zip(before[name], net.parameters())), name
    for slow, old, fast in zip(policy.slow_critic.parameters(), slow_before, policy.critic.parameters()):
        th.testing.assert_close(slow, 0.98 * old + 0.02 * fast)
    # a skipped critic step leaves the slow critic where it is
    slow_before = parameters_of(policy.slow_critic)
    policy.update_slow_critic(model.slow_critic_rate, th.tensor(False))
    assert all(th.equal(a, b) for a, b in zip(slow_before, policy.slow_critic.parameters()))
    assert not any(th.equal(a, b) for a, b in zip(critic_before, policy.slow_critic.parameters()))


def test_train_ratio_in_sb3_terms():
    model = trained_v3(batch_size=4, sequence_length=8, train_freq=16, gradient_steps=2)
    assert model.train_ratio == 2 * 4 * 8 / 16
    from sb3_rssm import DreamerV3
    from sb3_rssm.common.envs import PointMassEnv

    defaults = DreamerV3("MlpPolicy", PointMassEnv(), policy_kwargs=dict(size="size1m"), _init_setup_model=False)
    assert defaults.train_ratio == 512  # one update of 16 x 64 every 2 steps


def test_compiled_imagination_matches_eager_and_compiles_once():
    from torch._dynamo.utils import counters

    from sb3_rssm import DreamerV3
    from sb3_rssm.common.envs import PointMassEnv

    with pytest.warns(UserWarning, match=r"compile_update='imagination': the first update compiles first \(3 to 45 s"):
        model = trained_v3(compile_update="imagination", imagination_horizon=4)
    assert model._imagination_runner._torchdynamo_orig_callable == model._imagination_step
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    _, _, posterior = model.policy.world_model.loss(model.replay_buffer.sample(2))
    start = posterior.detach().flatten()
    th.manual_seed(1)
    features, actions = model.imagine(start)
    generator_after = th.get_rng_state()
    # the same random numbers as eager torch, the same states but for float rounding
    compiled_runner, model._imagination_runner = model._imagination_runner, model._imagination_step
    th.manual_seed(1)
    eager_features, eager_actions = model.imagine(start)
    assert th.equal(th.get_rng_state(), generator_after)
    th.testing.assert_close(features, eager_features, rtol=0, atol=1e-6)
    th.testing.assert_close(actions, eager_actions, rtol=0, atol=1e-6)
    assert features.shape == (8, 5, model.policy.world_model.rssm.feature_size)
    model._imagination_runner = compiled_runner
    # more training, and a loaded model (another instance), run the code already compiled
    model.learn(20, reset_num_timesteps=False)
    loaded = DreamerV3.load(_saved(model), env=PointMassEnv())
    assert loaded.compile_update == "imagination"
    loaded.learn(40)
    assert loaded._n_updates > 0
    assert counters["stats"]["unique_graphs"] == graphs


def _saved(model):
    import io

    buffer = io.BytesIO()
    model.save(buffer)
    buffer.seek(0)
    return buffer


def test_compiled_losses_match_eager_and_compile_once():
    from torch._dynamo.utils import counters

    from sb3_rssm import DreamerV3
    from sb3_rssm.common.envs import PointMassEnv

    with pytest.warns(UserWarning, match=r"compile_update='losses': the first update compiles first \(4 to 6 minutes"):
        model = trained_v3(compile_update="losses")
    assert model._loss_runner._torchdynamo_orig_callable == model._update_loss
    # the imagination step is traced into the losses' graph, not compiled apart
    assert model._imagination_runner == model._imagination_step
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    policy = model.policy
    policy.set_training_mode(True)  # as training runs the update
    batch = model.replay_buffer.sample(2)
    normalizer = {key: value.clone() for key, value in policy.return_normalizer.state_dict().items()}

    def loss_and_gradients(runner):
        policy.return_normalizer.load_state_dict(normalizer)
        policy.zero_grad(set_to_none=True)
        th.manual_seed(1)
        loss, metrics, _ = runner(batch)
        generator = th.get_rng_state()
        loss.backward()
        gradients = {name: p.grad.clone() for name, p in policy.named_parameters() if p.grad is not None}
        return loss.detach(), metrics, generator, gradients, policy.return_normalizer.state_dict()

    compiled = loss_and_gradients(model._loss_runner)
    eager = loss_and_gradients(model._update_loss)
    # the same random numbers as eager torch (the generator ends in the same state), the same losses, metrics,
    # gradients and return-normalizer update but for float rounding
    assert th.equal(compiled[2], eager[2])
    th.testing.assert_close(compiled[0], eager[0], rtol=1e-5, atol=1e-5)
    assert compiled[1].keys() == eager[1].keys()
    for key in eager[1]:
        th.testing.assert_close(compiled[1][key], eager[1][key], rtol=1e-4, atol=1e-5, msg=key)
    assert compiled[3].keys() == eager[3].keys() and any(name.startswith("world_model.rssm") for name in eager[3])
    for name in eager[3]:
        th.testing.assert_close(compiled[3][name], eager[3][name], rtol=1e-4, atol=1e-5, msg=name)
    th.testing.assert_close(compiled[4], eager[4])
    policy.return_normalizer.load_state_dict(normalizer)
    # more training, and a loaded model (another instance), run the code already compiled
    model.learn(20, reset_num_timesteps=False)
    loaded = DreamerV3.load(_saved(model), env=PointMassEnv())
    assert loaded.compile_update == "losses"
    loaded.learn(40)
    assert loaded._n_updates > 0
    assert counters["stats"]["unique_graphs"] == graphs


@pytest.mark.parametrize("mode", ["imagination", "losses"])
@pytest.mark.parametrize("algorithm", ["DreamerV1", "PlaNet"])
def test_compiled_imagination_or_losses_are_refused_where_the_update_differs(algorithm, mode):
    import sb3_rssm
    from sb3_rssm.common.envs import PointMassEnv

    with pytest.raises(ValueError, match=f"compile_update='{mode}' .* which {algorithm} does not have"):
        getattr(sb3_rssm, algorithm)("MlpPolicy", PointMassEnv(), compile_update=mode)


def test_categorical_kl_matches_torch_distributions():
    from torch.distributions import kl_divergence

    from sb3_rssm.common.distributions import unimix_log_probs
    from sb3_rssm.dreamer_v3.categorical_rssm import CategoricalRSSMState

    th.manual_seed(0)

    def state():
        log_probs = unimix_log_probs(3 * th.randn(5, 4, 3, 6), 0.01)
        return CategoricalRSSMState(th.zeros(5, 4, 8), th.zeros(5, 4, 18), log_probs)

    q, p = state(), state()
    kl = q.kl(p)
    assert kl.shape == (5, 4) and th.all(kl > 0)
    th.testing.assert_close(kl, kl_divergence(q.distribution(), p.distribution()))
    th.testing.assert_close(q.kl(q), th.zeros(5, 4), atol=1e-6, rtol=0)
