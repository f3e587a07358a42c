"""The plan step: which axes of the inputs stay symbolic, and the runs the model is verified with.

The options name the dynamic axes; here they are checked against the graph's inputs, and the
verification runs are chosen. The first run is always the user's own example inputs (when the
export was given them). Then come random runs whose floats cover both signs and several orders of
magnitude (:data:`~flow2onnx.exporter.verification.FLOAT_DRAWS`), or the ``input_range`` asked for.
The last run puts each float dtype's edge values among the inputs (zeros of both signs, the largest
finite values, ``exp``'s overflow points, subnormals, ±inf, NaN: :func:`~flow2onnx.exporter.
verification.edge_values`), where lowerings such as ``log(1 + exp(x))`` break and random draws
never reach.
With dynamic axes, the random runs are at sizes far from the example's: a batch B at 1 (2 when B is
1) and 2B + 3, another axis of size S at about S/2 and 3S/2, keeping S's power-of-two alignment
(:func:`~flow2onnx.exporter.verification.far_size`), since a size baked into the model can pass
near the example and fail far from it. The eager module is compiled a second time at the larger
far sizes, to tell which values of the graph follow the axes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ..._oneflow import error_text
from ...errors import InvalidModelError
from ...lowering.graph import FlowGraph
from ..capture import capture_again
from ..capture.graphs import empty_aborting_op, flow_inputs
from ..options import ExportOptions
from .draws import EDGE_DRAWS, alignment_step, draw_inputs, far_size, index_bounds

log = logging.getLogger("flow2onnx")

#: The symbol of dim 0 under ``dynamic_batch``.
BATCH_DIM = "batch"

@dataclass(frozen=True)
class VerificationRun:
    """One verification run: the input shapes, and where its inputs come from."""

    #: The batch size, when the batch is dynamic (the report's "batch" column).
    batch: int | None
    #: Input name -> shape, for the inputs whose shape differs from the example's.
    shapes: Mapping[str, tuple[int, ...]]
    #: "example" (the user's inputs), a float draw of ``draw_inputs`` or a ``(low, high)`` range.
    draw: str | tuple[float, float]
    #: The arrays of an "example" run.
    arrays: tuple[np.ndarray, ...] | None = None
    #: Every dynamic axis at 1: where a lowering that follows whether an axis is 1 (squeeze,
    #: broadcasting, flatten, size-1 reductions) goes wrong. Skipped, and said so, where OneFlow
    #: itself cannot run the model at that size.
    ones: bool = False

    @property
    def label(self) -> str:
        if self.draw == "example":
            return "example inputs"
        return f"random inputs ({_draw_text(self.draw)}{', every dynamic axis 1' if self.ones else ''})"

    @property
    def at_edges(self) -> bool:
        """Whether this run's floats hold edge values (compared by the edge-value rule)."""
        return self.draw in EDGE_DRAWS

    @property
    def inputs(self) -> str:
        """The report's "inputs" column: where this run's inputs come from, in a word or two."""
        if self.draw == "example":
            return "example"
        if self.ones:
            return "axes at 1"
        if self.at_edges:
            return "edge values" if self.draw == "edges" else "finite edges"
        return (f"[{self.draw[0]:g}, {self.draw[1]:g})" if isinstance(self.draw, tuple) else self.draw)


@dataclass(frozen=True)
class AxesPlan:
    """The plan step's value."""

    #: Input name -> {axis: symbol}, for every input (an empty mapping: all its axes are static).
    axes: Mapping[str, Mapping[int, str]]
    #: The verification runs, the example's first.
    runs: tuple[VerificationRun, ...]
    #: The shapes at which the eager module is compiled a second time, to tell which sizes follow the
    #: dynamic axes; ``None`` when there are none, or no eager module to compile again.
    variant_shapes: Mapping[str, tuple[int, ...]] | None

    @property
    def symbolic_axes(self) -> dict[str, dict[int, str]]:
        """The inputs that have symbolic axes, with them (what the export's result reports)."""
        return {name: dict(mapping) for name, mapping in self.axes.items() if mapping}

    @property
    def batch_sizes(self) -> list:
        """The batch size of each run (``None`` entries when the batch is static)."""
        return [run.batch for run in self.runs]


def dynamic_axes_of(graph: FlowGraph, dynamic_batch: bool, dynamic_axes) -> dict[str, dict[int, str]]:
    """The dynamic axes of each input: ``dynamic_axes`` plus dim 0 named ``batch`` under ``dynamic_batch``."""
    axes: dict[str, dict[int, str]] = {name: dict(mapping) for name, mapping in (dynamic_axes or {}).items()}
    if dynamic_batch:
        for info in graph.inputs:
            axes.setdefault(info.name, {}).setdefault(0, BATCH_DIM)
    return axes



def plan_axes(graph: FlowGraph, options: ExportOptions, examples: Sequence[np.ndarray] | None = None) -> AxesPlan:
    """Check the requested dynamic axes against ``graph`` and choose the verification runs."""
    if options.dynamic_batch:
        _check_dynamic_batch(graph)
    _check_dynamic_axes(graph, options.dynamic_axes)
    axes = dynamic_axes_of(graph, options.dynamic_batch, options.dynamic_axes)
    runs = _runs(graph, axes, options, examples)
    variant_shapes = None
    # An eager module is compiled again; so is a compiled graph, as a new graph of its class (its
    # dynamic axes can only be the batch, see _check_dynamic_axes).
    if any(axes.values()) and (graph.source.eager_module is not None or graph.source.flow_graph is not None):
        variant_shapes = _variant_shapes(graph, axes, runs)
    return AxesPlan(axes=axes, runs=tuple(runs), variant_shapes=variant_shapes)


def _runs(graph: FlowGraph, axes: Mapping, options: ExportOptions, examples) -> list[VerificationRun]:
    draws = [options.input_range] * 2 if options.input_range is not None else ["signed", "magnitudes"]
    example_batch = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
    dynamic = any(axes.values())
    batched = any(0 in mapping for mapping in axes.values())
    # Without the user's examples the first run is drawn at the example's shapes, named here: the
    # graph lowered may be a variant traced at other sizes (a dynamic axis of size 1), whose own
    # shapes would otherwise be drawn under the example's label.
    first = VerificationRun(example_batch if batched else None, {}, "example", tuple(examples)) if examples is not None else (
        VerificationRun(example_batch if batched else None, {info.name: tuple(info.shape) for info in graph.inputs} if dynamic else {}, "unit")
    )
    # Last, a run at the example's shapes with edge values among the floats (when there are floats).
    edge_draw = "edges" if all(op.type in ELEMENTWISE for op in graph.ops) else "finite-edges"
    edges = [VerificationRun(first.batch, {} if not dynamic else {info.name: tuple(info.shape) for info in graph.inputs}, edge_draw)]
    if not any(np.dtype(info.dtype).kind == "f" for info in graph.inputs):
        edges = []
    if not dynamic:
        return [first] + [VerificationRun(None, {}, draw) for draw in draws] + edges
    if options.verify_batch_sizes:
        sizes = [(batch, (0.5, 1.5)[k % 2]) for k, batch in enumerate(options.verify_batch_sizes)]
    else:
        sizes = [(1 if example_batch != 1 else 2, 0.5), (2 * (example_batch or 1) + 3, 1.5)]
    runs = [first]
    order = {key: index for index, key in enumerate((info.name, axis) for info in graph.inputs for axis in sorted(axes.get(info.name, {})) if axis)}
    for k, (batch, factor) in enumerate(sizes):
        shapes = shapes_by_symbol(graph, axes, _distinct_sizes(batch, factor, order) if factor > 1 else (
            lambda info, axis: batch if axis == 0 else _far(info, axis, factor, order)
        ))
        runs.append(VerificationRun(batch if batched else None, shapes, draws[k % 2]))
    # Each dynamic axis must be seen at 1 and at another size: the runs above give the batch 1 but
    # keep the other axes near the example's sizes, so one more run puts every dynamic axis at 1.
    if any(info.shape[axis] != 1 for info in graph.inputs for axis in axes.get(info.name, {}) if axis):
        ones = shapes_by_symbol(graph, axes, lambda info, axis: 1)
        runs.append(VerificationRun(1 if batched else None, ones, draws[0], ones=True))
    return runs + edges


#: Ops that read float values as positions (sampling grids, offsets, boxes).
POSITION_OPS = frozenset({"deform_conv2d", "grid_sample", "roi_align"})
#: Ops whose values are random draws: what they and every op after them compute differs from run to
#: run, so verification compares it by its statistics (see ``verify.comparison.compare``).
RANDOM_OPS = frozenset({"normal", "uniform", "uniform_int", "exponential", "multinomial_with_replacement", "bernoulli", "randperm", "random_mask_like"})
#: Ops whose values are whatever memory held (``flow.empty``): nothing computed from them is judged.
UNSPECIFIED_OPS = frozenset({"empty"})

#: The ops that compute each output element from the input elements at its own position (after
#: broadcasting), or only move elements: there NaN, ±inf and the largest floats have one IEEE
#: answer that OneFlow and ONNX share. Where any other op reads them, they reach its sums and
#: selections, whose answer then depends on the order of the arithmetic (OneFlow's softmax of a
#: row holding inf is 0 beside one NaN, ONNX's is NaN; a sum of the largest floats overflows in
#: one order and not another), or turn into positions that OneFlow 0.9's CPU kernels read out of
#: bounds (``deform_conv2d``'s offsets killed the process with SIGSEGV, measured). Those graphs get
#: the finite edge values only. Ops of other plugins are not listed: they get the finite ones too.
#: Nor are ``>`` and ``>=`` of two tensors: OneFlow 0.9's float32 kernel for two tensors of one
#: shape says ``nan > 1`` and ``1 >= nan`` are true, its float64 and broadcasting kernels say false
#: (measured), so there is no one answer at NaN to match.
ELEMENTWISE = frozenset(
    """
    abs acos acosh add_n asin asinh atan atan2 atanh bias_add ceil clip_by_scalar clip_by_scalar_max
    clip_by_scalar_min cos cosh elementwise_maximum elementwise_minimum erf erfinv exp expm1 floor
    floordiv isfinite isinf isnan log log10 log1p log2 logical_not negative pow reciprocal
    reciprocal_no_nan round rsqrt sign sin sinh sqrt square tan trunc
    broadcast_add broadcast_div broadcast_equal broadcast_fmod
    broadcast_isclose_eq_nan broadcast_isclose_neq_nan broadcast_less broadcast_less_equal
    broadcast_logical_and broadcast_logical_or broadcast_logical_xor broadcast_maximum broadcast_minimum
    broadcast_mul broadcast_not_equal broadcast_pow broadcast_sub
    scalar_add scalar_div scalar_floordiv scalar_fmod scalar_logical_and scalar_logical_equal
    scalar_logical_greater scalar_logical_greater_equal scalar_logical_less scalar_logical_less_equal
    scalar_logical_not_equal scalar_logical_or scalar_logical_xor scalar_mul scalar_pow scalar_reverse_pow
    celu elu fast_gelu gelu hardshrink hardsigmoid hardswish hardtanh leaky_relu log_sigmoid mish
    quick_gelu relu selu sigmoid silu softplus softshrink softsign tanh threshold
    where where_scalar_x where_scalar_y where_scalar_xy masked_fill
    broadcast_like concat expand expand_dims flip identity narrow reshape slice squeeze stack transpose
    """.split()
)


def shapes_by_symbol(graph: FlowGraph, axes: Mapping, size_of) -> dict[str, tuple[int, ...]]:
    """Input shapes whose dynamic axes take ``size_of(info, axis)``, once per symbol: the first axis
    that carries a symbol (inputs in order, axes in order) decides its size, and every axis with the
    same symbol takes it too, as an RNN's sequence and initial state share the batch."""
    chosen: dict[str, int] = {}
    for info in graph.inputs:
        for axis, symbol in sorted(axes.get(info.name, {}).items()):
            if symbol not in chosen:
                chosen[symbol] = size_of(info, axis)
    return {
        info.name: tuple(chosen[axes[info.name][axis]] if axis in axes.get(info.name, {}) else size for axis, size in enumerate(info.shape))
        for info in graph.inputs
    }


def _variant_shapes(graph: FlowGraph, axes: Mapping, runs: Sequence[VerificationRun]) -> dict:
    """The shapes of the last random run that changes every dynamic axis and sets none of them to 1
    (else the last random run). A second compilation at a size equal to the example's along some
    axis could not show that a value follows that axis, and at size 1 broadcasting makes ops take
    other forms than at any other size."""
    example = {info.name: tuple(info.shape) for info in graph.inputs}

    def telling(run: VerificationRun) -> bool:
        return all(
            run.shapes[name][axis] not in (example[name][axis], 1) for name, mapping in axes.items() for axis in mapping
        )

    random_runs = [run for run in runs if run.draw != "example" and not run.at_edges and not run.ones]
    chosen = next((run for run in reversed(random_runs) if telling(run)), random_runs[-1])
    return dict(chosen.shapes)


# Each non-batch dynamic axis grows by its own factor, so that two axes of the same example size (a
# square image) differ at the larger far sizes, where the module is compiled a second time: a value
# that follows one of them can then be told from one that follows the other, and a model that
# needs them equal is found out.
_SPREAD = (1.0, 0.8, 1.15, 0.9)


def _distinct_sizes(batch: int, factor: float, order: Mapping):
    """Far sizes for the larger run, where the module is compiled a second time, one per symbol and
    each a size no other symbol has: a value that follows one axis is then told from one that
    follows another. Small examples need it: axes of 1 all grow to 2, and a mean over one of them,
    divided by 1/2, could not say which (fuzzer 4:11333: the file divided by the wrong one). Nor
    may two axes grow by the same ratio, or by inverse ones (see :func:`telling_ratio`). A size
    taken is moved up by the axis's alignment step; the batch keeps its size."""
    used: set[int] = set()
    ratios: list[float] = []

    def size_of(info, axis: int) -> int:
        example = info.shape[axis]
        if axis == 0:
            size = batch
        else:
            size = telling_size(_far(info, axis, factor, order), alignment_step(example), example, used, ratios)
        used.add(size)
        ratios.append(size / example)
        return size

    return size_of


def telling_size(size: int, step: int, base: int, used, ratios: Sequence[float]) -> int:
    """The first of ``size``, ``size + step``, ... that no other symbol has (``used``) and that
    grows from ``base`` by a ratio telling it from the ``ratios`` of the others (:func:`telling_ratio`)."""
    while size in used or not telling_ratio(size / base, ratios):
        size += step
    return size


def telling_ratio(ratio: float, others: Sequence[float]) -> bool:
    """Whether an axis that grows by ``ratio`` between two compilations can be told from axes that
    grow by ``others``: a value proportional to one axis (or to its inverse, a mean's 1/n) has the
    same two values as one proportional to another axis of the same ratio (or of its inverse)."""
    return all(abs(ratio - other) > 1e-9 and abs(ratio * other - 1) > 1e-9 for other in others)


def _far(info, axis: int, factor: float, order: Mapping) -> int:
    spread = _SPREAD[order[(info.name, axis)] % len(_SPREAD)] if factor > 1 else 1.0
    return far_size(info.shape[axis], factor * spread)


def _draw_text(draw) -> str:
    if isinstance(draw, tuple):
        return f"uniform in [{draw[0]:g}, {draw[1]:g})"
    return {
        "unit": "uniform in [0, 1)", "signed": "uniform in [-1, 1)", "magnitudes": "both signs, 1e-3 to 1e2",
        "edges": "both signs, 1e-3 to 1e2, with 0, ±1, the largest floats, exp's overflow points, subnormals, ±inf and NaN",
        "finite-edges": "both signs, 1e-3 to 1e2, with 0, ±1, exp's overflow points and subnormals",
    }[draw]


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
    sizes: dict[str, tuple[int, str]] = {}
    for name, mapping in dynamic_axes.items():
        if name not in names:
            raise InvalidModelError(f"dynamic_axes names input {name!r}, but the model's inputs are {', '.join(names) or 'none'}")
        rank = len(names[name].shape)
        for axis, symbol in mapping.items():
            if not isinstance(axis, int) or not 0 <= axis < rank:
                raise InvalidModelError(f"dynamic_axes[{name!r}] has axis {axis!r}; input {name!r} has {rank} axes (0 to {rank - 1})")
            if not isinstance(symbol, str) or not symbol:
                raise InvalidModelError(f"dynamic_axes[{name!r}][{axis}] must be a symbol name like 'height', not {symbol!r}")
            size, where = sizes.setdefault(symbol, (names[name].shape[axis], f"{name}[{axis}]"))
            if size != names[name].shape[axis]:
                raise InvalidModelError(
                    f"dynamic_axes gives the symbol {symbol!r} to {where}, of size {size}, and to {name}[{axis}], of size "
                    f"{names[name].shape[axis]}: a symbol is one size at run time; give those axes different symbols"
                )
        if graph.source.eager_module is None and any(axis != 0 for axis in mapping):
            raise InvalidModelError(
                f"dynamic axes other than dim 0 ({name!r}: {sorted(a for a in mapping if a)}) need the eager module, to check "
                "and verify the model at other sizes: export the nn.Module with example_inputs rather than a compiled graph"
            )


def settle_sizes(graph: FlowGraph, plan: AxesPlan) -> AxesPlan:
    """Make sure the module can run at the plan's smaller far sizes; move them up when it cannot.

    Some models cannot run below a size (DLA-34's final 7 x 7 pooling leaves nothing of a 128 x 128
    input, and OneFlow then aborts the whole process in a kernel). Compiling a graph infers its
    shapes without running a kernel, so the module is compiled at the smaller sizes first; when that
    fails, or gives an empty output, sizes at 3/4 and then 5/4 of the example are tried, and the
    export warns which sizes the model could not take. Only eager modules with dynamic axes other
    than the batch are probed; the larger sizes are compiled anyway, for the second compilation.
    """
    spatial = any(axis for mapping in plan.axes.values() for axis in mapping)
    if graph.source.eager_module is None or not spatial or len(plan.runs) < 2:
        return plan
    small = plan.runs[1]
    # Dim 0 keeps the small run's size first; then it moves too, for a model whose dim 0 is not a
    # batch (x[1 : x.size(0) - 1] is empty at the small run's size of every other axis).
    for factor, with_dim0 in ((None, False), (0.75, False), (1.25, False), (0.75, True), (1.25, True)):
        shapes = dict(small.shapes) if factor is None else shapes_by_symbol(
            graph, plan.axes,
            lambda info, axis: far_size(info.shape[axis], factor) if axis or with_dim0 else small.shapes[info.name][axis],
        )
        why = _cannot_run_at(graph, shapes)
        if why is None:
            break
        log.warning("the model cannot run at %s (%s)", {n: list(s) for n, s in shapes.items()}, why)
    else:
        raise InvalidModelError(
            f"the dynamic axes {plan.symbolic_axes} cannot stay dynamic: the model runs at none of the sizes tried around "
            f"the example's ({why}); export with those axes static"
        )
    if shapes == dict(small.shapes):
        return plan
    runs = list(plan.runs)
    runs[1] = VerificationRun(small.batch, shapes, small.draw)
    return AxesPlan(plan.axes, tuple(runs), plan.variant_shapes)


def _cannot_run_at(graph: FlowGraph, shapes: Mapping) -> str | None:
    """Why the module cannot run at ``shapes`` (compiled, not run), or ``None`` when it can."""
    try:
        probe = capture_again(graph, inputs_at(graph, shapes))
    except Exception as error:
        return f"OneFlow cannot build it there: {error_text(error)}"
    for info, example in zip(probe.outputs, graph.outputs):
        if 0 in info.shape and 0 not in example.shape:
            return f"output {info.name!r} would be empty, {list(info.shape)}"
    empty = empty_aborting_op(probe)
    if empty is not None:  # OneFlow would abort the process running it there
        return f"OneFlow 0.9 aborts on an empty tensor there: {empty}"
    return None


def inputs_at(graph: FlowGraph, shapes: Mapping) -> list:
    """OneFlow tensors of the given shapes for compiling the model again (index inputs in range)."""
    return flow_inputs(graph, draw_inputs(graph.inputs, None, seed=7, bounds=index_bounds(graph), shapes=shapes))
