"""Hostile and careless files handed to the runtime side: external-data locations that point out
of the model's folder, models the checker rejects, decompression bombs, ``--save`` at a file.

Each hostile model here is a valid ONNX file whose one weight lives in "external data"; only the
location differs. ONNX Runtime reads whatever location it is given, so the check must come first.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image

from flow2onnx.errors import ModelFileError, ModelInputError
from flow2onnx.runtime import Model, check_external_data, describe
from flow2onnx.runtime.imaging import load_image

CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")
SECRET = b"root:x:0:0:secret-line-that-must-never-be-read\n" + b"\0" * 64


def cli(*args):
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


def external_model(folder, location: str, name="model.onnx") -> str:
    """y = x + w, with w (4 float32) stored at ``location`` relative to the model."""
    weight = numpy_helper.from_array(np.zeros(4, np.float32), "w")
    weight.ClearField("raw_data")
    weight.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "16")):
        weight.external_data.add(key=key, value=value)
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "w"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])],
        initializer=[weight],
    )
    path = os.path.join(folder, name)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture
def layout(tmp_path):
    """models/ holds the model; secret.bin sits outside it, beside the folder."""
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "secret.bin").write_bytes(SECRET)
    (models / "weights.bin").write_bytes(np.arange(4, dtype=np.float32).tobytes())
    os.symlink(tmp_path / "secret.bin", models / "link.bin")
    os.symlink(tmp_path, models / "up")
    return tmp_path


HOSTILE = {
    "parent traversal": ("../secret.bin", "outside the model's folder"),
    "deep traversal": ("../../../../../../../../{tmp}/secret.bin", "outside the model's folder"),
    "absolute path": ("{tmp}/secret.bin", "an absolute path"),
    "symlinked file": ("link.bin", "outside the model's folder"),
    "symlinked folder": ("up/secret.bin", "outside the model's folder"),
    "empty location": ("", "an empty location"),
}


@pytest.mark.parametrize("location, why", HOSTILE.values(), ids=HOSTILE.keys())
@pytest.mark.parametrize("opener", [Model, describe, check_external_data], ids=["Model", "describe", "check"])
def test_external_data_outside_the_model_folder_is_refused(layout, location, why, opener):
    path = external_model(layout / "models", location.format(tmp=str(layout).lstrip("/") if location.startswith("../") else layout))
    with pytest.raises(ModelFileError) as caught:
        opener(path)
    message = str(caught.value)
    assert "tensor 'w'" in message and why in message and "only data files inside the model's own folder are read" in message


@pytest.mark.parametrize("location", ["../secret.bin", "link.bin", "{tmp}/secret.bin"])
def test_cli_run_never_prints_a_file_outside_the_model_folder(layout, location):
    path = external_model(layout / "models", location.format(tmp=layout))
    np.save(layout / "x.npy", np.zeros(4, np.float32))
    for command in (["run", path, "--input", f"x={layout}/x.npy"], ["info", path]):
        done = cli(*command)
        assert done.returncode == 1 and "secret-line" not in done.stdout + done.stderr
        errors = [line for line in done.stderr.splitlines() if line.startswith("flow2onnx: error: ")]
        assert len(errors) == 1 and "tensor 'w'" in errors[0], done.stderr


def test_data_inside_the_folder_still_runs(layout):
    (layout / "models" / "sub").mkdir()
    os.replace(layout / "models" / "weights.bin", layout / "models" / "sub" / "weights.bin")
    path = external_model(layout / "models", "sub/weights.bin")
    assert check_external_data(path) == ["sub/weights.bin"]
    y = Model(path).run(x=np.ones(4, np.float32))["y"]
    np.testing.assert_array_equal(y, np.arange(4, dtype=np.float32) + 1)


def test_missing_data_file_names_the_tensor(layout):
    path = external_model(layout / "models", "gone.bin")
    with pytest.raises(ModelFileError, match="tensor 'w'.*'gone.bin', which is missing beside it"):
        Model(path)


def test_info_exits_non_zero_when_the_checker_fails(tmp_path):
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x", "x"], ["y"])],  # Relu takes one input
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])],
    )
    path = str(tmp_path / "invalid.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    done = cli("info", path)
    assert done.returncode == 1 and "onnx.checker: FAILED" in done.stdout


def test_decompression_bomb_is_refused(tmp_path, monkeypatch):
    # A small file that decodes to more pixels than Pillow's limit allows (the limit is lowered here
    # for the library call; the CLI run below uses a real 20000 x 20000 PNG of a few hundred kB).
    bomb = tmp_path / "bomb.png"
    Image.new("1", (20000, 20000)).save(bomb)
    assert os.path.getsize(bomb) < 2_000_000
    with pytest.raises(ModelInputError, match="too large to decode safely"):
        monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000_000)
        load_image(bomb)
    monkeypatch.undo()
    model = external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    done = cli("run", model, "--image", str(bomb))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "flow2onnx: error: image " in done.stderr and "too large to decode safely" in done.stderr


def test_save_pointing_at_a_file_is_refused_before_running(tmp_path):
    model = external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").write_bytes(np.zeros(4, np.float32).tobytes())
    np.save(tmp_path / "x.npy", np.zeros(4, np.float32))
    (tmp_path / "taken").write_text("a file")
    done = cli("run", model, "--input", f"x={tmp_path}/x.npy", "--save", str(tmp_path / "taken"))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "--save " in done.stderr and "that is a file, not a directory" in done.stderr
    assert (tmp_path / "taken").read_text() == "a file"
