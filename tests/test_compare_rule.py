"""The comparison rule cannot be fooled by non-finite values: NaN exactly where OneFlow has NaN,
infinities equal in position and sign, finite values within tolerance.

A property test checks :func:`compare` against an element-by-element statement of the rule on
random arrays sprinkled with NaN and infinities; the example tests pin the cases that once passed
when they should not have.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from flow2onnx.exporter.verify.comparison import VerificationReport, compare

SPECIALS = [math.nan, math.inf, -math.inf]


def rule_holds(expected: np.ndarray, actual: np.ndarray, rtol: float, atol: float) -> bool:
    """The rule, one element at a time, in plain Python floats."""
    finite = [abs(float(v)) for v in expected.ravel() if math.isfinite(float(v))]
    scaled_atol = atol * max(1.0, max(finite, default=0.0))
    for want, got in zip(map(float, expected.ravel()), map(float, actual.ravel())):
        if math.isnan(want) or math.isnan(got):
            if not (math.isnan(want) and math.isnan(got)):
                return False
        elif math.isinf(want) or math.isinf(got):
            if want != got:
                return False
        elif abs(got - want) > scaled_atol + rtol * abs(want):
            return False
    return True


values = st.one_of(st.floats(-1e6, 1e6, width=32), st.sampled_from(SPECIALS))
arrays = hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=6), elements=values)


@st.composite
def pairs(draw):
    expected = draw(arrays)
    actual = expected.copy()
    for index in draw(st.lists(st.integers(0, expected.size - 1), max_size=4)):
        change = draw(st.one_of(st.sampled_from(SPECIALS), st.floats(-1e-2, 1e-2), st.floats(-1e6, 1e6)))
        flat = actual.reshape(-1)
        flat[index] = change if change in SPECIALS or math.isnan(change) else np.float32(flat[index] + change if math.isfinite(flat[index]) else change)
    return expected, actual


@settings(max_examples=400, deadline=None)
@given(pairs())
def test_compare_agrees_with_the_rule_element_by_element(pair):
    expected, actual = pair
    result = compare("y", expected, actual)
    assert result.passed == rule_holds(expected, actual, result.rtol, 1e-4)
    assert result.nan_count == int(np.isnan(expected).sum()) and result.inf_count == int(np.isinf(expected).sum())


@settings(max_examples=200, deadline=None)
@given(arrays)
def test_an_output_always_matches_itself(expected):
    assert compare("y", expected, expected.copy()).passed


@pytest.mark.parametrize(
    "expected, actual",
    [
        ([np.inf, 1.0], [-np.inf, 1.0]),  # wrong sign of an infinity
        ([np.inf, 1.0], [3.0e38, 1.0]),  # an infinity replaced by a finite value
        ([1.0, 2.0], [np.inf, 2.0]),  # a finite value replaced by an infinity
        ([np.nan, 1.0], [0.0, 1.0]),  # NaN where OneFlow has NaN: required
        ([0.0, 1.0], [np.nan, 1.0]),  # NaN where OneFlow has none
        ([np.nan, np.inf], [np.inf, np.nan]),  # same counts, other places
    ],
)
def test_non_finite_disagreements_fail(expected, actual):
    result = compare("y", np.float32(expected), np.float32(actual))
    assert not result.passed
    assert result.nonfinite_mismatches >= 1 and result.max_abs_diff == math.inf


def test_matching_non_finite_values_pass_and_are_counted():
    expected = np.float32([np.nan, np.inf, -np.inf, 1.0, 2.0])
    result = compare("y", expected, expected.copy())
    assert result.passed and (result.nan_count, result.inf_count) == (1, 2) and result.weakness is None


def test_constant_outputs_are_flagged_as_proving_little():
    expected = np.float32([0.5, 0.5, 0.5, 0.5])
    result = compare("y", expected, expected.copy())
    assert result.passed and result.weakness.startswith("is constant") and result.unverified is None
    report = VerificationReport("onnxruntime", comparisons=[result])
    assert report.weak_outputs == [result] and report.verified
    assert "output 'y' is constant" in report.to_text() and "is constant" in report.to_markdown()


@pytest.mark.parametrize("values, why", [([np.nan, np.nan, np.nan], "NaN everywhere"), ([np.inf, -np.inf, np.nan], "no finite value")])
def test_an_output_without_a_finite_value_is_not_verified_in_any_form(values, why):
    """Any lowering that gives NaN matches an output that is NaN everywhere: the report never says it matches."""
    expected = np.float32(values)
    result = compare("y", expected, expected.copy())
    assert result.passed and result.unverified == why and result.result == f"not verified: {why}"
    ok = compare("z", np.float32([1, 2]), np.float32([1, 2]))
    report = VerificationReport("onnxruntime", comparisons=[result, ok])
    assert report.passed and not report.verified and report.unverified_outputs == {"y": why}
    text, markdown, data = report.to_text(), report.to_markdown(), json.loads(report.to_json())
    y_row = next(line for line in text.splitlines() if line.startswith("y "))
    assert y_row.endswith(f"not verified: {why}") and "all outputs match" not in text
    assert text.splitlines()[-1].startswith(f"NOT VERIFIED: output 'y': {why} in every run")
    assert f"not verified: {why}" in markdown and "**Verification with onnxruntime: NOT VERIFIED" in markdown
    assert data["verified"] is False and data["passed"] is True and data["unverified_outputs"] == {"y": why}
    assert [c["result"] for c in data["comparisons"]] == [f"not verified: {why}", "ok"]


def test_an_output_checked_in_one_run_is_verified_though_nan_in_another():
    nan = compare("y", np.float32([np.nan, np.nan]), np.float32([np.nan, np.nan]), batch_size=1)
    finite = compare("y", np.float32([np.nan, 2.0]), np.float32([np.nan, 2.0]), batch_size=2)
    report = VerificationReport("onnxruntime", comparisons=[nan, finite])
    assert report.verified and report.unverified_outputs == {} and report.to_text().endswith("all outputs match")
    assert nan.result == "not verified: NaN everywhere" and finite.result == "ok"


def test_the_report_counts_nan_and_inf_per_output():
    result = compare("y", np.float32([np.nan, np.inf, 1.0]), np.float32([np.nan, np.inf, 1.0]))
    text = VerificationReport("onnxruntime", comparisons=[result]).to_text()
    assert "nan/inf" in text and "1/1" in text


def test_the_rule_needs_nothing_but_numpy():
    # benchmarks/gpu_check.py loads core/exporter/verify/comparison.py by its path on a GPU machine that has
    # NumPy and onnxruntime-gpu but neither OneFlow nor flow2onnx: the rule must stay importable there.
    import ast
    import importlib.util
    import pathlib
    import sys

    path = pathlib.Path(__file__).resolve().parents[1] / "core" / "exporter" / "verify" / "comparison.py"
    imported = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"comparison.py imports from its package (line {node.lineno})"
            imported.add(node.module.split(".")[0])
    assert imported - set(sys.stdlib_module_names) == {"numpy"}
    spec = importlib.util.spec_from_file_location("standalone_comparison", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    try:
        spec.loader.exec_module(module)
        assert not module.compare("y", np.float32([1.0, 2.0]), np.float32([1.0, 2.1])).passed
        assert module.compare("y", np.float32([1.0, 2.0]), np.float32([1.0, 2.0001])).passed
    finally:
        del sys.modules[spec.name]


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_integers_past_float64s_precision_must_match_exactly(dtype):
    # 2**53 and 2**53 + 1 are the same float64: a comparison through floats would pass them.
    expected = np.array([2**53, 2**53 + 1, 7], dtype=dtype)
    actual = np.array([2**53, 2**53, 7], dtype=dtype)
    assert not compare("output", expected, actual).passed
    assert compare("output", expected, expected.copy()).passed
