"""
A guard against host synchronisation, for tests that run on the CPU.

On a GPU, an op that reads a tensor's value on the host (``item()``, ``bool(t)``, ``tolist()``), whose output shape
depends on the data (``nonzero``, boolean-mask indexing), or that builds a tensor from Python data (``torch.tensor``,
``as_tensor`` of a number, ``new_tensor``: a blocking host-to-device copy) makes the host wait for the device, and
fails inside a CUDA-graph capture. On a CPU these ops cost nothing and go unnoticed; :class:`HostSyncGuard` records
every one of them that runs while it is active, with the line of this package that caused it, so that a CPU test
can assert that an update or an acting step would run on a GPU without a single synchronisation.
"""

from __future__ import annotations

import traceback
from typing import Any, Callable, NamedTuple, Optional

import torch as th
from torch.utils._python_dispatch import TorchDispatchMode

aten = th.ops.aten

#: ops that synchronise with the host (or copy host data to the device) on CUDA, and why
SYNCING_OPS: dict[Any, str] = {
    aten._local_scalar_dense.default: "reads a tensor's value on the host (item(), bool(), float(), tolist())",
    aten.lift_fresh.default: "builds a tensor from Python data (torch.tensor, as_tensor of a number, new_tensor)",
    aten.lift_fresh_copy.default: "builds a tensor from Python data",
    aten.nonzero.default: "an output shape that depends on the data (nonzero, boolean-mask indexing)",
    aten.masked_select.default: "an output shape that depends on the data",
    aten._unique2.default: "an output shape that depends on the data",
    aten.unique_consecutive.default: "an output shape that depends on the data",
    aten.unique_dim.default: "an output shape that depends on the data",
    aten.repeat_interleave.Tensor: "an output shape that depends on the data",
    aten.multinomial.default: "torch.multinomial checks its probabilities on the host",
    aten.equal.default: "returns a Python bool (torch.equal)",
    aten.is_nonzero.default: "returns a Python bool",
    aten.allclose.default: "returns a Python bool",
}


class Sync(NamedTuple):
    """One recorded synchronisation: the op, why it syncs, and the innermost line of this package on the stack."""

    op: str
    why: str
    where: str

    def __str__(self) -> str:
        return f"{self.op} at {self.where}: {self.why}"


class Allowed(NamedTuple):
    """
    An op that is allowed where ``applies`` says so, with the reason it costs no device sync by construction.

    :param op: the op
    :param applies: predicate over the formatted stack (innermost last)
    :param reason: why this one is harmless on a GPU
    """

    op: Any
    applies: Callable[[list[str]], bool]
    reason: str


def _innermost_package_line(stack: list[traceback.FrameSummary]) -> str:
    for frame in reversed(stack):
        if "/sb3_rssm/" in frame.filename:
            return f"{frame.filename.split('/sb3_rssm/')[-1]}:{frame.lineno} ({frame.name}: {frame.line})"
    frame = stack[-1] if stack else None
    return "?" if frame is None else f"{frame.filename}:{frame.lineno} ({frame.name})"


#: tensor methods that read values to the host without passing torch's dispatcher (so the mode does not see them)
READING_METHODS = {
    "tolist": "reads a tensor's values on the host (tolist())",
    "numpy": "a tensor's memory on the host (numpy())",
}


class HostSyncGuard(TorchDispatchMode):
    """
    Records every op of :data:`SYNCING_OPS` and every call of :data:`READING_METHODS` that runs while active
    (``with HostSyncGuard() as guard:``), but those an :class:`Allowed` entry excuses; ``guard.syncs`` lists them
    afterwards.

    :param allowed: ops excused where their predicate holds, each with its reason
    """

    def __init__(self, allowed: Optional[list[Allowed]] = None) -> None:
        super().__init__()
        self.allowed = allowed or []
        self.syncs: list[Sync] = []

    def __enter__(self) -> HostSyncGuard:
        self._saved_methods = {name: getattr(th.Tensor, name) for name in READING_METHODS}
        for name, method in self._saved_methods.items():
            setattr(th.Tensor, name, self._recording(name, method))
        return super().__enter__()

    def __exit__(self, *exc: Any) -> None:
        super().__exit__(*exc)
        for name, method in self._saved_methods.items():
            setattr(th.Tensor, name, method)

    def _recording(self, name: str, method: Callable) -> Callable:
        def recorded(tensor: th.Tensor, *args: Any, **kwargs: Any) -> Any:
            self._record(name, READING_METHODS[name])
            return method(tensor, *args, **kwargs)

        return recorded

    def _record(self, op: Any, why: str) -> None:
        stack = traceback.extract_stack()[:-2]
        lines = [f"{frame.filename}:{frame.name}" for frame in stack]
        if not any(entry.op == op and entry.applies(lines) for entry in self.allowed):
            self.syncs.append(Sync(str(op), why, _innermost_package_line(stack)))

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        why = SYNCING_OPS.get(func)
        if why is not None:
            self._record(func, why)
        return func(*args, **(kwargs or {}))

    def report(self) -> str:
        """The recorded synchronisations, one per line, the same line counted once."""
        counts: dict[str, int] = {}
        for sync in self.syncs:
            counts[str(sync)] = counts.get(str(sync), 0) + 1
        return "\n".join(f"{count} x {line}" for line, count in counts.items())
