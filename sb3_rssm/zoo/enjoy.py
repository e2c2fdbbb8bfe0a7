"""
Run a trained agent with rl-baselines3-zoo: ``python -m sb3_rssm.zoo.enjoy --algo dreamer_v1 --env Pendulum-v1``
(or ``sb3-rssm-enjoy ...``). Every option of ``python -m rl_zoo3.enjoy`` works; the default folder is ``logs``
(where the train launcher writes) instead of the zoo's ``rl-trained-agents``. The zoo carries the agent's belief
through ``predict(obs, state, episode_start)``, so the world-model agents filter observations as in training.
"""

from __future__ import annotations

from typing import Optional

from sb3_rssm.zoo import run_zoo_script


def main(argv: Optional[list[str]] = None) -> None:
    """
    Run the zoo's ``enjoy`` with the sb3_rssm algorithms registered.

    :param argv: command-line arguments without the program name (default: ``sys.argv[1:]``)
    """

    def run() -> None:
        from rl_zoo3.enjoy import enjoy

        enjoy()

    run_zoo_script("enjoy", "sb3-rssm-enjoy", run, argv)


if __name__ == "__main__":
    main()
