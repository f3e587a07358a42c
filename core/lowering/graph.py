"""The lowering API's view of a OneFlow graph: its ops, tensors and weights, under ONNX names.

:class:`FlowGraph` is what capture produces and the converter walks; a lowering sees one
:class:`FlowOp` at a time and reads tensors' static facts as :class:`TensorInfo`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..errors import LoweringError
from .schema import OpSchema, python_type, schema_from_ops


@dataclass(frozen=True)
class TensorInfo:
    """Static description of one tensor of the graph: its ONNX ``name``, ``shape`` (a tuple) and numpy ``dtype``."""

    name: str
    shape: tuple[int, ...]
    dtype: np.dtype


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

    def __post_init__(self):
        if self.schema is None:  # an op built by hand: its own arguments and attributes
            types = {name: python_type(value) for name, value in self.attrs.items()}
            self.schema = schema_from_ops(self.type, [(self.inputs, self.outputs, types)])

    def input(self, arg: str, index: int = 0) -> str:
        """The ONNX name of the ``index``-th tensor of input argument ``arg`` (``op.input("x")``)."""
        return self._tensor("input", self.inputs, self.schema.inputs, arg, index)

    def output(self, arg: str, index: int = 0) -> str:
        """The ONNX name of the ``index``-th tensor of output argument ``arg`` (``op.output("y")``)."""
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


@dataclass
class FlowGraph:
    """What the converter needs from a compiled graph, and nothing copied that it does not.

    ``ops`` lists the ops (:class:`FlowOp`) in execution order; ``inputs``, ``outputs`` and
    ``variables`` (the weights) are lists of :class:`TensorInfo`, and ``tensors`` maps every
    tensor's ONNX name to its :class:`TensorInfo`. A lowering reads it as ``ctx.graph``.
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
    # The graph itself, kept to run OneFlow for verification.
    flow_graph: Any = field(repr=False, default=None)
    # The eager module the graph was traced from, when flow2onnx wrapped it: verification runs it
    # rather than the graph (any batch size, and OneFlow 0.9's lazy-job runtime crashes now and then
    # on repeated graph runs).
    eager_module: Any = field(repr=False, default=None)
    # For a graph built on global tensors: each input's (placement, sbp), as OneFlow objects.
    input_layouts: Any = field(repr=False, default=None)

    def op_types(self) -> dict[str, int]:
        """OneFlow op type -> number of ops of that type in the graph."""
        counts: dict[str, int] = {}
        for op in self.ops:
            counts[op.type] = counts.get(op.type, 0) + 1
        return counts
