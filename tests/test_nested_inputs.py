"""Example inputs nested in tuples, lists and dicts, and Python constants beside tensors: the
model's inputs are the tensors, named after their paths; OneFlow runs the module with them put back
in place; flow2onnx.runtime.Model takes the arguments nested again. Compared with OneFlow's eager
module at sizes 1, the example's and others on every dynamic axis, on every output."""

from __future__ import annotations

import numpy as np
import pytest

import flow2onnx
from flow2onnx.errors import ModelInputError
from flow2onnx.runtime import Model

from .helpers import flow

RNG = np.random.default_rng(6)


def signed(*shape) -> np.ndarray:
    return (RNG.standard_normal(shape) * 10.0 ** RNG.integers(-2, 2, size=shape)).astype(np.float32)


def flat(value) -> list:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in flat(item)]
    if isinstance(value, (tuple, list)):
        return [leaf for item in value for leaf in flat(item)]
    return [value]


def as_flow(value):
    if isinstance(value, dict):
        return {key: as_flow(item) for key, item in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(as_flow(item) for item in value)
    return flow.tensor(value) if isinstance(value, np.ndarray) else value


def assert_matches(model, session: Model, *arguments):
    want = [t.numpy() for t in flat(model(*as_flow(list(arguments))))]
    got = list(session.run(*arguments).values())
    assert len(got) == len(want)
    for a, b in zip(got, want):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(b).max())))


class Recurrent(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = flow.nn.LSTM(4, 6, batch_first=True)

    def forward(self, x, state):
        return self.rnn(x, state)  # (output, (h, c)): three outputs, flattened as OneFlow's nn.Graph does


@pytest.mark.parametrize("capture", ["graph", "eager"])
def test_an_lstm_called_with_its_initial_state_as_a_tuple(tmp_path, capture):
    model = Recurrent().eval()
    path = tmp_path / "m.onnx"
    axes = {"x": {0: "n", 1: "t"}, "state.0": {1: "n"}, "state.1": {1: "n"}}
    example = [flow.tensor(signed(3, 5, 4)), (flow.tensor(signed(1, 3, 6)), flow.tensor(signed(1, 3, 6)))]
    result = flow2onnx.export(model, example, path, dynamic_axes=axes, capture=capture)
    assert result.report.verified and result.capture == capture
    session = Model(path)
    assert session.input_names == ["x", "state.0", "state.1"] and len(session.output_names) == 3
    for n, t in [(1, 5), (3, 5), (2, 1), (7, 9)]:
        assert_matches(model, session, signed(n, t, 4), (signed(1, n, 6), signed(1, n, 6)))
    # The flat form is the file's own: by name.
    x, h, c = signed(2, 3, 4), signed(1, 2, 6), signed(1, 2, 6)
    assert all(np.array_equal(a, b) for a, b in zip(session.run({"x": x, "state.0": h, "state.1": c}).values(), session.run(x, (h, c)).values()))


class Batch(flow.nn.Module):
    def forward(self, batch):
        low, high = batch["bounds"]
        return flow.clamp(batch["x"] * batch["scale"], -1.0, 1.0) + low - high, batch["x"].sum(dim=1)


def test_a_dict_argument_with_a_list_inside(tmp_path):
    model = Batch().eval()
    path = tmp_path / "m.onnx"
    example = {"x": signed(2, 3), "scale": signed(2, 3), "bounds": [signed(2, 3), signed(2, 3)]}
    names = ["batch.x", "batch.scale", "batch.bounds.0", "batch.bounds.1"]
    flow2onnx.export(model, [as_flow(example)], path, dynamic_axes={name: {0: "n"} for name in names})
    session = Model(path)
    assert session.input_names == names
    for n in (1, 2, 9):
        assert_matches(model, session, {"x": signed(n, 3), "scale": signed(n, 3), "bounds": [signed(n, 3), signed(n, 3)]})
    with pytest.raises(ModelInputError, match=r"argument 0 must be a dict with the keys 'x', 'scale', 'bounds'"):
        session.run({"x": signed(1, 3)})


class Padded(flow.nn.Module):
    def forward(self, x, pads, mode="constant"):
        return flow.nn.functional.pad(x, pads, mode=mode)


@pytest.mark.parametrize("pads, mode", [((1, 2), "constant"), ((1, 1, 2, 0), "reflect")])
def test_python_constants_beside_tensors_are_fixed_in_the_file(tmp_path, pads, mode):
    model = Padded().eval()
    path = tmp_path / "m.onnx"
    flow2onnx.export(model, [flow.tensor(signed(1, 2, 4, 5)), pads, mode], path, dynamic_batch=True)
    session = Model(path)
    assert session.input_names == ["x"]
    for batch in (1, 3):
        assert_matches(model, session, signed(batch, 2, 4, 5), pads, mode)
    with pytest.raises(ModelInputError, match=r"argument 1 was \[.*\] when the model was exported, and is fixed in the file"):
        session.run(signed(1, 2, 4, 5), (0, 0), mode)


@pytest.mark.parametrize("example, message", [
    ([{}], r"example input 'batch' is an empty dict"),
    ([{"a.b": np.zeros((1, 3), np.float32)}], r"has the key 'a.b'"),
    ([{"x": ()}], r"example input 'batch.x' is an empty tuple"),
])
def test_nested_examples_that_name_nothing_are_refused(tmp_path, example, message):
    with pytest.raises(flow2onnx.InvalidModelError, match=message):
        flow2onnx.export(Batch().eval(), example, tmp_path / "m.onnx")
    assert list(tmp_path.iterdir()) == []


def test_a_shape_given_alone_is_still_told_to_become_a_tensor(tmp_path):
    with pytest.raises(flow2onnx.InvalidModelError, match=r"is the shape \(1, 2, 4, 5\), not a tensor"):
        flow2onnx.export(Padded().eval(), [(1, 2, 4, 5)], tmp_path / "m.onnx")
