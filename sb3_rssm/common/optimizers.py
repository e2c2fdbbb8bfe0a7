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
    :func:`~sb3_rssm.common.update.make_capturable` sets them) and change nothing.

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
        if lr < 0 or eps < 0 or agc < 0 or warmup < 0 or not all(0.0 <= beta < 1.0 for beta in betas):
            raise ValueError(f"Invalid LaProp settings: lr={lr}, betas={betas}, eps={eps}, agc={agc}, warmup={warmup}")
        defaults = dict(
            lr=lr, betas=betas, eps=eps, agc=agc, agc_min_norm=agc_min_norm, warmup=warmup, capturable=True, foreach=None
        )
        super().__init__(params, defaults)

    @th.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:  # type: ignore[override]
        loss = None
        if closure is not None:
            with th.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    # on the parameter's device, so that no step reads a value back to the host
                    state["step"] = th.zeros((), dtype=th.float32, device=p.device)
                    state["nu"] = th.zeros_like(p, memory_format=th.preserve_format)
                    state["mu"] = th.zeros_like(p, memory_format=th.preserve_format)
                if group["agc"]:
                    limit = group["agc"] * th.linalg.vector_norm(p).clamp(min=group["agc_min_norm"])
                    grad = grad * (limit / th.linalg.vector_norm(grad)).clamp(max=1.0)
                step, nu, mu = state["step"], state["nu"], state["mu"]
                step += 1
                nu.mul_(beta2).addcmul_(grad, grad, value=1.0 - beta2)
                rms = (nu / (1.0 - beta2**step)).sqrt_().add_(group["eps"])
                mu.mul_(beta1).add_(grad / rms, alpha=1.0 - beta1)
                warmup = (step / group["warmup"]).clamp(max=1.0) if group["warmup"] else 1.0
                p.sub_(mu * (group["lr"] * warmup / (1.0 - beta1**step)))
        return loss
