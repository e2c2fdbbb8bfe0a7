"""examples/benchmark.py end to end on a tiny budget: it writes results.json, table.md and a learning-curve PNG."""

import json
import os
import runpy
import sys

import numpy as np
import pytest
from stable_baselines3.common import evaluation
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_rssm.common.dmc import dmc_env_id

pytest.importorskip("matplotlib")

SCRIPT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "benchmark.py")


def _run(argv):
    saved = sys.argv
    sys.argv = [SCRIPT, *argv]
    try:
        runpy.run_path(SCRIPT, run_name="__main__")
    finally:
        sys.argv = saved


def test_benchmark_writes_table_and_curves(tmp_path):
    out = str(tmp_path / "bench")
    pixels = dmc_env_id("cartpole-swingup")
    budget = "--eval-episodes 1 --threads 1 --tiny".split()
    _run(
        [
            *"--algos dreamer_v1 planet --envs Pendulum-v1 --seeds 0 1 --timesteps 40 --eval-freq 20".split(),
            *budget,
            "--out",
            out,
        ]
    )
    _run(
        [
            *f"--algos dreamer_v1 --envs {pixels} --seeds 0 --timesteps 20 --eval-freq 20 --sampled-eval".split(),
            *budget,
            "--out",
            out + "_pixels",
        ]
    )

    results = json.load(open(os.path.join(out, "results.json")))
    assert sorted((r["algo"], r["seed"]) for r in results) == [(a, seed) for a in ("dreamer_v1", "planet") for seed in (0, 1)]
    assert all(r["timesteps"] == 40 and r["curve_steps"] == [20, 40] for r in results)
    table = open(os.path.join(out, "table.md")).read()
    assert "\n1. `python examples/benchmark.py --algos dreamer_v1 planet --envs Pendulum-v1" in table
    assert "| DreamerV1 | Pendulum-v1 | 40 | 0, 1 | " in table and "| PlaNet | Pendulum-v1 | 40 | 0, 1 | " in table
    # each run records where and when it ran, for the docs' generated tables
    assert all(r["machine"] and len(r["date"]) == len("2026-12-05") for r in results)
    with open(os.path.join(out, "curve_Pendulum-v1.png"), "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"

    # a dm_control pixel id: the zoo YAML's CnnPolicy settings (shrunk by --tiny), frames noted under the table
    table = open(os.path.join(out + "_pixels", "table.md")).read()
    assert f"| DreamerV1 | {pixels} | 20 (160 frames) | 0 | " in table and f"({pixels}: 8)" in table
    # --sampled-eval: the sampled-action evaluation beside the deterministic one, each time, and its column
    (run,) = json.load(open(os.path.join(out + "_pixels", "results.json")))
    assert len(run["curve_returns_sampled"]) == len(run["curve_returns"]) == 1
    assert f"| {run['final_return_sampled']:.1f} |" in table and "sampled actions per seed (median)" in table
    assert "--sampled-eval" in run["command"]
    assert "sampled" not in open(os.path.join(out, "table.md")).read()  # runs without it: the table as before
    assert os.path.isfile(os.path.join(out + "_pixels", f"curve_{pixels.replace('/', '-')}.png"))
    # each world model's policy, as examples/quickstart_pixels.py loads the shipped one
    assert os.path.isfile(os.path.join(out + "_pixels", f"dreamer_v1_{pixels.replace('/', '-')}_0", "policy.zip"))


def test_shipped_pixel_checkpoint_loads_and_acts():
    # examples/quickstart_pixels.py evaluates this file: it must keep loading as the code changes
    from sb3_rssm.dreamer_v1.policies import CnnPolicy

    path = os.path.join(os.path.dirname(SCRIPT), "checkpoints", "dreamer_v1_cartpole_swingup_cpu.zip")
    policy = CnnPolicy.load(path, device="cpu")
    assert policy.observation_space.shape == (3, 64, 64) and policy.action_space.shape == (1,)
    frames = np.zeros((2, 3, 64, 64), dtype=np.uint8)
    actions, state = policy.predict(frames, state=None, episode_start=np.ones(2, dtype=bool), deterministic=True)
    assert actions.shape == (2, 1) and np.all(np.abs(actions) <= 1) and len(state) == 3


def test_benchmark_runs_sb3_baselines_on_cartpole(tmp_path, monkeypatch):
    # DQN and PPO with rl-zoo3's CartPole-v1 settings (shrunk by --tiny); PPO's env steps count all of its envs
    # the script's own evaluations of each agent after training, episode by episode (EvalCallback keeps its own
    # reference to evaluate_policy: its evaluations during training are not recorded here)
    final_evaluations = {}

    def recording_evaluate_policy(model, env, n_eval_episodes=10, **kwargs):
        rewards, lengths = evaluate_policy(model, env, n_eval_episodes=n_eval_episodes, return_episode_rewards=True, **kwargs)
        final_evaluations[type(model).__name__] = (rewards, lengths)
        return float(np.mean(rewards)), float(np.std(rewards))

    monkeypatch.setattr(evaluation, "evaluate_policy", recording_evaluate_policy)
    out = str(tmp_path / "cartpole")
    argv = "--algos dqn ppo random --envs CartPole-v1 --seeds 0 --timesteps 64 --eval-freq 32 --eval-episodes 1"
    _run([*argv.split(), "--threads", "1", "--tiny", "--out", out])
    results = {r["algo"]: r for r in json.load(open(os.path.join(out, "results.json")))}
    assert set(results) == {"dqn", "ppo", "random"}
    assert results["dqn"]["curve_steps"] == [32, 64] and results["ppo"]["curve_steps"][-1] == 64
    # each final return is the return of the one (--eval-episodes 1) evaluation episode of that agent after training,
    # a CartPole return (+1 per step: the episode's length)
    for algo, agent in (("dqn", "DQN"), ("ppo", "PPO"), ("random", "RandomAgent")):
        rewards, lengths = final_evaluations[agent]
        assert len(rewards) == 1 and rewards == [float(length) for length in lengths], (agent, rewards, lengths)
        assert results[algo]["final_return"] == rewards[0], (algo, results[algo]["final_return"], rewards)
    table = open(os.path.join(out, "table.md")).read()
    # DQN collects in rollouts of train_freq steps, so it may stop a little after 64
    assert f"| SB3 DQN | CartPole-v1 | {results['dqn']['timesteps']} | 0 | " in table
    assert "| SB3 PPO | CartPole-v1 | 64 | 0 | " in table


def test_benchmark_names_a_missing_baseline_setting():
    namespace = runpy.run_path(SCRIPT)
    with pytest.raises(ValueError, match=r"no dqn settings for 'Pendulum-v1'.*BASELINE_HYPERPARAMS"):
        namespace["hyperparameters"]("dqn", "Pendulum-v1")


def test_benchmark_combines_the_runs_of_several_folders_without_running(tmp_path):
    def run_record(algo, seed, final):
        return dict(
            algo=algo,
            env="Pendulum-v1",
            seed=seed,
            timesteps=40,
            action_repeat=1,
            final_return=final,
            eval_episodes=1,
            wall_s=1.0,
            curve_steps=[20, 40],
            curve_returns=[final - 100, final],
            command=f"python examples/benchmark.py --algos {algo}",
        )

    folders = [tmp_path / "a", tmp_path / "b"]
    planet = [run_record("planet", s, -170.0 - s) for s in (0, 1)]
    planet[1]["final_return_sampled"] = -160.0  # one run evaluated with sampled actions too
    runs_per_folder = ([run_record("dreamer_v1", 0, -150.0)], planet)
    for folder, runs in zip(folders, runs_per_folder):
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(runs))
    out = tmp_path / "all"
    _run(["--combine", *map(str, folders), "--out", str(out)])
    results = json.load(open(out / "results.json"))
    assert sorted((r["algo"], r["seed"]) for r in results) == [("dreamer_v1", 0), ("planet", 0), ("planet", 1)]
    table = (out / "table.md").read_text()
    assert "| DreamerV1 | Pendulum-v1 | 40 | 0 |" in table and "| PlaNet | Pendulum-v1 | 40 | 0, 1 |" in table
    assert "-170.5" in table
    assert "| n/a |" in table and "| n/a, -160.0 (**-160.0**) |" in table  # the sampled-action column, n/a where missing
    assert (out / "curve_Pendulum-v1.png").stat().st_size > 0
    # nothing was trained: no run folders
    assert sorted(p.name for p in out.iterdir()) == ["curve_Pendulum-v1.png", "results.json", "table.md"]
