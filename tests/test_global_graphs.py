"""Graphs built on global tensors, as LiBai builds every model: a placement and an SBP per tensor.

OneFlow accepts only inputs laid out as the compiled graph's; flow2onnx reads each input's placement
and SBP from the graph and runs OneFlow on inputs laid out that way. Weights split over ranks (tensor
parallel) are read as the full tensor, so the ONNX file is the single-device model. On this
machine a placement has one CPU rank; the layers are built as LiBai's are (column- and
row-parallel linears split on the output and input features, a vocabulary-parallel embedding).
"""

from __future__ import annotations

import numpy as np
import onnxruntime
import pytest

import flow2onnx

from .helpers import flow

PLACEMENT = flow.placement("cpu", ranks=[0])
B = flow.sbp.broadcast


def parallel(module, sbp):
    """``module``'s weight laid out with ``sbp`` and everything else broadcast, as LiBai's layers are."""
    module.to_global(placement=PLACEMENT, sbp=B)
    module.weight = flow.nn.Parameter(module.weight.to_global(placement=PLACEMENT, sbp=sbp))
    return module


class TinyGPT(flow.nn.Module):
    """A GPT-2 block: vocabulary-parallel embedding, causal attention with column- and row-parallel
    projections, LayerNorm and a GELU MLP."""

    def __init__(self, vocab=50, width=16, context=12):
        super().__init__()
        self.embed = parallel(flow.nn.Embedding(vocab, width), flow.sbp.split(0))
        self.positions = flow.nn.Parameter(flow.randn(1, context, width).to_global(placement=PLACEMENT, sbp=B) * 0.1)
        self.norm = flow.nn.LayerNorm(width).to_global(placement=PLACEMENT, sbp=B)
        self.qkv = parallel(flow.nn.Linear(width, 3 * width), flow.sbp.split(0))
        self.proj = parallel(flow.nn.Linear(width, width), flow.sbp.split(1))
        self.up = parallel(flow.nn.Linear(width, 4 * width), flow.sbp.split(0))
        self.down = parallel(flow.nn.Linear(4 * width, width), flow.sbp.split(1))
        self.head = flow.nn.Linear(width, vocab).to_global(placement=PLACEMENT, sbp=B)
        mask = flow.tril(flow.ones(context, context)).to_global(placement=PLACEMENT, sbp=B)
        self.register_buffer("mask", mask)

    def forward(self, tokens):
        length = tokens.shape[1]
        x = self.embed(tokens) + self.positions[:, :length]
        q, k, v = self.qkv(self.norm(x)).chunk(3, dim=-1)
        scores = flow.matmul(q, k.transpose(1, 2)) / 4.0
        scores = scores.masked_fill(self.mask[:length, :length] == 0, -1e4)
        x = x + self.proj(flow.matmul(scores.softmax(-1), v))
        x = x + self.down(flow.nn.functional.gelu(self.up(self.norm(x))))
        return self.head(self.norm(x))


class Wrapped(flow.nn.Graph):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def build(self, *args):
        return self.model(*args)


def global_tokens(batch, length=8, seed=0):
    tokens = np.random.default_rng(seed).integers(0, 50, size=(batch, length))
    return tokens, flow.tensor(tokens, dtype=flow.int64, placement=PLACEMENT, sbp=B)


def test_a_gpt_block_built_on_global_tensors_exports_and_verifies_through_the_tutorial_api(tmp_path):
    from flow2onnx import convert_to_onnx_and_check

    model = TinyGPT().eval()
    graph = Wrapped(model)
    tokens, example = global_tokens(2)
    expected = graph(example).numpy()  # the compiled graph itself, run once on its own example
    result = convert_to_onnx_and_check(graph, onnx_model_path=str(tmp_path), device="cpu_global")
    assert result.report.passed
    session = onnxruntime.InferenceSession(str(tmp_path / "model.onnx"), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(session.run(None, {"input": tokens})[0], expected, rtol=1e-4, atol=1e-5)
    # The split weights were written whole: the file is the single-device model.
    assert session.get_inputs()[0].shape == [2, 8]


def test_a_global_graph_with_a_dynamic_batch_expands_its_class_token_to_every_batch(tmp_path):
    """MAE's ViT: a class token expanded to the batch, compiled at batch 1 as a global graph."""

    class ClassToken(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.patch = flow.nn.Linear(12, 8).to_global(placement=PLACEMENT, sbp=B)
            self.token = flow.nn.Parameter(flow.randn(1, 1, 8).to_global(placement=PLACEMENT, sbp=B))

        def forward(self, x):
            x = self.patch(x)
            return flow.cat([self.token.expand(x.shape[0], -1, -1), x], dim=1).sum(-1)

    model = ClassToken().eval()
    graph = Wrapped(model)
    graph._compile(flow.randn(1, 4, 12).to_global(placement=PLACEMENT, sbp=B))
    path, _ = flow2onnx.export_onnx_model(graph, onnx_model_path=str(tmp_path), dynamic_batch_size=True)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    for batch in (1, 3, 6):
        x = np.random.default_rng(batch).standard_normal((batch, 4, 12)).astype(np.float32)
        with flow.no_grad():
            want = model(flow.tensor(x, placement=PLACEMENT, sbp=B)).numpy()
        np.testing.assert_allclose(session.run(None, {"input": x})[0], want, rtol=1e-4, atol=1e-5)


def test_the_tutorial_device_argument_is_checked(tmp_path):
    from flow2onnx import convert_to_onnx_and_check

    graph = Wrapped(TinyGPT().eval())
    graph._compile(global_tokens(1)[1])
    with pytest.raises(ValueError, match="device must be one of 'cpu', 'gpu', 'cpu_global', 'gpu_global', got 'tpu'"):
        convert_to_onnx_and_check(graph, onnx_model_path=str(tmp_path), device="tpu")
    assert list(tmp_path.iterdir()) == []
