"""The plugin host: per-export registries, entry-point discovery, registration rules, post-passes."""

from __future__ import annotations

import sys
import textwrap

import onnx
import onnxruntime
import pytest

import flow2onnx
from flow2onnx import hookimpl
from flow2onnx.lowering.families import family_names
from flow2onnx.lowering.plugin_manager import BUILTIN_PLUGINS, load_plugins
from flow2onnx.lowering.registry import Registry

from .helpers import export_module, flow
from .models import tiny_cnn, uses_inverse


def lower_inverse(ctx, op):
    """Matrix inverse, which standard ONNX lacks, through ONNX Runtime's com.microsoft Inverse."""
    ctx.make_node("Inverse", [op.input("x")], [op.output("y")], domain="com.microsoft", domain_version=1)


class InversePlugin:
    @hookimpl
    def flow2onnx_register_lowerings(register):
        register("inv", lower_inverse)


def test_extra_plugin_lowers_an_op_for_one_export_only(tmp_path):
    model = uses_inverse()
    result = export_module(model, [(2, 3, 3)], tmp_path / "a.onnx", plugins=[InversePlugin])
    assert result.report.passed
    assert result.lowered_by["inv"] == "InversePlugin"
    assert result.lowered_by["scalar_mul"] == "flow2onnx-math"
    # The registry is built per export; no family of flow2onnx lowers inv.
    with pytest.raises(flow2onnx.UnsupportedOpsError, match=r"inv: 1 op, .*; no flow2onnx op-handler family lowers it"):
        export_module(model, [(2, 3, 3)], tmp_path / "b.onnx")


def test_builtins_then_the_op_handler_families_are_registered_as_plugins():
    loaded = load_plugins()
    families = family_names()
    assert list(loaded.plugins)[: len(BUILTIN_PLUGINS) + len(families)] == list(BUILTIN_PLUGINS) + sorted(families)
    assert {loaded.plugins[name].distribution for name in BUILTIN_PLUGINS} == {"flow2onnx-core"}
    assert all(loaded.plugins[family].distribution == family for family in families)
    conv = [entry for entries in loaded.registry.lowerings.values() for entry in entries if entry.plugin == "flow2onnx-conv"]
    assert {"conv1d", "conv2d", "conv3d"} <= {entry.op_type for entry in conv}
    assert loaded.plugins["flow2onnx-conv"].lowerings == len(conv)
    assert load_plugins(entry_points=False).registry.lowerings == {}  # the core alone lowers nothing
    assert loaded.plugins["flow2onnx.plugins.onnxruntime_verifier"].verifiers == ["onnxruntime"]
    assert set(loaded.registry.post_passes) == {"onnxsim", "onnxoptimizer"}


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    """A distribution with a flow2onnx entry point, made visible to importlib.metadata like a pip install."""

    def install(module_source: str, entry_point: str = "inv-plugin = inv_plugin", name="inv-plugin-dist"):
        (tmp_path / "inv_plugin.py").write_text(textwrap.dedent(module_source))
        info = tmp_path / f"{name.replace('-', '_')}-1.2.3.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
        (info / "entry_points.txt").write_text(f"[flow2onnx]\n{entry_point}\n")
        monkeypatch.syspath_prepend(str(tmp_path))
        monkeypatch.delitem(sys.modules, "inv_plugin", raising=False)

    return install


INV_PLUGIN = """
    from flow2onnx import hookimpl
    from tests.test_plugins import lower_inverse

    @hookimpl
    def flow2onnx_register_lowerings(register):
        register("inv", lower_inverse)
"""


def test_entry_point_plugin_is_discovered_and_used(installed_plugin, tmp_path):
    installed_plugin(INV_PLUGIN)
    loaded = load_plugins()
    info = loaded.plugins["inv-plugin"]
    assert (info.distribution, info.version, info.lowerings) == ("inv-plugin-dist", "1.2.3", 1)
    result = export_module(uses_inverse(), [(2, 3, 3)], tmp_path / "m.onnx")
    assert result.lowered_by["inv"] == "inv-plugin" and result.report.passed


def test_installed_plugin_overrides_a_family_whatever_its_name(installed_plugin):
    """The families load before other entry points, so a name sorting before theirs still overrides."""
    installed_plugin(INV_PLUGIN.replace('register("inv", lower_inverse)', 'register("relu", lower_inverse, override=True)'), "aaa-relu = inv_plugin")
    loaded = load_plugins()
    names = list(loaded.plugins)
    assert names.index("flow2onnx-activations") < names.index("flow2onnx-tensor") < names.index("aaa-relu")
    assert loaded.registry.lowering_for("relu", 17).plugin == "aaa-relu"
    assert loaded.plugins["aaa-relu"].overrides == {"relu": ("flow2onnx-activations",)}


def test_entry_point_that_fails_to_import_names_plugin_and_distribution(installed_plugin):
    installed_plugin("import a_module_that_does_not_exist\n")
    with pytest.raises(flow2onnx.PluginError, match=r'Error importing plugin "inv-plugin" \(inv-plugin-dist 1\.2\.3, inv_plugin\): ModuleNotFoundError'):
        load_plugins()


def test_misspelt_hook_names_the_plugin(installed_plugin):
    installed_plugin(INV_PLUGIN.replace("flow2onnx_register_lowerings", "flow2onnx_register_lowering"))
    with pytest.raises(flow2onnx.PluginError, match=r"(?s)plugin 'inv-plugin' \(inv-plugin-dist 1\.2\.3\).*flow2onnx_register_lowering"):
        load_plugins()


def test_hook_with_wrong_arguments_names_the_plugin(installed_plugin):
    installed_plugin(INV_PLUGIN.replace("(register)", "(register, opset)"))
    with pytest.raises(flow2onnx.PluginError, match=r"(?s)plugin 'inv-plugin' \(inv-plugin-dist 1\.2\.3\).*opset"):
        load_plugins()


def test_second_lowering_for_the_same_opset_names_both_plugins():
    class AnotherRelu:
        @hookimpl
        def flow2onnx_register_lowerings(register):
            register("relu", lambda ctx, op: None)

    with pytest.raises(flow2onnx.PluginError, match=r"two lowerings for 'relu'.*'flow2onnx-activations'.*'AnotherRelu'"):
        load_plugins(extra_plugins=[AnotherRelu])


@pytest.mark.parametrize(
    "args, message",
    [
        (("not an op!", print), "not a OneFlow op type name"),
        (("sin", 42), "not callable"),
        (("sin", print, 0), "since_opset=0"),
        (("sin", print, 13, 12), "until_opset=12 below since_opset=13"),
    ],
)
def test_malformed_registration_is_refused_when_made(args, message):
    with pytest.raises(flow2onnx.PluginError, match=rf"plugin 'p'.*{message}"):
        Registry().add_lowering("p", *args)


def test_hook_that_raises_names_the_plugin():
    class Broken:
        @hookimpl
        def flow2onnx_register_post_passes(register):
            raise RuntimeError("boom")

    with pytest.raises(flow2onnx.PluginError, match=r"plugin 'Broken' \(passed to export\) failed in flow2onnx_register_post_passes: RuntimeError: boom"):
        load_plugins(extra_plugins=[Broken], entry_points=False)


# ---- hooks are called through pluggy ----


def post_pass_plugin(name: str, **marks):
    """A plugin class whose registration hook registers post-pass ``name``, with pluggy ordering marks."""

    @hookimpl(**marks)
    def flow2onnx_register_post_passes(register):
        register(name, lambda model: model)

    return type(name.capitalize(), (), {"flow2onnx_register_post_passes": staticmethod(flow2onnx_register_post_passes)})


def test_each_plugin_is_called_through_pluggy_with_its_own_register(monkeypatch, capsys):
    called = []

    class NoArguments:
        @hookimpl
        def flow2onnx_register_verifiers():  # an implementation may take a subset of the spec's arguments
            called.append("NoArguments")

    monkeypatch.setenv("FLOW2ONNX_TRACE", "1")
    loaded = load_plugins(extra_plugins=[post_pass_plugin("a"), post_pass_plugin("b"), NoArguments], entry_points=False)
    assert {name: entry.plugin for name, entry in loaded.registry.post_passes.items() if name in "ab"} == {"a": "A", "b": "B"}
    assert called == ["NoArguments"] and loaded.plugins["NoArguments"].hooks == ["flow2onnx_register_verifiers"]
    # These lines come from pluggy's hook-call monitoring, so pluggy made each call, with keyword arguments.
    trace = capsys.readouterr().err
    assert "calling flow2onnx_register_post_passes(register) of plugin 'A' (passed to export)" in trace
    assert "calling flow2onnx_register_verifiers(register) of plugin 'NoArguments' (passed to export)" in trace


def test_tryfirst_and_trylast_move_a_plugins_call_as_pluggy_orders_them():
    plugins = [post_pass_plugin("last", trylast=True), post_pass_plugin("plain"), post_pass_plugin("first", tryfirst=True)]
    loaded = load_plugins(extra_plugins=plugins, entry_points=False)
    # Unmarked plugins keep the plugin order (built-ins, then these in the order given).
    assert list(loaded.registry.post_passes) == ["first", "onnxsim", "onnxoptimizer", "plain", "last"]
    assert list(loaded.plugins)[-3:] == ["Last", "Plain", "First"]  # the listing keeps plugin order


def test_one_plugin_implementing_a_hook_twice_is_called_in_pluggys_order():
    class Twice:
        @hookimpl(specname="flow2onnx_register_post_passes", trylast=True)
        def late(register):
            register("late", lambda model: model)

        @hookimpl(specname="flow2onnx_register_post_passes", tryfirst=True)
        def early(register):
            register("early", lambda model: model)

    loaded = load_plugins(extra_plugins=[Twice], entry_points=False)
    # Pluggy orders the two; the plugin's call goes where pluggy puts the first of them (tryfirst).
    assert list(loaded.registry.post_passes) == ["early", "late", "onnxsim", "onnxoptimizer"]
    assert {loaded.registry.post_passes[name].plugin for name in ("early", "late")} == {"Twice"}
    assert loaded.plugins["Twice"].post_passes == ["early", "late"]


@pytest.mark.parametrize("marker", ["wrapper", "hookwrapper"])
def test_wrappers_are_refused_with_the_plugin_and_hook_named(marker):
    class Wrapping:
        @hookimpl(**{marker: True})
        def flow2onnx_register_lowerings(register):
            yield

    with pytest.raises(
        flow2onnx.PluginError,
        match=rf"plugin 'Wrapping' \(passed to export\) implements flow2onnx_register_lowerings with {marker}=True, "
        rf"which registration hooks do not support: .* Drop {marker}=True and call register directly",
    ):
        load_plugins(extra_plugins=[Wrapping], entry_points=False)


def test_one_plugin_stacks_lowerings_and_the_highest_since_opset_wins():
    registry = Registry()
    for since, until in ((11, 12), (13, None), (18, None)):
        registry.add_lowering("p", "sin", lambda ctx, op: None, since_opset=since, until_opset=until)
    assert registry.lowering_for("sin", 10) is None
    assert [registry.lowering_for("sin", opset).since_opset for opset in (11, 12, 13, 17, 18, 21)] == [11, 11, 13, 13, 18, 18]
    assert registry.opset_range("sin") == (11, None)
    assert registry.opset_range("cos") is None


def test_the_same_lowering_registered_twice_is_refused_with_the_reason():
    """One opset mechanism: a lowering that only changes an ONNX operator's form is registered once."""
    registry = Registry()
    lowering = lambda ctx, op: None  # noqa: E731
    registry.add_lowering("p", "squeeze", lowering)
    with pytest.raises(flow2onnx.PluginError, match=r"plugin 'p' registered the same lowering for 'squeeze' from opset 11 and from opset 13; register it once: .*flow2onnx.lowering.helpers"):
        registry.add_lowering("p", "squeeze", lowering, since_opset=13)


def test_listing_shows_the_lowering_each_opset_uses():
    """lowerings_by_opset is what lowering_for returns, as ranges: listings cannot disagree with exports."""
    registry = Registry()
    for since, until in ((11, 12), (13, None), (18, None)):
        registry.add_lowering("p", "sin", lambda ctx, op: None, since_opset=since, until_opset=until)
    registry.add_lowering("q", "sin", lambda ctx, op: None, since_opset=15, until_opset=16, override=True)
    ranges = [(lowering.plugin, lowering.since_opset, first, last) for lowering, first, last in registry.lowerings_by_opset("sin")]
    assert ranges == [("p", 11, 11, 12), ("p", 13, 13, 14), ("q", 15, 15, 16), ("p", 13, 17, 17), ("p", 18, 18, None)]
    for lowering, first, last in registry.lowerings_by_opset("sin"):
        for opset in range(first, (last or flow2onnx.max_opset()) + 1):
            assert registry.lowering_for("sin", opset) is lowering
    assert registry.lowerings_by_opset("cos") == []


def test_clash_between_plugins_is_an_error_unless_the_newcomer_overrides():
    registry = Registry()
    registry.add_lowering("first", "sin", lambda ctx, op: None, origin="first-dist 1.0")
    with pytest.raises(flow2onnx.PluginError, match=r"two lowerings for 'sin': .*'first' \(first-dist 1.0\) and .*'second' \(second-dist 2.0\).*override=True"):
        registry.add_lowering("second", "sin", lambda ctx, op: None, since_opset=13, origin="second-dist 2.0")
    # Non-overlapping opset ranges do not clash.
    registry.add_lowering("old-opsets", "cos", lambda ctx, op: None, until_opset=12)
    registry.add_lowering("new-opsets", "cos", lambda ctx, op: None, since_opset=13)
    assert registry.lowering_for("cos", 12).plugin == "old-opsets" and registry.lowering_for("cos", 13).plugin == "new-opsets"
    # An override wins wherever it applies, whatever its since_opset.
    added = registry.add_lowering("second", "sin", lambda ctx, op: None, since_opset=13, override=True)
    assert added.overrides == ("first",)
    assert registry.lowering_for("sin", 12).plugin == "first"
    assert registry.lowering_for("sin", 17).plugin == "second"


@pytest.mark.parametrize("post_pass", ["onnxsim", "onnxoptimizer"])
def test_post_passes_run_and_the_result_verifies(post_pass, onnx_path):
    result = export_module(tiny_cnn(), [(2, 3, 8, 8)], onnx_path, post_passes=[post_pass], dynamic_batch=True)
    assert result.post_passes == [post_pass]
    assert result.report.passed
    onnx.checker.check_model(str(onnx_path), full_check=True)


def test_failing_post_pass_is_reported_and_skipped(onnx_path):
    class Failing:
        @hookimpl
        def flow2onnx_register_post_passes(register):
            register("breaks", lambda model: 1 / 0)

    result = export_module(tiny_cnn(), [(2, 3, 8, 8)], onnx_path, post_passes=["breaks"], plugins=[Failing])
    assert result.post_passes == []
    assert "post-pass 'breaks' from plugin 'Failing' (passed to export) failed: ZeroDivisionError" in result.warnings[0]
    assert "skipped" in result.warnings[0]
    assert result.report.passed


def test_unknown_post_pass_lists_the_available_ones(onnx_path):
    with pytest.raises(flow2onnx.PluginError, match=r"post-pass 'onnxsimp' is not registered \(available: onnxoptimizer, onnxsim\)"):
        export_module(tiny_cnn(), [(2, 3, 8, 8)], onnx_path, post_passes=["onnxsimp"])


def test_external_data_is_written_beside_the_model(tmp_path):
    path = tmp_path / "model.onnx"
    model = flow.nn.Sequential(flow.nn.Conv2d(3, 64, 3), flow.nn.ReLU(), flow.nn.Conv2d(64, 4, 1))
    result = export_module(model, [(2, 3, 8, 8)], path, external_data=True)
    assert result.external_data and result.report.passed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "model.onnx.data"]
    model = onnx.load(str(path), load_external_data=False)
    assert any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
