"""
The disk-backed sequence replay (``replay_buffer_kwargs=dict(storage="disk", path=...)``): the same batches as the
in-memory buffer, resident memory that does not grow with it, checkpoints that copy its files and resume exactly,
and clear errors for a full disk, missing or truncated files, and a folder another run is using.
"""

import errno
import gc
import os

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_rssm import DreamerV1, DreamerV3
from sb3_rssm.common import disk
from sb3_rssm.common.buffers import SequenceReplayBuffer
from sb3_rssm.common.envs import PointMassEnv
from tests.conftest import tiny_model

IMAGE = spaces.Box(0, 255, (3, 64, 64), np.uint8)
DICT = spaces.Dict({"image": IMAGE, "vector": spaces.Box(-1, 1, (2,), np.float32)})
ACTION = spaces.Box(-1, 1, (2,), np.float32)


def fill(buffer: SequenceReplayBuffer, steps: int, seed: int = 0) -> None:
    """Random frames, episodes of 7 and 11 steps in two envs, the replay context's states as each step is filtered."""
    rng = np.random.default_rng(seed)
    n_envs, space = buffer.n_envs, buffer.observation_space
    length = np.array([7, 11])[:n_envs]
    step = np.zeros(n_envs, int)

    def observe():
        if isinstance(space, spaces.Dict):
            return {key: rng.integers(0, 255, (n_envs, *s.shape)).astype(s.dtype) for key, s in space.spaces.items()}
        return rng.integers(0, 255, (n_envs, *space.shape)).astype(np.uint8)

    obs, starting = observe(), np.ones(n_envs, bool)
    for _ in range(steps):
        buffer.store_latents(rng.normal(size=(n_envs, 5)), rng.normal(size=(n_envs, 3)), starting)
        nxt, step = observe(), step + 1
        done = step == length
        buffer.add(obs, nxt, rng.uniform(-1, 1, (n_envs, 2)), rng.normal(size=n_envs), done, [{}] * n_envs)
        step[done] = 0
        reset = observe()  # the next episode's first observation where one ended

        def pick(fresh, reached, done=done):
            return np.where(done.reshape(-1, *[1] * (fresh.ndim - 1)), fresh, reached)

        obs = {k: pick(reset[k], nxt[k]) for k in nxt} if isinstance(nxt, dict) else pick(reset, nxt)
        starting = done


def assert_same_batches(a: SequenceReplayBuffer, b: SequenceReplayBuffer, seed: int = 0) -> None:
    for k in range(5):
        np.random.seed(seed + k)
        first = a.sample(6, sequence_length=9)
        np.random.seed(seed + k)
        second = b.sample(6, sequence_length=9)
        for x, y in zip(first, second):
            if isinstance(x, dict):
                for key in x:
                    assert th.equal(x[key], y[key]), key
            else:
                assert (x is None and y is None) or th.equal(x, y)


def refuse_writes_under(monkeypatch, folder) -> None:
    """Fail every open for writing of a file in ``folder``, as a read-only mount would (as root, permissions do not)."""
    opened = os.open

    def read_only(path, flags, *args):
        if str(path).startswith(str(folder)) and flags & (os.O_WRONLY | os.O_RDWR):
            raise PermissionError(errno.EACCES, "Permission denied", path)
        return opened(path, flags, *args)

    monkeypatch.setattr(disk.os, "open", read_only)


@pytest.mark.parametrize("space", [IMAGE, DICT], ids=["image", "dict"])
def test_the_disk_buffer_samples_what_the_memory_buffer_samples(space, tmp_path):
    kwargs = dict(n_envs=2, sequence_length=9, replay_context=True)
    memory = SequenceReplayBuffer(120, space, ACTION, **kwargs)
    on_disk = SequenceReplayBuffer(120, space, ACTION, storage="disk", path=tmp_path / "replay", **kwargs)
    fill(memory, 150)  # the rings of 60 rows wrap around: chunks are read in two pieces there
    fill(on_disk, 150)
    files = {"observations.bin"} if space is IMAGE else {"observations.image.bin", "observations.vector.bin"}
    files |= {"latent_deterministic.bin", "latent_stochastic.bin", "lock"}
    assert on_disk.env_full.all() and set(os.listdir(tmp_path / "replay")) == files
    assert_same_batches(memory, on_disk)
    # the stored states, refreshed by training, land in the files as in memory
    for buffer in (memory, on_disk):
        np.random.seed(9)
        buffer.sample(3)
        rows, envs = buffer.last_sample
        buffer.write_latents(rows, envs, np.full((3, 9, 5), 2.0, np.float32), np.full((3, 9, 3), 3.0, np.float32))
    assert_same_batches(memory, on_disk, seed=20)


def resident_bytes() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS"))


@pytest.mark.parametrize("storage", ["memory", "disk"])
def test_resident_memory_does_not_grow_with_a_disk_buffer(storage, tmp_path):
    """64 MB of frames: held in memory they are resident; on disk the process holds only a batch at a time."""
    kwargs = dict(storage="disk", path=tmp_path) if storage == "disk" else {}
    buffer = SequenceReplayBuffer(5200, IMAGE, ACTION, n_envs=1, sequence_length=16, **kwargs)
    frame = np.full((1, *IMAGE.shape), 7, np.uint8)
    gc.collect()
    before = resident_bytes()
    for _ in range(5200):
        buffer.add(frame, frame, np.zeros((1, 2)), np.zeros(1), np.zeros(1, bool), [{}])
    for _ in range(20):
        buffer.sample(16)
    grown = resident_bytes() - before
    if storage == "memory":
        assert grown > 55e6  # the measurement sees the frames
    else:
        assert grown < 15e6 and os.path.getsize(tmp_path / "observations.bin") == 5200 * 12288


def test_a_folder_in_use_is_refused_and_freed_when_released(tmp_path):
    first = SequenceReplayBuffer(100, IMAGE, ACTION, storage="disk", path=tmp_path, sequence_length=4)
    second = SequenceReplayBuffer(100, IMAGE, ACTION, storage="disk", path=tmp_path, sequence_length=4)
    fill(first, 3)
    with pytest.raises(ValueError, match=f"in use by another run \\(process {os.getpid()}\\)"):
        fill(second, 3)
    first.release_storage()
    fill(second, 3)


def test_a_full_disk_fails_at_the_first_step_with_the_sizes(tmp_path, monkeypatch):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(disk.os, "posix_fallocate", no_space)
    buffer = SequenceReplayBuffer(100, IMAGE, ACTION, storage="disk", path=tmp_path, sequence_length=4)
    with pytest.raises(OSError, match=r"Not enough disk space .*\(0.00 GiB\) in .* GiB free\. Free some space"):
        fill(buffer, 1)
    assert not os.path.exists(tmp_path / "observations.bin")


def test_options_are_checked():
    with pytest.raises(ValueError, match="needs a folder"):
        SequenceReplayBuffer(100, IMAGE, ACTION, storage="disk")
    with pytest.raises(ValueError, match="add storage='disk'"):
        SequenceReplayBuffer(100, IMAGE, ACTION, path="somewhere")
    with pytest.raises(ValueError, match="Unknown replay storage 'ssd'"):
        SequenceReplayBuffer(100, IMAGE, ACTION, storage="ssd")


def test_checkpoints_copy_the_files_and_resume_exactly(tmp_path):
    """
    A run checkpointed mid-way and resumed from its files (the first process gone) ends where an uninterrupted one
    does; the checkpoint does not change as the run goes on; missing or truncated files get a clear error; an
    in-memory model reads a disk checkpoint into memory.
    """

    def model(path):
        env = PointMassEnv(max_steps=10, pixels=True)
        kwargs = dict(storage="disk", path=str(path), replay_context=True)
        return tiny_model(DreamerV3, "CnnPolicy", env, seed=0, buffer_size=200, replay_buffer_kwargs=kwargs)

    uninterrupted = model(tmp_path / "a")
    uninterrupted.learn(60)

    first = model(tmp_path / "b")
    first.learn(30)
    first.save(tmp_path / "ckpt")
    first.save_replay_buffer(tmp_path / "ckpt_buffer")
    saved = np.fromfile(tmp_path / "ckpt_buffer.pkl.data" / "observations.bin", np.uint8)
    first.learn(10, reset_num_timesteps=False)  # the live files change, the checkpoint's must not
    assert np.array_equal(np.fromfile(tmp_path / "ckpt_buffer.pkl.data" / "observations.bin", np.uint8), saved)
    first.replay_buffer.release_storage()  # the process dies
    del first

    resumed = DreamerV3.load(tmp_path / "ckpt", env=PointMassEnv(max_steps=10, pixels=True))
    resumed.load_replay_buffer(tmp_path / "ckpt_buffer")
    assert resumed.replay_buffer.path == str(tmp_path / "b") and resumed.replay_buffer.storage == "disk"
    resumed.learn(30, reset_num_timesteps=False)
    a, b = uninterrupted.replay_buffer, resumed.replay_buffer
    for x, y in zip(a.disk_arrays(), b.disk_arrays()):
        np.testing.assert_array_equal(x.read_all(), y.read_all(), err_msg=x.name)
    for key, value in uninterrupted.policy.state_dict().items():
        th.testing.assert_close(resumed.policy.state_dict()[key], value, rtol=1e-5, atol=1e-6, msg=key)

    # an in-memory model takes the saved buffer into memory
    in_memory = tiny_model(DreamerV3, "CnnPolicy", PointMassEnv(max_steps=10, pixels=True), seed=0, buffer_size=200)
    in_memory.load_replay_buffer(tmp_path / "ckpt_buffer")
    assert in_memory.replay_buffer.storage == "memory" and isinstance(in_memory.replay_buffer.observations, np.ndarray)
    assert np.array_equal(in_memory.replay_buffer.observations.swapaxes(0, 1).reshape(-1), saved)

    # files missing or cut short
    data = tmp_path / "ckpt_buffer.pkl.data"
    os.truncate(data / "latent_deterministic.bin", 100)
    with pytest.raises(ValueError, match=r"latent_deterministic.* holds 100 bytes .* truncated"):
        in_memory.load_replay_buffer(tmp_path / "ckpt_buffer")
    os.remove(data / "observations.bin")
    with pytest.raises(FileNotFoundError, match=r"observations.* is missing"):
        resumed.load_replay_buffer(tmp_path / "ckpt_buffer")
    assert resumed.replay_buffer.size() > 0  # a failed load leaves the model's buffer as it was


def test_dreamer_v1_trains_from_a_disk_buffer(tmp_path):
    env = PointMassEnv(max_steps=10, pixels=True)
    kwargs = dict(storage="disk", path=str(tmp_path))
    model = tiny_model(DreamerV1, "CnnPolicy", env, seed=0, buffer_size=200, replay_buffer_kwargs=kwargs)
    model.learn(40)
    assert model._n_updates > 0 and model.replay_buffer.size() > 40


def test_a_checkpoint_is_read_without_write_access(tmp_path, monkeypatch):
    """A checkpoint on a read-only mount loads: its files are only read. (As root, permissions do not stop a write
    open, so the test fails any open of the checkpoint's files for writing.)"""
    env = PointMassEnv(max_steps=10, pixels=True)
    kwargs = dict(storage="disk", path=str(tmp_path / "live"))
    model = tiny_model(DreamerV1, "CnnPolicy", env, seed=0, buffer_size=50, replay_buffer_kwargs=kwargs)
    model.learn(20)
    model.save_replay_buffer(tmp_path / "ckpt")
    refuse_writes_under(monkeypatch, tmp_path / "ckpt.pkl.data")
    rows = model.replay_buffer.size()
    model.load_replay_buffer(tmp_path / "ckpt")
    assert model.replay_buffer.storage == "disk" and model.replay_buffer.size() == rows > 20


def test_saving_before_the_first_step_takes_the_folder_and_an_in_memory_checkpoint_lets_it_go(tmp_path):
    def model(path):
        kwargs = dict(storage="disk", path=str(path))
        return tiny_model(
            DreamerV1,
            "CnnPolicy",
            PointMassEnv(max_steps=10, pixels=True),
            seed=0,
            buffer_size=50,
            replay_buffer_kwargs=kwargs,
        )

    fresh = model(tmp_path / "live")
    fresh.save_replay_buffer(tmp_path / "empty")  # creates the live files: under the folder's lock
    with pytest.raises(ValueError, match="in use by another run"):
        disk.StorageLock(str(tmp_path / "live"))
    in_memory = tiny_model(DreamerV1, "CnnPolicy", PointMassEnv(max_steps=10, pixels=True), seed=0, buffer_size=50)
    in_memory.learn(10)
    in_memory.save_replay_buffer(tmp_path / "memory")
    rows = in_memory.replay_buffer.size()
    with pytest.warns(UserWarning, match="was saved in memory: it stays in memory"):
        fresh.load_replay_buffer(tmp_path / "memory")
    assert fresh.replay_buffer.storage == "memory" and fresh.replay_buffer.size() == rows > 10
    disk.StorageLock(str(tmp_path / "live")).release()  # the disk storage was let go


def test_an_empty_index_neither_creates_nor_opens_the_file(tmp_path):
    array = disk.DiskArray(str(tmp_path), "rewards", (4, 2), np.float32)
    array[np.zeros(0, int), np.zeros(0, int)] = np.zeros(0, np.float32)
    assert array[np.zeros(0, int), np.zeros(0, int)].shape == (0,)
    assert not os.path.exists(array.path) and array._fd is None
    array[np.array([1]), np.array([0])] = 3.0  # the first real write creates the file in full
    assert os.path.getsize(array.path) == array.nbytes and array[np.array([1]), np.array([0])][0] == 3.0


def _pixel_model(path=None, buffer_size=50, replay_context=False):
    kwargs = dict(replay_buffer_kwargs=dict(storage="disk", path=str(path), replay_context=replay_context)) if path else {}
    env = PointMassEnv(max_steps=10, pixels=True)
    return tiny_model(DreamerV1, "CnnPolicy", env, seed=0, buffer_size=buffer_size, **kwargs)


def test_a_checkpoint_loaded_in_place_goes_on_in_its_own_files(tmp_path, monkeypatch):
    """``in_place=True``: no copy, the checkpoint's folder becomes the run's (locked, written by the run)."""
    first = _pixel_model(tmp_path / "live")
    first.learn(20)
    first.save_replay_buffer(tmp_path / "ckpt")
    rows = first.replay_buffer.size()
    data = tmp_path / "ckpt.pkl.data"
    saved = np.fromfile(data / "observations.bin", np.uint8)
    copies = []
    copyfile = disk.shutil.copyfile
    monkeypatch.setattr(disk.shutil, "copyfile", lambda *args: copies.append(args) or copyfile(*args))

    resumed = _pixel_model(tmp_path / "other")
    resumed.load_replay_buffer(tmp_path / "ckpt", in_place=True)
    buffer = resumed.replay_buffer
    assert copies == [] and buffer.storage == "disk" and buffer.path == str(data) and buffer.size() == rows > 20
    assert all(array.directory == str(data) for array in buffer.disk_arrays())
    assert not (tmp_path / "other").exists()  # the model's own folder was never used
    with pytest.raises(ValueError, match="in use by another run"):
        _pixel_model().load_replay_buffer(tmp_path / "ckpt", in_place=True)
    resumed.learn(10, reset_num_timesteps=False)
    assert not np.array_equal(np.fromfile(data / "observations.bin", np.uint8), saved)  # the run writes there
    resumed.save_replay_buffer(tmp_path / "ckpt")  # onto its own files: the pickle only
    assert copies == []

    memory = _pixel_model()  # in_place is for disk checkpoints only
    memory.learn(10)
    memory.save_replay_buffer(tmp_path / "memory")
    with pytest.raises(ValueError, match=r"saved in memory\. Load it without in_place"):
        first.load_replay_buffer(tmp_path / "memory", in_place=True)


def test_an_in_place_load_of_a_read_only_checkpoint_is_refused(tmp_path, monkeypatch):
    first = _pixel_model(tmp_path / "live")
    first.learn(20)
    first.save_replay_buffer(tmp_path / "ckpt")
    refuse_writes_under(monkeypatch, tmp_path / "ckpt.pkl.data")
    with pytest.raises(PermissionError, match="cannot be written"):
        first.load_replay_buffer(tmp_path / "ckpt", in_place=True)
    assert first.replay_buffer.path == str(tmp_path / "live")
    with pytest.raises(ValueError, match="in use by another run"):  # the model took its folder's lock back
        disk.StorageLock(str(tmp_path / "live"))


def test_a_copy_that_fails_leaves_the_run_files_as_they_were(tmp_path, monkeypatch):
    """A checkpoint copied into a live folder goes to ``.partial`` files first: a full disk halfway leaves the live
    files (and the model's lock) as they were, with an error that names the space and ``in_place``."""
    donor = _pixel_model(tmp_path / "donor", replay_context=True)  # three files: observations and two latent arrays
    donor.learn(30)
    donor.save_replay_buffer(tmp_path / "ckpt")
    model = _pixel_model(tmp_path / "live", replay_context=True)
    model.learn(20)
    live = {name: (tmp_path / "live" / name).read_bytes() for name in os.listdir(tmp_path / "live") if name.endswith(".bin")}
    rows = model.replay_buffer.size()
    copyfile, calls = disk.shutil.copyfile, []

    def full_at_the_second(source, destination):
        calls.append(destination)
        if len(calls) == 2:
            copyfile(source, destination)  # part of it written, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return copyfile(source, destination)

    monkeypatch.setattr(disk.shutil, "copyfile", full_at_the_second)
    with pytest.raises(OSError, match=r"Not enough disk space to copy .* in_place=True"):
        model.load_replay_buffer(tmp_path / "ckpt")
    assert len(calls) == 2 and all(name.endswith(".partial") for name in calls)
    assert sorted(os.listdir(tmp_path / "live")) == sorted([*live, "lock"])  # no partial file left
    assert all((tmp_path / "live" / name).read_bytes() == content for name, content in live.items())
    with pytest.raises(ValueError, match="in use by another run"):
        disk.StorageLock(str(tmp_path / "live"))
    assert model.replay_buffer.size() == rows
    model.learn(10, reset_num_timesteps=False)  # and it goes on
    monkeypatch.setattr(disk.shutil, "copyfile", copyfile)
    model.load_replay_buffer(tmp_path / "ckpt")  # with room, the copy lands
    assert model.replay_buffer.size() == donor.replay_buffer.size() and model.replay_buffer.path == str(tmp_path / "live")
