"""Count the tensor calls that make the host wait for the device, so a CPU test can prove a step makes none.

On a GPU these calls block until every queued kernel has run; on the CPU they cost nothing, so they are
found by patching, not by timing. Counted while the context is open:

- ``Tensor.item``, ``tolist``, ``numpy``, ``cpu``: the value is copied to the host;
- ``Tensor.__bool__``, ``__int__``, ``__float__``, ``__complex__``, ``__index__``: Python needs the value
  (``if t:``, ``assert t``, ``float(t)``, ``range(t)``);
- ``Tensor.nonzero``, ``masked_select``, ``unique``, ``torch.nonzero``, ``torch.masked_select``, ``torch.unique``
  and indexing with a boolean tensor (``t[mask]``): the size of the result depends on the data;
- ``Tensor.to`` from a non-CPU tensor to the CPU (``.to`` on a CPU tensor is left alone: device-generic
  code such as ``y.to(x.device)`` runs on the CPU in tests and must not be counted).

Not counted: printing (``repr``/``format``), ``torch.cuda.synchronize``, and copies made inside C++ code.
A call made from inside another counted call (``Tensor.unique`` calls ``torch.unique``) counts once.
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator

import torch

TENSOR_METHODS = ("item", "tolist", "numpy", "cpu", "__bool__", "__int__", "__float__", "__complex__", "__index__",
                  "nonzero", "masked_select", "unique")
TORCH_FUNCTIONS = ("nonzero", "masked_select", "unique")


@dataclass
class SyncCount:
    """What was counted, in call order (e.g. ``['Tensor.item', 'Tensor.__bool__']``)."""

    calls: list[str] = field(default_factory=list)
    exempt: Callable[[Any], bool] | None = None  # calls on such a first argument are not counted
    _depth: int = 0

    @property
    def count(self) -> int:
        return len(self.calls)


def _counting(fn: Callable, name: str, counter: SyncCount, syncs: Callable[..., bool] = lambda *a, **k: True) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if counter._depth == 0 and syncs(*args, **kwargs) and not (counter.exempt and args and counter.exempt(args[0])):
            counter.calls.append(name)
        counter._depth += 1
        try:
            return fn(*args, **kwargs)
        finally:
            counter._depth -= 1

    return wrapper


def _is_bool_tensor(index: Any) -> bool:
    items = index if isinstance(index, tuple) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _to_host(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> bool:
    """Whether ``tensor.to(*args, **kwargs)`` moves a device tensor to the CPU."""
    if tensor.device.type == "cpu":
        return False
    targets = [*args, kwargs.get("device")]
    return any(isinstance(t, (str, torch.device)) and torch.device(t).type == "cpu" for t in targets)


@contextlib.contextmanager
def count_host_syncs(exempt: Callable[[Any], bool] | None = None) -> Iterator[SyncCount]:
    """Patch ``torch.Tensor`` and a few ``torch`` functions to count host syncs; restore them on exit.

    ``exempt(tensor)`` names tensors that live on the host on every device (e.g. the optimizer's step counters),
    whose reads therefore never wait for a GPU."""
    counter = SyncCount(exempt=exempt)
    patches: list[tuple[Any, str, Callable]] = [(torch.Tensor, m, _counting(getattr(torch.Tensor, m), f"Tensor.{m}", counter))
                                                for m in TENSOR_METHODS]
    patches += [(torch, f, _counting(getattr(torch, f), f"torch.{f}", counter)) for f in TORCH_FUNCTIONS]
    patches.append((torch.Tensor, "__getitem__", _counting(torch.Tensor.__getitem__, "Tensor.__getitem__[bool mask]", counter,
                                                           lambda self, index: _is_bool_tensor(index))))
    patches.append((torch.Tensor, "to", _counting(torch.Tensor.to, "Tensor.to(cpu)", counter, _to_host)))
    saved = [(owner, name, owner.__dict__.get(name)) for owner, name, _ in patches]
    try:
        for owner, name, wrapper in patches:
            setattr(owner, name, wrapper)
        yield counter
    finally:
        for owner, name, original in saved:
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)
