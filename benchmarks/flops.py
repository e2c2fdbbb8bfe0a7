"""
Analytic FLOP counts of what a piece of code actually runs: forward hooks on every dense, GRU and
(transposed) convolution layer count the multiply-accumulates of each call from its real shapes,
and the backward pass is counted from what autograd must compute for that call (the weight gradient
where the weights are trained, the input gradient where the input needs one) (:class:`FlopCounter`);
and a count of every matmul and convolution the dispatcher runs, forward and backward, whatever module
or function issues it (:class:`OpFlopCounter`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch as th
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

LAYERS = (nn.Linear, nn.GRUCell, nn.Conv2d, nn.ConvTranspose2d)


def forward_macs(module: nn.Module, inputs: tuple[th.Tensor, ...], output: th.Tensor) -> int:
    """Multiply-accumulates of one forward call of a :data:`LAYERS` module."""
    if isinstance(module, nn.Linear):
        return int(output.numel() // module.out_features) * module.in_features * module.out_features
    if isinstance(module, nn.GRUCell):
        rows = int(np.prod(output.shape[:-1]))
        return rows * 3 * (module.input_size + module.hidden_size) * module.hidden_size
    kernel = int(np.prod(module.kernel_size))
    channels = module.in_channels * module.out_channels // module.groups
    if isinstance(module, nn.ConvTranspose2d):
        # every input pixel scatters a kernel-sized patch into each output channel
        return int(inputs[0].numel() // module.in_channels) * channels * kernel
    return int(output.numel() // module.out_channels) * channels * kernel


class FlopCounter:
    """
    Counts forward and backward FLOPs (2 per multiply-accumulate) of the layers of ``module`` while active::

        with FlopCounter(model) as counter:
            train_step()
        counter.total

    :param module: the network whose layers are counted
    """

    def __init__(self, module: nn.Module) -> None:
        self.module = module
        self.forward = 0
        self.backward = 0
        self._handles: list[th.utils.hooks.RemovableHandle] = []

    @property
    def total(self) -> int:
        return self.forward + self.backward

    def _hook(self, module: nn.Module, inputs: tuple[th.Tensor, ...], output: th.Tensor) -> None:
        macs = forward_macs(module, inputs, output)
        self.forward += 2 * macs
        if th.is_grad_enabled():
            weight_grad = any(p.requires_grad for p in module.parameters(recurse=False))
            input_grad = any(isinstance(x, th.Tensor) and x.requires_grad for x in inputs)
            self.backward += 2 * macs * (int(weight_grad) + int(input_grad))

    def __enter__(self) -> FlopCounter:
        self._handles = [m.register_forward_hook(self._hook) for m in self.module.modules() if isinstance(m, LAYERS)]
        return self

    def __exit__(self, *exc_info: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


class OpFlopCounter(TorchDispatchMode):
    """
    FLOPs of every matmul, batched matmul and convolution that runs while active, forward and backward, by torch's
    own formulas (``torch.utils.flop_counter.flop_registry``)::

        with OpFlopCounter() as counter:
            train_step()
        counter.total

    It counts operations, not layers, so it sees what :class:`FlopCounter`'s hooks miss (DreamerV3's block-diagonal
    GRU is a ``bmm`` on its weights). It is torch's ``FlopCounterMode`` without the per-module breakdown, whose
    module tracker fails on modules called under ``no_grad`` with inputs that require gradients.
    """

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += int(formula(*args, **kwargs, out_val=out))
        return out
