"""Reading weights out of OneFlow's memory: small ones in batches, large ones alone and uncopied,
each the same array that one ``.numpy()`` of its tensor gives, in the order asked for."""

from __future__ import annotations

import numpy as np
import pytest

from flow2onnx.exporter import weights as weights_module
from flow2onnx.exporter.weights import StateWeights, read_weights
from flow2onnx.errors import InvalidModelError
from flow2onnx.lowering.graph import TensorInfo

from .helpers import flow


def info_of(name, tensor):
    return TensorInfo(name, tuple(tensor.shape), np.dtype(tensor.numpy().dtype))


def mixed_tensors():
    rng = np.random.default_rng(0)
    return {
        "a": flow.tensor(rng.random((3, 4), dtype=np.float32)),
        "b": flow.tensor(rng.integers(0, 9, (5,)).astype(np.int64)),
        "big": flow.tensor(rng.random((300, 300), dtype=np.float32)),
        "c": flow.tensor(np.float32(2.5)),
        "d": flow.tensor(rng.random((2, 2, 2)) > 0.5),
        "empty": flow.tensor(np.zeros((0, 3), np.float32)),
        "e": flow.tensor(rng.random((7,), dtype=np.float64)),
    }


def test_many_gives_each_weight_as_its_own_numpy_in_order():
    tensors = mixed_tensors()
    infos = [info_of(name, t) for name, t in reversed(list(tensors.items()))]
    got = list(StateWeights(tensors).many(infos))
    assert [info.name for info, _ in got] == [info.name for info in infos]
    for info, array in got:
        expected = tensors[info.name].numpy()
        assert array.dtype == expected.dtype and array.shape == expected.shape
        np.testing.assert_array_equal(array, expected)


def test_large_weights_share_oneflows_memory():
    tensors = mixed_tensors()
    ((_, array),) = StateWeights(tensors).many([info_of("big", tensors["big"])])
    assert not array.flags.owndata and np.shares_memory(array, tensors["big"].numpy())


def test_batches_end_at_their_bounds(monkeypatch):
    monkeypatch.setattr(weights_module, "BATCH_WEIGHTS", 3)
    fetched = []
    real = weights_module._fetch_together
    monkeypatch.setattr(weights_module, "_fetch_together", lambda ts: fetched.append(len(ts)) or real(ts))
    tensors = {f"w{i}": flow.ones(4) * i for i in range(8)}
    got = list(StateWeights(tensors).many([info_of(n, t) for n, t in tensors.items()]))
    assert fetched == [3, 3, 2]
    assert [float(a[0]) for _, a in got] == list(range(8))


def test_a_missing_weight_names_itself():
    with pytest.raises(InvalidModelError, match="'gone' of the graph has no entry"):
        list(StateWeights({}).many([TensorInfo("gone", (1,), np.dtype(np.float32))]))


def test_plain_readers_are_called_once_per_weight():
    names = []
    infos = [TensorInfo(n, (1,), np.dtype(np.float32)) for n in "xyz"]
    got = list(read_weights(lambda name: names.append(name) or np.zeros(1, np.float32), infos))
    assert names == ["x", "y", "z"] and [i.name for i, _ in got] == names
