"""
Train with rl-baselines3-zoo: ``python -m sb3_rssm.zoo.train --algo dreamer_v1 --env Pendulum-v1`` (or
``sb3-rssm-train ...``). Every option of ``python -m rl_zoo3.train`` works; without ``--conf-file`` the
hyperparameters come from ``sb3_rssm/zoo/hyperparams/<algo>.yml``. Runs land in ``logs/<algo>/<env>_<n>/``.
"""

from __future__ import annotations

from typing import Optional

from sb3_rssm.zoo import run_zoo_script


def main(argv: Optional[list[str]] = None) -> None:
    """
    Run the zoo's ``train`` with the sb3_rssm algorithms registered.

    :param argv: command-line arguments without the program name (default: ``sys.argv[1:]``)
    """

    def run() -> None:
        from rl_zoo3.train import train

        train()

    run_zoo_script("train", "sb3-rssm-train", run, argv)


if __name__ == "__main__":
    main()
