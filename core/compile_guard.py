"""A guard on ``oneflow.nn.Graph._compile`` against OneFlow 0.9's heap overflow on stride-0 views.

What OneFlow 0.9 does, measured: making a tensor contiguous *in place* (``Tensor.contiguous_()``,
and the C++ equivalent that compiling applies to every eager tensor a graph captures, its inputs
and its states) rewrites the tensor's strides to contiguous ones and writes ``numel`` elements into
the storage it already has. For a view with a stride of 0 (``expand()``), that storage holds only
the base's elements: the write runs past its end. The values read back right at first; once
OneFlow hands that memory to other tensors they turn to garbage, and so does the base (a 6-value
anchor table expanded to 3x80x80x2 reads back as [8, 16, 8, 16, …]). YOLOv5's ``Detect`` keeps its
anchor grids as such views, so after ``graph._compile`` its eager module, the compiled graph and
any file exported from either compute with garbage, and agree with each other.

Once flow2onnx is imported, every ``nn.Graph`` compiled in the process goes through
:func:`guarded_compile`: the stride-0 views its modules hold as plain attributes are swapped for
contiguous copies while it compiles (the graph captures the copies, which own their memory) and
put back after, and the in-place ``contiguous_`` that compiling calls from Python on inputs and
states gives the tensor a storage of its own instead. The module keeps its views, with their
values; the graph is marked so that capture knows it was compiled safely. Python's cyclic collector
is paused while a graph compiles (see :func:`_collector_paused`).
"""

from __future__ import annotations

import collections
import contextlib
import functools
import gc
import importlib.abc
import importlib.util
import sys
import threading
from typing import Any

#: Set on every graph compiled through the guard.
GUARDED = "_flow2onnx_compile_guarded"

#: Types of module attributes that are never tensors (flags, names, OneFlow's own tables of modules and hooks).
_NOT_TENSORS = frozenset({bool, int, float, str, type(None), dict, set, collections.OrderedDict})

_lock = threading.Lock()
_installed = False


def plain_tensors(flow, module, stride0_only: bool = True) -> list[tuple[Any, str, Any]]:
    """The plain tensor attributes of ``module`` and its submodules (not parameters or buffers, alone or
    in a list or tuple): ``(owner, attribute, value)``; with ``stride0_only``, those holding a view with
    a stride of 0 (``expand()``)."""
    tensor = flow.Tensor

    def chosen(value) -> bool:
        return isinstance(value, tensor) and (not stride0_only or (value.numel() > 1 and 0 in value.stride()))

    found = []
    for owner in module.modules():
        for name, value in vars(owner).items():
            kind = type(value)
            if kind in _NOT_TENSORS:  # most attributes: OneFlow's isinstance check for tensors is slow
                continue
            if kind is list or kind is tuple:
                if any(chosen(item) for item in value):
                    found.append((owner, name, value))
            elif chosen(value):
                found.append((owner, name, value))
    return found


@contextlib.contextmanager
def stride0_views_protected(flow, module):
    """Within the block, the stride-0 views of :func:`plain_tensors` are contiguous copies; the
    originals are put back after it (whatever the block assigned to those attributes meanwhile)."""
    found = plain_tensors(flow, module)
    for owner, name, value in found:
        copy = value.contiguous() if not isinstance(value, (list, tuple)) else type(value)(v.contiguous() for v in value)
        object.__setattr__(owner, name, copy)
    try:
        yield
    finally:
        for owner, name, value in found:
            object.__setattr__(owner, name, value)


def _own_storage_contiguous(self):
    """``contiguous_()`` that gives a non-contiguous tensor a storage of its own, leaving the base alone."""
    if not self.is_contiguous():
        self.data = self.contiguous()
    return self


@contextlib.contextmanager
def _safe_in_place_contiguous(flow):
    original = flow.Tensor.contiguous_
    flow.Tensor.contiguous_ = _own_storage_contiguous
    try:
        yield
    finally:
        flow.Tensor.contiguous_ = original


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for the block (back on after it if it was on).

    An ``nn.Graph`` that the collector frees runs ``Graph.__del__``, which resets OneFlow's global
    table of variable tensors (``ResetVariableTensorMgr``); compiling fills that table and reads it
    back. Freed in the middle of another graph's compile, an old graph empties the table under it,
    and the compiled job later crashes a OneFlow worker thread when it runs (seen as a segmentation
    fault in the first-divergence finder, whose debug graph compiles while the collector is on).
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def install(flow) -> None:
    """Route ``flow.nn.Graph._compile`` through the guard (once per process)."""
    global _installed
    with _lock:
        if _installed:
            return
        graph_class = flow.nn.Graph
        original = graph_class._compile

        @functools.wraps(original)
        def guarded_compile(self, *args, **kwargs):
            with contextlib.ExitStack() as guards:
                guards.enter_context(_collector_paused())
                guards.enter_context(_safe_in_place_contiguous(flow))
                for block in list(self._blocks.values()):
                    module = block.to(flow.nn.Module)
                    if isinstance(module, flow.nn.Module):
                        guards.enter_context(stride0_views_protected(flow, module))
                result = original(self, *args, **kwargs)
            object.__setattr__(self, GUARDED, True)
            return result

        graph_class._compile = guarded_compile
        _installed = True


def was_guarded(graph) -> bool:
    """Whether ``graph`` was compiled through the guard."""
    return bool(getattr(graph, GUARDED, False))


class _AfterOneFlowImport(importlib.abc.MetaPathFinder):
    """Installs the guard as soon as ``oneflow`` is imported, by whoever imports it."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "oneflow":
            return None
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(self)
        spec = importlib.util.find_spec("oneflow")
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run_module = spec.loader.exec_module

        def exec_module(module):
            run_module(module)
            try:
                install(module)
            except Exception:  # an import that half-failed: it raises on its own, and export will say so
                pass

        spec.loader.exec_module = exec_module
        return spec


def install_when_imported() -> None:
    """Install the guard now if OneFlow is imported, else the moment it is (so that a graph the user
    compiles after importing flow2onnx is compiled safely)."""
    flow = sys.modules.get("oneflow")
    if flow is not None:
        if hasattr(flow, "nn"):
            install(flow)
        return
    if not any(isinstance(finder, _AfterOneFlowImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterOneFlowImport())
