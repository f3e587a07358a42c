"""one-yolov5's own export path, offline: the model built from its architecture with random weights,
exported as its ``export.py`` does, and the file checked against outputs taken before anything
was compiled.

That path broke once: OneFlow 0.9 on the CPU overwrites the memory of the ``expand()`` views a
module keeps (``Detect.anchor_grid``) once a graph over them compiles, so a reference computed
eagerly after the user's compile was garbage (differences of 1.5e32). The reference here is taken
before any compile, at batch 1 and at batch 3, and compared by the verification's own rule.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import flow2onnx
from flow2onnx.exporter.verify.comparison import compare

from .helpers import flow
from .yolo import DetectionModel

# A small image, a multiple of the largest stride (32), not square: one-yolov5's export takes any.
HEIGHT, WIDTH = 128, 96


def trained_looking(model):
    """Random batch-norm statistics and affine terms, so that no layer is an identity."""
    generator = np.random.default_rng(1)
    for module in model.modules():
        if isinstance(module, flow.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(flow.tensor(generator.normal(0, 0.1, n).astype(np.float32)))
            module.running_var.copy_(flow.tensor(generator.uniform(0.5, 2.0, n).astype(np.float32)))
            module.weight.data.copy_(flow.tensor(generator.uniform(0.5, 1.5, n).astype(np.float32)))
            module.bias.data.copy_(flow.tensor(generator.normal(0, 0.1, n).astype(np.float32)))
    return model


class YOLOGraph(flow.nn.Graph):
    """export.py's graph: the model as an attribute, built with one image."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def build(self, x):
        return self.model(x)


@pytest.mark.parametrize("dynamic", [False, True], ids=["static", "dynamic"])
@pytest.mark.parametrize("size", ["yolov5n", "yolov5s"])
def test_one_yolov5_export_writes_a_file_that_matches_the_model_before_any_compile(tmp_path, size, dynamic):
    flow.manual_seed(0)
    model = trained_looking(DetectionModel(size)).eval()
    # export.py: the Detect head in export mode (one output), dynamic grids with --dynamic, two dry runs.
    model.detect.export, model.detect.dynamic = True, dynamic
    image = flow.zeros(1, 3, HEIGHT, WIDTH)
    with flow.no_grad():
        for _ in range(2):
            model(image)
    generator = np.random.default_rng(2)
    inputs = {batch: generator.random((batch, 3, HEIGHT, WIDTH), dtype=np.float32) for batch in (1, 3)}
    with flow.no_grad():
        want = {batch: model(flow.tensor(x))[0].numpy().copy() for batch, x in inputs.items()}
    assert np.isfinite(want[1]).all() and want[1].shape == (1, 3 * (16 * 12 + 8 * 6 + 4 * 3), 85)

    graph = YOLOGraph(model)
    graph._compile(image)
    path = tmp_path / f"{size}.onnx"
    result = flow2onnx.convert_to_onnx_and_check(graph, onnx_model_path=str(path), dynamic_batch_size=dynamic, opset=12, device="cpu")
    assert result.report.verified

    model_proto = onnx.load(str(path))
    onnx.checker.check_model(model_proto)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (name,) = [i.name for i in session.get_inputs()]
    batches = (1, 3) if dynamic else (1,)
    for batch in batches:
        (got,) = session.run(None, {name: inputs[batch]})
        comparison = compare("output", want[batch], got, batch_size=batch)
        assert comparison.passed, comparison
    # The grids the model keeps are still its own after all that.
    with flow.no_grad():
        np.testing.assert_allclose(model(flow.tensor(inputs[1]))[0].numpy(), want[1], rtol=1e-5, atol=1e-3)
    if not dynamic:
        assert [d.dim_value for d in model_proto.graph.input[0].type.tensor_type.shape.dim] == [1, 3, HEIGHT, WIDTH]
