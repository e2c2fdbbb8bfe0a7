"""
Record a video of a trained agent with rl-baselines3-zoo:
``python -m sb3_rssm.zoo.record_video --algo dreamer_v1 --env sb3_rssm/dmc-cartpole-swingup-pixels-v0 -n 500``.
Every option of ``python -m rl_zoo3.record_video`` works; the default folder is ``logs``. The video goes to
``logs/<algo>/<env>_<n>/videos/`` (needs moviepy). dm_control pixel envs record the 64x64 frames the agent sees.
"""

from __future__ import annotations

import runpy
from typing import Optional

from sb3_rssm.zoo import run_zoo_script


def main(argv: Optional[list[str]] = None) -> None:
    """
    Run the zoo's ``record_video`` with the sb3_rssm algorithms registered.

    :param argv: command-line arguments without the program name (default: ``sys.argv[1:]``)
    """

    def run() -> None:
        # the zoo's record_video is a script body under `if __name__ == "__main__"`, with no function to call
        runpy.run_module("rl_zoo3.record_video", run_name="__main__")

    run_zoo_script("record_video", "sb3-rssm-record-video", run, argv)


if __name__ == "__main__":
    main()
