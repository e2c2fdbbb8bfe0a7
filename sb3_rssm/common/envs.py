"""Small environments for tests, the demo and quick checks: a point to steer (vectors or frames) and a colour cue to follow."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class PointMassEnv(gym.Env):
    """
    A point on a line must reach a target and stay there. Deterministic (with ``targets``, given the reset seed).

    The point starts at ``start``; each step moves it by ``step_size * action`` (clipped to [-1, 1]),
    and the reward is ``-|position - target|`` after the move. Observation: ``[position, target - position]``,
    or with ``pixels=True`` a 64x64x3 uint8 frame (channel-last, as gymnasium renders) of two progress bars:
    the upper half is red from the left edge to the point's column, the lower half green up to the target's.
    (Filled bars rather than thin marks: the pixels that differ grow with the distance, so a small model's
    reconstruction error leads it towards the right position instead of giving no gradient until it overlaps.)
    The frame is not symmetric in either axis or in its channels, so an image path that flips or swaps them
    between training and acting loses the task.
    An episode lasts ``max_steps`` steps and ends by truncation (time limit), never by termination.

    :param discrete: Discrete(3) actions (left, stay, right) instead of Box(-1, 1, (1,))
    :param max_steps: episode length
    :param start: initial position
    :param target: target position
    :param step_size: distance moved by a full action
    :param pixels: observe 64x64x3 frames instead of the two numbers
    :param targets: if given, every reset draws the target uniformly from these (instead of ``target``), so that
        a policy has to observe the target to know which way to go
    :param mirrored: reward reaching the mirror image of the shown target (``-target``) instead: the same
        observations, the opposite best action (an agent blind to rewards acts the same way in both tasks)
    """

    FRAME = 64
    MARK = 8  # the bars' length at position -1, in pixels

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        discrete: bool = False,
        max_steps: int = 30,
        start: float = -0.5,
        target: float = 0.5,
        step_size: float = 0.1,
        pixels: bool = False,
        targets: Optional[Sequence[float]] = None,
        mirrored: bool = False,
    ) -> None:
        self.discrete = discrete
        self.max_steps = max_steps
        self.start = start
        self.target = target
        self.step_size = step_size
        self.targets = None if targets is None else [float(t) for t in targets]
        self.mirrored = mirrored
        self.action_space = spaces.Discrete(3) if discrete else spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.pixels = pixels
        if pixels:
            self.observation_space = spaces.Box(0, 255, (self.FRAME, self.FRAME, 3), np.uint8)
        else:
            self.observation_space = spaces.Box(-2.0, 2.0, (2,), np.float32)
        self.position = start
        self.steps = 0

    def _column(self, position: float) -> int:
        return round((position + 1.0) / 2.0 * (self.FRAME - self.MARK))

    def _obs(self) -> np.ndarray:
        if not self.pixels:
            return np.array([self.position, self.target - self.position], dtype=np.float32)
        frame = np.zeros((self.FRAME, self.FRAME, 3), dtype=np.uint8)
        half, mark, margin = self.FRAME // 2, self.MARK, self.FRAME // 16
        point, target = self._column(self.position), self._column(self.target)
        frame[margin : half - margin, : point + mark, 0] = 255
        frame[half + margin : self.FRAME - margin, : target + mark, 1] = 255
        return frame

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.position, self.steps = self.start, 0
        if self.targets is not None:
            self.target = self.targets[int(self.np_random.integers(len(self.targets)))]
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        move = float(action) - 1.0 if self.discrete else float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0))
        self.position = float(np.clip(self.position + self.step_size * move, -1.0, 1.0))
        self.steps += 1
        reward = -abs(self.position - (-self.target if self.mirrored else self.target))
        return self._obs(), reward, False, self.steps >= self.max_steps, {}


class ColourCueEnv(gym.Env):
    """
    A contextual bandit seen through a camera: each 64x64x3 frame (channel-last, as gymnasium renders) shows a cue,
    and the reward of the action taken on it is ``cue * action``, with the cue +1 or -1 and the action in [-1, 1].
    Cue +1 is drawn as a red upper half over a green lower half, cue -1 as green over red, so turning a frame upside
    down or swapping its red and green channels turns one cue exactly into the other: an agent whose image path
    does that between training and acting gets the opposite of every reward. A new cue is drawn after every step,
    from the env's seeded generator, so the best return is ``max_steps`` and a policy that ignores the frames gets 0
    on average. An episode ends by truncation after ``max_steps`` steps.

    :param max_steps: episode length
    """

    FRAME = 64

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, max_steps: int = 20) -> None:
        self.max_steps = max_steps
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.observation_space = spaces.Box(0, 255, (self.FRAME, self.FRAME, 3), np.uint8)
        self.cue, self.steps = 1.0, 0

    def _obs(self) -> np.ndarray:
        frame = np.zeros((self.FRAME, self.FRAME, 3), dtype=np.uint8)
        half, margin = self.FRAME // 2, self.FRAME // 16
        upper, lower = (0, 1) if self.cue > 0 else (1, 0)
        frame[margin : half - margin, margin:-margin, upper] = 255
        frame[half + margin : self.FRAME - margin, margin:-margin, lower] = 255
        return frame

    def _draw(self) -> None:
        self.cue = 1.0 if self.np_random.random() < 0.5 else -1.0

    def reset(self, *, seed: Optional[int] = None, options: Optional[dict[str, Any]] = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.steps = 0
        self._draw()
        return self._obs(), {}

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict]:
        reward = self.cue * float(np.clip(np.asarray(action).reshape(-1)[0], -1.0, 1.0))
        self.steps += 1
        self._draw()
        return self._obs(), reward, False, self.steps >= self.max_steps, {}
