"""Helpers shared by the tests: random inputs, and export of an eager module with verification."""

from __future__ import annotations

import os

import flow2onnx
from flow2onnx import hookimpl
from flow2onnx.testing import flow, random_inputs  # noqa: F401  (re-exported for the tests)


def export_module(module, shapes, path, *, dtypes=None, **kwargs):
    """Export an eager module on random inputs of ``shapes``; verification is on unless turned off."""
    module.eval()
    return flow2onnx.export(module, random_inputs(shapes, dtypes), os.fspath(path), **kwargs)


class Lambda(flow.nn.Module):
    """A module whose forward is ``fn``: the shortest way to put one op in a graph."""

    def __init__(self, fn, **submodules):
        super().__init__()
        self.fn = fn
        for name, module in submodules.items():
            setattr(self, name, module)

    def forward(self, *args):
        return self.fn(self, *args)


def relu_graph():
    """An uncompiled nn.Graph around a ReLU, for tests of what exports accept of compiled graphs."""

    class ReluGraph(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.relu = flow.nn.ReLU()

        def build(self, x):
            return self.relu(x)

    return ReluGraph()


def overriding(op_type, lowering, prefix="Wrong"):
    """A plugin class that replaces the built-in lowering of ``op_type`` by ``lowering``."""

    class Plugin:
        @hookimpl
        def flow2onnx_register_lowerings(register):
            register(op_type, lowering, override=True)

    Plugin.__name__ = f"{prefix}{op_type.title()}"
    return Plugin
