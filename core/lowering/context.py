"""The lowering context: what a lowering sees and the only way it adds to the ONNX graph."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from onnx import helper, numpy_helper

from ..errors import LoweringError
from .graph import FlowGraph, FlowOp, TensorInfo
from .registry import Lowering


class LoweringContext:
    """Collects the nodes and constants of one conversion.

    A lowering receives the context and the op it lowers, reads static facts about tensors through
    :meth:`shape` and :meth:`dtype`, and adds nodes with :meth:`make_node` and constants with
    :meth:`constant`. Names of new nodes and tensors derive from the op's name, so the same graph
    always gives the same model.
    """

    def __init__(self, graph: FlowGraph, opset: int, dynamic_batch: bool, tensors_read: set[str] = frozenset()):
        self.graph = graph
        self.opset = opset
        #: True when dim 0 of every input and output is symbolic: lowerings must not bake batch size in.
        self.dynamic_batch = dynamic_batch
        #: Input name -> {axis: symbol} for the axes that stay symbolic in the model.
        self.dynamic_axes: dict[str, dict[int, str]] = {}
        #: The same model compiled at other sizes of the dynamic axes, when there is one.
        self.variant: FlowGraph | None = None
        self._variant_ops: dict | None = None
        #: The batch size of the example inputs the graph was compiled with (dim 0 of the first input).
        self.example_batch = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
        self.nodes: list = []
        self.constants: list = []
        self.domains: dict[str, int] = {}
        self._op: FlowOp | None = None
        self._lowering: Lowering | None = None
        self._names_used: dict[str, int] = {}
        self._tensors_read = tensors_read

    # ---- facts about tensors ----

    def tensor(self, name: str) -> TensorInfo:
        """Static shape and dtype of a OneFlow tensor (as compiled for the example inputs)."""
        try:
            return self.graph.tensors[name]
        except KeyError:
            raise self.error(f"tensor {name!r} has no known shape (it is not a tensor of the OneFlow graph)") from None

    def shape(self, name: str) -> tuple[int, ...]:
        return self.tensor(name).shape

    def dtype(self, name: str) -> np.dtype:
        return self.tensor(name).dtype

    def rank(self, name: str) -> int:
        return len(self.shape(name))

    def variant_attr(self, op: FlowOp, name: str):
        """Attribute ``name`` of the same op in the model compiled at other sizes of the dynamic axes.

        ``None`` when there is no such compilation (no dynamic axes, or a compiled graph without its
        eager module). Where the two differ, the attribute follows the dynamic axes: a lowering can
        then compute that part in the graph (e.g. Reshape's -1) instead of baking the example's value.
        """
        if self.variant is None:
            return None
        if self._variant_ops is None:
            self._variant_ops = {other.name: other for other in self.variant.ops}
        other = self._variant_ops.get(op.name)
        return None if other is None or other.type != op.type else other.attrs.get(name)

    def variant_shape(self, name: str) -> tuple[int, ...] | None:
        """Shape of tensor ``name`` in the model compiled at other sizes of the dynamic axes (or ``None``)."""
        info = self.variant.tensors.get(name) if self.variant is not None else None
        return None if info is None else info.shape

    def is_read(self, name: str) -> bool:
        """Whether some op or a graph output reads tensor ``name`` (an unread output need not be produced)."""
        return name in self._tensors_read

    # ---- building ----

    def unique_name(self, hint: str) -> str:
        """A name unique in this model, derived from the current op's name and ``hint``."""
        base = f"{self._op.name}/{hint}" if self._op is not None else hint
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
        """Add an ONNX node and return its output names.

        ``outputs`` gives the output names (usually the op's own, ``op.output("y")``), or a count of
        fresh intermediate outputs to create (default 1). Empty strings in ``inputs`` mark omitted
        optional inputs. Attributes whose value is ``None`` are left out. A node in a domain other
        than the default adds that domain to the model's ``opset_import`` at ``domain_version``.
        """
        if outputs is None or isinstance(outputs, int):
            count = 1 if outputs is None else outputs
            outputs = [self.unique_name(f"{op_type}_out{i}" if count > 1 else op_type) for i in range(count)]
        attributes = {key: value for key, value in attributes.items() if value is not None}
        node = helper.make_node(op_type, list(inputs), list(outputs), name=self.unique_name(op_type), domain=domain or None, **attributes)
        if domain:
            self.domains[domain] = max(self.domains.get(domain, 0), domain_version)
        self.nodes.append(node)
        return list(outputs)

    def constant(self, value, hint: str = "const", dtype=None) -> str:
        """Add a small constant tensor (a shape, a scalar) as an initializer and return its name."""
        array = np.asarray(value, dtype=dtype)
        name = self.unique_name(hint)
        self.constants.append(numpy_helper.from_array(array, name))
        return name

    def error(self, reason: str) -> LoweringError:
        """An error for the op being lowered, naming it, its type and the plugin; ``raise ctx.error(...)``."""
        if self._op is None:
            return LoweringError(reason)
        plugin = ""
        if self._lowering:
            origin = f" ({self._lowering.origin})" if self._lowering.origin else ""
            plugin = f" (lowering from plugin {self._lowering.plugin!r}{origin})"
        return LoweringError(f"cannot lower {self._op.type} op {self._op.name!r}{plugin}: {reason}")

    # ---- used by the converter ----

    def _begin(self, op: FlowOp, lowering: Lowering) -> None:
        self._op = op
        self._lowering = lowering

    def _end(self) -> None:
        self._op = None
        self._lowering = None
