"""flow2onnx.testing.check_export, the plugin author's test helper, as the docs describe it."""

from __future__ import annotations

import pytest

import flow2onnx
from flow2onnx import hookimpl
from flow2onnx.testing import check_export, flow


class IdentityRelu:
    """Lowers relu to the identity: right on [0, 1), the default inputs, wrong on negative values."""

    @hookimpl
    def flow2onnx_register_lowerings(register):
        register("relu", lambda ctx, op: ctx.make_node("Identity", [op.input("x")], [op.output("y")]), override=True)


def test_one_opset_or_several(tmp_path):
    model = flow.nn.Sequential(flow.nn.Conv2d(3, 4, 3), flow.nn.ReLU())
    assert check_export(model, [(1, 3, 8, 8)], tmp_path / "a.onnx", opset=13).opset == 13
    result = check_export(model, [(1, 3, 8, 8)], tmp_path / "b.onnx", opsets=[11, 17])
    assert result.opset == 17
    assert result.op_types == {"conv2d": 1, "bias_add": 1, "relu": 1}
    assert result.lowered_by["relu"] == "flow2onnx-activations"
    assert check_export(model, [(1, 3, 8, 8)], tmp_path / "c.onnx").opset == 17


def test_opset_and_opsets_together_is_refused(tmp_path):
    with pytest.raises(TypeError, match=r"takes opset=13 or opsets=\[11, 17\], not both"):
        check_export(flow.nn.ReLU(), [(2, 3)], tmp_path / "m.onnx", opset=13, opsets=[11, 17])


def test_default_draws_catch_what_a_narrow_input_range_lets_through(tmp_path):
    """A wrong lowering that agrees with OneFlow on [0, 1) is caught by the default draws (both
    signs); an input_range is the author's statement of the domain, and only that domain is checked."""
    with pytest.raises(flow2onnx.VerificationError, match="differ from OneFlow's beyond tolerance") as caught:
        check_export(flow.nn.ReLU(), [(4, 8)], tmp_path / "m.onnx", plugins=[IdentityRelu])
    assert not caught.value.report.passed
    check_export(flow.nn.ReLU(), [(4, 8)], tmp_path / "m.onnx", plugins=[IdentityRelu], input_range=(0, 1))
