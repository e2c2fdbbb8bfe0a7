"""
Evaluate a saved agent on a gymnasium env, wherever the file lies (no rl-baselines3-zoo log layout needed):

    python -m sb3_rssm.evaluate PATH --env ID [--episodes N] [--deterministic | --stochastic] [--video DIR]
        [--seed S] [--device D]

``PATH`` is a model written by ``model.save()`` of :class:`~sb3_rssm.DreamerV1`, :class:`~sb3_rssm.DreamerV3` or
:class:`~sb3_rssm.PlaNet` (a zip with ``data`` and ``policy.pth``), or a policy written by ``model.policy.save()``
(a PyTorch zip with ``<name>/data.pkl``, as ``examples/checkpoints/`` ships). The algorithm is read from the file:
a model's ``data`` names its policy class's module (old module paths, see :mod:`sb3_rssm.legacy`, included); a
policy's saved constructor parameters fit the policies of one algorithm only.

``ID`` is a gymnasium id, this package's dm_control ids (``sb3_rssm/dmc-cartpole-swingup-pixels-v0``, ...)
included. The env is made by SB3's ``make_vec_env`` (``Monitor``, ``DummyVecEnv``, seeded) and wrapped as the
algorithm wraps its own (``VecTransposeImage`` for channel-last images, resizing to 64x64); an env whose spaces
differ from the saved ones is refused with an error naming both. SB3's ``evaluate_policy`` then runs the episodes
(``predict`` carries the agent's belief state) and the command prints each episode's return and length, then::

    mean_reward=250.7 std_reward=1.3 episodes=10 deterministic=True

the mean and standard deviation ``evaluate_policy`` returns (rounded to 6 decimals, as ``Monitor`` rounds the
returns). ``--video DIR`` records all episodes into one mp4 with SB3's ``VecVideoRecorder`` (the env must support
``render_mode="rgb_array"``; the dm_control ids do), ``DIR/eval-<algorithm>-<env id>.mp4``; the frames are held in
memory until the last episode ends. Python: :func:`main` takes the arguments as a list and returns
the numbers.

Both kinds of file are pickles: evaluate only files you trust.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import zipfile
from dataclasses import dataclass
from typing import Any, Optional, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import VecEnv, VecVideoRecorder

# importing the package registers the dm_control ids and the old module paths of saved files
from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.checkpoint import missing_file_error, read_saved_data
from sb3_rssm.common.policies import BeliefPolicy
from sb3_rssm.common.spaces import split_observation_space
from sb3_rssm.common.world_model_algorithm import WorldModelAlgorithm, policy_parameters
from sb3_rssm.legacy import MOVED_MODULES

#: the package of each algorithm's policies -> the algorithm
ALGORITHMS: dict[str, type[WorldModelAlgorithm]] = {
    "sb3_rssm.dreamer_v1": DreamerV1,
    "sb3_rssm.dreamer_v3": DreamerV3,
    "sb3_rssm.planet": PlaNet,
}
ACCEPTED = (
    "Accepted: a model saved by model.save() of DreamerV1, DreamerV3 or PlaNet (a zip with 'data' and 'policy.pth'), "
    "or a policy saved by model.policy.save() (a PyTorch zip with '<name>/data.pkl')."
)
#: the longest video ``--video`` records (its frames are held in memory until the env is closed)
VIDEO_MAX_FRAMES = 1_000_000
# what a policy saves besides its constructor's keyword arguments (the algorithm passes these itself)
_POSITIONAL_POLICY_DATA = {"observation_space", "action_space", "lr_schedule"}


@dataclass(frozen=True)
class SavedAgent:
    """
    What a saved file holds, read before anything is built from it.

    :param path: the file (``.zip`` added where the path was given without it)
    :param kind: ``"model"`` (``model.save()``) or ``"policy"`` (``model.policy.save()``)
    :param algorithm: the algorithm that saved it (its ``_wrap_env`` wraps the eval env)
    :param policy_class: the class that loads a policy file (for a model: its saved policy class)
    :param observation_space: the observation space it was saved with
    :param action_space: the action space it was saved with
    """

    path: str
    kind: str
    algorithm: type[WorldModelAlgorithm]
    policy_class: type[BeliefPolicy]
    observation_space: spaces.Space
    action_space: spaces.Space

    def describe(self) -> str:
        """E.g. ``DreamerV1 policy (CnnPolicy)``."""
        return f"{self.algorithm.__name__} {self.kind} ({self.policy_class.__name__})"


def resolve_path(path: Union[str, os.PathLike]) -> str:
    """
    The file at ``path``, or at ``path.zip`` as SB3's ``load`` tries next.

    :param path: the path given on the command line
    :return: the path of an existing file
    """
    for candidate in (os.fspath(path), f"{os.fspath(path)}.zip"):
        if os.path.isfile(candidate):
            return candidate
    raise missing_file_error(os.fspath(path), "zip", "saved model or policy")


def _algorithm_of_module(module: Optional[str]) -> Optional[type[WorldModelAlgorithm]]:
    """The algorithm whose package holds ``module`` (an old path mapped to today's first), or None."""
    if not isinstance(module, str):
        return None
    module = MOVED_MODULES.get(module, module)
    for package, algorithm in ALGORITHMS.items():
        if module == package or module.startswith(f"{package}."):
            return algorithm
    return None


def _saved_policy_module(path: str) -> Optional[str]:
    """``__module__`` of the policy class named in a model zip's ``data``, read as JSON (nothing unpickled)."""
    try:
        with zipfile.ZipFile(path) as archive:
            entry = json.loads(archive.read("data")).get("policy_class")
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError):
        return None
    return entry.get("__module__") if isinstance(entry, dict) else None


def _inspect_model(path: str) -> SavedAgent:
    """A zip written by ``model.save()``: its algorithm from the policy class it names."""
    module = _saved_policy_module(path)
    try:
        # checks that the zip is complete and uncorrupted first
        data = read_saved_data(path)
    except ValueError as error:
        raise ValueError(f"{error} {ACCEPTED}") from error
    except (ImportError, AttributeError) as error:
        raise ValueError(
            f"{path!r} is a model saved by Stable-Baselines3, but its policy class (module {module!r}) cannot be "
            f"imported here ({type(error).__name__}: {error}): it was saved by another library. {ACCEPTED}"
        ) from error
    policy_class = data.get("policy_class")
    algorithm = _algorithm_of_module(module)
    if algorithm is None and isinstance(policy_class, type):
        # a user's subclass of one of the policies, defined in the user's own module
        algorithm = next((a for a in ALGORITHMS.values() if issubclass(policy_class, a.policy_base)), None)
    if algorithm is None or not isinstance(policy_class, type):
        name = getattr(policy_class, "__qualname__", None)
        raise ValueError(
            f"{path!r} is a model saved by Stable-Baselines3, but its policy is {module or '?'}.{name or '?'}, not a "
            f"policy of DreamerV1, DreamerV3 or PlaNet: evaluate it with the library that saved it (for SB3's own "
            f"algorithms: rl_zoo3's enjoy, or evaluate_policy). {ACCEPTED}"
        )
    missing = [key for key in ("observation_space", "action_space") if key not in data]
    if missing:
        raise ValueError(f"{path!r} is a model saved by {algorithm.__name__}, but its data lacks {missing}. {ACCEPTED}")
    return SavedAgent(path, "model", algorithm, policy_class, data["observation_space"], data["action_space"])


def _policy_alias(algorithm: type[WorldModelAlgorithm], observation_space: spaces.Space) -> type[BeliefPolicy]:
    """``MlpPolicy``, ``CnnPolicy`` or ``MultiInputPolicy`` of ``algorithm``, as ``observation_space`` needs."""
    images, _ = split_observation_space(observation_space)
    kind = "dict" if isinstance(observation_space, spaces.Dict) else ("image" if images else "vector")
    for policy_class in algorithm.policy_aliases.values():
        if issubclass(policy_class, BeliefPolicy) and policy_class.observation_kind == kind:
            return policy_class
    return algorithm.policy_base


def _inspect_policy(path: str) -> SavedAgent:
    """A PyTorch zip written by ``model.policy.save()``: its algorithm from the constructor parameters it saved."""
    try:
        saved = th.load(path, map_location="cpu", weights_only=False)
    except Exception as error:  # torch.load raises anything the unpickled objects raise
        raise ValueError(
            f"{path!r} is a PyTorch zip (as model.policy.save() writes) but could not be loaded: it is truncated or "
            f"corrupt, or holds classes that cannot be imported here ({type(error).__name__}: {error}). {ACCEPTED}"
        ) from error
    if not (isinstance(saved, dict) and isinstance(saved.get("data"), dict) and "state_dict" in saved):
        what = f"a dict with keys {sorted(map(str, saved))[:8]}" if isinstance(saved, dict) else f"a {type(saved).__name__}"
        raise ValueError(
            f"{path!r} is a PyTorch file, but not a policy saved by model.policy.save() (which holds a dict with "
            f"'data' and 'state_dict'): it holds {what}. {ACCEPTED}"
        )
    data = saved["data"]
    given = set(data) - _POSITIONAL_POLICY_DATA
    for algorithm in ALGORITHMS.values():
        if given <= set(policy_parameters(algorithm.policy_base)):
            observation_space, action_space = data.get("observation_space"), data.get("action_space")
            if not (isinstance(observation_space, spaces.Space) and isinstance(action_space, spaces.Space)):
                raise ValueError(f"{path!r} is a {algorithm.__name__} policy without saved spaces. {ACCEPTED}")
            policy_class = _policy_alias(algorithm, observation_space)
            return SavedAgent(path, "policy", algorithm, policy_class, observation_space, action_space)
    raise ValueError(
        f"{path!r} is a policy saved by policy.save(), but not one of DreamerV1, DreamerV3 or PlaNet: its "
        f"constructor parameters {sorted(given)} fit none of their policies (another library's policy?). {ACCEPTED}"
    )


def inspect_saved_file(path: Union[str, os.PathLike]) -> SavedAgent:
    """
    What a saved file holds: a model or a policy, of which algorithm, with which spaces. A missing file, a file that
    is not a zip, a corrupt zip and one saved by another library get a ``FileNotFoundError`` / ``ValueError`` that
    names what the file is and what is accepted.

    :param path: the file (``.zip`` may be left out, as in SB3)
    :return: its description
    """
    path = resolve_path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names: Optional[list[str]] = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        names = None
    if names is None or {"data", "policy.pth"} <= set(names):
        # read_saved_data says what is wrong with a file that is not a readable zip
        return _inspect_model(path)
    if any(re.fullmatch(r"[^/]+/data\.pkl", name) for name in names):
        return _inspect_policy(path)
    shown = ", ".join(map(repr, names[:6])) + (", ..." if len(names) > 6 else "")
    raise ValueError(
        f"{path!r} is a zip file, but neither a model saved by model.save() (it lacks "
        f"{[name for name in ('data', 'policy.pth') if name not in names]}) nor a policy saved by model.policy.save() "
        f"(it has no '<name>/data.pkl'); it holds {len(names)} entries: {shown}. {ACCEPTED}"
    )


def _video_prefix(agent: SavedAgent, env_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", f"eval-{agent.algorithm.__name__.lower()}-{env_id}")


def make_eval_env(
    agent: SavedAgent, env_id: str, seed: Optional[int], video_folder: Optional[str] = None
) -> tuple[VecEnv, Optional[VecVideoRecorder]]:
    """
    One env of ``env_id`` (``Monitor``, ``DummyVecEnv``, seeded by SB3's ``make_vec_env``), recorded where
    ``video_folder`` is given, and wrapped as ``agent``'s algorithm wraps its own env; checked against the spaces the
    agent was saved with.

    :param agent: the saved agent
    :param env_id: a gymnasium id
    :param seed: seed of the env's resets (None: unseeded)
    :param video_folder: where ``VecVideoRecorder`` writes the video (None: no video)
    :return: (the wrapped env, the recorder or None)
    """
    venv: VecEnv = make_vec_env(env_id, n_envs=1, seed=seed)
    recorder = None
    if video_folder is not None:
        if venv.render_mode != "rgb_array":
            venv.close()
            raise ValueError(
                f"--video needs an env that renders frames (render_mode='rgb_array'), but {env_id!r} has "
                f"render_mode={venv.render_mode!r} (gymnasium.make({env_id!r}, render_mode='rgb_array') did not take)."
            )
        # one video of every episode, written when the env is closed (renamed to <prefix>.mp4 then)
        recorder = VecVideoRecorder(
            venv,
            video_folder,
            record_video_trigger=lambda step: step == 0,
            video_length=VIDEO_MAX_FRAMES,
            name_prefix=_video_prefix(agent, env_id),
        )
        venv = recorder
    raw_observation_space, raw_action_space = venv.observation_space, venv.action_space
    wrapped = agent.algorithm._wrap_env(venv)
    mismatches = []
    observed = wrapped.observation_space
    if observed != agent.observation_space:
        seen = f" (as the agent sees it: {observed})" if observed != raw_observation_space else ""
        mismatches.append(f"observation space {raw_observation_space}{seen} vs saved {agent.observation_space}")
    if wrapped.action_space != agent.action_space:
        mismatches.append(f"action space {raw_action_space} vs saved {agent.action_space}")
    if mismatches:
        wrapped.close()
        raise ValueError(
            f"The env {env_id!r} does not fit the {agent.describe()} in {agent.path!r}: " + "; ".join(mismatches) + ". "
            "Pass the env it was trained on."
        )
    return wrapped, recorder


def load_agent(agent: SavedAgent, env: VecEnv, device: Union[th.device, str] = "auto") -> Any:
    """
    The model (``<Algorithm>.load(path, env=env)``) or the policy (``<Policy>.load(path)``) in ``agent``'s file.

    :param agent: the saved agent
    :param env: the eval env, already wrapped by :func:`make_eval_env`
    :param device: where to load the networks
    :return: an object with a recurrent ``predict``, for ``evaluate_policy``
    """
    if agent.kind == "model":
        return agent.algorithm.load(agent.path, env=env, device=device)
    return agent.policy_class.load(agent.path, device=device)


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    """
    The command line of :func:`main`.

    :param argv: the arguments without the program name (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(
        prog="python -m sb3_rssm.evaluate",
        description="Evaluate a DreamerV1, DreamerV3 or PlaNet model (model.save()) or policy (model.policy.save()) "
        "on a gymnasium env with SB3's evaluate_policy.",
    )
    parser.add_argument("path", help="the saved .zip (model.save() or model.policy.save())")
    parser.add_argument("--env", required=True, help="gymnasium id, e.g. sb3_rssm/dmc-cartpole-swingup-pixels-v0")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to run (default: 10)")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument(
        "--deterministic", dest="deterministic", action="store_true", default=True, help="act deterministically (default)"
    )
    mode.add_argument("--stochastic", dest="deterministic", action="store_false", help="sample actions, as in training")
    parser.add_argument("--video", metavar="DIR", default=None, help="record the episodes into an mp4 in DIR")
    parser.add_argument("--seed", type=int, default=0, help="seed of the env's resets and of torch/NumPy (default: 0)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f"--episodes must be at least 1, got {args.episodes}")
    return args


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    """
    Evaluate a saved agent (see the module's docstring) and print the results.

    :param argv: the arguments without the program name (default: ``sys.argv[1:]``)
    :return: ``mean_reward``, ``std_reward`` (as ``evaluate_policy`` returns them), ``episode_rewards``,
        ``episode_lengths``, ``episodes``, ``deterministic``, ``seed``, ``algorithm`` (its name), ``kind``
        (``"model"`` or ``"policy"``) and ``video`` (the mp4's path, or None)
    """
    args = parse_args(argv)
    agent = inspect_saved_file(args.path)
    env, recorder = make_eval_env(agent, args.env, args.seed, args.video)
    try:
        model = load_agent(agent, env, args.device)
        print(f"Evaluating the {agent.describe()} in {agent.path} on {args.env} (seed {args.seed}, device {model.device}).")
        # after loading: a model's load puts back the generators of its save
        set_random_seed(args.seed)
        episode_rewards, episode_lengths = evaluate_policy(
            model, env, n_eval_episodes=args.episodes, deterministic=args.deterministic, return_episode_rewards=True
        )
    finally:
        # writes the video
        env.close()
    video = None
    if recorder is not None and os.path.isfile(getattr(recorder, "video_path", "")):
        video = os.path.join(recorder.video_folder, f"{_video_prefix(agent, args.env)}.mp4")
        os.replace(recorder.video_path, video)
    rewards = [float(r) for r in episode_rewards]
    lengths = [int(n) for n in episode_lengths]
    mean_reward, std_reward = float(np.mean(episode_rewards)), float(np.std(episode_rewards))
    for i, (reward, length) in enumerate(zip(rewards, lengths), start=1):
        print(f"episode {i}: return={round(reward, 6)} length={length}")
    print(
        f"mean_reward={round(mean_reward, 6)} std_reward={round(std_reward, 6)} episodes={args.episodes} "
        f"deterministic={args.deterministic}"
    )
    if video is not None:
        print(f"video: {video}")
    return {
        "mean_reward": mean_reward,
        "std_reward": std_reward,
        "episode_rewards": rewards,
        "episode_lengths": lengths,
        "episodes": args.episodes,
        "deterministic": args.deterministic,
        "seed": args.seed,
        "algorithm": agent.algorithm.__name__,
        "kind": agent.kind,
        "video": video,
    }


if __name__ == "__main__":
    main()
