"""
How a world-model algorithm's options become the update that runs: the checks of ``mixed_precision`` and
``compile_update``, the :class:`~sb3_rssm.common.update.GradientUpdate` over the policy's optimizer groups and
what runs it (eager, a captured CUDA graph or ``torch.compile``), the autocast context of the forward passes, the
learning-rate schedules of every optimizer, and the replay ratio (``train_ratio``) the training cadence gives.
:class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm` mixes it in.
"""

from __future__ import annotations

import contextlib
import inspect
import warnings
from typing import Any, Callable, ClassVar, Optional

import torch as th
from stable_baselines3.common.type_aliases import Schedule, TrainFreq
from stable_baselines3.common.utils import FloatSchedule

from sb3_rssm.common.policies import BeliefPolicy
from sb3_rssm.common.rssm import LatentState
from sb3_rssm.common.type_aliases import SequenceSamples
from sb3_rssm.common.update import (
    CapturedUpdate,
    GradientUpdate,
    make_capturable,
    release_capturable,
    set_learning_rate,
    use_fused,
)

MIXED_PRECISION = {None: None, "bf16": th.bfloat16, "fp16": th.float16}
COMPILE_UPDATE = (None, "cuda_graph", "reduce-overhead", "imagination", "losses")
#: how long the first update of each torch.compile option compiles (docs/benchmarks.md, DreamerV3; 2 CPU cores)
COMPILE_TIMES = {
    "losses": "4 to 6 minutes for DreamerV3's size1m update on 2 CPU cores, about 2 with the compile caches of an earlier run",
    "imagination": "3 to 45 s on 2 CPU cores, the longer without the compile caches of an earlier run",
    "reduce-overhead": "minutes",
}


def cpu_has_bf16(cpuinfo: str = "/proc/cpuinfo") -> Optional[bool]:
    """
    Whether this CPU has bfloat16 dot-product instructions (AVX512-BF16 or AMX), read from ``cpuinfo``; None where
    that file is not there (not Linux) and nothing is known.
    """
    try:
        with open(cpuinfo) as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return None
    return bool({"avx512_bf16", "amx_bf16"} & set(flags))


class UpdateWiringMixin:
    """
    The update machinery of :class:`~sb3_rssm.common.world_model_algorithm.WorldModelAlgorithm` (an
    ``OffPolicyAlgorithm``, whose attributes it reads): built in ``_setup_model`` by :meth:`_build_update`, run by
    ``train`` through ``_update_runner``. Subclasses declare what they support in the class variables below and
    implement ``_train_step`` (and ``_imagination_step`` / ``_update_loss`` where they declare those).
    """

    policy: BeliefPolicy
    device: th.device
    mixed_precision: Optional[str]
    compile_update: Optional[str]
    max_grad_norm: float
    max_nonfinite_updates: int
    grad_scaler: Optional[th.amp.GradScaler]
    update: Optional[GradientUpdate]
    _update_runner: Optional[Any]
    _imagination_runner: Optional[Callable[[LatentState], tuple[LatentState, th.Tensor]]]
    _loss_runner: Optional[Callable[[SequenceSamples], tuple[th.Tensor, dict[str, th.Tensor], LatentState]]]
    _nonfinite_in_a_row: int
    #: whether this model object said that its first update compiles (not saved: a loaded model compiles again)
    _compile_announced: bool = False

    #: learning rates besides the world model's: the algorithm's attribute (a float or schedule) -> the policy's
    #: optimizer it sets (e.g. ``{"actor_learning_rate": "actor_optimizer"}``)
    learning_rates: ClassVar[dict[str, str]] = {}
    #: whether the algorithm imagines without gradient in :meth:`_imagination_step` (``compile_update="imagination"``)
    imagines_without_gradient: ClassVar[bool] = False
    #: whether one update is one loss (:meth:`_update_loss`) with one backward pass (``compile_update="losses"``)
    has_single_loss: ClassVar[bool] = False

    def _warn_if_emulated_bf16(self) -> None:
        """Warn when ``mixed_precision="bf16"`` runs on a CPU without bfloat16 instructions (emulated: far slower)."""
        if self.mixed_precision != "bf16" or self.device.type != "cpu" or cpu_has_bf16() is not False:
            return
        warnings.warn(
            "mixed_precision='bf16' on a CPU without bfloat16 instructions (neither AVX512-BF16 nor AMX in "
            "/proc/cpuinfo): PyTorch emulates bfloat16 there, and an update runs about 10x slower than in float32 "
            "(DreamerV3 size1m on pixels: 12.3 s against 1.2 s on a 2-core AVX2 machine). Pass mixed_precision=None "
            "on this machine.",
            stacklevel=3,
        )

    def _check_update_options(self, mixed_precision: Optional[str], compile_update: Optional[str]) -> None:
        """
        Clear errors for a ``mixed_precision`` or ``compile_update`` that does not exist or that this algorithm
        cannot run (at construction, before anything is built).
        """
        if mixed_precision not in MIXED_PRECISION:
            raise ValueError(
                f"mixed_precision={mixed_precision!r} is not supported: use None (float32), 'bf16' (bfloat16 autocast) "
                "or 'fp16' (float16 autocast with loss scaling)."
            )
        if compile_update not in COMPILE_UPDATE:
            raise ValueError(
                f"compile_update={compile_update!r} is not supported: use None (eager), 'cuda_graph' (the whole update "
                "captured as one CUDA graph), 'reduce-overhead' (torch.compile's mode of that name), 'imagination' "
                "(torch.compile of the imagination step, DreamerV3) or 'losses' (torch.compile of the update's forward "
                "pass, DreamerV3)."
            )
        if compile_update == "imagination" and not self.imagines_without_gradient:
            raise ValueError(
                f"compile_update='imagination' compiles an imagination step that runs without gradient, which "
                f"{type(self).__name__} does not have (DreamerV1 trains its actor through the imagined dynamics; PlaNet "
                "imagines only while planning): use None, 'cuda_graph' or 'reduce-overhead'."
            )
        if compile_update == "losses" and not self.has_single_loss:
            raise ValueError(
                f"compile_update='losses' compiles an update that is one loss with one backward pass, which "
                f"{type(self).__name__} does not have (its world model, actor and value each have a backward pass of "
                "their own): use None, 'cuda_graph' or 'reduce-overhead'."
            )

    def _prepare_optimizers(self) -> None:
        """
        Optimizers in the form the update runs them: capturable for a captured graph, plain otherwise, and fused where
        torch has a fused form (Adam, AdamW): step counts on the device, and a non-finite update skipped by the step
        itself (AMP's ``found_inf``) rather than undone from copies of every parameter and state tensor.
        """
        for group in self.policy.optimizer_groups():
            if self.compile_update == "cuda_graph":
                make_capturable(group.optimizer)
            else:
                release_capturable(group.optimizer)
            # torch.compile of the whole update ("reduce-overhead") cannot trace a fused step
            use_fused(group.optimizer, enable=self.compile_update != "reduce-overhead")

    def _build_update(self) -> None:
        """
        The update machinery over the policy's optimizer groups (:class:`~sb3_rssm.common.update.GradientUpdate`),
        and, with ``compile_update``, what runs it: a captured CUDA graph or ``torch.compile``.
        """
        capture = self.compile_update == "cuda_graph"
        if capture:
            if self.device.type != "cuda":
                raise ValueError(
                    f"compile_update='cuda_graph' captures the update as a CUDA graph and needs device='cuda' (this model "
                    f"is on {self.device}). On a CPU leave compile_update=None."
                )
            if self.mixed_precision == "fp16":
                raise ValueError(
                    "compile_update='cuda_graph' cannot capture float16 loss scaling (GradScaler decides on the host): "
                    "use mixed_precision='bf16' or None with it."
                )
        if self.compile_update == "reduce-overhead" and self.device.type != "cuda":
            raise ValueError(
                f"compile_update='reduce-overhead' is torch.compile's CUDA-graph mode and needs device='cuda' (this model "
                f"is on {self.device}): on a CPU it only adds compile time (learn(150) of a tiny DreamerV1 did not finish "
                "in 80 s, against 0.3 s eagerly). Use None, or for DreamerV3 'losses' or 'imagination'."
            )
        self._prepare_optimizers()
        self.update = GradientUpdate(
            self.policy.optimizer_groups(),
            self.max_grad_norm,
            self.max_nonfinite_updates,
            self.grad_scaler,
            self._nonfinite_in_a_row,
            static_gradients=capture,
        )
        if capture:
            self._update_runner = CapturedUpdate(self._update_once, settings=self._captured_settings)
        elif self.compile_update == "reduce-overhead":
            self._update_runner = th.compile(self._update_once, mode="reduce-overhead")
        else:
            self._update_runner = self._update_once
        # compiled for fixed shapes (the batch's are); fallback_random draws the random numbers through eager torch,
        # so they and the generator's state after them are eager's (a resumed run draws the same ones). Under "losses"
        # the imagination step is traced into the losses' graph, so it stays a plain method here.
        compile_options = dict(dynamic=False, options={"fallback_random": True})
        if self.imagines_without_gradient:
            self._imagination_runner = (
                th.compile(self._imagination_step, **compile_options)
                if self.compile_update == "imagination"
                else self._imagination_step
            )
        if self.has_single_loss:
            self._loss_runner = (
                th.compile(self._update_loss, **compile_options) if self.compile_update == "losses" else self._update_loss
            )

    def _captured_settings(self) -> tuple[Any, ...]:
        """
        Every setting the update reads on the host, which a captured graph holds as it was at the capture: the
        algorithm's constructor arguments of plain values (gamma, lambda, entropy scale, horizon, ``max_grad_norm``,
        ``max_nonfinite_updates``, ...), the networks' (free nats, KL scales, std bounds, ...) and the optimizers'
        (betas, eps, clipping, warm-up). A
        :class:`~sb3_rssm.common.update.CapturedUpdate` compares them before every replay and captures again when one
        changed, so that a setting changed between updates takes effect as it does eagerly. Learning rates are
        device tensors changed in place (:func:`~sb3_rssm.common.update.set_learning_rate`) and are left out.
        """
        skipped = {"self", "policy", "env", "learning_rate", *self.learning_rates}
        names = sorted(set(inspect.signature(type(self).__init__).parameters) - skipped)
        values = {name: vars(self)[name] for name in names if name in vars(self)}
        algorithm = tuple((name, value) for name, value in values.items() if _plain(value))
        # the networks' own settings (free nats, KL scales, unimix, std bounds, ...)
        modules = tuple(
            (module_name, key, value)
            for module_name, module in self.policy.named_modules()
            for key, value in vars(module).items()
            if not key.startswith("_") and key != "training" and _plain(value)
        )
        optimizers = tuple(
            (group.name, index, key, value)
            for group in self.policy.optimizer_groups()
            for index, param_group in enumerate(group.optimizer.param_groups)
            for key, value in sorted(param_group.items())
            if key != "params" and _plain(value)
        )
        return algorithm + modules + optimizers

    def _announce_compile(self) -> None:
        """
        Before the first update of a compiled ``compile_update``: say that it compiles, and for how long, so that a
        progress bar that stalls for minutes does not look like a hang (once per model object).
        """
        expected = COMPILE_TIMES.get(self.compile_update)
        if expected is None or self._compile_announced:
            return
        self._compile_announced = True
        warnings.warn(
            f"compile_update={self.compile_update!r}: the first update compiles first ({expected}); training goes on at "
            "the compiled speed after it. compile_update=None trains eagerly, with no wait.",
            stacklevel=3,
        )

    def _sync_update_settings(self) -> None:
        """
        Before a training phase: the update's copies of ``max_grad_norm`` and ``max_nonfinite_updates`` follow the
        algorithm's, and a captured graph whose settings changed is captured again (settings only change between
        phases: no callback runs inside one).
        """
        assert self.update is not None
        self.update.max_grad_norm = self.max_grad_norm
        self.update.max_nonfinite_updates = self.max_nonfinite_updates
        if isinstance(self._update_runner, CapturedUpdate):
            self._update_runner.check_settings()

    def _imagination_step(self, state: LatentState) -> tuple[LatentState, th.Tensor]:
        """
        One imagined step of an algorithm that imagines without gradient (``imagines_without_gradient``).

        :param state: (N, ...) latent states
        :return: the next states (the prior after the action) and the actions taken in ``state``
        """
        raise NotImplementedError(f"{type(self).__name__} does not imagine without gradient")

    @property
    def train_ratio(self) -> Optional[float]:
        """
        Replayed steps per agent step (DreamerV3's ``train_ratio``): each update replays ``batch_size *
        sequence_length`` steps, and ``gradient_steps`` updates follow every ``train_freq`` steps of each of the
        ``n_envs`` envs, so ``gradient_steps * batch_size * sequence_length / (train_freq * n_envs)``. None when
        ``train_freq`` counts episodes.
        """
        train_freq = self.train_freq
        if isinstance(train_freq, TrainFreq):
            frequency, unit = train_freq.frequency, train_freq.unit.value
        elif isinstance(train_freq, tuple):
            frequency, unit = train_freq
        else:
            frequency, unit = train_freq, "step"
        if unit != "step":
            return None
        steps = frequency * self.n_envs
        updates = self.gradient_steps if self.gradient_steps >= 0 else steps
        return updates * self.batch_size * self.sequence_length / steps

    def _optimizer_schedules(self) -> list[tuple[str, th.optim.Optimizer, Schedule]]:
        """(log name, optimizer, learning-rate schedule) of every optimizer: the world model's, then :attr:`learning_rates`."""
        return [("learning_rate", self.policy.world_model_optimizer, self.lr_schedule)] + [
            (name, getattr(self.policy, optimizer), FloatSchedule(getattr(self, name)))
            for name, optimizer in self.learning_rates.items()
        ]

    def _autocast(self) -> contextlib.AbstractContextManager:
        """Context of the training forward passes: autocast to ``mixed_precision``'s type, if any."""
        if self.mixed_precision is None:
            return contextlib.nullcontext()
        # autocast's cache of cast weights must not outlive a captured graph's replay
        return th.autocast(
            device_type=self.device.type,
            dtype=MIXED_PRECISION[self.mixed_precision],
            cache_enabled=self.compile_update is None,
        )

    def _update_learning_rates(self) -> None:
        for name, optimizer, schedule in self._optimizer_schedules():
            learning_rate = schedule(self._current_progress_remaining)
            self.logger.record(f"train/{name}", learning_rate)
            set_learning_rate(optimizer, learning_rate)

    def _update_loss(self, batch: SequenceSamples) -> tuple[th.Tensor, dict[str, th.Tensor], LatentState]:
        """
        The loss of one update, its detached scalar metrics and the detached posterior states, for algorithms with
        ``has_single_loss`` (their :meth:`_train_step` runs it through ``_loss_runner``, compiled under
        ``compile_update="losses"``).
        """
        raise NotImplementedError(f"{type(self).__name__} has no single loss per update")

    def _update_once(self, batch: SequenceSamples) -> None:
        """
        One whole update: losses, backward passes, clipping and the gated optimizer steps, with its metrics kept on
        the device. Nothing in it waits for the device (see :mod:`sb3_rssm.common.update`), so it can be captured.
        """
        self.update.finish(self._train_step(batch))


def _plain(value: Any) -> bool:
    """Whether ``value`` is a setting a graph could hold as a constant: a number, string, bool, None, or a tuple of them."""
    if isinstance(value, tuple):
        return all(_plain(item) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))
