"""Running exported models: provider choice, checked inputs, model-file errors, the image helper,
``flow2onnx run``/``info``, and the digits demo end to end. Real OneFlow exports, real onnxruntime."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections import Counter

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from flow2onnx.errors import Flow2OnnxError, InferenceError, ModelFileError, ModelInputError, ProviderError
from flow2onnx.runtime.imaging import letterbox, load_image, load_labels, preprocess_image, top_k
from flow2onnx.runtime import CPU, CUDA, TENSORRT, Model, describe

from .helpers import Lambda, export_module, flow
from .models import TinyCNN

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")
DEMO = os.path.join(ROOT, "examples", "digits_demo.py")

GPU_BUILD = bool({CUDA, TENSORRT} & set(onnxruntime.get_available_providers()))
cpu_only = pytest.mark.skipif(GPU_BUILD, reason="this onnxruntime has a GPU provider; these cases need a CPU-only build")


def cli(*args, cwd=ROOT):
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


# ---------------------------------------------------------------- models, exported once per module


@pytest.fixture(scope="module")
def pair_model(tmp_path_factory):
    """Two inputs sharing a symbolic batch: output = 2 * input_0 + input_1."""
    path = tmp_path_factory.mktemp("pair") / "pair.onnx"
    export_module(Lambda(lambda self, x, y: x * 2 + y), [(2, 3, 4), (2, 3, 4)], path, dynamic_batch=True)
    return str(path)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    """A small RGB classifier on 16x16 images with 4 classes, and its module (for parameter counts)."""
    flow.manual_seed(0)
    module = TinyCNN().eval()
    path = tmp_path_factory.mktemp("cnn") / "cnn.onnx"
    export_module(module, [(1, 3, 16, 16)], path, dynamic_batch=True)
    return str(path), module


@pytest.fixture
def pair(pair_model):
    return Model(pair_model)


def arrays(batch=2, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((batch, 3, 4), dtype=np.float32), rng.random((batch, 3, 4), dtype=np.float32)


# ---------------------------------------------------------------- provider choice


def test_automatic_choice_takes_the_best_working_provider(pair_model, caplog):
    caplog.set_level(logging.INFO, logger="flow2onnx")
    model = Model(pair_model)
    available = onnxruntime.get_available_providers()
    preferred = [name for name in (TENSORRT, CUDA, CPU) if name in available]
    assert model.provider in preferred
    if not GPU_BUILD:
        assert model.providers == [CPU]
        assert "no GPU execution provider in this onnxruntime" in model.provider_note
        assert "onnxruntime-gpu" in model.provider_note
        assert f"pair.onnx: running on {CPU}" in caplog.text


def test_cpu_only_machine_falls_back_to_cpu_and_says_so(pair_model, caplog):
    caplog.set_level(logging.INFO, logger="flow2onnx")
    model = Model(pair_model, available=[CPU])
    assert model.providers == [CPU]
    assert model.provider_failures == {}
    assert "there is no GPU execution provider" in model.provider_note
    assert "running on CPUExecutionProvider: chosen automatically" in caplog.text


@cpu_only
def test_providers_reported_but_failing_fall_back_in_order(pair_model, caplog):
    # This onnxruntime lacks TensorRT and CUDA; declaring them available reproduces onnxruntime-gpu on
    # a machine without their libraries: onnxruntime leaves them out of the session.
    caplog.set_level(logging.INFO, logger="flow2onnx")
    model = Model(pair_model, available=[TENSORRT, CUDA, CPU])
    assert model.providers == [CPU]
    assert list(model.provider_failures) == [TENSORRT, CUDA]
    assert "falling back" in model.provider_note
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any(m.startswith(f"{TENSORRT} is reported available but did not initialise") and m.endswith(f"falling back to {CPU}") for m in warnings)
    assert any(m.startswith(f"{CUDA} is reported available but did not initialise") for m in warnings)
    x, y = arrays()
    np.testing.assert_allclose(model.run(x, y)["output"], 2 * x + y, rtol=1e-6)


def test_explicit_list_overrides_the_automatic_choice(pair_model):
    for spelling in (["cpu"], ["CPUExecutionProvider"], [("CPU", {})]):
        model = Model(pair_model, spelling)
        assert model.providers == [CPU]
        assert model.provider_note == "as requested"


@cpu_only
def test_explicit_list_skips_an_unavailable_provider(pair_model, caplog):
    model = Model(pair_model, ["cuda", "cpu"])
    assert model.providers == [CPU]
    assert model.provider_failures == {CUDA: "is not available in this onnxruntime"}
    assert f"{CUDA} is not available in this onnxruntime" in caplog.text


@cpu_only
def test_explicit_unavailable_provider_alone_is_an_error(pair_model):
    with pytest.raises(ProviderError) as caught:
        Model(pair_model, ["cuda"])
    message = str(caught.value)
    assert message.startswith(f"none of the requested execution providers ({CUDA}) is available in this onnxruntime")
    assert "install onnxruntime-gpu" in message and "leave the providers out" in message


@cpu_only
def test_explicit_provider_that_fails_to_initialise_is_an_error(pair_model):
    with pytest.raises(ProviderError) as caught:
        Model(pair_model, ["tensorrt"], available=[TENSORRT, CPU])
    assert str(caught.value) == (
        f"no requested execution provider works here: {TENSORRT} is reported available but did not initialise; "
        "add cpu to the providers to fall back, or leave them out to choose automatically"
    )


@pytest.mark.parametrize(
    "providers, message",
    [
        (["cdua"], "unknown execution provider 'cdua'; onnxruntime knows: "),
        ([], "the providers list is empty"),
        ([42], "a provider is a name or (name, options), got 42"),
    ],
)
def test_bad_provider_lists(pair_model, providers, message):
    with pytest.raises(ProviderError) as caught:
        Model(pair_model, providers)
    assert str(caught.value).startswith(message)


def test_unknown_provider_message_lists_the_short_names(pair_model):
    with pytest.raises(ProviderError) as caught:
        Model(pair_model, ["cdua"])
    known = str(caught.value).split("onnxruntime knows: ")[1].split(", ")
    assert {"cpu", "cuda", "tensorrt"} <= set(known)


# ---------------------------------------------------------------- inputs and outputs


def test_inputs_by_position_name_or_mapping_give_named_outputs(pair):
    x, y = arrays(batch=3)
    expected = 2 * x + y
    assert [spec.name for spec in pair.inputs] == ["input_0", "input_1"]
    assert pair.inputs[0].shape == ("batch", 3, 4) and pair.inputs[0].dtype == np.float32
    for outputs in (pair.run(x, y), pair.run(input_1=y, input_0=x), pair.run({"input_0": x, "input_1": y}), pair.run(x, input_1=y), pair(x, y)):
        assert list(outputs) == ["output"]
        np.testing.assert_allclose(outputs["output"], expected, rtol=1e-6)
        assert outputs["output"].shape == (3, 3, 4)


def test_non_contiguous_inputs_are_accepted(pair):
    x, y = arrays(batch=4)
    np.testing.assert_allclose(pair.run(x[::2], y[::2])["output"], 2 * x[::2] + y[::2], rtol=1e-6)


EXPECTS = "expects shape [batch, 3, 4] (float32), got"
PAIR_INPUTS = "'input_0' [batch, 3, 4] (float32), 'input_1' [batch, 3, 4] (float32)"


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda m, x, y: m.run(x, nope=y), f"the model has no input 'nope'; its inputs are {PAIR_INPUTS}"),
        (lambda m, x, y: m.run(x), f"missing input 'input_1'; the model's inputs are {PAIR_INPUTS}"),
        (lambda m, x, y: m.run(), "missing inputs 'input_0', 'input_1'"),
        (lambda m, x, y: m.run(x, y, x), f"the model takes 2 inputs ({PAIR_INPUTS}), got 3 arrays"),
        (lambda m, x, y: m.run(x, y, input_0=x), "input 'input_0' was given twice, by position and by name"),
        (
            lambda m, x, y: m.run(x[0], y),
            f"input 'input_0' {EXPECTS} [3, 4] (float32): 2 dimensions instead of 3 (add the batch axis: array[None])",
        ),
        (lambda m, x, y: m.run(x, np.zeros((2, 3, 5), np.float32)), f"input 'input_1' {EXPECTS} [2, 3, 5] (float32): dimension 2 is 5, the model needs 4"),
        (lambda m, x, y: m.run(x.astype(np.float64), y), f"input 'input_0' {EXPECTS} [2, 3, 4] (float64): convert it with array.astype(np.float32)"),
        (lambda m, x, y: m.run(x, y.astype(np.int64)), f"input 'input_1' {EXPECTS} [2, 3, 4] (int64): convert it with array.astype(np.float32)"),
        (
            lambda m, x, y: m.run(x, np.zeros((3, 3, 4), np.float32)),
            f"input 'input_1' {EXPECTS} [3, 3, 4] (float32): dimension 0 (batch) is 3, but input 'input_0' has batch = 2",
        ),
        (lambda m, x, y: m.run([[1.0, 2.0], [3.0]], y), "input 'input_0' expects [batch, 3, 4] (float32); the value given is not an array"),
    ],
    ids=["unknown-name", "missing", "none", "too-many", "twice", "rank", "fixed-dim", "float64", "int64", "batch-mismatch", "ragged"],
)
def test_bad_inputs_name_what_the_model_expects(pair, call, message):
    x, y = arrays()
    with pytest.raises(ModelInputError) as caught:
        call(pair, x, y)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, Flow2OnnxError)


# ---------------------------------------------------------------- model files


@pytest.fixture
def broken_files(pair_model, tmp_path):
    data = open(pair_model, "rb").read()
    files = {
        "half": data[: len(data) // 2],
        "head": data[:20],  # parses: ends cleanly after a field, but has no graph
        "text": b"these are not the weights you are looking for\n",
        "empty": b"",
    }
    paths = {}
    for name, content in files.items():
        paths[name] = tmp_path / f"{name}.onnx"
        paths[name].write_bytes(content)
    Image.new("RGB", (8, 8), (200, 10, 10)).save(tmp_path / "picture.png")
    paths["png"] = tmp_path / "picture.png"
    paths["missing"] = tmp_path / "missing.onnx"
    paths["directory"] = tmp_path
    return paths


@pytest.mark.parametrize(
    "kind, message",
    [
        ("missing", "model file {path} does not exist; check the path, or export the model first"),
        ("empty", "model file {path} is empty (0 bytes): it was not written completely; export or copy it again"),
        ("half", "model file {path} is truncated or damaged: it starts like an ONNX model but cannot be read to the end"),
        ("head", "model file {path} is truncated or damaged: it starts like an ONNX model but cannot be read to the end; export or copy it again"),
        ("text", "{path} is not an ONNX model: it cannot be read as onnx.ModelProto"),
        ("png", "{path} is not an ONNX model: it cannot be read as onnx.ModelProto"),
        ("directory", "{path} is a directory; pass the .onnx file inside it"),
    ],
)
@pytest.mark.parametrize("opener", [Model, describe], ids=["Model", "describe"])
def test_model_file_errors(broken_files, kind, message, opener):
    path = broken_files[kind]
    with pytest.raises(ModelFileError) as caught:
        opener(path)
    assert str(caught.value).startswith(message.format(path=os.path.abspath(path)))
    assert str(caught.value).rstrip().endswith(("again", "first (flow2onnx export)", "export wrote", "inside it"))


def _save_graph(path, nodes, inputs, outputs, opsets=(("", 17),)):
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets]), path)
    return str(path)


def test_model_onnxruntime_cannot_load(tmp_path):
    # Valid ONNX (the checker skips domains it does not know), but no onnxruntime kernel exists for it.
    path = _save_graph(
        tmp_path / "custom.onnx",
        [helper.make_node("Frobnicate", ["x"], ["y"], domain="com.example")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
        opsets=(("", 17), ("com.example", 1)),
    )
    with pytest.raises(ModelFileError) as caught:
        Model(path)
    message = str(caught.value)
    assert message.startswith(f"onnxruntime cannot load {path}: ") and "Frobnicate" in message
    assert message.endswith("upgrade onnxruntime or export with a lower opset")


def test_model_that_fails_the_checker(tmp_path):
    path = _save_graph(
        tmp_path / "invalid.onnx",
        [helper.make_node("Relu", ["x", "x"], ["y"])],  # Relu takes one input
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    with pytest.raises(ModelFileError) as caught:
        Model(path)
    assert str(caught.value).startswith(f"{path} is not a valid ONNX model: ")
    assert describe(path).checker_error is not None


def test_failure_inside_onnxruntime_is_an_inference_error(tmp_path):
    # The input passes the checks (its dimension is symbolic), but 3 elements cannot be reshaped to 2x2.
    path = _save_graph(
        tmp_path / "reshape.onnx",
        [helper.make_node("Reshape", ["x", "shape"], ["y"])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 2])],
    )
    model = onnx.load(path)
    model.graph.initializer.append(numpy_helper.from_array(np.array([2, 2], dtype=np.int64), "shape"))
    onnx.save(model, path)
    runner = Model(path)
    assert runner.run(np.arange(4, dtype=np.float32))["y"].tolist() == [[0, 1], [2, 3]]
    with pytest.raises(InferenceError) as caught:
        runner.run(np.arange(3, dtype=np.float32))
    assert str(caught.value).startswith("onnxruntime failed to run reshape.onnx on ")


# ---------------------------------------------------------------- describe


def test_describe_reads_shapes_opsets_ops_and_parameters(cnn):
    path, module = cnn
    info = describe(path)
    assert [(s.name, s.shape, s.dtype_text) for s in info.inputs] == [("input", ("batch", 3, 16, 16), "float32")]
    assert [(s.name, s.shape, s.dtype_text) for s in info.outputs] == [("output", ("batch", 4), "float32")]
    assert info.opsets == {"ai.onnx": 17}
    assert info.op_counts["Conv"] == 1 and info.op_counts["Relu"] == 1
    # Weights counted from the OneFlow module itself: parameters plus BatchNorm's running statistics.
    weights = sum(p.numel() for p in module.parameters()) + module.bn.running_mean.numel() + module.bn.running_var.numel()
    assert info.parameters == weights
    assert info.parameter_bytes == 4 * weights
    assert info.checker_error is None and info.producer.startswith("flow2onnx")
    text = info.to_text()
    assert "  input  [batch, 3, 16, 16]  float32" in text
    assert f"parameters: {weights:,} in " in text and "onnx.checker: ok" in text


# ---------------------------------------------------------------- image helper


@pytest.fixture
def wide_picture(tmp_path):
    """40 wide, 20 high, one colour: letterboxed to 16x16 it fills the top 8 rows."""
    path = tmp_path / "wide.png"
    Image.new("RGB", (40, 20), (255, 0, 128)).save(path)
    return path


def test_letterbox_scales_by_the_longer_side_and_pads_below(wide_picture):
    boxed = letterbox(load_image(wide_picture), (16, 16))
    assert boxed.size == (16, 16)
    pixels = np.asarray(boxed)
    assert (pixels[:8] == (255, 0, 128)).all()
    assert (pixels[8:] == 0).all()
    tall = letterbox(Image.new("L", (10, 30), 200), (12, 24))  # height limits: scale 0.4 -> 4 x 12
    assert tall.size == (24, 12)
    assert (np.asarray(tall)[:, :4] == 200).all() and (np.asarray(tall)[:, 4:] == 0).all()


def test_preprocess_gives_a_batched_chw_float_array_in_0_1(wide_picture):
    array = preprocess_image(wide_picture, (16, 16))
    assert array.shape == (1, 3, 16, 16) and array.dtype == np.float32 and array.flags.c_contiguous
    np.testing.assert_allclose(array[0, :, 0, 0], [1.0, 0.0, 128 / 255], rtol=1e-6)
    assert array.min() == 0.0 and array.max() == 1.0
    normalised = preprocess_image(wide_picture, (16, 16), mean=[0.5, 0.5, 0.5], std=[0.25, 0.5, 1.0])
    np.testing.assert_allclose(normalised[0, :, 0, 0], [2.0, -1.0, 128 / 255 - 0.5], atol=1e-6)
    np.testing.assert_allclose(normalised[0, :, 15, 0], [-2.0, -1.0, -0.5], rtol=1e-6)  # padding is black
    gray = preprocess_image(Image.open(wide_picture), (16, 16), channels=1)
    assert gray.shape == (1, 1, 16, 16)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda d: load_image(d / "nope.png"), "image file {d}/nope.png does not exist"),
        (lambda d: load_image(d / "labels.txt"), "cannot read {d}/labels.txt as an image"),
        (lambda d: preprocess_image(d / "wide.png", (8, 8), channels=4), "image input needs 1 (grayscale) or 3 (RGB) channels, the model wants 4"),
        (lambda d: preprocess_image(d / "wide.png", (8, 8), mean=[0.5, 0.5]), "mean needs 1 or 3 values (one per channel), got 2"),
        (lambda d: load_labels(d / "nope.txt"), "labels file {d}/nope.txt does not exist"),
        (lambda d: load_labels(d / "blank.txt"), "labels file {d}/blank.txt is empty"),
        (lambda d: top_k(np.zeros(4), 2, ["a", "b", "c"]), "the labels file names 3 classes but the model scores 4"),
        (lambda d: top_k(np.zeros((2, 4))), "top-k needs one vector of class scores, got an array of shape [2, 4]"),
    ],
)
def test_image_helper_errors(tmp_path, wide_picture, call, message):
    (tmp_path / "labels.txt").write_text("a\nb\n")
    (tmp_path / "blank.txt").write_text("\n\n")
    with pytest.raises(ModelInputError) as caught:
        call(tmp_path)
    assert str(caught.value).startswith(message.format(d=tmp_path))


def test_labels_and_top_k(tmp_path):
    (tmp_path / "labels.txt").write_text("cat\ndog\n bird \nfish\n\n")
    labels = load_labels(tmp_path / "labels.txt")
    assert labels == ["cat", "dog", "bird", "fish"]
    best = top_k(np.array([[0.5, 3.0, 1.0, -2.0]]), 3, labels)
    assert [(p.rank, p.index, p.name) for p in best] == [(1, 1, "dog"), (2, 2, "bird"), (3, 0, "cat")]
    logits = np.array([0.5, 3.0, 1.0, -2.0])
    softmax = np.exp(logits) / np.exp(logits).sum()
    assert best[0].probability == pytest.approx(softmax[1]) and best[0].score == 3.0
    already = top_k(np.array([0.1, 0.7, 0.2]), 1)  # a distribution is shown as it is
    assert already[0].probability == pytest.approx(0.7) and already[0].name == "class 1"


# ---------------------------------------------------------------- the command line


def test_cli_run_classifies_an_image(cnn, wide_picture, tmp_path):
    path, _ = cnn
    (tmp_path / "labels.txt").write_text("apple\nbanana\ncherry\ndate\n")
    done = cli("run", path, "--image", str(wide_picture), "--labels", str(tmp_path / "labels.txt"), "--top-k", "3")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{path} on {CPU}" or GPU_BUILD
    assert lines[1] == f"image {wide_picture} -> input 'input' [1, 3, 16, 16], letterboxed"
    assert lines[2] == "top 3 of output 'output':"
    rows = [re.match(r"\s+(\d)\.\s+([\d.]+)%\s+(\w+)\s+\(class (\d)\)$", line) for line in lines[3:6]]
    assert all(rows), lines
    # The same prediction as the library gives through the helper, in this process.
    logits = Model(path).run(preprocess_image(wide_picture, (16, 16)))["output"][0]
    expected = np.argsort(-logits)[:3]
    assert [int(row.group(4)) for row in rows] == list(expected)
    assert [row.group(3) for row in rows] == [["apple", "banana", "cherry", "date"][i] for i in expected]
    probabilities = [float(row.group(2)) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True) and sum(probabilities) <= 100.01
    if not GPU_BUILD:
        assert "running on CPUExecutionProvider: chosen automatically; there is no GPU execution provider" in done.stderr


def test_cli_run_with_named_and_positional_arrays(pair_model, tmp_path):
    x, y = arrays(batch=2)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    # --tf32 only matters on a CUDA GPU; here it must be accepted and change nothing.
    done = cli("run", pair_model, "--input", f"input_1={tmp_path / 'y.npy'}", "--input", str(tmp_path / "x.npy"), "--save", str(tmp_path / "out"), "--tf32")
    assert done.returncode == 0, done.stderr
    assert "output 'output' [2, 3, 4] float32:" in done.stdout
    assert f"saved 1 output(s) to {tmp_path / 'out'}" in done.stdout
    np.testing.assert_allclose(np.load(tmp_path / "out" / "output.npy"), 2 * x + y, rtol=1e-6)
    first = np.array2string(2 * x[0, 0, 0] + y[0, 0, 0], precision=5)
    assert first in done.stdout


def test_cli_info(pair_model):
    done = cli("info", pair_model)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith(f"model: {pair_model} (")
    assert "opsets: ai.onnx 17" in lines
    assert lines[lines.index("inputs:") + 1 : lines.index("outputs:")] == ["  input_0  [batch, 3, 4]  float32", "  input_1  [batch, 3, 4]  float32"]
    assert lines[lines.index("outputs:") + 1] == "  output  [batch, 3, 4]  float32"
    # Counted independently, from the arrays onnx itself decodes.
    model = onnx.load(pair_model)
    weights = [numpy_helper.to_array(t) for t in model.graph.initializer]
    floats = [w for w in weights if w.dtype.kind == "f"]
    assert f"parameters: {sum(w.size for w in floats):,} in {len(floats)} tensors, {sum(w.nbytes for w in floats)} B" in done.stdout
    ops = Counter(node.op_type for node in model.graph.node)
    assert lines[lines.index(f"ops: {sum(ops.values())} nodes of {len(ops)} types") + 1 : -1] == [
        f"  {op:<{max(map(len, ops))}}  {count}" for op, count in sorted(ops.items(), key=lambda item: (-item[1], item[0]))
    ]
    assert lines[-1] == "onnx.checker: ok"


@pytest.fixture
def cli_files(tmp_path, pair_model, cnn):
    np.save(tmp_path / "x.npy", arrays()[0])
    np.save(tmp_path / "x64.npy", arrays()[0].astype(np.float64))
    np.savez(tmp_path / "both.npz", x=arrays()[0])
    Image.new("RGB", (20, 20), (1, 2, 3)).save(tmp_path / "p.png")
    (tmp_path / "three.txt").write_text("a\nb\nc\n")
    (tmp_path / "junk.onnx").write_text("not a model\n")
    return {"dir": tmp_path, "pair": pair_model, "cnn": cnn[0]}


@pytest.mark.parametrize(
    "args, message",
    [
        (["run", "{pair}", "--input", "nope={dir}/x.npy"], "the model has no input 'nope'; its inputs are 'input_0' [batch, 3, 4] (float32)"),
        (["run", "{pair}", "--input", "input_0={dir}/x.npy"], "missing input 'input_1'"),
        (["run", "{pair}", "--input", "input_0={dir}/x64.npy", "--input", "input_1={dir}/x.npy"], "input 'input_0' expects shape [batch, 3, 4] (float32), got [2, 3, 4] (float64)"),
        (["run", "{pair}", "--input", "input_0={dir}/both.npz"], "{dir}/both.npz is an .npz archive"),
        (["run", "{pair}", "--input", "input_0={dir}/gone.npy"], "array file {dir}/gone.npy for input 'input_0' does not exist"),
        (["run", "{pair}", "--image", "{dir}/p.png"], "--image feeds a model with one input; this one has 2 (input_0, input_1)"),
        (["run", "{cnn}", "--image", "{dir}/gone.png"], "image file {dir}/gone.png does not exist"),
        (["run", "{cnn}", "--image", "{dir}/p.png", "--labels", "{dir}/three.txt"], "the labels file names 3 classes but the model scores 4"),
        (["run", "{cnn}"], "give the model's input: --image PICTURE or --input NAME=ARRAY.npy"),
        (["run", "{dir}/gone.onnx", "--image", "{dir}/p.png"], "model file {dir}/gone.onnx does not exist"),
        (["run", "{dir}/junk.onnx", "--image", "{dir}/p.png"], "{dir}/junk.onnx is not an ONNX model"),
        (["info", "{dir}/junk.onnx"], "{dir}/junk.onnx is not an ONNX model"),
        (["run", "{cnn}", "--image", "{dir}/p.png", "--providers", "cdua"], "unknown execution provider 'cdua'"),
    ],
)
def test_cli_user_errors(cli_files, args, message):
    done = cli(*[arg.format(**cli_files) for arg in args])
    assert done.returncode == 1, done.stdout
    error = [line for line in done.stderr.splitlines() if line.startswith("flow2onnx: error: ")]
    assert len(error) == 1 and error[0].startswith("flow2onnx: error: " + message.format(**cli_files)), done.stderr
    assert "Traceback" not in done.stderr


@cpu_only
def test_cli_explicit_gpu_provider_on_a_cpu_build(cli_files):
    done = cli("run", cli_files["cnn"], "--image", f"{cli_files['dir']}/p.png", "--providers", "cuda")
    assert done.returncode == 1
    assert f"flow2onnx: error: none of the requested execution providers ({CUDA}) is available" in done.stderr
    fallback = cli("run", cli_files["cnn"], "--image", f"{cli_files['dir']}/p.png", "--providers", "cuda,cpu")
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.splitlines()[0].endswith(f"on {CPU}")
    assert f"{CUDA} is not available in this onnxruntime" in fallback.stderr


# ---------------------------------------------------------------- the digits demo, end to end


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    done = subprocess.run([sys.executable, DEMO, "--output", str(out / "digits.onnx")], capture_output=True, text=True, timeout=300)
    return done, out


def test_demo_accuracies_agree_and_are_well_above_chance(demo):
    done, out = demo
    assert done.returncode == 0, done.stdout + done.stderr
    accuracies = dict(re.findall(r"^\s+(OneFlow|ONNX Runtime) .*?\s+([\d.]+)%\s+\(\d+/450\)$", done.stdout, re.MULTILINE))
    assert set(accuracies) == {"OneFlow", "ONNX Runtime"}, done.stdout
    assert accuracies["OneFlow"] == accuracies["ONNX Runtime"]
    assert float(accuracies["OneFlow"]) > 90.0
    assert "predictions agree on 450/450 digits" in done.stdout
    assert "all outputs match" in done.stdout and "OneFlow and ONNX Runtime agree" in done.stdout
    assert (out / "digits.onnx").exists() and load_labels(out / "digits-labels.txt")[7] == "seven"


@pytest.mark.parametrize("digit", [0, 4, 7])
def test_cli_classifies_the_demo_digits(demo, digit):
    _, out = demo
    done = cli("run", str(out / "digits.onnx"), "--image", str(out / "digits-samples" / f"digit-{digit}.png"), "--labels", str(out / "digits-labels.txt"), "--top-k", "2")
    assert done.returncode == 0, done.stderr
    top = done.stdout.splitlines()[3]
    name = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"][digit]
    assert re.match(rf"\s+1\.\s+[\d.]+%\s+{name}\s+\(class {digit}\)$", top), done.stdout


def test_cuda_keeps_float32_unless_tf32_is_asked_for(pair_model):
    # ONNX Runtime's CUDA provider allows TF32 by default; measured on an H200 it put ResNet-50's
    # outputs outside the verification tolerance, so flow2onnx asks for full float32 unless told.
    plain = Model(pair_model, ["cuda", "cpu"], available=[CUDA, CPU])
    assert plain.requested_providers[0] == (CUDA, {"use_tf32": "0"})
    assert plain.requested_providers[-1] == (CPU, {})
    assert Model(pair_model, ["cuda", "cpu"], available=[CUDA, CPU], tf32=True).requested_providers[0] == (CUDA, {"use_tf32": "1"})
    chosen = Model(pair_model, [("cuda", {"use_tf32": "1", "device_id": "0"}), "cpu"], available=[CUDA, CPU])
    assert chosen.requested_providers[0] == (CUDA, {"use_tf32": "1", "device_id": "0"})
    automatic = Model(pair_model, available=[TENSORRT, CUDA, CPU])
    assert dict(automatic.requested_providers)[CUDA] == {"use_tf32": "0"}
    x, y = arrays()
    for model in (plain, automatic):  # without CUDA here, both fall back to the CPU and still run
        np.testing.assert_allclose(model.run(x, y)["output"], 2 * x + y, rtol=1e-6)
