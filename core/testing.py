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
from .exporter.api import export
from .exporter.pipeline import ExportResult

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


def check_export(
    module,
    inputs,
    path,
    *,
    opset: int | None = None,
    opsets: Sequence[int] | None = None,
    dtypes=None,
    input_range: tuple[float, float] | None = None,
    **export_options,
) -> ExportResult:
    """Export ``module`` and check that ONNX Runtime matches OneFlow on every output.

    A mismatch raises :class:`flow2onnx.VerificationError` with the report (printed above it);
    an export whose verification could not run fails the test's assertion with the reason.

    :param inputs: OneFlow tensors, or shapes (tuples) for random inputs (see :func:`random_inputs`).
    :param path: where to write the model (a ``tmp_path`` in tests).
    :param opset: export at this opset (e.g. ``17``); default: flow2onnx's default opset.
    :param opsets: export once per opset (e.g. ``[11, 17]``), instead of ``opset``.
    :param dtypes: numpy dtypes of the random inputs, one per shape (default float32).
    :param input_range: ``(low, high)``: verification's random runs draw floating-point inputs
        uniformly from ``[low, high)`` instead of its signed draws (``[-1, 1)``, and random signs
        across five orders of magnitude), e.g. ``(0.1, 10)`` for an op defined on positive values
        only. The example ``inputs`` are always verified first, and edge values last.
    :param export_options: passed to :func:`flow2onnx.export` (``plugins``, ``dynamic_batch``, ...).
    :returns: the :class:`~flow2onnx.ExportResult` of the last export: ``result.op_types`` (OneFlow
        op type -> how many ops of it the graph has), ``result.lowered_by`` (op type -> plugin),
        ``result.report`` (the verification report).
    """
    if opset is not None and opsets is not None:
        raise TypeError(f"check_export takes opset={opset!r} or opsets={list(opsets)!r}, not both")
    if all(isinstance(item, (tuple, list)) for item in inputs):
        inputs = random_inputs(inputs, dtypes)
    module.eval()
    result = None
    for each in opsets or [opset]:
        result = export(module, inputs, os.fspath(path), opset=each, input_range=input_range, **export_options)
        assert result.report is not None, result.verification_skipped or "verification did not run"
        assert result.report.verified, result.report.to_text(outliers=True)
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
