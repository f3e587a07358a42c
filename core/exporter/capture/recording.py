"""Recording every tensor that OneFlow's Python-level ops produce while a graph is traced.

OneFlow 0.9 has no public hook on op dispatch, but every op a model calls from Python goes through a
callable it can see: a function of ``oneflow._C`` (also reachable as ``oneflow.xxx`` and
``oneflow.nn.functional.xxx``, the same objects), or a method or operator of ``oneflow.Tensor``.
:func:`recording_tensors` wraps those callables for the duration of a block so that each tensor
they return is appended to a list, in the order the ops ran, and puts the originals back after.

While a ``nn.Graph`` is traced, those tensors are lazy: returning them as extra outputs of a debug
graph makes OneFlow compute each one, so the first-divergence finder can compare the ONNX value of
every op's output, not only of every submodule's. A call that another recorded call makes
internally records its tensor once (tensors are kept by identity).
"""

from __future__ import annotations

import contextlib
import functools
from typing import Iterator

from ..._oneflow import import_oneflow

# Tensor methods whose results are not new values of the graph, or that the recording itself uses.
_SKIPPED_METHODS = frozenset(
    {
        "__init__", "__new__", "__repr__", "__str__", "__format__", "__hash__", "__bool__", "__len__", "__iter__",
        "__getattribute__", "__getattr__", "__setattr__", "__delattr__", "__dir__", "__reduce__", "__reduce_ex__",
        "__sizeof__", "__init_subclass__", "__subclasshook__", "__class__", "__array__", "__index__", "__int__",
        "__float__", "__eq__", "__ne__", "__setitem__", "__deepcopy__", "__copy__", "__del__",
        "numpy", "tolist", "item", "size", "dim", "ndimension", "nelement", "numel", "is_contiguous",
        "data_ptr", "storage_offset", "stride", "get_device", "register_hook", "retain_grad", "backward",
        "requires_grad_", "detach_", "_meta_repr",
    }
)


@contextlib.contextmanager
def recording_tensors() -> Iterator[list]:
    """Within the block, every tensor returned by an op called from Python is appended to the list."""
    flow = import_oneflow()
    recorded: list = []
    seen: set[int] = set()

    def record(result) -> None:
        # Of an op with several outputs, only the first: the others (max pooling's indices, say) may
        # be ones the model never reads, which a lowering rightly does not produce.
        item = result[0] if isinstance(result, (tuple, list)) and result else result
        if isinstance(item, flow.Tensor) and id(item) not in seen:
            seen.add(id(item))
            recorded.append(item)

    def wrap(original):
        @functools.wraps(original)
        def recording(*args, **kwargs):
            result = original(*args, **kwargs)
            record(result)
            return result

        recording.__flow2onnx_original__ = original
        return recording

    restore = _patch_functions(flow, wrap) + _patch_tensor_methods(flow, wrap)
    try:
        yield recorded
    finally:
        for owner, name, original in reversed(restore):
            setattr(owner, name, original)


def _patch_functions(flow, wrap) -> list:
    """Wrap the functions of ``oneflow._C`` wherever OneFlow's own namespaces expose them."""
    import oneflow.nn.functional as functional

    native = {id(value): value for name, value in vars(flow._C).items() if callable(value) and not name.startswith("_")}
    wrapped: dict[int, object] = {}
    restore = []
    for owner in (flow._C, flow, functional):
        for name, value in list(vars(owner).items()):
            if id(value) in native and not name.startswith("_"):
                replacement = wrapped.setdefault(id(value), wrap(value))
                restore.append((owner, name, value))
                setattr(owner, name, replacement)
    return restore


def _patch_tensor_methods(flow, wrap, skipped=_SKIPPED_METHODS) -> list:
    """Wrap the methods and operators of ``oneflow.Tensor`` that compute values (all but ``skipped``)."""
    restore = []
    for name, value in list(vars(flow.Tensor).items()):
        if name in skipped or not callable(value) or isinstance(value, (property, staticmethod, classmethod, type)):
            continue
        if name.startswith("_") and not (name.startswith("__") and name.endswith("__")):
            continue
        try:
            setattr(flow.Tensor, name, wrap(value))
        except (TypeError, AttributeError):  # a slot CPython will not let us replace
            continue
        restore.append((flow.Tensor, name, value))
    return restore
