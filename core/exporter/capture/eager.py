"""Eager capture: the graph of the ops an eager module really runs, for models ``nn.Graph`` cannot build.

The module runs eagerly on the example inputs, so its Python decides everything on real values, as
it does outside an export. Every OneFlow op it calls from Python (a function of ``oneflow._C``, or a
method or operator of ``oneflow.Tensor``, the callables :mod:`.recording` wraps) is called a second
time, right after, in OneFlow's lazy mode, on the lazy twins of its tensor arguments and with the
same other arguments. Lazy mode is what ``nn.Graph`` builds its job with: each such call adds to an
open job the same user ops, with the same op types, attributes and argument names, that the graph
compiler would have made for that call. The job is then completed and read like a compiled graph's
(:func:`~flow2onnx.exporter.capture.graphs.graph_from_job`), so every lowering and plugin works unchanged.

Parameters and buffers become variables named by module path (``model.layer1.0.conv1.weight``, as
graph capture names them), read from the module when the file is written. Other tensors an op meets
that no recorded op made (made in ``forward`` from Python values) become constants.

Values read back to Python (``.item()``, ``.numpy()``, ``int(t)``, ``bool(t)``, a boolean mask's
positions) are frozen to the example's values, as a tracing exporter does; each such place is named
(module path and call) in :attr:`EagerCapture.frozen`, and verification at other inputs tells whether
the freeze holds there.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..._oneflow import error_text, import_oneflow, quiet_native_output
from ...errors import InvalidModelError
from ...lowering.graph import FlowGraph, Provenance
from .graphs import ABORTING_CALLS_ON_CPU, flatten_outputs, graph_from_job, refuse_aborting_call
from .nested import rebuild
from .recording import _SKIPPED_METHODS, _patch_functions, _patch_tensor_methods
from ..weights import StateWeights

# The module's name in the graph, as graph capture's wrapper graph calls its attribute.
ROOT = "model"

# Tensor methods that turn a tensor's values into Python values: what they read is frozen.
_READBACKS = ("item", "numpy", "tolist", "__bool__", "__int__", "__float__", "__index__", "__array__")

# Ops whose output size depends on the values of their input: their output is frozen when it does.
_VALUE_SHAPED = frozenset({"nonzero", "argwhere", "masked_select", "unique", "bincount"})

# Methods replayed although recording skips them: they compute new values of the graph.
_REPLAYED = frozenset({"__setitem__", "__eq__", "__ne__"})


@dataclass(frozen=True)
class Freeze:
    """One place where the module read a tensor's value back to Python, frozen in the export."""

    #: The module path whose ``forward`` read it (``model.head``; ``model`` for the top module).
    scope: str
    #: What read it: ``Tensor.item``, ``bool(tensor)``, ``boolean mask in Tensor.__getitem__``, …
    call: str
    #: The value the export keeps, in words.
    value: str
    #: The class of the module at ``scope``.
    module: str = ""

    def sentence(self) -> str:
        return f"{self.scope} ({self.module}): {self.call} (frozen to {self.value})"


@dataclass(frozen=True)
class EagerCapture:
    """What an eager capture gives: the graph, and the places where values were frozen."""

    graph: FlowGraph
    frozen: tuple[Freeze, ...]


def capture_eagerly(module, inputs: Sequence, name: str | None = None, tree=None) -> EagerCapture:
    """Run ``module`` eagerly on ``inputs`` (flat tensors, put back in their places where ``tree``,
    an :class:`~.nested.InputTree`, says the example nested them) and read the ops it ran into a
    :class:`FlowGraph`.

    :raises InvalidModelError: when the module cannot run eagerly on ``inputs``, or runs an op that
        lazy mode cannot replay (OneFlow's own words, and the call).
    """
    flow = import_oneflow()
    import oneflow.framework.graph_build_util as build_util
    from oneflow.framework import c_api_util

    holder = flow.nn.Graph()  # only for a job name, a config and OneFlow's session
    holder.config.proto.job_name = holder._name
    tracer = _Tracer(flow, build_util, module)
    with quiet_native_output(), flow.no_grad(), build_util.graph_build_context(holder.config.proto, holder._session):
        lazy_inputs = [build_util.build_graph_input_arg(f"_input.{i}", t) for i, t in enumerate(inputs)]
        for tensor, lazy in zip(inputs, lazy_inputs):
            tracer.bind(tensor, lazy, dependent=True)
        with flow._oneflow_internal.lazy_mode.guard(False), tracer.patched():
            outputs = module(*rebuild(tree, inputs))
        for index, tensor in enumerate(flatten_outputs(outputs)):
            build_util.build_graph_output(f"_output.{index}", tracer.twin(tensor))
        flow._oneflow_internal.CurJobBuildAndInferCtx_Complete()
        job = c_api_util.GetCurrentJob()
    _drop_unread_ops(job)
    graph = graph_from_job(
        job, name=name or type(module).__name__, read_weight=tracer.weight_reader(), input_names=None if tree is None else tree.names,
        source=Provenance(
            "eager", eager_module=module, find_module=module_finder(module), frozen=tuple(f.sentence() for f in tracer.frozen), input_tree=tree,
        ),
    )
    tracer.check_weights(graph)
    return EagerCapture(graph, tuple(tracer.frozen))


def _drop_unread_ops(job) -> None:
    """Remove the ops whose results nothing reads: those of values the module only read back to Python
    (a sum for ``.item()``, a comparison whose mask became positions), which a graph would not hold."""
    needed = {getattr(op.output_conf, "in") for op in job.net.op if op.HasField("output_conf")}
    kept = []
    for op in reversed(job.net.op):
        kind = op.WhichOneof("op_type")
        if kind == "user_conf":
            produced = [lbn for value in op.user_conf.output.values() for lbn in value.s]
            if not any(lbn in needed for lbn in produced):
                continue
            needed.update(lbn for value in op.user_conf.input.values() for lbn in value.s)
        elif kind == "variable_conf" and f"{op.name}/{op.variable_conf.out}" not in needed:
            continue
        kept.append(op)
    kept.reverse()
    del job.net.op[:]
    job.net.op.extend(kept)


def frozen_warning(frozen: Sequence[Freeze]) -> str:
    """The warning that names every place where the module's values were frozen to the example's."""
    places = "; ".join(place.sentence() for place in frozen)
    return (
        f"the module reads tensor values back to Python in {len(frozen)} place{'s' if len(frozen) != 1 else ''}, "
        f"frozen to the example's values in the export: {places}. The exported model computes as the module "
        "did on the example inputs; verification at other inputs shows whether that holds"
    )


def module_finder(module) -> Callable[[str], Any]:
    """A function from an op scope (``model.layer1.0``) to the submodule of ``module`` behind it, or ``None``."""

    def find(scope: str):
        head, *path = scope.split(".")
        found = module if head == ROOT else None
        for name in path:
            found = None if found is None else found._modules.get(name)
        return found

    return find


class _Tracer:
    """The state of one eager capture: each eager tensor's lazy twin, the module scopes, the freezes.

    Eager tensors are kept alive with their twins: tensors are matched by identity, and the id of a
    tensor that died could be reused by a new one.
    """

    def __init__(self, flow, build_util, module):
        self.flow, self.build_util = flow, build_util
        self.twins: dict[int, tuple[Any, Any]] = {}
        self.dependent: set[int] = set()
        self.state = {id(t): (f"{ROOT}.{n}", t) for n, t in _named_state(module)}
        self.paths = {id(m): ROOT + ("." + n if n else "") for n, m in module.named_modules()}
        self.classes = {ROOT + ("." + n if n else ""): type(m).__name__ for n, m in module.named_modules()}
        self.constants: dict[str, np.ndarray] = {}
        self.frozen: list[Freeze] = []
        self.scopes: list[str] = [ROOT]
        self.scope_objects: dict[str, Any] = {}
        self.calls: list[int] = [0]  # per open call, how many recorded calls ran inside it
        self.busy = False  # replaying, or reading values for the capture itself
        #: id of a tensor ``base[index]`` made -> (that tensor, base, index): in-place ops on it change base.
        self.views: dict[int, tuple[Any, Any, Any]] = {}

    # --- tensors and their twins ---

    def bind(self, tensor, lazy, dependent: bool) -> None:
        self.twins[id(tensor)] = (tensor, lazy)
        if dependent:
            self.dependent.add(id(tensor))
        else:
            self.dependent.discard(id(tensor))

    def twin(self, tensor):
        """The lazy twin of an eager tensor: made now, as a variable, for a weight or a constant."""
        known = self.twins.get(id(tensor))
        if known is not None:
            return known[1]
        name, _ = self.state.get(id(tensor), (None, None))
        self.busy = True
        try:
            if name is None:
                name = f"{self.scopes[-1]}._constant_{len(self.constants)}"
                self.constants[name] = np.array(tensor.numpy(), copy=True)
            value = tensor if tensor.is_contiguous() else tensor.contiguous()
            with self.flow._oneflow_internal.lazy_mode.guard(True):
                lazy = self.build_util.build_graph_state(name, value, None)
        finally:
            self.busy = False
        self.bind(tensor, lazy, dependent=False)
        return lazy

    def check_weights(self, graph: FlowGraph) -> None:
        """Every variable of the graph must be a weight or a constant of the capture: OneFlow's lazy mode
        turns an eager tensor it makes itself inside an op into a variable whose value it keeps to itself."""
        known = {name for name, _ in self.state.values()} | set(self.constants)
        unknown = [info.name for info in graph.variables if info.name not in known]
        if unknown:
            readers = [op.name for op in graph.ops if any(unknown[0] in names for names in op.inputs.values())]
            raise InvalidModelError(
                f"eager capture cannot read the value of {unknown[0]!r}, a tensor OneFlow made by itself inside the op "
                f"{readers[0] if readers else '?'!r}; pass tensors rather than Python values to that call, or use graph capture"
            )

    def weight_reader(self) -> Callable[[str], np.ndarray]:
        """The module's weights by name, small ones fetched in batches when the file is written
        (a ``.numpy()`` each cost 1 ms next to a large graph), and the constants as they are."""
        return StateWeights({name: tensor for name, tensor in self.state.values()}, self.constants)

    # --- patching OneFlow's callables for the duration of the run ---

    @contextlib.contextmanager
    def patched(self):
        flow = self.flow
        skipped = (_SKIPPED_METHODS - _REPLAYED) | set(_READBACKS)
        restore = _patch_functions(flow, self._replaying) + _patch_tensor_methods(flow, self._replaying, skipped)
        for name in _READBACKS:
            if name in vars(flow.Tensor):
                restore.append((flow.Tensor, name, vars(flow.Tensor)[name]))
                setattr(flow.Tensor, name, self._reading(vars(flow.Tensor)[name], name))
        restore.append((flow.nn.Module, "__call__", flow.nn.Module.__call__))
        flow.nn.Module.__call__ = self._scoped(flow.nn.Module.__call__)
        try:
            yield
        finally:
            for owner, name, original in reversed(restore):
                setattr(owner, name, original)

    def _scoped(self, call):
        tracer = self

        @functools.wraps(call)
        def module_call(module, *args, **kwargs):
            path = tracer.paths.get(id(module))
            if path is None or tracer.busy:
                return call(module, *args, **kwargs)
            tracer.scopes.append(path)
            try:
                return call(module, *args, **kwargs)
            finally:
                tracer.scopes.pop()

        return module_call

    def _replaying(self, original):
        tracer = self
        label = getattr(original, "__name__", "op")
        aborting = label in ABORTING_CALLS_ON_CPU  # decided once per function, not on every call

        @functools.wraps(original)
        def replaying(*args, **kwargs):
            if tracer.busy:
                return original(*args, **kwargs)
            if aborting:
                refuse_aborting_call(label, _tensors((args, kwargs)))
            tracer.calls.append(0)
            try:
                result = original(*args, **kwargs)
            finally:
                inner = tracer.calls.pop()
            tracer.calls[-1] += 1
            if not inner:  # a call made of recorded calls was replayed through them
                tracer.replay(label, original, args, kwargs, result)
            return result

        return replaying

    def _reading(self, original, name: str):
        tracer = self

        @functools.wraps(original)
        def reading(tensor, *args, **kwargs):
            value = original(tensor, *args, **kwargs)
            if not tracer.busy and id(tensor) in tracer.dependent:
                tracer.freeze(_readback_call(name), _value_text(value))
            return value

        return reading

    # --- replaying one call in lazy mode ---

    def freeze(self, call: str, value: str) -> None:
        place = Freeze(self.scopes[-1], call, value, self.classes.get(self.scopes[-1], ""))
        if all((f.scope, f.call) != (place.scope, place.call) for f in self.frozen):
            self.frozen.append(place)

    def replay(self, label: str, original, args, kwargs, result) -> None:
        """Call ``original`` again in lazy mode on the twins of its tensors, and twin its results."""
        flow = self.flow
        eager_outputs = _tensors(result)
        if label in ("__setitem__",) or label.endswith("_"):
            eager_outputs = _tensors(args[:1]) + eager_outputs  # the tensor it changed in place
        if not eager_outputs:
            return
        dependent = any(id(t) in self.dependent for t in _tensors((args, kwargs)))
        if label in _VALUE_SHAPED and dependent:
            self.freeze(f"{label} (its output's size depends on the values)", f"the example's {_shape_text(result)}")
            for tensor in _tensors(result):
                self.twin(tensor)
            return
        if label == "__setitem__" and self._masked_fill(args, dependent):
            return
        if label.endswith("_") and not label.startswith("__") and self._in_place_on_view(label, args, kwargs, dependent):
            return
        original_args = args
        if label in ("__getitem__", "__setitem__"):
            args = (args[0], self._index_of_tensors(label, args[1])) + tuple(args[2:])
        if label == "__setitem__" and not isinstance(args[2], flow.Tensor):
            # A Python value would become a tensor OneFlow keeps to itself: make it one of ours.
            args = args[:2] + (flow.tensor(args[2], dtype=args[0].dtype),)
        lazy_args, lazy_kwargs = self._lazy(args), self._lazy(kwargs)
        self.busy = True
        try:
            with flow._oneflow_internal.lazy_mode.guard(True), self._op_scope():
                try:
                    lazy_result = original(*lazy_args, **lazy_kwargs)
                except TypeError as error:
                    numbers = self._as_numbers(label, args, error)
                    if numbers is None:
                        raise
                    lazy_result = original(*self._lazy(numbers), **lazy_kwargs)
        except Exception as error:
            raise _not_replayed(label, self.scopes[-1], error) from error
        finally:
            self.busy = False
        lazy_outputs = _tensors(lazy_args[:1]) + _tensors(lazy_result) if len(eager_outputs) > len(_tensors(result)) else _tensors(lazy_result)
        for tensor, lazy in zip(eager_outputs, lazy_outputs):
            if getattr(lazy, "is_lazy", False):
                self.bind(tensor, lazy, dependent)
        if label == "__getitem__" and isinstance(result, flow.Tensor):
            self.views[id(result)] = (result, original_args[0], original_args[1])

    def _as_numbers(self, label: str, args, error: TypeError):
        """``args`` with the one-element tensors after the first argument made Python numbers, where
        lazy mode refused a tensor for a number (``topk(x, k)`` with ``k`` a tensor): their values
        are frozen to the example's, and named. ``None`` when no such argument explains the error."""
        flow = self.flow
        if "Tensor" not in str(error):
            return None
        replaced, changed = list(args), False
        for position, value in enumerate(args[1:], start=1):
            if isinstance(value, flow.Tensor) and value.numel() == 1:
                number = value.item()
                replaced[position], changed = number, True
                if id(value) in self.dependent:
                    self.freeze(f"{label} argument {position}, a tensor where OneFlow's graph takes a number", repr(number))
        return tuple(replaced) if changed else None

    def _in_place_on_view(self, label: str, args, kwargs, dependent: bool) -> bool:
        """An in-place op on ``base[index]`` (``y[:, 0].zero_()``, ``y[1:].add_(z)``), which in eager
        mode changes ``base`` and lazy mode refuses or keeps to the view: recorded as its out-of-place
        form (``zeros_like``, ``add``) and ``base[index] = that``. ``False`` where the tensor is no
        view of a recorded index, or the op has no out-of-place form."""
        flow = self.flow
        entry = self.views.get(id(args[0]))
        if entry is None or entry[0] is not args[0] or id(entry[1]) in self.views:
            return False
        view, base, index = entry
        name = label[:-1]
        self.busy = True
        try:
            with flow._oneflow_internal.lazy_mode.guard(True), self._op_scope():
                lazy_view = self._lazy(view)
                if name == "zero":
                    changed = flow.zeros_like(lazy_view)
                elif name == "fill" and not isinstance(args[1], flow.Tensor):
                    changed = flow.full_like(lazy_view, args[1])
                elif callable(getattr(flow.Tensor, name, None)) and name not in ("copy", "fill"):
                    changed = getattr(flow.Tensor, name)(lazy_view, *self._lazy(tuple(args[1:])), **self._lazy(kwargs))
                else:
                    return False
        finally:
            self.busy = False
        self.bind(view, changed, dependent)
        setitem = getattr(flow.Tensor.__setitem__, "__wrapped__", flow.Tensor.__setitem__)
        self.replay("__setitem__", setitem, (base, index, view), {}, None)
        return True

    def _masked_fill(self, args, dependent: bool) -> bool:
        """``y[mask] = v`` with a boolean mask of ``y``'s shape and one value: recorded as
        ``where(mask, v, y)``, which follows the mask at every input (positions would be frozen to
        the example's). ``False`` for any other assignment, replayed as it was."""
        flow = self.flow
        target, key, value = args[0], args[1], args[2]
        if not (isinstance(key, flow.Tensor) and key.dtype == flow.bool and tuple(key.shape) == tuple(target.shape)):
            return False
        if isinstance(value, flow.Tensor) and value.numel() != 1:
            return False
        if not isinstance(value, flow.Tensor):
            value = flow.tensor(value, dtype=target.dtype)
        lazy_value = self._lazy(value.reshape([]) if value.dim() else value)
        self.busy = True
        try:
            with flow._oneflow_internal.lazy_mode.guard(True), self._op_scope():
                filled = flow.where(self._lazy(key), lazy_value.to(target.dtype), self._lazy(target))
        finally:
            self.busy = False
        self.bind(target, filled, dependent)
        return True

    def _lazy(self, value):
        flow = self.flow
        if isinstance(value, flow.Tensor):
            return self.twin(value)
        if type(value) in (list, tuple) and any(isinstance(v, (flow.Tensor, list, tuple, dict)) for v in value):
            return type(value)(self._lazy(v) for v in value)
        if isinstance(value, dict):
            return {key: self._lazy(v) for key, v in value.items()}
        return value

    def _index_of_tensors(self, label: str, index):
        """An index whose boolean masks are replaced by the positions they hold (NumPy's rule: a mask in
        an index means the arrays of its nonzero positions; lazy mode has no boolean indexing), and whose
        lists of integers are tensors (OneFlow would make them tensors it keeps to itself)."""
        flow = self.flow
        parts = index if type(index) is tuple else (index,)
        mask = any(isinstance(p, flow.Tensor) and p.dtype in (flow.bool, flow.uint8) for p in parts)
        if not mask and not any(isinstance(p, list) for p in parts):
            return index
        replaced = []
        for part in parts:
            if isinstance(part, flow.Tensor) and part.dtype in (flow.bool, flow.uint8):
                self.busy = True
                try:
                    positions = np.nonzero(part.numpy())
                finally:
                    self.busy = False
                if id(part) in self.dependent:
                    self.freeze(f"boolean mask in Tensor.{label}", f"the example's {len(positions[0])} selected positions")
                replaced.extend(flow.tensor(p.astype(np.int64)) for p in positions)
            elif isinstance(part, list):
                replaced.append(flow.tensor(part, dtype=flow.int64))
            else:
                replaced.append(part)
        return tuple(replaced)

    @contextlib.contextmanager
    def _op_scope(self):
        """OneFlow names a lazy op after the scope on its scope stack: the module path, as in a graph."""
        internal = self.flow._oneflow_internal
        path = self.scopes[-1]
        if path not in self.scope_objects:
            self.scope_objects[path] = self.build_util.make_new_name_scope(internal.GetCurrentScope(), path)
        internal.GlobalScopeStackPush(self.scope_objects[path])
        try:
            yield
        finally:
            internal.GlobalScopeStackPop()


def _named_state(module):
    yield from module.named_parameters()
    yield from module.named_buffers()


def _tensors(value) -> list:
    flow = import_oneflow()
    if isinstance(value, flow.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    if isinstance(value, dict):
        return [t for item in value.values() for t in _tensors(item)]
    return []


def _readback_call(name: str) -> str:
    if name.startswith("__"):
        return f"{name.strip('_')}(tensor)"
    return f"Tensor.{name}()"


def _value_text(value) -> str:
    if isinstance(value, np.ndarray):
        return f"the example's values, an array of shape {list(value.shape)}"
    text = repr(value)
    return text if len(text) <= 40 else f"the example's {type(value).__name__} value"


def _shape_text(result) -> str:
    shapes = [list(t.shape) for t in _tensors(result)]
    return "shape " + ", ".join(map(str, shapes))


def _not_replayed(label: str, scope: str, error: Exception) -> InvalidModelError:
    return InvalidModelError(
        f"eager capture cannot record the call {label} made in {scope}: OneFlow's lazy mode refused it "
        f"({error_text(error)}); this call has no graph form in OneFlow 0.9"
    )
