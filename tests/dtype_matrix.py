"""The dtype matrix: each lowering's numerical cases run in every dtype, with what happened recorded.

The float cases of ``tests/test_lowerings.py`` run again with the module and its inputs in float64
and float16 (and each integer dtype and bool, where most come out ``promoted``), and the integer cases of ``tests/test_integer_dtypes.py`` in each integer dtype they
list, each at the lowest opset its op types allow and at the default. One attempt ends in one of:

- ``verified``: exported, and ONNX Runtime matched OneFlow on every output;
- ``oneflow``: OneFlow itself has no CPU kernel in that dtype (its own error, ``op_type`` the op it
  names), so there is nothing to compare with;
- ``oneflow-abort``: OneFlow runs the module eagerly but aborts the process when it builds the graph;
- ``onnxruntime``: the exported model is valid ONNX, within each operator's type constraints, but
  ONNX Runtime's CPU provider has no kernel for one of its operators in that dtype (``detail`` names
  it, ``op_type`` the OneFlow op type it was lowered from);
- ``refused``: flow2onnx refuses the op in that dtype, saying why (``detail``);
- ``promoted``: the case itself computes the op in another dtype (a float32 constant promotes a
  float16 input), so it tests nothing of this dtype; the matrix leaves the cell empty;
- ``absent``: the case's graph in that dtype lacks the op (a cast to the dtype it already has);
- ``mismatch``: verification failed; ``failed``: the export failed otherwise (``detail`` says how).
  The matrix records them, and the tests fail on them.

``python -m tests.dtype_matrix`` runs every attempt and writes
``flow2onnx/lowering/families/dtype_matrix.json``; ``tests/test_dtypes.py`` runs each attempt again
and fails where the outcome differs from the record, and ``docs/supported_ops.md`` renders the record
per op type. Attempts run in a worker process that is restarted where OneFlow aborts.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile

import numpy as np
import onnx

from flow2onnx.lowering.families.dtypes import MATRIX_PATH

FLOATS = ("float64", "float16")
#: The dtypes the float cases are also tried in: an op that takes integers is tested in them too
#: (most float cases compute in floats whatever their input, and come out "promoted").
INTEGERS = ("int64", "int32", "int8", "uint8", "bool")
#: Outcomes that claim nothing of the lowering (the dtype was not tried): not run again by the tests.
UNTRIED = ("promoted", "absent")


def _one_op_cases() -> dict:
    """Cases of one op each, for the op types whose own case also holds an op that OneFlow or ONNX
    Runtime lacks a kernel for in float64 or float16 (``unary-trig`` stops at Tan in float64): each
    input spread over the op's domain, computed in the input's dtype."""
    from .helpers import Lambda, flow

    F = flow.nn.functional

    def unary(fn, scale=4.0, shift=-2.0, shape=(2, 5)):
        return (lambda: Lambda(lambda self, x: fn(x * scale + shift)), [shape])

    def binary(fn, shapes):
        return (lambda: Lambda(lambda self, x, y: fn(x * 4 - 2, y * 4 - 2)), shapes)

    found = {
        "acos": unary(flow.acos, 1.8, -0.9), "asin": unary(flow.asin, 1.8, -0.9), "atan": unary(flow.atan),
        "acosh": unary(flow.acosh, 3.0, 1.0), "asinh": unary(flow.asinh), "atanh": unary(flow.atanh, 1.8, -0.9),
        "cos": unary(flow.cos), "sin": unary(flow.sin), "cosh": unary(flow.cosh), "sinh": unary(flow.sinh),
        "erf": unary(flow.erf), "expm1": unary(flow.expm1), "log1p": unary(flow.log1p, 3.0, -0.5),
        "log": unary(flow.log, 3.0, 0.1), "log10": unary(flow.log10, 3.0, 0.1), "reciprocal": unary(flow.reciprocal, 2.0, 0.5),
        "square": unary(flow.square), "floor": unary(flow.floor), "sign": unary(flow.sign), "negative": unary(flow.negative),
        "abs": unary(flow.abs), "triu": unary(lambda x: flow.triu(x, 1)),
        "clip_by_scalar_min": unary(lambda x: x.clamp(min=-0.5)), "clip_by_scalar_max": unary(lambda x: x.clamp(max=0.5)),
        "reduce_min": unary(lambda x: x.amin(1)),
        "elementwise_minimum": binary(flow.minimum, [(2, 5), (2, 5)]),
        "matrix_vector_product": binary(flow.matmul, [(3, 4), (4,)]),
        "vector_matrix_product": binary(flow.matmul, [(3,), (3, 4)]),
        "reflection_pad1d": unary(lambda x: F.pad(x, (2, 1), mode="reflect"), shape=(2, 3, 5)),
        "replication_pad1d": unary(lambda x: F.pad(x, (2, 1), mode="replicate"), shape=(2, 3, 5)),
        "upsample_linear_1d": unary(lambda x: F.interpolate(x, scale_factor=2.0, mode="linear"), shape=(1, 2, 5)),
        "upsample_trilinear_3d": unary(lambda x: F.interpolate(x, scale_factor=2.0, mode="trilinear"), shape=(1, 2, 3, 3, 3)),
    }
    return {f"one:{op_type}": (factory, shapes, {op_type}) for op_type, (factory, shapes) in found.items()}


@functools.lru_cache(maxsize=1)
def _cases():
    from . import test_integer_dtypes, test_lowerings

    floats = {
        name: case
        for name, case in test_lowerings.CASES.items()
        if len(case) < 4 or all(np.dtype(dtype) == np.float32 for dtype in case[3])
    }
    floats.update(_one_op_cases())
    integers = {
        f"int:{name}": (case[0], case[1], case[2], [np.dtype(d).name for d in (case[4] if len(case) > 4 else [np.int64, np.int32])])
        for name, case in test_integer_dtypes.CASES.items()
    }
    integers.update(
        {f"small:{name}": (case[0], case[1], case[2], [np.dtype(d).name for d in case[3]]) for name, case in test_integer_dtypes.SMALL_CASES.items()}
    )
    return floats, integers


def attempts() -> list[tuple[str, str, int]]:
    """Every (case, dtype, opset) the matrix holds, in a stable order."""
    from .test_integer_dtypes import OPSETS
    from .test_lowerings import case_opsets

    floats, integers = _cases()
    found = [(case, dtype, opset) for case in sorted(floats) for dtype in FLOATS + INTEGERS for opset in case_opsets(floats[case][2], case)]
    found += [(case, dtype, opset) for case in sorted(integers) for dtype in integers[case][3] for opset in OPSETS]
    return found


def targets(case: str) -> set[str]:
    """The OneFlow op types ``case`` is written to exercise."""
    floats, integers = _cases()
    return set((floats.get(case) or integers[case])[2])


def _module_and_inputs(case: str, dtype: str):
    from flow2onnx.testing import random_inputs

    from .helpers import Lambda, flow

    floats, integers = _cases()
    if case in floats:
        factory, shapes = floats[case][:2]
        module = factory()
        if np.issubdtype(np.dtype(dtype), np.floating):  # OneFlow converts modules to floats only
            module = module.to(getattr(flow, dtype))
    else:
        fn, shapes = integers[case][:2]
        module = Lambda(lambda self, *args: fn(*args))
    module.eval()
    return module, random_inputs(shapes, [np.dtype(dtype).type] * len(shapes))


_ORT_OP = re.compile(r"(?:implementation for|kernel for) ([\w.]+)\(")
# The node ONNX Runtime names, and the OneFlow op type in its name (``model-<op type>-<n>/...``).
_ORT_NODE = re.compile(r"node(?: with name |:)'([^']+)'")
_OWNER = re.compile(r"-([a-z0-9_]+)-\d+$")


def attempt(case: str, dtype: str, opset: int, path: str, **options) -> dict:
    """Run one attempt; the outcome as the matrix records it (and the result, when exported)."""
    import flow2onnx

    module, inputs = _module_and_inputs(case, dtype)
    try:
        module(*inputs)
    except Exception as error:  # OneFlow's own refusal, in its own words
        return {"status": "oneflow", "detail": _first_line(error), "op_type": _oneflow_op_type(str(error))}
    try:
        # Graph capture, pinned: the matrix records what the lowerings do per dtype, and where OneFlow cannot
        # build a graph in a dtype. The default capture ("auto") would capture those cells eagerly instead.
        options.setdefault("capture", "graph")
        result = flow2onnx.export(module, inputs, path, opset=opset, **options)  # tolerances by dtype
    except flow2onnx.VerificationError as error:
        return {"status": "mismatch", "detail": _first_line(error)}
    except flow2onnx.LoweringError as error:
        return {"status": "refused", "detail": _first_line(error)}
    except flow2onnx.InvalidModelError as error:
        if "OneFlow has no" not in str(error):
            raise
        return {"status": "oneflow", "detail": _first_line(error), "op_type": re.search(r"OneFlow has no (\w+)", str(error)).group(1)}
    except flow2onnx.MissingKernelError as error:
        return {"status": "onnxruntime", "detail": error.onnx_op.replace("com.microsoft.", ""), "op_type": error.op_type}
    except flow2onnx.Flow2OnnxError as error:
        found = _ORT_OP.search(str(error))
        if "NOT_IMPLEMENTED" in str(error) and found:
            node = _ORT_NODE.search(str(error))
            owner = _OWNER.search(node.group(1).split("/")[0]) if node else None
            return {"status": "onnxruntime", "detail": found.group(1).replace("com.microsoft.", ""), "op_type": owner.group(1) if owner else None}
        return {"status": "failed", "detail": f"{type(error).__name__}: {_first_line(error)}"}
    if result.report is None:  # verify=False
        return {"status": "exported", "result": result}
    missing = targets(case) - set(result.op_types)
    if missing:  # e.g. a cast to the dtype the input already has
        return {"status": "absent", "detail": f"the graph in {dtype} has no {', '.join(sorted(missing))}"}
    promoted = _computed_in_another_dtype(path, targets(case), dtype)
    if promoted:
        return {"status": "promoted", "detail": ", ".join(promoted)}
    return {"status": "verified" if result.report.passed else "mismatch", "result": result}


_FLOATS = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE, onnx.TensorProto.BFLOAT16}


def _computed_in_another_dtype(path: str, op_types: set[str], dtype: str) -> list[str]:
    """The target op types whose lowered nodes take floats, none of them in ``dtype``: the case
    promoted its inputs (a float32 constant in a float16 case) and does not test ``dtype`` for them.
    A lowered node is known by its name, the OneFlow op's name (``model-<op type>-<n>``) first."""
    model = onnx.shape_inference.infer_shapes(onnx.load(path))
    graph = model.graph
    types = {value.name: value.type.tensor_type.elem_type for value in [*graph.input, *graph.value_info, *graph.output]}
    types.update({tensor.name: tensor.data_type for tensor in graph.initializer})
    wanted = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    seen: dict[str, set[int]] = {}
    for node in graph.node:
        owner = node.name.split("/")[0]
        for op_type in op_types:
            if f"-{op_type}-" in owner:
                seen.setdefault(op_type, set()).update(types[name] for name in node.input if types.get(name) in _FLOATS)
    return sorted(op_type for op_type, found in seen.items() if found and wanted not in found)


def _oneflow_op_type(text: str) -> str | None:
    """The op type OneFlow's "Cannot find the kernel" error names, if any."""
    found = re.search(r"op_type_name: (\w+)", text)
    return found.group(1) if found else None


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return re.sub(r"\x1b\[[0-9;]*m", "", text.splitlines()[0])[:160]


PENDING, RESTART = "pending", 3


def _key(case: str, dtype: str, opset: int) -> str:
    return f"{case}|{dtype}|{opset}"


def _worker(record_path: str) -> None:
    """Run the attempts the record lacks, saving after each; mark the one under way first."""
    record = json.loads(open(record_path).read())
    folder = tempfile.mkdtemp()
    opsets_of: dict[tuple[str, str], list[int]] = {}
    for case, dtype, opset in attempts():
        opsets_of.setdefault((case, dtype), []).append(opset)
    for case, dtype, opset in attempts():
        key = _key(case, dtype, opset)
        if key in record and record[key]["status"] != PENDING:
            continue
        first = _key(case, dtype, min(opsets_of[(case, dtype)]))
        if key != first and record.get(first, {}).get("status") in UNTRIED + ("oneflow",) and "cannot build" not in record[first].get("detail", ""):
            record[key] = dict(record[first])  # decided before any opset mattered
            continue
        tries = record.get(key, {}).get("tries", 0) + 1
        if tries > 2:  # aborted twice, the second time first thing in a fresh process
            record[key] = {"status": "oneflow-abort", "detail": "OneFlow aborts the process building the graph"}
            continue
        record[key] = {"status": PENDING, "tries": tries}
        _save(record, record_path)
        outcome = attempt(case, dtype, opset, os.path.join(folder, "model.onnx"))
        outcome.pop("result", None)
        record[key] = outcome
        _save(record, record_path)
        print(f"{key:60} {outcome['status']} {outcome.get('detail', '')}", flush=True)
        if outcome["status"] == "oneflow" and "OneFlow has no" in outcome["detail"]:
            # A graph OneFlow failed to build can make its next build abort: go on in a fresh process.
            raise SystemExit(RESTART)
    _save(record, record_path)


def _save(record: dict, path: str) -> None:
    with open(path + ".tmp", "w") as stream:
        json.dump(record, stream, indent=1, sort_keys=True)
    os.replace(path + ".tmp", path)


def main(record_path: str | None = None) -> None:
    """Run every attempt, restarting the worker where OneFlow kills it, and write the matrix.

    ``record_path`` (``--record PATH``) keeps the attempts' record there, and resumes one."""
    if record_path is None:
        record_path = os.path.join(tempfile.mkdtemp(), "record.json")
    if not os.path.exists(record_path):
        _save({}, record_path)
    while True:
        code = subprocess.run([sys.executable, "-m", "tests.dtype_matrix", "--worker", record_path]).returncode
        if code == 0:
            break
        if code > 0 and code != RESTART:  # a Python error, not OneFlow killing the process: a bug to fix, not to record
            raise SystemExit(f"the worker failed (exit {code}); the partial record is in {record_path}")
    record = json.loads(open(record_path).read())
    matrix = {}
    for case, dtype, opset in attempts():
        entry = matrix.setdefault(case, {"op_types": sorted(targets(case)), "outcomes": {}})
        entry["outcomes"].setdefault(dtype, {})[str(opset)] = record[_key(case, dtype, opset)]
    _save(matrix, str(MATRIX_PATH))
    print(f"wrote {MATRIX_PATH}")


def checked_attempt(case: str, dtype: str, opset: int, path: str) -> dict:
    """:func:`attempt`, with what backs its claim under ``checks``: for a verified model, the nodes
    outside their operator's type constraints; for one ONNX Runtime cannot run, the same model
    exported without verification, checked by ``onnx.checker`` (full), its ill-typed nodes, and
    whether ONNX Runtime alone refuses it (NOT_IMPLEMENTED)."""
    import onnxruntime

    from .onnx_types import ill_typed_nodes

    found = attempt(case, dtype, opset, path)
    found.pop("result", None)
    if found["status"] == "verified":
        found["checks"] = {"ill_typed": ill_typed_nodes(onnx.load(path))}
    elif found["status"] == "onnxruntime":
        attempt(case, dtype, opset, path, verify=False)
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        try:
            onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            refused = False
        except Exception as error:  # the runtime's own refusal
            refused = "NOT_IMPLEMENTED" in str(error)
        found["checks"] = {"ill_typed": ill_typed_nodes(model), "runtime_refuses": refused}
    return found


def attempt_in_a_process(case: str, dtype: str, opset: int, path: str) -> dict:
    """:func:`attempt` in a fresh process (for graphs OneFlow fails to build: its next build may abort)."""
    return attempts_in_a_process([(case, dtype, opset)], path)[_key(case, dtype, opset)]


def attempts_in_a_process(chosen: list, path: str) -> dict:
    """:func:`attempt` for each ``(case, dtype, opset)``, in one process of their own: the outcomes by
    ``case|dtype|opset``. OneFlow refusing a kernel can leave its runtime so that a later, unrelated
    graph build aborts, so a test process must not meet those refusals itself."""
    listed = path + ".attempts.json"
    with open(listed, "w") as stream:
        json.dump([list(item) for item in chosen], stream)
    command = [sys.executable, "-m", "tests.dtype_matrix", "--many", listed, path]
    done = subprocess.run(command, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    lines = done.stdout.strip().splitlines()
    if done.returncode or not lines:
        raise AssertionError(f"the attempts' process failed (exit {done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[-1])


if __name__ == "__main__":
    if sys.argv[1:2] == ["--many"]:
        from flow2onnx._oneflow import exit_past_teardown

        outcomes = {}
        for case, dtype, opset in json.loads(open(sys.argv[2]).read()):
            outcomes[_key(case, dtype, opset)] = checked_attempt(case, dtype, int(opset), sys.argv[3])
        print(json.dumps(outcomes), flush=True)
        exit_past_teardown(0)
    if sys.argv[1:2] == ["--worker"]:
        from flow2onnx._oneflow import exit_past_teardown

        try:
            _worker(sys.argv[2])
        except SystemExit as stop:
            exit_past_teardown(int(stop.code))
        exit_past_teardown(0)
    main(sys.argv[2] if sys.argv[1:2] == ["--record"] else None)
