"""CUDA end to end: training, acting, bf16 and fp16, save/load and resume on a GPU (skipped without one)."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.envs import FakeImageEnv
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rssm.common.envs import PointMassEnv
from tests.conftest import ALGORITHMS, tiny_model

pytestmark = [
    pytest.mark.skipif(not th.cuda.is_available(), reason="needs a CUDA GPU"),
    pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.__name__),
]


def test_learn_predict_save_load_on_cuda(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0, device="cuda")
    model.learn(60)
    assert model._n_updates > 0
    assert all(p.is_cuda for p in model.policy.parameters())
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=1)
    assert np.isfinite(mean)
    model.save(tmp_path / "model.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    on_cpu = algorithm.load(tmp_path / "model.zip", device="cpu")
    assert all(not p.is_cuda for p in on_cpu.policy.parameters())
    resumed = algorithm.load(tmp_path / "model.zip", env=PointMassEnv(), device="cuda")
    resumed.load_replay_buffer(tmp_path / "buffer.pkl")
    resumed.learn(20, reset_num_timesteps=False)
    assert resumed.num_timesteps == 80


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_pixels_and_mixed_precision_on_cuda(algorithm, precision):
    env = FakeImageEnv(screen_height=64, screen_width=64, n_channels=3)
    model = tiny_model(algorithm, "CnnPolicy", env, seed=0, device="cuda", mixed_precision=precision)
    model.learn(40)
    assert model._n_updates > 0
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    action, state = model.predict(env.observation_space.sample(), deterministic=True)
    assert env.action_space.contains(action) and all(isinstance(x, np.ndarray) for x in state)


def test_images_of_other_sizes_are_resized_on_the_gpu(algorithm):
    env = FakeImageEnv(screen_height=84, screen_width=84, n_channels=3, discrete=False)
    model = tiny_model(algorithm, "CnnPolicy", env, seed=0, device="cuda")
    assert model.get_env().device.type == "cuda"  # the VecResizeImage the algorithm added
    model.learn(30)
    assert model.replay_buffer.observations.shape[2:] == (3, 64, 64)
    action, _ = model.predict(env.observation_space.sample(), episode_start=np.ones(1, bool), deterministic=True)
    assert action.shape == env.action_space.shape


def test_captured_update_learns_and_skips_non_finite_updates(algorithm):
    from sb3_rssm.common.update import NonFiniteUpdateError

    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0, device="cuda", compile_update="cuda_graph")
    model.learn(120)  # three eager warm-up updates, then the captured graph replayed
    assert model._update_runner.graph is not None
    assert all(th.isfinite(p).all() for p in model.policy.parameters())
    before = [p.detach().clone() for p in model.policy.world_model.parameters()]
    model.replay_buffer.rewards[:] = np.nan
    model.max_nonfinite_updates = model.update.max_nonfinite_updates = 3
    model.train(gradient_steps=2, batch_size=2)
    assert model.logger.name_to_value["train/skipped_updates"] == 2
    assert all(th.equal(a, b) for a, b in zip(before, model.policy.world_model.parameters()))
    with pytest.raises(NonFiniteUpdateError, match="world model loss"):
        model.train(gradient_steps=2, batch_size=2)


def test_set_parameters_after_a_capture_trains_the_loaded_state(algorithm, tmp_path):
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0, device="cuda", compile_update="cuda_graph")
    model.learn(120)
    assert model._update_runner.graph is not None
    model.save(tmp_path / "model.zip")
    model.set_parameters(str(tmp_path / "model.zip"))
    assert model._update_runner.graph is None  # a new update over the loaded optimizer tensors: captured afresh
    loaded = {k: v.clone() for k, v in model.policy.world_model_optimizer.state_dict()["state"][0].items()}
    model.learn(120, reset_num_timesteps=False)
    assert model._update_runner.graph is not None
    after = model.policy.world_model_optimizer.state_dict()["state"][0]
    assert any(not th.equal(loaded[key], after[key]) for key in loaded)


def test_compiled_losses_on_cuda(algorithm):
    if not algorithm.has_single_loss:
        pytest.skip("compile_update='losses' is DreamerV3's")
    model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(), seed=0, device="cuda", compile_update="losses")
    model.learn(60)
    assert model._n_updates > 0 and all(th.isfinite(p).all() for p in model.policy.parameters())
