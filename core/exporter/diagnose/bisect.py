"""Finding the first OneFlow op whose ONNX counterpart gives different numbers.

A compiled graph only returns its outputs, so the finder traces the eager module again into a
*debug graph* that also returns the output of every submodule and every tensor that an op called
from Python produced (:mod:`flow2onnx.exporter.capture.recording`), functional calls inside a ``forward`` included. That graph is converted with the
same plugins and opset, and both are run once on the same inputs: every intermediate tensor that
OneFlow returns is compared with the ONNX tensor of the same name. Walking the ops in execution
order, the first compared tensor that is out of tolerance marks where the divergence shows; the
ops between it and the tensors that still matched are the ones that can have caused it. When that
is a single op (the usual case for an op that a module wraps), the finder names it exactly.
"""

from __future__ import annotations

import os
import tempfile
import types
from dataclasses import dataclass, field
from typing import Sequence

from ..._oneflow import import_oneflow, quiet_native_output
from ...errors import Flow2OnnxError
from ...lowering.graph import FlowGraph
from ...lowering.plugin_manager import load_plugins
from ...lowering.registry import Registry
from ..capture.graphs import compile_graph, flatten_outputs, read_graph, run_build_eagerly
from ..capture.recording import recording_tensors
from ..lower.converter import convert
from ..plan.draws import EDGE_DRAWS, draw_inputs, index_bounds
from ..verify.comparison import compare
from ..verify.verifier import drawn_tensors
from ..serialize import write_streamed


@dataclass
class Divergence:
    """Where ONNX Runtime first departs from OneFlow inside the model."""

    op_name: str
    op_type: str
    plugin: str
    origin: str
    input_shapes: dict[str, list[int]]
    tensor: str
    max_abs_diff: float
    max_rel_diff: float
    mismatch_fraction: float
    #: Ops that can have caused it (the divergent op and those between it and tensors that matched).
    candidates: list[tuple[str, str]] = field(default_factory=list)
    points_compared: int = 0
    points_matching: int = 0

    @property
    def exact(self) -> bool:
        return len(self.candidates) == 1

    def to_text(self) -> str:
        where = "the first op whose ONNX lowering diverges" if self.exact else "the first compared tensor that diverges comes from"
        lines = [
            f"{where}: {self.op_type} op {self.op_name!r}",
            f"  lowered by plugin {self.plugin!r} ({self.origin})",
            "  inputs: " + ", ".join(f"{name} {shape}" for name, shape in self.input_shapes.items()),
            f"  output {self.tensor!r}: max abs diff {self.max_abs_diff:.3e}, max rel diff {self.max_rel_diff:.3e}, "
            f"{self.mismatch_fraction:.2%} of elements out of tolerance",
            f"  ({self.points_matching} of {self.points_compared} intermediate tensors compared before it matched)",
        ]
        if not self.exact:
            lines.append("  ops since the last matching tensor, any of which can be the cause: " + ", ".join(f"{t} {n!r}" for n, t in self.candidates))
        return "\n".join(lines)


def _capture_submodule_outputs(module, captured: list):
    """Make every submodule record its tensor outputs while a graph is traced; returns an undo function.

    nn.Graph calls a module's ``forward`` function with its own proxy as ``self``, so the wrapper is
    installed as a bound method on each instance and removed afterwards.
    """
    flow = import_oneflow()
    patched = []
    for path, submodule in module.named_modules():
        if not path:
            continue
        original = submodule.forward.__func__

        def forward(self, *args, __original=original, __path=path, **kwargs):
            result = __original(self, *args, **kwargs)
            for tensor in flatten_outputs(result):
                if isinstance(tensor, flow.Tensor):
                    captured.append((__path, tensor))
            return result

        submodule.forward = types.MethodType(forward, submodule)
        patched.append(submodule)

    def undo():
        for submodule in patched:
            del submodule.forward

    return undo


def _debug_graph(module, example_inputs):
    flow = import_oneflow()
    captured: list = []

    class DebugGraph(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = module

        def build(self, *args):
            captured.clear()
            with recording_tensors() as recorded:
                outputs = flatten_outputs(self.model(*args))
            extra, seen = [], {id(tensor) for tensor in outputs}
            for tensor in [tensor for _, tensor in captured] + recorded:
                if id(tensor) not in seen:
                    seen.add(id(tensor))
                    extra.append(tensor)
            return tuple(outputs) + tuple(extra)

    undo = _capture_submodule_outputs(module, captured)
    try:
        graph = DebugGraph()
        object.__setattr__(graph, "_flow2onnx_name", type(module).__name__)
        compile_graph(graph, example_inputs)
    finally:
        undo()

    def run_eagerly(tensors):
        """The debug graph's outputs from its ``build`` run eagerly (the same hooks, no job launched)."""
        undo = _capture_submodule_outputs(module, captured)
        try:
            return flatten_outputs(run_build_eagerly(graph, tensors))
        finally:
            undo()

    return graph, run_eagerly


def _oneflow_values(graph: FlowGraph, run_eagerly, tensors) -> list:
    """OneFlow's value of every output of the debug graph, computed eagerly when that gives the
    debug graph's very outputs (same count, shapes and dtypes); else by launching the compiled job,
    which OneFlow 0.9 can crash on (a race in its job queue, about once in thousands of launches:
    the full test suite met it in this very call)."""
    try:
        values = [t.numpy() for t in run_eagerly(tensors)]
    except Exception:  # build needs the graph itself
        values = None
    if values is not None and len(values) == len(graph.outputs) and all(
        tuple(v.shape) == tuple(info.shape) and v.dtype == info.dtype for v, info in zip(values, graph.outputs)
    ):
        return values
    return [t.numpy().copy() for t in flatten_outputs(graph.source.flow_graph(*tensors))]


def find_first_divergence(
    module,
    example_inputs: Sequence,
    *,
    opset: int,
    dynamic_batch: bool = False,
    registry: Registry | None = None,
    verifier: str = "onnxruntime",
    plugins: Sequence = (),
    disable_plugins: Sequence[str] = (),
    only_plugins: Sequence[str] | None = None,
    rtol: float | None = None,
    atol: float | None = None,
    seed: int = 0,
    floats: str | tuple[float, float] = "unit",
) -> Divergence | None:
    """Run the module's ops in OneFlow and ONNX Runtime side by side; ``None`` when everything matches.

    The inputs are drawn at the example's shapes as ``floats`` says (a draw of
    :func:`~flow2onnx.exporter.plan.draws.draw_inputs`): the draw of the verification run that
    failed finds what failed there; at edge values, tensors are compared by that run's rule.
    ``registry`` is the export's own (its plugins are not loaded again); without it, the plugins are
    loaded as ``plugins``, ``disable_plugins`` and ``only_plugins`` say. ``verifier`` runs the
    debug model. It is converted at the example's shapes, with no dynamic axes: its tensors are
    compared there only.
    """
    flow = import_oneflow()
    module.eval()
    inputs = [flow.tensor(x) if not isinstance(x, flow.Tensor) else x for x in example_inputs]
    debug, run_eagerly = _debug_graph(module, inputs)
    graph = read_graph(debug)
    if registry is None:
        registry = load_plugins(extra_plugins=plugins, disable=disable_plugins, only=only_plugins).registry
    model, _, weights, groups, read_weight = convert(graph, registry, opset, dynamic_batch)

    arrays = draw_inputs(graph.inputs, None, seed=seed, bounds=index_bounds(graph), floats=floats)
    with quiet_native_output():
        expected = _oneflow_values(graph, run_eagerly, [flow.tensor(a) for a in arrays])
    runner = registry.verifiers[verifier]
    with tempfile.TemporaryDirectory(prefix="flow2onnx-bisect-") as directory:
        path = os.path.join(directory, "debug.onnx")
        write_streamed(model, weights, read_weight, path)
        libraries = [entry.path for entry in registry.runtime_libraries.values()]
        try:
            actual = runner.function(path, {info.name: a for info, a in zip(graph.inputs, arrays)}, libraries)
        except Exception as error:
            raise Flow2OnnxError(f"the first-divergence finder could not run the debug model: {type(error).__name__}: {error}") from error
    claimed = {op.name: group.pattern for group in groups for op in group.match.ops}
    return _first_divergence(graph, registry, opset, expected, actual, rtol, atol, claimed, floats in EDGE_DRAWS)


def _first_divergence(graph: FlowGraph, registry: Registry, opset: int, expected, actual, rtol, atol, claimed: dict, edges: bool) -> Divergence | None:
    producer = {}
    for index, op in enumerate(graph.ops):
        for names in op.outputs.values():
            for name in names:
                producer[name] = index

    # One comparison per distinct tensor, in the order the ops ran; random draws by their statistics.
    points, drawn = {}, drawn_tensors(graph)
    for source, want, got in zip(graph.output_sources, expected, actual):
        if source in producer and source not in points:
            points[source] = compare(source, want, got, rtol, atol, edges=edges, drawn=drawn.get(source))
    ordered = sorted(points, key=lambda name: producer[name])
    matched = {name for name in ordered if points[name].passed}
    first = next((name for name in ordered if not points[name].passed), None)
    if first is None:
        return None

    op = graph.ops[producer[first]]
    candidates, stack, seen = [], [producer[first]], set()
    while stack:
        index = stack.pop()
        if index in seen:
            continue
        seen.add(index)
        candidates.append(index)
        for names in graph.ops[index].inputs.values():
            for name in names:
                if name in producer and name not in matched:
                    stack.append(producer[name])
    # An op of a group that a pattern lowered as a whole was lowered by that pattern.
    lowering = claimed.get(op.name) or registry.lowering_for(op.type, opset)
    comparison = points[first]
    return Divergence(
        op_name=op.name,
        op_type=op.type,
        plugin=lowering.plugin,
        origin=lowering.origin,
        input_shapes={name: list(graph.tensors[name].shape) for names in op.inputs.values() for name in names if name in graph.tensors},
        tensor=first,
        max_abs_diff=comparison.max_abs_diff,
        max_rel_diff=comparison.max_rel_diff,
        mismatch_fraction=comparison.mismatch_fraction,
        candidates=[(graph.ops[i].name, graph.ops[i].type) for i in sorted(candidates)],
        points_compared=len(ordered),
        points_matching=sum(1 for name in ordered if points[name].passed and producer[name] < producer[first]),
    )
