"""
No host synchronisation inside an update or an acting step, for every agent, action kind and ``compile_update``
that runs on a CPU: what would stall the GPU on every update (or fail a CUDA-graph capture) fails here, on the CPU,
with the line that caused it (:mod:`tests.host_sync`).
"""

import pathlib

import numpy as np
import pytest
import torch as th

from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.envs import PointMassEnv
from tests.conftest import tiny_model
from tests.host_sync import Allowed, HostSyncGuard

#: the replay buffer lives on the host: each batch is copied to the device once, before the update (a captured graph
#: copies it into its static inputs, outside the graph)
BATCH_FROM_THE_HOST = Allowed(
    th.ops.aten.lift_fresh.default,
    lambda stack: any(line.endswith("buffers.py:_to_device") for line in stack),
    "a sampled batch comes from the host-side replay buffer",
)

# (algorithm, compile_update): "cuda_graph" is checked through the function it captures, with the static gradients
# the capture keeps (the capture itself needs a GPU); "reduce-overhead" is refused on a CPU
CASES = [
    (DreamerV1, None),
    (DreamerV1, "cuda_graph"),
    (PlaNet, None),
    (PlaNet, "cuda_graph"),
    (DreamerV3, None),
    (DreamerV3, "cuda_graph"),
    (DreamerV3, "imagination"),
    (DreamerV3, "losses"),
]


def trained(algorithm, discrete, compile_update=None):
    """A tiny model after a few updates (lazily built optimizer state exists, as after a capture's warm-up)."""
    on_cpu = None if compile_update == "cuda_graph" else compile_update
    model = tiny_model(
        algorithm, "MlpPolicy", PointMassEnv(discrete=discrete), seed=0, compile_update=on_cpu, log_prediction_interval=0
    )
    model.learn(40)
    assert model._n_updates > 0
    if compile_update == "cuda_graph":
        model.update.static_gradients = True
    return model


@pytest.mark.parametrize("discrete", [False, True], ids=["box", "discrete"])
@pytest.mark.parametrize(("algorithm", "compile_update"), CASES, ids=lambda x: getattr(x, "__name__", str(x)))
def test_an_update_never_waits_for_the_device(algorithm, compile_update, discrete):
    model = trained(algorithm, discrete, compile_update)
    batch = model.replay_buffer.sample(model.batch_size)
    model.policy.set_training_mode(True)
    with HostSyncGuard() as guard:
        model._update_runner(batch)
    assert not guard.syncs, f"host synchronisations in one update:\n{guard.report()}"


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "stochastic"])
@pytest.mark.parametrize("discrete", [False, True], ids=["box", "discrete"])
@pytest.mark.parametrize("algorithm", [DreamerV1, PlaNet, DreamerV3], ids=lambda a: a.__name__)
def test_an_acting_step_never_waits_for_the_device(algorithm, discrete, deterministic):
    model = trained(algorithm, discrete)
    policy = model.policy
    observation, _ = policy.obs_to_tensor(np.zeros((2, 2), np.float32))
    state = policy.initial_state(2)
    starts = th.tensor([1.0, 0.0])
    with HostSyncGuard() as guard:
        for episode_start in (starts, None):
            with th.no_grad():
                _, state = policy.step(observation, state, episode_start, deterministic)
    assert not guard.syncs, f"host synchronisations in an acting step:\n{guard.report()}"


@pytest.mark.parametrize("algorithm", [DreamerV1, PlaNet, DreamerV3], ids=lambda a: a.__name__)
def test_a_training_phase_reads_the_device_once(algorithm):
    """A phase of several updates reads its metrics and counters in one go, at its end (GradientUpdate.read)."""
    model = trained(algorithm, discrete=False)
    with HostSyncGuard([BATCH_FROM_THE_HOST]) as guard:
        model.train(gradient_steps=3, batch_size=model.batch_size)
    # the counters, the metric sums and their counts: three reads per phase, whatever its number of updates
    assert [sync.op for sync in guard.syncs] == ["tolist"] * 3, guard.report()
    assert all("common/update.py" in sync.where and "(read:" in sync.where for sync in guard.syncs), guard.report()


@pytest.mark.parametrize("name", ["DreamerV1_box", "PlaNet_box", "DreamerV3_box", "DreamerV3_discrete"])
def test_the_sync_free_update_learns_as_before(name):
    """
    The same 60 steps and 4 updates at seed 0 as the checkpoints saved at 6b83356 (tests/fixtures), before the
    updates were made free of host synchronisation: the parameters agree to 1e-6 (Adam is now fused: rounding).
    DreamerV1's and PlaNet's Discrete agents sample actions by inverse CDF now (torch's multinomial syncs), so
    their runs draw other actions and are not compared.
    """
    algorithm = {"DreamerV1": DreamerV1, "PlaNet": PlaNet, "DreamerV3": DreamerV3}[name.split("_")[0]]
    saved = algorithm.load(pathlib.Path(__file__).parent / "fixtures" / "legacy_6b83356" / f"{name}.zip", device="cpu")
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(discrete=name.endswith("discrete")), seed=0)
    model.learn(60)
    assert model._n_updates == saved._n_updates == 4
    for (key, ours), theirs in zip(model.policy.state_dict().items(), saved.policy.state_dict().values()):
        th.testing.assert_close(ours, theirs, rtol=0, atol=1e-6, msg=key)
