"""Reading weights out of OneFlow's memory in few round trips.

Every ``Tensor.numpy()`` waits for OneFlow's virtual machine, and that wait grows with the size of
the compiled graphs in the process: about a millisecond per tensor next to a 20,000-op graph, even
for a tensor of sixteen floats. Small weights are therefore fetched in batches: flattened and
concatenated on OneFlow's side, one ``.numpy()`` for the batch, then cut into numpy views. A large
weight is fetched alone (``.numpy()`` of a CPU tensor shares OneFlow's memory, so it is never
copied on the way to the file), and at most one batch of small ones is held at a time.
"""

from __future__ import annotations

from typing import Callable, Iterable, Iterator, Mapping

import numpy as np

from .._oneflow import import_oneflow
from ..errors import InvalidModelError
from ..lowering.graph import TensorInfo

#: A weight of at most this many bytes is fetched with others in a batch.
SMALL_WEIGHT_BYTES = 64 * 1024
#: A batch ends at this many weights or this many bytes, whichever comes first.
BATCH_WEIGHTS = 2048
BATCH_BYTES = 16 * 1024 * 1024


class StateWeights:
    """The weights of a graph, by name, read from OneFlow tensors in memory when they are written
    (and ``constants``, arrays already in numpy, as they are).

    Call it with a name for one weight; :meth:`many` reads a sequence of weights in batches.
    """

    def __init__(self, tensors: Mapping[str, object], constants: Mapping[str, np.ndarray] | None = None):
        self._tensors = dict(tensors)
        self._constants = constants if constants is not None else {}

    def __call__(self, name: str) -> np.ndarray:
        if name in self._constants:
            return self._constants[name]
        return self._tensor(name).numpy()

    def many(self, infos: Iterable[TensorInfo]) -> Iterator[tuple[TensorInfo, np.ndarray]]:
        """``(info, array)`` for each weight of ``infos``, in that order, small ones fetched in batches."""
        pending: list[tuple[TensorInfo, object]] = []
        pending_bytes = 0
        for info in infos:
            if info.name in self._constants:
                yield from _fetched(pending)
                pending, pending_bytes = [], 0
                yield info, self._constants[info.name]
                continue
            tensor = self._tensor(info.name)
            size = _small_size(tensor)
            if size is None:
                yield from _fetched(pending)
                pending, pending_bytes = [], 0
                yield info, tensor.numpy()
                continue
            pending.append((info, tensor))
            pending_bytes += size
            if len(pending) >= BATCH_WEIGHTS or pending_bytes >= BATCH_BYTES:
                yield from _fetched(pending)
                pending, pending_bytes = [], 0
        yield from _fetched(pending)

    def _tensor(self, name: str):
        tensor = self._tensors.get(name)
        if tensor is None:
            raise InvalidModelError(
                f"variable {name!r} of the graph has no entry in graph.state_dict(); it is probably a tensor "
                "created inside forward(): register it as a parameter or buffer of the module"
            )
        return tensor


def read_weights(read: Callable[[str], np.ndarray], infos: Iterable[TensorInfo]) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """``(info, array)`` for each weight of ``infos``, in order: in batches when ``read`` can
    (a :class:`StateWeights`), else one ``read(name)`` per weight."""
    many = getattr(read, "many", None)
    if many is not None:
        yield from many(infos)
        return
    for info in infos:
        yield info, read(info.name)


def _small_size(tensor) -> int | None:
    """The tensor's size in bytes when it can join a batch; ``None`` for a large, empty or global one."""
    if getattr(tensor, "is_global", False):
        return None
    size = tensor.nelement() * tensor.element_size()
    return size if 0 < size <= SMALL_WEIGHT_BYTES else None


def _fetched(pending: list) -> Iterator[tuple[TensorInfo, np.ndarray]]:
    """The pending weights as arrays, in their order: one fetch per data type and device among them."""
    if not pending:
        return
    groups: dict[tuple, list[int]] = {}
    for index, (_, tensor) in enumerate(pending):
        groups.setdefault((tensor.dtype, tensor.device), []).append(index)  # OneFlow's devices compare by value
    arrays: list = [None] * len(pending)
    for indices in groups.values():
        for index, array in zip(indices, _fetch_together([pending[i][1] for i in indices])):
            arrays[index] = array
    for (info, _), array in zip(pending, arrays):
        yield info, array


def _fetch_together(tensors: list) -> list[np.ndarray]:
    """Tensors of one dtype and device as arrays: one concatenation and one ``.numpy()``, cut into views."""
    if len(tensors) == 1:
        return [tensors[0].numpy()]
    flow = import_oneflow()
    with flow.no_grad():
        flat = flow.cat([tensor.reshape(-1) for tensor in tensors]).numpy()
    arrays, offset = [], 0
    for tensor in tensors:
        count = tensor.nelement()
        arrays.append(flat[offset : offset + count].reshape(tuple(tensor.shape)))
        offset += count
    return arrays
