"""Every built-in lowering against OneFlow on ONNX Runtime, at the lowest and the default opset.

Each case puts the op in a real OneFlow graph, exports it with verification on (every output
compared, rtol 1e-3 and atol 1e-4 scaled by the output's magnitude), and checks that the op type
really was in the graph, so a case cannot pass without exercising its lowering.
"""

from __future__ import annotations

import numpy as np
import pytest

import flow2onnx
from flow2onnx.plugin_manager import BUILTIN_PLUGINS, load_plugins

from .helpers import Lambda, export_module, flow

nn = flow.nn


def batchnorm(channels, dims=2, **kwargs):
    layer = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims](channels, **kwargs)
    if layer.track_running_stats:
        # Non-trivial statistics, so the test sees whether they are applied.
        layer.running_mean.copy_(flow.rand(channels) - 0.5)
        layer.running_var.copy_(flow.rand(channels) + 0.5)
    return layer


# id: (module factory, input shapes, OneFlow op types the graph must contain)
CASES = {
    "conv2d": (lambda: nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=False), [(2, 3, 9, 9)], {"conv2d"}),
    "conv2d-bias-groups-dilation": (lambda: nn.Conv2d(4, 8, 3, padding=2, dilation=2, groups=2), [(1, 4, 8, 8)], {"conv2d", "bias_add"}),
    "conv1d": (lambda: nn.Conv1d(3, 4, 3, padding=1), [(2, 3, 9)], {"conv1d", "bias_add"}),
    "conv3d": (lambda: nn.Conv3d(2, 3, 3, stride=(1, 2, 1), padding=1), [(1, 2, 4, 5, 6)], {"conv3d", "bias_add"}),
    "relu": (lambda: Lambda(lambda self, x: flow.relu(x - 0.5)), [(2, 5)], {"relu"}),
    "sigmoid": (lambda: Lambda(lambda self, x: flow.sigmoid(x * 4 - 2)), [(2, 5)], {"sigmoid"}),
    "tanh": (lambda: Lambda(lambda self, x: flow.tanh(x * 4 - 2)), [(2, 5)], {"tanh"}),
    "max_pool_2d": (lambda: nn.MaxPool2d(3, 2, 1), [(2, 3, 9, 9)], {"max_pool_2d"}),
    "max_pool_2d-ceil": (lambda: nn.MaxPool2d(3, 2, ceil_mode=True), [(1, 2, 8, 8)], {"max_pool_2d"}),
    "max_pool_2d-ceil-padded": (lambda: nn.MaxPool2d(2, 2, padding=1, ceil_mode=True), [(1, 2, 7, 7)], {"max_pool_2d"}),
    "max_pool_2d-dilation": (lambda: nn.MaxPool2d(3, 1, dilation=2), [(1, 2, 9, 9)], {"max_pool_2d"}),
    "max_pool_1d": (lambda: nn.MaxPool1d(3, 2, 1), [(2, 3, 10)], {"max_pool_1d"}),
    "max_pool_3d": (lambda: nn.MaxPool3d(2, 2), [(1, 2, 4, 6, 6)], {"max_pool_3d"}),
    "avg_pool_2d": (lambda: nn.AvgPool2d(3, 2, 1), [(2, 3, 9, 9)], {"avg_pool_2d"}),
    "avg_pool_2d-exclude-pad-ceil": (lambda: nn.AvgPool2d(3, 2, 1, ceil_mode=True, count_include_pad=False), [(1, 2, 8, 8)], {"avg_pool_2d"}),
    "avg_pool_1d": (lambda: nn.AvgPool1d(2, 2), [(2, 3, 10)], {"avg_pool_1d"}),
    "avg_pool_3d": (lambda: nn.AvgPool3d(2, 2), [(1, 2, 4, 6, 6)], {"avg_pool_3d"}),
    "adaptive_avg_pool2d-global": (lambda: nn.AdaptiveAvgPool2d(1), [(2, 3, 7, 7)], {"adaptive_avg_pool2d"}),
    "adaptive_avg_pool2d-divisible": (lambda: nn.AdaptiveAvgPool2d((2, 3)), [(2, 3, 8, 9)], {"adaptive_avg_pool2d"}),
    "adaptive_avg_pool1d": (lambda: nn.AdaptiveAvgPool1d(2), [(2, 3, 8)], {"adaptive_avg_pool1d"}),
    "adaptive_avg_pool3d": (lambda: nn.AdaptiveAvgPool3d(1), [(1, 2, 4, 4, 4)], {"adaptive_avg_pool3d"}),
    "normalization-2d": (lambda: batchnorm(3), [(2, 3, 5, 5)], {"normalization"}),
    "normalization-1d-rank2": (lambda: batchnorm(6, dims=1), [(4, 6)], {"normalization"}),
    "normalization-3d": (lambda: batchnorm(2, dims=3, eps=1e-3), [(1, 2, 3, 4, 5)], {"normalization"}),
    "normalization-no-affine": (lambda: batchnorm(3, affine=False), [(2, 3, 4, 4)], {"normalization", "constant"}),
    "matmul-linear": (lambda: nn.Linear(6, 5), [(3, 6)], {"matmul", "broadcast_add"}),
    "matmul-plain": (lambda: Lambda(lambda self, a, b: flow.matmul(a, b)), [(3, 4), (4, 2)], {"matmul"}),
    "broadcast_add": (lambda: Lambda(lambda self, x, y: x + y), [(2, 3, 4), (3, 1)], {"broadcast_add"}),
    "broadcast_sub": (lambda: Lambda(lambda self, x, y: x - y), [(2, 3, 4), (4,)], {"broadcast_sub"}),
    "broadcast_mul": (lambda: Lambda(lambda self, x, y: x * y), [(2, 1, 4), (3, 1)], {"broadcast_mul"}),
    "broadcast_div": (lambda: Lambda(lambda self, x, y: x / (y + 1)), [(2, 3, 4), (2, 3, 4)], {"broadcast_div", "scalar_add"}),
    "scalar_add-float": (lambda: Lambda(lambda self, x: x + 1.5), [(2, 3)], {"scalar_add"}),
    "scalar_mul-float": (lambda: Lambda(lambda self, x: x * -2.5), [(2, 3)], {"scalar_mul"}),
    "scalar_mul-int": (lambda: Lambda(lambda self, x: x * 3), [(2, 3)], {"scalar_mul"}),
    "add_n": (lambda: Lambda(lambda self, a, b: a + b), [(2, 3), (2, 3)], {"add_n"}),
    "bias_add": (lambda: nn.Conv2d(2, 3, 1), [(1, 2, 3, 3)], {"bias_add"}),
    "reshape": (lambda: Lambda(lambda self, x: x.reshape(2, -1, 3)), [(2, 4, 3, 2)], {"reshape"}),
    "flatten-as-reshape": (lambda: Lambda(lambda self, x: flow.flatten(x, 1)), [(2, 3, 4)], {"reshape"}),
}

OPSETS = [flow2onnx.MIN_OPSET, flow2onnx.DEFAULT_OPSET]


@pytest.mark.parametrize("opset", OPSETS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_lowering_matches_oneflow(case, opset, onnx_path):
    factory, shapes, op_types = CASES[case]
    result = export_module(factory(), shapes, onnx_path, opset=opset)
    missing = op_types - set(result.op_types)
    assert not missing, f"the graph did not contain {missing}; the case does not test its lowering"
    assert result.report.passed, result.report.to_text(outliers=True)
    assert len(result.report.comparisons) == len(result.output_names)
    assert onnx_path.exists()


def test_newest_opset_exports_a_cnn(onnx_path):
    """The highest opset the installed onnx knows is accepted and verifies."""
    model = nn.Sequential(nn.Conv2d(3, 4, 3), batchnorm(4), nn.ReLU(), nn.MaxPool2d(2), nn.AdaptiveAvgPool2d(1))
    result = export_module(model, [(1, 3, 10, 10)], onnx_path, opset=flow2onnx.max_opset())
    assert result.opset == flow2onnx.max_opset()
    assert result.report.passed


def test_every_builtin_lowering_has_a_case():
    """A lowering added to a built-in plugin without a numerical case above makes this fail."""
    registry = load_plugins(entry_points=False).registry
    builtin = {op_type for op_type, entries in registry.lowerings.items() if any(e.plugin in BUILTIN_PLUGINS for e in entries)}
    tested = set().union(*(op_types for _, _, op_types in CASES.values()))
    assert builtin - tested == set()


@pytest.mark.parametrize("opset", OPSETS)
def test_reshape_follows_dynamic_batch(opset, onnx_path):
    """A reshape whose shape the graph baked in (batch 2) runs at other batch sizes."""
    model = Lambda(lambda self, x: flow.relu(x.reshape(x.shape[0], -1)))
    result = export_module(model, [(2, 3, 4)], onnx_path, opset=opset, dynamic_batch=True)
    assert result.report.batch_sizes == [2, 3, 7]
    assert result.report.passed


def test_adaptive_pool_with_uneven_windows_is_refused(onnx_path):
    with pytest.raises(flow2onnx.LoweringError, match=r"adaptive_avg_pool2d op .*does not divide"):
        export_module(nn.AdaptiveAvgPool2d(3), [(1, 2, 7, 7)], onnx_path)
    assert not onnx_path.exists()


def test_average_pool_ceil_window_in_padding_is_refused(onnx_path):
    with pytest.raises(flow2onnx.LoweringError, match=r"avg_pool_2d op .*starts in the padding"):
        export_module(nn.AvgPool2d(2, 2, padding=1, ceil_mode=True), [(1, 2, 7, 7)], onnx_path)
    assert not onnx_path.exists()


def test_comparison_reports_a_real_difference():
    """Sanity of the comparison itself: a real difference is reported as a failure."""
    from flow2onnx.verification import compare

    ok = compare("y", np.ones(4, np.float32), np.ones(4, np.float32) + 1e-6, 1e-3, 1e-4)
    bad = compare("y", np.ones(4, np.float32), np.array([1, 1, 1.1, 1], np.float32), 1e-3, 1e-4)
    assert ok.passed and not bad.passed
    assert bad.mismatch_fraction == 0.25 and bad.outliers[0][0] == (2,)
