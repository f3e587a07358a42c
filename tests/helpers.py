"""Helpers shared by the tests: random inputs, and export of an eager module with verification."""

from __future__ import annotations

import os

import numpy as np

import flow2onnx
from flow2onnx._oneflow import import_oneflow

flow = import_oneflow()


def random_inputs(shapes, dtypes=None, seed=0):
    rng = np.random.default_rng(seed)
    dtypes = dtypes or [np.float32] * len(shapes)
    arrays = []
    for shape, dtype in zip(shapes, dtypes):
        array = rng.random(shape) if np.issubdtype(dtype, np.floating) else rng.integers(0, 2, shape)
        arrays.append(flow.tensor(array.astype(dtype)))
    return arrays


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
