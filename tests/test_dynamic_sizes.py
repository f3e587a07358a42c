"""Sizes computed in the graph, never baked: RNN initial states, compiled graphs with a dynamic batch.

Each exported file is compared with OneFlow at batch sizes the export never saw, on ONNX Runtime.
"""

from __future__ import annotations

import itertools

import numpy as np
import onnxruntime
import pytest

import flow2onnx

from .helpers import Lambda, flow, random_inputs


def matches_oneflow(path, reference, shapes, scale=1.0):
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(3)
    for shape in shapes:
        x = rng.uniform(-2, 2, size=shape).astype(np.float32)
        np.testing.assert_allclose(session.run(None, {"input": x})[0], reference(flow.tensor(x)).numpy() * scale, rtol=1e-4, atol=1e-5)


class Recurrent(flow.nn.Module):
    def __init__(self, cls, **options):
        super().__init__()
        self.rnn = cls(8, 16, **options)

    def forward(self, x):
        return self.rnn(x)[0]


@pytest.mark.parametrize(
    "cls, options",
    [
        (flow.nn.LSTM, {"num_layers": 2, "bidirectional": True}),
        (flow.nn.GRU, {"batch_first": True}),
        (flow.nn.RNN, {}),
    ],
    ids=["lstm-2-layers-bidirectional", "gru-batch-first", "rnn"],
)
def test_recurrent_modules_keep_the_batch_dynamic(tmp_path, cls, options):
    # OneFlow builds the initial state as zeros(layers, batch, hidden): a constant op of the
    # example's batch, now computed from the input's Shape.
    model = Recurrent(cls, **options).eval()
    batch_axis = 0 if options.get("batch_first") else 1
    shape = [6, 6, 8]
    shape[batch_axis] = 3
    result = flow2onnx.export(model, random_inputs([tuple(shape)]), tmp_path / "m.onnx", dynamic_axes={"input": {batch_axis: "batch"}})
    assert result.report.passed
    others = []
    for batch in (1, 7):
        other = list(shape)
        other[batch_axis] = batch
        others.append(tuple(other))
    matches_oneflow(tmp_path / "m.onnx", model, others)


class Sequence(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = flow.nn.LSTM(8, 16, batch_first=True)
        self.head = flow.nn.Linear(16, 4)

    def forward(self, x):
        y = self.head(self.rnn(x)[0].reshape(-1, 16))
        return y.reshape(x.shape[0], -1)


class ScaledGraph(flow.nn.Graph):
    """A user's graph whose __init__ takes arguments, as the tutorial's graphs do."""

    def __init__(self, module, scale):
        super().__init__()
        self.module = module
        self.scale = scale

    def build(self, x):
        return self.module(x) * self.scale


def test_a_compiled_graph_with_a_dynamic_batch_is_compiled_again_and_right_at_every_batch(tmp_path):
    module = Sequence().eval()
    graph = ScaledGraph(module, 2.0)
    graph._compile(flow.randn(3, 5, 8))
    path, _ = flow2onnx.export_onnx_model(graph, onnx_model_path=str(tmp_path), dynamic_batch_size=True)
    matches_oneflow(path, module, [(1, 5, 8), (4, 5, 8), (11, 5, 8)], scale=2.0)


class ChannelShuffle(flow.nn.Module):
    """ShuffleNet's channel shuffle after a strided conv: (N, C, H, W) -> (N, g, C/g, H, W) -> back,
    with H and W, moved to other indices by the reshape, at an eighth of the input's size."""

    def __init__(self):
        super().__init__()
        self.conv = flow.nn.Conv2d(3, 8, 3, stride=8, padding=1)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        y = y.reshape(n, 2, c // 2, h, w).transpose(1, 2)
        return y.reshape(n, c, h, w) / (h * w)


def test_a_reshape_that_moves_dynamic_dims_computes_them_from_shape(tmp_path):
    model = ChannelShuffle().eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 64, 64)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    matches_oneflow(tmp_path / "m.onnx", model, [(2, 3, 32, 96), (3, 3, 128, 40)])


class NeedsItsSize(flow.nn.Module):
    """Like DLA-34: a final 7 x 7 pooling that leaves nothing of a smaller input, where OneFlow would
    abort the whole process in the next kernel."""

    def __init__(self):
        super().__init__()
        self.conv = flow.nn.Conv2d(3, 4, 3, stride=4, padding=1)
        self.pool = flow.nn.AvgPool2d(7)
        self.fc = flow.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc(flow.flatten(self.pool(self.conv(x)), 1))


def test_sizes_the_model_cannot_take_are_probed_not_run(tmp_path, caplog):
    import logging

    caplog.set_level(logging.WARNING, logger="flow2onnx")
    model = NeedsItsSize().eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 28, 28)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    assert "the model cannot run at {'input': [2, 3, 16, 16]} (" in caplog.text  # OneFlow refuses to build it there
    sizes = sorted({tuple(c.shape) for c in result.report.comparisons})
    assert sizes == [(1, 2), (2, 2), (5, 2)]  # batch 1 (the example), 2 at 5/4 of its size, 5 at 3/2


def test_a_variance_over_dynamic_axes_counts_them_in_the_graph(tmp_path):
    # PoolFormer's GroupNorm and the style network's InstanceNorm compute var over C, H, W: the
    # unbiased count N - 1 is computed from Shape wherever a reduced axis follows a dynamic one.
    model = Lambda(lambda self, x: x.var(dim=[1, 2, 3], keepdim=True) + x.var(dim=[2, 3], unbiased=False, keepdim=True)).eval()
    result = flow2onnx.export(model, random_inputs([(2, 3, 16, 16)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    matches_oneflow(tmp_path / "m.onnx", model, [(1, 3, 5, 40), (4, 3, 33, 7)])


class SkipUpsample(flow.nn.Module):
    """A U-Net/FPN step: a strided branch brought back to the skip's size with ``size=`` (computed in
    Python from the input's shape), and a second one to twice a size."""

    def __init__(self, mode, twice=True):
        super().__init__()
        self.down = flow.nn.Conv2d(3, 3, 3, stride=2, padding=1)
        self.mode = mode
        self.twice = twice

    def forward(self, x):
        options = {} if self.mode == "nearest" else {"align_corners": False}
        y = self.down(x)
        back = flow.nn.functional.interpolate(y, size=(x.shape[2], x.shape[3]), mode=self.mode, **options)
        if not self.twice:
            return x + back
        twice = flow.nn.functional.interpolate(y, size=(2 * y.shape[2], 2 * y.shape[3]), mode=self.mode, **options)
        return x + back, twice


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_an_upsample_to_a_size_computed_from_the_input_follows_it(tmp_path, mode):
    """``back`` takes the input's own size: exported, right at sizes no compilation saw, odd ones too."""
    model = SkipUpsample(mode, twice=False).eval()
    result = flow2onnx.export(model, random_inputs([(2, 3, 16, 16)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 8, 24), (3, 3, 32, 20), (1, 3, 17, 9), (2, 3, 1, 1)]:
        x = np.random.default_rng(5).uniform(-2, 2, size=shape).astype(np.float32)
        (got,) = session.run(None, {"input": x})
        np.testing.assert_allclose(got, model(flow.tensor(x)).numpy(), rtol=1e-4, atol=1e-5)


def test_an_upsample_to_twice_a_downsampled_size_is_refused_not_exported_wrong(tmp_path):
    """``twice`` is 2 * y.shape[2], which two compilations at even sizes cannot tell from the input's H
    (the simpler relation, chosen): right at even sizes only. The run with every dynamic axis at 1
    (y is 1 there, twice 2, H 1) catches it, so the file is refused rather than written wrong."""
    with pytest.raises(flow2onnx.VerificationError, match="differ from OneFlow's"):
        flow2onnx.export(SkipUpsample("nearest").eval(), random_inputs([(2, 3, 16, 16)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert list(tmp_path.iterdir()) == []


class Patches(flow.nn.Module):
    """MobileViT's unfolding: 4 x 4 patches of a stride-4 feature map, so the token count is
    H * W / 256 of the input, a fraction whose denominator is the patch area times the stride's."""

    def __init__(self):
        super().__init__()
        self.conv = flow.nn.Conv2d(3, 8, 3, stride=4, padding=1)

    def forward(self, x):
        y = self.conv(x)
        n, c, h, w = y.shape
        p = 4
        y = y.reshape(n, c, h // p, p, w // p, p).permute(0, 3, 5, 2, 4, 1).reshape(n * p * p, (h // p) * (w // p), c)
        return y.softmax(1).reshape(n, p * p, (h // p) * (w // p), c).sum(2)


def test_a_token_count_of_height_times_width_over_the_patch_area_follows_both(tmp_path):
    model = Patches().eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 64, 64)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    matches_oneflow(tmp_path / "m.onnx", model, [(2, 3, 32, 96), (1, 3, 128, 48)])


class ResizedPositions(flow.nn.Module):
    """PVT's position embedding: built for 8 x 8 tokens, resized in Python only at other sizes."""

    def __init__(self):
        super().__init__()
        self.embed = flow.nn.Conv2d(3, 4, 4, stride=4)
        self.pos = flow.nn.Parameter(flow.randn(1, 4, 8, 8))

    def forward(self, x):
        y = self.embed(x)
        pos = self.pos
        if y.shape[2:] != pos.shape[2:]:
            pos = flow.nn.functional.interpolate(pos, size=(y.shape[2], y.shape[3]), mode="bilinear", align_corners=False)
        return y + pos


def test_a_model_whose_python_branches_on_its_size_is_refused_as_such(tmp_path):
    with pytest.raises(flow2onnx.LoweringError) as caught:
        flow2onnx.export(ResizedPositions().eval(), random_inputs([(1, 3, 32, 32)]), tmp_path / "m.onnx", dynamic_axes={"input": {2: "h", 3: "w"}})
    message = str(caught.value)
    assert "OneFlow builds 0 upsample_bilinear_2d at the example's sizes and 1 at the others" in message
    assert "takes another path at other sizes" in message and "export with those axes static" in message
    assert list(tmp_path.iterdir()) == []
    # At its own size, static, it exports.
    assert flow2onnx.export(ResizedPositions().eval(), random_inputs([(1, 3, 32, 32)]), tmp_path / "m.onnx").report.passed


def test_an_arange_over_a_size_follows_it(tmp_path):
    # FAN's position encoding: a grid of flow.arange(H) and flow.arange(W), scaled by 1 / H.
    def forward(self, x):
        h, w = x.shape[2], x.shape[3]
        rows = flow.arange(h, dtype=flow.float32).reshape(1, 1, h, 1) / h
        cols = flow.arange(0, 2 * w, 2).reshape(1, 1, 1, w).to(flow.float32)
        return x * rows + cols

    model = Lambda(forward).eval()
    result = flow2onnx.export(model, random_inputs([(2, 3, 16, 16)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.passed
    matches_oneflow(tmp_path / "m.onnx", model, [(1, 3, 5, 40), (3, 3, 33, 7)])


def test_shufflenet_is_right_at_sizes_not_aligned_to_its_stride(tmp_path):
    """flowvision's channel shuffle reshapes to sizes it reads from the tensor at hand; explained from the
    input as H / 32 (which fits compilations at aligned sizes) the file failed in ONNX Runtime at 257 x 231."""
    from flowvision import models

    model = models.ModelCreator.create_model("shufflenet_v2_x1_0", pretrained=False).eval()
    result = flow2onnx.export(model, random_inputs([(1, 3, 224, 224)]), tmp_path / "m.onnx", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}})
    assert result.report.verified
    from flow2onnx.exporter.verify.comparison import compare

    session = onnxruntime.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    for shape in [(1, 3, 257, 231), (2, 3, 97, 65)]:  # by verification's own rule (float32: rtol 1e-3, atol 1e-4 scaled)
        x = np.random.default_rng(3).uniform(-2, 2, size=shape).astype(np.float32)
        assert compare("output", model(flow.tensor(x)).numpy(), session.run(None, {"input": x})[0]).passed, shape


def test_a_squeeze_that_depends_on_a_dynamic_axis_being_1_is_refused(tmp_path):
    """x.squeeze(2) on a (2, 1, 4) example squeezes nothing, so the lowering is an Identity; at (2, 2, 1)
    OneFlow squeezes. The run with every dynamic axis at 1 catches it: refused, nothing written."""
    model = Lambda(lambda self, x: x.squeeze(2)).eval()
    with pytest.raises(flow2onnx.VerificationError, match="differ from OneFlow's"):
        flow2onnx.export(model, [flow.randn(2, 1, 4)], tmp_path / "m.onnx", dynamic_axes={"input": {0: "a", 1: "b", 2: "c"}})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("axes", [{2: "h"}, {2: "h", 3: "w"}, {0: "n", 3: "w"}], ids=["h", "h-w", "n-w"])
def test_max_pool_with_ceil_mode_is_right_at_every_size_of_its_dynamic_axes(tmp_path, axes):
    # On a 7 x 2 example, width 2 needs its last window dropped and height 7 does not: the end
    # padding chosen there gave 3 rows at height 9, where OneFlow gives 4 (found by the fuzzer). The
    # indices count within each plane, whose size is read from the input's shape.
    model = Lambda(lambda self, x: flow.nn.functional.max_pool2d(x, 3, stride=3, padding=1, ceil_mode=True, return_indices=True))
    path = tmp_path / "m.onnx"
    flow2onnx.export(model.eval(), random_inputs([(1, 2, 7, 2)]), path, dynamic_axes={"input": axes})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    heights = range(1, 14) if 2 in axes else [7]
    widths = range(1, 9) if 3 in axes else [2]
    for batch in ([1, 3] if 0 in axes else [1]):
        for h in heights:
            for w in widths:
                x = rng.standard_normal((batch, 2, h, w)).astype(np.float32)
                want = [t.numpy() for t in model(flow.tensor(x))]
                got = session.run(None, {"input": x})
                for a, b in zip(got, want):
                    assert a.shape == b.shape and np.array_equal(a, b), (batch, h, w, a.shape, b.shape)


AVG_POOL_CEIL = {
    # (pool, kernel, stride, padding, count_include_pad, example spatial size)
    "2d-k3-s2-p1-include": (flow.nn.functional.avg_pool2d, 3, 2, 1, True, (7, 6)),
    "2d-k3-s2-p1-exclude": (flow.nn.functional.avg_pool2d, 3, 2, 1, False, (7, 6)),
    "2d-k2-s2-p1-include": (flow.nn.functional.avg_pool2d, 2, 2, 1, True, (7, 7)),
    "2d-k3-s3-p1-exclude": (flow.nn.functional.avg_pool2d, 3, 3, 1, False, (7, 2)),
    "1d-k3-s2-p1-include": (flow.nn.functional.avg_pool1d, 3, 2, 1, True, (8,)),
    "3d-k2-s2-p0-include": (flow.nn.functional.avg_pool3d, 2, 2, 0, True, (3, 5, 4)),
}


@pytest.mark.parametrize("opset", [10, 17, 22])
@pytest.mark.parametrize("case", sorted(AVG_POOL_CEIL))
def test_average_pool_with_ceil_mode_divides_as_oneflow_does_at_every_size(tmp_path, case, opset):
    """OneFlow divides a ceil_mode border window by the elements inside the padded input (or the
    input, without count_include_pad), and drops a last window that would start in the padding; ONNX
    Runtime's AveragePool divides it by the whole window (found by a held-out suite). Every spatial
    axis dynamic, compared at every size from the smallest valid one up, size 1 included where valid."""
    pool, kernel, stride, padding, include, spatial = AVG_POOL_CEIL[case]
    model = Lambda(lambda self, x: pool(x, kernel, stride=stride, padding=padding, ceil_mode=True, count_include_pad=include)).eval()
    path = tmp_path / "m.onnx"
    axes = {2 + axis: f"s{axis}" for axis in range(len(spatial))}
    flow2onnx.export(model, random_inputs([(2, 3, *spatial)]), path, opset=opset, dynamic_axes={"input": {0: "n", **axes}})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(11)
    smallest = max(1, kernel - 2 * padding)
    checked = 0
    for axis, size in itertools.product(range(len(spatial)), range(smallest, 12)):
        for batch in (1, 4):
            shape = (batch, 3, *spatial[:axis], size, *spatial[axis + 1 :])
            x = (rng.standard_normal(shape) * 10.0 ** rng.integers(-3, 3, size=shape)).astype(np.float32)
            want = model(flow.tensor(x)).numpy()
            (got,) = session.run(None, {"input": x})
            assert got.shape == want.shape, (shape, got.shape, want.shape)
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6 * max(1.0, float(np.abs(x).max())), err_msg=str(shape))
            checked += 1
    assert checked == 2 * len(spatial) * (12 - smallest)
