"""Hostile and careless use of the exporter: signals mid-export, special files and odd paths at
the target, stale side files and staging folders. Each case either does the right thing or ends
in one clear error, and leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import onnx
import pytest

import flow2onnx
from flow2onnx.exporter.write.staging import remove_stale_staging

from .helpers import export_module, flow

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI = os.path.join(os.path.dirname(sys.executable), "flow2onnx")


def cli(*args, cwd=ROOT):
    return subprocess.run([CLI, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def staging_folders(directory):
    return [name for name in os.listdir(directory) if ".partial-" in name]


def error_lines(stderr):
    return [line for line in stderr.splitlines() if line.startswith("flow2onnx: error: ")]


# ---------------------------------------------------------------- signals


#: How an export stages its file: unnamed (O_TMPFILE, the default on this file system) or in a folder.
STAGINGS = ["unnamed", "folder"]


def unnamed_files(pid, directory):
    """The unnamed files (O_TMPFILE) that process ``pid`` holds open in ``directory``."""
    found = []
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if link.startswith(f"{directory}/#") and link.endswith("(deleted)"):
            found.append(link)
    return found


def _interrupt_export(tmp_path, signum, argv, staging="unnamed"):
    """Start an export, wait until it stages its file (unnamed, or in a staging folder), send ``signum``;
    return (rc, stderr)."""
    env = dict(os.environ, FLOW2ONNX_STAGING="folder" if staging == "folder" else "auto")
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 120
    staged = (lambda: staging_folders(tmp_path)) if staging == "folder" else (lambda: unnamed_files(process.pid, tmp_path))
    while not staged():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the export never staged its file"
        time.sleep(0.02)
    if staging == "unnamed":
        assert os.listdir(tmp_path) == []  # staged, and nothing in the folder has a name
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


@pytest.mark.parametrize("staging", STAGINGS)
@pytest.mark.parametrize("signum, code, word", [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated")])
def test_cli_signal_mid_export_leaves_nothing_and_says_so(tmp_path, signum, code, word, staging):
    target = tmp_path / "slow.onnx"
    argv = [CLI, "export", "tests.models:slow_linear", "--input-shape", "2,64", "-o", str(target)]
    rc, stderr = _interrupt_export(tmp_path, signum, argv, staging)
    assert rc == code, stderr
    assert [line for line in stderr.splitlines() if line.startswith("flow2onnx:") and word in line], stderr
    assert "Traceback" not in stderr, stderr
    assert os.listdir(tmp_path) == []


LIBRARY_EXPORT = """
import sys
import flow2onnx
from tests.models import slow_linear
from flow2onnx.testing import random_inputs
flow2onnx.export(slow_linear(), random_inputs([(2, 64)]), sys.argv[1])
"""


@pytest.mark.parametrize("staging", STAGINGS)
@pytest.mark.parametrize("signum, exception", [(signal.SIGINT, "KeyboardInterrupt"), (signal.SIGTERM, "flow2onnx.signals.Terminated")])
def test_library_export_cleans_up_on_signals(tmp_path, signum, exception, staging):
    target = tmp_path / "slow.onnx"
    rc, stderr = _interrupt_export(tmp_path, signum, [sys.executable, "-c", LIBRARY_EXPORT, str(target)], staging)
    # The caller gets the exception (here uncaught: Python's own exit), not an exit from inside.
    assert exception in stderr and rc not in (0, 255), stderr  # 255: OneFlow's own handler killed it
    assert os.listdir(tmp_path) == []


def test_sigkill_mid_export_leaves_nothing_with_unnamed_staging(tmp_path):
    target = tmp_path / "slow.onnx"
    rc, _ = _interrupt_export(tmp_path, signal.SIGKILL, [CLI, "export", "tests.models:slow_linear", "--input-shape", "2,64", "-o", str(target)])
    assert rc == -signal.SIGKILL and os.listdir(tmp_path) == []


def test_sigkill_at_any_moment_leaves_no_file_beside_the_target(tmp_path):
    """Killed at moments spread over a whole export that replaces an earlier model: the folder holds
    the earlier model or the new one, complete, and nothing else."""
    target = tmp_path / "slow.onnx"
    argv = [CLI, "export", "tests.models:slow_linear", "--input-shape", "2,64", "-o", str(target)]
    assert subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    started = time.monotonic()
    assert subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    whole = time.monotonic() - started
    for fraction in (0.2, 0.5, 0.8, 0.95):
        process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(whole * fraction)
        process.kill()
        process.wait(timeout=60)
        assert os.listdir(tmp_path) == ["slow.onnx"], (fraction, os.listdir(tmp_path))
        onnx.checker.check_model(str(target), full_check=True)


def test_a_file_a_killed_export_was_linking_into_place_is_removed_by_the_next(tmp_path):
    """Replacing a target, the unnamed file is linked under a staging name for the instant before the
    rename; a process killed right then leaves it, and the next export into the folder removes it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    left = tmp_path / f".relu.onnx.partial-{dead.pid}-1a2b3c4d"
    left.write_bytes(b"half")
    export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "relu.onnx")
    assert os.listdir(tmp_path) == ["relu.onnx"]
    export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "relu.onnx")  # replacing it: link, then rename
    assert os.listdir(tmp_path) == ["relu.onnx"]


def test_staging_folder_of_a_killed_export_is_removed_by_the_next(tmp_path):
    target = tmp_path / "slow.onnx"
    argv = [CLI, "export", "tests.models:slow_linear", "--input-shape", "2,64", "-o", str(target)]
    rc, _ = _interrupt_export(tmp_path, signal.SIGKILL, argv, staging="folder")
    assert rc == -signal.SIGKILL and len(staging_folders(tmp_path)) == 1
    live = tmp_path / f".other.onnx.partial-{os.getpid()}-keep"  # a live process's folder stays
    live.mkdir()
    export_module(flow.nn.ReLU(), [(2, 3)], tmp_path / "relu.onnx")
    assert sorted(os.listdir(tmp_path)) == sorted([live.name, "relu.onnx"])
    assert remove_stale_staging(str(tmp_path)) == []


# ---------------------------------------------------------------- targets and paths


@pytest.mark.parametrize("kind", ["fifo", "device", "directory-as-data"])
def test_special_files_at_the_target_are_refused(tmp_path, kind):
    if kind == "fifo":
        target = tmp_path / "pipe.onnx"
        os.mkfifo(target)
        why = "is a FIFO"
    elif kind == "device":
        target = "/dev/null"
        why = "is a character device"
    else:
        target = tmp_path / "m.onnx"
        (tmp_path / "m.onnx.data").mkdir()
        why = "is a directory"
    before = sorted(os.listdir(tmp_path))
    with pytest.raises(flow2onnx.OutputPathError, match=why):
        export_module(flow.nn.ReLU(), [(2, 3)], target)
    assert sorted(os.listdir(tmp_path)) == before
    done = cli("export", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8", "-o", str(target))
    assert done.returncode == 1 and len(error_lines(done.stderr)) == 1 and why in done.stderr
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_empty_output_path_fails_before_any_work(tmp_path):
    with pytest.raises(flow2onnx.OutputPathError, match="the output path is empty"):
        export_module(flow.nn.ReLU(), [(2, 3)], "")
    # The CLI says so before it even imports the model (which does not exist here).
    done = cli("export", "no.such.module:build", "--input-shape", "1,3,8,8", "-o", "", cwd=tmp_path)
    assert done.returncode == 1 and error_lines(done.stderr) == [
        "flow2onnx: error: the output path is empty (''); name the .onnx file to write, e.g. -o model.onnx"
    ]
    assert os.listdir(tmp_path) == []


def test_trailing_separator_means_a_directory(tmp_path):
    result = export_module(flow.nn.ReLU(), [(2, 3)], str(tmp_path / "newdir") + "/")
    assert result.path == str(tmp_path / "newdir" / "model.onnx") and os.path.isfile(result.path)
    assert os.listdir(tmp_path / "newdir") == ["model.onnx"]


def test_reexport_without_external_data_removes_the_old_side_file(tmp_path):
    target = tmp_path / "lin.onnx"
    module = flow.nn.Linear(512, 512)
    first = export_module(module, [(2, 512)], target, external_data=True)
    assert first.external_data and os.path.isfile(str(target) + ".data")
    second = export_module(module, [(2, 512)], target)
    assert not second.external_data and sorted(os.listdir(tmp_path)) == ["lin.onnx"]
    onnx.checker.check_model(str(target), full_check=True)


def test_a_foreign_data_file_beside_the_target_is_left_alone(tmp_path):
    target = tmp_path / "lin.onnx"
    (tmp_path / "lin.onnx.data").write_bytes(b"someone else's")
    export_module(flow.nn.Linear(4, 4), [(2, 4)], target)
    assert (tmp_path / "lin.onnx.data").read_bytes() == b"someone else's"


def test_check_removes_the_scratch_folder_a_killed_check_left(tmp_path):
    import tempfile

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a process id that no longer runs
    stale = os.path.join(tempfile.gettempdir(), f"flow2onnx-check-{dead.pid}-left")
    os.makedirs(os.path.join(stale, "inner"), exist_ok=True)
    done = cli("check", "tests.models:tiny_cnn", "--input-shape", "1,3,8,8")
    assert done.returncode == 0, done.stderr
    assert not os.path.exists(stale)
    assert not [name for name in os.listdir(tempfile.gettempdir()) if name.startswith(f"flow2onnx-check-{os.getpid()}-")]
