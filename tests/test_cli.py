"""The flow2onnx command, run as a user runs it: a separate process from the project root."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")


def run(*args, cwd=ROOT):
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


def test_plugins_lists_builtins_with_their_registrations():
    done = run("plugins")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split()[:3] == ["plugin", "version", "lowerings"]
    conv = next(line for line in lines if line.startswith("flow2onnx-conv "))
    from flow2onnx.lowering.plugin_manager import load_plugins

    expected = load_plugins().plugins["flow2onnx-conv"].lowerings
    assert conv.split()[1:4] == ["flow2onnx-conv", "0.1.0", str(expected)]
    assert any("onnxruntime" in line and "register_verifiers" in line for line in lines)
    assert any("onnxsim" in line and "register_post_passes" in line for line in lines)


def test_version_names_the_core_each_family_and_the_libraries():
    import importlib.metadata

    from flow2onnx.lowering.families import family_names

    done = run("--version")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    core = importlib.metadata.version("flow2onnx-core")
    assert lines[0].startswith(f"flow2onnx {core} (Python {sys.version.split()[0]})")
    rows = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert rows["flow2onnx-core"] == [core, "core"]
    for family in family_names():
        assert rows[family] == [importlib.metadata.version(family), "family"], family
    for library in ("oneflow", "onnx", "onnxruntime"):
        assert rows[library] == [importlib.metadata.version(library), "library"]


def test_export_verifies_and_reports(tmp_path):
    output = tmp_path / "tiny.onnx"
    done = run("export", "tests.models:tiny_cnn", "--input-shape", "2,3,16,16", "-o", str(output), "--dynamic-batch", "--opset", "13")
    assert done.returncode == 0, done.stderr
    assert output.exists()
    assert "(opset 13," in done.stdout and "all outputs match" in done.stdout
    assert "input (symbolic 0: batch)" in done.stdout
    # OneFlow's native noise stays off the user's screen.
    assert "libibverbs" not in done.stderr and "CUDA" not in done.stderr


def test_export_no_verify(tmp_path):
    output = tmp_path / "tiny.onnx"
    done = run("-q", "export", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "-o", str(output), "--no-verify")
    assert done.returncode == 0, done.stderr
    assert "not verified (--no-verify)" in done.stdout
    assert done.stderr == ""


def test_unsupported_ops_exit_with_one_message_and_no_file(tmp_path):
    output = tmp_path / "bad.onnx"
    done = run("export", "tests.models:with_unsupported_ops", "--input-shape", "2,3", "-o", str(output))
    assert done.returncode == 1
    lines = done.stderr.splitlines()
    # The list of ops comes first, then the one error line, naming the cause and the fix, ends the output.
    assert [line for line in lines if "flow2onnx: error:" in line] == lines[-1:]
    assert lines[-1].startswith("flow2onnx: error: the graph uses 2 OneFlow op types that no loaded plugin lowers")
    assert "(listed above). Nothing was written. To add a lowering, write a plugin" in lines[-1]
    assert [line.split(":")[0] for line in lines if line.startswith("  - ")] == ["  - erfc", "  - lgamma"]
    assert "Traceback" not in done.stderr
    assert os.listdir(tmp_path) == []


def test_a_mismatch_shows_the_report_then_one_error_line(tmp_path):
    output = tmp_path / "drift.onnx"
    done = run("-q", "export", "tests.models:drifting_scale", "--input-shape", "2,3", "-o", str(output), "--print-outlier")
    assert done.returncode == 1
    # The report goes where a successful export prints it, worst elements included as asked.
    assert "FAILED" in done.stdout and "MISMATCH: some outputs are out of tolerance" in done.stdout
    assert "worst elements of output" in done.stdout
    assert done.stdout.count("verification with onnxruntime") == 1
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("flow2onnx: error: the exported model's outputs differ from OneFlow's")
    assert "nothing was written" in lines[0] and "--no-verify" in lines[0]
    assert os.listdir(tmp_path) == []


def test_error_lines_put_indented_details_apart_and_the_rest_on_one_line():
    from flow2onnx.cli.main import error_lines

    assert error_lines("cannot write it; choose another path") == ([], "cannot write it; choose another path")
    details, line = error_lines("the graph uses 2 op types:\n  - a: 1 op\n  - b: 2 ops\nNothing was written. Add a plugin.")
    assert details == ["  - a: 1 op", "  - b: 2 ops"]
    assert line == "the graph uses 2 op types (listed above). Nothing was written. Add a plugin."
    # A message that quotes a multi-line error (onnx's checker, a runtime) still ends in one line.
    assert error_lines("not valid ONNX: bad node\n\n==> Context: node 'x'") == ([], "not valid ONNX: bad node ==> Context: node 'x'")
    assert error_lines("  only details\n  more") == (["  more"], "only details")


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["export", "tests.models"], 1, "is not MODULE:CALLABLE"),
        (["export", "tests.no_such_module:f"], 1, "cannot import module 'tests.no_such_module'"),
        (["export", "tests.models:nope"], 1, "has no attribute 'nope'"),
        (["export", "tests.models:not_a_model"], 1, "returned a int; it must return a oneflow.nn.Module"),
        (["export", "tests.models:tiny_cnn", "--input-shape", "1,three"], 2, "is not a shape like 1,3,224,224"),
        (["export", "tests.models:tiny_cnn", "--opset", "99"], 1, "opset 99 is not supported"),
    ],
)
def test_user_errors(args, code, message, tmp_path):
    done = run(*args, "-o", str(tmp_path / "m.onnx"))
    assert done.returncode == code
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_importing_flow2onnx_and_oneflow_is_quiet():
    code = "import flow2onnx; from flow2onnx._oneflow import import_oneflow; import_oneflow().rand(2).numpy()"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env={**os.environ, "LD_LIBRARY_PATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout == "" and done.stderr == ""


def test_output_piped_into_a_closed_reader_ends_quietly():
    done = subprocess.run(f"'{CLI}' ops | head -1", shell=True, capture_output=True, text=True, timeout=300)
    assert done.stdout.startswith("op type") and "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr


def test_capture_auto_falls_back_and_says_why(tmp_path):
    output = tmp_path / "refused.onnx"
    done = run("export", "tests.models:graph_refuses", "--input-shape", "2,4", "-o", str(output), "--capture", "auto")
    assert done.returncode == 0, done.stderr
    assert "all outputs match" in done.stdout
    assert "warning: OneFlow could not build GraphRefuses as an nn.Graph (TypeError: super(type, obj)" in done.stderr
    refused = run("export", "tests.models:graph_refuses", "--input-shape", "2,4", "-o", str(output), "--capture", "lazy")
    assert refused.returncode == 2 and "invalid choice: 'lazy'" in refused.stderr
