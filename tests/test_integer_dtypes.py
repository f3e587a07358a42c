"""Integer and boolean tensors through every lowering whose OneFlow op takes them, compared with OneFlow exactly.

ONNX operators take integers at some opsets and not at others (``Min``/``Max`` from 12, ``Pow``
from 12, ``Sum`` never; ``Add`` takes 8-bit integers from 14, ``Pad`` booleans from 13), and
verification's own draws give integers in [0, 10) only. Each case here is exported at the lowest
and the default opset with int64 and int32 inputs (and booleans, uint8 and int8 where OneFlow takes
them); the model must pass ``onnx.checker`` with full shape inference, every node must be within
its operator's type constraints (:func:`tests.onnx_types.ill_typed_nodes`), and ONNX Runtime must
give exactly OneFlow's results on inputs of both signs spread over several orders of magnitude
(every value, for the 8-bit types, so that wrapping arithmetic is compared too).
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper

import flow2onnx

from .helpers import Lambda, export_module, flow
from .onnx_types import ill_typed_nodes

F = flow.nn.functional
I32, I64, U8, I8, BOOL = np.int32, np.int64, np.uint8, np.int8, np.bool_

#: Largest power of ten in the "wide" draws, per dtype: sums and differences of a few such values
#: stay far from overflow.
WIDE_DIGITS = {I32: 7, I64: 14}


def signed_integers(rng, shape, dtype, wide: bool) -> np.ndarray:
    """Integers of both signs: a digit in [-9, 9] times a power of ten (1 only, for ``wide=False``),
    with the extremes of that range present. Booleans and 8-bit integers take every value."""
    if np.dtype(dtype) == np.bool_:
        return rng.random(shape) < 0.5
    if np.dtype(dtype).itemsize == 1:
        info = np.iinfo(dtype)
        return rng.integers(info.min, info.max + 1, size=shape).astype(dtype)
    digits = rng.integers(-9, 10, size=shape)
    if not wide:
        return digits.astype(dtype)
    exponents = rng.integers(0, WIDE_DIGITS[dtype] + 1, size=shape)
    values = digits * np.power(10, exponents, dtype=np.int64)
    flat = values.reshape(-1)
    if flat.size >= 2:
        flat[0], flat[-1] = 9 * 10 ** WIDE_DIGITS[dtype], -9 * 10 ** WIDE_DIGITS[dtype]
    return values.astype(dtype)


def sorted_rows(x):
    return x.sort(-1)[0]


def cumulative_product_inputs(x):
    return flow.cumprod(x, 1), flow.cumprod(x, 0)


# id: (function of the inputs, input shapes, OneFlow op types the graph must contain, wide values?,
#      dtypes OneFlow takes (default both))
CASES = {
    "add_n": (lambda a, b: a + b, [(3, 4), (3, 4)], {"add_n"}, True),
    "add_n-three": (lambda a, b: a + b + a, [(3, 4), (3, 4)], {"add_n"}, True),
    "broadcast_add-sub": (lambda a, b: (a + b[0], a - b[:, :1]), [(3, 4), (3, 4)], {"broadcast_add", "broadcast_sub"}, True),
    "broadcast_mul": (lambda a, b: a * b[:, :1], [(3, 4), (3, 4)], {"broadcast_mul"}, False),
    "broadcast_fmod": (lambda a, b: flow.fmod(a, b * 0 + 7), [(3, 4), (3, 4)], {"broadcast_fmod"}, True),
    "elementwise_minimum-maximum": (lambda a, b: (flow.minimum(a, b), flow.maximum(a, b)), [(3, 4), (3, 4)], {"elementwise_minimum", "elementwise_maximum"}, True),
    "broadcast_minimum-maximum": (lambda a, b: (flow.minimum(a, b[0]), flow.maximum(a[:1], b)), [(3, 4), (3, 4)], {"broadcast_minimum", "broadcast_maximum"}, True),
    "compare": (lambda a, b: (a > b, a < b, a >= b, a <= b, a == b, a != b), [(3, 4), (3, 4)], {"broadcast_greater", "broadcast_less", "broadcast_equal"}, True),
    "scalar-add-mul-floordiv": (lambda a: (a + 3, a * -3, a // 4), [(3, 4)], {"scalar_add", "scalar_mul", "scalar_floordiv"}, True),
    "scalar_pow": (lambda a: (a ** 2, a ** 3, a ** -1), [(3, 4)], {"scalar_pow"}, False),
    "scalar_pow-wide": (lambda a: a ** 2, [(3, 4)], {"scalar_pow"}, True),
    "scalar_reverse_pow": (lambda a: 2 ** flow.abs(a), [(3, 4)], {"scalar_reverse_pow", "abs"}, False),
    "scalar-compare": (lambda a: (a > 2, a <= -3, a == 0), [(3, 4)], {"scalar_logical_greater", "scalar_logical_less_equal", "scalar_logical_equal"}, True),
    "abs": (lambda a: flow.abs(a), [(3, 4)], {"abs"}, True),
    "clip": (lambda a: (a.clamp(-3, 4), a.clamp(min=-2), a.clamp(max=5)), [(3, 4)], {"clip_by_scalar", "clip_by_scalar_min", "clip_by_scalar_max"}, True),
    "reduce_sum": (lambda a: (a.sum(1), a.sum()), [(3, 4)], {"reduce_sum"}, True),
    "reduce_max-min": (lambda a: (a.amax(1), a.amin(), a.max(0)[0]), [(3, 4)], {"reduce_max", "reduce_min"}, True),
    "reduce_prod": (lambda a: a.prod(1), [(3, 4)], {"reduce_prod"}, False),
    "reduce_any-all": (lambda a: (a.any(1), a.all(0)), [(3, 4)], {"reduce_any", "reduce_all"}, True),
    "argmax": (lambda a: (a.argmax(1), a.argmin(-1)), [(3, 5)], {"argmax"}, True),
    "top_k-sort": (lambda a: (a.topk(2, dim=-1)[0], a.sort(-1)[0], a.argsort(1, descending=True)), [(3, 5)], {"top_k", "arg_sort"}, True),
    "cumsum": (lambda a: (a.cumsum(1), a.cumsum(0)), [(3, 4)], {"cumsum"}, True),
    "cumprod": (lambda a: (flow.cumprod(a, 1), flow.cumprod(a, 0)), [(3, 4)], {"cumprod"}, False),
    "diag": (lambda a: (flow.diag(a), flow.diag(a, 1), flow.diag(a[0], -1)), [(3, 4)], {"diag"}, True),
    "searchsorted": (lambda a, b: (flow.searchsorted(a.sort(-1)[0], b), flow.searchsorted(a.sort(-1)[0], b, right=True, out_int32=True), flow.searchsorted(a[0].sort()[0], 3)), [(3, 4), (3, 5)], {"searchsorted", "searchsorted_scalar"}, False),
    "fill_": (lambda a: ((a * 2).fill_(-7), (a + 1).fill_(a.amax())), [(3, 4)], {"fill_", "fill_tensor_"}, True),
    "matmul": (lambda a, b: (flow.matmul(a, b.T), flow.matmul(a.unsqueeze(0), b.T.unsqueeze(0))), [(3, 4), (3, 4)], {"matmul", "batch_matmul"}, False),
    "concat-stack": (lambda a, b: (flow.cat([a, b], 1), flow.stack([a, b], 0)), [(3, 4), (3, 4)], {"concat", "stack"}, True),
    "gather-dim_gather": (lambda a: (flow.index_select(a, 1, flow.tensor([2, 0, 2])), flow.gather(a, 1, flow.tensor([[0, 3], [1, 1], [3, 0]]))), [(3, 4)], {"gather", "dim_gather"}, True),
    "gather_nd": (lambda a: a[:, flow.tensor([0, 2])], [(3, 4)], {"gather_nd"}, True),
    "where": (lambda a, b: flow.where(a > b, a, b[0]), [(3, 4), (3, 4)], {"where"}, True),
    "where-scalars": (lambda a: (flow.where(a > 0, a, 5), flow.where(a > 0, -2, a)), [(3, 4)], {"where_scalar_y", "where_scalar_x"}, True, [I64]),
    "masked_fill": (lambda a: a.masked_fill(a > 0, -7), [(3, 4)], {"masked_fill"}, True),
    "tril-triu": (lambda a: (flow.tril(a), flow.triu(a, 1)), [(3, 4)], {"tril", "triu"}, True),
    "layout": (lambda a: (a.T, a.reshape(2, 6), a[:, 1:3], flow.flip(a, [1]), flow.roll(a, 1, 1), a[:, :1].expand(3, 5), a.unsqueeze(0), a[:1].squeeze(0)), [(3, 4)], {"transpose", "reshape", "slice", "flip", "roll", "expand", "expand_dims", "squeeze"}, True),
    "narrow": (lambda a: a.narrow(1, 1, 2), [(3, 4)], {"narrow"}, True),
    "pad": (lambda a: (F.pad(a, (1, 2)), F.pad(a, (1, 0), value=-3)), [(3, 4)], {"pad"}, True),
    "slice_update": (lambda a, b: _slice_assign(a, b), [(3, 4), (2, 2)], {"slice_update"}, True),
    "cast": (lambda a: (a.float(), a.to(flow.int32), a.to(flow.int64), a.bool()), [(3, 4)], {"cast"}, True),
    "constant-arange": (lambda a: (a + flow.arange(4), a + flow.ones(4, dtype=a.dtype)), [(3, 4)], {"arange", "constant"}, True),
}


# Booleans and 8-bit integers: the cases whose ops OneFlow runs on them, and ONNX Runtime too
# (it has no Where, Min or Max kernel for 8- and 16-bit integers: see the last test).
SMALL_CASES = {
    "add_n": (lambda a, b: a + b, [(3, 4), (3, 4)], {"add_n"}, [BOOL, U8, I8]),
    "broadcast_add-sub-mul": (lambda a, b: (a + b[0], a - b[:, :1], a * b[1:2]), [(3, 4), (3, 4)], {"broadcast_add", "broadcast_sub", "broadcast_mul"}, [BOOL, U8, I8]),
    "scalar-add-mul-floordiv": (lambda a: (a + 3, a * 2, a // 3), [(3, 4)], {"scalar_add", "scalar_mul", "scalar_floordiv"}, [U8, I8]),
    "compare": (lambda a, b: (a > b, a < b, a >= b, a <= b, a == b, a != b), [(3, 4), (3, 4)], {"broadcast_greater", "broadcast_less", "broadcast_equal"}, [BOOL, U8, I8]),
    "reduce": (lambda a: (a.sum(1), a.amax(1), a.amin(), a.prod(0)), [(3, 4)], {"reduce_sum", "reduce_max", "reduce_min", "reduce_prod"}, [U8, I8]),
    "argmax": (lambda a: (a.argmax(1), a.argmax(0)), [(3, 4)], {"argmax"}, [BOOL, U8, I8]),
    "cumsum-cumprod": (lambda a: (a.cumsum(1), flow.cumprod(a, 0)), [(3, 4)], {"cumsum", "cumprod"}, [U8, I8]),
    "pad": (lambda a: (F.pad(a, (1, 2)), F.pad(a, (1, 0, 0, 1))), [(3, 4)], {"pad"}, [BOOL, U8, I8]),
    "fmod": (lambda a, b: flow.fmod(a, b * 0 + 7), [(3, 4), (3, 4)], {"broadcast_fmod"}, [U8, I8]),
    "boolean-selects": (lambda a, b: (flow.tril(a), flow.triu(a, 1), flow.where(b, a, b), a.masked_fill(b, True), flow.diag(a[0]), _slice_assign(a, b[:2, :2])), [(3, 4), (3, 4)], {"tril", "triu", "where", "masked_fill", "diag", "slice_update"}, [BOOL]),
    "causal-mask": (lambda a: flow.ones(4, 4, dtype=flow.bool).tril() & a[:4, :4], [(4, 4)], {"tril"}, [BOOL]),
    "layout": (lambda a, b: (flow.cat([a, b], 1), a.T, a[:, 1:3], flow.flip(a, [1]), a.reshape(2, 6), a[:, :1].expand(3, 5)), [(3, 4), (3, 4)], {"concat", "transpose", "slice", "flip", "reshape", "expand"}, [BOOL, U8, I8]),
}


def _slice_assign(a, b):
    a = a * 1
    a[1:3, 2:] = b
    return a


OPSETS = [flow2onnx.DEFAULT_SINCE_OPSET, flow2onnx.DEFAULT_OPSET]
PARAMS = [
    (case, dtype, opset)
    for case in sorted(CASES)
    for dtype in (CASES[case][4] if len(CASES[case]) > 4 else [I64, I32])
    for opset in OPSETS
] + [
    (f"small:{case}", dtype, opset)
    for case in sorted(SMALL_CASES)
    for dtype in SMALL_CASES[case][3]
    for opset in OPSETS
]


def _flat(value) -> list:
    return [item for part in value for item in _flat(part)] if isinstance(value, (tuple, list)) else [value]


@pytest.mark.parametrize("case, dtype, opset", PARAMS, ids=[f"{c}-{np.dtype(d).name}-{o}" for c, d, o in PARAMS])
def test_integer_inputs_match_oneflow_exactly(case, dtype, opset, onnx_path):
    if case.startswith("small:"):
        fn, shapes, op_types, _ = SMALL_CASES[case[len("small:"):]]
        wide = True
    else:
        fn, shapes, op_types, wide = CASES[case][:4]
    module = Lambda(lambda self, *args: fn(*args))
    result = export_module(module, shapes, onnx_path, dtypes=[dtype] * len(shapes), opset=opset)
    missing = op_types - set(result.op_types)
    assert not missing, f"the graph did not contain {missing}; the case does not test its lowering"
    assert result.report.passed, result.report.to_text(outliers=True)

    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert ill_typed_nodes(model) == []

    rng = np.random.default_rng(7)
    arrays = [signed_integers(rng, shape, dtype, wide) for shape in shapes]
    session = onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    actual = session.run(None, dict(zip(result.input_names, arrays)))
    expected = [tensor.numpy() for tensor in _flat(module(*[flow.tensor(array) for array in arrays]))]
    assert len(actual) == len(expected)
    for index, (got, want) in enumerate(zip(actual, expected)):
        assert got.dtype == want.dtype and got.shape == want.shape, f"output {index}: {got.dtype}{got.shape} vs OneFlow's {want.dtype}{want.shape}"
        if np.issubdtype(want.dtype, np.floating):
            np.testing.assert_allclose(got, want, rtol=1e-6, err_msg=f"output {index}")
        else:
            np.testing.assert_array_equal(got, want, err_msg=f"output {index}")


def _model(op_type: str, elem_type: int, opset: int, inputs: int = 2) -> onnx.ModelProto:
    names = [f"x{i}" for i in range(inputs)]
    graph = helper.make_graph(
        [helper.make_node(op_type, names, ["y"], name="node")],
        "g",
        [helper.make_tensor_value_info(name, elem_type, [2]) for name in names],
        [helper.make_tensor_value_info("y", elem_type, [2])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


@pytest.mark.parametrize(
    "op_type, elem_type, opset, ill_typed",
    [
        ("Min", TensorProto.INT64, 11, True),
        ("Min", TensorProto.INT64, 12, False),
        ("Max", TensorProto.INT32, 11, True),
        ("Sum", TensorProto.INT64, 17, True),
        ("Sum", TensorProto.FLOAT, 11, False),
        ("Add", TensorProto.INT64, 11, False),
        ("Add", TensorProto.INT8, 13, True),
        ("Add", TensorProto.INT8, 14, False),
    ],
)
def test_type_check_knows_each_opsets_constraints(op_type, elem_type, opset, ill_typed):
    problems = ill_typed_nodes(_model(op_type, elem_type, opset))
    assert bool(problems) == ill_typed, problems
    if ill_typed:
        assert f"({op_type}, opset {opset}" in problems[0] and "takes" in problems[0]


def test_type_check_finds_mixed_types_of_one_type_parameter():
    model = _model("Add", TensorProto.FLOAT, 13)
    model.graph.input[1].type.tensor_type.elem_type = TensorProto.DOUBLE
    problems = ill_typed_nodes(model)
    assert problems and "of the same type T" in problems[0]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize(
    "fn, op_type",
    [(lambda a, b: flow.where(a > b, a, b), "where"), (lambda a, b: flow.minimum(a, b), "elementwise_minimum")],
    ids=["where", "minimum"],
)
def test_small_integer_gaps_are_onnx_runtimes_not_the_models(fn, op_type, opset, onnx_path):
    """int8 Where, Min and Max are valid ONNX, but ONNX Runtime's CPU provider has no kernel for
    them: the model checks, and only the runtime refuses it (verification says so by name)."""
    with pytest.raises(flow2onnx.MissingKernelError, match=r"ONNX Runtime's CPU provider has no kernel of (Where|Min|Max) .*int8") as caught:
        export_module(Lambda(lambda self, a, b: fn(a, b)), [(3, 4), (3, 4)], onnx_path, dtypes=[I8, I8], opset=opset)
    assert caught.value.op_type == op_type
    result = export_module(Lambda(lambda self, a, b: fn(a, b)), [(3, 4), (3, 4)], onnx_path, dtypes=[I8, I8], opset=opset, verify=False)
    assert op_type in result.op_types
    model = onnx.load(str(onnx_path))
    onnx.checker.check_model(model, full_check=True)
    assert ill_typed_nodes(model) == []
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        onnxruntime.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


#: int64 values around 2**31 and 2**32, of both signs, and the small values they are compared with:
#: where ONNX Runtime's int64 Min, Max and Clip answer wrongly (helpers.MISCOMPARED).
PAST_INT32 = np.array([2**31 - 1, 2**31, 2**31 + 5, 3 * 10**9, 2**32 - 1, 2**32, 2**40,
                       -(2**31), -(2**31) - 1, -3 * 10**9, -(2**32) + 1, -(2**40), 0, 1, -1, 2, 5, -7], dtype=np.int64)


@pytest.mark.parametrize("opset", [11, 12, flow2onnx.DEFAULT_OPSET])
@pytest.mark.parametrize(
    "name, fn",
    [
        ("minimum", lambda m, x, y: flow.minimum(x, y)),
        ("maximum", lambda m, x, y: flow.maximum(x, y)),
        ("clamp", lambda m, x, y: flow.clamp(x, -1, 2) + y * 0),
        ("clamp_min", lambda m, x, y: flow.clamp(x, min=-1) + y * 0),
        ("clamp_max", lambda m, x, y: flow.clamp(x, max=2) + y * 0),
    ],
)
def test_int64_extremes_past_32_bits_are_onnx_runtimes_own_answers_no_more(name, fn, opset, tmp_path):
    # Fuzzer 5:5288: a clamp of x + y verified (verification draws integers in [0, 10)) and then
    # gave 2147483648 for clamp(2147483648, -1, 2), through ONNX Runtime's int64 Clip.
    model = Lambda(fn).eval()
    example = [flow.tensor(np.arange(6, dtype=np.int64).reshape(2, 3)), flow.tensor(np.ones((2, 3), np.int64))]
    path = tmp_path / f"{name}{opset}.onnx"
    flow2onnx.export(model, example, str(path), opset=opset, dynamic_axes={"input_0": {0: "n"}, "input_1": {0: "n"}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = PAST_INT32.reshape(6, 3)
    y = np.roll(PAST_INT32, 7).reshape(6, 3)
    want = model(flow.tensor(x), flow.tensor(y)).numpy()
    (got,) = session.run(None, {"input_0": x, "input_1": y})
    np.testing.assert_array_equal(got, want)
