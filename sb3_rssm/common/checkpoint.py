"""
Saving and loading a world-model agent, safely and exactly: a check of a saved zip before SB3 builds a model
from it (missing, truncated, corrupt or foreign files get a clear error), the random-number-generator state that a
checkpoint carries so a resumed run draws the same numbers as an uninterrupted one, and :class:`CheckpointMixin`,
the algorithm's ``save`` / ``load`` / ``set_parameters`` / ``load_replay_buffer`` built on them (as SB3 keeps
``save_util.py`` apart from its algorithms).
"""

from __future__ import annotations

import io
import os
import pathlib
import pickle
import random
import warnings
import zipfile
from collections.abc import Iterable
from typing import Any, ClassVar, Optional, TypeVar, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.save_util import json_to_data, load_from_pkl, open_path, save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv

from sb3_rssm.common.buffers import SequenceReplayBuffer
from sb3_rssm.common.policies import BeliefPolicy

SavePath = Union[str, pathlib.Path, io.BufferedIOBase]
SelfCheckpointMixin = TypeVar("SelfCheckpointMixin", bound="CheckpointMixin")


def _pickle_path(path: Union[str, pathlib.Path]) -> str:
    """The file SB3's ``save_to_pkl`` / ``load_from_pkl`` use for ``path``: ``.pkl`` added where it has no suffix."""
    path = pathlib.Path(path)
    return str(path if path.suffix else path.with_name(path.name + ".pkl"))


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


class CheckpointMixin:
    """
    Persistence of :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm` (an ``OffPolicyAlgorithm``,
    whose ``save`` / ``load`` it extends): files checked before SB3 reads them, the random generators and the float16
    loss scale saved and restored, the update's optimizers put back in the form it runs them after a load, and replay
    buffers checked against the model before they replace its own.
    """

    #: every policy of this algorithm subclasses it; ``load`` refuses files saved with another policy
    policy_base: ClassVar[type[BeliefPolicy]] = BeliefPolicy
    policy: BeliefPolicy
    replay_buffer: SequenceReplayBuffer
    grad_scaler: Optional[th.amp.GradScaler]
    _grad_scaler_state: Optional[dict[str, Any]]
    _rng_state: Optional[dict[str, Any]]

    def set_parameters(
        self,
        load_path_or_dict: Union[str, dict[str, Any]],
        exact_match: bool = True,
        device: Union[th.device, str] = "auto",
    ) -> None:
        """
        SB3's ``set_parameters``; then the loaded optimizer states are put in the form this model's update runs
        (``load_state_dict`` brings back the saving model's ``capturable`` flags and tensor learning rates).

        Parameters: as :meth:`stable_baselines3.common.base_class.BaseAlgorithm.set_parameters`.
        """
        super().set_parameters(load_path_or_dict, exact_match, device)
        # the loaded optimizer states are new tensors: a captured graph would go on stepping the old ones
        self._build_update()

    def save_replay_buffer(self, path: SavePath) -> None:
        """
        Save the replay buffer as a pickle, as SB3 does. A disk buffer (``storage="disk"``) pickles its in-memory
        part, and its files are copied (by the kernel, without passing through this process's memory) into the
        folder ``<file>.pkl.data`` beside the pickle, so that the checkpoint does not change as the run goes on.

        :param path: the file (``.pkl`` is added where it has no suffix)
        """
        buffer = self.replay_buffer
        if not (isinstance(buffer, SequenceReplayBuffer) and buffer.storage == "disk"):
            super().save_replay_buffer(path)  # type: ignore[misc]
            return
        if isinstance(path, io.BufferedIOBase):
            raise ValueError(
                "A disk replay buffer is saved to a path (its files are copied beside the pickle), not to a file object."
            )
        pickle_path = _pickle_path(path)
        data = pickle_path + ".data"
        buffer._claim_storage()  # a buffer saved before its first step creates its files here, under its lock
        arrays = buffer.disk_arrays()
        # a buffer loaded with in_place=True saved onto its own checkpoint: the files are already there
        own_folder = buffer.path is not None and os.path.isdir(data) and os.path.samefile(data, buffer.path)
        for array in arrays if not own_folder else ():
            array.copy_to(data)
        # the pickle names the data folder relative to itself, so that the checkpoint can be moved as a whole
        directories = [array.directory for array in arrays]
        try:
            for array in arrays:
                array.directory = os.path.basename(data)
            save_to_pkl(pickle_path, buffer, self.verbose)
        finally:
            for array, directory in zip(arrays, directories):
                array.directory = directory

    def load_replay_buffer(
        self,
        path: Union[str, pathlib.Path, io.BufferedIOBase],
        truncate_last_traj: bool = True,
        in_place: bool = False,
    ) -> None:
        """
        Load a replay buffer saved by ``save_replay_buffer``, after checking that it fits this model (a
        :class:`SequenceReplayBuffer` with the same spaces and number of env streams). The file is a pickle:
        load only files you trust.

        A disk buffer's files are copied into this model's storage folder (or read into memory where this model
        keeps its buffer in memory), and the checkpoint stays as it was. With ``in_place=True`` the buffer goes on
        in the checkpoint's own files instead, whatever this model's storage: no copy, so resuming takes seconds
        instead of the time to copy the files, but the checkpoint then changes with the run and no longer holds
        the state it was saved with.

        :param path: path of the pickled buffer
        :param truncate_last_traj: unused (kept for SB3's signature); unfinished episodes are continued or
            cut by the episode-start flags
        :param in_place: (disk buffers) use the checkpoint's files as the run's storage, without copying them
        """
        try:
            buffer = load_from_pkl(path, self.verbose)
        except FileNotFoundError:
            raise missing_file_error(path, "pkl", "replay buffer") from None
        except (EOFError, pickle.UnpicklingError, ValueError, AttributeError, ImportError) as error:
            raise ValueError(
                f"Could not read a replay buffer from {path!r}: the file is truncated or not a pickle ({error})."
            ) from error
        if not isinstance(buffer, SequenceReplayBuffer):
            raise ValueError(
                f"{path!r} holds a {type(buffer).__name__}, not a SequenceReplayBuffer: "
                "it was not saved by a world-model agent."
            )
        mismatches = [
            f"{name}: buffer {theirs} vs model {ours}"
            for name, theirs, ours in (
                ("observation space", buffer.observation_space, self.observation_space),
                ("action space", buffer.action_space, self.action_space),
                ("n_envs", buffer.n_envs, self.n_envs),
            )
            if theirs != ours
        ]
        if mismatches:
            raise ValueError(f"The replay buffer in {path!r} does not fit this model: " + "; ".join(mismatches))
        layout = [
            f"{name} has shape {np.shape(getattr(buffer, name, None))}, "
            f"expected ({buffer.buffer_size}, {buffer.n_envs}{', ...' if name == 'actions' else ''})"
            for name in ("actions", "rewards", "is_first", "terminated", "truncated")
            if np.shape(getattr(buffer, name, None))[:2] != (buffer.buffer_size, buffer.n_envs)
        ]
        if layout or not hasattr(buffer, "env_pos") or np.shape(buffer.env_pos) != (buffer.n_envs,):
            raise ValueError(
                f"The replay buffer in {path!r} does not have the sequence layout of this version of sb3_rssm "
                f"(one ring of steps per env): {'; '.join(layout) or 'env_pos is missing'}. It was saved by another "
                "version or modified; collect a new buffer."
            )
        if getattr(buffer, "storage", "memory") == "disk":
            if isinstance(path, io.BufferedIOBase):
                raise ValueError("A disk replay buffer is loaded from its path (its files lie beside it), not a file object.")
            arrays = buffer.disk_arrays()
            source = os.path.join(os.path.dirname(_pickle_path(path)), arrays[0].directory) if arrays else ""
            current = self.replay_buffer
            # this model's own disk storage takes the saved data; an in-memory model reads it into memory
            directory = current.path if isinstance(current, SequenceReplayBuffer) and current.storage == "disk" else None
            buffer.check_files(source)  # before this model's buffer is let go
            if isinstance(current, SequenceReplayBuffer):
                current.release_storage()
            try:
                buffer.adopt_files(source, directory, in_place=in_place)
            except BaseException:
                if isinstance(current, SequenceReplayBuffer):
                    current._claim_storage()  # the model keeps its buffer, and its folder's lock
                raise
        elif in_place:
            raise ValueError(
                f"load_replay_buffer(..., in_place=True) is for buffers saved with storage='disk'; the one in {path!r} "
                "was saved in memory. Load it without in_place."
            )
        elif isinstance(self.replay_buffer, SequenceReplayBuffer) and self.replay_buffer.storage == "disk":
            warnings.warn(
                f"The replay buffer in {path!r} was saved in memory: it stays in memory, and this model's disk storage "
                f"({self.replay_buffer.path!r}) is let go. To keep replay on disk, collect into a new disk buffer.",
                stacklevel=2,
            )
            self.replay_buffer.release_storage()
        # steps are stored one by one, so any chunk length can be drawn: train with this model's
        buffer.sequence_length = self.sequence_length
        buffer.device = self.device
        self.replay_buffer = buffer

    def _excluded_save_params(self) -> list[str]:
        # the belief state belongs to the collection env's current episodes, not to the model; the
        # once-per-model flags start afresh in a loaded model
        excluded = [
            "_filter_state",
            "grad_scaler",
            "update",
            "_update_runner",
            "_imagination_runner",
            "_loss_runner",
            "_replay_posterior",
            "_warned_short_buffer",
            "_open_loop_logged",
            "_compile_announced",
        ]
        return [*super()._excluded_save_params(), *excluded]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", *(f"policy.{name}" for name in self.policy.optimizer_names)], []

    def save(
        self,
        path: SavePath,
        exclude: Optional[Iterable[str]] = None,
        include: Optional[Iterable[str]] = None,
    ) -> None:
        """
        Save the model as SB3 does, plus the state of the random generators (Python, NumPy, torch, the
        action space): a seeded run resumed from this file draws the same numbers as one never stopped.

        :param path: path of the zip, or an open binary file
        :param exclude: attributes not to save, on top of the default ones
        :param include: attributes to save even if excluded by default
        """
        self._rng_state = capture_rng_state(self.action_space)
        self._grad_scaler_state = None if self.grad_scaler is None else self.grad_scaler.state_dict()
        try:
            super().save(path, exclude, include)
        finally:
            self._rng_state = None
            self._grad_scaler_state = None

    @classmethod
    def load(  # type: ignore[override]
        cls: type[SelfCheckpointMixin],
        path: SavePath,
        env: Optional[GymEnv] = None,
        device: Union[th.device, str] = "auto",
        custom_objects: Optional[dict[str, Any]] = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfCheckpointMixin:
        """
        Load a model saved by :meth:`save`. Before SB3 builds anything, the file is checked: a missing,
        truncated or corrupt file, a zip that is not an SB3 model, or a model of another algorithm gets a
        ``FileNotFoundError`` / ``ValueError`` that says so. An ``env`` whose spaces differ from the saved
        ones is refused by SB3 with a ``ValueError`` naming both. When the model was seeded, the random
        generators are put back as they were at the save (SB3 alone would reseed them from ``seed``).

        Parameters: as :meth:`stable_baselines3.common.base_class.BaseAlgorithm.load`.
        """
        data = read_saved_data(path, custom_objects)
        policy_class = data.get("policy_class")
        if not (isinstance(policy_class, type) and issubclass(policy_class, cls.policy_base)):
            name = getattr(policy_class, "__qualname__", repr(policy_class))
            module = getattr(policy_class, "__module__", "?")
            raise ValueError(
                f"{path!r} holds a model whose policy is {module}.{name}, not a {cls.policy_base.__name__}: it was "
                f"saved by another algorithm than {cls.__name__}. Load it with the class that saved it."
            )
        model = super().load(path, env, device, custom_objects, print_system_info, force_reset, **kwargs)
        if model._rng_state is not None and model.seed is not None:
            restore_rng_state(model._rng_state, model.action_space)
        if model.grad_scaler is not None and model._grad_scaler_state:
            model.grad_scaler.load_state_dict(model._grad_scaler_state)
        model._rng_state = None
        model._grad_scaler_state = None
        return model
