"""Helpers for testing lowerings and plugins against OneFlow, for flow2onnx's tests and plugin authors'.

``check_export`` exports a module on random inputs, verifies every output against OneFlow on ONNX
Runtime and fails the test with the verification report when they differ. In a pytest suite, add
``pytest_plugins = ["flow2onnx.testing"]`` to ``conftest.py`` to get the ``flow2onnx_check``
fixture, which writes into the test's temporary directory.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import numpy as np

from ._oneflow import import_oneflow
from .exporter.pipeline import ExportResult, export

flow = import_oneflow()


def random_inputs(shapes: Sequence[Sequence[int]], dtypes: Sequence | None = None, seed: int = 0) -> list:
    """OneFlow tensors of the given shapes: floats uniform in [0, 1), integers in {0, 1}."""
    rng = np.random.default_rng(seed)
    dtypes = dtypes or [np.float32] * len(shapes)
    tensors = []
    for shape, dtype in zip(shapes, dtypes):
        array = rng.random(shape) if np.issubdtype(dtype, np.floating) else rng.integers(0, 2, shape)
        tensors.append(flow.tensor(np.asarray(array).astype(dtype)))
    return tensors


def check_export(module, inputs, path, *, opsets: Sequence[int] | None = None, dtypes=None, **export_options) -> ExportResult:
    """Export ``module`` and assert that ONNX Runtime matches OneFlow on every output.

    :param inputs: OneFlow tensors, or shapes (tuples) for random float inputs.
    :param path: where to write the model (a ``tmp_path`` in tests).
    :param opsets: export once per opset (e.g. ``[11, 17]``); default: the default opset only.
    :param export_options: passed to :func:`flow2onnx.export` (``plugins``, ``dynamic_batch``, ...).
    :returns: the result of the last export.
    """
    if all(isinstance(item, (tuple, list)) for item in inputs):
        inputs = random_inputs(inputs, dtypes)
    module.eval()
    result = None
    for opset in opsets or [None]:
        result = export(module, inputs, os.fspath(path), opset=opset, **export_options)
        assert result.report is not None, result.verification_skipped or "verification did not run"
        assert result.report.passed, result.report.to_text(outliers=True)
    return result


try:
    import pytest
except ImportError:  # pytest is only needed for the fixture
    pytest = None

if pytest is not None:

    @pytest.fixture
    def flow2onnx_check(tmp_path):
        """``check_export`` writing to ``tmp_path / "model.onnx"``: ``flow2onnx_check(module, [(1, 3, 8, 8)])``."""
        return functools.partial(check_export, path=tmp_path / "model.onnx")
