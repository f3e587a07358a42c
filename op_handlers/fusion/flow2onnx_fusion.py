"""Fusion: groups of OneFlow ops that ONNX has as one operator, lowered to that operator.

OneFlow 0.9 on the CPU builds ``nn.LayerNorm`` and ``F.layer_norm`` from reductions, ``var`` and
``rsqrt``, and models write LayerNorm and GELU out by hand (ConvNeXt's channels-last LayerNorm,
GPT's tanh GELU). Lowered op by op, each is ten nodes or so that neither ONNX Runtime's optimizer nor
its transformer optimizer puts back together, and that hide the attention blocks around them from
those optimizers. Three patterns recognise them:

- ``layer-norm`` (opset 17 on): ONNX ``LayerNormalization`` for the mean/variance sequence over the
  trailing axes, in OneFlow's own form (``reduce_sum``, ``scalar_mul``, ``var``, ``scalar_add``,
  ``rsqrt``, ``broadcast_sub``, ``broadcast_mul``) and in the written-out form (``(x - u).pow(2)``
  averaged, ``sqrt``, ``broadcast_div``), with the scale and bias that follow, when they are
  parameters of the normalized shape (a parameter reshaped to it, ``weight[None, None, :]``, too).
  The epsilon is the one the graph adds to the variance.
- ``attention`` (opset 13 on): ViT's self-attention, whose Q, K and V come from one packed
  projection reshaped to 5-D, permuted and sliced, written with three separate Q, K and V paths and
  the scores divided by a constant: the form ONNX Runtime's transformer optimizer fuses into its
  ``Attention`` operator (it finds none in the packed form). The weights are written as three row
  slices of the packed ones, so the file grows by no byte.
- ``gelu`` (opset 20 on): ONNX ``Gelu`` for GELU written out with ``erf``
  (``x * 0.5 * (1 + erf(x / sqrt(2)))``) or with ``tanh`` (``0.5 * x * (1 + tanh(sqrt(2 / pi) * (x
  + 0.044715 * x ** 3)))``), in any order of the products and sums. OneFlow's own ``gelu`` and
  ``fast_gelu`` ops are one op each; the activations family lowers them to ``Gelu`` at 20.

A group matches only its exact structure: every op type, attribute, operand and constant, and no
tensor inside it read outside it; anything else is left to the op-by-op lowerings. Disable the
family (``disable_plugins=["flow2onnx-fusion"]``, ``--disable-plugin flow2onnx-fusion``) to export
every op as it is.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import numpy_helper

from flow2onnx.plugin import Lowerings, PatternMatch, dims, hookimpl, is_dynamic, layer_normalization

LOWERINGS = Lowerings()


#: Dtypes ONNX Runtime's CPU provider runs LayerNormalization and Gelu in (Gelu in float64 expands
#: into an Erf it has no kernel for).
LAYER_NORM_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))
GELU_DTYPES = (np.dtype(np.float32), np.dtype(np.float16))
#: How close a constant of the graph must be to the one of the formula (relative).
CONSTANT_TOLERANCE = 1e-5


class NoMatch(Exception):
    """The ops around an anchor are not the pattern's exact structure."""


# ---- walking the graph ----


def producer_of(graph, tensor: str, op_type: str):
    """The op of type ``op_type`` that produces ``tensor``; :class:`NoMatch` when another (or none) does."""
    op = graph.producer(tensor)
    if op is None or op.type != op_type:
        raise NoMatch(f"{tensor!r} is not the output of a {op_type}")
    return op


def only_reader(graph, tensor: str):
    """The one op that reads ``tensor``, which is no graph output; ``None`` otherwise."""
    readers = graph.consumers(tensor)
    if len(readers) != 1 or tensor in graph.output_sources:
        return None
    return readers[0]


def out(op) -> str:
    """The one output tensor of ``op``."""
    (names,) = op.outputs.values()
    (name,) = names
    return name


def scalar_operand(op) -> float:
    """The scalar of a ``scalar_*`` op (its float or int operand)."""
    return float(op.attr("float_operand") if op.attr("has_float_operand") else op.attr("int_operand"))


def close(value: float, expected: float) -> bool:
    return math.isclose(value, expected, rel_tol=CONSTANT_TOLERANCE, abs_tol=0.0)


def sealed(graph, ops, last) -> bool:
    """Whether no tensor that an op of ``ops`` other than ``last`` makes is read outside ``ops`` or is a graph output."""
    names = {op.name for op in ops}
    outputs = set(graph.output_sources)
    for op in ops:
        if op is last:
            continue
        for tensors in op.outputs.values():
            for tensor in tensors:
                if tensor in outputs:
                    return False
                for reader in graph.consumers(tensor):
                    if reader.name not in names:
                        return False
    return True


def unclaimed(ops, claimed: set) -> bool:
    """Whether none of ``ops`` is in ``claimed``; if so, claim them all."""
    if any(op.name in claimed for op in ops):
        return False
    claimed.update(op.name for op in ops)
    return True


def other_operand(op, tensor: str) -> str:
    """The operand of a binary ``broadcast_*`` op that is not ``tensor``."""
    a, b = op.input("x"), op.input("y")
    if a == b or tensor not in (a, b):
        raise NoMatch(f"{op.name!r} does not read {tensor!r} once")
    return b if a == tensor else a


# ---- layer-norm ----


class LayerNormCore:
    """The normalization itself, before any scale and bias: its input, axes, epsilon, ops and last op."""

    def __init__(self, x: str, axes: list, epsilon: float, ops: list, last):
        self.x, self.axes, self.epsilon, self.ops, self.last = x, axes, epsilon, ops, last


def trailing_axes(graph, x: str, axes) -> list:
    """``axes`` of ``x`` counted from the front, when they are the last ones (one or several)."""
    rank = len(graph.tensors[x].shape)
    axes = sorted(axis + rank if axis < 0 else axis for axis in axes)
    if not axes or axes != list(range(rank - len(axes), rank)):
        raise NoMatch(f"axes {axes} are not the trailing axes of a rank-{rank} tensor")
    return axes


def mean_of(graph, tensor: str):
    """``tensor`` as ``x.mean(axes, keepdim=True)`` over trailing axes, which OneFlow builds as
    ``scalar_mul(reduce_sum(x), 1 / N)``: ``(x, axes, ops)``."""
    scale = producer_of(graph, tensor, "scalar_mul")
    total = producer_of(graph, scale.input("in"), "reduce_sum")
    x = total.input("input_tensor")
    if not total.attr("keepdims"):
        raise NoMatch("the sum drops the reduced axes")
    axes = trailing_axes(graph, x, total.attr("axis"))
    count = math.prod(graph.tensors[x].shape[axis] for axis in axes)
    if not close(scalar_operand(scale), 1.0 / count):
        raise NoMatch(f"the sum is scaled by {scalar_operand(scale)}, not 1/{count}")
    return x, axes, [total, scale]


def oneflow_form(graph, rsqrt) -> LayerNormCore:
    """OneFlow's own: ``(x - mean(x)) * rsqrt(var(x, unbiased=False) + eps)``, from its ``rsqrt``."""
    shifted = producer_of(graph, rsqrt.input("x"), "scalar_add")
    variance = producer_of(graph, shifted.input("in"), "var")
    x = variance.input("input")
    if variance.attr("unbiased") or not variance.attr("keepdim"):
        raise NoMatch("an unbiased variance, or one that drops the reduced axes")
    axes = trailing_axes(graph, x, variance.attr("dim"))
    normalize = only_reader(graph, out(rsqrt))
    if normalize is None or normalize.type != "broadcast_mul":
        raise NoMatch("the rsqrt is not read by one multiplication alone")
    center = producer_of(graph, other_operand(normalize, out(rsqrt)), "broadcast_sub")
    mean_x, mean_axes, mean_ops = mean_of(graph, center.input("y"))
    if (center.input("x"), mean_x, mean_axes) != (x, x, axes):
        raise NoMatch("the mean subtracted is not the mean of the same tensor over the same axes")
    return LayerNormCore(x, axes, scalar_operand(shifted), [*mean_ops, variance, shifted, rsqrt, center, normalize], normalize)


def written_form(graph, sqrt) -> LayerNormCore:
    """Written out, as ConvNeXt does: ``(x - u) / sqrt(((x - u) ** 2).mean() + eps)``, ``u = x.mean()``, from its ``sqrt``."""
    shifted = producer_of(graph, sqrt.input("x"), "scalar_add")
    squared, axes, variance_ops = mean_of(graph, shifted.input("in"))
    square = producer_of(graph, squared, "scalar_pow")
    if scalar_operand(square) != 2.0:
        raise NoMatch("not a square")
    first = producer_of(graph, square.input("in"), "broadcast_sub")
    divide = only_reader(graph, out(sqrt))
    if divide is None or divide.type != "broadcast_div" or divide.input("y") != out(sqrt):
        raise NoMatch("the sqrt is not read by one division, as its divisor")
    second = producer_of(graph, divide.input("x"), "broadcast_sub")
    x, mean = first.input("x"), first.input("y")
    mean_x, mean_axes, mean_ops = mean_of(graph, mean)
    if (second.input("x"), second.input("y"), mean_x, mean_axes) != (x, mean, x, axes):
        raise NoMatch("the mean subtracted is not the mean of the same tensor over the same axes")
    centers = [first] if second is first else [first, second]
    return LayerNormCore(x, axes, scalar_operand(shifted), [*mean_ops, *centers, square, *variance_ops, shifted, sqrt, divide], divide)


FORMS = {"rsqrt": oneflow_form, "sqrt": written_form}


def parameter_operand(graph, op, tensor: str, shape: tuple, variables: set):
    """The parameter that ``op`` (a ``broadcast_mul`` or ``broadcast_add`` of ``tensor``) applies,
    when it has the normalized ``shape``, possibly reshaped to broadcast (``weight[None, None, :]``):
    ``(parameter, the ops that reshape it)``; ``None`` otherwise."""
    try:
        operand = other_operand(op, tensor)
    except NoMatch:
        return None
    if graph.tensors[out(op)].shape != graph.tensors[tensor].shape:
        return None  # the parameter broadcasts the normalized tensor to a larger shape
    chain, name = [], operand
    while name not in variables:
        producer = graph.producer(name)
        if producer is None or producer.type not in ("expand_dims", "reshape") or only_reader(graph, name) is None:
            return None
        chain.append(producer)
        name = producer.input("in")
    return (name, chain) if graph.tensors[name].shape == shape else None


def affine(graph, core: LayerNormCore, variables: set):
    """The scale and bias that follow the normalization (each may be absent): ``(scale, bias, ops, last op)``."""
    shape = graph.tensors[core.x].shape[core.axes[0]:]
    found, ops, last = {}, [], core.last
    for kind, op_type in (("scale", "broadcast_mul"), ("bias", "broadcast_add")):
        reader = only_reader(graph, out(last))
        if reader is None or reader.type != op_type:
            continue
        parameter = parameter_operand(graph, reader, out(last), shape, variables)
        if parameter is not None:
            found[kind] = parameter[0]
            ops += [*parameter[1], reader]
            last = reader
    return found.get("scale"), found.get("bias"), ops, last


def match_layer_norm(graph):
    """Every LayerNorm over trailing axes, in either form, with the scale and bias that follow it."""
    variables = {info.name for info in graph.variables}
    claimed: set = set()
    for op in graph.ops:
        form = FORMS.get(op.type)
        if form is None:
            continue
        try:
            core = form(graph, op)
        except NoMatch:
            continue
        if graph.tensors[core.x].dtype not in LAYER_NORM_DTYPES:
            continue
        scale, bias, tail, last = affine(graph, core, variables)
        ops = core.ops + tail
        if sealed(graph, ops, last) and unclaimed(ops, claimed):
            data = {"x": core.x, "axis": core.axes[0], "epsilon": core.epsilon, "scale": scale, "bias": bias}
            yield PatternMatch(ops, data=data)


@LOWERINGS.pattern("layer-norm", match_layer_norm, since_opset=17)
def lower_layer_norm(ctx, match):
    """LayerNorm over trailing axes (OneFlow's mean/var/rsqrt ops, or written out with sqrt), with its scale and bias, as one LayerNormalization."""
    found = match.data
    scale = found["scale"] or ones_like_normalized(ctx, found["x"], found["axis"])
    layer_normalization(ctx, found["x"], found["axis"], scale, found["bias"], found["epsilon"], list(match.outputs[:1]) or None)


def ones_like_normalized(ctx, x: str, axis: int) -> str:
    """A scale of ones of the normalized shape (LayerNormalization needs one): a constant, or
    computed from ``Shape`` where a normalized axis is dynamic."""
    axes = list(range(axis, ctx.rank(x)))
    if not any(is_dynamic(ctx, x, a) for a in axes):
        return ctx.constant(np.ones(ctx.shape(x)[axis:], ctx.dtype(x)), "scale")
    one = numpy_helper.from_array(np.ones(1, ctx.dtype(x)), "one")
    return ctx.make_node("ConstantOfShape", [dims(ctx, x, axes)], value=one)[0]


# ---- gelu ----
#
# A written-out formula is read into a canonical term, so that the order of its products and sums
# does not matter: ("leaf", tensor), (function, term), ("prod", coefficient, factors) or ("sum",
# constant, terms), with nested products and sums flattened and their parts in a fixed order.

#: The most ops a written-out GELU takes (the tanh form with x * x * x has 9).
GELU_OPS = 12


def product(coefficient: float, factors) -> tuple:
    flat = []
    for factor in factors:
        if factor[0] == "prod":
            coefficient *= factor[1]
            flat.extend(factor[2])
        else:
            flat.append(factor)
    if len(flat) == 1 and coefficient == 1.0:
        return flat[0]
    return ("prod", coefficient, tuple(sorted(flat, key=shape_key)))


def total(constant: float, terms) -> tuple:
    flat = []
    for term in terms:
        if term[0] == "sum":
            constant += term[1]
            flat.extend(term[2])
        else:
            flat.append(term)
    if len(flat) == 1 and constant == 0.0:
        return flat[0]
    return ("sum", constant, tuple(sorted(flat, key=shape_key)))


def shape_key(term) -> str:
    """The structure of a term without its numbers and tensors: the order of parts within a product or sum."""
    if term[0] == "leaf":
        return "x"
    if term[0] in ("prod", "sum"):
        return f"{term[0]}({','.join(map(shape_key, term[2]))})"
    return f"{term[0]}({shape_key(term[1])})"


class Formula:
    """Reads the ops that compute a tensor as a term, through the ops whose output only the next reads."""

    def __init__(self, graph):
        self.graph, self.ops = graph, []

    def term(self, tensor: str, root: bool = False) -> tuple:
        op = self.graph.producer(tensor)
        if op is None or op.type not in READERS or (not root and only_reader(self.graph, tensor) is None):
            return ("leaf", tensor)
        self.ops.append(op)
        if len(self.ops) > GELU_OPS:
            raise NoMatch("more ops than a GELU has")
        return READERS[op.type](self, op)

    def power(self, op) -> tuple:
        exponent = scalar_operand(op)
        if exponent not in (2.0, 3.0):
            raise NoMatch(f"a power of {exponent}")
        return product(1.0, [self.term(op.input("in"))] * int(exponent))


READERS = {
    "scalar_mul": lambda f, op: product(scalar_operand(op), [f.term(op.input("in"))]),
    "scalar_div": lambda f, op: product(1.0 / scalar_operand(op), [f.term(op.input("in"))]),
    "broadcast_mul": lambda f, op: product(1.0, [f.term(op.input("x")), f.term(op.input("y"))]),
    "scalar_pow": Formula.power,
    "scalar_add": lambda f, op: total(scalar_operand(op), [f.term(op.input("in"))]),
    "broadcast_add": lambda f, op: total(0.0, [f.term(op.input("x")), f.term(op.input("y"))]),
    "add_n": lambda f, op: total(0.0, [f.term(name) for name in op.input_list("in")]),
    "erf": lambda f, op: ("erf", f.term(op.input("x"))),
    "tanh": lambda f, op: ("tanh", f.term(op.input("x"))),
}

X = ("leaf", "x")
#: ONNX Gelu's approximate attribute -> the formula it computes.
GELU_FORMULAS = {
    "none": product(0.5, [X, total(1.0, [("erf", product(1 / math.sqrt(2.0), [X]))])]),
    "tanh": product(0.5, [X, total(1.0, [("tanh", product(math.sqrt(2 / math.pi), [total(0.0, [X, product(0.044715, [X, X, X])])]))])]),
}


def same_term(term, formula) -> bool:
    """Whether ``term`` is ``formula``, up to the tolerance of constants (leaves are compared elsewhere)."""
    if term[0] != formula[0]:
        return False
    if term[0] == "leaf":
        return True
    if term[0] in ("prod", "sum"):
        numbers_match = close(term[1], formula[1]) if formula[1] else term[1] == 0.0
        return numbers_match and len(term[2]) == len(formula[2]) and all(map(same_term, term[2], formula[2]))
    return same_term(term[1], formula[1])


def leaves(term) -> set:
    if term[0] == "leaf":
        return {term[1]}
    parts = term[2] if term[0] in ("prod", "sum") else (term[1],)
    return set().union(*map(leaves, parts))


def match_gelu(graph):
    """Every GELU written out with erf or tanh, read from the multiplication that ends it."""
    claimed: set = set()
    for op in reversed(graph.ops):
        if op.type not in ("broadcast_mul", "scalar_mul") or op.name in claimed:
            continue
        formula = Formula(graph)
        try:
            term = formula.term(out(op), root=True)
        except NoMatch:
            continue
        inputs = leaves(term)
        approximate = next((name for name, expected in GELU_FORMULAS.items() if same_term(term, expected)), None)
        if approximate is None or len(inputs) != 1:
            continue
        (x,) = inputs
        ops = list({id(member): member for member in formula.ops}.values())
        if graph.tensors[x].dtype in GELU_DTYPES and sealed(graph, ops, op) and unclaimed(ops, claimed):
            yield PatternMatch(ops, data={"x": x, "approximate": approximate})


@LOWERINGS.pattern("gelu", match_gelu, since_opset=20)
def lower_gelu(ctx, match):
    """GELU written out with erf or tanh (any order of products and sums) as one Gelu."""
    found = match.data
    ctx.make_node("Gelu", [found["x"]], list(match.outputs[:1]) or None, approximate=found["approximate"])


# ---- attention ----
#
# ViT-style self-attention computes Q, K and V with one packed projection, reshaped to 5-D,
# permuted and sliced. ONNX Runtime's transformer optimizer fuses attention only where Q, K and V
# are three paths of their own (MatMul, Add, Reshape to [0, 0, heads, head size], Transpose) and
# the scores are divided by a constant before the Softmax. The pattern writes the same arithmetic
# in that form: the packed weight and bias become three row slices of themselves (views, written
# as weights: no copy), and the multiplication by the scale becomes a division by its reciprocal
# (exact where the head size is a power of 4, as 64 is; otherwise within one rounding).

#: Float dtypes ONNX Runtime's CPU provider runs the split form in (MatMul, Softmax, Div).
ATTENTION_DTYPES = (np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.float16))


def plain_matmul(op) -> bool:
    return not op.attr("transpose_a") and not op.attr("transpose_b") and op.attr("alpha") == 1.0


def head_of(graph, tensor: str, part: int, packed: str):
    """``tensor`` as ``packed[part]``, which OneFlow builds as a slice of index ``part`` of axis 0 and
    a reshape that drops that axis: the two ops."""
    squeeze = producer_of(graph, tensor, "reshape")
    select = producer_of(graph, squeeze.input("in"), "slice")
    shape = graph.tensors[packed].shape
    if select.input("x") != packed:
        raise NoMatch("the head is not sliced from the permuted projection")
    start, stop, step = list(select.attr("start")), list(select.attr("stop")), list(select.attr("step"))
    if (start, stop, step) != ([part] + [0] * (len(shape) - 1), [part + 1, *shape[1:]], [1] * len(shape)):
        raise NoMatch(f"the slice is not index {part} of axis 0")
    if graph.tensors[tensor].shape != shape[1:]:
        raise NoMatch("the reshape after the slice does more than drop axis 0")
    return [select, squeeze]


def match_attention(graph):
    """Every self-attention whose Q, K and V come from one packed projection, read from its Softmax."""
    variables = {info.name: info for info in graph.variables}
    claimed: set = set()
    for softmax in graph.ops:
        if softmax.type != "softmax":
            continue
        try:
            scale = producer_of(graph, softmax.input("in"), "scalar_mul")
            scores = producer_of(graph, scale.input("in"), "batch_matmul")
            apply = only_reader(graph, out(softmax))
            if apply is None or apply.type != "batch_matmul" or apply.input("a") != out(softmax):
                raise NoMatch("the probabilities are not multiplied by V")
            if not (plain_matmul(scores) and plain_matmul(apply)):
                raise NoMatch("a matmul that transposes or scales")
            flip = producer_of(graph, scores.input("b"), "transpose")
            if list(flip.attr("perm")) != [0, 1, 3, 2]:
                raise NoMatch("K is not transposed over its last two axes")
            q, k, v = scores.input("a"), flip.input("input"), apply.input("b")
            packed = producer_of(graph, producer_of(graph, q, "reshape").input("in"), "slice").input("x")
            heads = [*head_of(graph, q, 0, packed), *head_of(graph, k, 1, packed), *head_of(graph, v, 2, packed)]
            permute = producer_of(graph, packed, "transpose")
            if list(permute.attr("perm")) != [2, 0, 3, 1, 4]:
                raise NoMatch("the projection is not permuted to (3, batch, heads, tokens, head size)")
            split = producer_of(graph, permute.input("input"), "reshape")
            bias_add = producer_of(graph, split.input("in"), "broadcast_add")
            project = graph.producer(bias_add.input("x"))
            if project is None or project.type != "broadcast_matmul":
                project = graph.producer(bias_add.input("y"))
            if project is None or project.type != "broadcast_matmul":
                raise NoMatch("the packed projection is not a matmul and a bias")
            bias = other_operand(bias_add, out(project))
            weight, x = project.input("b"), project.input("a")
            if project.attr("transpose_a") or not project.attr("transpose_b") or project.attr("alpha") != 1.0:
                raise NoMatch("the projection is not x @ weight.T")
        except NoMatch:
            continue
        if weight not in variables or bias not in variables:
            continue
        x_shape, five = graph.tensors[x].shape, graph.tensors[out(split)].shape
        width = variables[weight].shape[0] // 3
        if (
            len(x_shape) != 3
            or len(five) != 5
            or five[:3] != (*x_shape[:2], 3)
            or five[3] * five[4] != width
            or variables[weight].shape != (3 * width, x_shape[2])
            or variables[bias].shape != (3 * width,)
            or graph.tensors[x].dtype not in ATTENTION_DTYPES
            or not (math.isfinite(scalar_operand(scale)) and scalar_operand(scale) != 0.0)
        ):
            continue
        ops = [project, bias_add, split, permute, *heads, flip, scores, scale, softmax, apply]
        if sealed(graph, ops, apply) and unclaimed(ops, claimed):
            data = {"x": x, "weight": weight, "bias": bias, "heads": five[3], "head_size": five[4], "scale": scalar_operand(scale)}
            yield PatternMatch(ops, name=softmax.scope, data=data)


@LOWERINGS.pattern("attention", match_attention, since_opset=13)
def lower_attention(ctx, match):
    """Self-attention with a packed Q, K, V projection, written with separate Q, K and V paths (the form ONNX Runtime fuses to Attention)."""
    found = match.data
    x, width = found["x"], found["heads"] * found["head_size"]
    dtype = ctx.dtype(x)
    per_head = ctx.constant(np.array([0, 0, found["heads"], found["head_size"]], np.int64), "heads")
    paths = []
    for part, name, perm in ((0, "q", [0, 2, 1, 3]), (1, "k", [0, 2, 3, 1]), (2, "v", [0, 2, 1, 3])):
        rows = slice(part * width, (part + 1) * width)
        weight = ctx.derived_weight(found["weight"], lambda array, rows=rows: array[rows], (width, ctx.shape(x)[2]), hint=f"{name}_weight")
        bias = ctx.derived_weight(found["bias"], lambda array, rows=rows: array[rows], (width,), hint=f"{name}_bias")
        (weight_t,) = ctx.make_node("Transpose", [weight], perm=[1, 0])
        (projected,) = ctx.make_node("MatMul", [x, weight_t])
        (biased,) = ctx.make_node("Add", [projected, bias])
        (split,) = ctx.make_node("Reshape", [biased, per_head])
        paths.append(ctx.make_node("Transpose", [split], perm=perm)[0])
    q, k_t, v = paths
    (scores,) = ctx.make_node("MatMul", [q, k_t])
    (scaled,) = ctx.make_node("Div", [scores, ctx.constant(np.array(1.0 / found["scale"], dtype), "inverse_scale")])
    (probabilities,) = ctx.make_node("Softmax", [scaled], axis=-1)
    ctx.make_node("MatMul", [probabilities, v], list(match.outputs[:1]) or None)


@hookimpl
def flow2onnx_register_patterns(register):
    LOWERINGS.register_patterns(register)
