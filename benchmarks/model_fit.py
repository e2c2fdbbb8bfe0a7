"""
How fast a world model learns a fixed dataset: collects ``--steps`` steps of random actions with an agent's
zoo settings (``--preset``), then trains only its world model on them (the agent's own optimizer, batches and
update; no imagination, actor or critic) and every ``--eval-every`` updates measures it on held-out chunks of other
random episodes (another seed): the filtered belief of every step, then from a ``--context`` of observed steps the
prior rolled open loop with the real actions. Printed per evaluation, as one JSON line:

* the training loss terms (means over the updates since the last evaluation) and the held-out ones;
* ``reward_correlation`` / ``predicted_reward_std`` / ``reward_std``: the reward head on the filtered belief
  against the env's rewards (``open_loop_reward_correlation``: on the open-loop states after the context);
* ``image_mse``: per-pixel squared error (images in [0, 1]) of the reconstructions of the context steps, and of
  the open-loop predictions ``open_loop_mse`` (their mean) and ``open_loop_mse_by_step`` (1, 2, ... steps after the
  context); ``hold_last_frame_mse``: the same error for repeating the last observed frame, so a model that predicts
  no motion scores about that.

It separates what an agent's whole run mixes: whether the world model learns the frames, the motion and the reward
within the updates a run gives it, at the learning rates, warm-up and batch shape of a preset, independently of the
actor, in a fraction of a run's time. Settings are the preset's, changed with ``--params`` (constructor keywords)
and ``--policy-kwargs`` (merged into the preset's)::

    python -m benchmarks.model_fit --algo dreamer_v3 --env sb3_rssm/dmc-cartpole-swingup-pixels-v0 --preset cpu \\
        --updates 400 --eval-every 100
    python -m benchmarks.model_fit --algo dreamer_v3 --env sb3_rssm/dmc-cartpole-swingup-pixels-v0 --preset cpu \\
        --updates 400 --eval-every 100 --params learning_rate=3e-4 --policy-kwargs "dict(optimizer_kwargs=dict(warmup=100))"

The last line is a JSON summary with the settings and every evaluation.
"""

from __future__ import annotations

import argparse
import ast
import json
import time
from typing import Any, Optional

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecTransposeImage

import sb3_rssm  # noqa: F401  (registers the sb3_rssm/ env ids)
from sb3_rssm import DreamerV1, DreamerV3, PlaNet
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.world_model_algorithm import WorldModelAlgorithm
from sb3_rssm.zoo import load_hyperparams

ALGOS = {"dreamer_v1": DreamerV1, "dreamer_v3": DreamerV3, "planet": PlaNet}


def make_env(env_id: str, seed: int) -> VecEnv:
    """One seeded env, channel-last images transposed (as examples/benchmark.py makes them)."""
    env: VecEnv = make_vec_env(env_id, n_envs=1, seed=seed)
    if is_image_space(env.observation_space) and not is_image_space_channels_first(env.observation_space):  # type: ignore[arg-type]
        env = VecTransposeImage(env)
    return env


def collect(algo: str, env: VecEnv, kwargs: dict[str, Any], steps: int, seed: int) -> WorldModelAlgorithm:
    """An agent of ``algo`` with ``kwargs`` whose replay holds ``steps`` steps of uniformly random actions (no update)."""
    kwargs = dict(kwargs)
    policy = kwargs.pop("policy", None) or ("CnnPolicy" if is_image_space(env.observation_space) else "MlpPolicy")
    kwargs.update(buffer_size=max(steps, kwargs.get("buffer_size", 0)), learning_starts=steps + 1, log_prediction_interval=0)
    model = ALGOS[algo](policy, env, seed=seed, **kwargs)
    model.learn(steps)
    return model


def correlation(a: th.Tensor, b: th.Tensor) -> Optional[float]:
    """Pearson correlation of two equally shaped tensors (None where either is constant)."""
    a, b = a.double().flatten(), b.double().flatten()
    if a.numel() < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(th.corrcoef(th.stack([a, b]))[0, 1])


def image_batch(batch: SequenceSamples, key: str) -> th.Tensor:
    """The ``key`` images of ``batch`` (the only ones for a Box space) in [0, 1], (batch, time, C, H, W)."""
    observations = batch.observations[key] if isinstance(batch.observations, dict) else batch.observations
    return observations.float() / 255.0


@th.no_grad()
def evaluate(model: WorldModelAlgorithm, batch: SequenceSamples, context: int) -> dict[str, Any]:
    """
    The world model on held-out chunks: its loss terms, the reward head on the filtered belief and open loop, and
    the image errors described in the module docstring (images: the first image key).

    :param model: the agent
    :param batch: (batch, time) held-out chunks, ``time > context``
    :param context: observed steps before the open loop
    """
    world_model = model.policy.world_model
    model.policy.set_training_mode(False)
    _, metrics, posterior = world_model.loss(batch)
    rewards = batch.rewards.float()
    predicted = world_model.reward(posterior.features).float()
    # open-loop steps up to the first episode start after the context (the open loop does not reset there)
    valid = th.cumsum(batch.is_first[:, context:], dim=1) == 0
    features = world_model.open_loop_features(batch, context)
    open_loop_rewards = world_model.reward(features[:, context:]).float()
    result: dict[str, Any] = {f"heldout_{key}": float(value) for key, value in metrics.items()}
    result.update(
        reward_correlation=correlation(predicted, rewards),
        predicted_reward_std=float(predicted.std()),
        reward_std=float(rewards.std()),
        open_loop_reward_correlation=correlation(open_loop_rewards[valid], rewards[:, context:][valid]),
    )
    keys = world_model.decoder.image_keys
    if keys:
        predicted_images = world_model.images(features)[keys[0]]
        real = image_batch(batch, keys[0])
        error = (predicted_images - real).square().mean(dim=(2, 3, 4))
        hold = (real[:, context - 1 : context] - real[:, context:]).square().mean(dim=(2, 3, 4))
        open_loop = error[:, context:]
        by_step = [
            round(float(open_loop[:, k][valid[:, k]].mean()), 5) if valid[:, k].any() else None
            for k in range(open_loop.shape[1])
        ]
        result.update(
            image_mse=float(error[:, :context].mean()),
            open_loop_mse=float(open_loop[valid].mean()),
            hold_last_frame_mse=float(hold[valid].mean()),
            open_loop_mse_by_step=by_step,
        )
    return result


def fit(
    model: WorldModelAlgorithm, heldout: SequenceSamples, updates: int, eval_every: int, context: int
) -> list[dict[str, Any]]:
    """
    ``updates`` world-model updates on batches of ``model``'s replay (its batch size and sequence length), each as
    the agent's own update makes it, with an evaluation (:func:`evaluate`) before the first and every
    ``eval_every`` updates.

    :return: the evaluations, each with the update count, the seconds per update since the last one and the mean
        training metrics over those updates
    """
    assert model.update is not None
    # the learning rates the agent's first training phase sets (a schedule's initial value)
    model._current_progress_remaining = 1.0
    model._update_learning_rates()
    evaluations = [dict(updates=0, **evaluate(model, heldout, context))]
    print(json.dumps(evaluations[-1]), flush=True)
    done = 0
    while done < updates:
        phase = min(eval_every, updates - done)
        model.policy.set_training_mode(True)
        start = time.perf_counter()
        for _ in range(phase):
            batch = model.replay_buffer.sample(model.batch_size, env=model._vec_normalize_env)
            _, metrics = model._train_world_model(batch)
            model.update.finish(metrics)
        report = model.update.read(done, model.num_timesteps)
        seconds = (time.perf_counter() - start) / phase
        done += phase
        entry = dict(updates=done, seconds_per_update=seconds, **{f"train_{k}": v for k, v in report.metrics.items()})
        entry.update(evaluate(model, heldout, context))
        evaluations.append(entry)
        print(json.dumps(entry), flush=True)
    return evaluations


def settings(algo: str, env_id: str, preset: str, params: list[str], policy_kwargs: Optional[str]) -> dict[str, Any]:
    """The preset's constructor keywords with ``params`` (``key=value``, Python literals) and ``policy_kwargs`` merged in."""
    kwargs = load_hyperparams(algo, env_id, preset=preset)
    for item in params:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--params takes key=value items (e.g. learning_rate=3e-4), got {item!r}")
        kwargs[key] = ast.literal_eval(value)
    if policy_kwargs:
        extra = eval(policy_kwargs, {"__builtins__": {}}, {"dict": dict})
        if not isinstance(extra, dict):
            raise ValueError(f"--policy-kwargs must be a dict(...), got {policy_kwargs!r}")
        kwargs["policy_kwargs"] = {**kwargs.get("policy_kwargs", {}), **extra}
    return kwargs


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algo", choices=sorted(ALGOS), required=True)
    parser.add_argument("--env", required=True, help="env id with an entry in the preset's YAML")
    parser.add_argument("--preset", default="cpu", help="zoo preset: default or cpu")
    parser.add_argument("--params", nargs="*", default=[], help="constructor keywords, key=value (Python literals)")
    parser.add_argument("--policy-kwargs", help="dict(...) merged into the preset's policy_kwargs")
    parser.add_argument("--steps", type=int, default=5000, help="random steps to train on")
    parser.add_argument("--heldout-steps", type=int, default=1000, help="random steps of other episodes to measure on")
    parser.add_argument("--chunks", type=int, default=16, help="held-out chunks")
    parser.add_argument("--length", type=int, default=30, help="steps of a held-out chunk")
    parser.add_argument("--context", type=int, default=5, help="observed steps before the open loop")
    parser.add_argument("--updates", type=int, default=400)
    parser.add_argument("--eval-every", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    if not 0 < args.context < args.length:
        parser.error(f"--context must be between 1 and --length - 1 ({args.length - 1}), got {args.context}")
    th.set_num_threads(args.threads)
    kwargs = settings(args.algo, args.env, args.preset, args.params, args.policy_kwargs)
    start = time.perf_counter()
    reference = collect(args.algo, make_env(args.env, 1000 + args.seed), kwargs, args.heldout_steps, 1000 + args.seed)
    np.random.seed(args.seed)
    heldout = reference.replay_buffer.sample(args.chunks, sequence_length=args.length)
    del reference
    model = collect(args.algo, make_env(args.env, args.seed), kwargs, args.steps, args.seed)
    collect_s = time.perf_counter() - start
    evaluations = fit(model, heldout, args.updates, args.eval_every, args.context)
    summary = dict(
        algo=args.algo,
        env=args.env,
        preset=args.preset,
        params=args.params,
        policy_kwargs=args.policy_kwargs,
        steps=args.steps,
        seed=args.seed,
        threads=args.threads,
        collect_s=collect_s,
        evaluations=evaluations,
    )
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
