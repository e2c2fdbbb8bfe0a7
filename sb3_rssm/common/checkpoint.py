"""
What makes a saved world-model agent safe to load and exact to resume: a check of a saved zip before
SB3 builds a model from it (missing, truncated, corrupt or foreign files get a clear error), and the
random-number-generator state that a checkpoint carries so a resumed run draws the same numbers as an
uninterrupted one.
"""

from __future__ import annotations

import io
import os
import pathlib
import random
import zipfile
from typing import Any, Optional, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.save_util import json_to_data, open_path

SavePath = Union[str, pathlib.Path, io.BufferedIOBase]


def missing_file_error(path: SavePath, suffix: str, what: str) -> FileNotFoundError:
    """
    The error for a file that is not there. SB3's ``open_path`` tries ``path`` and then ``path.<suffix>`` and
    reports only the second (``model.zip.zip``): this names the path the user gave, and the one also tried.

    :param path: the path given to ``load`` / ``load_replay_buffer``
    :param suffix: the suffix SB3 appends on its second try (``zip``, ``pkl``)
    :param what: what the file should hold, for the message
    """
    where = "" if os.path.isabs(str(path)) else f" in the working directory {os.getcwd()!r}"
    return FileNotFoundError(
        f"Cannot load the {what}: there is no file {str(path)!r}{where} (also tried: {f'{path}.{suffix}'!r}). Check the path."
    )


def read_saved_data(path: SavePath, custom_objects: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """
    The class parameters (the zip's ``data`` entry) of a model saved by SB3, after checking that the
    file is a complete, uncorrupted SB3 zip. A file object is left at the position it had.

    :param path: path of the zip (``.zip`` may be left out, as in SB3), or an open binary file
    :param custom_objects: objects that replace entries of ``data`` instead of being deserialized
    :return: the deserialized ``data``
    """
    try:
        file = open_path(path, "r", suffix="zip")
    except FileNotFoundError:
        raise missing_file_error(path, "zip", "saved model") from None
    position = file.tell()
    try:
        with zipfile.ZipFile(file) as archive:
            names = archive.namelist()
            missing = [name for name in ("data", "policy.pth") if name not in names]
            if missing:
                raise ValueError(
                    f"{path!r} is a zip file but not a model saved by Stable-Baselines3 (it lacks {missing}). "
                    "Pass the .zip written by model.save()."
                )
            corrupt = archive.testzip()
            if corrupt is not None:
                raise ValueError(
                    f"{path!r} is corrupt: the checksum of {corrupt!r} inside it does not match. "
                    "Restore the file from a backup or save the model again."
                )
            return json_to_data(archive.read("data").decode(), custom_objects=custom_objects)
    except (zipfile.BadZipFile, EOFError, OSError) as error:
        raise ValueError(
            f"{path!r} is not a readable zip file: it is truncated (e.g. a save that was interrupted), corrupt, "
            f"or not a saved model at all ({type(error).__name__}: {error}). Restore it from a backup or save "
            "the model again."
        ) from error
    finally:
        if isinstance(path, (str, pathlib.Path)):
            file.close()
        else:
            file.seek(position)


def capture_rng_state(action_space: Optional[spaces.Space] = None) -> dict[str, Any]:
    """
    Everything a training run draws random numbers from, outside the env: Python's ``random``, NumPy's
    global generator (replay sampling), torch's CPU generator (latent samples, exploration, CEM) and,
    when CUDA is in use, every CUDA generator, plus the action space's generator (warm-up actions).
    Stored as plain Python and NumPy values so the checkpoint needs no torch pickles.

    :param action_space: the model's action space
    """
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": th.get_rng_state().numpy(),
    }
    if th.cuda.is_available() and th.cuda.is_initialized():
        state["torch_cuda"] = [s.numpy() for s in th.cuda.get_rng_state_all()]
    if action_space is not None and action_space._np_random is not None:
        state["action_space"] = action_space.np_random.bit_generator.state
    return state


def restore_rng_state(state: dict[str, Any], action_space: Optional[spaces.Space] = None) -> None:
    """
    Put back generators captured by :func:`capture_rng_state`. CUDA generators are restored only where
    as many CUDA devices exist as when they were captured.

    :param state: the captured state
    :param action_space: the model's action space
    """
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    th.set_rng_state(th.as_tensor(state["torch"], dtype=th.uint8))
    cuda = state.get("torch_cuda")
    if cuda is not None and th.cuda.is_available() and th.cuda.device_count() == len(cuda):
        th.cuda.set_rng_state_all([th.as_tensor(s, dtype=th.uint8) for s in cuda])
    if action_space is not None and "action_space" in state:
        action_space.np_random.bit_generator.state = state["action_space"]
