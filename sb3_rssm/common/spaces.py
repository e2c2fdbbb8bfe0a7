"""
What the world models accept: validation of observation and action spaces with errors that name
the problem and the fix, and the conversion of actions to the vectors the RSSM consumes.
(Images of other sizes than the networks' are resized by :mod:`sb3_rssm.common.resize`.)
"""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first

#: the height and width of the images the conv encoder and decoder are built for
IMAGE_SIZE = 64
#: the smallest height or width an env's images may have: smaller ones are refused rather than blown up 4x and more
MIN_IMAGE_SIZE = 16


def check_observation_subspace(space: spaces.Space, key: str = "observation", env_space: bool = False) -> str:
    """
    Classify one observation space as ``"image"`` or ``"vector"``, or raise a clear error.

    :param space: a Box space (a Dict's entries are checked one by one by the caller)
    :param key: name used in error messages
    :param env_space: the space of an env, before the algorithm wraps it: channel-last images (SB3's
        ``VecTransposeImage`` turns them channel-first) and images of any size from ``MIN_IMAGE_SIZE`` on (the
        algorithm's :class:`~sb3_rssm.common.resize.VecResizeImage` brings them to ``IMAGE_SIZE``) are accepted.
        Otherwise the space is the networks' own: images must be channel-first ``IMAGE_SIZE`` x ``IMAGE_SIZE``.
    :return: "image" or "vector"
    """
    if not isinstance(space, spaces.Box):
        raise ValueError(
            f"Unsupported {key} space {space}: sb3_rssm world models take Box observations (images or vectors) "
            "or a flat Dict of them. Wrap the env to convert it (e.g. one-hot encode Discrete observations)."
        )
    if is_image_space(space, check_channels=False, normalized_image=False):
        channels_first = is_image_space_channels_first(space)
        if not channels_first and not env_space:
            raise ValueError(
                f"Image {key} space of shape {space.shape} is channel-last; the model expects channel-first "
                "(C, H, W). Pass the env to the algorithm (it applies VecTransposeImage) or wrap it in VecTransposeImage."
            )
        height, width = space.shape[1:] if channels_first else space.shape[:2]
        if env_space and min(height, width) < MIN_IMAGE_SIZE:
            raise ValueError(
                f"Image {key} of size {height}x{width} is too small to resize to the model's {IMAGE_SIZE}x{IMAGE_SIZE} "
                f"(each side needs at least {MIN_IMAGE_SIZE} pixels). Render larger frames, or pass the values as a "
                "vector (e.g. gymnasium.wrappers.FlattenObservation, with MlpPolicy)."
            )
        if not env_space and (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
            raise ValueError(
                f"Image {key} of size {height}x{width} does not fit the world model's networks, which are built for "
                f"{IMAGE_SIZE}x{IMAGE_SIZE} images. DreamerV1 and PlaNet resize other sizes themselves; a policy or "
                "world model built directly takes the resized space: "
                "sb3_rssm.common.resize.resized_observation_space(space)."
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
    observation_space: spaces.Space, env_space: bool = False
) -> tuple[dict[str, spaces.Box], dict[str, spaces.Box]]:
    """
    Split an observation space into image and vector entries.

    A plain Box becomes a one-entry dict under the key ``"observation"`` (SB3 passes it as a tensor;
    :func:`as_dict` wraps it).

    :param env_space: an env's space, before the algorithm's wrappers (see :func:`check_observation_subspace`)
    :return: (image spaces, vector spaces) by key, in the space's key order
    """
    if isinstance(observation_space, spaces.Dict):
        entries = dict(observation_space.spaces)
        for key, sub in entries.items():
            if isinstance(sub, (spaces.Dict, spaces.Tuple)):
                raise NotImplementedError(
                    f"Nested observation spaces are not supported (as in SB3): the entry {key!r} is a "
                    f"{type(sub).__name__}. Flatten the observation into one Dict of Box entries (e.g. keys "
                    f"'{key}.<name>'), with an observation wrapper."
                )
    else:
        entries = {"observation": observation_space}
    images, vectors = {}, {}
    for key, sub in entries.items():
        name = f"observation {key!r}" if len(entries) > 1 else "observation"
        kind = check_observation_subspace(sub, name, env_space)
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
