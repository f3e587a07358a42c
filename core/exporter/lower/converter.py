"""Walking the graph: letting patterns claim groups of ops, checking every other op against the
registry, then lowering each group and each op once, in order."""

from __future__ import annotations

import json
from typing import Callable, Collection, Mapping, NamedTuple

import numpy as np
import onnx
from onnx import helper

from ... import progress
from ...lowering.context import LoweringContext, built_model, renames_and_reads, watch_renames
from ...errors import LoweringError, UnsupportedOpsError
from ...lowering.families import family_note
from ...lowering.graph import FlowGraph, TensorInfo, twin_names
from ...lowering.patterns import ClaimedGroup, claim_groups, output_aliases
from ...lowering.registry import Lowering, Registry
from ...runtime.model import INPUT_TREE_KEY
from ..plan.axes import BATCH_DIM, dynamic_axes_of
from ..serialize import skeleton, weight_reader

class Conversion(NamedTuple):
    """What :func:`convert` gives: the model without its weights, and what made it."""

    model: onnx.ModelProto
    #: OneFlow op type -> the lowering that converted its ops (those that no pattern claimed).
    used: dict[str, Lowering]
    #: The weights the model reads, as graph tensors, in the graph's order.
    weights: list[TensorInfo]
    #: The groups of ops that patterns claimed and lowered, in the order they were lowered.
    groups: list[ClaimedGroup]
    #: Reads each of ``weights`` (as an array, from OneFlow's memory) when the model is written,
    #: those that lowerings derived from others included (``ctx.derived_weight``).
    read_weight: Callable[[str], np.ndarray]


def check_supported(graph: FlowGraph, registry: Registry, opset: int, claimed: Collection[str] = ()) -> None:
    """Raise one :class:`UnsupportedOpsError` listing every op type of ``graph`` without a lowering at
    ``opset``; ops named in ``claimed`` (lowered by a pattern) need none."""
    missing: dict[str, tuple[int, str]] = {}
    signatures: dict[str, str] = {}
    lowered = {op_type for op_type in {op.type for op in graph.ops} if registry.lowering_for(op_type, opset) is not None}
    for op in graph.ops:
        if op.type not in lowered and op.name not in claimed:
            count, example = missing.get(op.type, (0, op.name))
            missing[op.type] = (count + 1, example)
            signatures.setdefault(op.type, op.signature())
    if not missing:
        return
    lines = []
    for op_type, (count, example) in sorted(missing.items()):
        known = registry.opset_range(op_type)
        note = ""
        if known is not None:
            low, high = known
            note = f" (a lowering exists for opset {low}..{high or ''}; export with opset {low if opset < low else high})"
        note += family_note(op_type, registry)
        lines.append(f"  - {op_type}: {count} op{'s' if count > 1 else ''}, e.g. {example!r}{note}")
        lines.append(f"      signature: {signatures[op_type]}")
    message = (
        f"the graph uses {len(missing)} OneFlow op type{'s' if len(missing) > 1 else ''} that no loaded plugin "
        f"lowers to ONNX at opset {opset}:\n" + "\n".join(lines) + "\n"
        "Nothing was written. To add a lowering, write a plugin that implements the "
        "flow2onnx_register_lowerings hook and calls register(op_type, lowering) for these op types, "
        "then install it under the 'flow2onnx' entry-point group or pass it as export(..., plugins=[...])."
    )
    raise UnsupportedOpsError(message, missing)


def convert(
    graph: FlowGraph,
    registry: Registry,
    opset: int,
    dynamic_batch: bool = False,
    producer_version: str = "",
    axes: Mapping[str, Mapping[int, str]] | None = None,
    variant: FlowGraph | None = None,
) -> Conversion:
    """Lower every op of ``graph`` and assemble the ONNX model, without its weights.

    Patterns claim their groups first (:func:`~flow2onnx.lowering.patterns.claim_groups`); each
    group is lowered as a whole where it belongs among the other ops, which are lowered one by one,
    and its outputs take stable names (``<group>/output_<k>``). ``axes`` maps input names
    to ``{axis: symbol}``, as the plan computed them (:func:`~flow2onnx.exporter.plan.axes.dynamic_axes_of`;
    without it, ``{0: "batch"}`` for every input under ``dynamic_batch``). Outputs get the
    symbolic dims that ONNX shape inference carries through. ``variant`` is the same model compiled
    at other sizes of those axes; lowerings compare their op's attributes with it
    (``ctx.variant_attr``) to tell which sizes follow the dynamic axes. The weights the model reads
    (as graph tensors) stay in OneFlow's memory until :mod:`flow2onnx.exporter.serialize` writes them.
    """
    groups = claim_groups(graph, registry, opset)
    claimed = {op.name: group for group in groups for op in group.match.ops}
    check_supported(graph, registry, opset, claimed)
    aliases = output_aliases(groups)
    axes = dynamic_axes_of(graph, dynamic_batch, None) if axes is None else axes
    batch_everywhere = bool(graph.inputs) and all(axes.get(info.name, {}).get(0) for info in graph.inputs)
    twins = None
    if variant is not None:
        twins = twin_names(graph, variant, aliases, output_aliases(claim_groups(variant, registry, opset)))
    ctx = LoweringContext(
        graph, opset, dynamic_batch=dynamic_batch or batch_everywhere, dynamic_axes=axes, variant=variant, variant_names=twins
    )
    watch_renames(ctx, [*aliases, *graph.output_sources], aliases.values())
    used, placed = _lower_ops(ctx, graph, registry, opset, groups, claimed)
    model = built_model(ctx)
    weights = _assemble(model, ctx, graph, aliases, axes, dynamic_batch, opset, producer_version)
    groups = [group for position in sorted(placed) for group in placed[position]]
    return Conversion(model, used, weights, groups, weight_reader(graph.read_weight, ctx.derived_weights))


def _lower_ops(ctx, graph: FlowGraph, registry: Registry, opset: int, groups, claimed) -> tuple[dict, dict]:
    """Lower each op in order, and each claimed group where it belongs among them: the lowering
    used per op type, and the groups by position."""
    used: dict[str, Lowering] = {}
    placed: dict[int, list[ClaimedGroup]] = {}
    lowered = progress.Counter("lowering", len(graph.ops), "ops", every=max(1000, len(graph.ops) // 50))
    for group in groups:
        placed.setdefault(group.position, []).append(group)
    for index, op in enumerate(graph.ops):
        for group in placed.get(index, ()):
            ctx.lower_pattern(group.match, group.pattern)
        lowered.add()
        if op.name in claimed:
            continue
        lowering = used.get(op.type)
        if lowering is None:  # looked up once per op type
            lowering = used[op.type] = registry.lowering_for(op.type, opset)
        ctx.lower(op, lowering)
    for group in placed.get(len(graph.ops), ()):
        ctx.lower_pattern(group.match, group.pattern)
    return used, placed


def _assemble(model, ctx, graph: FlowGraph, aliases, axes, dynamic_batch: bool, opset: int, producer_version: str) -> dict:
    """Give the lowered nodes their graph's inputs, outputs, opsets and metadata: the weights read."""
    onnx_graph = model.graph
    mentions, read = renames_and_reads(ctx)
    extra = _bind_outputs(graph, onnx_graph.node, ctx.derived_weights, aliases, mentions)
    weights = _weights_read(graph, read.union(*(node.input for node in extra)), ctx.derived_weights)
    # What onnx.helper.make_graph and make_model would set, on the graph the nodes were added to.
    onnx_graph.name = graph.name
    onnx_graph.input.extend(_value_info(info, axes.get(info.name, {})) for info in graph.inputs)
    onnx_graph.output.extend(_value_info(info, {0: BATCH_DIM} if dynamic_batch else {}) for info in graph.outputs)
    opset_imports = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in sorted(ctx.domains.items())]
    model.opset_import.extend(opset_imports)
    model.producer_name, model.producer_version = "flow2onnx", producer_version
    if graph.source.input_tree is not None:  # for flow2onnx.runtime.Model to take the inputs nested again
        tree = graph.source.input_tree
        entry = model.metadata_props.add()
        entry.key, entry.value = INPUT_TREE_KEY, json.dumps({"specs": tree.specs, "names": tree.names})
    # The lowest IR version that carries these opsets, so older runtimes (TensorRT 8.x) accept the file.
    model.ir_version = helper.find_min_ir_version_for(opset_imports, ignore_unknown=True)
    if opset < NEGATIVE_AXES_OPSET:
        _non_negative_axes(model, weights)
    if any(axes.values()):
        _symbolic_outputs(model, weights)
    return weights


#: Before this opset, these operators' axis attributes must not be negative.
NEGATIVE_AXES_OPSET = 11
_AXIS_ATTRIBUTES = {
    op_type: "axes" for op_type in ("Squeeze", "Unsqueeze", "ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")
} | {op_type: "axis" for op_type in ("Concat", "Flatten", "Softmax", "LogSoftmax", "Hardmax", "Split", "ArgMax", "ArgMin", "TopK", "Compress", "OneHot", "Scatter")}


def _non_negative_axes(model: onnx.ModelProto, weights: list[TensorInfo]) -> None:
    """Rewrite negative ``axis``/``axes`` attributes, which operators accept only from opset 11, as
    counted from the front. Ranks come from ONNX shape inference run as at opset 11, where the
    attribute forms of these operators are the same."""
    nodes = [node for node in model.graph.node if any(a.name == _AXIS_ATTRIBUTES.get(node.op_type) for a in node.attribute)]
    if not any(v < 0 for node in nodes for a in node.attribute if a.name == _AXIS_ATTRIBUTES[node.op_type] for v in (list(a.ints) or [a.i])):
        return
    probe = skeleton(model, weights)
    probe.opset_import[0].version = NEGATIVE_AXES_OPSET
    try:
        inferred = onnx.shape_inference.infer_shapes(probe)
    except Exception:  # ranks stay unknown: the nodes that need one are named below
        inferred = probe
    ranks = {
        info.name: len(info.type.tensor_type.shape.dim)
        for info in list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)
        if info.type.tensor_type.HasField("shape")
    }
    ranks.update({tensor.name: len(tensor.dims) for tensor in inferred.graph.initializer})
    for node in nodes:
        attribute = next(a for a in node.attribute if a.name == _AXIS_ATTRIBUTES[node.op_type])
        values = list(attribute.ints) if attribute.name == "axes" else [attribute.i]
        if all(v >= 0 for v in values):
            continue
        rank = ranks.get(node.input[0])
        if rank is None:
            raise LoweringError(
                f"ONNX node {node.name!r} ({node.op_type}) has the negative {attribute.name} {values}, which opset "
                f"{model.opset_import[0].version} does not allow, and the rank of its input is unknown; export at opset "
                f"{NEGATIVE_AXES_OPSET} or newer"
            )
        if node.op_type == "Unsqueeze":
            rank += len(values)  # axes of Unsqueeze count in the output
        fixed = [v + rank if v < 0 else v for v in values]
        if attribute.name == "axes":
            del attribute.ints[:]
            attribute.ints.extend(fixed)
        else:
            attribute.i = fixed[0]


def _symbolic_outputs(model: onnx.ModelProto, weights: list[TensorInfo]) -> None:
    """Give output dims the symbols that shape inference propagates from the inputs' dynamic axes."""
    probe = skeleton(model, weights)
    for output in probe.graph.output:  # let inference fill the outputs' shapes from scratch
        output.type.tensor_type.ClearField("shape")
    try:
        inferred = onnx.shape_inference.infer_shapes(probe)
    except Exception:  # the checker reports an invalid model with a better message later
        return
    shapes = {vi.name: vi.type.tensor_type.shape for vi in list(inferred.graph.value_info) + list(inferred.graph.output)}
    for output in model.graph.output:
        shape = shapes.get(output.name)
        if shape is None:
            continue
        for axis, (dim, found) in enumerate(zip(output.type.tensor_type.shape.dim, shape.dim)):
            if not (found.HasField("dim_param") and found.dim_param):
                continue
            if found.dim_param.startswith("unk__"):
                # A size inference could not relate to an input's axis: give it a stable name
                # (unless the output already has one, like dim 0 under a dynamic batch).
                if dim.dim_param:
                    continue
                symbol = f"{output.name}_dim{axis}"
            else:
                symbol = found.dim_param
            dim.Clear()
            dim.dim_param = symbol


def _bind_outputs(graph: FlowGraph, nodes, derived: Mapping, aliases: Mapping[str, str], mentions: Mapping[str, list[int]]) -> list:
    """Give graph outputs their readable names, and claimed groups' outputs their stable names
    (``aliases``), by renaming the producing tensors in ``nodes`` (the graph's, in place): only the
    nodes that ``mentions`` (tensor -> positions of the nodes that read or make it) names for them.

    An Identity is added where renaming a graph output is impossible: the output is a graph input or
    a weight, or one tensor feeds several outputs. Returns the Identity nodes added.
    """
    rename: dict[str, str] = dict(aliases)
    not_renamable = {info.name for info in graph.inputs} | {info.name for info in graph.variables} | set(derived)
    bound = set()
    extra = []
    for info, source in zip(graph.outputs, graph.output_sources):
        if source in not_renamable or source in bound:
            extra.append(helper.make_node("Identity", [rename.get(source, source)], [info.name], name=f"{info.name}/Identity"))
        else:
            rename[source] = info.name
            bound.add(source)
    touched = sorted({position for name in rename for position in mentions.get(name, ())})
    for position in touched:
        node = nodes[position]
        for i, name in enumerate(node.input):
            if name in rename:
                node.input[i] = rename[name]
        for i, name in enumerate(node.output):
            if name in rename:
                node.output[i] = rename[name]
    nodes.extend(extra)
    return extra


def _weights_read(graph: FlowGraph, read: set, derived: Mapping) -> list[TensorInfo]:
    """The variables that some node reads (``read``: every tensor a node reads), in the graph's order,
    then the derived weights that some node reads."""
    return [info for info in graph.variables if info.name in read] + [entry.info for name, entry in derived.items() if name in read]


def _value_info(info: TensorInfo, symbols: dict[int, str]):
    elem_type = helper.np_dtype_to_tensor_dtype(info.dtype)
    shape: list = [symbols.get(axis, size) for axis, size in enumerate(info.shape)]
    return helper.make_tensor_value_info(info.name, elem_type, shape)
