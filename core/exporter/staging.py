"""The write and publish steps: models are written into a staging folder beside the target, checked
there, and the verified one is renamed into place, so that the target only ever holds a complete,
verified model (or is left as it was).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from ..errors import Flow2OnnxError, OutputPathError
from ..lowering.graph import TensorInfo
from .writer import skeleton, write_external, write_streamed

log = logging.getLogger("flow2onnx")


@dataclass(frozen=True)
class Staged:
    """The write step's value: a checked model file in the staging folder."""

    path: str
    timings: Mapping[str, float]


@dataclass(frozen=True)
class Published:
    """The publish step's value: the model at its final path."""

    path: str
    #: Whether the weights are in ``<path>.data`` (an export asked for external data writes none when
    #: every tensor is small enough to stay in the model).
    external_data: bool


@dataclass(frozen=True)
class Staging:
    """Where one export writes: a folder beside ``target`` (same file system, so renaming is atomic)."""

    folder: str
    target: str
    external_data: bool

    def write(self, model: onnx.ModelProto, weights: Sequence[TensorInfo] = (), read: Callable[[str], np.ndarray] | None = None) -> Staged:
        """Write ``model`` (and ``weights``, streamed from ``read``) under the target's name, then check the file.

        A later write replaces the earlier one: the staging folder holds one candidate at a time.
        """
        started = time.perf_counter()
        staged = os.path.join(self.folder, os.path.basename(self.target))
        if self.external_data:
            if os.path.exists(staged + ".data"):
                os.remove(staged + ".data")  # save_model appends to an existing data file
            if weights:
                write_external(model, list(weights), read, staged)
            else:
                onnx.save_model(
                    model, staged, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=os.path.basename(self.target) + ".data", size_threshold=1024,
                )
        elif weights:
            write_streamed(model, list(weights), read, staged)
        else:
            onnx.save_model(model, staged)
        written = time.perf_counter() - started
        # Streamed weights are checked as a skeleton (types and shapes, no data); a model that went
        # through post-passes is checked from its file, since the in-memory check would serialise it again.
        started = time.perf_counter()
        _check_model(skeleton(model, list(weights)) if weights else staged)
        return Staged(staged, {"write": written, "check": time.perf_counter() - started})

    def publish(self, staged: Staged) -> Published:
        """Rename the staged model (and its data file) to the target: the export's only visible write."""
        data = staged.path + ".data"
        external = os.path.exists(data)  # absent when every tensor is under save_model's size threshold
        if external:
            os.replace(data, self.target + ".data")
        os.replace(staged.path, self.target)
        size = os.path.getsize(self.target) + (os.path.getsize(self.target + ".data") if external else 0)
        log.info("wrote %s (%.1f MB%s)", self.target, size / 1e6, ", weights in the .data file beside it" if external else "")
        return Published(self.target, external)


@contextlib.contextmanager
def staging_folder(target: str, external_data: bool) -> Iterator[Staging]:
    """A staging folder beside ``target`` for the time of the block, removed with whatever is left in it."""
    folder = tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=os.path.dirname(target))
    try:
        yield Staging(folder, target, external_data)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def resolve_target(path: str) -> str:
    """The absolute file path to write; fail now, before any work, if it cannot be written."""
    if os.path.isdir(path):
        path = os.path.join(path, "model.onnx")
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise OutputPathError(
            f"cannot write the model to {path}: {error.strerror or error}; choose a writable directory for the output"
        ) from error
    return path


def _check_model(model) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise Flow2OnnxError(f"the converted model is not valid ONNX: {error}") from error
    except onnx.shape_inference.InferenceError as error:
        raise Flow2OnnxError(f"the converted model fails ONNX shape inference: {error}") from error
