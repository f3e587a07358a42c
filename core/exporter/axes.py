"""The plan step: which axes of the inputs stay symbolic, and the shapes the model is checked at.

The options name the dynamic axes; here they are checked against the graph's inputs, and the
input shapes for verification are chosen: a dynamic batch B is tried at B, B + 1 and 2B + 3 (or the
batch sizes asked for), other dynamic axes of size S at S, S + 1 and S + 3, so that a size baked
into the model shows as a wrong result or a failed run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

from ..errors import InvalidModelError
from ..lowering.graph import FlowGraph
from .converter import dynamic_axes_of
from .options import ExportOptions

# The size added to a non-batch dynamic axis in each verification run.
_AXIS_GROWTH = (0, 1, 3)


@dataclass(frozen=True)
class AxesPlan:
    """The plan step's value."""

    #: Input name -> {axis: symbol}, for every input (an empty mapping: all its axes are static).
    axes: Mapping[str, Mapping[int, str]]
    #: One ``(batch size or None, {input name: shape})`` per verification run; ``((None, {}),)`` when static.
    verify_shapes: tuple[tuple[int | None, Mapping[str, tuple[int, ...]]], ...]
    #: The shapes at which the eager module is compiled a second time, to tell which sizes follow the
    #: dynamic axes; ``None`` when there are none, or no eager module to compile again.
    variant_shapes: Mapping[str, tuple[int, ...]] | None

    @property
    def symbolic_axes(self) -> dict[str, dict[int, str]]:
        """The inputs that have symbolic axes, with them (what the export's result reports)."""
        return {name: dict(mapping) for name, mapping in self.axes.items() if mapping}


def plan_axes(graph: FlowGraph, options: ExportOptions) -> AxesPlan:
    """Check the requested dynamic axes against ``graph`` and choose the shapes to verify at."""
    if options.dynamic_batch:
        _check_dynamic_batch(graph)
    _check_dynamic_axes(graph, options.dynamic_axes)
    axes = dynamic_axes_of(graph, options.dynamic_batch, options.dynamic_axes)
    dynamic = any(axes.values())
    variant_shapes = None
    if dynamic and graph.eager_module is not None:
        # Sizes other than the example's, and ones that verification runs at anyway.
        variant_shapes = _shapes(graph, axes, None)[1][1]
    return AxesPlan(axes=axes, verify_shapes=tuple(_shapes(graph, axes, options.verify_batch_sizes)), variant_shapes=variant_shapes)


def _shapes(graph: FlowGraph, axes: Mapping, batch_sizes: Sequence[int] | None) -> list[tuple]:
    """``(batch label, {input name: shape})`` per verification run; one ``(None, {})`` when static."""
    if not any(axes.values()):
        return [(None, {})]
    runs = []
    for k in range(len(batch_sizes) if batch_sizes else 3):
        shapes, batch = {}, None
        for info in graph.inputs:
            shape = list(info.shape)
            for axis in axes.get(info.name, {}):
                if axis == 0:
                    shape[0] = batch_sizes[k] if batch_sizes else (shape[0], shape[0] + 1, 2 * shape[0] + 3)[k]
                    batch = shape[0]
                else:
                    shape[axis] += _AXIS_GROWTH[k % 3]
            shapes[info.name] = tuple(shape)
        runs.append((batch, shapes))
    return runs


def _check_dynamic_batch(graph: FlowGraph) -> None:
    batch_dims = {info.name: info.shape[0] if info.shape else None for info in graph.inputs}
    if not graph.inputs or None in batch_dims.values() or len(set(batch_dims.values())) > 1:
        raise InvalidModelError(
            f"dynamic_batch needs every input to carry the batch on dim 0, with the same size; the example inputs "
            f"have dim 0 of {batch_dims or 'no inputs'}. Export with static shapes, or give the inputs a common batch dimension"
        )


def _check_dynamic_axes(graph: FlowGraph, dynamic_axes) -> None:
    if not dynamic_axes:
        return
    names = {info.name: info for info in graph.inputs}
    for name, mapping in dynamic_axes.items():
        if name not in names:
            raise InvalidModelError(f"dynamic_axes names input {name!r}, but the model's inputs are {', '.join(names) or 'none'}")
        rank = len(names[name].shape)
        for axis, symbol in mapping.items():
            if not isinstance(axis, int) or not 0 <= axis < rank:
                raise InvalidModelError(f"dynamic_axes[{name!r}] has axis {axis!r}; input {name!r} has {rank} axes (0 to {rank - 1})")
            if not isinstance(symbol, str) or not symbol:
                raise InvalidModelError(f"dynamic_axes[{name!r}][{axis}] must be a symbol name like 'height', not {symbol!r}")
        if graph.eager_module is None and any(axis != 0 for axis in mapping):
            raise InvalidModelError(
                f"dynamic axes other than dim 0 ({name!r}: {sorted(a for a in mapping if a)}) need the eager module, to check "
                "and verify the model at other sizes: export the nn.Module with example_inputs rather than a compiled graph"
            )
