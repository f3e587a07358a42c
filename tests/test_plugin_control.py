"""Plugin control: disabling and restricting plugins, overrides, custom domains, post-pass fallback, tracing."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

import flow2onnx
from flow2onnx import hookimpl
from flow2onnx.lowering.plugin_manager import BUILTIN_PLUGINS, DISABLE_ENV, ONLY_ENV, load_plugins

from .helpers import Lambda, export_module, flow
from .models import tiny_cnn, uses_inverse

CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ACTIVATIONS = "flow2onnx-activations"
VERIFIER = "flow2onnx.plugins.onnxruntime_verifier"


def relu_model():
    return Lambda(lambda self, x: flow.relu(x - 0.5))


# ---- disabling and restricting ----


def test_disabled_plugin_is_not_loaded_and_its_ops_become_unsupported(onnx_path):
    loaded = load_plugins(disable=[ACTIVATIONS])
    assert ACTIVATIONS not in loaded.plugins and "relu" not in loaded.registry.lowerings
    with pytest.raises(flow2onnx.UnsupportedOpsError, match=rf"relu: 1 op, .*; lowered by {ACTIVATIONS}, installed but not loaded \(disabled"):
        export_module(relu_model(), [(2, 3)], onnx_path, disable_plugins=[ACTIVATIONS])
    assert not onnx_path.exists()


def test_disable_through_the_environment(monkeypatch):
    monkeypatch.setenv(DISABLE_ENV, f" {ACTIVATIONS} ,flow2onnx.plugins.onnxsim_pass")
    loaded = load_plugins()
    assert ACTIVATIONS not in loaded.plugins and "onnxsim" not in loaded.registry.post_passes


def test_restrict_to_a_named_set_keeps_the_essential_plugins(monkeypatch):
    loaded = load_plugins(only=["flow2onnx-conv"])
    assert set(loaded.plugins) == {"flow2onnx-conv", VERIFIER}
    monkeypatch.setenv(ONLY_ENV, "flow2onnx-math")
    assert set(load_plugins().plugins) == {"flow2onnx-math", VERIFIER}


def test_essential_plugin_refuses_to_be_disabled():
    with pytest.raises(flow2onnx.PluginError, match=rf"plugin '{VERIFIER}' is essential and cannot be disabled: .*verify=False"):
        load_plugins(disable=[VERIFIER])


def test_unknown_plugin_name_lists_the_available_ones():
    with pytest.raises(flow2onnx.PluginError, match=r"cannot disable plugin 'flow2onnx-convv': no such plugin. Available: .*flow2onnx-conv"):
        load_plugins(disable=["flow2onnx-convv"])


def test_order_is_builtins_then_extras_in_the_order_given():
    class B:
        @hookimpl
        def flow2onnx_register_post_passes(register):
            register("b", lambda model: model)

    class A:
        @hookimpl
        def flow2onnx_register_post_passes(register):
            register("a", lambda model: model)

    loaded = load_plugins(extra_plugins=[B, A], entry_points=False)
    assert list(loaded.plugins) == list(BUILTIN_PLUGINS) + ["B", "A"]
    assert list(loaded.registry.post_passes)[-2:] == ["b", "a"]


def test_cli_disable_plugin_and_plugins_listing(tmp_path):
    done = subprocess.run(
        [CLI, "export", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "-o", str(tmp_path / "m.onnx"), "--disable-plugin", ACTIVATIONS],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 1 and "relu: 1 op" in done.stderr
    listing = subprocess.run([CLI, "plugins", "--only-plugins", "flow2onnx-conv"], capture_output=True, text=True, timeout=300)
    assert listing.returncode == 0, listing.stderr
    names = [line.split()[0] for line in listing.stdout.splitlines()[1:]]
    assert names == [VERIFIER, "flow2onnx-conv"]
    assert "(essential)" in listing.stdout


# ---- overrides ----


class SoftRelu:
    """Overrides the built-in relu with an equivalent lowering (Max(x, 0))."""

    @hookimpl
    def flow2onnx_register_lowerings(register):
        def lower(ctx, op):
            zero = ctx.constant(np.array(0, dtype=ctx.dtype(op.input("x"))), "zero")
            ctx.make_node("Max", [op.input("x"), zero], [op.output("y")])

        register("relu", lower, override=True)


def test_override_is_used_and_reported(onnx_path):
    result = export_module(relu_model(), [(2, 3)], onnx_path, plugins=[SoftRelu])
    assert result.lowered_by["relu"] == "SoftRelu"
    assert result.overrides == {"relu": f"SoftRelu overrides {ACTIVATIONS}"}
    assert result.report.passed
    assert [node.op_type for node in onnx.load(str(onnx_path)).graph.node][-1] == "Max"
    info = load_plugins(extra_plugins=[SoftRelu]).plugins["SoftRelu"]
    assert info.overrides == {"relu": (ACTIVATIONS,)}


# ---- custom domains ----


class MicrosoftGelu:
    """Lowers gelu to ONNX Runtime's com.microsoft Gelu, which ONNX Runtime implements itself."""

    @hookimpl
    def flow2onnx_register_lowerings(register):
        lower = lambda ctx, op: ctx.make_node("Gelu", [op.input("in")], [op.output("out")], domain="com.microsoft", domain_version=1)  # noqa: E731
        register("gelu", lower, override=True)


class ExampleDomain:
    @hookimpl
    def flow2onnx_register_lowerings(register):
        lower = lambda ctx, op: ctx.make_node("LGamma", [op.input("x")], [op.output("y")], domain="com.example.ops", domain_version=2)  # noqa: E731
        register("lgamma", lower)


def test_custom_domain_known_to_the_runtime_is_verified(onnx_path):
    model = Lambda(lambda self, x: flow.nn.functional.gelu(x * 4 - 2))
    result = export_module(model, [(2, 6)], onnx_path, plugins=[MicrosoftGelu])
    assert result.custom_domains == {"com.microsoft": 1}
    assert result.report.passed
    saved = onnx.load(str(onnx_path))
    assert {(d.domain, d.version) for d in saved.opset_import} == {("", flow2onnx.DEFAULT_OPSET), ("com.microsoft", 1)}
    onnx.checker.check_model(saved, full_check=True)


def test_custom_domain_without_a_runtime_library_is_exported_and_says_why_unverified(onnx_path):
    model = Lambda(lambda self, x: flow.lgamma(x * 0.5))
    result = export_module(model, [(2, 3)], onnx_path, plugins=[ExampleDomain])
    assert result.report is None
    assert result.custom_domains == {"com.example.ops": 2}
    assert "verification could not run: the model uses the custom ONNX domain 'com.example.ops'" in result.verification_skipped
    assert "ExampleDomain" in result.verification_skipped and "flow2onnx_register_runtime_libraries" in result.verification_skipped
    assert onnx_path.exists()


class ContribInverse:
    """Lowers inv to the Inverse op of onnxruntime-extensions' ai.onnx.contrib domain, with its library."""

    @hookimpl
    def flow2onnx_register_lowerings(register):
        def lower(ctx, op):
            if ctx.rank(op.input("x")) != 2:
                raise ctx.error("ai.onnx.contrib Inverse takes one 2-D matrix")
            ctx.make_node("Inverse", [op.input("x")], [op.output("y")], domain="ai.onnx.contrib", domain_version=1)

        register("inv", lower)

    @hookimpl
    def flow2onnx_register_runtime_libraries(register):
        # Found without importing onnxruntime_extensions, whose import sets
        # PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION=python for the whole process and its children,
        # which OneFlow cannot import under.
        import glob
        import importlib.util

        package = importlib.util.find_spec("onnxruntime_extensions").submodule_search_locations[0]
        (library,) = glob.glob(os.path.join(package, "_extensions_pydll*.so"))
        register("ai.onnx.contrib", library)


def test_custom_domain_with_a_runtime_library_is_verified(onnx_path):
    result = export_module(uses_inverse(), [(3, 3)], onnx_path, plugins=[ContribInverse])
    assert result.custom_domains == {"ai.onnx.contrib": 1}
    assert result.verification_skipped is None
    assert result.report.passed


def test_runtime_library_registration_is_validated(tmp_path):
    class BadLibrary:
        @hookimpl
        def flow2onnx_register_runtime_libraries(register):
            register("com.example.ops", str(tmp_path / "missing.so"))

    with pytest.raises(flow2onnx.PluginError, match=r"plugin 'BadLibrary' \(passed to export\) registered runtime library .*missing.so.* not a file"):
        load_plugins(extra_plugins=[BadLibrary], entry_points=False)


# ---- post-passes ----


class Breaking:
    """A post-pass that silently changes results: it turns every Relu into an Identity."""

    @hookimpl
    def flow2onnx_register_post_passes(register):
        def break_relu(model):
            for node in model.graph.node:
                if node.op_type == "Relu":
                    node.op_type = "Identity"
            return model

        register("break-relu", break_relu)


def test_post_pass_that_changes_results_is_named_and_dropped(onnx_path):
    result = export_module(relu_model(), [(4, 8)], onnx_path, plugins=[Breaking], post_passes=["onnxoptimizer", "break-relu"])
    assert result.post_passes == ["onnxoptimizer"]
    assert result.report.passed
    assert any("post-pass 'break-relu' from plugin 'Breaking' (passed to export) changed the results" in w for w in result.warnings)
    assert "Relu" in [node.op_type for node in onnx.load(str(onnx_path)).graph.node]


def test_strict_post_passes_fail_instead(tmp_path, capsys):
    with pytest.raises(flow2onnx.VerificationError, match=r"post-pass 'break-relu' .* changed the results .*strict_post_passes"):
        export_module(relu_model(), [(4, 8)], tmp_path / "m.onnx", plugins=[Breaking], post_passes=["break-relu"], strict_post_passes=True)
    assert os.listdir(tmp_path) == []


def test_post_passes_are_skipped_with_a_reason_past_the_protobuf_limit(tmp_path, monkeypatch):
    import flow2onnx.exporter.lower.stage

    # A model "over the limit" without allocating 2 GiB: lower the limit, not the check.
    monkeypatch.setattr(flow2onnx.exporter.lower.stage, "PROTOBUF_LIMIT", 4096)
    model = flow.nn.Sequential(flow.nn.Conv2d(3, 32, 3), flow.nn.ReLU())
    result = export_module(model, [(1, 3, 8, 8)], tmp_path / "m.onnx", post_passes=["onnxsim"])
    assert result.external_data and result.post_passes == []
    assert "post-passes onnxsim skipped" in result.warnings[0] and "2 GiB" in result.warnings[0]
    assert result.report.passed
    assert sorted(os.listdir(tmp_path)) == ["m.onnx", "m.onnx.data"]


# ---- tracing ----


def test_trace_prints_each_hook_call_and_registration():
    env = {**os.environ, "FLOW2ONNX_TRACE": "1"}
    done = subprocess.run([CLI, "plugins"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr
    assert "flow2onnx trace: calling flow2onnx_register_lowerings(register) of plugin 'flow2onnx-conv' (flow2onnx-conv 0.1.0)" in done.stderr
    assert "flow2onnx trace:   'flow2onnx-conv' registered lowering conv2d" in done.stderr
    quiet = subprocess.run([CLI, "plugins"], capture_output=True, text=True, timeout=300)
    assert "trace" not in quiet.stderr


def test_tiny_cnn_still_exports_with_every_plugin_loaded(onnx_path):
    assert export_module(tiny_cnn(), [(1, 3, 8, 8)], onnx_path).report.passed
