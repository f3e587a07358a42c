"""Import OneFlow so that it just works: CUDA 11 libraries preloaded, native noise kept quiet.

The OneFlow 0.9.0 wheel links ``_oneflow_internal`` against cuBLAS 11 and cuDNN 8, which it does
not ship. The ``nvidia-cublas-cu11`` and ``nvidia-cudnn-cu11`` wheels carry them; loading them
with ``RTLD_GLOBAL`` before ``import oneflow`` lets the dynamic linker resolve OneFlow's
dependencies without the user setting ``LD_LIBRARY_PATH``. On a machine without a GPU OneFlow then
runs on the CPU, after printing warnings that say nothing useful to an exporter's user.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import sys
import tempfile
import threading

from . import compile_guard
from .errors import Flow2OnnxError
from .signals import restore_interrupt

# Order matters: cublasLt before cublas, the cuDNN "ops" libraries before the "cnn" ones that need them.
_CUDA_LIBRARIES = (
    ("cublas", "libcublasLt.so.11"),
    ("cublas", "libcublas.so.11"),
    ("cudnn", "libcudnn_ops_infer.so.8"),
    ("cudnn", "libcudnn_ops_train.so.8"),
    ("cudnn", "libcudnn_cnn_infer.so.8"),
    ("cudnn", "libcudnn_cnn_train.so.8"),
)

# Lines OneFlow's native code prints on a machine without CUDA or InfiniBand; they are not the user's concern.
_NOISE_MARKERS = (
    "libibverbs not available",
    "CUDA driver version is insufficient",
    "cudaGetDeviceCount",
    "no CUDA-capable device",
    # Printed by nn.Graph when a build fails; flow2onnx's own error says why, and what to do.
    " building graph got error.",
)

_lock = threading.Lock()
_oneflow = None


def _nvidia_library_dirs() -> list[str]:
    try:
        import nvidia  # namespace package installed by the nvidia-*-cu11 wheels
    except ImportError:
        return []
    return list(getattr(nvidia, "__path__", []))


def preload_cuda_libraries() -> list[str]:
    """Load the CUDA 11 libraries OneFlow links against, if the nvidia wheels are installed.

    Returns the paths loaded. Missing libraries are left to the dynamic linker, whose error
    :func:`import_oneflow` turns into an actionable message.
    """
    loaded = []
    roots = _nvidia_library_dirs()
    for package, library in _CUDA_LIBRARIES:
        for root in roots:
            path = os.path.join(root, package, "lib", library)
            if os.path.exists(path):
                ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
                loaded.append(path)
                break
    return loaded


@contextlib.contextmanager
def quiet_native_output():
    """Filter OneFlow's native stdout/stderr noise while the body runs; other lines pass through.

    Native code writes to file descriptors 1 and 2 directly, so Python's ``sys.stderr`` cannot catch
    it: the descriptors are pointed at a temporary file and what is not noise is replayed afterwards.
    """
    try:
        fds = (sys.stdout.fileno(), sys.stderr.fileno())
    except (AttributeError, ValueError, OSError):  # no real descriptors (e.g. some notebook kernels)
        yield
        return
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(fd) for fd in fds]
    with tempfile.TemporaryFile(mode="w+b") as capture:
        try:
            for fd in fds:
                os.dup2(capture.fileno(), fd)
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            for fd, old in zip(fds, saved):
                os.dup2(old, fd)
                os.close(old)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            kept = [line for line in text.splitlines() if line.strip() and not any(m in line for m in _NOISE_MARKERS)]
            if kept:
                sys.stderr.write("\n".join(kept) + "\n")


def import_oneflow():
    """Return the ``oneflow`` module, importing it once with the CUDA libraries and quiet logging set up."""
    global _oneflow
    if _oneflow is not None:
        return _oneflow
    with _lock:
        if _oneflow is not None:
            return _oneflow
        if "oneflow" in sys.modules:  # the user imported it first; respect their set-up
            _oneflow = sys.modules["oneflow"]
            restore_interrupt()
            compile_guard.install(_oneflow)
            return _oneflow
        # glog reads this once, at import; a user who set it keeps their choice.
        os.environ.setdefault("GLOG_minloglevel", "3")
        preload_cuda_libraries()
        try:
            with quiet_native_output():
                import oneflow
        except Exception as error:  # the 3.11+ placeholder raises a plain Exception
            raise Flow2OnnxError(_import_advice(error)) from error
        # OneFlow's import replaced SIGINT's handler with one that kills the process, clean-up and all.
        restore_interrupt()
        compile_guard.install(oneflow)
        _oneflow = oneflow
        return oneflow


def _import_advice(error: Exception) -> str:
    message = str(error)
    if "libcudnn" in message or "libcublas" in message:
        return (
            f"OneFlow could not be imported: {message}. OneFlow 0.9.0 needs the CUDA 11 libraries even on a CPU; "
            "install them with: pip install nvidia-cublas-cu11==11.10.3.66 nvidia-cudnn-cu11==8.5.0.96"
        )
    if "placeholder" in message.lower() or sys.version_info[:2] != (3, 10):
        return (
            f"OneFlow could not be imported: {message}. flow2onnx needs OneFlow 0.9.0, which has wheels for "
            f"CPython 3.7-3.10 only (this is {sys.version.split()[0]}); create a Python 3.10 environment and "
            "run: pip install flow2onnx"
        )
    if "Numpy" in message or "numpy" in message:
        return f"OneFlow could not be imported: {message}. OneFlow 0.9.0 needs numpy<2: pip install 'numpy<2'"
    return f"OneFlow could not be imported: {message}. Install it with: pip install oneflow==0.9.0"


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def error_text(error: BaseException) -> str:
    """An exception's last line, as words for a one-line message: OneFlow colours its errors with
    terminal escape codes and puts the cause last, after its own C++ stack."""
    lines = [line.strip() for line in _ANSI.sub("", str(error)).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[-1]}" if lines else type(error).__name__


def exit_past_teardown(code: int) -> None:
    """End the process with ``code`` once its work is done, skipping OneFlow's native teardown.

    OneFlow 0.9's native destructors can abort a process at exit (``free(): invalid pointer``)
    after all its work is done, turning a success into exit status 134. Output is flushed first;
    without OneFlow loaded this is a plain ``sys.exit``.
    """
    if "oneflow" not in sys.modules:
        sys.exit(code)
    import logging

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can reach it
            pass
    os._exit(code)
