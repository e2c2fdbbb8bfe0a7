"""
DreamerV3's optimizer (danijar/dreamerv3 ``embodied/jax/opt.py`` and ``Agent._make_opt``): LaProp (Ziyin et al.,
2020, "LaProp: Separating Momentum and Adaptivity in Adam") after adaptive gradient clipping, with a linear
learning-rate warm-up.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, Optional, Union

import torch as th


class LaProp(th.optim.Optimizer):
    """
    Per parameter tensor ``p`` with gradient ``g``, at update ``t`` (counted from 1):

    1. adaptive gradient clipping: ``g *= min(1, agc * max(agc_min_norm, ||p||) / ||g||)``, so that no tensor's
       gradient is larger than ``agc`` times the tensor (norms over the whole tensor);
    2. ``nu = beta2 * nu + (1 - beta2) * g^2`` and ``u = g / (sqrt(nu / (1 - beta2^t)) + eps)``: the gradient
       normalised by its running RMS *before* the momentum (LaProp; Adam normalises the momentum after);
    3. ``mu = beta1 * mu + (1 - beta1) * u`` and ``p -= lr_t * mu / (1 - beta1^t)``, with ``lr_t = lr * min(1, t /
       warmup)``: the learning rate rises linearly over the first ``warmup`` updates (DreamerV3: 1000; its optax
       schedule starts at 0 and reaches ``lr`` one update later than this one).

    DreamerV3's defaults: lr 4e-5, betas (0.9, 0.999), eps 1e-20, agc 0.3. Every state entry is a tensor, so a
    checkpoint of it loads with ``torch.load(weights_only=True)``. A step reads nothing back to the host and takes
    a tensor learning rate, so it can be captured in a CUDA graph: ``capturable`` and ``foreach`` are accepted (as
    :func:`~sb3_rssm.common.update.make_capturable` sets them) and change nothing. Like torch's fused optimizers it
    takes AMP's ``found_inf`` attribute (a device flag, set by :class:`~sb3_rssm.common.update.GradientUpdate` for a
    non-finite update): where it is 1 the step leaves the parameters, the state and the step count as they were.

    :param params: parameters or parameter groups
    :param lr: learning rate after the warm-up
    :param betas: (momentum decay, squared-gradient decay)
    :param eps: added to the RMS of the gradient
    :param agc: clipping ratio of the gradient norm to the parameter norm (0: no clipping)
    :param agc_min_norm: parameter norm assumed for smaller (e.g. zero-initialised) tensors
    :param warmup: updates of the linear warm-up (0: none)
    """

    def __init__(
        self,
        params: Union[Iterable[th.Tensor], Iterable[dict[str, Any]]],
        lr: float = 4e-5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-20,
        agc: float = 0.3,
        agc_min_norm: float = 1e-3,
        warmup: int = 1000,
    ) -> None:
        # found_inf is honoured (update.takes_found_inf), and the step counts never leave the device
        self._step_supports_amp_scaling = True
        self.state_on_device = True
        if lr < 0 or eps < 0 or agc < 0 or warmup < 0 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"Invalid LaProp settings: lr={lr}, betas={betas}, eps={eps}, agc={agc}, warmup={warmup}")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, agc=agc, agc_min_norm=agc_min_norm, warmup=warmup, capturable=False, foreach=None
        )
        super().__init__(params, defaults)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """
        As torch's; then the step counts go to their parameters' devices (torch moves them only for capturable or
        fused optimizers), where a step adds the device flag of ``found_inf`` to them.

        :param state_dict: the optimizer state, as ``state_dict()`` returns it
        """
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p, {})
                if isinstance(state.get("step"), th.Tensor):
                    state["step"] = state["step"].to(device=p.device, dtype=th.float32)

    @th.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        loss = None
        if closure is not None:
            with th.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                self._update(group, params)
        return loss

    def _update(self, group: dict[str, Any], params: list[th.Tensor]) -> None:
        """One step of the parameters of ``group`` that have gradients, as ``foreach`` operations over them all."""
        beta1, beta2 = group["betas"]
        for p in params:
            state = self.state[p]
            if not state:
                # on the parameter's device, so that no step reads a value back to the host
                state["step"] = th.zeros((), dtype=th.float32, device=p.device)
                state["nu"] = th.zeros_like(p, memory_format=th.preserve_format)
                state["mu"] = th.zeros_like(p, memory_format=th.preserve_format)
        states = [self.state[p] for p in params]
        grads = [p.grad for p in params]
        steps = [state["step"] for state in states]
        nus, mus = [state["nu"] for state in states], [state["mu"] for state in states]
        found_inf = getattr(self, "found_inf", None)
        keep = None if found_inf is None else (found_inf == 0).to(params[0].device)
        if keep is not None:
            # a skipped step adds zeros (a non-finite gradient times zero would be NaN) and keeps the decays at 1;
            # a kept one computes exactly what the ungated step does
            grads = [th.where(keep, grad, 0.0) for grad in grads]
        if group["agc"]:
            limits = group["agc"] * th.stack(th._foreach_norm(params)).clamp(min=group["agc_min_norm"])
            factors = (limits / th.stack(th._foreach_norm(grads))).clamp(max=1.0)
            if keep is not None:
                factors = th.where(keep, factors, 0.0)  # 0 / 0 for a zeroed gradient
            grads = th._foreach_mul(grads, list(factors.unbind()))
        th._foreach_add_(steps, 1.0 if keep is None else [keep.float()] * len(steps))
        # (a step count 0 only before the first applied step, where nothing moves: clamped against 0 / 0)
        step = th.stack(steps).clamp(min=1.0)
        th._foreach_mul_(nus, beta2 if keep is None else th.where(keep, beta2, 1.0))
        th._foreach_addcmul_(nus, grads, grads, value=1.0 - beta2)
        rms = th._foreach_div(nus, list((1.0 - beta2**step).unbind()))
        th._foreach_sqrt_(rms)
        th._foreach_add_(rms, group["eps"])
        th._foreach_mul_(mus, beta1 if keep is None else th.where(keep, beta1, 1.0))
        th._foreach_add_(mus, th._foreach_div(grads, rms), alpha=1.0 - beta1)
        warmup = (step / group["warmup"]).clamp(max=1.0) if group["warmup"] else th.ones_like(step)
        scales = group["lr"] * warmup / (1.0 - beta1**step)
        if keep is not None:
            scales = th.where(keep, scales, 0.0)
        th._foreach_sub_(params, th._foreach_mul(mus, list(scales.unbind())))
