"""Writing a model whose weights stay in OneFlow's memory until the moment they are written.

``onnx.save_model`` needs the whole ``ModelProto`` in memory, weights included, and then serialises
it into one more buffer: twice the weights above what OneFlow holds. Here the model is built
without its weights, and each weight goes from OneFlow's tensor (``Tensor.numpy()`` shares its
memory) straight to the file, one at a time (small ones fetched in batches, see :mod:`.weights`):

- with external data, into ``<model>.data`` at increasing offsets, the model holding references;
- in one file, as protobuf fields appended to the serialised model. Protobuf lets a message's
  fields come in any order and a repeated field's elements be written one by one, so the file is
  the model's serialisation followed by the graph's initializer entries, each framed by hand (tag
  and length). The framing is the only thing written by hand; the field numbers come from onnx's
  descriptors.
"""

from __future__ import annotations

import math
import os
import sys
from typing import Callable, Iterable, Mapping

import numpy as np
import onnx
from onnx import TensorProto, helper

from .. import progress
from ..errors import InvalidModelError
from ..lowering.graph import TensorInfo
from .weights import read_weights

_GRAPH_FIELD = onnx.ModelProto.DESCRIPTOR.fields_by_name["graph"].number
_INITIALIZER_FIELD = onnx.GraphProto.DESCRIPTOR.fields_by_name["initializer"].number
_RAW_DATA_FIELD = onnx.TensorProto.DESCRIPTOR.fields_by_name["raw_data"].number
_LENGTH_DELIMITED = 2
# Offsets in the data file are aligned so that runtimes can map tensors directly.
_ALIGNMENT = 64


def _varint(value: int) -> bytes:
    if value < 0x80:  # one byte: most tags and the lengths of small messages
        return bytes((value,))
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field_number: int, length: int) -> bytes:
    return _varint((field_number << 3) | _LENGTH_DELIMITED) + _varint(length)


def _little_endian_bytes(array: np.ndarray) -> memoryview:
    array = np.ascontiguousarray(array)
    if sys.byteorder != "little" and array.dtype.byteorder in ("=", ">") and array.dtype.itemsize > 1:
        array = array.byteswap().view(array.dtype.newbyteorder("<"))
    return memoryview(array).cast("B")


def _header(info: TensorInfo) -> TensorProto:
    """The TensorProto of a weight without its data: name, dims, data type."""
    tensor = TensorProto()
    tensor.name = info.name
    tensor.dims.extend(info.shape)
    tensor.data_type = helper.np_dtype_to_tensor_dtype(info.dtype)
    return tensor


def weight_reader(read: Callable[[str], np.ndarray], derived: Mapping) -> Callable[[str], np.ndarray]:
    """``read`` (a graph's ``read_weight``), extended to the weights that lowerings derived from others
    (name -> :class:`~flow2onnx.lowering.context.DerivedWeight`): each is computed from its source's
    array when it is read, so a reshaped weight is a view of OneFlow's memory, not a copy."""
    if not derived:
        return read

    def read_weight(name: str) -> np.ndarray:
        entry = derived.get(name)
        return read(name) if entry is None else entry.compute(read_weight(entry.source))

    return read_weight


def _nbytes(info: TensorInfo) -> int:
    return math.prod(info.shape) * info.dtype.itemsize


def weights_nbytes(weights: Iterable[TensorInfo]) -> int:
    return sum(map(_nbytes, weights))


def _checked(info: TensorInfo, array: np.ndarray) -> np.ndarray:
    if tuple(array.shape) != tuple(info.shape) or array.dtype != info.dtype:
        raise InvalidModelError(f"weight {info.name!r} is {array.dtype}{list(array.shape)} but the graph expects {info.dtype}{list(info.shape)}")
    return array


def serialized_parts(model: onnx.ModelProto) -> tuple[bytes, bytes]:
    """``model`` serialised in two parts, ``(every field but the graph, the graph)``, without copying
    the graph: copying a 20k-node graph costs more than serialising it."""
    rest = onnx.ModelProto()
    for field, value in model.ListFields():
        if field.name == "graph":
            continue
        if field.label == field.LABEL_REPEATED:
            getattr(rest, field.name).extend(value)
        elif field.message_type is not None:
            getattr(rest, field.name).CopyFrom(value)
        else:
            setattr(rest, field.name, value)
    return rest.SerializeToString(), model.graph.SerializeToString()


def write_streamed(
    model: onnx.ModelProto, weights: list[TensorInfo], read: Callable[[str], np.ndarray], path: str, parts: tuple[bytes, bytes] | None = None
) -> None:
    """Write ``model`` plus ``weights`` (read one at a time with ``read``) as one ``.onnx`` file.

    ``parts``: the model's :func:`serialized_parts`, when the caller has them already.
    """
    rest_bytes, graph_bytes = parts or serialized_parts(model)
    headers = [_header(info).SerializeToString() for info in weights]
    sizes = [_nbytes(info) for info in weights]
    tensor_lengths = [len(h) + len(_key(_RAW_DATA_FIELD, n)) + n for h, n in zip(headers, sizes)]
    graph_length = len(graph_bytes) + sum(len(_key(_INITIALIZER_FIELD, length)) + length for length in tensor_lengths)

    with open(path, "wb") as file:
        file.write(rest_bytes)
        file.write(_key(_GRAPH_FIELD, graph_length))
        file.write(graph_bytes)
        written = _written(sizes)
        for (info, array), header, nbytes, length in zip(read_weights(read, weights), headers, sizes, tensor_lengths):
            file.write(_key(_INITIALIZER_FIELD, length))
            file.write(header)
            file.write(_key(_RAW_DATA_FIELD, nbytes))
            file.write(_little_endian_bytes(_checked(info, array)))
            written.add(nbytes)


def write_external(model: onnx.ModelProto, weights: list[TensorInfo], read: Callable[[str], np.ndarray], path: str) -> None:
    """Write ``weights`` to ``<path>.data`` one at a time, then ``model`` referring to them."""
    location = os.path.basename(path) + ".data"
    references = []
    written = _written(map(_nbytes, weights))
    with open(path + ".data", "wb") as data:
        offset = 0
        for info, array in read_weights(read, weights):
            padding = (-offset) % _ALIGNMENT
            if padding:
                data.write(b"\0" * padding)
                offset += padding
            payload = _little_endian_bytes(_checked(info, array))
            data.write(payload)
            tensor = _header(info)
            tensor.data_location = TensorProto.EXTERNAL
            for key, value in (("location", location), ("offset", str(offset)), ("length", str(payload.nbytes))):
                entry = tensor.external_data.add()
                entry.key, entry.value = key, value
            references.append(tensor)
            offset += payload.nbytes
            written.add(payload.nbytes)
    with_refs = onnx.ModelProto()
    with_refs.CopyFrom(model)
    with_refs.graph.initializer.extend(references)
    onnx.save_model(with_refs, path)


def _written(sizes: Iterable[int]) -> progress.Counter:
    """Progress of writing weights of ``sizes`` bytes, reported every 8 MB or so."""
    return progress.Counter("writing", sum(sizes), "bytes", every=8 * 2**20)


def skeleton(model: onnx.ModelProto, weights: list[TensorInfo]) -> onnx.ModelProto:
    """The model with its weights declared as typed, shaped graph inputs instead of data.

    ``onnx.checker`` and shape inference need a weight's type and shape, not its values: checking
    this skeleton checks the model without loading the weights back into memory. The export checks
    it as :func:`skeleton_bytes`, from the bytes it writes anyway; this is the same, parsed.
    """
    return onnx.ModelProto.FromString(skeleton_bytes(serialized_parts(model), weights))


def skeleton_bytes(parts: tuple[bytes, bytes], weights: list[TensorInfo]) -> bytes:
    """:func:`skeleton` serialised, from the model's :func:`serialized_parts`, without copying the model.

    The weights' declarations are a serialised graph holding only those inputs, appended inside the
    graph field: protobuf concatenates a repeated field's elements wherever they come, so the graph
    parses with its own inputs followed by these. Each declaration is what
    ``onnx.helper.make_tensor_value_info`` makes, built in place (making them with the helper and
    copying them in took twice as long at 6,000 weights).
    """
    rest_bytes, graph_bytes = parts
    declared = onnx.GraphProto()
    for info in weights:
        entry = declared.input.add()
        entry.name = info.name
        tensor_type = entry.type.tensor_type
        tensor_type.elem_type = helper.np_dtype_to_tensor_dtype(info.dtype)
        shape = tensor_type.shape
        shape.SetInParent()  # a scalar's shape is present, with no dims
        for size in info.shape:
            shape.dim.add().dim_value = size
    declared_bytes = declared.SerializeToString()
    return b"".join((rest_bytes, _key(_GRAPH_FIELD, len(graph_bytes) + len(declared_bytes)), graph_bytes, declared_bytes))


def materialize(model: onnx.ModelProto, weights: list[TensorInfo], read: Callable[[str], np.ndarray]) -> onnx.ModelProto:
    """The model with its weights inside, for passes that need one in-memory ``ModelProto``."""
    from onnx import numpy_helper

    model.graph.initializer.extend(numpy_helper.from_array(_checked(info, array), info.name) for info, array in read_weights(read, weights))
    return model
