"""flow2onnx.plugin, the plugin author's module: the Lowerings table and its decorators, checked when
applied, and a plugin made with them lowering an op in a real export."""

from __future__ import annotations

import numpy as np
import pytest

import flow2onnx
from flow2onnx.lowering.plugin_manager import load_plugins
from flow2onnx.plugin import Lowerings, PluginError, hookimpl, max_opset

from .helpers import export_module
from .models import uses_inverse


def test_a_plugin_written_with_the_table_lowers_an_op_and_stacks_opsets(tmp_path):
    table = Lowerings()

    @table.op("inv", since_opset=9)
    def lower_inverse(ctx, op, domain="com.microsoft"):
        ctx.make_node("Inverse", [op.input("x")], [op.output("y")], domain=domain, domain_version=1)

    @table.op("inv", since_opset=20, domain="com.microsoft")
    def lower_inverse_20(ctx, op, domain):
        ctx.make_node("Inverse", [op.input("x")], [op.output("y")], domain=domain, domain_version=1)

    class Plugin:
        @hookimpl
        def flow2onnx_register_lowerings(register):
            table.register_lowerings(register)

    entries = load_plugins(extra_plugins=[Plugin], entry_points=False).registry.lowerings["inv"]
    assert [(entry.since_opset, entry.until_opset) for entry in entries] == [(9, None), (20, None)]
    assert entries[0].function is lower_inverse
    assert entries[1].function.func is lower_inverse_20 and entries[1].function.keywords == {"domain": "com.microsoft"}
    for opset in (11, 20):
        result = export_module(uses_inverse(), [(2, 3, 3)], tmp_path / f"inv{opset}.onnx", plugins=[Plugin], opset=opset)
        assert result.report.passed and result.lowered_by["inv"] == "Plugin"


def _lowering(ctx, op):
    pass


@pytest.mark.parametrize(
    "arguments, message",
    [
        ((("conv 2d",), {}), r"'conv 2d' is not a OneFlow op type name"),
        ((("relu",), {"since_opset": 0}), r"since_opset=0; use an int from 1 to \d+"),
        ((("relu",), {"since_opset": 99}), r"since_opset=99; use an int from 1 to"),
        ((("relu",), {"since_opset": "11"}), r"since_opset='11'"),
        ((("relu",), {"since_opset": 13, "until_opset": 12}), r"until_opset=12; use None or an int from since_opset=13 up"),
        ((("relu",), {"alpha": 1.0}), r"_lowering \(.*test_plugin_api.py:\d+\): it is called as \(ctx, op, alpha=\.\.\.\), but its signature"),
        (((), {}), r"needs at least one OneFlow op type"),
    ],
)
def test_a_wrong_registration_fails_where_the_decorator_is_applied(arguments, message):
    op_types, keywords = arguments
    with pytest.raises(PluginError, match=message):
        Lowerings().op(*op_types, **keywords)(_lowering)


def test_a_lowering_that_cannot_take_ctx_and_op_is_refused_at_its_definition():
    table = Lowerings()
    with pytest.raises(PluginError, match=r"called as \(ctx, op\)"):
        @table.op("relu")
        def lower_relu(ctx):
            pass
    with pytest.raises(PluginError, match=r"called as \(ctx, match\)"):
        table.pattern("relu-chain", lambda graph: [])(lambda ctx: None)
    with pytest.raises(PluginError, match=r"pattern name 'a b'"):
        table.pattern("a b", lambda graph: [])(lambda ctx, match: None)
    assert len(table) == 0  # nothing half-registered


def test_two_lowerings_of_one_op_from_the_same_opset_are_refused_at_the_second():
    table = Lowerings()
    table.add("relu", _lowering, since_opset=13)
    with pytest.raises(PluginError, match=r"a second lowering of 'relu' from opset 13"):
        table.op("relu", since_opset=13)(lambda ctx, op: None)
    table.op("relu", since_opset=14, until_opset=max_opset())(lambda ctx, op: None)
    assert len(table) == 2


def test_the_families_register_through_tables_only():
    # Every family hands a Lowerings table over; no registration is made past it, so the table
    # at the definition is the whole truth of what a family lowers from which opset.
    import importlib

    from flow2onnx.lowering.families import family_names

    loaded = load_plugins()
    for family in family_names():
        module = importlib.import_module(family.replace("-", "_"))
        tables = [value for value in vars(module).values() if isinstance(value, Lowerings)]
        assert len(tables) == 1, family
        registered = sum(1 for table in (loaded.registry.lowerings, loaded.registry.patterns)
                         for entries in table.values() for entry in entries if entry.plugin == family)
        assert registered == len(tables[0]), family


def test_the_testing_helpers_load_on_first_use():
    from flow2onnx import plugin

    inputs = plugin.random_inputs([(2, 3)], seed=1)
    assert inputs[0].shape == (2, 3) and np.all(inputs[0].numpy() >= 0)
    assert plugin.check_export is flow2onnx.testing.check_export


@pytest.mark.parametrize("capture", ["graph", "eager"])
def test_a_lowering_sees_a_read_only_graph_whose_provenance_is_a_record_of_its_own(tmp_path, capture):
    """ctx.graph cannot be changed by a lowering, and where it came from is ``ctx.graph.source``."""
    import dataclasses

    from flow2onnx.lowering.graph import Provenance

    seen = {}

    class Watcher:
        @hookimpl
        def flow2onnx_register_lowerings(self, register):
            def lower_relu(ctx, op):
                graph = ctx.graph
                seen["source"] = graph.source
                for field, value in (("ops", []), ("source", Provenance()), ("name", "other")):
                    with pytest.raises(dataclasses.FrozenInstanceError):
                        setattr(graph, field, value)
                seen["fields"] = {f.name for f in dataclasses.fields(graph)}
                ctx.make_node("Relu", [op.input("x")], [op.output("y")])

            register("relu", lower_relu, override=True)

    module = flow2onnx.testing.flow.nn.ReLU()
    result = export_module(module, [(2, 3)], tmp_path / "m.onnx", plugins=[Watcher()], capture=capture)
    assert result.report.passed
    source = seen["source"]
    assert source.capture == capture and source.eager_module is module and source.find_module("model") is module
    assert (source.flow_graph is None) == (capture == "eager") and source.frozen == () and source.input_layouts is None
    # The IR's own fields, and nothing of OneFlow's besides the provenance and the weight reader.
    assert seen["fields"] == {"name", "ops", "inputs", "outputs", "tensors", "variables", "read_weight", "output_sources", "source"}
