"""
The benchmark plumbing: the performance harness (benchmarks/run.py) reading the TorchRL peer's output and writing
its tables, PlaNet's plan diagnostics (benchmarks/planet_diagnostics.py) and the ceiling of its Pendulum planner
(benchmarks/planner_ceiling.py), how a trained agent's episodes end (benchmarks/episode_ends.py), the acting
speed of every agent (benchmarks/acting.py), and how fast a world model fits a fixed dataset (benchmarks/model_fit.py).
"""

import json
import pathlib
import sys

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from benchmarks import (
    acting,
    break_tests,
    episode_ends,
    gpu_check,
    model_fit,
    planet_diagnostics,
    planner_ceiling,
    run,
    update_time,
)
from benchmarks.flops import FlopCounter, OpFlopCounter
from sb3_rssm import PlaNet
from tests.conftest import TINY, TINY_WORLD_MODEL, tiny_model

ROOT = pathlib.Path(__file__).resolve().parent.parent

# prints what benchmarks/peer_torchrl_dreamer.py prints; its update time says which huge-pages setting it saw
FAKE_PEER = """
import os
print("warmup_losses loss_model_kl=1")
for i, (total, model) in enumerate([(9.0, 6.0), (11.0, 9.5), (10.0, 7.0)]):
    print(f"update {i}: total={total:.3f}s (to_float=0.010 model={model:.3f} actor=2.000 value=0.500) "
          "loss_model_reco=3.5 loss_actor=-8.8 loss_value=32")
print("threads=2 torch=x autocast=off device=cpu")
seconds = 1.0 if os.environ.get("THP_MEM_ALLOC_ENABLE") == "0" else 2.0
print(f"torchrl_dreamer_update_s={seconds:.4f} batch=50 seq=50 horizon=15 obs=pixels")
"""


def test_peer_update_reads_the_median_phases_and_passes_the_huge_pages_setting(tmp_path, monkeypatch):
    peer = tmp_path / "peer.py"
    peer.write_text(FAKE_PEER)
    monkeypatch.setattr(run, "PEER", peer)
    monkeypatch.setenv("THP_MEM_ALLOC_ENABLE", "1")
    seconds, phases = run.peer_update(sys.executable, "pixels", "cpu", 3)
    assert seconds == 2.0
    # the peer scales pixels in a phase of its own (to_float): counted with its world model, as ours does it there
    assert phases == pytest.approx({"world_model": 7.01, "actor": 2.0, "value": 0.5})
    seconds, _ = run.peer_update(sys.executable, "pixels", "cpu", 3, huge_pages="0")
    assert seconds == 1.0


def test_markdown_has_every_section_of_a_harness_run():
    results = json.loads((ROOT / "docs" / "benchmarks" / "harness" / "cpu.json").read_text())
    text = run.markdown(results, "python -m benchmarks.run")
    update = results["update"][0]
    phases = " / ".join(f"{update['torchrl_phases_s'][name]:.2f}" for name in ("world_model", "actor", "value"))
    assert f"**{update['update_s']:.2f} s**" in text and f"{update['torchrl_update_s']:.2f} s ({phases})" in text
    assert f"with the variable at 0, the float32 pixel update takes {update['without_huge_pages']['update_s']:.2f} s" in text
    cem = results["cem"][0]
    assert f"| 1 env | {cem['plan_s']:.3f} s |" in text and f"{cem['plan_s'] / cem['bound_s']:.2f} |" in text
    assert "SB3's SAC `learn()` acting with its actor" in text
    assert f"{results['memory']['replay_bytes_per_64x64x3_transition']:,.0f} bytes" in text
    assert text.count("| batch ") == 3 and "1000 candidates, 16 env(s)" in text


def test_every_option_has_help_text():
    parser = run.build_parser()
    undocumented = [action.dest for action in parser._actions if not (action.help or "").strip()]
    assert not undocumented


def test_docs_are_rewritten_only_with_write_docs(tmp_path, monkeypatch):
    """A run prints its tables and writes its JSON; docs/benchmarks.md changes only on request."""
    written = []
    recorded = json.loads((ROOT / "docs" / "benchmarks" / "harness" / "cpu.json").read_text())["machine"]
    monkeypatch.setattr(run, "machine", lambda device: recorded)  # (measuring the machine takes seconds)
    monkeypatch.setattr(run, "memory_section", lambda: dict(replay_bytes_per_64x64x3_transition=12319.0))
    monkeypatch.setattr(run, "write_docs", lambda text, device: written.append((text, device)))
    argv = ["--sections", "memory", "--threads", "1", "--out", str(tmp_path)]
    run.main(argv)
    assert written == [] and (tmp_path / "cpu.json").exists()
    run.main([*argv, "--write-docs"])
    assert len(written) == 1 and "12,319 bytes" in written[0][0] and written[0][1] == "cpu"
    # the command recorded with the tables is the measuring command, without --write-docs
    assert f"python -m benchmarks.run --sections memory --threads 1 --out {tmp_path}" in written[0][0]
    assert "--write-docs" not in written[0][0]


def pendulum_return(state: np.ndarray, actions: np.ndarray) -> float:
    """The rewards of ``actions`` from ``state`` ((angle, angular velocity)) in a fresh Pendulum."""
    pendulum = gym.make("Pendulum-v1").unwrapped
    pendulum.reset(seed=0)
    pendulum.state = state.copy()
    return float(sum(pendulum.step(action)[1] for action in actions))


def test_planet_diagnostics_compare_predicted_and_true_plan_returns(monkeypatch):
    """
    Each row's ``true`` is the return of the plan CEM settled on, executed from the env's state at that step (the
    plan whose first action the env then gets), and ``predicted`` the model's return of that plan imagined on the
    prior mean from the belief it was planned from. Breaks if the plan, the state or the action units are not the
    ones of that step, or ``predicted`` imagines another plan or from another state.
    """
    model = tiny_model(PlaNet, "MlpPolicy", "Pendulum-v1", seed=0)
    model.learn(40)
    world_model, planner = model.policy.world_model, model.policy.planner
    env_steps, plans, beliefs = [], [], []
    make = gym.make

    class Recording(gym.Wrapper):
        """The diagnosed env: its state before each step and the action it gets."""

        def step(self, action):
            env_steps.append((self.unwrapped.state.copy(), np.array(action)))
            return super().step(action)

    true_return, plan = planet_diagnostics.true_return, planner.plan

    def recording_true_return(env, actions):
        plans.append((env.unwrapped.state.copy(), np.array(actions)))
        return true_return(env, actions)

    def recording_plan(model, belief, return_distribution=False):
        beliefs.append(belief)
        return plan(model, belief, return_distribution)

    monkeypatch.setattr(planet_diagnostics.gym, "make", lambda env_id: Recording(make(env_id)))
    monkeypatch.setattr(planet_diagnostics, "true_return", recording_true_return)
    monkeypatch.setattr(planner, "plan", recording_plan)
    rows = planet_diagnostics.diagnose(model, "Pendulum-v1", episodes=1, seed=0)
    assert len(rows) == 200 and rows[-1]["t"] == 199
    assert len(env_steps) == len(plans) == len(beliefs) == 200
    assert all(np.isfinite([r["predicted"], r["true"], r["elite_return"], r["candidate_return_std"]]).all() for r in rows)
    for row, (state, actions), (env_state, action) in zip(rows, plans, env_steps):
        np.testing.assert_array_equal(state, env_state)  # planned from the state the env is in at that step
        assert actions.shape == (planner.horizon, 1) and np.abs(actions).max() <= 2  # Pendulum's torques
        np.testing.assert_allclose(actions[0], action, rtol=1e-6)  # the plan acted on
        assert row["true"] == pytest.approx(pendulum_return(state, actions), rel=1e-6)
    # the model's return of each plan (in the model's [-1, 1] units), imagined on the prior mean from its belief
    for row, belief, (_, actions) in zip(rows, beliefs, plans):
        with th.no_grad():
            state, predicted = belief, 0.0
            for action in th.as_tensor(model.policy.scale_action(actions), dtype=th.float32):
                state = world_model.rssm.imagine_step(state, action[None], sample=False)
                predicted += float(world_model.reward(state.features))
        assert row["predicted"] == pytest.approx(predicted, rel=1e-5, abs=1e-6)
    assert np.std([r["true"] for r in rows]) > 0.1 and np.std([r["predicted"] for r in rows]) > 0


def test_dreamer_v3_update_is_timed_whole_and_its_batched_matmuls_are_counted():
    """The harness's DreamerV3 row: a real update (parameters move) and FLOPs that include the block GRU's bmm."""
    model, batch = update_time.build_v3("state", "size1m", batch=2, seq=6, horizon=3)
    before = [p.detach().clone() for p in model.policy.world_model.parameters()]
    row = update_time.time_v3_update(model, batch, updates=1)
    assert row["update_s"] > 0 and row["first_update_s"] > 0
    assert any(not th.equal(a, b) for a, b in zip(before, model.policy.world_model.parameters()))
    # the layer hooks of benchmarks/flops.py see only Linear / GRUCell / conv layers: the block GRU adds more
    with FlopCounter(model.policy) as hooks:
        model._update_once(batch)
    assert row["gflop"] * 1e9 > hooks.total > 0


def test_markdown_has_the_dreamer_v3_update_table():
    recorded = json.loads((ROOT / "docs" / "benchmarks" / "harness" / "cpu.json").read_text())["machine"]
    rows = [
        dict(obs="pixels", size="size12m", update_s=4.321, gflop=400.0),
        dict(obs="state", size="size1m", update_s=0.5, gflop=10.0),
    ]
    text = run.markdown(dict(machine=recorded, update_v3=rows), "python -m benchmarks.run --sections update_v3")
    peak = recorded["matmul_gflop_per_s"]
    assert f"| 64x64x3 pixels | `size12m` | **4.32 s** | 400 | {400 / 4.321 / peak:.0%} |" in text
    assert "| 24-dim vector | `size1m` | **0.50 s** | 10 |" in text
    assert "DreamerV1 update" not in text


# prints what benchmarks/peer_torchrl_dreamer_v3.py prints, its seconds made from the arguments it was given
FAKE_PEER_V3 = """
import sys
args = dict(zip(sys.argv[1::2], sys.argv[2::2]))
print("warm-up update: 9.000s")
seconds = int(args["--batch"]) * int(args["--seq"]) / 1000 + (0.5 if args["--obs"] == "pixels" else 0.0)
print(f"torchrl_dreamer_v3_update_s={seconds:.4f} size={args['--size']} autocast={args['--autocast']}")
"""


def test_the_dreamer_v3_peer_gets_the_same_work_and_its_table_row_the_ratio(tmp_path, monkeypatch):
    peer = tmp_path / "peer_v3.py"
    peer.write_text(FAKE_PEER_V3)
    monkeypatch.setattr(run, "PEER_V3", peer)
    assert run.peer_update_v3(sys.executable, "pixels", "size1m", 16, 64, "cpu", 3) == pytest.approx(1.524)
    assert run.peer_update_v3(sys.executable, "state", "size12m", 16, 16, "cuda:0", 3) == pytest.approx(0.256)
    recorded = json.loads((ROOT / "docs" / "benchmarks" / "harness" / "cpu.json").read_text())["machine"]
    rows = [
        dict(obs="pixels", size="size1m", batch=16, seq=16, update_s=0.8, gflop=40.0, torchrl_update_s=2.0),
        dict(obs="state", size="size1m", batch=16, seq=64, update_s=0.5, gflop=10.0),
    ]
    text = run.markdown(dict(machine=recorded, update_v3_peer=rows), "python -m benchmarks.run --sections update_v3_peer")
    peak = recorded["matmul_gflop_per_s"]
    assert f"| `size1m` | 16 x 16 | **0.80 s** | 40.0 | {40 / 0.8 / peak:.0%} | 2.00 s | 2.50x |" in text
    assert "| 24-dim vector | `size1m` | 16 x 64 | **0.50 s** | 10.0 |" in text and "| not run |" in text


def test_gpu_check_reports_the_dreamer_v3_update_and_fits_its_eight_minutes():
    assert set(gpu_check.BUDGETS) == set(gpu_check.SECTIONS) and sum(gpu_check.BUDGETS.values()) <= 8 * 60
    row = dict(kind="update_v3", config="size200m, eager, bf16", update_s=0.25, updates_per_s=4.0, gflop=500.0)
    results = dict(
        machine=dict(gpu="H200", torch="x", cuda="12", date="today"),
        sections=dict(update_v3=dict(status="ok", seconds=40.0, rows=[dict(row, share_of_matmul_peak=0.21)])),
    )
    text = gpu_check.markdown(results)
    assert "| size200m, eager, bf16 | 0.2500 | 4.0 | 21% |" in text and "| update_v3 | ok | 40 |" in text


def test_op_flop_counter_counts_matmuls_forward_and_backward():
    layer, x = th.nn.Linear(8, 4, bias=False), th.randn(5, 8, requires_grad=True)
    with OpFlopCounter() as counter:
        layer(x).sum().backward()
    # forward, then the weight gradient and the input gradient: three matmuls of 5 x 8 x 4
    assert counter.total == 3 * 2 * 5 * 8 * 4
    with OpFlopCounter() as counter:
        th.bmm(th.randn(3, 4, 5), th.randn(3, 5, 6))
    assert counter.total == 2 * 3 * 4 * 5 * 6


def test_pendulum_dynamics_of_the_planner_ceiling_match_gymnasium():
    env = gym.make("Pendulum-v1")
    dynamics = planner_ceiling.PendulumDynamics()
    rng = np.random.default_rng(0)
    for _ in range(20):
        env.reset(seed=int(rng.integers(1000)))
        start = np.array([rng.uniform(-4, 4), rng.uniform(-8, 8)])
        env.unwrapped.state = start.copy()
        action = rng.uniform(-1.2, 1.2, size=1)
        _, reward, *_ = env.step((2 * action).astype(np.float32))
        imagined = dynamics.imagine_step(planner_ceiling.PendulumDynamics.belief(start), th.as_tensor(action)[None])
        np.testing.assert_allclose(imagined.deterministic[0].numpy(), env.unwrapped.state, rtol=1e-5, atol=1e-6)
        assert abs(float(dynamics.reward(imagined.features)[0]) - reward) < 1e-4


class _StartRecorder:
    """An agent for evaluate_policy that notes each episode's first observation."""

    def __init__(self) -> None:
        self.firsts: list[np.ndarray] = []

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        if episode_start[0]:
            self.firsts.append(obs[0].copy())
        return np.zeros((1, 1), dtype=np.float32), None


def test_planner_ceiling_replays_the_starts_and_returns_of_the_benchmarks_final_evaluation():
    seed, episodes = 3, 3
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=1000 + seed)  # examples/benchmark.py's evaluation env
    recorders = [_StartRecorder(), _StartRecorder()]
    for recorder in recorders:
        evaluate_policy(recorder, env, n_eval_episodes=episodes)
    starts = planner_ceiling.final_evaluation_starts(seed, evaluations_before=1, episodes=episodes)
    as_obs = [np.array([np.cos(a), np.sin(a), v], dtype=np.float32) for a, v in starts]
    np.testing.assert_allclose(np.array(recorders[1].firsts), np.array(as_obs), atol=1e-6)
    # --reset-seeds K replays the start of reset(seed=K): the evaluation env's first episode here
    first_start = planner_ceiling.final_evaluation_starts(seed, 0, 1)[0]
    np.testing.assert_allclose(planner_ceiling.reset_start(1000 + seed), first_start)
    # a trained policy's replayed returns are those evaluate_policy measures on the same env
    model = tiny_model(PlaNet, "MlpPolicy", "Pendulum-v1", seed=0)
    model.learn(40)
    measured, _ = evaluate_policy(model, make_vec_env("Pendulum-v1", n_envs=1, seed=1000 + seed), n_eval_episodes=2)
    replayed = planner_ceiling.replay(
        planner_ceiling.policy_agent(model.policy), planner_ceiling.final_evaluation_starts(seed, 0, 2)
    )
    assert abs(replayed["mean"] - measured) < 0.1 and replayed["ms_per_action"] > 0


def test_cem_of_the_planner_ceiling_swings_the_true_pendulum_up_from_the_bottom():
    planner = planner_ceiling.CEMPlanner(1, horizon=20, num_candidates=150, num_elites=15, iterations=4)
    total = planner_ceiling.play(np.array([np.pi, 0.0]), planner_ceiling.true_dynamics_agent(planner))
    # standing still at the bottom costs about -1,970 and stalling part way up about -1,500
    assert total > -500


@pytest.mark.parametrize("name", break_tests.CASES["dreamer_learns_from_pixels"])
def test_each_break_of_the_pixel_test_breaks_what_it_says_and_nothing_else(monkeypatch, name):
    from sb3_rssm import DreamerV1
    from sb3_rssm.common.buffers import SequenceReplayBuffer
    from sb3_rssm.common.envs import ColourCueEnv, PointMassEnv
    from sb3_rssm.common.policies import BeliefPolicy
    from sb3_rssm.common.world_model import WorldModel
    from sb3_rssm.dreamer_v1.policies import Actor
    from sb3_rssm.dreamer_v3.policies import ActorV3
    from sb3_rssm.dreamer_v3.world_model import DreamerV3WorldModel
    from sb3_rssm.planet.planning import CEMPlanner

    # everything apply_break may patch (it patches the classes themselves): undone after the test, so that no break
    # leaks into the tests that run after it in this process
    patched = (
        (BeliefPolicy, "obs_to_tensor"),
        (SequenceReplayBuffer, "_get_samples"),
        (WorldModel, "reward"),
        (DreamerV3WorldModel, "reward"),
        (PointMassEnv, "_obs"),
        (Actor, "distribution"),
        (ActorV3, "distribution"),
        (CEMPlanner, "_evaluate"),
    )
    for owner, attribute in patched:
        monkeypatch.setattr(owner, attribute, getattr(owner, attribute))
    model = tiny_model(DreamerV1, "CnnPolicy", ColourCueEnv(), learning_starts=100)
    model.learn(30)  # collection only

    def observe() -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        frame = ColourCueEnv().reset(seed=0)[0]
        np.random.seed(0)
        features = th.ones(2, model.policy.world_model.rssm.feature_size)
        with th.no_grad():
            rewards = model.policy.world_model.reward(features)
        return model.policy.obs_to_tensor(frame)[0], model.replay_buffer.sample(2).observations, rewards

    (frame, batch, rewards), _ = observe(), break_tests.apply_break(name)
    broken_frame, broken_batch, broken_rewards = observe()
    assert th.equal(broken_frame, frame.flip(-2) if name == "predict_upside_down" else frame)
    assert th.equal(broken_batch, batch[:, :, [1, 0, 2]] if name == "train_channels_swapped" else batch)
    assert th.equal(broken_rewards, th.zeros(2)) == (name == "no_reward_head") and bool((rewards != 0).all())


def test_episode_ends_reads_the_continuation_on_the_belief_of_every_observation(tmp_path, capsys):
    # The script's continuations must be the model's on the belief of each observation of the episode, the terminal
    # one included (filtered with the action that led to it), recomputed here step by step from what it recorded;
    # and each episode's end must be reported as the env reported it.
    from sb3_rssm import DreamerV1, DreamerV3

    model = tiny_model(DreamerV3, "MlpPolicy", gym.make("CartPole-v1"), seed=0)
    path = tmp_path / "policy.zip"
    model.policy.save(path)
    policy = episode_ends.load_policy("dreamer_v3", str(path), model.observation_space)
    for rng in (None, np.random.default_rng(0)):  # the policy's actions, then random ones
        result = episode_ends.play_episode(policy, gym.make("CartPole-v1"), 3, True, rng)
        observations, actions = result["observations"], result["actions"]
        assert result["terminated"] and len(observations) == result["steps"] + 1 == len(actions) + 1
        replay = gym.make("CartPole-v1")
        assert np.array_equal(replay.reset(seed=3)[0], observations[0])
        for action, observation in zip(actions, observations[1:]):
            assert np.array_equal(replay.step(int(action.argmax()))[0], observation)
        assert result["rewards"] == [0.0] + [1.0] * result["steps"]  # CartPole's: 1 on arriving at each observation
        rssm, world_model = policy.world_model.rssm, policy.world_model
        with th.no_grad():
            state, previous = rssm.initial(1), th.zeros(1, 2)
            for t, observation in enumerate(observations):
                embed = world_model.encoder(th.as_tensor(observation[None]))
                state, _ = rssm.observe_step(state, previous, embed, th.ones(1) if t == 0 else None, sample=False)
                assert result["continuations"][t] == pytest.approx(float(world_model.continuation(state.features)))
                assert result["predicted_rewards"][t] == pytest.approx(float(world_model.reward(state.features)))
                previous = th.as_tensor(actions[t][None]) if t < len(actions) else None

    short = gym.wrappers.TimeLimit(gym.make("CartPole-v1").unwrapped, max_episode_steps=3)
    assert not episode_ends.play_episode(policy, short, 0, True, None)["terminated"]
    v1 = tiny_model(DreamerV1, "MlpPolicy", gym.make("CartPole-v1"))
    assert episode_ends.play_episode(v1.policy, short, 0, True, None)["continuations"] == [None] * 4
    summary = episode_ends.main(["--algo", "dreamer_v3", "--env", "CartPole-v1", "--policy", str(path), "--episodes", "3"])
    assert len(summary["lengths"]) == 3 and summary["terminated_share"] == 1.0
    # CartPole's rewards are all 1: no correlation to give, and no spread
    assert summary["reward_correlation"] is None and summary["reward_std"] == 0.0
    # Pendulum's rewards vary: the correlation is the one of the episode's true and predicted rewards, first step aside
    pendulum = tiny_model(DreamerV1, "MlpPolicy", gym.make("Pendulum-v1"), seed=0)
    path = tmp_path / "pendulum.zip"
    pendulum.policy.save(path)
    policy = episode_ends.load_policy("dreamer_v1", str(path), pendulum.observation_space)
    result = episode_ends.play_episode(policy, gym.make("Pendulum-v1"), 100, True, None)
    expected = np.corrcoef(result["rewards"][1:], result["predicted_rewards"][1:])[0, 1]
    summary = episode_ends.main(["--algo", "dreamer_v1", "--env", "Pendulum-v1", "--policy", str(path), "--episodes", "1"])
    assert summary["reward_correlation"] == pytest.approx(expected)
    assert summary["reward_std"] == pytest.approx(np.std(result["rewards"][1:]))
    assert "episode 2:" in capsys.readouterr().out


def test_acting_times_collection_without_updates_for_every_agent(tmp_path):
    pixels = acting.build("dreamer_v3", "pixels", learning_starts=0, buffer_size=300)
    assert pixels.policy_kwargs["cnn_depth"] == 16 and pixels.gradient_steps == 0  # the cpu pixel preset's networks
    pixels.learn(40)
    assert pixels._n_updates == 0 and pixels.replay_buffer.size() >= 40
    out = tmp_path / "acting.json"
    acting.main(["--algos", "dreamer_v1", "sac", "--obs", "vector", "--steps", "30", "--threads", "1", "--out", str(out)])
    rows = json.loads(out.read_text())["results"]
    assert [row["agent"] for row in rows] == ["raw vec env", "dreamer_v1", "sac"]
    for row in rows[1:]:
        assert all(row[key] > 0 for key in ("learn_warm_up_steps_per_s", "learn_policy_steps_per_s", "predict_steps_per_s"))


class BrightnessEnv(gym.Env):
    """64x64x3 frames of one brightness, which the action moves; the reward is the brightness: frames, motion and
    rewards for a world model to fit, in 20-step episodes."""

    observation_space = gym.spaces.Box(0, 255, (64, 64, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.level, self.steps = 128.0, 0
        return np.full((64, 64, 3), int(self.level), np.uint8), {}

    def step(self, action):
        self.level, self.steps = float(np.clip(self.level + 60.0 * action[0], 0.0, 255.0)), self.steps + 1
        return np.full((64, 64, 3), int(self.level), np.uint8), self.level / 255.0, False, self.steps >= 20, {}


def test_model_fit_trains_only_the_world_model_and_measures_it_on_heldout_chunks():
    from sb3_rssm import DreamerV3

    kwargs = dict(
        policy_kwargs={**TINY_WORLD_MODEL, **TINY[DreamerV3]}, batch_size=2, sequence_length=4, imagination_horizon=3
    )
    reference = model_fit.collect("dreamer_v3", model_fit.make_env(BrightnessEnv, 1), kwargs, 50, 1)
    np.random.seed(0)
    heldout = reference.replay_buffer.sample(4, sequence_length=10)
    model = model_fit.collect("dreamer_v3", model_fit.make_env(BrightnessEnv, 0), kwargs, 50, 0)
    assert model.replay_buffer.size() == 50 and model._n_updates == 0  # random steps only, no update yet
    policy = model.policy
    before = {
        name: [p.detach().clone() for p in module.parameters()]
        for name, module in dict(world_model=policy.world_model, actor=policy.actor, critic=policy.critic).items()
    }
    evaluations = model_fit.fit(model, heldout, updates=5, eval_every=3, context=3)
    assert [e["updates"] for e in evaluations] == [0, 3, 5]
    assert "train_model_loss" in evaluations[1] and evaluations[1]["seconds_per_update"] > 0
    # the world model alone learned
    changed = {
        name: not all(th.equal(a, b) for a, b in zip(params, module.parameters()))
        for (name, params), module in zip(before.items(), (policy.world_model, policy.actor, policy.critic))
    }
    assert changed == dict(world_model=True, actor=False, critic=False)

    # the figures, recomputed here (seeded alike, the model draws the same latents)
    th.manual_seed(5)
    result = model_fit.evaluate(model, heldout, 3)
    th.manual_seed(5)
    world_model = policy.world_model
    with th.no_grad():
        _, _, posterior = world_model.loss(heldout)
        predicted = world_model.reward(posterior.features)
        features = world_model.open_loop_features(heldout, 3)
        frames = (world_model.decoder(features)[world_model.decoder.image_keys[0]] + 0.5).clamp(0, 1).numpy()
    rewards, real, is_first = heldout.rewards.numpy(), heldout.observations.float().numpy() / 255, heldout.is_first.numpy()
    assert rewards.std() > 0 and result["reward_std"] == pytest.approx(rewards.std(ddof=1), rel=1e-5)
    assert result["reward_correlation"] == pytest.approx(np.corrcoef(predicted.flatten(), rewards.flatten())[0, 1], rel=1e-5)
    model_errors, hold_errors, by_step = [], [], {}
    for b in range(4):
        for t in range(3, 10):
            if is_first[b, 3 : t + 1].any():  # the open loop runs on through an episode start: not measured past it
                break
            model_errors.append(((frames[b, t] - real[b, t]) ** 2).mean())
            hold_errors.append(((real[b, 2] - real[b, t]) ** 2).mean())
            by_step.setdefault(t - 3, []).append(model_errors[-1])
    assert result["open_loop_mse"] == pytest.approx(np.mean(model_errors), rel=1e-5)
    assert result["hold_last_frame_mse"] == pytest.approx(np.mean(hold_errors), rel=1e-5) and np.mean(hold_errors) > 0
    assert result["open_loop_mse_by_step"] == [
        None if k not in by_step else pytest.approx(np.mean(by_step[k]), abs=1e-5) for k in range(7)
    ]
    assert result["image_mse"] == pytest.approx(((frames[:, :3] - real[:, :3]) ** 2).mean(), rel=1e-5)


def test_model_fit_runs_a_preset_with_overrides_and_refuses_malformed_ones():
    # vectors: no image figures; the reward figures and every evaluation in the summary
    tiny = (
        "dict(stochastic_size=4, deterministic_size=8, hidden_size=8, mlp_units=8, mlp_layers=1, reward_units=8, "
        "reward_layers=1, actor_units=8, actor_layers=1, value_units=8, value_layers=1)"
    )
    argv = ["--algo", "dreamer_v1", "--env", "Pendulum-v1", "--preset", "default", "--steps", "60", "--heldout-steps", "40"]
    argv += ["--chunks", "2", "--length", "6", "--context", "2", "--updates", "2", "--eval-every", "2"]
    summary = model_fit.main([*argv, "--params", "batch_size=2", "sequence_length=4", "--policy-kwargs", tiny])
    assert [e["updates"] for e in summary["evaluations"]] == [0, 2]
    last = summary["evaluations"][-1]
    assert -1.0 <= last["reward_correlation"] <= 1.0 and "image_mse" not in last and last["reward_std"] > 0
    kwargs = model_fit.settings("dreamer_v1", "Pendulum-v1", "default", ["batch_size=2"], "dict(free_bits=2.0)")
    # merged into the preset's policy_kwargs, not in their place
    assert kwargs["batch_size"] == 2 and kwargs["policy_kwargs"]["free_bits"] == 2.0
    assert kwargs["policy_kwargs"]["deterministic_size"] == 128
    with pytest.raises(ValueError, match="key=value"):
        model_fit.settings("dreamer_v1", "Pendulum-v1", "default", ["batch_size"], None)
    with pytest.raises(SystemExit):
        model_fit.main([*argv[:-4], "--context", "6"])
