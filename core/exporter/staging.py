"""The write and publish steps: where an export writes, and how its file appears (all at once, or not at all).

Models are written into a staging folder beside the target, checked there, and the verified one is
renamed into place, so the target only ever holds a complete, verified model (or is left as it
was): a failure, Ctrl-C or ``kill`` never leaves half a model at the target. A staging folder
carries its process id in its name: one left behind by a process that no longer exists (killed
with SIGKILL, or a machine that lost power) is removed by the next export into the same folder.
The target is checked before any work: it must be absent or a regular file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from .. import progress
from ..errors import Flow2OnnxError, OutputPathError
from ..lowering.graph import TensorInfo
from ..signals import deferred, signals_raise
from .writer import serialized_parts, skeleton_bytes, write_external, write_streamed

log = logging.getLogger("flow2onnx")

#: What every staging folder's name holds after the dot and the target's name.
STAGING_MARK = ".partial-"
_STAGING = re.compile(r"^\..+\.partial-(\d+)-[^/]+$")
DEFAULT_FILE_NAME = "model.onnx"


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
        # Serialised once, for the file and for the check of the model without its weights' data.
        parts = serialized_parts(model) if weights else None
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
            write_streamed(model, list(weights), read, staged, parts)
        else:
            onnx.save_model(model, staged)
        written = time.perf_counter() - started
        # Streamed weights are checked as a skeleton (types and shapes, no data); a model that went
        # through post-passes is checked from its file, since the in-memory check would serialise it again.
        started = time.perf_counter()
        progress.report("checking", detail=f"{len(model.graph.node)} ONNX nodes")
        _check_model(skeleton_bytes(parts, list(weights)) if weights else staged)
        return Staged(staged, {"write": written, "check": time.perf_counter() - started})

    def publish(self, staged: Staged) -> Published:
        """Rename the staged model (and its data file) to the target: the export's only visible write."""
        data = staged.path + ".data"
        external = os.path.exists(data)  # absent when every tensor is under save_model's size threshold
        # A <target>.data that an earlier flow2onnx export of this path wrote would lie, stale, beside
        # a model that now keeps its weights inside.
        stale_data = not external and _earlier_export_data(self.target)
        if external:
            os.replace(data, self.target + ".data")
        os.replace(staged.path, self.target)
        if stale_data:
            os.remove(self.target + ".data")
            log.info("removed %s.data, the weights of the model this export replaced", self.target)
        size = os.path.getsize(self.target) + (os.path.getsize(self.target + ".data") if external else 0)
        log.info("wrote %s (%.1f MB%s)", self.target, size / 1e6, ", weights in the .data file beside it" if external else "")
        return Published(self.target, external)


@contextlib.contextmanager
def staging_folder(target: str, external_data: bool) -> Iterator[Staging]:
    """A staging folder beside ``target`` for the time of the block, removed with whatever is left in it.

    Meanwhile SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`flow2onnx.signals.Terminated`
    (see :func:`flow2onnx.signals.signals_raise`), so that an interrupted export removes its folder.
    """
    with signals_raise():
        folder = None
        try:
            with deferred():  # no signal between making the folder and knowing its name
                folder = make_staging_dir(target)
            yield Staging(folder, target, external_data)
        finally:
            if folder is not None:
                with deferred():  # a second Ctrl-C must not cut the clean-up short
                    shutil.rmtree(folder, ignore_errors=True)


def resolve_target(path) -> str:
    """The absolute path of the file to write, after checking that it can be written there.

    An existing directory, or a path that ends in a separator, means ``model.onnx`` inside that
    directory (created if missing). The target must be absent or a regular file: a device, a FIFO,
    a socket or a directory in its place is refused, since the final rename would replace it.

    :raises OutputPathError: naming the path, the cause and the fix.
    """
    raw = os.fspath(path)
    if not isinstance(raw, str) or not raw.strip():
        raise OutputPathError(f"the output path is empty ({raw!r}); name the .onnx file to write, e.g. -o model.onnx")
    if raw.endswith(("/", os.sep)) or os.path.isdir(raw):
        raw = os.path.join(raw, DEFAULT_FILE_NAME)
    target = os.path.abspath(raw)
    _check_not_special(target)
    directory = os.path.dirname(target)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise OutputPathError(
            f"cannot write the model to {target}: {error.strerror or error}; choose a writable directory for the output"
        ) from error
    return target


def _check_not_special(target: str) -> None:
    for path in (target, target + ".data"):
        try:
            mode = os.lstat(path).st_mode
        except (FileNotFoundError, NotADirectoryError):  # absent; whether it can be made is checked next
            continue
        except OSError as error:
            raise OutputPathError(f"cannot inspect {path}: {error.strerror or error}; choose another output path") from error
        if stat.S_ISLNK(mode):
            mode = os.stat(path).st_mode if os.path.exists(path) else stat.S_IFREG
        if not stat.S_ISREG(mode):
            raise OutputPathError(
                f"{path} exists and is {_kind(mode)}, not a regular file: flow2onnx replaces the output file when it is "
                "complete, and will not replace that; choose another output path"
            )


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "a special file"


def make_staging_dir(target: str) -> str:
    """A new staging folder beside ``target`` (same file system, so the final rename is atomic),
    after removing the ones that dead processes left in that folder."""
    directory = os.path.dirname(target)
    remove_stale_staging(directory)
    return tempfile.mkdtemp(prefix=f".{os.path.basename(target)}{STAGING_MARK}{os.getpid()}-", dir=directory)


@contextlib.contextmanager
def scratch_folder(prefix: str) -> Iterator[str]:
    """A temporary folder ``<tmp>/<prefix>-<pid>-…`` for the time of the block.

    Like staging folders, it names its process: folders of this prefix whose process is gone
    (killed with SIGKILL) are removed when the next one is made.
    """
    parent = tempfile.gettempdir()
    remove_stale_staging(parent, re.compile(rf"^{re.escape(prefix)}-(\d+)-[^/]+$"))
    folder = None
    try:
        with deferred():  # no signal between making the folder and knowing its name
            folder = tempfile.mkdtemp(prefix=f"{prefix}-{os.getpid()}-", dir=parent)
        yield folder
    finally:
        if folder is not None:
            with deferred():
                shutil.rmtree(folder, ignore_errors=True)


def remove_stale_staging(directory: str, pattern: re.Pattern = _STAGING) -> list[str]:
    """Remove folders in ``directory`` named by ``pattern`` (staging folders by default) whose
    process, the pattern's first group, no longer exists; return their paths."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or not entry.is_dir(follow_symlinks=False) or _alive(int(match.group(1))):
            continue
        shutil.rmtree(entry.path, ignore_errors=True)
        log.info("removed %s, left by an export that was killed (process %s)", entry.path, match.group(1))
        removed.append(entry.path)
    return removed


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _earlier_export_data(target: str) -> bool:
    """Whether ``target`` is a model flow2onnx wrote with its weights in ``<target>.data``."""
    data = target + ".data"
    if not (os.path.isfile(target) and os.path.isfile(data)):
        return False
    try:
        model = onnx.load(target, load_external_data=False)
    except Exception:  # not a model we can read: not ours to clean up after
        return False
    if model.producer_name != "flow2onnx":
        return False
    location = os.path.basename(data)
    return any(
        entry.key == "location" and entry.value == location
        for tensor in model.graph.initializer
        if tensor.data_location == onnx.TensorProto.EXTERNAL
        for entry in tensor.external_data
    )


def _check_model(model) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise Flow2OnnxError(f"the converted model is not valid ONNX: {error}") from error
    except onnx.shape_inference.InferenceError as error:
        raise Flow2OnnxError(f"the converted model fails ONNX shape inference: {error}") from error
