"""
Optuna search spaces for rl-baselines3-zoo's ``-optimize`` (``python -m sb3_rssm.zoo.train --algo dreamer_v1 --env
... -optimize --storage ... --study-name ...``): one sampler per algorithm, registered in the zoo's
``HYPERPARAMS_SAMPLER`` / ``HYPERPARAMS_CONVERTER`` by :func:`sb3_rssm.zoo.register_algos`, as the zoo's own are.

Each sampler draws what a world-model user tunes: the learning rates, the replay ratio (``train_freq`` agent steps
between training phases of ``gradient_steps`` updates), the sequence length, the KL's free nats, the model size, and
for PlaNet the CEM budget. A converter turns a trial's parameters into the algorithm's keyword arguments (the zoo
calls it on the best trial); each sampler returns the converter's result, so what a trial trains with and what the
zoo reports are the same. The zoo replaces the YAML's ``policy_kwargs`` with the sampled one: the sizes here are
whole model sizes. Every trial records the process that ran it (user attribute ``pid``), which shows a study shared
by several workers through ``--storage``.
"""

from __future__ import annotations

import os
from typing import Any

import optuna

#: DreamerV1 / PlaNet model sizes: (stochastic, deterministic, hidden, MLP units, conv depth); "paper" is 30/200/200
#: with 400-unit heads (DreamerV1) and depth 32
GAUSSIAN_SIZES = {
    "small": (16, 64, 64, 64, 16),
    "medium": (30, 200, 200, 200, 16),
    "paper": (30, 200, 200, 400, 32),
}
#: DreamerV3 sizes a CPU or one GPU trains in a sweep's budget (the larger presets are GPU-days each)
DREAMER_V3_SIZES = ("size1m", "size12m")


def _pid(trial: optuna.Trial) -> None:
    trial.set_user_attr("pid", os.getpid())


def _replay(trial: optuna.Trial) -> None:
    trial.suggest_categorical("train_freq", [5, 10, 25, 50])
    trial.suggest_categorical("gradient_steps", [1, 2, 5, 10])
    trial.suggest_categorical("sequence_length", [16, 32, 50])


def _replay_kwargs(params: dict[str, Any]) -> dict[str, Any]:
    return {key: params[key] for key in ("train_freq", "gradient_steps", "sequence_length")}


def _gaussian_sizes(size: str, units_key: str = "mlp_units") -> dict[str, Any]:
    stochastic, deterministic, hidden, units, depth = GAUSSIAN_SIZES[size]
    return dict(
        stochastic_size=stochastic, deterministic_size=deterministic, hidden_size=hidden, cnn_depth=depth, **{units_key: units}
    )


def convert_dreamer_v1_params(params: dict[str, Any]) -> dict[str, Any]:
    """DreamerV1's keyword arguments from a trial's parameters."""
    units = GAUSSIAN_SIZES[params["size"]][3]
    policy_kwargs = dict(
        _gaussian_sizes(params["size"]),
        reward_units=units,
        actor_units=units,
        value_units=units,
        free_bits=params["free_bits"],
        actor_init_std=params["actor_init_std"],
    )
    return dict(
        learning_rate=params["learning_rate"],
        actor_learning_rate=params["actor_learning_rate"],
        value_learning_rate=params["actor_learning_rate"],
        actor_entropy_coef=params["actor_entropy_coef"],
        policy_kwargs=policy_kwargs,
        **_replay_kwargs(params),
    )


def sample_dreamer_v1_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """DreamerV1: model and actor/value learning rates, replay ratio, sequence length, free nats, size, actor std."""
    _pid(trial)
    trial.suggest_float("learning_rate", 1e-4, 2e-3, log=True)
    trial.suggest_float("actor_learning_rate", 2e-5, 5e-4, log=True)
    _replay(trial)
    trial.suggest_categorical("free_bits", [1.0, 3.0])
    trial.suggest_categorical("size", list(GAUSSIAN_SIZES))
    trial.suggest_categorical("actor_init_std", [1.0, 5.0])
    trial.suggest_categorical("actor_entropy_coef", [0.0, 1e-3, 1e-2])
    return convert_dreamer_v1_params(trial.params)


def convert_planet_params(params: dict[str, Any]) -> dict[str, Any]:
    """PlaNet's keyword arguments from a trial's parameters."""
    units = GAUSSIAN_SIZES[params["size"]][3]
    candidates = params["num_candidates"]
    policy_kwargs = dict(
        _gaussian_sizes(params["size"]),
        reward_units=units,
        free_bits=params["free_bits"],
        planning_horizon=params["planning_horizon"],
        num_candidates=candidates,
        num_elites=max(2, round(candidates * params["elite_fraction"])),
        cem_iterations=params["cem_iterations"],
    )
    return dict(learning_rate=params["learning_rate"], policy_kwargs=policy_kwargs, **_replay_kwargs(params))


def sample_planet_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """PlaNet: learning rate, replay ratio, sequence length, free nats, size, and the CEM budget."""
    _pid(trial)
    trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True)
    _replay(trial)
    trial.suggest_categorical("free_bits", [1.0, 3.0])
    trial.suggest_categorical("size", list(GAUSSIAN_SIZES))
    trial.suggest_categorical("planning_horizon", [8, 12, 20])
    trial.suggest_categorical("num_candidates", [100, 300, 1000])
    trial.suggest_categorical("elite_fraction", [0.05, 0.1, 0.2])
    trial.suggest_categorical("cem_iterations", [3, 5, 10])
    return convert_planet_params(trial.params)


def convert_dreamer_v3_params(params: dict[str, Any]) -> dict[str, Any]:
    """DreamerV3's keyword arguments from a trial's parameters (one learning rate for the three networks)."""
    learning_rate = params["learning_rate"]
    return dict(
        learning_rate=learning_rate,
        actor_learning_rate=learning_rate,
        critic_learning_rate=learning_rate,
        policy_kwargs=dict(size=params["size"], free_bits=params["free_bits"], dyn_scale=params["dyn_scale"]),
        **_replay_kwargs(params),
    )


def sample_dreamer_v3_params(trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict) -> dict[str, Any]:
    """DreamerV3: learning rate, replay ratio, sequence length, free nats, dynamics-KL scale, model size."""
    _pid(trial)
    trial.suggest_float("learning_rate", 1e-5, 3e-4, log=True)
    _replay(trial)
    trial.suggest_categorical("free_bits", [0.5, 1.0])
    trial.suggest_categorical("dyn_scale", [0.5, 1.0])
    trial.suggest_categorical("size", list(DREAMER_V3_SIZES))
    return convert_dreamer_v3_params(trial.params)


HYPERPARAMS_SAMPLER = {
    "dreamer_v1": sample_dreamer_v1_params,
    "dreamer_v3": sample_dreamer_v3_params,
    "planet": sample_planet_params,
}
HYPERPARAMS_CONVERTER = {
    "dreamer_v1": convert_dreamer_v1_params,
    "dreamer_v3": convert_dreamer_v3_params,
    "planet": convert_planet_params,
}
