"""The write and publish steps: where an export writes, and how its file appears (all at once, or not at all).

A model is written, checked and verified before it is given the target's name, so the target only
ever holds a complete, verified model (or is left as it was): a failure, Ctrl-C or ``kill`` never
leaves half a model at the target. Where it is written first:

- **Unnamed** (Linux, a file system with ``O_TMPFILE``, weights inside the model): the file has no
  name at all until it is published, when it is linked into the target's folder (``linkat``). The
  kernel frees it when its last descriptor closes, so an export killed at any moment, SIGKILL
  included, leaves nothing. Only when an existing target is replaced does the file take a staging
  name for the instant between the link and the rename onto the target.
- **A staging folder** beside the target otherwise (external data, whose location is relative to
  the model's folder, other systems, or ``FLOW2ONNX_STAGING=folder``). The folder carries its
  process id in its name: one left behind by a process that no longer exists (killed with SIGKILL,
  or a machine that lost power) is removed by the next export into the same folder.

The target is checked before any work: it must be absent or a regular file.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import onnx

from ... import progress
from ...errors import Flow2OnnxError, OutputPathError
from ...lowering.graph import TensorInfo
from ...signals import deferred, signals_raise
from ..serialize import serialized_parts, skeleton_bytes, write_external, write_streamed

log = logging.getLogger("flow2onnx")

#: What every staging folder's name holds after the dot and the target's name.
STAGING_MARK = ".partial-"
_STAGING = re.compile(r"^\..+\.partial-(\d+)-[^/]+$")
DEFAULT_FILE_NAME = "model.onnx"
#: ``folder`` forces staging folders (the way of file systems without ``O_TMPFILE``); unset or
#: ``auto``: unnamed files wherever the file system has them.
STAGING_ENV = "FLOW2ONNX_STAGING"


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


@dataclass
class Staging:
    """Where one export writes: an unnamed file in the target's folder (``folder`` is ``None``), or a
    folder beside ``target`` (same file system either way, so publishing is atomic)."""

    folder: str | None
    target: str
    external_data: bool
    #: The unnamed file's descriptor, and one of ``/proc/self/fd`` to link it by.
    _unnamed: int | None = field(default=None, repr=False)
    _proc_fds: int | None = field(default=None, repr=False)
    _replaced: list = field(default_factory=list, repr=False)

    @property
    def unnamed(self) -> bool:
        return self.folder is None

    def _staged_path(self) -> str:
        if not self.unnamed:
            return os.path.join(self.folder, os.path.basename(self.target))
        # A later write replaces the earlier one with a new unnamed file. The earlier stays open until
        # the export ends: a path to a closed descriptor could name whatever file reuses its number.
        if self._unnamed is not None:
            self._replaced.append(self._unnamed)
        self._unnamed = _open_unnamed(os.path.dirname(self.target))
        return f"/proc/self/fd/{self._unnamed}"

    def write(self, model: onnx.ModelProto, weights: Sequence[TensorInfo] = (), read: Callable[[str], np.ndarray] | None = None) -> Staged:
        """Write ``model`` (and ``weights``, streamed from ``read``) under the target's name, then check the file.

        A later write replaces the earlier one as the candidate (in a folder, by overwriting it; unnamed,
        as a new file, the earlier held open until the export ends).
        """
        started = time.perf_counter()
        staged = self._staged_path()
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
        external = not self.unnamed and os.path.exists(data)  # absent when every tensor is under save_model's size threshold
        # A <target>.data that an earlier flow2onnx export of this path wrote would lie, stale, beside
        # a model that now keeps its weights inside.
        stale_data = not external and _earlier_export_data(self.target)
        if external:
            os.replace(data, self.target + ".data")
        if self.unnamed:
            self._link_into_place()
        else:
            os.replace(staged.path, self.target)
        if stale_data:
            os.remove(self.target + ".data")
            log.info("removed %s.data, the weights of the model this export replaced", self.target)
        size = os.path.getsize(self.target) + (os.path.getsize(self.target + ".data") if external else 0)
        log.info("wrote %s (%.1f MB%s)", self.target, size / 1e6, ", weights in the .data file beside it" if external else "")
        return Published(self.target, external)

    def _link_into_place(self) -> None:
        """Give the unnamed file the target's name: linked there directly when the target is absent; else
        linked under a staging name (removed by the next export if this one dies right then) and renamed
        over the target, which is atomic."""
        if self._proc_fds is None:
            self._proc_fds = os.open("/proc/self/fd", os.O_RDONLY | os.O_DIRECTORY)
        source = str(self._unnamed)
        with deferred():  # no signal between the link and the rename
            try:
                os.link(source, self.target, src_dir_fd=self._proc_fds, follow_symlinks=True)
                return
            except FileExistsError:
                pass
            directory, name = os.path.split(self.target)
            temporary = os.path.join(directory, f".{name}{STAGING_MARK}{os.getpid()}-{secrets.token_hex(4)}")
            os.link(source, temporary, src_dir_fd=self._proc_fds, follow_symlinks=True)
            try:
                os.replace(temporary, self.target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.remove(temporary)
                raise

    def release(self) -> None:
        """Close what the staging holds open (the kernel frees unnamed files that were not published);
        the caller removes the folder."""
        for fd in self._replaced + [self._unnamed, self._proc_fds]:
            if fd is not None:
                os.close(fd)
        self._replaced, self._unnamed, self._proc_fds = [], None, None


def _open_unnamed(directory: str) -> int:
    return os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o666)  # not inherited by child processes (PEP 446)


def unnamed_files_work(directory: str) -> bool:
    """Whether ``directory`` can hold unnamed files that are linked into place (``O_TMPFILE`` and
    ``/proc/self/fd``), and the environment does not ask for staging folders."""
    if os.environ.get(STAGING_ENV, "auto").strip().lower() == "folder" or not hasattr(os, "O_TMPFILE"):
        return False
    try:
        fd = _open_unnamed(directory)
    except OSError as error:  # EOPNOTSUPP, EISDIR (old kernels), EINVAL: the file system has none
        log.debug("unnamed files unavailable in %s: %s", directory, error)
        return False
    try:
        return os.path.exists(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


@contextlib.contextmanager
def staging_folder(target: str, external_data: bool) -> Iterator[Staging]:
    """Where the export writes for the time of the block (see the module's text): an unnamed file in the
    target's folder, or a staging folder beside the target, removed with whatever is left in it.

    Meanwhile SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`flow2onnx.signals.Terminated`
    (see :func:`flow2onnx.signals.signals_raise`), so that an interrupted export removes its folder.
    """
    with signals_raise():
        staging = None
        try:
            with deferred():  # no signal between making the folder and knowing its name
                directory = os.path.dirname(target)
                remove_stale_staging(directory)
                if not external_data and unnamed_files_work(directory):
                    staging = Staging(None, target, external_data)
                else:
                    staging = Staging(make_staging_dir(target), target, external_data)
            yield staging
        finally:
            if staging is not None:
                with deferred():  # a second Ctrl-C must not cut the clean-up short
                    staging.release()
                    if staging.folder is not None:
                        shutil.rmtree(staging.folder, ignore_errors=True)


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
    process, the pattern's first group, no longer exists, and files so named (an unnamed file that
    was being linked into place when its process died); return their paths."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _alive(int(match.group(1))):
            continue
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        elif entry.is_file(follow_symlinks=False):
            with contextlib.suppress(OSError):
                os.remove(entry.path)
        else:
            continue
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
