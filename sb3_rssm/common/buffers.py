"""
The sequence replay buffer: SB3 transitions re-indexed into per-env streams of steps, sampled as
fixed-length (batch, time) chunks with episode-start flags.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from typing import Any, Optional, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.vec_env import VecNormalize

from sb3_rssm.common.disk import DiskArray, StorageLock
from sb3_rssm.common.spaces import action_size, actions_to_model
from sb3_rssm.common.type_aliases import SequenceSamples

NumpyObs = Union[np.ndarray, dict[str, np.ndarray]]


class SequenceReplayBuffer(ReplayBuffer):
    """
    Replay buffer of per-env step streams for world models.

    SB3 hands the buffer transitions ``(obs, next_obs, action, reward, done)``. Each env's stream stores
    them in the alignment of :mod:`sb3_rssm.common.rssm`, one row per step: the observation o_t, the
    action a_{t-1} that led to it, the reward r_t received on arriving, and ``is_first`` /
    ``terminated`` / ``truncated`` flags. Every observation is stored once, in its own dtype (uint8
    images stay uint8), and there is no ``next_observations`` copy: an episode's first observation gets
    a row of its own (zero action and reward, ``is_first``), every transition then adds the row of its
    next observation. Terminal observations come from ``infos[i]["terminal_observation"]`` as SB3 passes
    them; time-limit truncation (``TimeLimit.truncated``) is kept apart from termination.

    Memory: for a 64x64x3 uint8 image and a 6-dim action, a row takes 12,288 + 24 + 4 + 3 = 12,319 bytes,
    that is at most 12.5 KB per transition (plus one extra row per episode).

    Capacity: ``buffer_size`` rows in all, split evenly into ``buffer_size // n_envs`` rows per env stream as
    in SB3's buffer; each stream is a ring that overwrites its oldest rows.

    Sampling draws chunks of ``sequence_length`` consecutive rows of one env stream, uniformly over all
    valid chunks. A chunk may cross episode boundaries: ``is_first`` tells the model where to reset.
    Observations and rewards pass through ``VecNormalize`` on sampling, as in SB3's buffer.

    Replay context (``replay_context=True``; DreamerV3's ``replay_context: 1``): the buffer also keeps, per row,
    the latent state ``(h_t, s_t)`` the agent's filter reached on that row's observation (written while acting,
    :meth:`store_latents`, and refreshed with the training posteriors, :meth:`write_latents`), and every sampled
    chunk carries the stored state of the row before it (``context_deterministic`` / ``context_stochastic``), so
    that a chunk cut from the middle of an episode starts from a belief instead of a blank state. Where no state
    precedes a chunk (the stream's oldest row, a row after an episode's last observation, a row never filtered)
    the context is zeros, the RSSMs' initial state.

    Storage (``storage``): ``"memory"`` keeps every array in NumPy arrays; ``"disk"`` keeps the observations and
    the replay context's latent states, which are nearly all of a pixel buffer's bytes, in files under ``path``
    (:class:`~sb3_rssm.common.disk.DiskArray`: read and written through file descriptors, so the process's resident
    memory does not grow with the buffer; the OS page cache holds what fits), and the per-step scalars (action,
    reward, flags: about 40 bytes a step) in memory. Sampling draws the same chunks from either at a fixed seed.
    One run at a time may use a ``path`` (a lock file says which).

    The buffer is saved with pickle (``save_replay_buffer``): load only files you trust. A disk buffer's pickle
    holds its in-memory part, and its files are copied into a folder beside it (``<file>.pkl.data``).

    :param buffer_size: capacity in rows (all env streams together)
    :param observation_space: observation space
    :param action_space: Box or Discrete action space
    :param device: device of the sampled tensors
    :param n_envs: number of parallel envs
    :param optimize_memory_usage: unused (observations are always stored once); kept for SB3's signature
    :param handle_timeout_termination: kept for SB3's signature; truncation is always kept apart
    :param sequence_length: default length of sampled chunks
    :param replay_context: keep each row's latent state and sample it as the context of the next chunk
    :param storage: ``"memory"`` or ``"disk"`` (see above)
    :param path: the folder of a disk buffer's files (created if missing; must not be in use by another run)
    :param max_memory_share: warn at construction when the buffer, once full, would take more than this share of
        the machine's memory (NumPy reserves the arrays now, and the OS commits their pages as they fill); 0 or
        None: never warn
    """

    # class defaults: buffers pickled before the replay context and the disk storage existed load without them
    replay_context = False
    storage = "memory"
    path: Optional[str] = None
    latent_deterministic: Optional[np.ndarray] = None
    latent_stochastic: Optional[np.ndarray] = None
    last_sample: Optional[tuple[np.ndarray, np.ndarray]] = None

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: Union[th.device, str] = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
        sequence_length: int = 50,
        replay_context: bool = False,
        storage: str = "memory",
        path: Optional[str] = None,
        max_memory_share: Optional[float] = 0.25,
    ) -> None:
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        if storage not in ("memory", "disk"):
            raise ValueError(f"Unknown replay storage {storage!r}: choose 'memory' or 'disk'.")
        if storage == "disk" and not path:
            raise ValueError(
                "A disk replay buffer needs a folder for its files: replay_buffer_kwargs=dict(storage='disk', path=...)."
            )
        if storage == "memory" and path:
            raise ValueError(f"path={path!r} is for a disk buffer: add storage='disk' to replay_buffer_kwargs, or drop path.")
        self.storage, self.path = storage, None if path is None else os.path.abspath(os.fspath(path))
        # taken at the first step stored: a model loaded only to act does not claim the folder
        self._lock: Optional[StorageLock] = None
        if sequence_length < 1:
            raise ValueError(f"sequence_length must be positive, got {sequence_length}")
        if buffer_size // n_envs < sequence_length:
            raise ValueError(
                f"The replay buffer can never hold a sequence: buffer_size={buffer_size} split over {n_envs} env "
                f"stream(s) gives {buffer_size // n_envs} rows per stream, fewer than sequence_length={sequence_length}, "
                f"so training would never start. Raise buffer_size to at least {sequence_length * n_envs} "
                "(sequence_length * n_envs) or shorten sequence_length."
            )
        self.buffer_size = max(buffer_size // n_envs, 1)
        self.sequence_length = sequence_length
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination
        self.model_action_size = action_size(action_space)
        shape = (self.buffer_size, n_envs)
        if isinstance(observation_space, spaces.Dict):
            self.observations: NumpyObs = {
                key: self._array(f"observations.{key}", shape + space.shape, space.dtype)
                for key, space in observation_space.spaces.items()
            }
        else:
            self.observations = self._array("observations", shape + observation_space.shape, observation_space.dtype)
        self.actions = np.zeros((*shape, self.model_action_size), dtype=np.float32)
        self.rewards = np.zeros(shape, dtype=np.float32)
        self.is_first = np.zeros(shape, dtype=bool)
        self.terminated = np.zeros(shape, dtype=bool)
        self.truncated = np.zeros(shape, dtype=bool)
        self.env_pos = np.zeros(n_envs, dtype=np.int64)
        self.env_full = np.zeros(n_envs, dtype=bool)
        # True where the env's next ``obs`` starts an episode and needs a row of its own
        self.episode_start = np.ones(n_envs, dtype=bool)
        self.steps_added = 0
        self.replay_context = replay_context
        # allocated by the first store_latents, which knows the model's sizes
        self.latent_deterministic = None
        self.latent_stochastic = None
        self.latent_valid = np.zeros(shape, dtype=bool)
        self._pending_latents: Optional[tuple[np.ndarray, np.ndarray, np.ndarray]] = None
        self.last_sample = None
        self.max_memory_share = max_memory_share
        if max_memory_share and storage == "memory":
            self._warn_if_large(max_memory_share)

    def _array(self, name: str, shape: tuple[int, ...], dtype: Any) -> Any:
        """A per-step array: in memory, or a file of the disk storage."""
        if self.storage == "disk":
            assert self.path is not None
            return DiskArray(self.path, name, shape, dtype)
        return np.zeros(shape, dtype=dtype)

    def _claim_storage(self) -> None:
        """Lock a disk buffer's folder before its files are first written (a second run there fails here)."""
        if self.storage == "disk" and self._lock is None:
            assert self.path is not None
            self._lock = StorageLock(self.path)

    def disk_arrays(self) -> list[DiskArray]:
        """The arrays kept in files (none for in-memory storage)."""
        arrays = list(self.observations.values()) if isinstance(self.observations, dict) else [self.observations]
        arrays += [self.latent_deterministic, self.latent_stochastic]
        return [a for a in arrays if isinstance(a, DiskArray)]

    def release_storage(self) -> None:
        """Close the disk arrays' files and release the storage folder's lock (the buffer is not used after this)."""
        for array in self.disk_arrays():
            array.close()
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def check_files(self, source: str) -> list[DiskArray]:
        """Point the disk arrays at the files in ``source`` and check each (missing or truncated: a clear error)."""
        arrays = self.disk_arrays()
        for array in arrays:
            array.relocate(source)
            array.check()
        return arrays

    def adopt_files(self, source: str, directory: Optional[str], in_place: bool = False) -> None:
        """
        Take the data of a disk buffer just unpickled from the files in ``source`` (the copy a checkpoint holds):
        copied into ``directory``, which this buffer then uses and locks (the checkpoint stays as it was); with
        ``in_place``, used where they are (no copy: the checkpoint's files become the run's and change with it);
        or, with ``directory=None``, read into memory (the buffer becomes an in-memory one).

        A copy goes to ``<name>.bin.partial`` files first and is renamed into place only when every file is
        copied, so a copy that fails (a full disk) leaves the files already in ``directory`` as they were.

        :param source: folder of the saved files
        :param directory: this run's storage folder, or None
        :param in_place: use the files in ``source`` themselves
        """
        arrays = self.check_files(source)
        if in_place:
            read_only = [array.path for array in arrays if not array.writable()]
            if read_only:
                raise PermissionError(
                    f"load_replay_buffer(..., in_place=True) writes to the checkpoint's files, and {read_only} cannot be "
                    "written (a read-only copy?). Load it without in_place (its files are then copied), or make them "
                    "writable."
                )
            self.path = os.path.abspath(source)
            self._lock = StorageLock(self.path)
            for array in arrays:
                array.relocate(self.path)  # absolute: the run may change its working directory
            return
        if directory is None:
            for name in ("latent_deterministic", "latent_stochastic"):
                if isinstance(getattr(self, name), DiskArray):
                    setattr(self, name, getattr(self, name).read_all())
            if isinstance(self.observations, dict):
                self.observations = {key: array.read_all() for key, array in self.observations.items()}  # type: ignore[union-attr]
            else:
                self.observations = self.observations.read_all()  # type: ignore[union-attr]
            self.storage, self.path = "memory", None
            return
        self.path = os.path.abspath(directory)
        self._lock = StorageLock(self.path)
        partial: list[str] = []
        try:
            for array in arrays:
                partial.append(array.copy_to(self.path, suffix=".partial"))
        except BaseException:
            for name in partial:
                with contextlib.suppress(OSError):
                    os.unlink(name)
            self.release_storage()
            raise
        for array, name in zip(arrays, partial):
            os.replace(name, name.removesuffix(".partial"))
            array.relocate(self.path)

    def __getstate__(self) -> dict[str, Any]:
        # the lock belongs to the process that holds it
        return {key: value for key, value in vars(self).items() if key != "_lock"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._lock = None

    def _warn_if_large(self, max_memory_share: float, before: int = 0) -> None:
        """
        Warn, with the figures and the way out, when the full buffer would take much of the machine's memory.

        :param max_memory_share: the share of the machine's memory that warns
        :param before: the buffer's bytes before its latest arrays: no second warning where those were already over
        """
        try:
            machine = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):  # not on Linux / macOS
            return
        limit = max_memory_share * machine
        if self.nbytes <= limit or before > limit:
            return
        rows = self.buffer_size * self.n_envs
        latents = sum(a.nbytes for a in (self.latent_deterministic, self.latent_stochastic) if a is not None)
        context = (
            f" ({latents / rows:,.0f} bytes of them the replay context's latent states: a smaller model, or "
            "replay_context=False, takes less)"
            if latents
            else ""
        )
        warnings.warn(
            f"The replay buffer will take {self.nbytes / 2**30:.1f} GiB once full ({rows:,} transitions of "
            f"{self.nbytes / rows:,.0f} bytes each{context}), more than {max_memory_share:.0%} of this machine's "
            f"{machine / 2**30:.1f} GiB: the process may be killed for memory as it fills. Lower buffer_size (one "
            "transition of a 64x64x3 image takes about 12.3 KB), keep it on disk (replay_buffer_kwargs=dict("
            "storage='disk', path=...)), or pass replay_buffer_kwargs=dict(max_memory_share=...) to raise this "
            "threshold (None: no warning).",
            stacklevel=4,
        )

    @property
    def nbytes(self) -> int:
        """Bytes held by the stored arrays."""
        obs = self.observations.values() if isinstance(self.observations, dict) else [self.observations]
        arrays = [*obs, self.actions, self.rewards, self.is_first, self.terminated, self.truncated]
        arrays += [a for a in (self.latent_deterministic, self.latent_stochastic) if a is not None]
        return int(sum(a.nbytes for a in arrays))

    def size(self) -> int:
        """Number of stored rows, all env streams together."""
        return int(np.where(self.env_full, self.buffer_size, self.env_pos).sum())

    def reset(self) -> None:
        super().reset()
        self.env_pos[:] = 0
        self.env_full[:] = False
        self.episode_start[:] = True
        if self.replay_context:
            self.latent_valid[:] = False
            self._pending_latents = None

    # ---- replay context ---------------------------------------------------------------------

    def _allocate_latents(self, deterministic_size: int, stochastic_size: int) -> None:
        shape = (self.buffer_size, self.n_envs)
        if self.latent_deterministic is not None:
            stored = (self.latent_deterministic.shape[-1], self.latent_stochastic.shape[-1])  # type: ignore[union-attr]
            if stored != (deterministic_size, stochastic_size):
                raise ValueError(
                    f"The replay buffer holds latent states of sizes {stored} (deterministic, stochastic), and the model "
                    f"gives {(deterministic_size, stochastic_size)}: this buffer was filled by another model size. Load "
                    "a buffer saved by a model of this size, or start with an empty one."
                )
            return
        before = self.nbytes
        self.latent_deterministic = self._array("latent_deterministic", (*shape, deterministic_size), np.float32)
        self.latent_stochastic = self._array("latent_stochastic", (*shape, stochastic_size), np.float32)
        share = getattr(self, "max_memory_share", None)  # absent from buffers pickled before it was kept
        if share and self.storage == "memory":
            self._warn_if_large(share, before)  # the latents can outweigh the frames (DreamerV3's large sizes)

    def store_latents(self, deterministic: np.ndarray, stochastic: np.ndarray, starting: np.ndarray) -> None:
        """
        Keep the latent state the agent reached on each env's latest observation (replay context): in that
        observation's row, or, where the observation starts an episode and :meth:`add` has not written its row
        yet (``starting``), until it does.

        :param deterministic: (n_envs, deterministic_size) ``h``
        :param stochastic: (n_envs, stochastic features) ``s``
        :param starting: (n_envs,) whether each env's latest observation starts an episode
        """
        if not self.replay_context:
            return
        self._claim_storage()
        deterministic = np.asarray(deterministic, dtype=np.float32).reshape(self.n_envs, -1)
        stochastic = np.asarray(stochastic, dtype=np.float32).reshape(self.n_envs, -1)
        self._allocate_latents(deterministic.shape[-1], stochastic.shape[-1])
        starting = np.asarray(starting, dtype=bool).reshape(self.n_envs) | self.episode_start
        self._pending_latents = (deterministic.copy(), stochastic.copy(), starting.copy())
        written = np.flatnonzero(~starting & (self._rows_per_env() > 0))
        rows = (self.env_pos[written] - 1) % self.buffer_size
        self.latent_deterministic[rows, written] = deterministic[written]  # type: ignore[index]
        self.latent_stochastic[rows, written] = stochastic[written]  # type: ignore[index]
        self.latent_valid[rows, written] = True

    def _store_pending_latents(self, starting: np.ndarray, rows: np.ndarray) -> None:
        """The states :meth:`store_latents` kept for the episodes' first observations, into their new ``rows``."""
        self.latent_valid[rows, starting] = False
        pending = self._pending_latents
        if pending is None or self.latent_deterministic is None:
            return
        known = pending[2][starting]
        rows, envs = rows[known], starting[known]
        self.latent_deterministic[rows, envs] = pending[0][envs]
        self.latent_stochastic[rows, envs] = pending[1][envs]  # type: ignore[index]
        self.latent_valid[rows, envs] = True

    def write_latents(self, rows: np.ndarray, envs: np.ndarray, deterministic: np.ndarray, stochastic: np.ndarray) -> None:
        """
        Replace the stored latent states of sampled rows (the training posteriors: fresher than those of acting).

        :param rows: (batch, time) rows, as :attr:`last_sample` gives them
        :param envs: (batch, 1) env streams
        :param deterministic: (batch, time, deterministic_size)
        :param stochastic: (batch, time, stochastic features)
        """
        if not self.replay_context:
            return
        self._claim_storage()
        self._allocate_latents(deterministic.shape[-1], stochastic.shape[-1])
        # a non-finite posterior (an update the optimizer skipped) would start every later chunk after its row and
        # spread along the episode through their write-backs: such rows keep the state they had
        finite = np.isfinite(deterministic).all(-1) & np.isfinite(stochastic).all(-1)
        rows, envs = (np.broadcast_to(index, finite.shape)[finite] for index in (rows, envs))
        self.latent_deterministic[rows, envs] = deterministic[finite]  # type: ignore[index]
        self.latent_stochastic[rows, envs] = stochastic[finite]  # type: ignore[index]
        self.latent_valid[rows, envs] = True

    def start_episodes(self, mask: np.ndarray) -> None:
        """Mark envs whose next ``obs`` begins a new episode (e.g. after an external ``env.reset()``)."""
        self.episode_start |= np.asarray(mask, dtype=bool).reshape(self.n_envs)

    def _check_finite(self, name: str, value: NumpyObs) -> None:
        arrays = value.items() if isinstance(value, dict) else [("", value)]
        for key, array in arrays:
            array = np.asarray(array)
            if not np.issubdtype(array.dtype, np.floating):
                continue
            bad = ~np.isfinite(array.reshape(self.n_envs, -1)).all(axis=1)
            if bad.any():
                env = int(np.flatnonzero(bad)[0])
                where = f"{name}[{key!r}]" if key else name
                raise ValueError(
                    f"Non-finite {where} from env {env} at step {self.steps_added} of the replay buffer: nothing of this "
                    "step was stored. Fix the environment, or find the source with "
                    "stable_baselines3.common.vec_env.VecCheckNan(env, raise_exception=True)."
                )

    def _write(self, envs: np.ndarray, obs: NumpyObs, actions: np.ndarray, rewards: np.ndarray, flags: dict) -> None:
        rows = self.env_pos[envs]
        if isinstance(self.observations, dict):
            for key, array in self.observations.items():
                array[rows, envs] = np.asarray(obs[key])[envs]
        else:
            self.observations[rows, envs] = np.asarray(obs).reshape(self.n_envs, *self.observations.shape[2:])[envs]
        self.actions[rows, envs] = actions[envs]
        self.rewards[rows, envs] = rewards[envs]
        for name, values in flags.items():
            getattr(self, name)[rows, envs] = values[envs]
        self.env_pos[envs] += 1
        wrapped = envs[self.env_pos[envs] == self.buffer_size]
        self.env_full[wrapped] = True
        self.env_pos[wrapped] = 0
        self.pos, self.full = int(self.env_pos[0]), bool(self.env_full[0])

    def add(  # type: ignore[override]
        self,
        obs: NumpyObs,
        next_obs: NumpyObs,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """
        Store one vec-env step.

        :param obs: observation the action was taken in (stored only where an episode starts)
        :param next_obs: observation reached (the terminal observation where ``done``)
        :param action: action taken, as SB3 stores it (Box: scaled to [-1, 1]; Discrete: index)
        :param reward: reward received
        :param done: episode ended (terminated or truncated)
        :param infos: per-env info dicts (``TimeLimit.truncated`` marks truncation)
        """
        self._claim_storage()
        reward = np.asarray(reward, dtype=np.float32).reshape(self.n_envs)
        done = np.asarray(done, dtype=bool).reshape(self.n_envs)
        self._check_finite("reward", reward)
        self._check_finite("observation", next_obs)
        starting = np.flatnonzero(self.episode_start)
        if len(starting):
            self._check_finite("observation", obs)
        truncated = np.array([bool(info.get("TimeLimit.truncated", False)) for info in infos]) & done
        zeros = np.zeros(self.n_envs, dtype=bool)
        if len(starting):
            first_rows = self.env_pos[starting].copy()
            self._write(
                starting,
                obs,
                np.zeros((self.n_envs, self.model_action_size), dtype=np.float32),
                np.zeros(self.n_envs, dtype=np.float32),
                dict(is_first=~zeros, terminated=zeros, truncated=zeros),
            )
            if self.replay_context:
                self._store_pending_latents(starting, first_rows)
        if self.replay_context:
            # the next observation's state comes with the next store_latents (an episode's last one never has one)
            self.latent_valid[self.env_pos, np.arange(self.n_envs)] = False
            self._pending_latents = None
        self._write(
            np.arange(self.n_envs),
            next_obs,
            actions_to_model(action, self.action_space),
            reward,
            dict(is_first=zeros, terminated=done & ~truncated, truncated=truncated),
        )
        self.episode_start = done.copy()
        self.steps_added += 1

    def _rows_per_env(self) -> np.ndarray:
        return np.where(self.env_full, self.buffer_size, self.env_pos)

    def longest_stream(self) -> int:
        """Rows held by the fullest env stream: the longest sequence that can be sampled now."""
        return int(self._rows_per_env().max())

    def can_sample(self, sequence_length: Optional[int] = None) -> bool:
        """Whether some env stream holds at least one full chunk."""
        return bool((self._rows_per_env() >= (sequence_length or self.sequence_length)).any())

    def sample(  # type: ignore[override]
        self, batch_size: int, env: Optional[VecNormalize] = None, sequence_length: Optional[int] = None
    ) -> SequenceSamples:
        """
        Sample ``batch_size`` chunks of ``sequence_length`` consecutive steps.

        :return: tensors of shape (batch_size, sequence_length, ...) in the model's alignment
        """
        length = sequence_length or self.sequence_length
        starts_per_env = np.maximum(self._rows_per_env() - length + 1, 0)
        total = starts_per_env.sum()
        if total == 0:
            raise ValueError(
                f"Cannot sample sequences of length {length}: the longest env stream holds {self.longest_stream()} "
                "steps. Collect more steps first (learning_starts) or use a shorter sequence_length."
            )
        flat = np.random.randint(0, total, size=batch_size)
        envs = np.searchsorted(np.cumsum(starts_per_env), flat, side="right")
        offsets = flat - (np.cumsum(starts_per_env) - starts_per_env)[envs]
        # in a full ring the oldest row sits at the write position
        oldest = np.where(self.env_full[envs], self.env_pos[envs], 0)
        rows = (oldest + offsets)[:, None] + np.arange(length)[None, :]
        rows %= self.buffer_size
        self.last_sample = (rows, envs[:, None])
        samples = self._get_samples((rows, envs[:, None]), env=env)
        if not self.replay_context or self.latent_deterministic is None:
            return samples
        # the row before each chunk, where it exists: not before the stream's oldest row
        before = (rows[:, 0] - 1) % self.buffer_size
        valid = (offsets > 0) & self.latent_valid[before, envs]
        deterministic = np.where(valid[:, None], self.latent_deterministic[before, envs], 0.0)
        stochastic = np.where(valid[:, None], self.latent_stochastic[before, envs], 0.0)  # type: ignore[index]
        return samples._replace(
            context_deterministic=self._to_device(deterministic, th.float32),
            context_stochastic=self._to_device(stochastic, th.float32),
        )

    def _to_device(self, array: np.ndarray, dtype: Optional[th.dtype] = None) -> th.Tensor:
        """
        A sampled array as a tensor on the buffer's device. To a GPU it goes through pinned host memory with an
        asynchronous copy (PyTorch's caching host allocator keeps the pinned block until the copy is done), so
        the host samples the next batch while the device still trains on this one.
        """
        tensor = th.as_tensor(np.ascontiguousarray(array), dtype=dtype)
        if self.device.type == "cuda":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _get_samples(  # type: ignore[override]
        self, batch_inds: tuple[np.ndarray, np.ndarray], env: Optional[VecNormalize] = None
    ) -> SequenceSamples:
        rows, envs = batch_inds
        if isinstance(self.observations, dict):
            obs: NumpyObs = {key: array[rows, envs] for key, array in self.observations.items()}
        else:
            obs = self.observations[rows, envs]
        obs = self._normalize_obs(obs, env)
        if isinstance(obs, dict):
            observations: Any = {key: self._to_device(value) for key, value in obs.items()}
        else:
            observations = self._to_device(obs)

        def tensor(array: np.ndarray) -> th.Tensor:
            return self._to_device(array, th.float32)

        return SequenceSamples(
            observations=observations,
            actions=tensor(self.actions[rows, envs]),
            rewards=tensor(self._normalize_reward(self.rewards[rows, envs], env)),
            is_first=tensor(self.is_first[rows, envs]),
            terminated=tensor(self.terminated[rows, envs]),
            truncated=tensor(self.truncated[rows, envs]),
        )
