"""
rl-baselines3-zoo integration: launchers that add ``dreamer_v1``, ``dreamer_v3`` and ``planet`` to the zoo's
algorithms, then run the zoo's own ``train`` / ``enjoy`` / ``record_video`` scripts, with this package's
hyperparameter files as defaults.

``python -m rl_zoo3.train --algo dreamer_v1`` cannot work: the zoo fixes its ``--algo`` choices when its parser is
built, before ``--gym-packages`` are imported. The launchers (``python -m sb3_rssm.zoo.train``, ``sb3-rssm-train``)
register first. Importing this module needs rl_zoo3 only when a launcher runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable, Optional

from stable_baselines3.common.base_class import BaseAlgorithm

from sb3_rssm import DreamerV1, DreamerV3, PlaNet

ALGOS: dict[str, type[BaseAlgorithm]] = {"dreamer_v1": DreamerV1, "dreamer_v3": DreamerV3, "planet": PlaNet}
HYPERPARAMS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "hyperparams")
# where train writes runs; the zoo's enjoy otherwise looks in rl-trained-agents/ and then tries the Hugging Face hub
DEFAULT_LOG_FOLDER = "logs"


# "default": the papers' settings (and small ones for Pendulum-v1); "cpu": settings sized for a 2-core CPU
PRESETS = ("default", "cpu")

#: what ``python -m sb3_rssm.zoo.train`` prints without arguments, and before the zoo's own options with --help
TRAIN_USAGE = f"""usage: python -m sb3_rssm.zoo.train --algo {{{",".join(ALGOS)}}} --env ENV_ID
                                 [--preset {{{",".join(PRESETS)}}}] [any option of python -m rl_zoo3.train]

Train one of sb3_rssm's agents with rl-baselines3-zoo (runs land in {DEFAULT_LOG_FOLDER}/<algo>/<env>_<n>/).

options added by this launcher:
  --preset {{{",".join(PRESETS)}}}   the shipped hyperparameter file: "default" (the papers' settings, and small ones for
                        Pendulum-v1 and CartPole-v1) or "cpu" (sized for a 2-core CPU); --conf-file FILE uses yours
defaults this launcher sets unless given: --conf-file (the preset's YAML), --eval-freq (a tenth of the budget),
  --tensorboard-log {DEFAULT_LOG_FOLDER}/tensorboard

examples:
  python -m sb3_rssm.zoo.train --algo dreamer_v1 --env Pendulum-v1
  python -m sb3_rssm.zoo.train --algo dreamer_v1 --env sb3_rssm/dmc-cartpole-swingup-pixels-v0 --preset cpu
"""


class UsageError(ValueError):
    """A launcher's command line that cannot run: printed with the usage, exit status 2, no traceback."""


def hyperparams_file(algo: str, preset: str = "default") -> str:
    """
    Path of the YAML hyperparameter file shipped for ``algo``.

    :param algo: a key of :data:`ALGOS`
    :param preset: ``"default"`` (the papers' settings) or ``"cpu"`` (sized for a 2-core CPU)
    :return: ``.../sb3_rssm/zoo/hyperparams/<algo>.yml``, or ``.../hyperparams/cpu/<algo>.yml``
    """
    if algo not in ALGOS:
        raise UsageError(f"Unknown algorithm {algo!r}: sb3_rssm ships hyperparameters for {sorted(ALGOS)}")
    if preset not in PRESETS:
        raise UsageError(f"Unknown preset {preset!r}: choose one of {PRESETS}")
    path = hyperparams_path(algo, preset)
    if not os.path.isfile(path):
        shipped = sorted(name for name in PRESETS if os.path.isfile(hyperparams_path(algo, name)))
        raise UsageError(
            f"sb3_rssm ships no {preset!r} hyperparameters for {algo} (it has {shipped}): choose another preset, or "
            "pass your own file with --conf-file."
        )
    return path


def hyperparams_path(algo: str, preset: str) -> str:
    """Where the shipped YAML of ``algo`` for ``preset`` is, whether or not it exists."""
    folder = HYPERPARAMS_DIR if preset == "default" else os.path.join(HYPERPARAMS_DIR, preset)
    return os.path.join(folder, f"{algo}.yml")


def register_algos() -> None:
    """
    Add this package's algorithms (:data:`ALGOS`) to ``rl_zoo3.ALGOS`` (the dict every zoo script reads), and their
    Optuna samplers (:mod:`sb3_rssm.zoo.hyperparams_opt`) to the zoo's ``HYPERPARAMS_SAMPLER`` and
    ``HYPERPARAMS_CONVERTER``, which ``-optimize`` reads.
    """
    try:
        import rl_zoo3
        from rl_zoo3 import hyperparams_opt
    except ImportError as exc:
        raise ImportError(f"The zoo launchers need rl_zoo3 ({exc}): pip install 'sb3_rssm[extra]'") from exc
    from sb3_rssm.zoo.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    rl_zoo3.ALGOS.update(ALGOS)
    hyperparams_opt.HYPERPARAMS_SAMPLER.update(HYPERPARAMS_SAMPLER)
    hyperparams_opt.HYPERPARAMS_CONVERTER.update(HYPERPARAMS_CONVERTER)


def _option_value(argv: list[str], *names: str) -> Optional[str]:
    """The value given to one of ``names`` in ``argv``, parsed as the zoo parses it (abbreviations included)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument(*names, dest="value", default=None)
    known, _ = parser.parse_known_args(argv)
    return known.value


def _pop_option(argv: list[str], name: str) -> tuple[Optional[str], list[str]]:
    """The value of option ``name`` (``--name value`` or ``--name=value``) and ``argv`` without it."""
    rest, value = [], None
    iterator = iter(argv)
    for arg in iterator:
        if arg == name:
            value = next(iterator, None)
            if value is None:
                raise ValueError(f"{name} needs a value")
        elif arg.startswith(name + "="):
            value = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return value, rest


def _check_entry(path: str, algo: str, env_id: Optional[str]) -> None:
    """A clear error, naming the entries there are, when the shipped YAML at ``path`` has none for ``env_id``."""
    import yaml

    if env_id is None:
        raise UsageError("--env is required: the gymnasium id to train on, e.g. --env Pendulum-v1")
    with open(path) as f:
        entries = yaml.safe_load(f) or {}
    if env_id not in entries:
        raise UsageError(
            f"{os.path.relpath(path, HYPERPARAMS_DIR)} of sb3_rssm has no {algo} hyperparameters for {env_id!r}; its "
            f"entries: {', '.join(sorted(entries))}. Pick one of them, another --preset, or give your own with "
            "--conf-file FILE (a YAML with an entry for this id; see docs/zoo.md)."
        )


def _yaml_budget(path: str, env_id: str) -> Optional[int]:
    """``n_timesteps`` of the entry for ``env_id`` in the zoo YAML at ``path``, if there is one."""
    import yaml

    try:
        with open(path) as f:
            entry = (yaml.safe_load(f) or {}).get(env_id) or {}
    except OSError:
        return None
    budget = entry.get("n_timesteps")
    return int(float(budget)) if budget is not None else None


def with_defaults(argv: list[str], script: str) -> list[str]:
    """
    The zoo command line ``argv`` with this package's defaults added where the user gave none.

    - train (this package's algorithms only): ``--conf-file`` points at the shipped YAML of the algorithm (with
      ``--preset cpu``, an option of the launcher that the zoo never sees: the one sized for a 2-core CPU), and
      ``--tensorboard-log <log folder>/tensorboard`` (the zoo logs no TensorBoard by default; ``-tb ""`` turns
      it off again), and ``--eval-freq`` a tenth of the run's budget (``-n`` or the YAML's ``n_timesteps``), so that
      every run leaves evaluations for the zoo's plots;
    - enjoy and record_video: ``--folder logs``, where train writes (the zoo's default is rl-trained-agents/).

    :param argv: command-line arguments, without the program name
    :param script: ``"train"``, ``"enjoy"`` or ``"record_video"``
    :return: the arguments to hand to the zoo
    """
    argv = list(argv)
    if any(arg in ("-h", "--help") for arg in argv):
        return argv
    algo = _option_value(argv, "--algo")
    if script == "train":
        if not argv or algo is None:
            # without --algo the zoo would train its own default (PPO on CartPole-v1) for 100k steps
            raise UsageError("--algo is required: one of " + ", ".join(ALGOS) + " (or any of rl_zoo3's algorithms)")
        preset, argv = _pop_option(argv, "--preset")
        if preset is not None and _option_value(argv, "-conf", "--conf-file") is not None:
            raise UsageError("--preset chooses the hyperparameter file: give it or --conf-file, not both")
        if algo in ALGOS and _option_value(argv, "-conf", "--conf-file") is None:
            path = hyperparams_file(algo, preset or "default")
            _check_entry(path, algo, _option_value(argv, "--env"))
            argv += ["--conf-file", path]
        if algo in ALGOS and _option_value(argv, "--eval-freq") is None:
            # ten evaluations per run: the zoo's default (every 25,000 steps) never evaluates a short run, and its
            # plotting scripts then find nothing to plot
            budget = _option_value(argv, "-n", "--n-timesteps") or _yaml_budget(
                _option_value(argv, "-conf", "--conf-file") or "", _option_value(argv, "--env") or ""
            )
            if budget and int(budget) > 0:
                argv += ["--eval-freq", str(max(1, int(budget) // 10))]
        if algo in ALGOS and _option_value(argv, "-tb", "--tensorboard-log") is None:
            log_folder = _option_value(argv, "-f", "--log-folder") or DEFAULT_LOG_FOLDER
            argv += ["--tensorboard-log", os.path.join(log_folder, "tensorboard")]
    elif _option_value(argv, "-f", "--folder") is None:
        argv += ["--folder", DEFAULT_LOG_FOLDER]
    return argv


def run_zoo_script(script: str, program: str, run: Callable[[], None], argv: Optional[list[str]] = None) -> None:
    """
    Register the sb3_rssm algorithms, then run one of the zoo's scripts on ``argv`` with this package's defaults.
    The zoo's scripts parse ``sys.argv`` themselves, so it is swapped in for the call and restored afterwards.

    :param script: ``"train"``, ``"enjoy"`` or ``"record_video"`` (selects the defaults, see :func:`with_defaults`)
    :param program: program name shown in the zoo's usage messages
    :param run: calls the zoo's script (imported after registration)
    :param argv: command-line arguments without the program name (default: ``sys.argv[1:]``)
    """
    register_algos()
    given = sys.argv[1:] if argv is None else argv
    try:
        args = with_defaults(given, script)
    except UsageError as error:
        print((TRAIN_USAGE if script == "train" else "") + f"\n{program}: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    if script == "train" and any(arg in ("-h", "--help") for arg in args):
        print(TRAIN_USAGE + "\nrl_zoo3.train's options, all accepted:\n")
    saved = sys.argv
    sys.argv = [saved[0] if saved else program, *args]
    try:
        run()
    finally:
        sys.argv = saved


# Zoo keys that configure the env or the run rather than the algorithm's constructor
_RUN_KEYS = ("n_timesteps",)
_ENV_KEYS = ("n_envs", "normalize", "env_wrapper", "vec_env_wrapper", "frame_stack", "env_kwargs", "callback")


def load_hyperparams(algo: str, env_id: str, path: Optional[str] = None, preset: str = "default") -> dict[str, Any]:
    """
    One entry of a zoo hyperparameter file as constructor keyword arguments, for use outside the zoo (e.g. by
    ``examples/benchmark.py``): ``policy_kwargs`` strings are evaluated (``dict(...)`` only) and
    ``n_timesteps`` is dropped. Entries that only the zoo knows how to apply (wrappers, normalization, ...) are refused.

    :param algo: a key of :data:`ALGOS`
    :param env_id: the entry's key, a gymnasium id
    :param path: the YAML file (default: the shipped one of ``preset``)
    :param preset: ``"default"`` or ``"cpu"``, see :func:`hyperparams_file`
    :return: keyword arguments, including ``policy``
    """
    import yaml

    path = path or hyperparams_file(algo, preset)
    with open(path) as f:
        entries = yaml.safe_load(f)
    if env_id not in entries:
        raise ValueError(f"No {algo} hyperparameters for {env_id!r} in {path}; entries: {sorted(entries)}")
    kwargs = dict(entries[env_id])
    unsupported = [key for key in _ENV_KEYS if key in kwargs]
    if unsupported:
        raise ValueError(
            f"{path} entry {env_id!r} sets {unsupported}, which only the zoo applies: train it with "
            "`python -m sb3_rssm.zoo.train`."
        )
    for key in _RUN_KEYS:
        kwargs.pop(key, None)
    if isinstance(kwargs.get("policy_kwargs"), str):
        # the zoo evaluates these strings as Python; here only dict(...) of literals is accepted
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"__builtins__": {}}, {"dict": dict})
    if isinstance(kwargs.get("train_freq"), list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    return kwargs
