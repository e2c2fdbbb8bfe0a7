"""
What the world models accept: validation of observation and action spaces with errors that name
the problem and the fix, and the conversion of actions to the vectors the RSSM consumes.
"""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

IMAGE_SIZE = 64


def check_observation_subspace(space: spaces.Space, key: str = "observation", allow_channel_last: bool = False) -> str:
    """
    Classify one observation space as ``"image"`` or ``"vector"``, or raise a clear error.

    :param space: a Box space (a Dict's entries are checked one by one by the caller)
    :param key: name used in error messages
    :param allow_channel_last: accept (H, W, C) images (before SB3 wraps the env in VecTransposeImage)
    :return: "image" or "vector"
    """
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"Unsupported {key} space {space}: sb3_rssm world models take Box observations (images or vectors) "
            "or a flat Dict of them. Wrap the env to convert it (e.g. one-hot encode Discrete observations)."
        )
    if is_image_space(space, check_channels=False, normalized_image=False):
        channels_first = is_image_space_channels_first(space)
        if not channels_first and not allow_channel_last:
            raise ValueError(
                f"Image {key} space of shape {space.shape} is channel-last; the model expects channel-first "
                "(C, H, W). Pass the env to the algorithm (it applies VecTransposeImage) or wrap it in VecTransposeImage."
            )
        height, width = space.shape[1:] if channels_first else space.shape[:2]
        if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"Image {key} of size {height}x{width} is not supported: the Dreamer conv encoder and decoder "
                f"work on {IMAGE_SIZE}x{IMAGE_SIZE} images. Resize the env's frames, e.g. with "
                f"gymnasium.wrappers.ResizeObservation(env, ({IMAGE_SIZE}, {IMAGE_SIZE}))."
            )
        return "image"
    if len(space.shape) >= 3:
        raise ValueError(
            f"{key} space {space} has shape {space.shape} but is not a uint8 image in [0, 255]. Images must be "
            "uint8 with bounds [0, 255] (do not use VecNormalize(norm_obs=True) on images: pass norm_obs=False); "
            "other observations must be vectors."
        )
    if not (np.all(np.isfinite(space.low)) or np.issubdtype(space.dtype, np.floating)):
        raise ValueError(f"{key} space {space} has non-finite bounds on a non-float dtype")
    return "vector"


def split_observation_space(
    observation_space: spaces.Space, allow_channel_last: bool = False
) -> tuple[dict[str, spaces.Box], dict[str, spaces.Box]]:
    """
    Split an observation space into image and vector entries.

    A plain Box becomes a one-entry dict under the key ``"observation"`` (SB3 passes it as a tensor;
    :func:`as_dict` wraps it).

    :return: (image spaces, vector spaces) by key, in the space's key order
    """
    if isinstance(observation_space, spaces.Dict):
        entries = dict(observation_space.spaces)
        for key, sub in entries.items():
            if isinstance(sub, (spaces.Dict, spaces.Tuple)):
                raise ValueError(f"Nested observation space under key {key!r} is not supported: flatten the Dict first.")
    else:
        entries = {"observation": observation_space}
    images, vectors = {}, {}
    for key, sub in entries.items():
        name = f"observation {key!r}" if len(entries) > 1 else "observation"
        kind = check_observation_subspace(sub, name, allow_channel_last)
        (images if kind == "image" else vectors)[key] = sub
    return images, vectors


def check_action_space(action_space: spaces.Space) -> None:
    """
    Raise a clear error unless ``action_space`` is a bounded Box (of any shape: the model flattens it) or a
    Discrete space.
    """
    if isinstance(action_space, spaces.Discrete):
        return
    if isinstance(action_space, spaces.Box):
        if not (np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))):
            raise ValueError(
                f"Box action space {action_space} has infinite bounds: the tanh actor and CEM need finite bounds. "
                "Give the space finite low/high (e.g. with gymnasium.wrappers.ClipAction or RescaleAction)."
            )
        return
    raise ValueError(
        f"Unsupported action space {action_space}: sb3_rssm supports Box (continuous) and Discrete actions. "
        "Wrap the env to expose one of them (e.g. flatten a MultiDiscrete space into a Discrete one)."
    )


def action_size(action_space: spaces.Space) -> int:
    """Length of the action vector the RSSM consumes (one-hot for Discrete, flattened for a Box of any shape)."""
    check_action_space(action_space)
    if isinstance(action_space, spaces.Discrete):
        return int(action_space.n)
    return int(np.prod(action_space.shape))


def actions_to_model(actions: np.ndarray, action_space: spaces.Space) -> np.ndarray:
    """
    One action per env, as SB3 hands them to a replay buffer (Box: scaled to [-1, 1], in the space's shape;
    Discrete: indices), to the (n_envs, action_size) float32 vectors the RSSM consumes (Discrete: one-hot;
    Box: flattened, as the replay buffer stores them).
    """
    if isinstance(action_space, spaces.Discrete):
        indices = np.asarray(actions, dtype=np.int64).reshape(-1) - int(action_space.start)
        return np.eye(action_space.n, dtype=np.float32)[indices]
    return np.asarray(actions, dtype=np.float32).reshape(-1, action_size(action_space))


def one_hot_to_index(actions: th.Tensor, action_space: spaces.Discrete) -> th.Tensor:
    return actions.argmax(dim=-1) + int(action_space.start)
