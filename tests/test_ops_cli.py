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
    assert conv == ["conv2d", "flow2onnx-conv", "11.."]
    # An operator that changed: both forms are listed.
    assert [line.split()[2] for line in lines if line.startswith("squeeze ")] == ["11..", "13.."]


def test_ops_markdown_command_prints_the_doc(capsys):
    assert main(["ops", "--markdown", "--builtin"]) == 0
    assert capsys.readouterr().out == DOC.read_text()
