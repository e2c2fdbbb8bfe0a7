"""
Replay storage on disk: :class:`DiskArray`, a ``(rows, n_envs, *item)`` array kept in a file and read and written
with ``pread`` / ``pwrite``, and :class:`StorageLock`, which keeps two runs out of one storage folder.

Why files and not ``np.memmap``: pages a process has touched through a mapping count in its resident memory until
the kernel reclaims them, so a run that writes a 12 GiB buffer through a mapping shows a 12 GiB RSS (and can be
killed for it by a cgroup limit) although the data sits in the page cache. Reading and writing through file
descriptors leaves the data in the page cache alone: the process holds only the chunks it has just read. Each env's
stream is stored contiguously (env-major), so a sampled chunk is one read (two where it wraps around the ring).
(Reading through a shared mapping with ``madvise(MADV_DONTNEED)`` after each gather keeps the resident memory as
low, but was no faster than ``preadv`` on files written step by step: docs/benchmarks.md, "Replay on disk".)
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import shutil
from typing import Any, Optional

import numpy as np


class DiskArray:
    """
    A ``(rows, n_envs, *item_shape)`` array in ``<directory>/<name>.bin``, indexed as the replay buffer indexes its
    arrays: ``array[rows, envs]`` with integer index arrays that broadcast together (one row per env when writing a
    step, ``(batch, time)`` rows and ``(batch, 1)`` envs when sampling), for reading and for assignment. The file is
    created and allocated in full at its first use (``posix_fallocate``), so a full disk fails then, with an error
    that says so, and not in the middle of a run.

    Pickling keeps the folder, name, shape and dtype, not the data: a pickled buffer refers to its files
    (``save_replay_buffer`` copies them next to the pickle, see :mod:`sb3_rssm.common.checkpoint`).

    :param directory: folder of the file
    :param name: file name without the ``.bin`` suffix
    :param shape: ``(rows, n_envs, *item_shape)``
    :param dtype: element type
    :param create: make (and allocate) the file at the first read or write; otherwise use an existing one, checked
        now
    """

    def __init__(self, directory: str, name: str, shape: tuple[int, ...], dtype: Any, create: bool = True) -> None:
        self.directory, self.name = str(directory), name
        self.shape, self.dtype = tuple(int(n) for n in shape), np.dtype(dtype)
        self._fd: Optional[int] = None
        # created at its first use: a model loaded only to act never touches the folder
        self._pending = create
        if not create:
            self.check()

    # ---- layout -----------------------------------------------------------------------------------------------

    @property
    def path(self) -> str:
        return os.path.join(self.directory, f"{self.name}.bin")

    @property
    def item_bytes(self) -> int:
        return int(np.prod(self.shape[2:], dtype=np.int64)) * self.dtype.itemsize

    @property
    def nbytes(self) -> int:
        return self.shape[0] * self.shape[1] * self.item_bytes

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def _offsets(self, rows: np.ndarray, envs: np.ndarray) -> np.ndarray:
        return (envs.astype(np.int64) * self.shape[0] + rows.astype(np.int64)) * self.item_bytes

    # ---- files ------------------------------------------------------------------------------------------------

    def _create(self) -> None:
        os.makedirs(self.directory, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            os.posix_fallocate(fd, 0, max(self.nbytes, 1))
        except OSError as error:
            os.close(fd)
            os.unlink(self.path)
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                free = shutil.disk_usage(self.directory).free
                raise OSError(
                    error.errno,
                    f"Not enough disk space for the replay buffer's {self.name!r} file ({self.nbytes / 2**30:.2f} GiB) "
                    f"in {self.directory!r}, which has {free / 2**30:.2f} GiB free. Free some space, give "
                    "replay_buffer_kwargs=dict(path=...) a folder on a larger disk, or lower buffer_size.",
                ) from None
            if error.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
                raise
            # a file system without allocation (e.g. some network ones): a sparse file of the right size
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
            os.ftruncate(fd, self.nbytes)
        self._fd = fd

    def check(self) -> None:
        """Raise a clear error if the file is missing or has another size than its shape says."""
        if not os.path.isfile(self.path):
            raise FileNotFoundError(
                f"The replay buffer's {self.name!r} file {self.path!r} is missing: the buffer's files were moved or "
                "deleted. Restore the folder, or start with a new buffer."
            )
        size = os.path.getsize(self.path)
        if size != self.nbytes:
            raise ValueError(
                f"The replay buffer's {self.name!r} file {self.path!r} holds {size:,} bytes where its shape "
                f"{self.shape} of {self.dtype} needs {self.nbytes:,}: it is truncated or from another buffer. Restore "
                "it from the checkpoint it came from, or start with a new buffer."
            )

    @property
    def fd(self) -> int:
        if self._pending:
            self._create()
            self._pending = False
        if self._fd is None:
            self.check()
            self._fd = os.open(self.path, os.O_RDWR)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def relocate(self, directory: str) -> None:
        """Use the existing file of the same name in ``directory`` from now on (checked when first used)."""
        self.close()
        self.directory, self._pending = str(directory), False

    def __getstate__(self) -> dict[str, Any]:
        return {key: value for key, value in vars(self).items() if key != "_fd"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        vars(self).update(state)
        self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # at interpreter shutdown os may be gone
            pass

    # ---- reading and writing ----------------------------------------------------------------------------------

    def _runs(self, offsets: np.ndarray, item: int) -> list[tuple[int, int]]:
        """``[start, end)`` index ranges of ``offsets`` (flat) that are contiguous in the file: one syscall each."""
        if len(offsets) == 0:
            return []
        breaks = np.flatnonzero(np.diff(offsets) != item) + 1
        bounds = np.concatenate([[0], breaks, [len(offsets)]])
        return list(zip(bounds[:-1].tolist(), bounds[1:].tolist()))

    def __getitem__(self, index: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        rows, envs = np.broadcast_arrays(*(np.asarray(i) for i in index))
        flat = self._offsets(rows.reshape(-1), envs.reshape(-1))
        out = np.empty((len(flat), *self.shape[2:]), dtype=self.dtype)
        view = memoryview(out.reshape(-1).view(np.uint8))
        item = self.item_bytes  # once per call: item_bytes per chunk took a third of a sample's time
        runs = self._runs(flat, item)
        fd = self.fd if runs else -1  # an empty index neither creates nor opens the file
        for start, end in runs:
            wanted = (end - start) * item
            got = os.preadv(fd, [view[start * item : end * item]], int(flat[start]))
            if got != wanted:
                raise ValueError(f"Short read from the replay buffer's file {self.path!r}: it was truncated while in use.")
        return out.reshape(*rows.shape, *self.shape[2:])

    def __setitem__(self, index: tuple[np.ndarray, np.ndarray], values: Any) -> None:
        rows, envs = np.broadcast_arrays(*(np.asarray(i) for i in index))
        flat = self._offsets(rows.reshape(-1), envs.reshape(-1))
        data = np.ascontiguousarray(np.broadcast_to(np.asarray(values, dtype=self.dtype), (*rows.shape, *self.shape[2:])))
        raw = memoryview(data.reshape(-1).view(np.uint8))
        item = self.item_bytes
        runs = self._runs(flat, item)
        fd = self.fd if runs else -1
        for start, end in runs:
            wanted = (end - start) * item
            written = os.pwritev(fd, [raw[start * item : end * item]], int(flat[start]))
            if written != wanted:
                raise ValueError(
                    f"Short write to the replay buffer's file {self.path!r} ({written} of {wanted} bytes): is its disk "
                    "full? Free space there, or give replay_buffer_kwargs=dict(path=...) on a disk with room."
                )

    def read_all(self) -> np.ndarray:
        """The whole array in memory, in the ``(rows, n_envs, *item)`` layout."""
        self.check()
        data = np.fromfile(self.path, dtype=self.dtype).reshape(self.shape[1], self.shape[0], *self.shape[2:])
        return np.ascontiguousarray(data.swapaxes(0, 1))

    def copy_to(self, directory: str, suffix: str = "") -> str:
        """
        Copy the file into ``directory`` (in the kernel, ``copy_file_range``: no data passes through this process).

        :param directory: the destination folder
        :param suffix: appended to the copy's name (``.partial`` for a copy that is renamed into place later)
        :return: the path of the copy
        """
        if self._pending:  # a file that was never used is created first; an existing one may be read-only
            self.fd  # noqa: B018
        else:
            self.check()
        os.makedirs(directory, exist_ok=True)
        destination = os.path.join(directory, f"{self.name}.bin{suffix}")
        try:
            shutil.copyfile(self.path, destination)
        except OSError as error:
            if error.errno not in (errno.ENOSPC, errno.EDQUOT):
                raise
            with contextlib.suppress(OSError):
                os.unlink(destination)
            free = shutil.disk_usage(directory).free
            raise OSError(
                error.errno,
                f"Not enough disk space to copy the replay buffer's {self.name!r} file ({self.nbytes / 2**30:.2f} GiB) "
                f"into {directory!r}, which has {free / 2**30:.2f} GiB free. Free some space or use a folder on a larger "
                "disk; to resume from a checkpoint without copying it, load_replay_buffer(path, in_place=True).",
            ) from None
        return destination

    def writable(self) -> bool:
        """Whether the file can be opened for writing (a read-only mount, or a file without write permission: not)."""
        try:
            os.close(os.open(self.path, os.O_RDWR))
        except PermissionError:
            return False
        except OSError as error:
            if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                return False
            raise
        return True


class StorageLock:
    """
    An exclusive ``flock`` on ``<directory>/lock``, held while a replay buffer uses the folder, so that a second run
    given the same ``path`` fails at once instead of overwriting the first one's data. The lock ends with the
    process (or :meth:`release`).

    :param directory: the storage folder
    """

    def __init__(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)
        self.path = os.path.join(directory, "lock")
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise ValueError(
                f"The replay buffer folder {directory!r} is in use by another run (process {owner}): two runs would "
                "overwrite each other's data. Give this run another replay_buffer_kwargs=dict(path=...), or stop the "
                "other one."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd: Optional[int] = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.release()
        except Exception:  # at interpreter shutdown os may be gone
            pass
