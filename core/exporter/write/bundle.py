"""The repro bundle: a verified-or-not model with the inputs and OneFlow's outputs of its first
verification run, in ONNX's test-data layout, so that anyone can rerun the comparison with ONNX
Runtime alone."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
from onnx import numpy_helper

from ...errors import OutputPathError


def write_bundle(directory, model_path: str, feeds: dict, expected: list, outputs) -> str:
    """Write ``model.onnx`` (and its data file) with ``test_data_set_0/input_N.pb`` and ``output_N.pb``.

    The directory is assembled beside its final place and renamed into it, replacing an older bundle.
    """
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    assembling = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.partial-", dir=parent)
    try:
        name = os.path.basename(model_path)
        shutil.copyfile(model_path, os.path.join(assembling, "model.onnx"))
        if os.path.exists(model_path + ".data"):
            # The model refers to its data file by name, which therefore stays as it is.
            shutil.copyfile(model_path + ".data", os.path.join(assembling, name + ".data"))
        data = os.path.join(assembling, "test_data_set_0")
        os.mkdir(data)
        for index, (input_name, array) in enumerate(feeds.items()):
            with open(os.path.join(data, f"input_{index}.pb"), "wb") as file:
                file.write(numpy_helper.from_array(np.ascontiguousarray(array), input_name).SerializeToString())
        for index, (info, array) in enumerate(zip(outputs, expected)):
            with open(os.path.join(data, f"output_{index}.pb"), "wb") as file:
                file.write(numpy_helper.from_array(np.ascontiguousarray(array), info.name).SerializeToString())
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(assembling, directory)
    except OSError as error:
        shutil.rmtree(assembling, ignore_errors=True)
        raise OutputPathError(f"cannot write the repro bundle to {directory}: {error.strerror or error}") from error
    return directory
