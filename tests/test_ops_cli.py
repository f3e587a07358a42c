"""``flow2onnx ops``: the support matrix comes from the live registry, and docs/supported_ops.md is current."""

from __future__ import annotations

import pathlib

from flow2onnx.cli import main
from flow2onnx.cli.ops import render_markdown, shipped_registry

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "supported_ops.md"


def test_supported_ops_doc_is_current():
    """Regenerate with: flow2onnx ops --builtin --markdown > docs/supported_ops.md"""
    expected = render_markdown(shipped_registry())
    assert DOC.read_text() == expected, "docs/supported_ops.md is out of date: run `flow2onnx ops --builtin --markdown > docs/supported_ops.md`"


def test_ops_command_lists_op_types_with_plugin_and_opsets(capsys):
    assert main(["ops", "--builtin"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["op", "type", "plugin", "opsets"]
    conv = next(line.split() for line in lines if line.startswith("conv2d "))
    assert conv == ["conv2d", "flow2onnx-conv", "9.."]
    # One lowering for every opset, whatever ONNX changed in Squeeze's form at 13.
    assert [line.split()[2] for line in lines if line.startswith("squeeze ")] == ["9.."]
    # Lowerings that differ are listed with the opsets each serves.
    assert [line.split()[2] for line in lines if line.startswith("layer_norm ")] == ["11..16", "17.."]
    assert [line.split()[2] for line in lines if line.startswith("broadcast_greater_equal ")] == ["11", "12.."]


def test_ops_markdown_command_prints_the_doc(capsys):
    assert main(["ops", "--markdown", "--builtin"]) == 0
    assert capsys.readouterr().out == DOC.read_text()


def test_ops_optype_with_a_model_prints_the_signature_and_who_lowers_it(capsys):
    assert main(["ops", "softshrink", "--builtin", "--model", "tests.models:uses_softshrink", "--input-shape", "2,3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "softshrink(in) -> out; alpha: float = 0.5"
    assert lines[1].strip().startswith("1 op in the model, e.g. ")
    assert lines[2].strip().startswith("lowered by flow2onnx-activations (")


def test_ops_optype_without_a_model_names_plugin_opsets_and_how_to_get_the_signature(capsys):
    assert main(["ops", "layer_norm", "--builtin"]) == 0
    lines = [line.strip() for line in capsys.readouterr().out.splitlines()]
    assert lines[0] == "layer_norm"
    assert lines[1].startswith("signature: read from a graph that uses it, with `flow2onnx ops layer_norm --model MODULE:CALLABLE")
    assert lines[2].startswith("lowered by flow2onnx-normalization (flow2onnx-normalization ") and "at opsets 11..16: lower_layer_norm" in lines[2]
    assert lines[3].endswith("at opsets 17..: lower_layer_norm_17")


def test_ops_model_lists_every_op_type_of_the_model(capsys):
    assert main(["ops", "--builtin", "--model", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8"]) == 0
    out = capsys.readouterr().out
    signatures = [line for line in out.splitlines() if line and not line.startswith(" ")]
    assert [line.split("(")[0] for line in signatures] == sorted(["adaptive_avg_pool2d", "bias_add", "broadcast_add", "conv2d", "matmul", "normalization", "relu", "reshape"])
    assert "conv2d(in, weight) -> out; data_format: str = 'channels_first', dilation_rate: list[int] = [1, 1], filters: int = 8" in out
    assert "lowered by flow2onnx-conv" in out


def test_ops_with_a_misspelt_op_type_says_so(capsys):
    assert main(["ops", "softshrnk", "--builtin"]) == 1
    assert "OneFlow has no op type 'softshrnk', and no loaded plugin lowers one; check the spelling" in capsys.readouterr().err


def test_ops_optype_the_model_lacks_lists_its_op_types(capsys):
    assert main(["ops", "relu", "--builtin", "--model", "tests.models:uses_softshrink", "--input-shape", "2,3"]) == 1
    assert "the model tests.models:uses_softshrink has no relu op; its op types are: softshrink" in capsys.readouterr().err
