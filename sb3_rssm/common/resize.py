"""
Images of any size (84x84 Atari frames, 96x96, 40x40, ...) for world models whose conv encoder and decoder
are built for ``IMAGE_SIZE`` x ``IMAGE_SIZE`` (64x64) frames.

The design: a frame is resized once, with torch on the model's device, where it enters the package, and
everything inside (the model's observation space, its networks, its replay buffer) is 64x64.

* Training: the algorithm wraps its env in :class:`VecResizeImage`, after SB3's own wrappers (``Monitor``,
  ``DummyVecEnv``, ``VecTransposeImage``), in ``_wrap_env``; ``__init__``, ``set_env`` and ``load`` all go
  through it, so ``model.observation_space`` is the resized space (as it is the transposed one with
  ``VecTransposeImage``), and an env of the original size passes the space checks of ``set_env`` and ``load``.
  The wrapper resizes observations and the ``terminal_observation`` of ``infos``, so SB3's collection and the
  replay buffer only ever see 64x64 frames.
* Acting outside ``learn``: ``predict`` (hence ``evaluate_policy`` and ``EvalCallback``) takes observations of
  the env's original size too; the policy's ``obs_to_tensor`` resizes image entries whose height and width
  differ from its space's (channel-first or channel-last, one observation or a batch), then hands them to SB3's
  own conversion. (``EvalCallback`` warns that its env's type differs from the training env's, as it does
  beside SB3's ``VecTransposeImage``; the evaluation is right all the same.)
* ``VecNormalize`` (on vectors, or ``norm_obs=False``) below the resizing wrapper or SB3's ``VecTransposeImage``:
  SB3's collection stores the original observations it reads from ``VecNormalize``, which are neither transposed
  nor resized yet; the algorithm reads them through :class:`WrappedVecNormalize`, which passes them through the
  wrappers above (a second resize of those frames, in this case only). SB3's own off-policy algorithms store them
  untransposed (SB3 issue #819).

Resizing is bilinear with antialiasing (``torch.nn.functional.interpolate``, as PIL's bilinear filter does when
shrinking), rounded back to uint8. Building the networks for each size instead was not chosen: Dreamer's
decoder (kernels 5, 5, 6, 6 from 1x1) and every published hyperparameter assume 64x64 frames, and the papers
feed 64x64 frames too (DreamerV2 resizes Atari's to 64x64).
"""

from __future__ import annotations

from typing import Any, Callable, Union

import numpy as np
import torch as th
import torch.nn.functional as F
from gymnasium import spaces
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper, VecNormalize, VecTransposeImage
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from sb3_rssm.common.spaces import IMAGE_SIZE, split_observation_space

Observation = Union[np.ndarray, dict[str, np.ndarray]]


def resize_images(images: th.Tensor, size: int = IMAGE_SIZE) -> th.Tensor:
    """
    uint8 images (N, C, H, W) to (N, C, size, size) uint8: bilinear, antialiased when shrinking, rounded.

    :param images: channel-first uint8 images
    :param size: height and width of the result
    """
    resized = F.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    return resized.round_().clamp_(0, 255).to(th.uint8)


def resized_observation_space(observation_space: spaces.Space) -> spaces.Space:
    """
    The space the networks see for an env's (channel-first) space: image entries of another height or width
    become ``(C, IMAGE_SIZE, IMAGE_SIZE)`` uint8 Boxes; everything else is unchanged (and other spaces are
    returned as they are, for the space checks to refuse).
    """
    if isinstance(observation_space, spaces.Dict):
        return spaces.Dict({key: resized_observation_space(sub) for key, sub in observation_space.spaces.items()})
    if is_channel_first_image(observation_space):
        channels, height, width = observation_space.shape
        if (height, width) != (IMAGE_SIZE, IMAGE_SIZE):
            return spaces.Box(0, 255, (channels, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
    return observation_space


def is_channel_first_image(space: spaces.Space) -> bool:
    """A uint8 image space, channel-first (as SB3's ``VecTransposeImage`` leaves them), of any channel count."""
    return is_image_space(space, check_channels=False, normalized_image=False) and is_image_space_channels_first(space)


class ImageResizer:
    """
    Resizes the image entries of observations to ``IMAGE_SIZE`` x ``IMAGE_SIZE``, channel-first.

    An entry is resized when its height and width differ from ``IMAGE_SIZE``; it may be channel-first or
    channel-last (the channel count is known from the space), a single observation or a batch. Everything else
    (vectors, 64x64 images, shapes it cannot read) is returned as it is, for SB3's checks to handle.

    :param observation_space: a checked space with channel-first images: the wrapped env's, or the networks'
        (only the images' channel counts are read)
    """

    def __init__(self, observation_space: spaces.Space) -> None:
        images, _ = split_observation_space(observation_space, env_space=True)
        self.channels = {key: int(space.shape[0]) for key, space in images.items()}
        self.is_dict = isinstance(observation_space, spaces.Dict)

    def __call__(self, observation: Any, device: th.device) -> Any:
        """
        :param observation: an observation or a batch, as SB3 passes them (array, or dict of arrays)
        :param device: where to resize (the model's device)
        :return: the observation with its image entries resized (new arrays; the input is left as it is)
        """
        if not self.channels:
            return observation
        if not self.is_dict:
            return self._resize(observation, self.channels["observation"], device)
        if not isinstance(observation, dict):
            return observation
        return {
            key: self._resize(value, self.channels[key], device) if key in self.channels else value
            for key, value in observation.items()
        }

    @staticmethod
    def _resize(image: Any, channels: int, device: th.device) -> Any:
        shape = np.shape(image)
        if len(shape) < 3:
            return image
        if shape[-3] == channels:
            size, channel_last = shape[-2:], False
        elif shape[-1] == channels:
            size, channel_last = shape[-3:-1], True
        else:
            return image
        if tuple(size) == (IMAGE_SIZE, IMAGE_SIZE):
            return image
        frames = th.as_tensor(np.asarray(image), device=device)
        if channel_last:
            frames = frames.movedim(-1, -3)
        lead = frames.shape[:-3]
        resized = resize_images(frames.reshape(-1, *frames.shape[-3:]))
        return resized.reshape(*lead, *resized.shape[1:]).cpu().numpy()


class VecResizeImage(VecEnvWrapper):
    """
    Resizes the channel-first uint8 image observations of a vec env (and the ``terminal_observation`` of its
    infos) to ``IMAGE_SIZE`` x ``IMAGE_SIZE``, with torch on ``device``. The world-model algorithms add it
    themselves (see the module's docstring); ``device`` is set to the model's.

    :param venv: the vec env, with channel-first images (after ``VecTransposeImage``)
    :param device: where to resize
    """

    def __init__(self, venv: VecEnv, device: Union[th.device, str] = "cpu") -> None:
        super().__init__(venv, observation_space=resized_observation_space(venv.observation_space))
        self.resizer = ImageResizer(venv.observation_space)
        self.device = th.device(device)

    def resize(self, observation: Observation) -> Observation:
        """Observations (or one) of the wrapped env, resized."""
        return self.resizer(observation, self.device)

    def reset(self) -> VecEnvObs:
        return self.resize(self.venv.reset())

    def step_wait(self) -> VecEnvStepReturn:
        observations, rewards, dones, infos = self.venv.step_wait()
        for info in infos:
            if info.get("terminal_observation") is not None:
                info["terminal_observation"] = self.resize(info["terminal_observation"])
        return self.resize(observations), rewards, dones, infos


class WrappedVecNormalize:
    """
    A ``VecNormalize`` below wrappers that change observations (SB3's ``VecTransposeImage``, :class:`VecResizeImage`),
    as the algorithm's collection reads it: its original (unnormalized) observations passed through those wrappers'
    transforms, innermost first; everything else is the ``VecNormalize``'s own (its images are never normalized, so
    normalizing and unnormalizing transposed or resized observations is the same).

    :param vec_normalize: the ``VecNormalize``
    :param transforms: the observation transforms of the wrappers above it, innermost first
    """

    def __init__(self, vec_normalize: VecNormalize, transforms: list[Callable[[Observation], Observation]]) -> None:
        self.vec_normalize = vec_normalize
        self.transforms = transforms

    def get_original_obs(self) -> Observation:
        observation = self.vec_normalize.get_original_obs()
        for transform in self.transforms:
            observation = transform(observation)
        return observation

    def __getattr__(self, name: str) -> Any:
        # (looked up in __dict__: during unpickling or copying vec_normalize is not set yet)
        vec_normalize = self.__dict__.get("vec_normalize")
        if vec_normalize is None:
            raise AttributeError(name)
        return getattr(vec_normalize, name)


def observation_transforms_between(env: VecEnv, inner: VecEnv) -> list[Callable[[Observation], Observation]]:
    """
    The observation transforms of the wrappers from ``env`` (the outermost) down to ``inner``, innermost first: SB3's
    ``VecTransposeImage`` and :class:`VecResizeImage` change observations; other wrappers pass them on unchanged.
    """
    transforms: list[Callable[[Observation], Observation]] = []
    while env is not inner and isinstance(env, VecEnvWrapper):
        if isinstance(env, VecTransposeImage):
            transforms.append(env.transpose_observations)
        elif isinstance(env, VecResizeImage):
            transforms.append(env.resize)
        env = env.venv
    return transforms[::-1]
