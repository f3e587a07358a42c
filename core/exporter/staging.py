"""Where an export writes, and how its file appears: all at once, or not at all.

The model is written into a staging folder beside the target and renamed into place only when it
is complete and verified, so a failure, Ctrl-C or ``kill`` never leaves half a model at the target.
A staging folder carries its process id in its name: one left behind by a process that no longer
exists (killed with SIGKILL, or a machine that lost power) is removed by the next export into the
same folder. The target is checked before any work: it must be absent or a regular file.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import stat
import tempfile

import onnx

from ..errors import OutputPathError

log = logging.getLogger("flow2onnx")

#: What every staging folder's name starts with after the dot and the target's name.
STAGING_MARK = ".partial-"
_STAGING = re.compile(r"^\..+\.partial-(\d+)-[^/]+$")
DEFAULT_FILE_NAME = "model.onnx"


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
        except FileNotFoundError:
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


def remove_stale_staging(directory: str) -> list[str]:
    """Remove staging folders in ``directory`` whose process no longer exists; return their paths."""
    removed = []
    try:
        entries = list(os.scandir(directory))
    except OSError:
        return removed
    for entry in entries:
        match = _STAGING.match(entry.name)
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


def publish(staged: str, target: str) -> bool:
    """Move a staged model (and its ``.data`` file, if any) into place; return whether it has one.

    A ``<target>.data`` that an earlier flow2onnx export of the same path wrote is removed when the
    new model keeps its weights inside, so that no stale weights lie beside a self-contained model.
    """
    staged_data = staged + ".data"
    has_data = os.path.exists(staged_data)  # absent when every tensor is under the writer's size threshold
    stale_data = not has_data and _earlier_export_data(target)
    if has_data:
        os.replace(staged_data, target + ".data")
    os.replace(staged, target)
    if stale_data:
        os.remove(target + ".data")
        log.info("removed %s.data, the weights of the model this export replaced", target)
    return has_data


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
