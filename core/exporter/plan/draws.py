"""The inputs verification runs on: random draws of several kinds, the edge values of each float
dtype, sizes far from the example's, and the bounds of index inputs.

The plan (:mod:`.axes`) chooses which runs there are; the verifier and the divergence finder draw
their inputs here, so that all three see the same values for the same run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...lowering.graph import FlowGraph, TensorInfo

# OneFlow argument names under which ops take indices, and the argument holding what they index.
_INDEX_ARGS = ("indices", "index", "ids")
_INDEXED_ARGS = ("in", "x", "weight", "params", "input", "embedding_table")


# Ops that pass index values through unchanged (only their layout or dtype changes): an index input
# reshaped or unsqueezed on its way to a gather still indexes what the gather indexes.
_INDEX_PRESERVING = frozenset({"expand_dims", "reshape", "squeeze", "identity", "cast", "flatten", "transpose", "unsqueeze"})


def index_bounds(graph: FlowGraph) -> dict[str, int]:
    """For integer graph inputs used as indices, the size of the axis they index (the smallest, if
    several), followed back through ops that only reshape or cast them (``x[i]`` is an
    ``expand_dims`` and a ``gather_nd``). An index out of range makes OneFlow 0.9 abort the process."""
    inputs = {info.name for info in graph.inputs if np.issubdtype(info.dtype, np.integer)}
    source = {}
    for op in graph.ops:
        if op.type in _INDEX_PRESERVING and op.inputs:
            name = next(iter(op.inputs.values()))[0]
            for names in op.outputs.values():
                for out in names:
                    source[out] = source.get(name, name)
    bounds: dict[str, int] = {}
    for op in graph.ops:
        for arg in _INDEX_ARGS:
            for name in op.inputs.get(arg, ()):
                name = source.get(name, name)
                if name not in inputs:
                    continue
                indexed = next((op.inputs[a][0] for a in _INDEXED_ARGS if op.inputs.get(a)), None)
                if indexed is None or indexed not in graph.tensors:
                    continue
                shape = graph.tensors[indexed].shape
                if op.type == "gather_nd":
                    # The last axis of the indices picks the leading axes of params: within each of them.
                    depth = graph.tensors[op.inputs[arg][0]].shape[-1] if op.inputs[arg][0] in graph.tensors else len(shape)
                    sizes = list(shape[: max(1, depth)])
                else:
                    axis = op.attrs.get("axis", op.attrs.get("dim", 0))
                    sizes = [shape[axis]] if isinstance(axis, int) and shape and -len(shape) <= axis < len(shape) else []
                for size in sizes:
                    bounds[name] = min(bounds.get(name, size), size)
    return bounds


#: How the floating-point inputs of verification runs are drawn. "unit": uniform in [0, 1);
#: "signed": uniform in [-1, 1); "magnitudes": random sign times 10**u, u uniform in [-3, 2], so
#: that one input spans five orders of magnitude of both signs; "edges": a "magnitudes" draw with
#: the dtype's edge values (:func:`edge_values`) at a quarter of the places, each at least once;
#: "finite-edges": the same without the values that spread through every sum (NaN, ±inf, the
#: largest floats), for models whose outputs those make NaN everywhere.
FLOAT_DRAWS = ("unit", "signed", "magnitudes", "edges", "finite-edges")
#: The draws whose runs are compared by the edge-value rule (see :func:`compare`'s ``edges``).
EDGE_DRAWS = ("edges", "finite-edges")


def edge_values(dtype, within: tuple[float, float] | None = None, finite: bool = False) -> np.ndarray:
    """The values of ``dtype`` where lowerings break: 0 and -0, ±1, the largest finite values, values
    just below and above the points where ``exp`` overflows (``log(max)``) and where a ``tanh`` or
    ``sigmoid`` written with ``exp(2x)`` does (half that), the smallest normal and subnormal numbers,
    ±inf and NaN. A ``log(1 + exp(x))`` softplus is right below ``log(max)`` and inf just above it.

    With ``within`` (the export's ``input_range``), only the values inside that range, and its ends:
    the user said the model is meant for those inputs only. With ``finite``, without NaN, ±inf
    and the largest finite values.
    """
    info = np.finfo(dtype)
    big, overflow = float(info.max), float(np.log(info.max))
    values = [0.0, -0.0, 1.0, -1.0] + ([] if finite else [big, -big])
    for point in (overflow, overflow / 2):
        values += [point - 0.5, point + 0.5, -(point - 0.5), -(point + 0.5)]
    values += [float(info.tiny), -float(info.tiny), float(info.smallest_subnormal), -float(info.smallest_subnormal)]
    values += [] if finite else [np.inf, -np.inf, np.nan]
    if within is not None:
        low, high = within
        values = [low, high] + [v for v in values if low <= v < high and v not in (low, high)]
    return np.array(values, dtype=np.float64)


def draw_inputs(
    inputs: Sequence[TensorInfo],
    batch_size: int | None,
    seed: int = 0,
    bounds: dict | None = None,
    shapes: dict | None = None,
    floats: str | tuple[float, float] = "unit",
    within: tuple[float, float] | None = None,
) -> list[np.ndarray]:
    """Random inputs shaped like the graph's, with dim 0 set to ``batch_size`` when given, or with
    the shapes in ``shapes`` (input name -> shape).

    Floats follow ``floats``: one of :data:`FLOAT_DRAWS`, or ``(low, high)`` for uniform in that
    range. ``within`` keeps the edge values of an "edges" draw in a range. Booleans are random
    (masks); integers used as indices are in range for the axis they index (``bounds``), other
    integers in [0, 10): edge values are for floats only (an integer division by zero would kill
    the process, not tell a wrong lowering).
    """
    rng = np.random.default_rng(seed)
    bounds = bounds or {}
    arrays = []
    for info in inputs:
        shape = list((shapes or {}).get(info.name, info.shape))
        if batch_size is not None and shape:
            shape[0] = batch_size
        if info.dtype == np.bool_:
            drawn = rng.random(shape) < 0.5
        elif np.issubdtype(info.dtype, np.integer):
            drawn = rng.integers(0, max(1, bounds.get(info.name, 10)), size=shape)
        else:
            drawn = _draw_floats(rng, shape, floats, info.dtype, within)
        # NumPy's generators give a scalar, not an array, for a 0-d shape; ONNX Runtime takes arrays only.
        arrays.append(np.asarray(drawn).astype(info.dtype))
    return arrays


def _draw_floats(rng: np.random.Generator, shape, floats, dtype=np.float32, within=None) -> np.ndarray:
    if floats in EDGE_DRAWS:
        drawn = np.asarray(_draw_floats(rng, shape, "magnitudes") if within is None else _draw_floats(rng, shape, within))
        edges = edge_values(dtype, within, finite=floats == "finite-edges")
        flat = drawn.reshape(-1)
        # A quarter of the places, and at least one place per edge value where there are enough;
        # the values in turn from a shuffled list, so that each appears before any repeats.
        count = min(flat.size, max(len(edges), flat.size // 4))
        places = rng.permutation(flat.size)[:count]
        flat[places] = np.resize(rng.permutation(edges), count)
        return drawn
    if isinstance(floats, tuple):
        low, high = floats
        return rng.uniform(low, high, size=shape)
    if floats == "unit":
        return rng.random(shape, dtype=np.float64)
    if floats == "signed":
        return rng.uniform(-1.0, 1.0, size=shape)
    if floats == "magnitudes":
        signs = np.where(rng.random(shape) < 0.5, -1.0, 1.0)
        return signs * 10.0 ** rng.uniform(-3.0, 2.0, size=shape)
    raise ValueError(f"unknown float draw {floats!r}; use one of {FLOAT_DRAWS} or (low, high)")


#: What an axis of 1 or 2 grows to at least: at 2 and 3 too much looks as it does at 1 and 2. A
#: slice counted from the end (``x[-2:]``) starts at 0 at every size up to 2 (fuzzer 4:17348), a
#: stride-2 convolution gives width 2 for inputs of 2 and 3 (4:14347), so a second compilation there
#: could not show that the file bakes them in.
SMALLEST_GROWN = 5


def alignment_step(size: int) -> int:
    """The largest power of two (up to 32, and at most a quarter of ``size``) that divides ``size``:
    the step that sizes far from it keep."""
    step = 1
    while step < 32 and size % (step * 2) == 0 and size // (step * 2) >= 4:
        step *= 2
    return step


def far_size(size: int, factor: float) -> int:
    """A size about ``factor`` times ``size`` that keeps the example's alignment.

    Models often need a spatial size divisible by their total stride; the largest power of two
    (up to 32, and at most a quarter of the size) that divides the example's size is kept as the
    step, so 224 gives 128 and 320 for factors 0.5 and 1.5, 32 gives 16 and 48, and 299 gives 150
    and 448. Never below one step, and never the example's own size where it can differ: a factor
    above 1 gives at least one step more (and 1 or 2 grow to :data:`SMALLEST_GROWN` at least), one
    below 1 at least one step less, down to one step. An axis seen at the example's size alone in every run
    would never show that a size baked into the file is wrong (a flatten of an axis of 1 written as
    a copy of another axis, found by the fuzzer).
    """
    step = alignment_step(size)
    far = max(step, int(round(size * factor / step)) * step)
    if factor > 1:
        return max(far, size + step, SMALLEST_GROWN if size <= 2 else 0)
    if factor < 1:
        return max(step, min(far, size - step))
    return far
