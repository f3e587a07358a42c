"""The fusion family: LayerNorm and GELU as ONNX LayerNormalization and Gelu, and nothing else.

Each pattern must fire on the forms OneFlow builds and models write, and leave every near miss to
the op-by-op lowerings. Every export is verified against OneFlow on ONNX Runtime by the export
itself (the example, then random inputs of both signs at batch 2 and 5; rtol 1e-3, atol 1e-4 for
float32).
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from .helpers import Lambda, export_module, flow

F = flow.nn.functional
FUSION = "flow2onnx-fusion"


def exported(module, shape, path, **options):
    """The export's result and model, after checking that it verified."""
    result = export_module(module, [shape], path, **options)
    assert result.report.passed
    return result, onnx.load(str(path))


def node_types(model) -> list[str]:
    return [node.op_type for node in model.graph.node]


def the_node(model, op_type: str):
    (node,) = [node for node in model.graph.node if node.op_type == op_type]
    values = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
    return node, {name: value.decode() if isinstance(value, bytes) else value for name, value in values.items()}


#: A fused layer norm: LayerNormalization of the rows minus their mean (ONNX Runtime's kernel computes
#: the variance in one pass, exact only for centred rows; see test_lowering_accuracy).
LAYER_NORM = ["ReduceMean", "Sub", "LayerNormalization"]


def centred_input(model, node) -> str:
    """What ``node`` (a LayerNormalization) normalizes: the tensor it reads minus that tensor's mean
    over the same axes (checked here)."""
    producers = {output: n for n in model.graph.node for output in n.output}
    sub = producers[node.input[0]]
    mean = producers[sub.input[1]]
    assert sub.op_type == "Sub" and mean.op_type == "ReduceMean" and mean.input[0] == sub.input[0]
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in list(mean.attribute) + list(node.attribute)}
    axes = list(attributes["axes"]) if "axes" in attributes else list(initializers(model)[mean.input[1]])
    assert attributes["keepdims"] == 1 and axes[0] == attributes["axis"] and axes == list(range(axes[0], axes[0] + len(axes)))
    return sub.input[0]


def initializers(model) -> dict:
    return {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}


class WrittenLayerNorm(flow.nn.Module):
    """LayerNorm over the last axis written out, as flowvision's ConvNeXt writes it (channels last),
    with the parameters reshaped to broadcast; ``eps_outside`` adds eps after the square root."""

    def __init__(self, channels, eps=1e-6, eps_outside=False, leak_mean=False):
        super().__init__()
        self.weight = flow.nn.Parameter(flow.randn(channels))
        self.bias = flow.nn.Parameter(flow.randn(channels))
        self.eps, self.eps_outside, self.leak_mean = eps, eps_outside, leak_mean

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        s = (x - u).pow(2).mean(-1, keepdim=True)
        std = flow.sqrt(s) + self.eps if self.eps_outside else flow.sqrt(s + self.eps)
        y = self.weight[None, None, :] * ((x - u) / std) + self.bias[None, None, :]
        return y + u if self.leak_mean else y


def var_layer_norm(eps=1e-5, unbiased=False, leak=None):
    """OneFlow's own form, written with x.var: (x - u) * rsqrt(var + eps); ``leak`` also returns an intermediate."""

    def forward(self, x):
        u = x.mean(-1, keepdim=True)
        v = x.var(-1, unbiased=unbiased, keepdim=True)
        y = (x - u) * flow.rsqrt(v + eps)
        if leak == "mean":
            return y + u
        return y * v if leak == "variance" else y

    return Lambda(forward)


# ---- layer-norm ----


@pytest.mark.parametrize(
    "module, shape, axis, epsilon, affine",
    [
        (flow.nn.LayerNorm(8), (2, 3, 8), 2, 1e-5, True),
        (flow.nn.LayerNorm((3, 8), eps=1e-3), (2, 3, 8), 1, 1e-3, True),
        (flow.nn.LayerNorm(8, elementwise_affine=False, eps=1e-6), (2, 3, 8), 2, 1e-6, False),
        (flow.nn.LayerNorm((4, 3, 8), elementwise_affine=False), (2, 4, 3, 8), 1, 1e-5, False),
    ],
    ids=["affine-one-axis", "affine-two-axes", "plain-one-axis", "plain-three-axes"],
)
def test_layer_norm_modules_become_one_layer_normalization(tmp_path, module, shape, axis, epsilon, affine):
    result, model = exported(Lambda(lambda self, x: self.ln(x), ln=module), shape, tmp_path / "m.onnx", opset=17)
    assert result.pattern_groups == {"model.ln": "layer-norm"} and result.patterns == {"layer-norm": FUSION}
    assert node_types(model) == LAYER_NORM
    node, attributes = the_node(model, "LayerNormalization")
    assert centred_input(model, node) == "input"
    assert attributes["axis"] == axis and math.isclose(attributes["epsilon"], epsilon, rel_tol=1e-6)
    if affine:  # the module's own parameters, as they are
        assert list(node.input[1:]) == ["model.ln.weight", "model.ln.bias"]
    else:
        assert len(node.input) == 2 and np.array_equal(initializers(model)[node.input[1]], np.ones(shape[axis:], np.float32))


def test_functional_layer_norm_and_the_var_form_written_by_hand_are_fused(tmp_path):
    result, model = exported(Lambda(lambda self, x: F.layer_norm(x, (8,), eps=1e-3)), (2, 3, 8), tmp_path / "f.onnx", opset=17)
    assert node_types(model) == LAYER_NORM and the_node(model, "LayerNormalization")[1]["epsilon"] == pytest.approx(1e-3)
    result, model = exported(var_layer_norm(eps=1e-4), (2, 3, 8), tmp_path / "v.onnx", opset=18)
    assert node_types(model) == LAYER_NORM and the_node(model, "LayerNormalization")[1]["epsilon"] == pytest.approx(1e-4)
    assert centred_input(model, the_node(model, "LayerNormalization")[0]) == "input"


def test_the_written_out_form_is_fused_with_its_reshaped_parameters(tmp_path):
    result, model = exported(Lambda(lambda self, x: self.norm(x), norm=WrittenLayerNorm(8)), (2, 5, 8), tmp_path / "m.onnx", opset=17)
    assert result.pattern_groups == {"model.norm": "layer-norm"}
    assert node_types(model) == LAYER_NORM
    node, attributes = the_node(model, "LayerNormalization")
    assert centred_input(model, node) == "input" and list(node.input[1:]) == ["model.norm.weight", "model.norm.bias"] and attributes["epsilon"] == pytest.approx(1e-6)


def test_layer_norm_keeps_dynamic_axes_dynamic(tmp_path):
    axes = {"input": {0: "batch", 1: "tokens"}}
    result, model = exported(Lambda(lambda self, x: self.ln(x), ln=flow.nn.LayerNorm(8)), (2, 3, 8), tmp_path / "a.onnx", dynamic_axes=axes)
    assert node_types(model) == LAYER_NORM
    # Normalized over a dynamic axis, without parameters: the scale of ones follows the input's shape.
    plain = Lambda(lambda self, x: F.layer_norm(x, (x.shape[-1],)))
    result, model = exported(plain, (2, 6), tmp_path / "b.onnx", dynamic_axes={"input": {0: "batch", 1: "features"}})
    assert "LayerNormalization" in node_types(model) and "ConstantOfShape" in node_types(model)
    # ONNX Runtime's LayerNormalization refuses to normalize one element: the run with every dynamic
    # axis at 1 says so instead of verifying there.
    assert any("not verified with every dynamic axis at 1" in w and "does not run there" in w for w in result.warnings)


@pytest.mark.parametrize(
    "module, shape",
    [
        (Lambda(lambda self, x: self.norm(x), norm=WrittenLayerNorm(8, leak_mean=True)), (2, 5, 8)),
        (Lambda(lambda self, x: self.norm(x), norm=WrittenLayerNorm(8, eps_outside=True)), (2, 5, 8)),
        (var_layer_norm(leak="mean"), (2, 3, 8)),
        (var_layer_norm(leak="variance"), (2, 3, 8)),
        (var_layer_norm(unbiased=True), (2, 3, 8)),
        # Over the channels of (N, C, H, W), as ConvNeXt's channels-first LayerNorm: not the trailing axes.
        (Lambda(lambda self, x: (x - x.mean(1, keepdim=True)) / flow.sqrt((x - x.mean(1, keepdim=True)).pow(2).mean(1, keepdim=True) + 1e-6)), (2, 4, 3, 3)),
    ],
    ids=["mean-read-outside", "eps-after-sqrt", "var-form-mean-read-outside", "variance-read-outside", "unbiased-variance", "not-trailing-axes"],
)
def test_near_misses_are_left_to_the_op_by_op_lowerings(tmp_path, module, shape):
    result, model = exported(module, shape, tmp_path / "m.onnx", opset=17)
    assert result.pattern_groups == {} and "LayerNormalization" not in node_types(model)


def test_a_scale_that_is_not_of_the_normalized_shape_stays_a_multiplication(tmp_path):
    scaled = Lambda(lambda self, x: F.layer_norm(x, (8,)) * self.scale, scale=flow.nn.Parameter(flow.randn(3, 1)))
    result, model = exported(scaled, (2, 3, 8), tmp_path / "m.onnx", opset=17)
    assert node_types(model) == LAYER_NORM + ["Mul"]
    assert len(the_node(model, "LayerNormalization")[0].input) == 2


def test_before_opset_17_and_with_the_family_disabled_layer_norm_is_lowered_op_by_op(tmp_path):
    module = Lambda(lambda self, x: self.ln(x), ln=flow.nn.LayerNorm(8))
    for options in ({"opset": 16}, {"opset": 17, "disable_plugins": [FUSION]}):
        result, model = exported(module, (2, 3, 8), tmp_path / "m.onnx", **options)
        assert result.pattern_groups == {} and "LayerNormalization" not in node_types(model) and len(model.graph.node) > 5


# ---- gelu ----

SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)


@pytest.mark.parametrize(
    "formula, approximate",
    [
        (lambda x: x * 0.5 * (1.0 + flow.erf(x / math.sqrt(2.0))), "none"),
        (lambda x: 0.5 * x * (1 + flow.erf(x * 0.7071067811865476)), "none"),
        (lambda x: 0.5 * x * (1.0 + flow.tanh(SQRT_2_OVER_PI * (x + 0.044715 * flow.pow(x, 3.0)))), "tanh"),
        (lambda x: x * 0.5 * (1.0 + flow.tanh(0.7978845608 * (x + 0.044715 * x * x * x))), "tanh"),
    ],
    ids=["erf-divided", "erf-multiplied", "tanh-pow", "tanh-cubed-by-hand"],
)
def test_written_out_gelu_becomes_one_gelu_at_opset_20(tmp_path, formula, approximate):
    module = Lambda(lambda self, x: formula(x))
    result, model = exported(module, (2, 8), tmp_path / "m.onnx", opset=20)
    assert result.pattern_groups == {"model": "gelu"}
    assert node_types(model) == ["Gelu"] and the_node(model, "Gelu")[1]["approximate"] == approximate
    result, model = exported(module, (2, 8), tmp_path / "m.onnx", opset=19)
    assert result.pattern_groups == {} and "Gelu" not in node_types(model)


@pytest.mark.parametrize(
    "formula",
    [
        lambda x: 0.5 * x * (1.0 + flow.tanh(SQRT_2_OVER_PI * (x + 0.04 * flow.pow(x, 3.0)))),  # another constant
        lambda x: x * 0.5 * (2.0 + flow.erf(x / math.sqrt(2.0))),  # another constant
        lambda x: x * 0.5 * (1.0 + flow.erf(x.relu() / math.sqrt(2.0))),  # another input inside
        lambda x: (lambda e: x * 0.5 * (1.0 + e) + e)(flow.erf(x / math.sqrt(2.0))),  # an intermediate read outside
    ],
    ids=["tanh-coefficient", "erf-offset", "two-inputs", "intermediate-read-outside"],
)
def test_near_miss_gelus_are_left_alone(tmp_path, formula):
    result, model = exported(Lambda(lambda self, x: formula(x)), (2, 8), tmp_path / "m.onnx", opset=20)
    assert result.pattern_groups == {} and "Gelu" not in node_types(model)


@pytest.mark.parametrize("module, approximate", [(flow.nn.GELU(), "none"), (flow.nn.GELU(approximate="tanh"), "tanh")])
def test_oneflow_gelu_ops_are_one_gelu_at_opset_20(tmp_path, module, approximate):
    result, model = exported(Lambda(lambda self, x: self.act(x), act=module), (2, 8), tmp_path / "m.onnx", opset=20)
    assert node_types(model) == ["Gelu"] and the_node(model, "Gelu")[1]["approximate"] == approximate


# ---- attention ----


class PackedAttention(flow.nn.Module):
    """ViT's self-attention (flowvision's form): one packed Q, K, V projection, reshaped to 5-D,
    permuted and sliced; ``variant`` writes one near miss of it."""

    def __init__(self, dim=32, heads=4, bias=True, variant=None):
        super().__init__()
        self.heads, self.scale, self.variant = heads, (dim // heads) ** -0.5, variant
        self.qkv = flow.nn.Linear(dim, 3 * dim, bias=bias)
        self.proj = flow.nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        if self.variant == "heads-first":  # (B, N, heads, 3, head size): another layout of the packed rows
            qkv = self.qkv(x).reshape(B, N, self.heads, 3, C // self.heads).permute(3, 0, 2, 1, 4)
        else:
            qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        if self.variant == "scaled-q":  # Swin's order: the scale on Q before the product
            attn = (q * self.scale) @ k.transpose(-2, -1)
        else:
            attn = (q @ k.transpose(-2, -1)) * self.scale
        attn = attn.softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(B, N, C)
        y = self.proj(y)
        return (y, attn) if self.variant == "probabilities-out" else y


class AttentionStack(flow.nn.Module):
    """An embedding, two pre-norm attention blocks with residuals, and a final LayerNorm."""

    def __init__(self, dim=32, heads=4, **attention):
        super().__init__()
        self.embed = flow.nn.Linear(dim, dim)
        self.norms = flow.nn.ModuleList([flow.nn.LayerNorm(dim) for _ in range(3)])
        self.blocks = flow.nn.ModuleList([PackedAttention(dim, heads, **attention) for _ in range(2)])

    def forward(self, x):
        x = self.embed(x)
        for norm, block in zip(self.norms, self.blocks):
            x = x + block(norm(x))
        return self.norms[2](x)


def attention_fusions(path) -> int:
    """How many Attention nodes onnxruntime.transformers' optimizer makes of the file (after ONNX
    Runtime's basic optimizations, as its default opt_level=1 does)."""
    import onnxruntime
    from onnxruntime.transformers import optimizer

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = basic = str(path).replace(".onnx", ".basic.onnx")
    onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulAddFusion"])
    optimized = optimizer.optimize_model(basic, model_type="vit", num_heads=4, hidden_size=32, opt_level=0)
    return optimized.get_fused_operator_statistics().get("Attention", 0)


def uncentred(path):
    """A copy of the file whose LayerNormalizations read their input itself, not minus its mean.

    ONNX Runtime's transformer optimizer starts its attention fusion from a LayerNormalization (or
    the SkipLayerNormalization it makes of a residual sum and one) that reads the residual stream
    directly; flow2onnx centres the rows first, for exactness on ONNX Runtime's one-pass kernels
    (whose SkipLayerNormalization has the same flaw), and so hides the attention from it. The copy
    shows that the attention itself is in the form the optimizer fuses."""
    model = onnx.load(str(path))
    producers = {output: node for node in model.graph.node for output in node.output}
    dropped = set()
    for node in model.graph.node:
        if node.op_type == "LayerNormalization":
            sub = producers[node.input[0]]
            node.input[0] = sub.input[0]
            dropped |= {id(sub), id(producers[sub.input[1]])}
    kept = [node for node in model.graph.node if id(node) not in dropped]
    del model.graph.node[:]
    model.graph.node.extend(kept)
    copy = str(path).replace(".onnx", ".uncentred.onnx")
    onnx.save(model, copy)
    return copy


@pytest.mark.parametrize("heads", [4, 2])  # head size 8 (scale 8 ** -0.5, inexact) and 16 (0.25, exact)
def test_packed_attention_is_split_into_the_form_onnxruntime_fuses(tmp_path, heads):
    module = AttentionStack(heads=heads)
    result, model = exported(module, (2, 6, 32), tmp_path / "m.onnx", dynamic_batch=True)
    assert sorted(result.pattern_groups.values()).count("attention") == 2
    types = node_types(model)
    assert "Slice" not in types and types.count("Softmax") == 2
    for softmax in (node for node in model.graph.node if node.op_type == "Softmax"):
        (divide,) = [node for node in model.graph.node if node.output[0] == softmax.input[0]]
        assert divide.op_type == "Div"
        divisor = initializers(model)[divide.input[1]]
        assert divisor == np.float32(1 / (32 // heads) ** -0.5)
    # Q, K and V are three slices of the packed weight, each read by its own MatMul.
    weights = initializers(model)
    packed = module.blocks[0].qkv.weight.numpy()
    parts = [weights[f"model.blocks.0/{part}_weight"] for part in "qkv"]
    np.testing.assert_array_equal(np.concatenate(parts), packed)
    assert "model.blocks.0.qkv.weight" not in weights  # written once, as its three slices
    # The second block's attention (the first one's input comes from a plain LayerNorm, which
    # ONNX Runtime's fusion does not start from) becomes one Attention node, once the layer norms
    # read the residual stream uncentred; as written, the centred rows hide both.
    assert attention_fusions(uncentred(tmp_path / "m.onnx")) == 1
    assert attention_fusions(tmp_path / "m.onnx") == 0
    _, unfused = exported(module, (2, 6, 32), tmp_path / "u.onnx", dynamic_batch=True, disable_plugins=[FUSION])
    assert "Slice" in node_types(unfused) and attention_fusions(tmp_path / "u.onnx") == 0


@pytest.mark.parametrize(
    "options",
    [{"variant": "scaled-q"}, {"variant": "heads-first"}, {"variant": "probabilities-out"}, {"bias": False}],
    ids=["scale-before-the-product", "heads-first-layout", "probabilities-read-outside", "no-bias"],
)
def test_near_miss_attentions_are_left_to_the_op_by_op_lowerings(tmp_path, options):
    result, model = exported(PackedAttention(**options), (2, 6, 32), tmp_path / "m.onnx")
    assert "attention" not in result.pattern_groups.values()
    assert "Slice" in node_types(model)


def test_attention_before_opset_13_is_lowered_op_by_op(tmp_path):
    result, model = exported(PackedAttention(), (2, 6, 32), tmp_path / "m.onnx", opset=12)
    assert "attention" not in result.pattern_groups.values() and "Slice" in node_types(model)
    result, model = exported(PackedAttention(), (2, 6, 32), tmp_path / "m.onnx", opset=13)
    assert result.pattern_groups == {"model": "attention"} and "Slice" not in node_types(model)
