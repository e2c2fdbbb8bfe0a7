"""
``python -m sb3_rssm.evaluate``: saved models and policies of every agent give evaluate_policy's numbers for the same
seed, the shipped pixel policy evaluates on dm_control, ``--video`` writes an mp4, and wrong files or envs get clear
errors.
"""

import importlib.util
import pathlib
import re
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import set_random_seed

from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.envs import PointMassEnv
from sb3_rssm.evaluate import main
from tests.conftest import ALGORITHMS, tiny_model

REPO = pathlib.Path(__file__).resolve().parents[1]
SHIPPED_POLICY = REPO / "examples" / "checkpoints" / "dreamer_v1_cartpole_swingup_cpu.zip"
LEGACY = REPO / "tests" / "fixtures" / "legacy_6b83356"
ENV_ID = "sb3_rssm_test/PointMass-v0"
SEED = 3
EPISODES = 3


class RenderedPointMass(PointMassEnv):
    """:class:`PointMassEnv` that renders ``rgb_array`` frames (a red bar up to the point), for ``--video``."""

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, render_mode=None, **kwargs):
        super().__init__(**kwargs)
        self.render_mode = render_mode

    def render(self):
        frame = np.zeros((32, 32, 3), np.uint8)
        frame[:, : 1 + int(15 * (self.position + 1.0)), 0] = 255
        return frame


# short episodes; two targets, so that the reset seed decides each episode's return
POINT_MASS = dict(max_steps=5, targets=(-0.5, 0.5))
if ENV_ID not in gym.registry:
    gym.register(ENV_ID, entry_point=RenderedPointMass, kwargs=POINT_MASS)


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """algorithm -> {"model": path of model.save(), "policy": path of model.policy.save()}, tiny models trained 30 steps."""
    th.set_num_threads(1)
    folder = tmp_path_factory.mktemp("saved")
    paths = {}
    for algorithm in ALGORITHMS:
        model = tiny_model(algorithm, "MlpPolicy", PointMassEnv(**POINT_MASS), seed=0)
        model.learn(30)
        name = algorithm.__name__
        paths[algorithm] = {"model": folder / f"{name}.zip", "policy": folder / f"{name}_policy.zip"}
        model.save(paths[algorithm]["model"])
        model.policy.save(paths[algorithm]["policy"])
    return paths


def evaluate_directly(algorithm, path, kind, deterministic, return_episode_rewards):
    """What evaluate_policy gives for the file, on the env made as the command makes it, with the same seed."""
    env = make_vec_env(ENV_ID, n_envs=1, seed=SEED)
    if kind == "model":
        agent = algorithm.load(path, env=env, device="cpu")
        env = agent.get_env()
    else:
        agent = algorithm.policy_aliases["MlpPolicy"].load(path, device="cpu")
    set_random_seed(SEED)
    return evaluate_policy(
        agent, env, n_eval_episodes=EPISODES, deterministic=deterministic, return_episode_rewards=return_episode_rewards
    )


def run(path, *options):
    return main([str(path), "--env", ENV_ID, "--episodes", str(EPISODES), "--seed", str(SEED), "--device", "cpu", *options])


@pytest.mark.parametrize("deterministic", [True, False], ids=["deterministic", "stochastic"])
@pytest.mark.parametrize("kind", ["model", "policy"])
@pytest.mark.parametrize("algorithm", ALGORITHMS, ids=lambda a: a.__name__)
def test_saved_file_gives_the_numbers_of_evaluate_policy(saved, algorithm, kind, deterministic, capsys):
    path = saved[algorithm][kind]
    result = run(path, "--deterministic" if deterministic else "--stochastic")
    rewards, lengths = evaluate_directly(algorithm, path, kind, deterministic, return_episode_rewards=True)
    mean, std = evaluate_directly(algorithm, path, kind, deterministic, return_episode_rewards=False)
    assert result["algorithm"] == algorithm.__name__ and result["kind"] == kind
    assert result["episode_rewards"] == rewards and result["episode_lengths"] == lengths == [5] * EPISODES
    assert (result["mean_reward"], result["std_reward"]) == (mean, std)
    assert result["episodes"] == EPISODES and result["deterministic"] is deterministic and result["video"] is None
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == (
        f"mean_reward={round(mean, 6)} std_reward={round(std, 6)} episodes={EPISODES} deterministic={deterministic}"
    )
    assert lines[-1 - EPISODES : -1] == [f"episode {i + 1}: return={round(r, 6)} length=5" for i, r in enumerate(rewards)]


@pytest.mark.parametrize("algorithm", [DreamerV1, DreamerV3, PlaNet], ids=lambda a: a.__name__)
def test_model_saved_under_the_old_module_paths_is_recognised(algorithm):
    # saved at 6b83356: the policy class is named e.g. sb3_rssm.dreamer.policies_v3 (see sb3_rssm/legacy.py)
    path = LEGACY / f"{algorithm.__name__}_box.zip"
    result = run(path)
    assert result["algorithm"] == algorithm.__name__ and result["kind"] == "model"
    assert result["episode_rewards"] == evaluate_directly(algorithm, path, "model", True, return_episode_rewards=True)[0]


def test_shipped_pixel_policy_evaluates_on_dm_control():
    pytest.importorskip("dm_control")
    pytest.importorskip("shimmy")
    env_id = "sb3_rssm/dmc-cartpole-swingup-pixels-v0"
    # channel-last 64x64x3 frames for a policy saved with channel-first (3, 64, 64): transposed as the algorithm does
    result = main([str(SHIPPED_POLICY), "--env", env_id, "--episodes", "1", "--seed", "1000", "--device", "cpu"])
    assert result["algorithm"] == "DreamerV1" and result["kind"] == "policy"
    assert result["episode_lengths"] == [125]
    # the agent scored about 250 over 10 episodes (examples/quickstart_pixels.py); random actions get about 120
    assert result["mean_reward"] > 180


def test_video_is_written(saved, tmp_path, capsys):
    if importlib.util.find_spec("moviepy") is None:
        pytest.skip("--video needs moviepy (pip install moviepy), which is not installed")
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError) as error:
        pytest.skip(f"--video needs ffmpeg (moviepy finds it through imageio-ffmpeg): {error}")
    folder = tmp_path / "videos"
    result = main([str(saved[DreamerV1]["model"]), "--env", ENV_ID, "--episodes", "1", "--video", str(folder)])
    video = pathlib.Path(result["video"])
    assert video.parent == folder and video.suffix == ".mp4" and video.stat().st_size > 0
    assert [path.name for path in folder.iterdir()] == [video.name]
    assert f"video: {video}" in capsys.readouterr().out


@pytest.mark.filterwarnings("ignore:.*render_mode='rgb_array' that is not in the possible render_modes")
def test_video_needs_an_env_that_renders(saved, tmp_path):
    gym.register("sb3_rssm_test/PointMassNoRender-v0", entry_point=PointMassEnv, kwargs=POINT_MASS)
    try:
        with pytest.raises(ValueError, match="--video needs an env that renders frames"):
            main([str(saved[DreamerV1]["model"]), "--env", "sb3_rssm_test/PointMassNoRender-v0", "--video", str(tmp_path)])
    finally:
        gym.registry.pop("sb3_rssm_test/PointMassNoRender-v0")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"there is no file .*nothing\.zip.*also tried: .*nothing\.zip\.zip"):
        main([str(tmp_path / "nothing.zip"), "--env", ENV_ID])


def test_file_that_is_not_a_zip(tmp_path):
    path = tmp_path / "model.zip"
    path.write_text("not a model")
    with pytest.raises(ValueError, match=r"is not a readable zip file.*Accepted: a model saved by model\.save\(\)"):
        main([str(path), "--env", ENV_ID])


def test_zip_that_is_neither_a_model_nor_a_policy(tmp_path):
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("cat.txt", "meow")
    with pytest.raises(ValueError, match=r"neither a model saved by model\.save\(\).*'cat\.txt'.*Accepted"):
        main([str(path), "--env", ENV_ID])


def test_model_of_another_algorithm(tmp_path):
    path = tmp_path / "ppo.zip"
    PPO("MlpPolicy", PointMassEnv(**POINT_MASS), n_steps=8, batch_size=8).save(path)
    with pytest.raises(ValueError, match=r"stable_baselines3\.common\.policies\.ActorCriticPolicy, not a policy of DreamerV1"):
        main([str(path), "--env", ENV_ID])


def test_env_with_other_spaces_names_both(saved):
    with pytest.raises(ValueError) as error:
        main([str(saved[DreamerV1]["model"]), "--env", "Pendulum-v1"])
    message = str(error.value)
    assert "'Pendulum-v1' does not fit the DreamerV1 model (MlpPolicy)" in message
    assert re.search(r"observation space Box\(.*\(3,\), float32\) vs saved Box\(-2\.0, 2\.0, \(2,\), float32\)", message)
    # a Discrete policy on a Box env: the action spaces
    with pytest.raises(ValueError, match=r"action space Box\(-1\.0, 1\.0, \(1,\), float32\) vs saved Discrete\(3\)"):
        main([str(LEGACY / "PlaNet_discrete.zip"), "--env", ENV_ID])
    # the shipped pixel policy on a vector env: refused before its networks are built
    shipped = r"DreamerV1 policy \(CnnPolicy\).*observation space .* vs saved Box\(0, 255, \(3, 64, 64\)"
    with pytest.raises(ValueError, match=shipped):
        main([str(SHIPPED_POLICY), "--env", ENV_ID])


def test_episodes_must_be_positive(saved):
    with pytest.raises(SystemExit):
        main([str(saved[DreamerV1]["model"]), "--env", ENV_ID, "--episodes", "0"])
