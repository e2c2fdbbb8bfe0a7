"""
Train with rl-baselines3-zoo: ``python -m sb3_rssm.zoo.train --algo dreamer_v1 --env Pendulum-v1`` (or
``sb3-rssm-train ...``). Every option of ``python -m rl_zoo3.train`` works; without ``--conf-file`` the
hyperparameters come from ``sb3_rssm/zoo/hyperparams/<algo>.yml``. Runs land in ``logs/<algo>/<env>_<n>/``.
"""

from __future__ import annotations

import sys
from typing import Optional

from sb3_rssm.zoo import register_algos, with_defaults


def main(argv: Optional[list[str]] = None) -> None:
    """
    Register the sb3_rssm algorithms and run the zoo's ``train()``.

    :param argv: command-line arguments without the program name (default: ``sys.argv[1:]``)
    """
    register_algos()
    from rl_zoo3.train import train

    args = with_defaults(sys.argv[1:] if argv is None else argv, "train")
    # the zoo's scripts parse sys.argv themselves
    saved = sys.argv
    sys.argv = [saved[0] if saved else "sb3-rssm-train", *args]
    try:
        train()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
