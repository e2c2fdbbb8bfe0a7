"""
The algorithm base of PlaNet, DreamerV1 and DreamerV3: SB3's ``OffPolicyAlgorithm`` loop (learn, collection,
callbacks, logging, train_freq / gradient_steps / learning_starts, VecNormalize) with what a recurrent,
sequence-based agent needs on top: a belief state filtered through every collection step, a sequence replay
buffer, episode starts tracked per step, training phases that a resumed run completes, and ``predict`` with
the recurrent state. The constructor's checks of envs and policies live here too; how the update is built and
run is in :mod:`sb3_rssm.common.update_wiring`, saving and loading in :mod:`sb3_rssm.common.checkpoint`.
"""

from __future__ import annotations

import difflib
import inspect
import time
import warnings
from collections.abc import Callable, Iterable
from typing import Any, Optional, TypeVar, Union

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Image
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, RolloutReturn, Schedule, TrainFreq, TrainFrequencyUnit
from stable_baselines3.common.utils import should_collect_more_steps
from stable_baselines3.common.vec_env import SubprocVecEnv, VecEnv, VecNormalize, unwrap_vec_wrapper

from sb3_rssm.common.buffers import SequenceReplayBuffer
from sb3_rssm.common.checkpoint import CheckpointMixin
from sb3_rssm.common.policies import BeliefPolicy, RecurrentState, starts_tensor
from sb3_rssm.common.resize import (
    VecResizeImage,
    WrappedVecNormalize,
    observation_transforms_between,
    resized_observation_space,
)
from sb3_rssm.common.rssm import LatentState
from sb3_rssm.common.spaces import IMAGE_SIZE, actions_to_model, check_action_space, split_observation_space
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.update import GradientUpdate, NonFiniteUpdateError, set_learning_rate
from sb3_rssm.common.update_wiring import UpdateWiringMixin

__all__ = ["EnvWorkerError", "NonFiniteUpdateError", "WorldModelAlgorithm"]

SelfWorldModelAlgorithm = TypeVar("SelfWorldModelAlgorithm", bound="WorldModelAlgorithm")


def closest(name: str, candidates: Iterable[str]) -> list[str]:
    """The candidates closest to a misspelt ``name`` (case aside), best first, for "did you mean" hints."""
    by_lower = {candidate.lower(): candidate for candidate in candidates}
    return [by_lower[match] for match in difflib.get_close_matches(name.lower(), list(by_lower), n=3, cutoff=0.6)]


def policy_parameters(policy_class: type[BeliefPolicy]) -> list[str]:
    """
    The keyword arguments ``policy_kwargs`` may hold for ``policy_class``: the parameters of its ``__init__`` and,
    where that forwards ``**kwargs``, of its bases' (but the three the algorithm passes itself).
    """
    names: list[str] = []
    for cls in policy_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        parameters = inspect.signature(cls.__init__).parameters.values()
        names += [p.name for p in parameters if p.kind is p.KEYWORD_ONLY or p.kind is p.POSITIONAL_OR_KEYWORD]
        if not any(p.kind is p.VAR_KEYWORD for p in parameters):
            break
    passed_by_the_algorithm = {"self", "observation_space", "action_space", "lr_schedule"}
    return sorted(set(names) - passed_by_the_algorithm)


class EnvWorkerError(RuntimeError):
    """An env running in another process (e.g. in ``SubprocVecEnv``) stopped answering while stepping."""


class WorldModelAlgorithm(CheckpointMixin, UpdateWiringMixin, OffPolicyAlgorithm):
    """
    Base of world-model agents. Subclasses implement :meth:`_train_step`: the losses and backward passes of one
    update on a batch of sequences (:meth:`_train_world_model` does the world-model part); the optimizers then
    step together.

    ``num_timesteps`` counts agent steps summed over envs, as everywhere in SB3. With an action-repeat
    wrapper each agent step is ``action_repeat`` env frames: the papers count frames, so their
    "1M steps" is ``num_timesteps = 1M / action_repeat``, and so on for ``train_freq`` and ``learning_starts``.

    :param policy: policy class or alias
    :param env: environment (or its gymnasium id)
    :param learning_rate: world-model learning rate (constant or schedule of the remaining progress)
    :param buffer_size: replay capacity in steps, all envs together
    :param learning_starts: steps of random actions collected before training
    :param batch_size: sequences per batch
    :param sequence_length: steps per sequence
    :param train_freq: collect this many steps (per env) between training phases
    :param gradient_steps: gradient steps per training phase
    :param max_grad_norm: global gradient-norm clip of every optimizer
    :param mixed_precision: ``"bf16"`` runs the forward passes of training under bfloat16 autocast (losses,
        returns and gradients stay float32); off by default because it changes the numerics beyond
        floating-point noise. 1.5x (AMD EPYC) to 2.5x (Intel Xeon with AMX) faster on 2 CPU cores (docs/benchmarks.md).
        ``"fp16"``: float16 autocast with dynamic loss scaling (``torch.amp.GradScaler``), for GPUs without
        fast bfloat16 (V100, T4); an update whose scaled gradients overflow is skipped and the scale lowered,
        as loss scaling intends, and is counted in ``train/overflow_skips``, not as a non-finite update.
    :param compile_update: how the update runs. ``None`` (default): eagerly. ``"cuda_graph"`` (CUDA only): the whole
        update (losses, backward passes, clipping, the three optimizers' steps) captured as one CUDA graph after three
        eager warm-up updates and replayed on every batch, which removes the kernel launches that bound the eager
        update on a GPU; needs fixed batch shapes and Adam/AdamW (made ``capturable``) or LaProp; a setting the graph
        holds (gamma, ``max_nonfinite_updates``, ...) changed between training phases is captured again.
        ``"reduce-overhead"`` (CUDA only): ``torch.compile(update, mode="reduce-overhead")``. Both are off by default
        until measured better on a GPU (docs/benchmarks.md). ``"imagination"``
        (algorithms that imagine without gradient: DreamerV3): only the imagination step (actor sample and prior
        transition) is compiled by ``torch.compile``, the rest runs eagerly; it draws eager torch's random numbers,
        and its states and actions differ from eager's by float rounding. On 2 CPU cores it made the ``size1m``
        update about 10% faster (docs/benchmarks.md, DreamerV3). ``"losses"`` (algorithms whose update is one loss
        with one backward pass: DreamerV3): ``torch.compile`` of the whole forward pass of the update (world-model
        loss with its filtering loop, imagination, actor and critic losses) as one graph, whose backward pass
        AOTAutograd compiles with it; the optimizers' steps run eagerly. It draws eager torch's random numbers, and
        its losses differ from eager's by float rounding. Compiling takes minutes (the filtering and imagination
        loops are unrolled: 4 to 6 minutes for the ``size1m`` update on 2 CPU cores, about 2 with the compile caches
        of an earlier run), after which the ``size1m`` update takes about half the eager one's time
        (docs/benchmarks.md, DreamerV3): for runs of thousands of updates.
    :param max_nonfinite_updates: stop with an error after this many updates in a row with a
        non-finite loss or gradient (each is skipped, parameters untouched); checked once per training phase
    :param log_prediction_interval: for image observations, log an open-loop prediction strip (real frames,
        reconstructions of 5 context frames then open-loop predictions, error) as the TensorBoard image
        ``train/open_loop`` at the end of the first training phase, then every this many updates (0: never)
    :param replay_buffer_class: a :class:`SequenceReplayBuffer` subclass
    :param replay_buffer_kwargs: its extra keyword arguments
    :param policy_kwargs: keyword arguments of the policy (every model size)
    :param stats_window_size: window of the rollout statistics
    :param tensorboard_log: TensorBoard log folder
    :param verbose: 0, 1 or 2
    :param seed: random seed
    :param device: torch device
    :param _init_setup_model: build the networks at construction
    """

    policy: BeliefPolicy
    replay_buffer: SequenceReplayBuffer

    def __init__(
        self,
        policy: Union[str, type[BeliefPolicy]],
        env: Union[GymEnv, str, None],
        learning_rate: Union[float, Schedule],
        buffer_size: int = 1_000_000,
        learning_starts: int = 5000,
        batch_size: int = 50,
        sequence_length: int = 50,
        train_freq: Union[int, tuple[int, str]] = (1000, "step"),
        gradient_steps: int = 100,
        max_grad_norm: float = 100.0,
        max_nonfinite_updates: int = 10,
        mixed_precision: Optional[str] = None,
        compile_update: Optional[str] = None,
        log_prediction_interval: int = 1000,
        replay_buffer_class: Optional[type[SequenceReplayBuffer]] = None,
        replay_buffer_kwargs: Optional[dict[str, Any]] = None,
        policy_kwargs: Optional[dict[str, Any]] = None,
        stats_window_size: int = 100,
        tensorboard_log: Optional[str] = None,
        verbose: int = 0,
        seed: Optional[int] = None,
        device: Union[th.device, str] = "auto",
        _init_setup_model: bool = True,
    ) -> None:
        self._check_env_spaces(env)
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=1.0,
            gamma=0.99,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class or SequenceReplayBuffer,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            sde_support=False,
        )
        if self.env is not None:
            self._check_env_spaces(self.env)
        self._adopt_env()
        self._warn_on_device_fallback(device)
        if not issubclass(self.replay_buffer_class, SequenceReplayBuffer):
            raise ValueError(f"replay_buffer_class must be a SequenceReplayBuffer subclass, got {self.replay_buffer_class}")
        self.sequence_length = sequence_length
        self.max_grad_norm = max_grad_norm
        self.max_nonfinite_updates = max_nonfinite_updates
        self._check_update_options(mixed_precision, compile_update)
        self.mixed_precision = mixed_precision
        self.compile_update = compile_update
        # float16's loss scaler: built in _setup_model; its state travels in saves as plain numbers
        self.grad_scaler: Optional[th.amp.GradScaler] = None
        self._grad_scaler_state: Optional[dict[str, Any]] = None
        # the update machinery (built in _setup_model, not saved), and what compile_update builds around it
        self.update: Optional[GradientUpdate] = None
        self._update_runner: Optional[Any] = None
        self._imagination_runner: Optional[Callable[[LatentState], tuple[LatentState, th.Tensor]]] = None
        self._loss_runner: Optional[Callable[[SequenceSamples], tuple[th.Tensor, dict[str, th.Tensor], LatentState]]] = None
        self.log_prediction_interval = log_prediction_interval
        # whether this model object logged an open-loop image yet (not saved: a resumed run logs one at once too)
        self._open_loop_logged = False
        self._filter_state: Optional[RecurrentState] = None
        # non-finite updates in a row at the end of the last training phase (saved: a resumed run continues the count)
        self._nonfinite_in_a_row = 0
        # gradient steps that the last finished collection phase still owes (saved with the model, see learn)
        self._pending_gradient_steps = 0
        # the "training skipped: no full sequence yet" warning is given once per model object (not saved)
        self._warned_short_buffer = False
        # generator states, only set while a save writes them and while a load restores them
        self._rng_state: Optional[dict[str, Any]] = None

    @staticmethod
    def _check_env_spaces(env: Any) -> None:
        """Clear errors for unsupported spaces, before SB3's own assertions."""
        if hasattr(env, "action_space") and hasattr(env, "observation_space"):
            check_action_space(env.action_space)
            # the env wrapping transposes channel-last images and resizes images to 64x64 later
            split_observation_space(env.observation_space, env_space=True)

    @staticmethod
    def _wrap_env(env: GymEnv, verbose: int = 0, monitor_wrapper: bool = True) -> VecEnv:
        """
        SB3's wrapping (``Monitor``, ``DummyVecEnv``, ``VecTransposeImage``), then :class:`VecResizeImage` when
        images are not 64x64 (see :mod:`sb3_rssm.common.resize`). ``__init__``, ``set_env`` and ``load`` use it.
        """
        env = OffPolicyAlgorithm._wrap_env(env, verbose, monitor_wrapper)
        if resized_observation_space(env.observation_space) != env.observation_space:
            if verbose >= 1:
                print(f"Wrapping the env in a VecResizeImage (images to {IMAGE_SIZE}x{IMAGE_SIZE}).")
            env = VecResizeImage(env)
        return env

    def _adopt_env(self) -> None:
        """
        After ``__init__`` or ``set_env``: an image-resizing wrapper works on this model's device, and collection
        reads the original observations of a ``VecNormalize`` below transposing or resizing wrappers as they come out
        of those wrappers (as the replay buffer stores them).
        """
        if self.env is None:
            return
        wrapper = unwrap_vec_wrapper(self.env, VecResizeImage)
        if isinstance(wrapper, VecResizeImage):
            wrapper.device = self.device
        if isinstance(self._vec_normalize_env, VecNormalize):
            transforms = observation_transforms_between(self.env, self._vec_normalize_env)
            if transforms:
                self._vec_normalize_env = WrappedVecNormalize(self._vec_normalize_env, transforms)  # type: ignore[assignment]

    def set_env(self, env: GymEnv, force_reset: bool = True) -> None:
        """
        As SB3's ``set_env``: ``env`` must have the spaces of the model's env before wrapping (channel-last images
        and images of another size than 64x64 included: they are transposed and resized here too).

        :param env: the new env
        :param force_reset: reset it before the next ``learn``
        """
        super().set_env(env, force_reset)
        self._adopt_env()

    def get_vec_normalize_env(self) -> Optional[VecNormalize]:
        """The ``VecNormalize`` wrapper of the training env, if any (as in SB3)."""
        if isinstance(self._vec_normalize_env, WrappedVecNormalize):
            return self._vec_normalize_env.vec_normalize
        return self._vec_normalize_env

    def _warn_on_device_fallback(self, requested: Union[th.device, str]) -> None:
        """SB3 runs on the CPU when CUDA was asked for but is missing; say so, rather than train slowly in silence."""
        if requested == "auto" or th.device(requested).type != "cuda" or self.device.type == "cuda":
            return
        warnings.warn(
            f"device={str(requested)!r} was asked for, but CUDA is not available (torch {th.__version__}, "
            f"built for CUDA {th.version.cuda}): {type(self).__name__} runs on {self.device} instead. Install a CUDA "
            "build of torch (README: 'Installing torch') on a machine with a GPU, or pass device='cpu' (or 'auto').",
            stacklevel=3,
        )

    def _get_policy_from_name(self, policy_name: str) -> type[BasePolicy]:
        """SB3's alias look-up, with an error that lists the aliases (SB3 says only "unknown")."""
        if policy_name in self.policy_aliases:
            return self.policy_aliases[policy_name]
        hint = "".join(f" Did you mean {match!r}?" for match in closest(policy_name, self.policy_aliases)[:1])
        raise ValueError(
            f"Unknown policy {policy_name!r} for {type(self).__name__}.{hint} Use one of "
            f"{', '.join(map(repr, self.policy_aliases))}, or pass a {self.policy_base.__name__} subclass."
        )

    def _check_policy_kwargs(self, error: TypeError) -> None:
        """
        Raise a clear error for a misspelt ``policy_kwargs`` key, naming the closest valid ones.

        :param error: the error of the policy's construction, chained to this one
        """
        valid = policy_parameters(self.policy_class)
        hints = []
        for key in self.policy_kwargs:
            if key not in valid:
                matches = closest(key, valid)
                hints.append(f"{key!r}" + (f" (did you mean {' or '.join(map(repr, matches))}?)" if matches else ""))
        if hints:
            raise TypeError(
                f"Unknown policy_kwargs key{'s' if len(hints) > 1 else ''} for {self.policy_class.__name__}: "
                f"{'; '.join(hints)}. Valid keys: {', '.join(valid)}."
            ) from error

    def _setup_model(self) -> None:
        self.replay_buffer_kwargs = {"sequence_length": self.sequence_length, **self.replay_buffer_kwargs}
        try:
            super()._setup_model()
        except TypeError as error:
            # a policy subclass may take keys of its own through **kwargs: only when the policy (or the buffer)
            # really refused an argument is a key outside the constructors' parameters named as the culprit
            self._check_policy_kwargs(error)
            raise
        self._filter_state = None
        self._replay_posterior: Optional[tuple[th.Tensor, th.Tensor]] = None
        self.grad_scaler = th.amp.GradScaler(self.device.type) if self.mixed_precision == "fp16" else None
        self._warn_if_emulated_bf16()
        # the policy builds its optimizers with placeholder learning rates: the schedules' start values
        for _, optimizer, schedule in self._optimizer_schedules():
            set_learning_rate(optimizer, schedule(1.0))
        self._build_update()

    # ---- collection -------------------------------------------------------------------------

    def _sample_action(
        self,
        learning_starts: int,
        action_noise: Optional[ActionNoise] = None,
        n_envs: int = 1,
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        Filter the latest observation into the belief, then act: random actions during warm-up (the
        belief is still advanced with them), the policy's collection behaviour afterwards.
        """
        assert self._last_obs is not None and self._last_episode_starts is not None
        if self._filter_state is None or self._filter_state[0].shape[0] != n_envs:
            self._filter_state = self.policy.initial_state(n_envs)
        obs_tensor, _ = self.policy.obs_to_tensor(self._last_obs)
        starts = starts_tensor(self._last_episode_starts, n_envs, self.device)
        forced = None
        if self.num_timesteps < learning_starts:
            random_actions = np.array([self.action_space.sample() for _ in range(n_envs)])
            if isinstance(self.action_space, spaces.Box):
                random_actions = self.policy.scale_action(random_actions)
            forced = th.as_tensor(actions_to_model(random_actions, self.action_space), device=self.device)
        with th.no_grad():
            model_action, self._filter_state = self.policy.step(obs_tensor, self._filter_state, starts, False, forced)
        if isinstance(self.replay_buffer, SequenceReplayBuffer) and self.replay_buffer.replay_context:
            deterministic, stochastic = (x.float().cpu().numpy() for x in self._filter_state[:2])
            self.replay_buffer.store_latents(deterministic, stochastic, np.asarray(self._last_episode_starts, dtype=bool))
        action = self.policy.to_env_action(model_action)
        buffer_action = self.policy.scale_action(action) if isinstance(self.action_space, spaces.Box) else action
        return action, buffer_action

    def learn(
        self: SelfWorldModelAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: Optional[str] = None,
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfWorldModelAlgorithm:
        """
        SB3's off-policy loop (collect ``train_freq`` steps, then ``gradient_steps`` updates) with one
        addition: a model saved at the end of a collection phase (by ``CheckpointCallback``) records the
        updates that phase still owes, and performs them first when training resumes. Together with
        :meth:`collect_rollouts` this makes ``load`` + ``load_replay_buffer`` +
        ``learn(reset_num_timesteps=False)`` continue exactly where the checkpoint was taken.

        Parameters: as :meth:`stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm.learn`; ``tb_log_name``
        defaults to the class name (TensorBoard runs ``DreamerV1_1``, ``PlaNet_1``, ...), as SB3's algorithms do.
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name or type(self).__name__, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None, "You must set the environment before calling learn()"
        assert isinstance(self.train_freq, TrainFreq)
        self._train_pending(resuming=True)
        while self.num_timesteps < total_timesteps:
            rollout = self.collect_rollouts(
                self.env,
                callback=callback,
                train_freq=self.train_freq,
                replay_buffer=self.replay_buffer,
                learning_starts=self.learning_starts,
                log_interval=log_interval,
            )
            if not rollout.continue_training:
                break
            self._train_pending()
        callback.on_training_end()
        return self

    def _train_pending(self, resuming: bool = False) -> None:
        """
        Run the gradient steps the last collection phase owes.

        While no env stream of the replay buffer holds a full sequence (``learning_starts`` below
        ``sequence_length``, or ``load``/``set_env`` then ``learn(reset_num_timesteps=False)`` with an empty
        buffer) the steps are skipped, with a warning the first time, and training starts once it can sample.

        :param resuming: called at the start of ``learn``, where the steps were loaded with a checkpoint:
            without a replay buffer to train on (loaded without ``load_replay_buffer``) they are skipped
            with a warning that says how to resume exactly
        """
        steps, self._pending_gradient_steps = self._pending_gradient_steps, 0
        if steps <= 0:
            return
        if self.replay_buffer.can_sample():
            self.train(batch_size=self.batch_size, gradient_steps=steps)
        elif resuming:
            warnings.warn(
                f"Skipped {steps} gradient steps that the checkpoint still owed: the replay buffer holds no sequence "
                f"of {self.sequence_length} steps yet. Call load_replay_buffer() before learn() to resume exactly.",
                stacklevel=3,
            )
        elif not self._warned_short_buffer:
            # as SAC trains only once it can sample: after load()/set_env() with an empty buffer, or with
            # learning_starts below sequence_length, training starts as soon as one env stream holds a sequence
            self._warned_short_buffer = True
            warnings.warn(
                f"Training is skipped until the replay buffer holds a sequence of {self.sequence_length} steps in one env "
                f"stream (the longest holds {self.replay_buffer.longest_stream()} now, at num_timesteps="
                f"{self.num_timesteps}). To train from the start, set learning_starts >= sequence_length; after load(), "
                "call load_replay_buffer() to train on the saved steps.",
                stacklevel=3,
            )

    def collect_rollouts(
        self,
        env: VecEnv,
        callback: BaseCallback,
        train_freq: TrainFreq,
        replay_buffer: ReplayBuffer,
        action_noise: Optional[ActionNoise] = None,
        learning_starts: int = 0,
        log_interval: Optional[int] = None,
    ) -> RolloutReturn:
        """
        Collect one phase of ``train_freq`` steps (or episodes) into the replay buffer, as SB3 does,
        except that each step's callbacks run after the step is stored (SB3 runs them before): a model
        and buffer saved by a callback at step N then hold step N, and on the last step of a phase the
        updates the phase ends with are already recorded as pending.

        Parameters: as :meth:`stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm.collect_rollouts`.
        """
        self.policy.set_training_mode(False)
        assert isinstance(env, VecEnv), "You must pass a VecEnv"
        if env.num_envs > 1 and train_freq.unit == TrainFrequencyUnit.EPISODE:
            raise ValueError("train_freq counted in episodes needs a single env: count it in steps with several envs.")
        num_collected_steps, num_collected_episodes = 0, 0
        callback.on_rollout_start()
        while should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes):
            actions, buffer_actions = self._sample_action(learning_starts, action_noise, env.num_envs)
            try:
                new_obs, rewards, dones, infos = env.step(actions)
            except (EOFError, ConnectionError) as error:
                if not isinstance(env.unwrapped, SubprocVecEnv):
                    raise  # the env's own error (e.g. a network call), not a dead worker
                raise EnvWorkerError(
                    f"An env worker process stopped while stepping ({type(error).__name__}) at num_timesteps="
                    f"{self.num_timesteps}: the env raised inside the worker, and the worker's traceback is printed "
                    "above, on stderr. The model and its replay buffer are intact: model.save(...) and "
                    "model.save_replay_buffer(...) still work. To debug the env, run it in DummyVecEnv."
                ) from error
            self.num_timesteps += env.num_envs
            num_collected_steps += 1
            self._update_info_buffer(infos, dones)
            self._store_transition(replay_buffer, buffer_actions, new_obs, rewards, dones, infos)  # type: ignore[arg-type]
            self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
            self._on_step()
            for done in dones:
                if done:
                    num_collected_episodes += 1
                    self._episode_num += 1
                    if log_interval is not None and self._episode_num % log_interval == 0:
                        self.dump_logs()
            phase_done = not should_collect_more_steps(train_freq, num_collected_steps, num_collected_episodes)
            if phase_done and self.num_timesteps > learning_starts:
                self._pending_gradient_steps = (
                    self.gradient_steps if self.gradient_steps >= 0 else num_collected_steps * env.num_envs
                )
            callback.update_locals(locals())
            if not callback.on_step():
                return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training=False)
        callback.on_rollout_end()
        return RolloutReturn(num_collected_steps * env.num_envs, num_collected_episodes, continue_training=True)

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: Union[np.ndarray, dict[str, np.ndarray]],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        assert isinstance(replay_buffer, SequenceReplayBuffer)
        assert self._last_episode_starts is not None
        # the env may have been reset outside an episode end (e.g. by learn()): start a new episode there too
        replay_buffer.start_episodes(self._last_episode_starts)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        # SB3 sets this once per learn(); the belief must be reset after every episode end
        self._last_episode_starts = np.asarray(dones, dtype=bool).copy()

    # ---- training ---------------------------------------------------------------------------

    def _train_world_model(self, batch: SequenceSamples) -> tuple[LatentState, dict[str, th.Tensor]]:
        """
        The world model's loss and backward pass (its optimizer steps with the others, in ``update.step()``).

        :return: the posterior states (detached) and metrics
        """
        with self._autocast():
            loss, metrics, posterior = self.policy.world_model.loss(batch)
        self.update.backward(loss, "model")
        self._keep_for_replay(posterior)
        return posterior.detach(), metrics

    def _keep_for_replay(self, posterior: LatentState) -> None:
        """
        Hold the update's posterior states (detached) for the replay context: :meth:`train` writes them into the
        rows the batch came from after the phase's updates (a captured update refills the same tensors).
        """
        self._replay_posterior = (posterior.deterministic.detach(), posterior.stochastic.detach())

    def _train_step(self, batch: SequenceSamples) -> dict[str, th.Tensor]:
        """The losses and backward passes of one update (the optimizers step after it); returns detached scalar metrics."""
        raise NotImplementedError

    def train(self, gradient_steps: int, batch_size: int) -> None:
        """
        ``gradient_steps`` updates on batches sampled from the replay buffer, then the phase's metrics logged (read
        from the device once). A run of ``max_nonfinite_updates`` skipped updates raises
        :class:`~sb3_rssm.common.update.NonFiniteUpdateError` here, at the end of the phase (the updates after the
        one that reached the limit are not applied).

        :param gradient_steps: updates to run
        :param batch_size: sequences per batch
        """
        assert self.update is not None and self._update_runner is not None
        self.policy.set_training_mode(True)
        self._update_learning_rates()
        self._sync_update_settings()
        if gradient_steps > 0:
            self._announce_compile()
        first_update = self._n_updates
        start = time.perf_counter()
        buffer = self.replay_buffer
        context = isinstance(buffer, SequenceReplayBuffer) and buffer.replay_context
        posteriors = []
        for step in range(gradient_steps):
            batch = buffer.sample(batch_size, env=self._vec_normalize_env)
            self._update_runner(batch)
            if context:
                # copies on the device now; read on the host after the phase's one synchronisation
                posteriors.append((buffer.last_sample, *(x.clone() for x in self._replay_posterior)))
            if self.log_prediction_interval > 0 and (first_update + step + 1) % self.log_prediction_interval == 0:
                self._log_open_loop(batch)
        # a first image at the end of the first training phase: a short run shows one too
        if self.log_prediction_interval > 0 and gradient_steps > 0 and not self._open_loop_logged:
            self._log_open_loop(batch)
        report = self.update.read(first_update, self.num_timesteps)
        for (rows, envs), deterministic, stochastic in posteriors:
            buffer.write_latents(rows, envs, deterministic.float().cpu().numpy(), stochastic.float().cpu().numpy())
        elapsed = time.perf_counter() - start
        self._n_updates = first_update + report.updates
        self._nonfinite_in_a_row = report.nonfinite_in_a_row
        if report.error is not None:
            raise NonFiniteUpdateError(report.error)
        self.policy.set_training_mode(False)
        for key, value in report.metrics.items():
            self.logger.record(f"train/{key}", value)
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/skipped_updates", report.skipped)
        if self.grad_scaler is not None:
            self.logger.record("train/overflow_skips", report.overflows)
            self.logger.record("train/grad_scale", self.grad_scaler.get_scale())
        self.logger.record("time/updates_per_s", gradient_steps / max(elapsed, 1e-9))

    def _log_open_loop(self, batch: SequenceSamples, n_sequences: int = 4) -> None:
        """Log the open-loop prediction strip of the first ``n_sequences`` of ``batch`` (image observations only)."""
        self._open_loop_logged = True
        # the prediction samples latents: on a generator of its own, so that logging never changes what training draws
        # (a resumed run logs one image more than an uninterrupted one, and must still draw the same numbers)
        with th.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            strips = self.policy.world_model.open_loop_strips(batch, n_sequences)
        for key, strip in strips.items():
            name = "train/open_loop" if key == "observation" else f"train/open_loop/{key}"
            self.logger.record(name, Image(strip.cpu().numpy(), "HWC"), exclude=("stdout", "log", "json", "csv"))

    def predict(
        self,
        observation: Union[np.ndarray, dict[str, np.ndarray]],
        state: Optional[tuple[np.ndarray, ...]] = None,
        episode_start: Optional[np.ndarray] = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """
        Act on an observation and carry the recurrent belief state, like sb3-contrib's RecurrentPPO:
        pass back the returned ``state`` and the ``episode_start`` flags at the next call.
        (Collection inside ``learn()`` keeps its own state, so evaluation never disturbs it.)
        """
        return self.policy.predict(observation, state, episode_start, deterministic)
