"""Eager capture (``capture="eager"``/``"auto"``): the ops an eager run calls, replayed in OneFlow's lazy
mode, for models OneFlow cannot build as an nn.Graph; and the values such a model reads back to Python,
frozen and named. Numbers are OneFlow's own outputs against ONNX Runtime's, on fresh inputs."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

import flow2onnx
from flow2onnx.errors import Flow2OnnxError, InvalidModelError, VerificationError
from flow2onnx.exporter.options import ExportOptions

from .helpers import Lambda, flow
from .models import GraphRefuses

# float32 end to end, a handful of ops: differences stay at rounding level.
RTOL, ATOL = 1e-5, 1e-6


@pytest.fixture(autouse=True)
def seeded():
    """Weights and example inputs come from OneFlow's generator: seed it, so that what a test sees does
    not depend on the tests run before it (a ReLU whose outputs are all 0 would add a warning)."""
    flow.manual_seed(0)


def onnx_matches_oneflow(module, path, *arrays, rtol=RTOL, atol=ATOL):
    """Run the written file on ONNX Runtime and the module in OneFlow on ``arrays``; compare every output."""
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
    got = session.run(None, feeds)
    with flow.no_grad():
        want = module(*[flow.tensor(a) for a in arrays])
    want = [t.numpy() for t in (want if isinstance(want, (list, tuple)) else [want])]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)


def test_capture_option_is_checked():
    with pytest.raises(Flow2OnnxError, match="capture must be one of 'graph', 'eager', 'auto'"):
        ExportOptions(capture="lazy")
    assert ExportOptions().capture == "auto"


def test_eager_capture_builds_the_ops_graph_capture_builds(onnx_path):
    class Block(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = flow.nn.Conv2d(3, 4, 3)
            self.bn = flow.nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.bn(self.conv(x)).relu() * 2
            y[:, 0] = 1.0  # a Python value set into a tensor: a constant of the capture
            return y[:, [1, 3]].flatten(1)  # a list index: another constant

    module = Block().eval()
    example = flow.rand(1, 3, 8, 8)
    graph = flow2onnx.export(module, [example], onnx_path, capture="graph", verify=False)
    eager = flow2onnx.export(module, [example], onnx_path, capture="eager", dynamic_batch=True)
    assert eager.op_types == graph.op_types
    assert eager.report.passed and not [w for w in eager.warnings if "frozen" in w or "nn.Graph" in w]
    onnx_matches_oneflow(module, onnx_path, np.random.RandomState(1).randn(3, 3, 8, 8).astype(np.float32))


def test_item_in_control_flow_is_frozen_named_and_checked(onnx_path):
    def forward(self, x):
        if x.sum().item() > 0:
            return x * 2
        return x - 1

    module = Lambda(forward).eval()
    positive = flow.rand(2, 4)
    # Inputs of both signs take the other branch: verification finds the freeze out, and nothing is written.
    with pytest.raises(VerificationError, match=r"froze them to the example's: model \(Lambda\): Tensor.item\(\)") as caught:
        flow2onnx.export(module, [positive], onnx_path, capture="eager")
    assert not onnx_path.exists() and not caught.value.report.passed
    # Where the branch holds, the export passes, and says what it froze.
    result = flow2onnx.export(module, [positive], onnx_path, capture="eager", input_range=(0, 1))
    assert len(result.warnings) == 1
    assert "model (Lambda): Tensor.item() (frozen to " in result.warnings[0]
    onnx_matches_oneflow(module, onnx_path, np.random.RandomState(2).rand(2, 4).astype(np.float32))


def test_python_if_on_a_tensor_is_frozen_and_named(onnx_path):
    def forward(self, x):
        return self.inner(x) if (x.mean() > -10) else x  # always true for the inputs verification draws

    module = Lambda(forward, inner=flow.nn.Tanh()).eval()
    result = flow2onnx.export(module, [flow.rand(2, 4)], onnx_path, capture="eager")
    assert "model (Lambda): bool(tensor) (frozen to True)" in result.warnings[0]
    onnx_matches_oneflow(module, onnx_path, np.random.RandomState(3).randn(5, 4).astype(np.float32)[:2])


def test_numpy_in_forward_is_frozen_and_named(onnx_path):
    class Scale(flow.nn.Module):
        def forward(self, x):
            columns = x.numpy().shape[1]  # reads the values, uses only their shape: the freeze holds
            return x * columns

    module = flow.nn.Sequential(flow.nn.Linear(4, 6), Scale()).eval()
    result = flow2onnx.export(module, [flow.rand(2, 4)], onnx_path, capture="eager")
    assert "model.1 (Scale): Tensor.numpy() (frozen to the example's values, an array of shape [2, 6])" in result.warnings[0]
    onnx_matches_oneflow(module, onnx_path, np.random.RandomState(4).randn(2, 4).astype(np.float32))


def test_boolean_mask_is_frozen_to_its_positions(onnx_path):
    def always(self, x):
        return x[x.abs() >= 0] * 3  # every position, whatever the input: the freeze holds

    module = Lambda(always).eval()
    result = flow2onnx.export(module, [flow.rand(2, 3)], onnx_path, capture="eager")
    assert "model (Lambda): boolean mask in Tensor.__getitem__ (frozen to the example's 6 selected positions)" in result.warnings[0]
    onnx_matches_oneflow(module, onnx_path, np.random.RandomState(5).randn(2, 3).astype(np.float32))

    def positive(self, x):
        return x[x > 0].sum().reshape(1)  # another count of positions at other inputs

    with pytest.raises(VerificationError, match="boolean mask in Tensor.__getitem__"):
        flow2onnx.export(Lambda(positive).eval(), [flow.rand(2, 3)], onnx_path, capture="eager")


def test_graph_capture_of_a_boolean_mask_fails_with_oneflows_words(onnx_path):
    def positive(self, x):
        return x[x > 0].sum().reshape(1)

    with pytest.raises(InvalidModelError, match="boolean\\(mask\\) tensor only valid in eager mode"):
        flow2onnx.export(Lambda(positive).eval(), [flow.rand(2, 3)], onnx_path, capture="graph")


def test_auto_falls_back_to_eager_capture_quoting_oneflow(onnx_path):
    module = GraphRefuses().eval()
    with pytest.raises(InvalidModelError, match=r"super\(type, obj\)"):
        flow2onnx.export(module, [flow.rand(2, 4)], onnx_path, capture="graph")
    result = flow2onnx.export(module, [flow.rand(2, 4)], onnx_path, dynamic_batch=True)  # capture="auto", the default
    assert result.capture == "eager" and result.capture_reason.startswith("OneFlow could not build GraphRefuses as an nn.Graph")
    assert result.warnings[:1] == [
        "OneFlow could not build GraphRefuses as an nn.Graph (TypeError: super(type, obj): obj must be an instance or "
        "subtype of type); flow2onnx captured the ops its eager run calls instead (capture='eager')"
    ]
    assert result.op_types == {"matmul": 1, "broadcast_add": 1, "relu": 1}
    onnx_matches_oneflow(module, onnx_path, np.random.RandomState(6).randn(7, 4).astype(np.float32))


def test_auto_keeps_graph_capture_when_the_graph_builds(onnx_path):
    result = flow2onnx.export(flow.nn.Linear(4, 2).eval(), [flow.rand(2, 4)], onnx_path)
    assert result.warnings == [] and (result.capture, result.capture_reason) == ("graph", "OneFlow built the module as an nn.Graph")


def test_auto_reads_an_nn_graph_as_a_graph(onnx_path):
    from .helpers import relu_graph

    result = flow2onnx.export(relu_graph(), [flow.rand(2, 4)], onnx_path)
    assert (result.capture, result.capture_reason) == ("graph", "the model is an nn.Graph")


def test_auto_does_not_fall_back_to_an_unverified_eager_capture(tmp_path):
    """Eager capture freezes values read back to Python; only verification checks them, so without it auto refuses."""
    with pytest.raises(InvalidModelError, match=r"super\(type, obj\).*only verification checks them.*capture='eager'"):
        flow2onnx.export(GraphRefuses().eval(), [flow.rand(2, 4)], tmp_path / "m.onnx", verify=False)
    assert list(tmp_path.iterdir()) == []
    result = flow2onnx.export(GraphRefuses().eval(), [flow.rand(2, 4)], tmp_path / "m.onnx", verify=False, capture="eager")
    assert (result.capture, result.capture_reason) == ("eager", "capture='eager' was asked for")


def test_auto_reports_both_failures_when_the_module_cannot_run(onnx_path):
    module = flow.nn.Linear(4, 2).eval()
    with pytest.raises(InvalidModelError, match="as an nn.Graph .*but eager capture failed too: OneFlow could not run Linear"):
        flow2onnx.export(module, [flow.rand(2, 5)], onnx_path, capture="auto")


def test_eager_capture_needs_a_module(onnx_path):
    from .helpers import relu_graph

    with pytest.raises(InvalidModelError, match="capture='eager' runs an eager oneflow.nn.Module; got a .*ReluGraph"):
        flow2onnx.export(relu_graph(), [flow.rand(2, 3)], onnx_path, capture="eager")
    with pytest.raises(InvalidModelError, match="needs example_inputs"):
        flow2onnx.export(flow.nn.ReLU(), None, onnx_path, capture="eager")


def test_eager_capture_keeps_dynamic_spatial_axes(onnx_path):
    module = flow.nn.Sequential(flow.nn.Conv2d(3, 4, 3, padding=1), flow.nn.AdaptiveAvgPool2d(1), flow.nn.Flatten()).eval()
    result = flow2onnx.export(
        module, [flow.rand(1, 3, 16, 16)], onnx_path, capture="eager", dynamic_axes={"input": {0: "n", 2: "h", 3: "w"}},
    )
    assert result.report.passed
    onnx_matches_oneflow(module, onnx_path, np.random.RandomState(7).randn(2, 3, 20, 12).astype(np.float32))


def test_resnet18_eager_capture_matches_graph_capture(tmp_path):
    flowvision = pytest.importorskip("flowvision")
    flow.manual_seed(0)
    model = flowvision.models.resnet18().eval()
    example = flow.rand(1, 3, 224, 224)
    graph = flow2onnx.export(model, [example], tmp_path / "graph.onnx", capture="graph", dynamic_batch=True)
    eager = flow2onnx.export(model, [example], tmp_path / "eager.onnx", capture="eager", dynamic_batch=True)
    assert eager.op_types == graph.op_types and eager.warnings == []
    batch = np.random.RandomState(8).rand(3, 3, 224, 224).astype(np.float32)
    runs = [ort.InferenceSession(str(tmp_path / f"{how}.onnx")).run(None, {"input": batch})[0] for how in ("graph", "eager")]
    # The same ops, attributes and weights, lowered by the same code: the same ONNX graph computes the same numbers.
    np.testing.assert_array_equal(runs[0], runs[1])
    # Against OneFlow itself: 1000 logits after 20 convolutions; 1e-4 relative to their magnitude.
    with flow.no_grad():
        want = model(flow.tensor(batch)).numpy()
    np.testing.assert_allclose(runs[1], want, rtol=1e-3, atol=1e-4 * np.abs(want).max())


class _Anchors(flow.nn.Module):
    """YOLOv5's Detect in small: anchor grids held as plain tensors that are expand() views (stride 0)."""

    def __init__(self):
        super().__init__()
        anchors = flow.tensor([[10.0, 13.0], [16.0, 30.0], [33.0, 23.0]])
        self.sizes = [(8, 80), (16, 40), (32, 20)]
        self.grids = [(anchors * s).view(1, 3, 1, 1, 2).expand(1, 3, n, n, 2) for s, n in self.sizes]

    def forward(self, *xs):
        return [x * grid for x, grid in zip(xs, self.grids)]


class _GraphOver(flow.nn.Graph):
    """A user's nn.Graph over one module, as one-yolov5's export builds it."""

    def __init__(self, module):
        super().__init__()
        self.model = module

    def build(self, *xs):
        return self.model(*xs)


def _anchor_inputs():
    return [flow.rand(1, 3, n, n, 2) for _, n in _Anchors().sizes]


def test_stride0_views_survive_graph_capture_of_a_module(onnx_path):
    module = _Anchors().eval()
    before = [grid.numpy().copy() for grid in module.grids]
    result = flow2onnx.export(module, _anchor_inputs(), onnx_path)
    assert result.report.passed and result.warnings == []
    for grid, values in zip(module.grids, before):
        assert 0 in grid.stride()  # the module keeps its own views, with their values
        np.testing.assert_array_equal(grid.numpy(), values)
    onnx_matches_oneflow(module, onnx_path, *[x.numpy() for x in _anchor_inputs()])


def test_a_graph_the_user_compiles_keeps_its_stride0_views(onnx_path):
    module = _Anchors().eval()
    before = [grid.numpy().copy() for grid in module.grids]
    inputs = [x.numpy() for x in _anchor_inputs()]
    want = [y.numpy().copy() for y in module(*[flow.tensor(x) for x in inputs])]

    graph = _GraphOver(module)
    graph._compile(*_anchor_inputs())  # through flow2onnx's compile guard, installed at import
    junk = [flow.rand(1, 3, 80, 80, 2) * 3 for _ in range(50)]  # memory a overflowed view would lose to
    for grid, values in zip(module.grids, before):
        np.testing.assert_array_equal(grid.numpy(), values)
    result = flow2onnx.export(graph, None, onnx_path)
    assert result.report.passed
    session = ort.InferenceSession(str(onnx_path))
    got = session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})
    for g, w in zip(got, want):  # against eager outputs taken before anything was compiled
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * np.abs(w).max())
    del junk


def test_a_graph_compiled_before_the_guard_holding_plain_tensors_is_refused(tmp_path):
    """A graph compiled by OneFlow's own, unguarded compile (as before flow2onnx is imported) whose modules
    hold plain tensors cannot be told from one whose stride-0 views were overwritten: refused, nothing written."""
    module = _Anchors().eval()
    module.grids = [grid.contiguous() for grid in module.grids]  # contiguous, so the unguarded compile is harmless here

    graph = _GraphOver(module)
    flow.nn.Graph._compile.__wrapped__(graph, *_anchor_inputs())  # OneFlow's compile, without the guard
    with pytest.raises(InvalidModelError, match=r"compiled before flow2onnx was imported.*_Anchors\.grids.*Import flow2onnx before compiling"):
        flow2onnx.export(graph, None, tmp_path / "model.onnx")
    assert list(tmp_path.iterdir()) == []


def test_an_uncompiled_graph_is_compiled_with_its_stride0_views_protected(onnx_path):
    module = _Anchors().eval()
    before = [grid.numpy().copy() for grid in module.grids]

    result = flow2onnx.export(_GraphOver(module), _anchor_inputs(), onnx_path)
    assert result.report.passed and result.warnings == []
    for grid, values in zip(module.grids, before):
        np.testing.assert_array_equal(grid.numpy(), values)


def test_no_graph_is_collected_while_another_compiles():
    """A graph freed by the cyclic collector resets OneFlow's table of variable tensors (Graph.__del__),
    which a compile in progress fills and reads: the guard pauses the collector while a graph compiles."""
    import gc

    seen = []

    class Watching(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.fc = flow.nn.Linear(3, 2)

        def build(self, x):
            seen.append(gc.isenabled())
            return self.fc(x)

    assert gc.isenabled()
    Watching()._compile(flow.rand(2, 3))
    assert seen == [False] and gc.isenabled()
