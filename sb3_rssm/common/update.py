"""
The training update of the world-model agents, as a step with a small interface: parameter groups with their
optimizers, backward passes, gradient clipping, float16 loss scaling, the skipping of non-finite updates, and
metrics, all without a host synchronisation, so that the whole update can be captured as one CUDA graph.

An algorithm computes its losses and hands each to :meth:`GradientUpdate.backward` with the groups it trains;
:meth:`GradientUpdate.step` then steps every group's optimizer, after every loss of the update is computed (as
the reference implementations apply their optimizers). A group whose loss or gradient norm is non-finite is
not stepped, decided on the device: an optimizer that takes AMP's ``found_inf`` flag (Adam and AdamW in their
fused form, which :func:`use_fused` selects, and LaProp) skips the step itself, as ``GradScaler`` has it do; any
other optimizer's step is computed and then undone (``torch.where`` back to copies of the values before it).
Either way the parameters and the optimizer state are exactly as if the step had been skipped. Counters of such
updates live on the device too, and :meth:`GradientUpdate.read` reads them, with the metrics, once per training
phase; that is where :class:`NonFiniteUpdateError` is raised after ``max_nonfinite_updates`` in a row (the
updates after the one that reached the limit are not applied, so the parameters are those of that moment).
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Callable, NamedTuple, Optional

import torch as th

from sb3_rssm.common.type_aliases import SequenceSamples


class NonFiniteUpdateError(RuntimeError):
    """Training produced non-finite losses or gradients too many updates in a row."""


class OptimizerGroup(NamedTuple):
    """
    Parameters trained by one optimizer.

    :param name: short name, used in metrics (``<name>_grad_norm``)
    :param description: what the group is, in error messages (e.g. "world model")
    :param optimizer: the optimizer of exactly these parameters
    :param parameters: the parameters
    """

    name: str
    description: str
    optimizer: th.optim.Optimizer
    parameters: list[th.nn.Parameter]


class PhaseReport(NamedTuple):
    """
    What :meth:`GradientUpdate.read` found over the updates since the previous read.

    :param metrics: metric means over the phase's updates (gradient norms over the updates that stepped them)
    :param skipped: updates skipped for a non-finite loss or gradient
    :param overflows: updates whose float16 gradients overflowed (skipped too, counted apart)
    :param nonfinite_in_a_row: the current run of non-finite updates (continues into the next phase)
    :param updates: updates counted (all of the phase's, or up to the one that reached the limit)
    :param error: the message of the :class:`NonFiniteUpdateError` to raise, or None
    """

    metrics: dict[str, float]
    skipped: int
    overflows: int
    nonfinite_in_a_row: int
    updates: int
    error: Optional[str]


class GradientUpdate:
    """
    Backward passes, clipping and gated optimizer steps of one update over several parameter groups.

    Per update: call :meth:`backward` once per loss (several groups may share one loss), optionally
    :meth:`accumulate` the update's metrics, then :meth:`step`. Per training phase: :meth:`read`.

    :param groups: the parameter groups, each with its own optimizer
    :param max_grad_norm: global-norm clip of each group's gradient
    :param max_nonfinite_updates: :meth:`read` raises after this many updates in a row with a non-finite loss or
        gradient
    :param grad_scaler: float16 loss scaling: the loss is scaled before the backward pass and the gradients
        unscaled before clipping; non-finite gradients of a finite loss while the scale is above 1 are an
        overflow of the scaled gradients (skipped and counted apart, the scale lowered), not a non-finite update
    :param nonfinite_in_a_row: non-finite updates in a row before this object (a resumed run continues the count)
    :param static_gradients: keep gradient tensors allocated between updates (``zero_grad(set_to_none=False)``),
        as a captured CUDA graph needs
    """

    def __init__(
        self,
        groups: Sequence[OptimizerGroup],
        max_grad_norm: float,
        max_nonfinite_updates: int,
        grad_scaler: Optional[th.amp.GradScaler] = None,
        nonfinite_in_a_row: int = 0,
        static_gradients: bool = False,
    ) -> None:
        self.groups = {group.name: group for group in groups}
        self.max_grad_norm = max_grad_norm
        self.max_nonfinite_updates = max_nonfinite_updates
        self.grad_scaler = grad_scaler
        self.static_gradients = static_gradients
        device = groups[0].parameters[0].device
        self.device = device
        counter = dict(dtype=th.long, device=device)
        self.nonfinite_in_a_row = th.tensor(nonfinite_in_a_row, **counter)
        # per phase: updates stepped, skipped (non-finite), overflows
        self.updates = th.zeros((), **counter)
        self.skipped = th.zeros((), **counter)
        self.overflows = th.zeros((), **counter)
        # (failure code, update of the phase) of the first failure of the current run of non-finite updates, and the
        # same of the run that reached the limit, once one has. Every counter is updated in place: a captured graph
        # replays its kernels on the same memory.
        self.run_start = th.full((2,), -1, **counter)
        self.error = th.full((2,), -1, **counter)
        self.metric_sums: dict[str, th.Tensor] = {}
        self.metric_counts: dict[str, th.Tensor] = {}
        # this update's checks per group: (loss finite, gradient norm finite, gradient norm)
        self._checks: dict[str, tuple[th.Tensor, th.Tensor, th.Tensor]] = {}
        #: per group that the last step reached, whether its optimizer's step was applied (a boolean device scalar):
        #: for what must follow an applied step only, such as a target network's moving average
        self.applied: dict[str, th.Tensor] = {}

    def backward(self, loss: th.Tensor, *names: str) -> th.Tensor:
        """
        Backward pass of ``loss`` into the parameters of the named groups (and no others: a loss that reaches
        another group's parameters through the graph, like an actor's loss through the dynamics, adds nothing to
        their gradients), then unscale (float16) and clip each group's gradient.

        :param loss: scalar loss
        :param names: the groups ``loss`` trains
        :return: the gradient norm before clipping of the last named group (for a single group: its norm)
        """
        groups = [self.groups[name] for name in names]
        # (by hand: torch.compile does not trace Optimizer.zero_grad)
        for parameter in (p for group in groups for p in group.parameters):
            if self.static_gradients and parameter.grad is not None:
                parameter.grad.zero_()
            else:
                parameter.grad = None
        loss_finite = th.isfinite(loss.detach())
        scaler = self.grad_scaler
        scaled = loss if scaler is None else scaler.scale(loss)
        scaled.backward(inputs=[p for group in groups for p in group.parameters])
        norm = loss.new_zeros(())
        for group in groups:
            if scaler is not None:
                scaler.unscale_(group.optimizer)
                # a non-finite loss is not an overflow of the scale: keep it out of the scaler's bookkeeping
                # (GradScaler keeps the check it will act on per optimizer and device; there is no public hook)
                for found_inf in scaler._per_optimizer_states[id(group.optimizer)]["found_inf_per_device"].values():
                    found_inf.mul_(loss_finite.to(found_inf.device))
            norm = th.nn.utils.clip_grad_norm_(group.parameters, self.max_grad_norm, foreach=True)
            self._checks[group.name] = (loss_finite, th.isfinite(norm), norm.detach())
        return norm.detach()

    def accumulate(self, metrics: dict[str, th.Tensor]) -> None:
        """Add one update's scalar metrics to the phase's sums (on the device)."""
        for key, value in metrics.items():
            self.accumulate_masked(key, value.detach(), th.ones((), dtype=th.bool, device=value.device))

    def finish(self, metrics: dict[str, th.Tensor]) -> None:
        """The end of an update: :meth:`accumulate` its metrics, then :meth:`step`."""
        self.accumulate(metrics)
        self.step()

    def step(self) -> None:
        """
        Step the optimizer of every group that :meth:`backward` reached in this update, where its loss and gradient
        are finite; count the update as skipped where one is not (float16: as an overflow where only the scaled
        gradient was not), and keep each stepped group's gradient norm as a metric.
        """
        scaler = self.grad_scaler
        scale_above_one = None if scaler is None else scaler._get_scale_async() > 1.0
        limit_reached = self.error[0] >= 0
        nonfinite_any = th.zeros((), dtype=th.bool, device=self.device)
        overflow_any = th.zeros((), dtype=th.bool, device=self.device)
        first_code = th.full((), -1, dtype=th.long, device=self.device)
        self.applied = {}
        for index, (name, group) in enumerate(self.groups.items()):
            if name not in self._checks:
                continue
            loss_finite, grad_finite, norm = self._checks.pop(name)
            finite = loss_finite & grad_finite
            overflow = th.zeros_like(finite) if scale_above_one is None else loss_finite & ~grad_finite & scale_above_one
            nonfinite = ~finite & ~overflow
            # codes: 2 * group index for a non-finite loss, + 1 for a non-finite gradient of a finite loss
            code = th.where(loss_finite, 2 * index + 1, 2 * index)
            first_code = th.where((first_code < 0) & nonfinite, code, first_code)
            nonfinite_any |= nonfinite
            overflow_any |= overflow
            applied = finite & ~limit_reached
            self.applied[name] = applied
            self._gated_step(group, applied)
            self.accumulate_masked(f"{name}_grad_norm", norm, applied)
        if scaler is not None:
            # once per update, after every optimizer's step: lowers the scale after an overflow
            scaler.update()
        # the run of non-finite updates: where it started, and whether it reached the limit now
        # the update that reaches the limit is counted; those after it are neither applied nor counted
        counted = ~limit_reached
        starts_run = counted & nonfinite_any & (self.nonfinite_in_a_row == 0)
        self.run_start.copy_(th.where(starts_run, th.stack([first_code, self.updates]), self.run_start))
        in_a_row = th.where(nonfinite_any, self.nonfinite_in_a_row + 1, 0)
        self.nonfinite_in_a_row.copy_(th.where(counted, in_a_row, self.nonfinite_in_a_row))
        reaches = counted & (self.nonfinite_in_a_row >= self.max_nonfinite_updates)
        self.error.copy_(th.where(reaches, self.run_start, self.error))
        self.skipped += (nonfinite_any & counted).long()
        self.overflows += (overflow_any & counted).long()
        self.updates += counted.long()

    def accumulate_masked(self, key: str, value: th.Tensor, mask: th.Tensor) -> None:
        """Add ``value`` to the metric ``key`` where ``mask`` (a boolean scalar) is true."""
        if key not in self.metric_sums:
            self.metric_sums[key] = th.zeros((), device=value.device)
            self.metric_counts[key] = th.zeros((), device=value.device)
        self.metric_sums[key] += th.where(mask, value.float(), 0.0)
        self.metric_counts[key] += mask.float()

    @th.no_grad()
    def _gated_step(self, group: OptimizerGroup, apply: th.Tensor) -> None:
        """The optimizer's step where ``apply`` is true; where it is false, the parameters and state stay as they were."""
        optimizer = group.optimizer
        if takes_found_inf(optimizer):
            # AMP's protocol (GradScaler's): the step reads the flag on the device and leaves everything as it was
            optimizer.found_inf = (~apply).float()  # type: ignore[attr-defined]
            try:
                self._step(optimizer)
            finally:
                del optimizer.found_inf  # type: ignore[attr-defined]
            return
        before = {id(p): [p, *self._state_tensors(optimizer, p)] for p in group.parameters}
        snapshots = {key: [t.clone() for t in tensors] for key, tensors in before.items()}
        self._step(optimizer)
        for p in group.parameters:
            kept = snapshots[id(p)]
            current = [p, *self._state_tensors(optimizer, p)]
            for tensor, old in zip(current, kept):
                tensor.copy_(th.where(apply, tensor, old))
            # state created by this very step (an optimizer's first): undone to its initial zeros
            for tensor in current[len(kept) :]:
                tensor.copy_(th.where(apply, tensor, th.zeros_like(tensor)))

    @staticmethod
    def _step(optimizer: th.optim.Optimizer) -> None:
        if th.compiler.is_compiling():
            # Optimizer.step's decorators break the graph on purpose, to run the step outside autograd; gradients are
            # off here already, so under torch.compile the undecorated step joins the update's one graph
            inspect.unwrap(type(optimizer).step)(optimizer)
        else:
            optimizer.step()

    @staticmethod
    def _state_tensors(optimizer: th.optim.Optimizer, parameter: th.nn.Parameter) -> list[th.Tensor]:
        """The optimizer's state tensors of one parameter, in a fixed order (empty before its first step)."""
        state = optimizer.state.get(parameter, {})
        return [state[key] for key in sorted(state) if isinstance(state[key], th.Tensor)]

    def read(self, first_update: int, num_timesteps: int) -> PhaseReport:
        """
        Read the phase's metrics and counters (one host synchronisation) and reset them for the next phase.

        :param first_update: the algorithm's update count when the phase began (for error messages)
        :param num_timesteps: the algorithm's step count (for error messages)
        :return: the phase's report; ``error`` says what :class:`NonFiniteUpdateError` to raise, if any
        """
        keys = list(self.metric_sums)
        counters = th.stack([self.updates, self.skipped, self.overflows, self.nonfinite_in_a_row, *self.error]).tolist()
        sums = th.stack([self.metric_sums[k] for k in keys]).tolist() if keys else []
        counts = th.stack([self.metric_counts[k] for k in keys]).tolist() if keys else []
        updates, skipped, overflows, in_a_row, code, first = counters
        metrics = {key: total / count for key, total, count in zip(keys, sums, counts) if count > 0}
        error = None
        if code >= 0:
            group = list(self.groups.values())[code // 2]
            where = f"{group.description} {'gradient' if code % 2 else 'loss'}"
            error = (
                f"{self.max_nonfinite_updates} updates in a row had non-finite losses or gradients and were skipped "
                f"(first: {where} at update {first_update + first} (num_timesteps={num_timesteps})). Check the rewards "
                "and observations (VecCheckNan), lower the learning rates, or raise max_nonfinite_updates."
            )
        for tensor in (self.updates, self.skipped, self.overflows, *self.metric_sums.values(), *self.metric_counts.values()):
            tensor.zero_()
        self.error.fill_(-1)
        # a run that goes on into the next phase began before it: count its start from the next phase's first update
        self.run_start[1] -= updates
        return PhaseReport(metrics, skipped, overflows, in_a_row, updates, error)


def set_learning_rate(optimizer: th.optim.Optimizer, learning_rate: float) -> None:
    """
    Set every parameter group's learning rate: in place where it is a tensor (a captured graph reads it from its
    memory), by assignment otherwise (SB3's ``update_learning_rate``).
    """
    for group in optimizer.param_groups:
        if isinstance(group["lr"], th.Tensor):
            group["lr"].fill_(learning_rate)
        else:
            group["lr"] = learning_rate


def takes_found_inf(optimizer: th.optim.Optimizer) -> bool:
    """
    Whether ``optimizer.step()`` honours AMP's ``found_inf`` attribute (a device flag: 1 skips the step, leaving the
    parameters, the state and the step count as they were): torch's fused optimizers, and LaProp.
    """
    return bool(getattr(optimizer, "_step_supports_amp_scaling", False))


def use_fused(optimizer: th.optim.Optimizer, enable: bool = True) -> None:
    """
    Switch a torch optimizer that has a fused implementation for its parameters' device (Adam, AdamW, ...) to it: one
    kernel per step whose step counts live on the device and which skips a step on ``found_inf``
    (:func:`takes_found_inf`), so that a non-finite update is skipped without copying the state and nothing is read
    back to the host. Others (LaProp included, which takes ``found_inf`` itself) are left as they are.

    :param optimizer: the optimizer
    :param enable: False switches a fused optimizer back to ``foreach`` (``torch.compile`` cannot trace a fused
        step, which a compiled update that contains the optimizer steps needs)
    """
    if "fused" not in optimizer.defaults or any(group.get("differentiable") for group in optimizer.param_groups):
        return
    if not enable:
        for group in optimizer.param_groups:
            if group.get("fused"):
                group["fused"], group["foreach"] = False, True
        optimizer._step_supports_amp_scaling = False  # type: ignore[attr-defined]
        return
    from torch.optim.optimizer import _get_fused_kernels_supported_devices

    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    supported = _get_fused_kernels_supported_devices()
    if not parameters or any(p.device.type not in supported or not p.is_floating_point() for p in parameters):
        return
    for group in optimizer.param_groups:
        group["fused"] = True
        group["foreach"] = False
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if isinstance(state.get("step"), th.Tensor):
                state["step"] = state["step"].to(device=parameter.device, dtype=th.float32)
    # what the constructor sets for fused=True: step() then takes grad_scale / found_inf
    optimizer._step_supports_amp_scaling = True  # type: ignore[attr-defined]


def make_capturable(optimizer: th.optim.Optimizer) -> None:
    """
    Prepare an optimizer (Adam, AdamW, ...) for a captured CUDA graph: ``capturable=True`` (its step counts stay on
    the device), ``foreach=True``, and learning rates as device tensors, changed in place by :func:`set_learning_rate`.
    """
    if "capturable" not in optimizer.defaults:
        raise ValueError(
            f"{type(optimizer).__name__} has no capturable mode, so its steps cannot be captured in a CUDA graph: use "
            "torch.optim.Adam or AdamW (policy_kwargs optimizer_class), or compile_update=None."
        )
    for group in optimizer.param_groups:
        device = group["params"][0].device
        group["capturable"] = True
        group["foreach"] = True
        group["lr"] = th.as_tensor(group["lr"], dtype=th.float32, device=device)
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if isinstance(state.get("step"), th.Tensor):
                state["step"] = state["step"].to(device=device, dtype=th.float32)


def release_capturable(optimizer: th.optim.Optimizer) -> None:
    """Undo :func:`make_capturable` (e.g. for a model saved from a captured run and loaded to train eagerly)."""
    for group in optimizer.param_groups:
        if group.get("capturable"):
            group["capturable"] = False
        if isinstance(group["lr"], th.Tensor):
            group["lr"] = float(group["lr"])
        if group.get("fused") or getattr(optimizer, "state_on_device", False):
            continue  # fused optimizers (and LaProp) keep their step counts on the device
        for parameter in group["params"]:
            state = optimizer.state.get(parameter, {})
            if isinstance(state.get("step"), th.Tensor) and state["step"].device.type != "cpu":
                state["step"] = state["step"].to("cpu", th.float32)


class CapturedUpdate:
    """
    Runs an update function as a captured CUDA graph: each batch is copied into static input tensors, and the graph
    recorded from the function is replayed. The first ``warmup`` calls run eagerly on a side stream (as capture needs:
    lazily created state such as optimizer moments and gradient buffers must exist first); the next call captures.

    A graph holds every number the update read on the host as a constant. ``settings`` returns those numbers, and
    :meth:`check_settings` (called before each training phase) drops the graph when they differ from the ones at the
    capture (a user lowered ``gamma`` between phases): the next call captures again, so the change takes effect as it
    would eagerly. A new object is built (and captures afresh) when the tensors the graph reads are replaced, e.g. by
    loading optimizer state.

    :param update: the whole update on one batch, free of host synchronisation (see :class:`GradientUpdate`)
    :param warmup: eager calls before the capture
    :param settings: the host values the update reads; None: nothing to compare
    """

    def __init__(
        self,
        update: Callable[[SequenceSamples], None],
        warmup: int = 3,
        settings: Optional[Callable[[], Any]] = None,
    ) -> None:
        self.update = update
        self.warmup = warmup
        self.settings = settings
        self.calls = 0
        self.captures = 0
        self.static: Optional[SequenceSamples] = None
        self.graph: Optional[th.cuda.CUDAGraph] = None
        self._captured_settings: Any = None

    def __call__(self, batch: SequenceSamples) -> None:
        if self.static is None:
            self.static = _map_tensors(lambda x: x.clone(), batch)
        else:
            _copy_tensors(self.static, batch)
        self.calls += 1
        if self.graph is not None:
            self.graph.replay()
            return
        if self.calls <= self.warmup:
            side = th.cuda.Stream()
            side.wait_stream(th.cuda.current_stream())
            with th.cuda.stream(side):
                self.update(self.static)
            th.cuda.current_stream().wait_stream(side)
            return
        graph = th.cuda.CUDAGraph()
        with th.cuda.graph(graph):
            self.update(self.static)
        # capture records the kernels without running them: this call's update is the first replay
        graph.replay()
        self.graph = graph
        self.captures += 1
        self._captured_settings = None if self.settings is None else self.settings()

    def check_settings(self) -> bool:
        """
        Drop the graph if a setting it holds changed since the capture (the next call captures again).

        :return: whether it was dropped
        """
        if self.graph is None or self.settings is None or self.settings() == self._captured_settings:
            return False
        self.graph = None
        return True


def _map_tensors(function: Callable[[th.Tensor], th.Tensor], batch: SequenceSamples) -> SequenceSamples:
    observations = batch.observations
    if isinstance(observations, dict):
        observations = {key: function(value) for key, value in observations.items()}
    else:
        observations = function(observations)
    return SequenceSamples(observations, *(None if x is None else function(x) for x in batch[1:]))


def _copy_tensors(static: SequenceSamples, batch: SequenceSamples) -> None:
    """Copy ``batch`` into the tensors of ``static``, which has the same structure and shapes."""
    if isinstance(static.observations, dict):
        pairs = [(static.observations[key], batch.observations[key]) for key in static.observations]
    else:
        pairs = [(static.observations, batch.observations)]
    for target, source in [*pairs, *((a, b) for a, b in zip(static[1:], batch[1:]) if a is not None)]:
        if target.shape != source.shape:
            raise ValueError(
                f"A captured update takes batches of one shape: got {tuple(source.shape)} after {tuple(target.shape)}. "
                "Keep batch_size and sequence_length fixed with compile_update='cuda_graph'."
            )
        target.copy_(source, non_blocking=True)
