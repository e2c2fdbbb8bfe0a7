"""
Run a trained agent with rl-baselines3-zoo: ``python -m sb3_rssm.zoo.enjoy --algo dreamer_v1 --env Pendulum-v1``
(or ``sb3-rssm-enjoy ...``). Every option of ``python -m rl_zoo3.enjoy`` works; the default folder is ``logs``
(where the train launcher writes) instead of the zoo's ``rl-trained-agents``. The zoo carries the agent's belief
through ``predict(obs, state, episode_start)``, so the world-model agents filter observations as in training.
"""

from __future__ import annotations

import sys
from typing import Optional

from sb3_rssm.zoo import register_algos, with_defaults


def main(argv: Optional[list[str]] = None) -> None:
    """
    Register the sb3_rssm algorithms and run the zoo's ``enjoy()``.

    :param argv: command-line arguments without the program name (default: ``sys.argv[1:]``)
    """
    register_algos()
    from rl_zoo3.enjoy import enjoy

    args = with_defaults(sys.argv[1:] if argv is None else argv, "enjoy")
    saved = sys.argv
    sys.argv = [saved[0] if saved else "sb3-rssm-enjoy", *args]
    try:
        enjoy()
    finally:
        sys.argv = saved


if __name__ == "__main__":
    main()
