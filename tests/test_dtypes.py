"""The dtype matrix (``flow2onnx/lowering/families/dtype_matrix.json``) holds: each recorded float
attempt is run again and must end as recorded, and the record covers every case and dtype.

The outcomes are documented in ``tests/dtype_matrix.py``. A ``verified`` attempt must also be within
each ONNX operator's type constraints; an ``onnxruntime`` one must be the runtime's gap, not ours:
the model exported without verification passes ``onnx.checker`` with full shape inference and the
type constraints, and only ONNX Runtime refuses it. The attempts run in processes of their own (see
:data:`CHUNK`); one that OneFlow fails to build as a graph in a process of its own, since OneFlow may
abort the next graph it builds.
The integer attempts are run with wide values of both signs by ``tests/test_integer_dtypes.py``;
here the record must list each of them as verified.
"""

from __future__ import annotations

import numpy as np
import pytest

from flow2onnx.lowering.families.dtypes import DTYPES, recorded, render

from . import test_integer_dtypes
from .dtype_matrix import UNTRIED, attempt_in_a_process, attempts, attempts_in_a_process

MATRIX = recorded()


def _claims(per_opset: dict) -> list[str]:
    """The opsets whose outcome claims something: not "promoted"/"absent" (nothing tried), and a
    OneFlow refusal of the eager module once (it is the same at every opset)."""
    opsets = sorted(per_opset, key=int)
    eager_refusal = [o for o in opsets if per_opset[o]["status"] == "oneflow" and "cannot build" not in per_opset[o]["detail"]]
    return [o for o in opsets if per_opset[o]["status"] not in UNTRIED and (o not in eager_refusal or o == eager_refusal[0])]


FLOAT_PARAMS = [
    (case, dtype, opset)
    for case, entry in sorted(MATRIX.items())
    if not case.startswith(("int:", "small:"))
    for dtype, per_opset in sorted(entry["outcomes"].items())
    for opset in _claims(per_opset)
]


def test_the_record_covers_every_attempt_and_nothing_else():
    """A new case, dtype or opset without a record (or a record of a case gone) fails here: rerun
    ``python -m tests.dtype_matrix``."""
    expected = {(case, dtype, str(opset)) for case, dtype, opset in attempts()}
    held = {(case, dtype, opset) for case, entry in MATRIX.items() for dtype, per in entry["outcomes"].items() for opset in per}
    assert expected - held == set(), "not recorded"
    assert held - expected == set(), "recorded, but no longer attempted"


def test_no_recorded_attempt_is_a_mismatch_or_unfinished():
    bad = {
        f"{case} {dtype} opset {opset}": outcome
        for case, entry in MATRIX.items()
        for dtype, per in entry["outcomes"].items()
        for opset, outcome in per.items()
        if outcome["status"] not in ("verified", "oneflow", "onnxruntime", "refused") + UNTRIED
    }
    assert bad == {}


def test_integer_attempts_are_the_integer_tests_and_verified():
    recorded_integers = {
        (case.split(":", 1)[1], dtype, int(opset)): outcome["status"]
        for case, entry in MATRIX.items()
        if case.startswith(("int:", "small:"))
        for dtype, per in entry["outcomes"].items()
        for opset, outcome in per.items()
    }
    tested = {(case.removeprefix("small:"), np.dtype(dtype).name, opset) for case, dtype, opset in test_integer_dtypes.PARAMS}
    assert set(recorded_integers) == tested
    assert set(recorded_integers.values()) == {"verified"}


#: Attempts per process: each export compiles an nn.Graph, and a OneFlow 0.9 process that has
#: compiled thousands of graphs aborts in a later compile (the full run aborted in test_fusion.py
#: when these ran in the test process), so they run in processes of their own.
CHUNK = 300


def _graph_refused(case: str, dtype: str, opset: str) -> bool:
    outcome = MATRIX[case]["outcomes"][dtype][opset]
    return outcome["status"] == "oneflow" and "cannot build" in outcome["detail"]


CHUNKED = [param for param in FLOAT_PARAMS if not _graph_refused(*param)]


@pytest.fixture(scope="module")
def rerun(tmp_path_factory):
    """The outcome of an attempt run again, its chunk of :data:`CHUNKED` run in a process when first asked."""
    done: dict[str, dict] = {}

    def outcome(case: str, dtype: str, opset: str) -> dict:
        key = f"{case}|{dtype}|{opset}"
        if key not in done:
            index = CHUNKED.index((case, dtype, opset)) // CHUNK
            path = tmp_path_factory.mktemp(f"chunk{index}") / "model.onnx"
            done.update(attempts_in_a_process(CHUNKED[index * CHUNK : (index + 1) * CHUNK], str(path)))
        return done[key]

    return outcome


@pytest.mark.parametrize("case, dtype, opset", FLOAT_PARAMS, ids=[f"{c}-{d}-{o}" for c, d, o in FLOAT_PARAMS])
def test_float_attempt_ends_as_recorded(case, dtype, opset, onnx_path, rerun):
    expected = MATRIX[case]["outcomes"][dtype][opset]
    if _graph_refused(case, dtype, opset):
        outcome = attempt_in_a_process(case, dtype, int(opset), str(onnx_path))  # its next graph build may abort
    else:
        outcome = dict(rerun(case, dtype, opset))
    checks = outcome.pop("checks", {})
    assert outcome == expected
    if expected["status"] in ("verified", "onnxruntime"):
        assert checks["ill_typed"] == []
    if expected["status"] == "onnxruntime":
        assert checks["runtime_refuses"], "the model is valid ONNX and ONNX Runtime runs it: the record is stale"


def test_rendered_matrix_has_a_row_per_lowered_op_type_and_a_column_per_dtype():
    lines = render({"conv2d", "relu"})
    header = next(line for line in lines if line.startswith("| OneFlow op type"))
    assert header.count("|") == len(DTYPES) + 2
    assert any(line.startswith("| `conv2d` | ✓ |") for line in lines)
