"""The lower step: load the export's plugins, and lower the graph to an ONNX model without weights.

The weights stay in OneFlow's memory; the model lists them (as :class:`TensorInfo`) for the writer,
which streams them into the file. With dynamic axes and an eager module, the module is compiled a
second time at other sizes and converted too: an op whose ONNX nodes change with those sizes has
baked them in, and is reported here rather than exported wrong.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any, Callable, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from ..._oneflow import error_text, import_oneflow, quiet_native_output
from ...errors import InvalidModelError, LoweringError, PluginError
from ...lowering.graph import FlowGraph, TensorInfo, stable_tensor_name
from ...lowering.plugin_manager import load_plugins, own_version
from ...lowering.patterns import claim_groups
from ...lowering.registry import Registry
from ..capture import capture_again
from ..capture.graphs import read_graph, recompile_graph, refuse_unrunnable
from ..options import ExportOptions
from ..plan.axes import AxesPlan, inputs_at, telling_size
from ..serialize import weights_nbytes
from .converter import convert

log = logging.getLogger("flow2onnx")

# Protobuf cannot serialise a message of 2 GiB or more; past this the weights must go to a side file.
PROTOBUF_LIMIT = 2**31 - 1


@dataclass(frozen=True)
class Lowered:
    """The lower step's value: the model without its weights, and what its lowering used."""

    model: onnx.ModelProto
    #: The weights the model reads, still in OneFlow's memory (``read_weight`` reads each).
    weights: tuple[TensorInfo, ...]
    #: Reads one of ``weights`` as an array when it is written: the graph's own, or one a lowering
    #: derived from them (a reshaped parameter, computed as a view of OneFlow's memory).
    read_weight: Callable[[str], np.ndarray]
    #: OneFlow op type -> the registered lowering that converted it (ops that no pattern claimed).
    used: Mapping[str, Any]
    #: Claimed group's name -> the registered pattern that lowered it.
    groups: Mapping[str, Any]
    #: Whether the weights go to ``<path>.data``: as asked, or because the model passes protobuf's limit.
    external_data: bool
    #: Whether the model with its weights fits in one protobuf message (post-passes need that).
    fits_protobuf: bool
    #: The model's size with its weights, in bytes.
    size: int
    timings: Mapping[str, float]
    #: The graph that was lowered: the captured one, or the model traced again where the example's
    #: size 1 on a dynamic axis made OneFlow build other ops than at other sizes (see :func:`lower`).
    graph: FlowGraph | None = None

    @property
    def lowered_by(self) -> dict[str, str]:
        return {op_type: lowering.plugin for op_type, lowering in self.used.items()}

    @property
    def patterns(self) -> dict[str, str]:
        """Pattern name -> the plugin whose pattern claimed and lowered groups of ops."""
        return {pattern.name: pattern.plugin for pattern in self.groups.values()}

    @property
    def pattern_groups(self) -> dict[str, str]:
        """Claimed group's name (``model.rnn``) -> the pattern that lowered it."""
        return {group: pattern.name for group, pattern in self.groups.items()}

    @property
    def overrides(self) -> dict[str, str]:
        overriding = list(self.used.items()) + [(f"pattern {p.name}", p) for p in self.groups.values()]
        return {key: f"{entry.plugin} overrides {', '.join(entry.overrides)}" for key, entry in overriding if entry.overrides}

    @property
    def custom_domains(self) -> dict[str, int]:
        return {d.domain: d.version for d in self.model.opset_import if d.domain not in ("", "ai.onnx")}


def select_plugins(options: ExportOptions) -> Registry:
    """Load the plugins for this export; fail now if the verifier or a post-pass asked for is missing."""
    registry = load_plugins(extra_plugins=options.plugins, disable=options.disable_plugins, only=options.only_plugins).registry
    if options.verify and options.verifier not in registry.verifiers:
        raise PluginError(
            f"verifier {options.verifier!r} is not registered (available: {sorted(registry.verifiers) or 'none'}); "
            "install or enable the plugin that provides it, or pass verify=False"
        )
    unknown = [name for name in options.post_passes if name not in registry.post_passes]
    if unknown:
        raise PluginError(
            f"post-pass {', '.join(map(repr, unknown))} is not registered "
            f"(available: {', '.join(sorted(registry.post_passes)) or 'none'})"
        )
    return registry


class _SizesChangeOps(LoweringError):
    """The two compilations of a model with dynamic axes differ in their ops, not only in sizes."""


def lower(graph: FlowGraph, plan: AxesPlan, registry: Registry, options: ExportOptions) -> Lowered:
    """Convert every op of ``graph`` once, with the registry's lowerings at the options' opset.

    With dynamic axes, a size of 1 in the example is a degenerate case for broadcasting: OneFlow
    adds two tensors of the same shape with ``add_n`` where, at other sizes, one of them broadcasts
    (a ViT's position embedding at batch 1). When the two compilations differ in their ops and the
    example has size 1 on a dynamic axis, the model is traced again with another size there
    (:func:`_without_ones`) and that graph is lowered and checked instead; the example's own size stays the first verification run, so the
    file is still compared with OneFlow at size 1 (where a model that really branches on size 1
    then fails verification rather than passing).
    """
    try:
        return _lower(graph, plan, registry, options)
    except _SizesChangeOps as error:
        ones = _size_one_axes(plan, graph)
        if not ones:
            raise
        shapes = _without_ones(plan, graph)
        retraced = _traced_again(graph, shapes)
        if retraced is None:
            raise
        log.info(
            "the example has size 1 on %s, where OneFlow builds other ops than at other sizes (%s); tracing the model "
            "again at %s, lowering that graph, and verifying at size 1 too", ", ".join(ones), error, shapes,
        )
        try:
            return _lower(retraced, plan, registry, options)
        except _SizesChangeOps:
            raise error from None


def _without_ones(plan: AxesPlan, graph: FlowGraph) -> dict[str, tuple[int, ...]]:
    """The example's shapes with each dynamic axis of size 1 at a size larger than the second
    compilation's dynamic sizes, growing from that compilation by a ratio no other axis grows by,
    nor its inverse: this graph is compared with that compilation, and an axis of equal or swapped
    sizes in both could not show which axis a value follows (fuzzer 4:11333: a mean's 1/2 was
    baked in at 2, then explained by the wrong axis at 3)."""
    variant = plan.variant_shapes or {}
    start = 1 + max(
        (variant[name][axis] for name, axes in plan.symbolic_axes.items() if name in variant for axis in axes), default=1
    )
    symbols: dict[str, int] = {}
    ratios = [
        size / variant[info.name][axis]
        for info in graph.inputs for axis, size in enumerate(info.shape)
        if axis in plan.symbolic_axes.get(info.name, {}) and size != 1 and info.name in variant
    ]
    shapes = {}
    for info in graph.inputs:
        axes, shape = plan.symbolic_axes.get(info.name, {}), list(info.shape)
        for axis, size in enumerate(info.shape):
            if axis not in axes or size != 1:
                continue
            if axes[axis] not in symbols:
                other = variant[info.name][axis] if info.name in variant else 1
                chosen = telling_size(max(start, *symbols.values()) if symbols else start, 1, other, set(symbols.values()), ratios)
                symbols[axes[axis]] = chosen
                ratios.append(chosen / other)
            shape[axis] = symbols[axes[axis]]
        shapes[info.name] = tuple(shape)
    return shapes


def _traced_again(graph: FlowGraph, shapes: Mapping[str, tuple[int, ...]]) -> FlowGraph | None:
    """The model traced again, as it was captured, for inputs of ``shapes``; ``None`` when OneFlow cannot."""
    tensors = inputs_at(graph, shapes)
    try:
        return _trace_at(graph, tensors)
    except Exception as error:  # the model may run at its example's size only: keep the first error
        log.info("could not trace the model again for inputs %s (%s)", dict(shapes), error_text(error))
        return None


def _size_one_axes(plan: AxesPlan, graph: FlowGraph) -> list[str]:
    """The dynamic axes on which the example has size 1, as ``input[axis]``."""
    return [
        f"{info.name}[{axis}]"
        for info in graph.inputs
        for axis in sorted(plan.symbolic_axes.get(info.name, {}))
        if axis < len(info.shape) and info.shape[axis] == 1
    ]


def _lower(graph: FlowGraph, plan: AxesPlan, registry: Registry, options: ExportOptions) -> Lowered:
    started = time.perf_counter()
    variant = _compile_variant(graph, plan) if plan.variant_shapes is not None else None
    if variant is None:
        plan = replace(plan, variant_shapes=None)
    try:
        model, used, weights, groups, read_weight = convert(
            graph, registry, options.opset, options.dynamic_batch, producer_version=own_version(),
            axes=plan.axes, variant=variant,
        )
    except LoweringError as error:
        other_path = _other_path(graph, variant, registry, options.opset) if variant is not None else ""
        if not other_path:
            raise
        raise _SizesChangeOps(_branching_message(plan, graph, other_path, str(error))) from error
    timings = {"convert": time.perf_counter() - started}
    if variant is not None:
        started = time.perf_counter()
        _check_sizes_follow_axes(graph, variant, plan, model, registry, options)
        timings["dynamic_axes_check"] = time.perf_counter() - started
    for group in groups:
        log.info("pattern %r (%s) lowered %d ops of group %r", group.pattern.name, group.pattern.plugin, len(group.match.ops), group.match.name)
    log.info("converted %d ops to %d ONNX nodes at opset %d", len(graph.ops), len(model.graph.node), options.opset)
    size = model.ByteSize() + weights_nbytes(weights)
    fits = size < PROTOBUF_LIMIT
    return Lowered(
        model=model,
        weights=tuple(weights),
        read_weight=read_weight,
        used=used,
        groups={group.match.name: group.pattern for group in groups},
        external_data=bool(options.external_data) if options.external_data is not None else not fits,
        fits_protobuf=fits,
        size=size,
        timings=timings,
        graph=graph,
    )


def _compile_variant(graph: FlowGraph, plan: AxesPlan) -> FlowGraph | None:
    """The model compiled again at the plan's variant shapes (dynamic axes grown).

    An eager module is wrapped again. A graph the user compiled is rebuilt as a new graph of the same
    class over the same modules (its own ``__init__`` is not called again: it may take arguments);
    when that fails, the export goes on without the second compilation, with a warning, and
    verification at other batch sizes is what stands between a baked batch and the file.
    """
    shapes = plan.variant_shapes
    tensors = inputs_at(graph, shapes)
    if graph.source.eager_module is not None:
        refuse_unrunnable(graph, "Keeping the dynamic axes dynamic")
    try:
        if graph.source.eager_module is not None:
            # Eagerly first: where the module's shapes do not hold at those sizes (a weight of the
            # example's length broadcast against a flattened batch), OneFlow 0.9's graph compiler
            # aborts the process (a failed CHECK, measured) where eager OneFlow raises.
            _run_eagerly(graph, tensors)
        return _trace_at(graph, tensors)
    except Exception as error:
        if graph.source.eager_module is None:
            log.warning(
                "could not build a second %s at other batch sizes to tell which sizes follow the batch (%s); "
                "the batch is checked by verification alone", type(graph.source.flow_graph).__name__, error_text(error),
            )
            return None
        described = {name: sorted(mapping.items()) for name, mapping in plan.symbolic_axes.items()}
        raise InvalidModelError(
            f"the dynamic axes {described} cannot stay dynamic: OneFlow cannot run or build the module for inputs "
            f"{ {name: list(shape) for name, shape in shapes.items()} } ({error_text(error)}); "
            "the module itself fixes those sizes. Export with those axes static."
        ) from error


def _run_eagerly(graph: FlowGraph, tensors: list) -> None:
    """The eager module run once on copies of ``tensors`` (its in-place ops must not change them)."""
    flow = import_oneflow()
    with flow.no_grad(), quiet_native_output():
        graph.source.run_module([t.clone() for t in tensors])


def _trace_at(graph: FlowGraph, tensors: list) -> FlowGraph:
    """The model traced again on ``tensors``, the way it was captured: a compiled graph rebuilt and
    compiled (see :func:`~flow2onnx.exporter.capture.graphs.recompile_graph`), an eager module captured again."""
    if graph.source.eager_module is None:
        return read_graph(recompile_graph(graph.source.flow_graph, tensors))
    return capture_again(graph, tensors)


def _check_sizes_follow_axes(graph, variant, plan: AxesPlan, model, registry: Registry, options: ExportOptions) -> None:
    """Convert the module compiled at other sizes of the dynamic axes; an op whose ONNX nodes change
    with those sizes has baked them in, and the model would be wrong (or fail) at other shapes."""
    described, example, other_shapes = _in_words(plan, graph)
    try:
        other = convert(variant, registry, options.opset, options.dynamic_batch, axes=plan.axes, variant=graph).model
    except LoweringError as error:
        raise LoweringError(
            f"the dynamic axes ({described}) cannot stay dynamic: with inputs {other_shapes} instead of {example}, {error}"
        ) from error
    difference = _first_size_dependent_node(model, other, graph.stable_names(), variant.stable_names())
    if difference is None:
        return
    node_name, what = difference
    op = next((op for op in graph.ops if node_name == op.name or node_name.startswith(op.name + "/")), None)
    where = f"{op.type} op {op.name!r}" if op is not None else f"ONNX node {node_name!r}"
    other_path = _other_path(graph, variant, registry, options.opset)
    if other_path:
        raise _SizesChangeOps(_branching_message(plan, graph, other_path, f"the first difference is at {where}"))
    raise LoweringError(
        f"{where} cannot keep the dynamic axes ({described}) dynamic: its lowering depends on the example's sizes "
        f"({what} differ between inputs {example} and {other_shapes}), so the model "
        "would be wrong at other sizes. Export with those axes static, or give the op a lowering that computes "
        "sizes in the graph (Shape/Gather) in a plugin."
    )


def _other_path(graph: FlowGraph, variant: FlowGraph, registry: Registry, opset: int) -> str:
    """How many ops of each type the two compilations build where the counts differ, leaving out the
    ops that patterns lower as a whole (an RNN unrolled over the sequence has as many ops as steps),
    or ``""``."""
    def counts(flow_graph):
        claimed = {op.name for group in claim_groups(flow_graph, registry, opset) for op in group.match.ops}
        return Counter(op.type for op in flow_graph.ops if op.name not in claimed)

    ours, theirs = counts(graph), counts(variant)
    differ = sorted(t for t in ours.keys() | theirs.keys() if ours[t] != theirs[t])
    if not differ:
        return ""
    described = ", ".join(f"{ours[t]} {t} at the example's sizes and {theirs[t]} at the others" for t in differ[:4])
    return f"OneFlow builds {described}" + (f" (and {len(differ) - 4} more op types differ)" if len(differ) > 4 else "")


def _in_words(plan: AxesPlan, graph: FlowGraph) -> tuple[str, dict, dict]:
    """For messages: the dynamic axes, the example's input shapes and the second compilation's."""
    described = ", ".join(f"{name}: {{{', '.join(f'{a}: {s!r}' for a, s in sorted(m.items()))}}}" for name, m in plan.symbolic_axes.items())
    example = {info.name: list(info.shape) for info in graph.inputs}
    return described, example, {name: list(shape) for name, shape in plan.variant_shapes.items()}


def _branching_message(plan: AxesPlan, graph: FlowGraph, other_path: str, detail: str) -> str:
    described, example, other_shapes = _in_words(plan, graph)
    return (
        f"the dynamic axes ({described}) cannot stay dynamic: {other_path} between inputs {example} and "
        f"{other_shapes}, so the model's Python takes another path at other sizes (e.g. it resizes a position "
        f"embedding only when the size differs from the one it was built for); {detail}. One ONNX graph cannot "
        "hold both paths: export with those axes static."
    )


def _first_size_dependent_node(model, other, stable: dict[str, str], other_stable: dict[str, str]):
    """The first node (name, what) whose type, attributes or constant inputs differ between two conversions.

    Nodes and tensors are paired by their stable names (:meth:`FlowGraph.stable_names`): OneFlow's op
    names count every op before them, so the ops after a group that a pattern lowered as a whole
    (an RNN unrolled over the sequence) have other names at other sizes.
    """
    def same(name: str) -> str:
        return stable_tensor_name(name, stable)

    def twin(name: str) -> str:
        return stable_tensor_name(name, other_stable)

    constants = {t.name: t for t in model.graph.initializer}
    other_constants = {twin(t.name): t for t in other.graph.initializer}
    other_nodes = {twin(node.name): node for node in other.graph.node}
    for node in model.graph.node:
        other_node = other_nodes.get(same(node.name))
        if other_node is None or other_node.op_type != node.op_type or [twin(n) for n in other_node.input] != [same(n) for n in node.input] or (
            [twin(n) for n in other_node.output] != [same(n) for n in node.output]
        ):
            return node.name, "the nodes it emits"
        if sorted(a.SerializeToString() for a in node.attribute) != sorted(a.SerializeToString() for a in other_node.attribute):
            return node.name, f"the attributes of its {node.op_type} node"
        for name in node.input:
            if name in constants:
                b = other_constants.get(same(name))
                a, b = numpy_helper.to_array(constants[name]), None if b is None else numpy_helper.to_array(b)
                if b is None or a.shape != b.shape or not np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"):
                    return node.name, f"the constant {name!r} of its {node.op_type} node"
    # Nodes only the other sizes emit (OneFlow's mean over an axis of 1 is a sum alone, a multiply
    # by 1/n follows it elsewhere, fuzzer 4:11333): the example's conversion lacks them.
    ours = {same(node.name) for node in model.graph.node}
    extra = next((node for node in other.graph.node if twin(node.name) not in ours), None)
    if extra is not None:
        return extra.name, f"the nodes emitted (a {extra.op_type} node at the other sizes only)"
    return None
