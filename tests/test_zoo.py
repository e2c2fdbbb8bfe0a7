"""rl-baselines3-zoo launchers: defaults, shipped hyperparameters, and train -> save -> enjoy -> plot end to end."""

import importlib.util
import os
import re
import sys

import numpy as np
import pytest
import yaml
from conftest import FAST, TINY, TINY_WORLD_MODEL

from sb3_rssm import DreamerV1, DreamerV3, PlaNet, zoo
from sb3_rssm.common.dmc import DMC_TASKS, dmc_env_id
from sb3_rssm.zoo import ALGOS, hyperparams_file, load_hyperparams, register_algos, with_defaults
from sb3_rssm.zoo import enjoy as zoo_enjoy
from sb3_rssm.zoo import train as zoo_train

pytest.importorskip("rl_zoo3")

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples")

# conftest's tiny networks and fast cadence, as zoo overrides
TINY_PARAMS = {
    name: [f"policy_kwargs:dict({','.join(f'{k}={v}' for k, v in {**TINY_WORLD_MODEL, **TINY[algorithm]}.items())})"]
    + (["imagination_horizon:3"] if algorithm in (DreamerV1, DreamerV3) else [])
    # the Pendulum-v1 entry compiles the update for minutes; tests/test_dreamer_v3.py covers compile_update="losses"
    + (["compile_update:None"] if algorithm is DreamerV3 else [])
    for name, algorithm in (("dreamer_v1", DreamerV1), ("dreamer_v3", DreamerV3), ("planet", PlaNet))
}
FAST_PARAMS = ["buffer_size:1000", *(f"{key}:{value}" for key, value in FAST.items())]


def test_register_algos():
    import rl_zoo3
    from rl_zoo3.utils import ALGOS as ZOO_ALGOS

    register_algos()
    assert rl_zoo3.ALGOS["dreamer_v1"] is DreamerV1 and ZOO_ALGOS["planet"] is PlaNet
    assert ZOO_ALGOS["dreamer_v3"] is DreamerV3


def test_with_defaults():
    train = with_defaults("--algo dreamer_v1 --env Pendulum-v1 -f runs".split(), "train")
    assert train[-6:] == [
        "--conf-file",
        hyperparams_file("dreamer_v1"),
        "--eval-freq",
        "2000",  # a tenth of the YAML's 20,000 steps: the zoo's default of 25,000 would leave nothing to plot
        "--tensorboard-log",
        os.path.join("runs", "tensorboard"),
    ]
    assert with_defaults("--algo planet --env Pendulum-v1 -n 5000 --eval-freq 700".split(), "train")[-4:-2] == [
        "--conf-file",
        hyperparams_file("planet"),
    ]
    assert "500" in with_defaults("--algo planet --env Pendulum-v1 -n 5000".split(), "train")
    cpu = with_defaults(f"--algo dreamer_v1 --env {dmc_env_id('cartpole-swingup')} --preset cpu".split(), "train")
    assert "--preset" not in cpu and hyperparams_file("dreamer_v1", "cpu") in cpu and "1250" in cpu
    # the user's choices win; the zoo's own algorithms keep the zoo's defaults
    given = ["--algo=planet", "-conf", "my.yml", "-tb", ""]
    assert with_defaults(given, "train") == given
    assert with_defaults(["--algo", "ppo", "--env", "CartPole-v1"], "train") == ["--algo", "ppo", "--env", "CartPole-v1"]
    assert with_defaults(["--algo", "planet"], "enjoy") == ["--algo", "planet", "--folder", "logs"]
    assert with_defaults(["--algo", "planet", "-f", "x"], "enjoy") == ["--algo", "planet", "-f", "x"]
    assert with_defaults(["--help"], "train") == ["--help"]


def test_hyperparameter_files():
    spec = importlib.util.spec_from_file_location("benchmark", os.path.join(EXAMPLES, "benchmark.py"))
    benchmark = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(benchmark)
    for algo in ALGOS:
        with open(hyperparams_file(algo)) as f:
            entries = yaml.safe_load(f)
        vector_tasks = {"Pendulum-v1", "CartPole-v1"} if algo == "dreamer_v3" else {"Pendulum-v1"}
        assert set(entries) == {dmc_env_id(name) for name in DMC_TASKS} | vector_tasks
        for name, (_, _, repeat) in DMC_TASKS.items():
            entry = entries[dmc_env_id(name)]
            # the papers' budget in frames, converted to agent steps with the task's action repeat
            assert entry["policy"] == "CnnPolicy"
            assert entry["n_timesteps"] * repeat == 1_000_000
            if algo == "dreamer_v3":
                # danijar/dreamerv3's dmc_vision: replay ratio 256 (16 x 64 steps replayed every 4 agent steps),
                # its default model size, training from 1024 steps on
                ratio = entry["gradient_steps"] * 16 * 64 / entry["train_freq"]
                assert ratio == 256 and entry["learning_starts"] == 1024 and "size200m" in entry["policy_kwargs"]
            else:
                assert entry["learning_starts"] * repeat == 5000
                assert entry["train_freq"] * repeat == 1000 and entry["gradient_steps"] == 100
        # the learning benchmark trains with the zoo's entry, unchanged unless --tiny
        assert benchmark.hyperparameters(algo, "Pendulum-v1") == load_hyperparams(algo, "Pendulum-v1")
        assert load_hyperparams(algo, "Pendulum-v1")["policy"] == "MlpPolicy"
        assert benchmark.hyperparameters(algo, "Pendulum-v1", tiny=True)["batch_size"] == 2
    with pytest.raises(ValueError, match="No planet hyperparameters for 'CartPole-v1'"):
        load_hyperparams("planet", "CartPole-v1")
    # every algorithm has a cpu preset for the pixel benchmark; DreamerV3's departs from the paper only where its YAML
    # comment says why: model size, replay ratio, learning rates, float32 (where the reference computes in bfloat16, which
    # AVX2-only CPUs emulate) and dyn_scale 1.0
    for algo in ALGOS:
        with open(hyperparams_file(algo, "cpu")) as f:
            entry = yaml.safe_load(f)[dmc_env_id("cartpole-swingup")]
        assert entry["n_timesteps"] == 12500 and entry["policy"] == "CnnPolicy"
    cpu = load_hyperparams("dreamer_v3", dmc_env_id("cartpole-swingup"), preset="cpu")
    assert cpu["policy_kwargs"] == dict(size="size1m", cnn_depth=16, cnn_strided=True, dyn_scale=1.0)
    assert cpu["learning_starts"] == 1024 and "mixed_precision" not in cpu
    assert cpu["learning_rate"] == cpu["actor_learning_rate"] == cpu["critic_learning_rate"] == 1e-4
    assert set(cpu) <= {
        "policy",
        "buffer_size",
        "learning_starts",
        "batch_size",
        "sequence_length",
        "train_freq",
        "gradient_steps",
        "learning_rate",
        "actor_learning_rate",
        "critic_learning_rate",
        "mixed_precision",
        "policy_kwargs",
    }


def test_a_missing_preset_names_the_ones_shipped(tmp_path, monkeypatch):
    (tmp_path / "dreamer_v3.yml").write_text("{}")
    monkeypatch.setattr(zoo, "HYPERPARAMS_DIR", str(tmp_path))
    with pytest.raises(ValueError, match=r"no 'cpu' hyperparameters for dreamer_v3 \(it has \['default'\]\)"):
        hyperparams_file("dreamer_v3", "cpu")
    with pytest.raises(ValueError, match="Unknown preset 'gpu'"):
        hyperparams_file("dreamer_v3", "gpu")


def _train_enjoy(tmp_path, capsys, algo, env_id, timesteps, eval_freq, eval_episodes):
    logs = str(tmp_path / "logs")
    budget = f"-n {timesteps} --eval-freq {eval_freq} --eval-episodes {eval_episodes} --seed 0 --verbose 0".split()
    zoo_train.main(["--algo", algo, "--env", env_id, "-f", logs, *budget, "-params", *FAST_PARAMS, *TINY_PARAMS[algo]])
    name = env_id.replace("/", "-")
    run = os.path.join(logs, algo, f"{name}_1")
    evaluations = np.load(os.path.join(run, "evaluations.npz"))
    assert list(evaluations["timesteps"]) == list(range(eval_freq, timesteps + 1, eval_freq))
    assert evaluations["results"].shape == (timesteps // eval_freq, eval_episodes)
    for path in (f"{name}.zip", "best_model.zip", "0.monitor.csv", os.path.join(name, "config.yml")):
        assert os.path.isfile(os.path.join(run, path)), path
    assert os.listdir(os.path.join(logs, "tensorboard", name))
    with open(os.path.join(run, name, "config.yml")) as f:
        # the shipped YAML was the default, with the overrides on top
        assert yaml.unsafe_load(f)["learning_starts"] == 20

    capsys.readouterr()
    zoo_enjoy.main(["--algo", algo, "--env", env_id, "-f", logs, "--no-render", "-n", "12", "--verbose", "1"])
    assert f"Loading {os.path.join(run, name)}.zip" in capsys.readouterr().out
    return logs


@pytest.mark.parametrize("algo", ["dreamer_v1", "dreamer_v3", "planet"])
def test_train_enjoy_plot_pendulum(tmp_path, capsys, algo):
    logs = _train_enjoy(tmp_path, capsys, algo, "Pendulum-v1", timesteps=60, eval_freq=30, eval_episodes=2)
    # the zoo's own plotting reads the run
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rl_zoo3.plots.all_plots import all_plots

    output = str(tmp_path / "results")
    argv = sys.argv
    sys.argv = ["all_plots", "-a", algo, "-e", "Pendulum-v1", "-f", logs, "--no-display", "-o", output]
    try:
        with matplotlib.rc_context():
            all_plots()
    finally:
        sys.argv = argv
        plt.close("all")
    assert os.path.isfile(output + ".pkl")
    assert "Pendulum-v1" in capsys.readouterr().out


def test_train_enjoy_pixels(tmp_path, capsys):
    _train_enjoy(tmp_path, capsys, "dreamer_v1", dmc_env_id("cartpole-swingup"), timesteps=30, eval_freq=30, eval_episodes=1)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "--algo is required"),
        (["--env", "Pendulum-v1"], "--algo is required"),
        (["--algo", "dreamer_v1", "--env", "Pendulum-v1", "--preset", "gpu"], "Unknown preset 'gpu'"),
        (["--algo", "dreamer_v1", "--env", "Foo-v1"], r"no dreamer_v1 hyperparameters for 'Foo-v1'; its entries: Pendulum-v1"),
        (["--algo", "planet"], "--env is required"),
    ],
)
def test_the_train_launcher_prints_its_usage_and_a_clear_error(capsys, argv, message):
    # without --algo the zoo alone would train PPO on CartPole-v1 for 100k steps; bad presets and ids were tracebacks
    with pytest.raises(SystemExit) as exit_:
        zoo_train.main(argv)
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: python -m sb3_rssm.zoo.train --algo {dreamer_v1,dreamer_v3,planet}")
    assert "--preset {default,cpu}" in err and re.search(message, err.splitlines()[-1])


def test_the_train_launcher_help_names_its_own_options_then_the_zoos(capsys):
    with pytest.raises(SystemExit):
        zoo_train.main(["--help"])
    out = capsys.readouterr().out
    assert out.index("--preset {default,cpu}") < out.index("rl_zoo3.train's options") < out.index("--n-timesteps")


@pytest.mark.parametrize("algo", ["dreamer_v1", "dreamer_v3", "planet"])
def test_two_workers_share_one_optuna_study(tmp_path, algo):
    """
    ``-optimize`` with this package's samplers: two worker processes, two trials each, on one journal-file storage
    (as many machines would share a PostgreSQL one); the study holds the four trials, from both processes, each with
    the sampled parameters and an evaluation.
    """
    import subprocess

    import optuna

    entry = dict(policy="MlpPolicy", n_timesteps=30, learning_starts=20, batch_size=4, buffer_size=1000)
    if algo != "planet":
        entry["imagination_horizon"] = 3
    conf = tmp_path / "conf.yml"
    conf.write_text(yaml.safe_dump({"Pendulum-v1": entry}))
    storage = str(tmp_path / "study.log")
    command = [
        sys.executable, "-m", "sb3_rssm.zoo.train", "--algo", algo, "--env", "Pendulum-v1",
        "--env-kwargs", "max_episode_steps:10", "-optimize", "--n-trials", "2", "--sampler", "random", "--pruner",
        "median", "--n-evaluations", "1", "--eval-episodes", "1", "--storage", storage, "--study-name", "sweep",
        "--conf-file", str(conf), "--no-optim-plots", "--num-threads", "1", "-f", str(tmp_path / "logs"),
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
    workers = [subprocess.Popen([*command, "--seed", str(seed)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
               for seed in (1, 2)]  # fmt: skip
    outputs = [worker.communicate(timeout=600)[0].decode() for worker in workers]
    assert all(worker.returncode == 0 for worker in workers), "\n".join(output[-3000:] for output in outputs)
    study = optuna.load_study(
        study_name="sweep", storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    )
    trials = study.get_trials(states=[optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED])
    assert len(trials) == 4 and len({trial.user_attrs["pid"] for trial in trials}) == 2
    from sb3_rssm.zoo.hyperparams_opt import HYPERPARAMS_CONVERTER

    for trial in trials:
        assert {"learning_rate", "train_freq", "gradient_steps", "sequence_length", "size"} <= trial.params.keys()
        kwargs = HYPERPARAMS_CONVERTER[algo](trial.params)
        assert kwargs["train_freq"] == trial.params["train_freq"] and "policy_kwargs" in kwargs
    assert any(trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None for trial in trials)
