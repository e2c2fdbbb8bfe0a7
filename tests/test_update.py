"""
The update machinery (sb3_rssm/common/update.py): the same numbers as the update written out in plain PyTorch,
non-finite updates skipped exactly (parameters and optimizer state untouched, counters, the error after a run of
them), and no host synchronisation or data-dependent Python inside an update.
"""

import copy
import warnings

import numpy as np
import pytest
import torch as th

from sb3_rssm import DreamerV1, PlaNet
from sb3_rssm.common.envs import PointMassEnv
from sb3_rssm.common.networks import unit_gaussian_log_prob
from sb3_rssm.common.update import GradientUpdate, NonFiniteUpdateError, OptimizerGroup, make_capturable, set_learning_rate
from tests.conftest import tiny_model


def trained_dreamer(**kwargs):
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), seed=0, learning_rate=1e-2, **kwargs)
    model.learn(40)
    return model


def snapshot(model):
    policy = model.policy
    return copy.deepcopy((policy.state_dict(), [getattr(policy, name).state_dict() for name in policy.optimizer_names]))


def restore(model, saved):
    policy = model.policy
    policy.load_state_dict(saved[0])
    for name, state in zip(policy.optimizer_names, saved[1]):
        getattr(policy, name).load_state_dict(state)


def plain_dreamer_update(model, batch):
    """DreamerV1's update in plain PyTorch: three losses, each backward pass and clip, then the three steps."""
    policy, clip = model.policy, model.max_grad_norm
    optimizers = [policy.world_model_optimizer, policy.actor_optimizer, policy.value_optimizer]
    for optimizer in optimizers:
        optimizer.zero_grad(set_to_none=True)
    loss, _, posterior = policy.world_model.loss(batch)
    loss.backward()
    th.nn.utils.clip_grad_norm_(policy.world_model.parameters(), clip)
    frozen = [p for m in (policy.world_model, policy.value) for p in m.parameters()]
    for p in frozen:
        p.requires_grad_(False)
    features, returns, weights, _ = model.imagine(posterior.detach().flatten())
    (-(weights * returns).mean()).backward()
    for p in frozen:
        p.requires_grad_(True)
    th.nn.utils.clip_grad_norm_(policy.actor.parameters(), clip)
    prediction = policy.predict_value(features[:, :-1].detach())
    (-(weights * unit_gaussian_log_prob(prediction, returns.detach())).mean()).backward()
    th.nn.utils.clip_grad_norm_(policy.value.parameters(), clip)
    for optimizer in optimizers:
        optimizer.step()


def test_update_matches_plain_pytorch():
    model = trained_dreamer()
    batches = [model.replay_buffer.sample(2) for _ in range(3)]
    start = snapshot(model)
    model.policy.set_training_mode(True)
    for i, batch in enumerate(batches):
        th.manual_seed(i)
        model._update_once(batch)
    ours = [p.detach().clone() for p in model.policy.parameters()]
    restore(model, start)
    for i, batch in enumerate(batches):
        th.manual_seed(i)
        plain_dreamer_update(model, batch)
    for a, b in zip(ours, model.policy.parameters()):
        th.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not all(th.equal(a, b) for a, b in zip(ours, start[0].values()))


def linear_groups(n=2):
    th.manual_seed(0)
    layers = [th.nn.Linear(3, 1) for _ in range(n)]
    groups = [
        OptimizerGroup(f"g{i}", f"group {i}", th.optim.Adam(layer.parameters(), lr=0.1), list(layer.parameters()))
        for i, layer in enumerate(layers)
    ]
    return layers, groups


def run_update(update, layers, finite):
    """One update where layer i's loss is finite or NaN as ``finite[i]`` says."""
    x = th.ones(4, 3)
    for i, layer in enumerate(layers):
        loss = layer(x).square().mean()
        update.backward(loss if finite[i] else loss * float("nan"), f"g{i}")
    update.step()


def test_a_skipped_first_step_leaves_the_optimizer_as_new():
    layers, groups = linear_groups(1)
    update = GradientUpdate(groups, max_grad_norm=100.0, max_nonfinite_updates=5)
    reference = copy.deepcopy(layers[0])
    reference_update = GradientUpdate(
        [OptimizerGroup("g0", "group 0", th.optim.Adam(reference.parameters(), lr=0.1), list(reference.parameters()))],
        100.0,
        5,
    )
    run_update(update, layers, [False])  # skipped: the very first step of Adam undone to its initial state
    assert all(th.equal(a, b) for a, b in zip(layers[0].parameters(), reference.parameters()))
    run_update(update, layers, [True])
    run_update(reference_update, [reference], [True])
    for a, b in zip(layers[0].parameters(), reference.parameters()):
        assert th.equal(a, b)
    report = update.read(first_update=0, num_timesteps=0)
    assert (report.skipped, report.updates, report.nonfinite_in_a_row, report.error) == (1, 2, 0, None)


def test_only_the_non_finite_group_is_skipped_and_counted():
    layers, groups = linear_groups(2)
    update = GradientUpdate(groups, max_grad_norm=100.0, max_nonfinite_updates=3)
    before = [[p.detach().clone() for p in layer.parameters()] for layer in layers]
    run_update(update, layers, [False, True])
    assert all(th.equal(a, b) for a, b in zip(before[0], layers[0].parameters()))
    assert not any(th.equal(a, b) for a, b in zip(before[1], layers[1].parameters()))
    report = update.read(first_update=7, num_timesteps=70)
    assert report.skipped == 1 and report.nonfinite_in_a_row == 1
    # gradient norms are averaged over the updates that stepped the group
    assert "g1_grad_norm" in report.metrics and "g0_grad_norm" not in report.metrics


def test_a_run_of_non_finite_updates_across_phases_raises_naming_its_first():
    layers, groups = linear_groups(2)
    update = GradientUpdate(groups, max_grad_norm=100.0, max_nonfinite_updates=3)
    run_update(update, layers, [True, True])
    run_update(update, layers, [True, False])  # update 1: the run starts (group 1's loss)
    report = update.read(first_update=0, num_timesteps=10)
    assert (report.updates, report.skipped, report.nonfinite_in_a_row, report.error) == (2, 1, 1, None)
    run_update(update, layers, [False, True])  # update 2
    run_update(update, layers, [False, False])  # update 3: the third in a row, the limit
    at_limit = [p.detach().clone() for layer in layers for p in layer.parameters()]
    run_update(update, layers, [True, True])  # after the limit: not applied
    report = update.read(first_update=2, num_timesteps=20)
    assert report.updates == 2 and report.skipped == 2
    assert report.error is not None and "group 1 loss at update 1 (num_timesteps=20)" in report.error
    assert all(th.equal(a, b) for a, b in zip(at_limit, (p for layer in layers for p in layer.parameters())))


@pytest.mark.parametrize("algorithm", [DreamerV1, PlaNet], ids=lambda a: a.__name__)
def test_non_finite_updates_raise_at_the_end_of_the_phase_with_the_counters_of_the_limit(algorithm):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), max_nonfinite_updates=3, seed=0)
    model.learn(30)
    n_updates = model._n_updates
    model.replay_buffer.rewards[:] = np.nan
    with pytest.raises(NonFiniteUpdateError, match=f"world model loss at update {n_updates} "):
        model.train(gradient_steps=5, batch_size=2)
    assert model._n_updates == n_updates + 3 and model._nonfinite_in_a_row == 3


def test_cuda_graph_capture_needs_a_gpu_and_names_the_options():
    with pytest.raises(ValueError, match="needs device='cuda'"):
        tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), compile_update="cuda_graph", device="cpu")
    with pytest.raises(ValueError, match=r"reduce-overhead.*needs device='cuda'"):
        tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), compile_update="reduce-overhead", device="cpu")
    with pytest.raises(ValueError, match="'cuda_graph'"):
        tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), compile_update="graph")


def test_learning_rates_as_tensors_change_in_place():
    layer = th.nn.Linear(2, 1)
    optimizer = th.optim.Adam(layer.parameters(), lr=0.1)
    set_learning_rate(optimizer, 0.05)
    assert optimizer.param_groups[0]["lr"] == 0.05
    if th.cuda.is_available():
        make_capturable(optimizer)
    else:  # capturable Adam refuses CPU parameters when it steps; the flags and the tensor learning rate are the point
        optimizer.param_groups[0]["lr"] = th.tensor(0.05)
    lr = optimizer.param_groups[0]["lr"]
    set_learning_rate(optimizer, 0.01)
    assert optimizer.param_groups[0]["lr"] is lr and float(lr) == pytest.approx(0.01)
    with pytest.raises(ValueError, match="no capturable mode"):
        make_capturable(th.optim.SGD(layer.parameters(), lr=0.1))


@pytest.fixture
def trace_backward():
    """Let torch.compile trace backward passes into its graph (``trace_autograd_ops``), and forget compiled code after."""
    import torch._dynamo

    with torch._dynamo.config.patch(trace_autograd_ops=True):
        yield
    torch._dynamo.reset()


def test_the_gated_optimizer_steps_compile_as_one_graph(trace_backward):
    # (torch.compile cannot yet put an optimizer step after a traced backward pass in the same graph: two graphs; and
    # in torch 2.13 compiling this after a traced backward pass in the same process fails inside dynamo, so it runs first)
    from sb3_rssm.common.update import use_fused

    models = [trained_dreamer(), trained_dreamer()]  # the same seed: the same parameters, optimizer state and data
    for model in models:  # as compile_update="reduce-overhead" prepares them: torch.compile cannot trace a fused step
        for group in model.policy.optimizer_groups():
            use_fused(group.optimizer, enable=False)
    batch = models[0].replay_buffer.sample(2)
    for model, compiled in zip(models, (False, True)):
        model.policy.set_training_mode(True)
        th.manual_seed(4)
        metrics = model._train_step(batch)
        finish = th.compile(model.update.finish, fullgraph=True, backend="aot_eager") if compiled else model.update.finish
        finish(metrics)
    for a, b in zip(models[0].policy.parameters(), models[1].policy.parameters()):
        th.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    assert not all(th.equal(a, b) for a, b in zip(models[1].policy.parameters(), trained_dreamer().policy.parameters()))
    report = models[1].update.read(0, 0)
    assert report.updates == 1 and report.skipped == 0


def test_the_losses_and_backward_passes_compile_as_one_graph(trace_backward):
    # fullgraph=True fails on any graph break: a host synchronisation or Python branching on a tensor's value
    model = trained_dreamer()
    batch = model.replay_buffer.sample(2)
    model.policy.set_training_mode(True)
    th.manual_seed(3)
    model._train_step(batch)
    eager = [p.grad.clone() for p in model.policy.parameters()]
    th.manual_seed(3)
    th.compile(model._train_step, fullgraph=True, backend="aot_eager")(batch)
    for a, p in zip(eager, model.policy.parameters()):
        th.testing.assert_close(a, p.grad, rtol=1e-5, atol=1e-6)


def test_a_model_saved_with_capturable_optimizers_loads_to_train_eagerly(tmp_path):
    # what a model trained with compile_update="cuda_graph" saves: capturable flags and tensor learning rates
    model = trained_dreamer()
    for group in model.policy.optimizer_groups():
        for param_group in group.optimizer.param_groups:
            param_group["capturable"], param_group["lr"] = True, th.tensor(param_group["lr"])
    model.save(tmp_path / "model.zip")
    loaded = DreamerV1.load(tmp_path / "model.zip", env=PointMassEnv())
    for group in loaded.policy.optimizer_groups():
        assert all(not g["capturable"] and isinstance(g["lr"], float) for g in group.optimizer.param_groups)
    loaded.learn(20, reset_num_timesteps=False)
    assert loaded._n_updates > model._n_updates


def gated_pair(optimizer_class, **kwargs):
    """Two identical layers with the same optimizer: one stepped through GradientUpdate's gate, one directly."""
    layers = [th.nn.Linear(3, 2), None]
    layers[1] = copy.deepcopy(layers[0])
    optimizers = [optimizer_class(layer.parameters(), **kwargs) for layer in layers]
    return layers, optimizers


@pytest.mark.parametrize("optimizer", ["adam_fused", "laprop"])
def test_the_found_inf_gate_skips_exactly_and_steps_exactly(optimizer):
    """An optimizer that takes AMP's found_inf: a gated-off step changes nothing, a gated-on one equals a plain step."""
    from sb3_rssm.common.update import takes_found_inf, use_fused
    from sb3_rssm.dreamer_v3.optimizers import LaProp

    optimizer_class, kwargs = (th.optim.Adam, dict(lr=0.1)) if optimizer == "adam_fused" else (LaProp, dict(lr=0.1, warmup=3))
    layers, optimizers = gated_pair(optimizer_class, **kwargs)
    for opt in optimizers:
        use_fused(opt)
        assert takes_found_inf(opt)
    update = GradientUpdate([OptimizerGroup("g", "group", optimizers[0], list(layers[0].parameters()))], 100.0, 10)
    x = th.randn(5, 3)

    def state(layer, opt):
        tensors = [p.detach().clone() for p in layer.parameters()]
        return tensors + [t.clone() for p in layer.parameters() for t in opt.state.get(p, {}).values() if th.is_tensor(t)]

    for finite in (False, True, True, False, True):
        before = state(layers[0], optimizers[0])
        loss = layers[0](x).pow(2).sum() * (1.0 if finite else float("nan"))
        update.backward(loss, "g")
        update.step()
        if not finite:  # skipped: parameters, moments and step counts as they were (new state: as new, all zeros)
            after = state(layers[0], optimizers[0])
            assert all(th.equal(a, b) for a, b in zip(before, after))
            assert all(not t.any() for t in after[len(before) :])
            continue
        optimizers[1].zero_grad()
        layers[1](x).pow(2).sum().backward()
        th.nn.utils.clip_grad_norm_(layers[1].parameters(), 100.0, foreach=True)
        optimizers[1].step()
        for a, b in zip(state(layers[0], optimizers[0]), state(layers[1], optimizers[1])):
            assert th.equal(a, b)
    assert update.read(0, 0).skipped == 2


class FakeGraph:
    """A stand-in for torch.cuda.CUDAGraph: "capturing" runs the function once and records it; replay runs it again."""

    def __init__(self):
        self.function = None

    def replay(self):
        self.function()


def test_a_setting_changed_after_the_capture_is_captured_again(monkeypatch):
    import contextlib

    from sb3_rssm.common.type_aliases import SequenceSamples
    from sb3_rssm.common.update import CapturedUpdate

    calls, settings = [], {"gamma": 0.99}
    monkeypatch.setattr(th.cuda, "Stream", lambda: type("S", (), {"wait_stream": lambda self, other: None})())
    monkeypatch.setattr(th.cuda, "current_stream", lambda: type("S", (), {"wait_stream": lambda self, other: None})())
    monkeypatch.setattr(th.cuda, "stream", lambda stream: contextlib.nullcontext())
    monkeypatch.setattr(th.cuda, "CUDAGraph", FakeGraph)

    @contextlib.contextmanager
    def graph(fake):
        fake.function = lambda: calls.append(("replay", settings["gamma"]))
        yield

    monkeypatch.setattr(th.cuda, "graph", graph)
    runner = CapturedUpdate(
        lambda batch: calls.append(("eager", settings["gamma"])), warmup=2, settings=lambda: dict(settings)
    )
    batch = SequenceSamples(*(th.zeros(2, 3) for _ in range(6)))
    for _ in range(4):
        runner(batch)
    assert runner.captures == 1 and not runner.check_settings()
    settings["gamma"] = 0.9  # what the captured graph holds as a constant
    assert runner.check_settings() and runner.graph is None
    runner(batch)
    assert runner.captures == 2 and calls[-1] == ("replay", 0.9)


def test_the_captured_settings_name_what_the_update_reads():
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), seed=0)
    settings = model._captured_settings()
    for change in (
        lambda m: setattr(m, "gamma", 0.9),
        lambda m: setattr(m, "max_nonfinite_updates", 2),
        lambda m: setattr(m.policy.world_model, "free_bits", 1.0),
        lambda m: m.policy.world_model_optimizer.param_groups[0].update(eps=1e-3),
    ):
        changed = copy.deepcopy(model)
        change(changed)
        assert changed._captured_settings() != settings


def test_set_parameters_rebuilds_the_update_over_the_loaded_optimizer_state():
    model = tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), seed=0)
    model.learn(30)
    update = model.update
    model.set_parameters(model.get_parameters())
    assert model.update is not update and model.update.groups["model"].optimizer is model.policy.world_model_optimizer


def test_bf16_on_a_cpu_without_bfloat16_instructions_warns(tmp_path, monkeypatch):
    from sb3_rssm.common import update_wiring

    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse4_2 avx avx2 fma\n\nprocessor\t: 1\n")
    assert update_wiring.cpu_has_bf16(str(cpuinfo)) is False
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16\n")
    assert update_wiring.cpu_has_bf16(str(cpuinfo)) is True
    assert update_wiring.cpu_has_bf16(str(tmp_path / "absent")) is None
    monkeypatch.setattr(update_wiring, "cpu_has_bf16", lambda: False)
    with pytest.warns(UserWarning, match="without bfloat16 instructions .* Pass mixed_precision=None"):
        tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), mixed_precision="bf16")
    for has_bf16, precision in ((True, "bf16"), (None, "bf16"), (False, None)):
        monkeypatch.setattr(update_wiring, "cpu_has_bf16", lambda has_bf16=has_bf16: has_bf16)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tiny_model(DreamerV1, "MlpPolicy", PointMassEnv(), mixed_precision=precision)
        assert not [w for w in caught if "bfloat16 instructions" in str(w.message)], (has_bf16, precision)
