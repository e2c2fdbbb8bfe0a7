"""
How a trained world-model agent's episodes end, and whether its world model saw the end coming: plays episodes
with a policy saved by ``examples/benchmark.py`` (``<out>/<algo>_<env>_<seed>/policy.zip``) and prints, per
episode, its length, whether it was terminated or truncated, the last observation (vector observations) and the
continuation head's prediction on the belief state of that last observation and the steps before it; and whether its
reward head follows the rewards the env gave (the correlation of the two over every step, and their spreads).

A model that learned when episodes end predicts a continuation near 0 on a terminal observation; one that did not
predicts there what it predicts everywhere (DreamerV3's continuation includes the discount, so "everywhere" is
about ``gamma = 0.997``). When an agent's episodes all end the same way and its model predicts that they go on,
the imagined returns cannot steer the actor away from that end: look at the world model before the actor (what
the CartPole-v1 figure of docs/benchmarks.md reports).

    python -m benchmarks.episode_ends --algo dreamer_v3 --env CartPole-v1 \\
        --policy runs/benchmark/dreamer_v3_CartPole-v1_0/policy.zip
    python -m benchmarks.episode_ends --algo dreamer_v3 --env CartPole-v1 --random-actions \\
        --policy runs/benchmark/dreamer_v3_CartPole-v1_0/policy.zip

``--random-actions`` acts at random (seeded) instead of with the policy, while the belief is filtered exactly as
when acting: the episodes then end the way the first, random, episodes of training ended. The last line is a JSON
summary: episode lengths, the share of terminated episodes, and the median predicted continuation on the terminal
observations and on all the others.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Optional

import gymnasium as gym
import numpy as np
import torch as th
from stable_baselines3.common.preprocessing import is_image_space

import sb3_rssm  # noqa: F401  (registers the sb3_rssm/ env ids)
from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.policies import BeliefPolicy, RecurrentState
from sb3_rssm.common.spaces import actions_to_model

ALGOS = {"dreamer_v1": DreamerV1, "dreamer_v3": DreamerV3, "planet": PlaNet}


def load_policy(algo: str, path: str, observation_space: gym.Space, device: str = "cpu") -> BeliefPolicy:
    """The policy saved at ``path`` by ``model.policy.save``, of ``algo``'s ``CnnPolicy`` or ``MlpPolicy`` class."""
    name = "CnnPolicy" if is_image_space(observation_space) else "MlpPolicy"
    policy_class = ALGOS[algo].policy_aliases[name]
    policy = policy_class.load(path, device=device)
    policy.set_training_mode(False)
    return policy


@th.no_grad()
def heads_of(policy: BeliefPolicy, state: RecurrentState) -> tuple[Optional[float], float]:
    """The continuation head's (None without one) and the reward head's predictions on the belief held in ``state``."""
    world_model = policy.world_model
    features = world_model.rssm.from_belief(state[0], state[1]).features
    continuation = world_model.continuation(features)
    reward = float(world_model.reward(features).reshape(-1)[0])
    return None if continuation is None else float(continuation.reshape(-1)[0]), reward


def random_model_action(policy: BeliefPolicy, action_space: gym.Space, rng: np.random.Generator) -> th.Tensor:
    """A uniformly random action from ``rng``, as the (1, action_size) vector the RSSM consumes."""
    if isinstance(action_space, gym.spaces.Discrete):
        action = np.array([action_space.start + rng.integers(action_space.n)])
    else:
        action = policy.scale_action(rng.uniform(action_space.low, action_space.high)[None].astype(np.float32))
    return th.as_tensor(actions_to_model(action, action_space), device=policy.device)


@th.no_grad()
def play_episode(
    policy: BeliefPolicy, env: gym.Env, reset_seed: int, deterministic: bool, rng: Optional[np.random.Generator]
) -> dict[str, Any]:
    """
    One episode: the policy's actions (or ``rng``'s random ones), the belief filtered through every observation,
    the last observation included.

    :return: steps, terminated, the observations (the first and the last included), the model actions taken
        (RSSM vectors), the continuations and rewards predicted on the belief of every observation, and the rewards
        the env gave on arriving at each observation (0 for the first)
    """
    observation, _ = env.reset(seed=reset_seed)
    state = policy.initial_state(1)
    episode_start: Optional[th.Tensor] = th.ones(1, device=policy.device)
    observations, actions, continuations, predicted_rewards, rewards = [observation], [], [], [], [0.0]
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        obs_tensor, _ = policy.obs_to_tensor(observation)
        forced = None if rng is None else random_model_action(policy, env.action_space, rng)
        model_action, state = policy.step(obs_tensor, state, episode_start, deterministic, action=forced)
        continuation, predicted_reward = heads_of(policy, state)
        continuations.append(continuation)
        predicted_rewards.append(predicted_reward)
        episode_start = None
        observation, reward, terminated, truncated, _ = env.step(policy.to_env_action(model_action)[0])
        observations.append(observation)
        rewards.append(float(reward))
        actions.append(model_action[0].cpu().numpy())
        steps += 1
    # the terminal observation, folded into the belief as training folds it: with the action that led to it
    obs_tensor, _ = policy.obs_to_tensor(observation)
    latent = policy.filter(obs_tensor, state, None, sample=not deterministic)
    continuation, predicted_reward = heads_of(policy, (latent.deterministic, latent.stochastic, state[2]))
    continuations.append(continuation)
    predicted_rewards.append(predicted_reward)
    return dict(
        steps=steps,
        terminated=bool(terminated),
        observations=observations,
        actions=actions,
        continuations=continuations,
        predicted_rewards=predicted_rewards,
        rewards=rewards,
    )


def rounded(values: Any, digits: int = 3) -> Any:
    return None if values is None else np.round(np.asarray(values, dtype=np.float64), digits).tolist()


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGOS), required=True)
    parser.add_argument("--env", required=True, help="env id, as given to examples/benchmark.py")
    parser.add_argument("--policy", required=True, help="policy.zip written by examples/benchmark.py")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--reset-seed", type=int, default=100, help="episode i resets with seed reset_seed + i")
    parser.add_argument("--stochastic", action="store_true", help="sample actions (default: the policy's mode)")
    parser.add_argument("--random-actions", action="store_true", help="act uniformly at random, seeded by --reset-seed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    th.set_num_threads(args.threads)
    env = gym.make(args.env)
    policy = load_policy(args.algo, args.policy, env.observation_space)
    rng = np.random.default_rng(args.reset_seed) if args.random_actions else None
    vector = not is_image_space(env.observation_space) and isinstance(env.observation_space, gym.spaces.Box)
    lengths, ends, terminal, others, true_rewards, predicted_rewards = [], [], [], [], [], []
    for episode in range(args.episodes):
        result = play_episode(policy, env, args.reset_seed + episode, not args.stochastic, rng)
        continuations = result["continuations"]
        lengths.append(result["steps"])
        ends.append(result["terminated"])
        # the first observation of an episode arrives with no reward
        true_rewards.extend(result["rewards"][1:])
        predicted_rewards.extend(result["predicted_rewards"][1:])
        if continuations[-1] is not None:
            (terminal if result["terminated"] else others).append(continuations[-1])
            others.extend(continuations[:-1])
        line = f"episode {episode}: {result['steps']} steps, {'terminated' if result['terminated'] else 'truncated'}"
        if vector:
            line += f", last observation {rounded(result['observations'][-1])}"
        if continuations[-1] is not None:
            line += f", predicted continuation on the last 4 observations {rounded(continuations[-4:])}"
        print(line, flush=True)
    summary = dict(
        algo=args.algo,
        env=args.env,
        policy=args.policy,
        actions="random" if args.random_actions else ("stochastic" if args.stochastic else "deterministic"),
        lengths=lengths,
        terminated_share=float(np.mean(ends)),
        median_continuation_terminal=float(np.median(terminal)) if terminal else None,
        median_continuation_other=float(np.median(others)) if others else None,
        reward_std=float(np.std(true_rewards)),
        predicted_reward_std=float(np.std(predicted_rewards)),
        # undefined where either side is constant (CartPole's rewards, an untrained head)
        reward_correlation=(
            float(np.corrcoef(true_rewards, predicted_rewards)[0, 1])
            if np.std(true_rewards) > 0 and np.std(predicted_rewards) > 0
            else None
        ),
    )
    print(json.dumps(summary))
    return summary


if __name__ == "__main__":
    main()
