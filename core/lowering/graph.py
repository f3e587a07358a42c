"""The lowering API's view of a OneFlow graph: its ops, tensors and weights, under ONNX names.

:class:`FlowGraph` is what capture produces and the converter walks; a lowering sees one
:class:`FlowOp` at a time and reads tensors' static facts as :class:`TensorInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from ..errors import LoweringError
from .schema import OpSchema, python_type, schema_from_ops

_new = object.__new__


@dataclass(frozen=True)
class TensorInfo:
    """Static description of one tensor of the graph: its ONNX ``name``, ``shape`` (a tuple) and numpy ``dtype``."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype

    @classmethod
    def _made(cls, name: str, shape: tuple, dtype: np.dtype) -> "TensorInfo":
        """What ``TensorInfo(name, shape, dtype)`` makes, without the frozen dataclass's per-field
        ``object.__setattr__`` (capture makes one per tensor of the graph)."""
        info = _new(cls)
        fields = info.__dict__
        fields["name"], fields["shape"], fields["dtype"] = name, shape, dtype
        return info


class OpArgumentError(LoweringError, KeyError):
    """A lowering asked an op for an argument, tensor or attribute that the op does not have.

    The message lists what the op has. Inside a lowering the converter re-raises it as a
    :class:`LoweringError` that also names the plugin. It is a ``KeyError`` too, for code that
    tells a missing argument by catching one.
    """

    def __init__(self, op: "FlowOp", reason: str):
        self.reason = reason
        super().__init__(f"{op.type} op {op.name!r}: {reason}")

    def __str__(self) -> str:  # KeyError would quote the message
        return self.args[0]


class _kept(cached_property):
    """``functools.cached_property`` without the lock it takes at each first read in Python 3.10
    (gone in 3.12): computed on the first read, then an attribute of the instance like any other."""

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        value = instance.__dict__[self.attrname] = self.func(instance)
        return value


@dataclass
class FlowOp:
    """One OneFlow user op, with its tensors already renamed to the names they get in ONNX.

    ``name`` is the op's name in the graph (``model.conv-conv2d-0``), ``type`` its OneFlow op type
    (``conv2d``). ``inputs`` and ``outputs`` map OneFlow argument names (``"in"``, ``"weight"``, ``"y"``) to lists
    of tensor names; ``attrs`` holds every attribute of the op as a plain Python value (OneFlow
    fills in the registered default of each attribute the model did not set). ``schema`` is the
    op type's :class:`~flow2onnx.lowering.schema.OpSchema`. Read them through :meth:`input`,
    :meth:`output` and :meth:`attr`: a name the op does not have raises an error that lists the
    names it has.
    """

    name: str
    type: str
    inputs: dict[str, list[str]]
    outputs: dict[str, list[str]]
    attrs: dict[str, Any]
    schema: OpSchema = field(default=None, repr=False, compare=False)  # type: ignore[assignment]

    @classmethod
    def _made(cls, name: str, type: str, inputs: dict, outputs: dict, attrs: dict, schema: OpSchema) -> "FlowOp":
        """What the constructor makes of an op whose schema is known, without the dataclass's
        ``__init__`` and ``__post_init__`` (capture makes one per op of the graph)."""
        op = _new(cls)
        fields = op.__dict__
        fields["name"], fields["type"], fields["inputs"], fields["outputs"], fields["attrs"], fields["schema"] = (
            name, type, inputs, outputs, attrs, schema
        )
        return op

    def __post_init__(self):
        if self.schema is None:  # an op built by hand: its own arguments and attributes
            types = {name: python_type(value) for name, value in self.attrs.items()}
            self.schema = schema_from_ops(self.type, [(self.inputs, self.outputs, types)])

    def input(self, arg: str, index: int = 0) -> str:
        """The ONNX name of the ``index``-th tensor of input argument ``arg`` (``op.input("x")``)."""
        try:  # lowerings and patterns call this for nearly every op: the error's work only on an error
            return self.inputs[arg][index]
        except (KeyError, IndexError):
            return self._tensor("input", self.inputs, self.schema.inputs, arg, index)

    def output(self, arg: str, index: int = 0) -> str:
        """The ONNX name of the ``index``-th tensor of output argument ``arg`` (``op.output("y")``)."""
        try:
            return self.outputs[arg][index]
        except (KeyError, IndexError):
            return self._tensor("output", self.outputs, self.schema.outputs, arg, index)

    def input_list(self, arg: str) -> list[str]:
        """The ONNX names of every tensor of input argument ``arg`` (``concat``'s ``in``, ``add_n``'s ``in``)."""
        return list(self._bound("input", self.inputs, self.schema.inputs, arg))

    def output_list(self, arg: str) -> list[str]:
        """The ONNX names of every tensor of output argument ``arg``."""
        return list(self._bound("output", self.outputs, self.schema.outputs, arg))

    def has_input(self, arg: str) -> bool:
        """Whether input ``arg`` is bound to a tensor in this op (optional inputs, like a BatchNorm's ``gamma``)."""
        return bool(self.inputs.get(arg))

    def has_output(self, arg: str) -> bool:
        """Whether output ``arg`` exists in this op (optional outputs, like a max pool's ``indice``)."""
        return bool(self.outputs.get(arg))

    def attr(self, name: str) -> Any:
        """The value of attribute ``name`` (``op.attr("alpha")``).

        Every attribute of the op type is there, set by the model or filled in by OneFlow with its
        registered default, so a lowering never needs a default of its own. A name the op type
        does not have raises an error listing its attributes with their types.
        """
        try:
            return self.attrs[name]
        except KeyError:
            pass
        names = ", ".join(f"{attr.name}: {attr.type}" for attr in self.schema.attrs) or "none"
        raise OpArgumentError(self, f"{self.type} has no attribute {name!r}; its attributes are: {names}") from None

    def signature(self) -> str:
        """The op type's signature with this op's attribute values: ``softshrink(in) -> out; alpha: float = 0.5``."""
        return self.schema.signature(self.attrs)

    @_kept  # read for every op by the graph's index, the patterns and the name pairing
    def scope(self) -> str | None:
        """The module scope the op was made in: ``model.rnn`` for ``model.rnn-narrow-12``.

        OneFlow names an op ``<scope>-<type>-<counter>``, where the scope is the path of the
        module whose ``forward`` made it (``""`` for an op of ``nn.Graph.build`` itself, named
        ``<type>-<counter>``). ``None`` when the name has another form.
        """
        head, _, counter = self.name.rpartition("-")
        if not counter.isdigit():
            return None
        if head == self.type:
            return ""
        if head.endswith("-" + self.type):
            return head[: -len(self.type) - 1]
        return None

    def stable_name(self, occurrence: int) -> str:
        """The op's name without OneFlow's counter, which counts every op of the graph and so
        changes when an earlier module makes more ops: ``model.head-matmul#0`` for the first
        ``matmul`` of scope ``model.head``, given its ``occurrence`` among those."""
        scope = self.scope
        return self.name if scope is None else f"{scope}-{self.type}#{occurrence}"

    def _bound(self, kind: str, bound: dict[str, list[str]], specs, arg: str) -> list[str]:
        tensors = bound.get(arg)
        if tensors:
            return tensors
        names = ", ".join(map(str, specs)) or "none"
        if any(spec.name == arg for spec in specs):
            reason = f"optional {kind} {arg!r} is not bound in this op; check op.has_{kind}({arg!r}) first"
        else:
            reason = f"{self.type} has no {kind} {arg!r}; its {kind}s are: {names}"
        raise OpArgumentError(self, f"{reason} (signature: {self.signature()})")

    def _tensor(self, kind: str, bound: dict[str, list[str]], specs, arg: str, index: int) -> str:
        tensors = self._bound(kind, bound, specs, arg)
        try:
            return tensors[index]
        except IndexError:
            count = len(tensors)
            raise OpArgumentError(
                self, f"{kind} {arg!r} has {count} tensor{'s' if count != 1 else ''}; index {index} is out of range"
            ) from None


@dataclass(frozen=True)
class Provenance:
    """Where a :class:`FlowGraph` came from: how it was captured and the OneFlow objects behind it.

    Nothing in the graph's ops and tensors depends on these; they are kept to run OneFlow again
    (verification's reference, a second trace at other sizes, the divergence finder) and to find
    the module behind a scope. A graph made by hand has the default: none of them.
    """

    #: ``"graph"`` (an ``nn.Graph`` compiled) or ``"eager"`` (the ops an eager run of
    #: ``eager_module`` called, each replayed in OneFlow's lazy mode; see ``flow2onnx.exporter.capture.eager``).
    capture: str = "graph"
    #: The compiled ``nn.Graph``, kept to run OneFlow for verification.
    flow_graph: Any = None
    #: The eager module the graph was traced from, when flow2onnx wrapped it: verification runs it
    #: rather than the graph (any batch size, and OneFlow 0.9's lazy-job runtime crashes now and then
    #: on repeated graph runs).
    eager_module: Any = None
    #: For a graph built on global tensors: each input's ``(placement, sbp)``, as OneFlow objects.
    input_layouts: Any = None
    #: Scope -> the OneFlow module behind it (or ``None``); see :meth:`FlowGraph.module`.
    find_module: Callable[[str], Any] | None = None
    #: For an eager capture, each place where the module read a tensor's value back to Python, which
    #: the export froze to the example's value (``model.head: Tensor.item() (frozen to 3)``).
    frozen: tuple[str, ...] = ()
    #: Where the graph's inputs go in the eager module's arguments, when the example nested them in
    #: tuples, lists or dicts (``flow2onnx.exporter.capture.nested.InputTree``); ``None`` when flat.
    input_tree: Any = None

    def run_module(self, tensors: Sequence) -> Any:
        """The eager module called on the graph's input ``tensors``, put back where the example had them."""
        arguments = list(tensors) if self.input_tree is None else self.input_tree.rebuild(tensors)
        return self.eager_module(*arguments)


@dataclass(frozen=True, eq=False)
class FlowGraph:
    """What the converter needs from a compiled graph, and nothing copied that it does not.

    ``ops`` lists the ops (:class:`FlowOp`) in execution order; ``inputs``, ``outputs`` and
    ``variables`` (the weights) are lists of :class:`TensorInfo`, and ``tensors`` maps every
    tensor's ONNX name to its :class:`TensorInfo`. A lowering reads it as ``ctx.graph``. The graph
    is read-only: its fields cannot be assigned, and no stage changes what they hold (a stage that
    needs another graph makes one). ``source`` is its :class:`Provenance`. The indexes of producers,
    readers and stable names are the graph's own, computed from it on first use.
    """

    name: str
    ops: list[FlowOp]
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    tensors: dict[str, TensorInfo]
    variables: list[TensorInfo]
    read_weight: Callable[[str], np.ndarray] = field(repr=False)
    # For each output, the name of the tensor that feeds it.
    output_sources: list[str] = field(default_factory=list)
    source: Provenance = field(default_factory=Provenance, repr=False)

    def __post_init__(self):
        object.__setattr__(self, "_index", None)  # producers and readers, built on first use
        object.__setattr__(self, "_stable", None)  # stable names, built on first use

    def op_types(self) -> dict[str, int]:
        """OneFlow op type -> number of ops of that type in the graph."""
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        return counts

    def module(self, scope: str) -> Any:
        """The OneFlow ``nn.Module`` whose ``forward`` made the ops of ``scope`` (see :attr:`FlowOp.scope`).

        ``graph.module("model.rnn")`` is the ``nn.LSTM`` of an exported module's ``rnn``
        attribute, for an eager module that flow2onnx wrapped and for a compiled ``nn.Graph``
        alike (through the graph's own modules). ``None`` when the scope names no module, or the
        graph was not read from OneFlow.
        """
        find = self.source.find_module
        if find is None or not scope:
            return None
        try:
            return find(scope)
        except Exception:  # a scope OneFlow named otherwise: no module, and no pattern there
            return None

    def producer(self, name: str) -> FlowOp | None:
        """The op that produces tensor ``name`` (``None`` for graph inputs, weights and unknown names)."""
        return (self._index or self._indexed())[0].get(name)

    def consumers(self, name: str) -> list[FlowOp]:
        """The ops that read tensor ``name``, in execution order (an op reading it twice appears once)."""
        return (self._index or self._indexed())[1].get(name, [])

    def _read_tensor_names(self) -> Iterable[str]:
        """The name of every tensor some op reads, each once (for the lowering context)."""
        return (self._index or self._indexed())[1].keys()

    def boundary(self, ops: Iterable[FlowOp]) -> tuple[list[str], list[str]]:
        """The tensors that cross the edge of a group of ops: ``(inputs, outputs)``.

        ``inputs`` are the tensors the group reads that no op of the group produces, weights left
        out (graph inputs and outputs of other ops); ``outputs`` the tensors of the group that an
        op outside it or a graph output reads. Both in execution order, each once. The work is
        linear in the size of the group and its outputs' readers.
        """
        ops = list(ops)
        return self._boundary(ops, {op.name for op in ops})

    def _boundary(self, ops: list[FlowOp], names: set[str]) -> tuple[list[str], list[str]]:
        """:meth:`boundary` of ``ops``, whose names are ``names`` (patterns' groups have them already)."""
        _, consumers, weights, graph_outputs = self._index or self._indexed()
        produced = set()
        for op in ops:
            for tensors in op.outputs.values():
                produced.update(tensors)
        inputs = []
        outputs = []
        for op in ops:
            for tensors in op.inputs.values():
                for name in tensors:
                    if name not in produced and name not in weights:
                        inputs.append(name)
            for tensors in op.outputs.values():
                for name in tensors:
                    if name in graph_outputs:
                        outputs.append(name)
                        continue
                    for reader in consumers.get(name, ()):
                        if reader.name not in names:
                            outputs.append(name)
                            break
        # Inputs in the order the ops read them, outputs in the order they are made; each once.
        return list(dict.fromkeys(inputs)), list(dict.fromkeys(outputs))

    def stable_names(self) -> dict[str, str]:
        """Op name -> :meth:`FlowOp.stable_name`: the same op of the model compiled at other sizes
        has the same stable name, unless its own scope makes before it a number of ops of its type
        that follows those sizes (as an unrolled loop does, which then needs a pattern)."""
        if self._stable is None:  # only exports with dynamic axes and their messages need them
            counts: dict[tuple, int] = {}
            stable: dict[str, str] = {}
            for op in self.ops:
                key = (op.scope, op.type)
                occurrence = counts.get(key, 0)
                stable[op.name] = op.stable_name(occurrence)
                counts[key] = occurrence + 1
            object.__setattr__(self, "_stable", stable)
        return self._stable

    def _indexed(self):
        if self._index is None:
            producers: dict[str, FlowOp] = {}
            consumers: dict[str, list[FlowOp]] = {}
            for op in self.ops:
                for tensors in op.outputs.values():
                    for name in tensors:
                        producers[name] = op
                for tensors in op.inputs.values():
                    for name in tensors:
                        readers = consumers.get(name)
                        if readers is None:
                            consumers[name] = [op]
                        elif readers[-1] is not op:  # an op's inputs are indexed together: once per op
                            readers.append(op)
            weights = {info.name for info in self.variables}
            object.__setattr__(self, "_index", (producers, consumers, weights, set(self.output_sources)))
        return self._index


def stable_tensor_name(name: str, stable_ops: dict[str, str], aliases: dict[str, str] | None = None) -> str:
    """``name`` with the op name it starts with replaced by that op's stable name (``model.head-matmul-51/out_0``
    becomes ``model.head-matmul#0/out_0``); a name in ``aliases`` becomes its alias."""
    if aliases and name in aliases:
        return aliases[name]
    head, slash, tail = name.partition("/")
    return stable_ops.get(head, head) + slash + tail


def twin_names(graph: FlowGraph, variant: FlowGraph | None, aliases=None, variant_aliases=None) -> dict[str, str]:
    """Tensor and op names of ``graph`` -> the names of the same tensors and ops in ``variant``, the
    model compiled at other sizes, paired through their stable names (and ``aliases``, the stable
    names that claimed groups give their outputs). Names without a twin are left out."""
    if variant is None:
        return {}
    stable, other_stable = graph.stable_names(), variant.stable_names()
    by_stable = {stable_tensor_name(name, other_stable, variant_aliases): name for name in variant.tensors}
    by_stable.update({key: name for name, key in other_stable.items()})
    twins = {}
    for name in graph.tensors:
        twin = by_stable.get(stable_tensor_name(name, stable, aliases))
        if twin is not None:
            twins[name] = twin
    for name, key in stable.items():
        if key in by_stable:
            twins[name] = by_stable[key]
    return twins
