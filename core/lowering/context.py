"""The lowering context: what a lowering sees and the only way it adds to the ONNX graph."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import onnx
from onnx import AttributeProto, helper, numpy_helper

from ..errors import Flow2OnnxError, LoweringError
from .graph import FlowGraph, FlowOp, OpArgumentError, TensorInfo, twin_names
from .registry import Lowering, Pattern
from .sizes import SizeExpression, explain, simplicity

if TYPE_CHECKING:
    from .patterns import PatternMatch


@dataclass(frozen=True)
class DerivedWeight:
    """A weight of the model computed from another weight when the model is written (see
    :meth:`LoweringContext.derived_weight`): ``info`` is its name, shape and dtype, ``source`` the
    weight it is computed from (a variable of the graph, or another derived weight), and ``compute``
    the function that turns the source's array into its own."""

    info: TensorInfo
    source: str
    compute: Callable[[np.ndarray], np.ndarray]


class LoweringContext:
    """Collects the nodes and constants of one conversion.

    A lowering receives the context and the op it lowers (a pattern's lowering, the context and
    the group of ops it lowers: :meth:`lower_pattern`), reads static facts about tensors through
    :meth:`shape`, :meth:`dtype` and :meth:`rank`, and adds nodes with :meth:`make_node` and
    constants with :meth:`constant`. Names of new nodes and tensors derive from the op's name, so the
    same graph always gives the same model.

    :param graph: the graph being converted.
    :param opset: the target ONNX opset of the default domain.
    :param dynamic_batch: dim 0 of every input and output is symbolic.
    :param dynamic_axes: input name -> ``{axis: symbol}`` for the axes that stay symbolic.
    :param variant: the same model compiled at other sizes of the dynamic axes, when there is one.
    :param variant_names: tensor and op names of ``graph`` -> the names of the same tensors and ops
        in ``variant``. By default they are paired by :meth:`FlowGraph.stable_names`, since
        OneFlow's op names carry a counter of every op before them; the converter also pairs the
        outputs of groups that patterns claimed.
    """

    def __init__(
        self,
        graph: FlowGraph,
        opset: int,
        *,
        dynamic_batch: bool = False,
        dynamic_axes: dict[str, dict[int, str]] | None = None,
        variant: FlowGraph | None = None,
        variant_names: Mapping[str, str] | None = None,
    ):
        self._graph = graph
        self._opset = opset
        self._dynamic_batch = dynamic_batch
        self._dynamic_axes = {name: dict(axes) for name, axes in (dynamic_axes or {}).items()}
        self._variant = variant
        self._variant_names = variant_names
        self._variant_ops: dict[str, FlowOp] | None = None
        self._producers: dict[str, FlowOp] | None = None
        # Nodes and constants go straight into the model's graph, which the converter completes:
        # gathering them in lists and handing those to onnx.helper.make_graph would copy each one.
        self._model = onnx.ModelProto()
        self._domains: dict[str, int] = {}
        self._op: FlowOp | None = None
        self._match: PatternMatch | None = None
        self._lowering: Lowering | Pattern | None = None
        self._names_used: dict[str, int] = {}
        self._shared: dict[tuple, str] = {}  # (dtype, shape, bytes) -> the name of a shared constant
        self._tensors_read = set(graph.output_sources).union(graph._read_tensor_names())
        self._weights = {info.name: info for info in graph.variables}
        self._derived: dict[str, DerivedWeight] = {}
        self._produced = {info.name for info in graph.inputs} | set(self._weights)
        # For the converter, which completes the model after lowering (see renames_and_reads): every
        # tensor a node reads, and where the tensors it may rename appear, so that neither needs a
        # pass over every node.
        self._inputs_read: set[str] = set()
        self._watched: frozenset = frozenset()
        self._taken: frozenset = frozenset()
        self._mentions: dict[str, list[int]] = {}

    # ---- what is being converted ----

    @property
    def graph(self) -> FlowGraph:
        """The :class:`~flow2onnx.lowering.graph.FlowGraph` being converted (its ``inputs``, ``outputs``, ``ops``)."""
        return self._graph

    @property
    def opset(self) -> int:
        """The target ONNX opset of the default domain.

        A lowering that emits an operator whose inputs or attributes changed between opsets uses
        the helpers of :mod:`flow2onnx.lowering.helpers`, which pick the form of this opset;
        register separate lowerings (``since_opset``) only when the lowering itself differs.
        """
        return self._opset

    @property
    def op(self) -> FlowOp | None:
        """The op being lowered (``None`` outside :meth:`lower`)."""
        return self._op

    @property
    def match(self) -> PatternMatch | None:
        """The group of ops being lowered by a pattern (``None`` outside :meth:`lower_pattern`)."""
        return self._match

    @property
    def dynamic_batch(self) -> bool:
        """True when dim 0 of every input and output is symbolic: a lowering must not bake the batch size in.

        Read a batch-dependent size from the graph (``Shape``) instead of from :meth:`shape`, or
        refuse the op with :meth:`error`. See also :attr:`example_batch`.
        """
        return self._dynamic_batch

    @property
    def dynamic_axes(self) -> dict[str, dict[int, str]]:
        """Input name -> ``{axis: symbol}`` for the axes of the inputs that stay symbolic in the model.

        Sizes along these axes differ at run time from the example inputs the graph was compiled
        with; :meth:`variant_attr` and :meth:`variant_shape` tell which sizes of an op follow them.
        """
        return self._dynamic_axes

    @property
    def variant(self) -> FlowGraph | None:
        """The same model compiled at other sizes of the dynamic axes (``None`` without dynamic axes)."""
        return self._variant

    @property
    def example_batch(self) -> int | None:
        """The batch size of the example inputs the graph was compiled with (dim 0 of the first input)."""
        inputs = self._graph.inputs
        return inputs[0].shape[0] if inputs and inputs[0].shape else None

    @property
    def nodes(self) -> list:
        """The ONNX nodes (``onnx.NodeProto``) added so far, in order."""
        return list(self._model.graph.node)

    @property
    def constants(self) -> list:
        """The constants (``onnx.TensorProto``) added so far by :meth:`constant`: the model's initializers."""
        return list(self._model.graph.initializer)

    @property
    def derived_weights(self) -> dict[str, DerivedWeight]:
        """The weights added so far by :meth:`derived_weight`, by name."""
        return self._derived

    @property
    def domains(self) -> dict[str, int]:
        """Custom ONNX domains the nodes so far use -> the version the model imports."""
        return self._domains

    # ---- facts about tensors ----

    def tensor(self, name: str) -> TensorInfo:
        """Static shape and dtype of tensor ``name`` (as compiled for the example inputs).

        ``name`` is a tensor of the OneFlow graph: an ``op.input(...)``, an ``op.output(...)``, a
        graph input or a weight. Tensors that lowerings create have no static facts here.
        """
        try:
            return self._graph.tensors[name]
        except KeyError:
            raise self.error(f"tensor {name!r} has no known shape (it is not a tensor of the OneFlow graph)") from None

    def shape(self, name: str) -> tuple[int, ...]:
        """The static shape of tensor ``name``, e.g. ``(1, 3, 224, 224)``; see :attr:`dynamic_batch`."""
        return self.tensor(name).shape

    def dtype(self, name: str) -> np.dtype:
        """The numpy dtype of tensor ``name``, e.g. ``dtype('float32')``."""
        return self.tensor(name).dtype

    def rank(self, name: str) -> int:
        """The number of dimensions of tensor ``name``."""
        return len(self.shape(name))

    def variant_attr(self, op: FlowOp, name: str) -> Any:
        """Attribute ``name`` of the same op in the model compiled at other sizes of the dynamic axes.

        ``None`` when there is no such compilation (no dynamic axes, or a compiled graph without its
        eager module). Where the two differ, the attribute follows the dynamic axes: a lowering can
        then compute that part in the graph (e.g. Reshape's -1) instead of baking the example's value.
        """
        if self._variant is None:
            return None
        if self._variant_ops is None:
            self._variant_ops = {other.name: other for other in self._variant.ops}
        other = self._variant_ops.get(self._twins().get(op.name, ""))
        return None if other is None or other.type != op.type else other.attrs.get(name)

    def follows_sizes(self, op: FlowOp, name: str) -> SizeExpression | list | None:
        """How attribute ``name`` of ``op`` follows the dynamic axes, when it does.

        ``None`` when it does not (or there is no compilation at other sizes to tell). For a number
        that differs between the two compilations, the :class:`~flow2onnx.lowering.sizes.SizeExpression`
        that gives both (e.g. ``1 / (H * W)``); for a list, one entry per element, each ``None``
        (fixed) or an expression. Emit it with :func:`flow2onnx.lowering.helpers.size_value`.

        :raises LoweringError: when the value differs and no product of the dynamic sizes explains it.
        """
        value, other = op.attr(name), self.variant_attr(op, name)
        if other is None or other == value:
            return None
        example_sizes, other_sizes = self._dynamic_sizes()
        local = self._input_sizes(op)
        if isinstance(value, (list, tuple)):
            if len(value) != len(other):
                raise self.error(f"attribute {name!r} has {len(value)} elements at the example's sizes and {len(other)} at others")
            return [None if a == b else self._explained(name, a, b, example_sizes, other_sizes, local) for a, b in zip(value, other)]
        return self._explained(name, value, other, example_sizes, other_sizes, local)

    #: How many ops up from an op its size explanations look: ``mean`` is ``reduce_sum`` then
    #: ``scalar_mul`` by ``1 / (h * w)``, whose sizes are those of the sum's input.
    _SIZE_DEPTH = 3

    def _input_sizes(self, op: FlowOp) -> tuple[dict, dict]:
        """The sizes of the tensors the op reads, and of those its producers read (up to
        :attr:`_SIZE_DEPTH` ops up), along the axes that differ between the two compilations."""
        if self._producers is None:
            self._producers = {name: producer for producer in self._graph.ops for names in producer.outputs.values() for name in names}
        example, other, pairs = {}, {}, set()
        level, seen = [op], {op.name}
        for _ in range(self._SIZE_DEPTH):
            above = []
            for current in level:
                for names in current.inputs.values():
                    for tensor in names:
                        info, variant = self._graph.tensors.get(tensor), self.variant_shape(tensor)
                        if info is not None and variant is not None and len(variant) == len(info.shape):
                            for axis, (a, b) in enumerate(zip(info.shape, variant)):
                                # One axis per pair of sizes, the nearest: a conv's output and its bias_add's
                                # have the same height, and both would make the explanation ambiguous.
                                if a != b and (a, b) not in pairs:
                                    pairs.add((a, b))
                                    example[(tensor, axis)], other[(tensor, axis)] = a, b
                        producer = self._producers.get(tensor)
                        if producer is not None and producer.name not in seen:
                            seen.add(producer.name)
                            above.append(producer)
            level = above
        return example, other

    def _explained(self, name, value, other, example_sizes, other_sizes, local: tuple[dict, dict]) -> SizeExpression:
        # From the op's own inputs, or from the graph's inputs, whichever explains it more simply (the
        # op's inputs on a tie: a size read from the tensor at hand holds at every size).
        found = [e for e in (explain(value, other, *local), explain(value, other, example_sizes, other_sizes)) if e]
        expression = min(found, key=simplicity) if found else None
        if expression is None:
            described = ", ".join(f"{n}[{a}] {example_sizes[(n, a)]} -> {other_sizes[(n, a)]}" for n, a in sorted(example_sizes))
            raise self.error(
                f"attribute {name!r} is {value!r} at the example's sizes and {other!r} at others ({described}), and no "
                "product of the dynamic sizes explains the change, so it cannot be computed in the graph"
            )
        return expression

    def _dynamic_sizes(self) -> tuple[dict, dict]:
        """The dynamic axes' sizes at the example and in the other compilation, one axis per symbol:
        axes that share a symbol (every input's batch, under ``dynamic_batch``) are one size, so a
        value that follows it is not ambiguous between them."""
        other_inputs = {info.name: info.shape for info in self._variant.inputs}
        example, other, symbols = {}, {}, set()
        for info in self.graph.inputs:
            for axis, symbol in self._dynamic_axes.get(info.name, {}).items():
                if symbol in symbols:
                    continue
                symbols.add(symbol)
                example[(info.name, axis)] = info.shape[axis]
                other[(info.name, axis)] = other_inputs[info.name][axis]
        return example, other

    def variant_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of tensor ``name`` in the model compiled at other sizes of the dynamic axes (or ``None``).

        Axes whose size differs from :meth:`shape` follow the dynamic axes.
        """
        if self._variant is None:
            return None
        info = self._variant.tensors.get(self._twins().get(name, ""))
        return None if info is None else info.shape

    def _twins(self) -> Mapping[str, str]:
        if self._variant_names is None:
            self._variant_names = twin_names(self._graph, self._variant)
        return self._variant_names

    def is_weight(self, name: str) -> bool:
        """Whether tensor ``name`` is a weight: a variable of the graph (a parameter or buffer) or a
        weight derived from one by :meth:`derived_weight`."""
        return name in self._weights or name in self._derived

    def is_read(self, name: str) -> bool:
        """Whether some op or a graph output reads tensor ``name`` (an unread output need not be produced)."""
        return name in self._tensors_read

    # ---- building ----

    def unique_name(self, hint: str) -> str:
        """A name unique in this model, derived from the current op's name (or group's) and ``hint``."""
        owner = self._op.name if self._op is not None else self._match.name if self._match is not None else None
        base = f"{owner}/{hint}" if owner is not None else hint
        count = self._names_used.get(base, 0)
        self._names_used[base] = count + 1
        return base if count == 0 else f"{base}_{count}"

    def make_node(
        self,
        op_type: str,
        inputs: Sequence[str],
        outputs: Sequence[str] | int | None = None,
        *,
        domain: str = "",
        domain_version: int = 1,
        **attributes,
    ) -> list[str]:
        """Add an ONNX node of type ``op_type`` and return the names of its outputs, as a list.

        :param inputs: tensor names: ``op.input(...)``, outputs of earlier nodes, constants. An
            empty string marks an omitted optional input (``["x", "", "max"]``).
        :param outputs: the output names, usually the op's own (``[op.output("y")]``); or a count
            of fresh intermediate outputs to create, named after the op (default 1). Unpack the
            returned list: ``(mean,) = ctx.make_node("ReduceMean", [x], axes=[1])``.
        :param domain: a custom ONNX domain (``"com.microsoft"``); the model then imports it at
            ``domain_version``. Default: the standard domain, at :attr:`opset`.
        :param attributes: the node's ONNX attributes, by name, converted by
            ``onnx.helper.make_attribute``: an int, float, str or bytes, a list of one of those, a
            numpy scalar, an ``onnx.TensorProto`` (``numpy_helper.from_array(...)``), a
            ``GraphProto``. An attribute whose value is ``None`` is left out; an empty list cannot
            be typed, so leave such an attribute out too.
        """
        if outputs is None or isinstance(outputs, int):
            count = 1 if outputs is None else outputs
            outputs = [self.unique_name(f"{op_type}_out{i}" if count > 1 else op_type) for i in range(count)]
        else:
            outputs = list(outputs)
        inputs = list(inputs)  # read more than once below: a generator would be empty the second time
        if attributes:
            attributes = {key: value for key, value in attributes.items() if value is not None}
            empty = sorted(key for key, value in attributes.items() if isinstance(value, (list, tuple)) and not value)
            if empty:
                raise self.error(f"{op_type} attribute {empty[0]!r} is an empty list, whose ONNX type cannot be inferred; leave it out (pass None)")
        nodes = self._model.graph.node
        node = nodes.add(op_type=op_type, input=inputs, output=outputs, name=self.unique_name(op_type))
        try:
            if domain:
                node.domain = domain
            for key in sorted(attributes):  # in the order onnx.helper.make_node gives them
                _add_attribute(node, key, attributes[key])
            if self._watched:
                self._note_names(len(nodes) - 1, node.name, inputs, outputs)
        except BaseException:
            del nodes[-1]
            raise
        self._inputs_read.update(inputs)
        if domain:
            self._domains[domain] = max(self._domains.get(domain, 0), domain_version)
        self._produced.update(outputs)
        return outputs

    def _note_names(self, position: int, node: str, inputs, outputs) -> None:
        for name in outputs:
            if name in self._taken and name not in self._watched:
                raise self.error(f"node {node!r} makes a tensor named {name!r}, the name a claimed group's output takes")
        for name in (*inputs, *outputs):
            if name in self._watched:
                self._mentions.setdefault(name, []).append(position)

    def constant(self, value, hint: str = "const", dtype=None, shared: bool = False) -> str:
        """Add a constant tensor (a shape, a scalar, a small table) to the model and return its name.

        :param value: anything ``numpy.asarray`` takes: ``np.array([1, 2], np.int64)``, ``0.5``.
        :param hint: the tail of its name (``op_name/hint``).
        :param dtype: the numpy dtype to convert ``value`` to; by default ``value``'s own. ONNX
            operators are strict about types: shapes and axes are int64, a scalar that meets a
            tensor must have that tensor's dtype (``np.array(0.5, ctx.dtype(x))``).
        :param shared: one constant per value in the whole model: the first request makes it (named
            after its op), later requests for the same dtype, shape and bytes get that name. For
            the coefficients of a formula, which every op lowered the same way would otherwise add
            again (a decomposed GELU adds three). A numeric value only; others are made anew.
        """
        array = np.asarray(value, dtype=dtype)
        data_type = _RAW_DATA_TYPES.get(array.dtype)
        if shared and data_type is not None:
            key = (array.dtype.str, array.shape, array.tobytes())
            name = self._shared.get(key)
            if name is None:
                name = self._shared[key] = self.constant(array, hint)
            return name
        name = self.unique_name(hint)
        if data_type is not None:  # what numpy_helper.from_array makes of it, without its checks for exotic dtypes
            self._model.graph.initializer.add(name=name, data_type=data_type, dims=array.shape, raw_data=array.tobytes())
        else:
            self._model.graph.initializer.append(numpy_helper.from_array(array, name))
        return name

    def derived_weight(self, source: str, compute: Callable[[np.ndarray], np.ndarray], shape, name: str | None = None, hint: str = "weight") -> str:
        """Add a weight computed from weight ``source`` when the model is written, and return its name.

        For an op that only rearranges a weight (reshape, unsqueeze, squeeze): the result becomes a
        weight of the file instead of a node that a runtime would compute again at every load. The
        writer streams weights from OneFlow's memory one at a time; it calls ``compute`` on the
        source's array each time it writes this weight, so ``compute`` should return a view of it
        (``lambda a: a.reshape(shape)``), which costs no memory. ``source`` itself is written only
        if some node still reads it.

        :param source: a variable of the graph or another derived weight (:meth:`is_weight`).
        :param compute: the source's array -> this weight's array, of ``shape`` and the source's dtype.
        :param shape: the derived weight's shape.
        :param name: its name, usually the op's output (``op.output("out")``); by default a new
            name ending in ``hint``.
        """
        base = self._weights.get(source) or getattr(self._derived.get(source), "info", None)
        if base is None:
            raise self.error(f"derived_weight: {source!r} is not a weight; check ctx.is_weight() first")
        name = name or self.unique_name(hint)
        if name in self._produced:
            raise self.error(f"derived_weight: tensor {name!r} is already produced")
        self._derived[name] = DerivedWeight(TensorInfo(name, tuple(int(d) for d in shape), base.dtype), source, compute)
        self._produced.add(name)
        return name

    def error(self, reason: str) -> LoweringError:
        """An error that refuses the op being lowered: ``raise ctx.error("why, and what to do instead")``.

        The message names the op, its type and the plugin of the lowering, then ``reason``; in a
        pattern's lowering, the pattern, the group and its first op.
        """
        if self._op is None and self._match is None:
            return LoweringError(reason)
        plugin = ""
        if self._lowering:
            origin = f" ({self._lowering.origin})" if self._lowering.origin else ""
            kind = "lowering" if isinstance(self._lowering, Lowering) else "pattern"
            plugin = f" ({kind} from plugin {self._lowering.plugin!r}{origin})"
        if self._op is not None:
            return LoweringError(f"cannot lower {self._op.type} op {self._op.name!r}{plugin}: {reason}")
        ops = self._match.ops
        what = f"group {self._match.name!r} of pattern {self._lowering.name!r}" if self._lowering else f"group {self._match.name!r}"
        return LoweringError(f"cannot lower {what} ({len(ops)} ops from {ops[0].name!r}){plugin}: {reason}")

    # ---- lowering one op ----

    def lower(self, op: FlowOp, lowering: Lowering) -> None:
        """Run ``lowering`` on ``op``, with the op in scope for names and errors (the converter calls this).

        Any failure of the lowering becomes a :class:`LoweringError` naming the op and the plugin;
        so does a lowering that leaves an output of ``op`` that the graph reads unproduced.
        """

        def run() -> None:
            lowering.function(self, op)
            for names in op.outputs.values():
                for name in names:
                    if name in self._tensors_read and name not in self._produced:
                        raise self.error(f"the lowering did not produce output {name!r}, which the graph reads")

        self._in_scope(op, None, lowering, run)

    def lower_pattern(self, match: PatternMatch, pattern: Pattern) -> None:
        """Run ``pattern``'s lowering on the group ``match`` (the converter calls this).

        Nodes are named after ``match.name``. Any failure becomes a :class:`LoweringError` naming the
        group, the pattern and its plugin; so does a lowering that leaves a tensor of
        ``match.outputs`` unproduced.
        """

        def run() -> None:
            pattern.function(self, match)
            missing = [name for name in match.outputs if name not in self._produced]
            if missing:
                raise self.error(f"the lowering did not produce {', '.join(map(repr, missing))}, which the graph reads")

        self._in_scope(None, match, pattern, run)

    def _in_scope(self, op, match, lowering, run: Callable[[], None]) -> None:
        """``run()`` with ``op`` (or the group ``match``) and its ``lowering`` in scope for names and
        errors. (Written out rather than as a context manager: it runs once per op, and a generator's
        context manager costs more than most lowerings.)"""
        outer = self._op, self._match, self._lowering
        self._op, self._match, self._lowering = op, match, lowering
        try:
            run()
        except Exception as error:
            failure = self._failure(error)
            if failure is error:
                raise
            raise failure from error
        finally:
            self._op, self._match, self._lowering = outer

    def _failure(self, error: Exception) -> Exception:
        """What a failure inside a lowering becomes, while its op (or group) is in scope: flow2onnx's own
        errors stay as they are, any other a :class:`LoweringError` naming the op and the plugin."""
        if isinstance(error, OpArgumentError):
            return self.error(error.reason)
        if isinstance(error, Flow2OnnxError):
            return error
        return self.error(f"{type(error).__name__}: {error}")


#: Numeric dtypes whose constants are their raw little-endian bytes in ONNX, as numpy_helper.from_array writes them.
_RAW_DATA_TYPES = (
    {
        np.dtype(t): helper.np_dtype_to_tensor_dtype(np.dtype(t))
        for t in (np.float16, np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.bool_)
    }
    if sys.byteorder == "little"
    else {}
)


def _add_attribute(node, key: str, value) -> None:
    """Add attribute ``key`` to ``node`` as ``onnx.helper.make_attribute`` makes it; the plain Python
    ints, floats, strings and lists of one of those directly (most attributes, and making them
    through the helper costs more than making the node), anything else through the helper."""
    kind = type(value)
    if kind is int:
        node.attribute.add(name=key, type=AttributeProto.INT, i=value)
    elif kind is float:
        node.attribute.add(name=key, type=AttributeProto.FLOAT, f=value)
    elif kind is str:
        node.attribute.add(name=key, type=AttributeProto.STRING, s=value.encode("utf-8"))
    elif (kind is list or kind is tuple) and all(type(item) is int for item in value):
        node.attribute.add(name=key, type=AttributeProto.INTS, ints=value)
    elif (kind is list or kind is tuple) and all(type(item) is float for item in value):
        node.attribute.add(name=key, type=AttributeProto.FLOATS, floats=value)
    else:
        node.attribute.append(helper.make_attribute(key, value))


def watch_renames(ctx: LoweringContext, names, taken) -> None:
    """Before lowering: the tensors the converter may rename once every op is lowered (``names``), and
    the names they may take (``taken``), which no node may make itself."""
    ctx._watched, ctx._taken = frozenset(names), frozenset(taken)


def renames_and_reads(ctx: LoweringContext) -> tuple[dict[str, list[int]], set[str]]:
    """After lowering: where each watched tensor appears (positions of the nodes that read or make it),
    and every tensor some node reads."""
    return ctx._mentions, ctx._inputs_read


def built_model(ctx: LoweringContext) -> onnx.ModelProto:
    """The model whose graph holds ``ctx``'s nodes and constants, for the converter to complete (its
    graph's name, inputs and outputs, the opsets): taken as it is, not copied."""
    return ctx._model
