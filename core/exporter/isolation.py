"""An export in a worker process of its own (``export(..., isolate=True)``, CLI ``--isolate``).

OneFlow 0.9 never frees a compiled ``nn.Graph``: a process that exports model after model grows
with every compilation, whatever flow2onnx releases. An isolated export compiles in a fresh process
(multiprocessing's ``spawn``: nothing of the parent's OneFlow state is inherited) that ends with the
export, taking OneFlow's memory with it. What the export produces comes back intact: the
:class:`ExportResult`, or the exception it raised (a :class:`VerificationError` with its report, an
:class:`UnsupportedOpsError` with its ops), its warnings (issued again here) and its log records
(handled again here, progress included). Ctrl-C or SIGTERM here is passed on to the worker, which
removes its staging folder as an export in this process would; a worker that does not end in time
is killed. A worker that dies (OneFlow crashing) is an error naming its signal or exit status.

The model goes to the worker by pickling: an eager ``nn.Module`` (with its weights), or a callable
without arguments that builds one there (a module-level function, ``functools.partial``). A compiled
``nn.Graph`` cannot leave its process.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import pickle
import signal
import warnings
from typing import Any, Sequence

from .._oneflow import import_oneflow
from ..errors import Flow2OnnxError, InvalidModelError
from ..signals import Terminated, signals_raise
from .options import ExportOptions
from .pipeline import run_export

#: The loggers whose records the worker sends back, with the level they have here.
LOGGERS = ("flow2onnx", "flow2onnx.progress")
#: Seconds a worker has to clean up after Ctrl-C or SIGTERM is passed on, before it is killed.
STOP_GRACE = 10.0


def export_isolated(model, example_inputs: Sequence | None, options: dict[str, Any]):
    """Run ``flow2onnx.export(model, example_inputs, **options)`` in a spawned worker process."""
    job = _pickled_job(model, example_inputs, options)
    context = multiprocessing.get_context("spawn")
    receiver, sender = context.Pipe(duplex=False)
    levels = {name: logging.getLogger(name).getEffectiveLevel() for name in LOGGERS}
    worker = context.Process(target=_work, args=(sender, job, levels), name="flow2onnx-export", daemon=True)
    with signals_raise():
        worker.start()
        sender.close()
        try:
            outcome = _collect(receiver, worker)
        except (KeyboardInterrupt, Terminated) as stop:
            _stop(worker, signal.SIGINT if isinstance(stop, KeyboardInterrupt) else signal.SIGTERM)
            raise
        finally:
            receiver.close()
            worker.join(STOP_GRACE)
            if worker.is_alive():
                worker.kill()
                worker.join()
    kind, value = outcome
    if kind == "error":
        raise value
    return value


def _pickled_job(model, example_inputs, options) -> bytes:
    """The model, inputs and options pickled for the worker; refused, before any process starts, when
    they cannot be. Plain ``pickle``: OneFlow's reductions for multiprocessing fail on 0-d tensors."""
    flow = import_oneflow()
    if isinstance(model, flow.nn.Graph):
        raise InvalidModelError(
            f"isolate=True cannot move the nn.Graph {type(model).__name__} to a worker process (a compiled graph stays in "
            "its process): pass the eager module, or a function without arguments that builds the model"
        )
    for what, value in (("the model", model), ("the example inputs", example_inputs), ("the options", options)):
        try:
            pickle.dumps(value)
        except Exception as error:
            raise InvalidModelError(
                f"isolate=True sends {what} to a worker process by pickling, which failed ({type(error).__name__}: {error}); "
                "pass picklable values (a module-level class or function, plugins by their module names)"
            ) from error
    return pickle.dumps((model, example_inputs, options))


def _collect(receiver, worker) -> tuple[str, Any]:
    """Handle the worker's messages until its outcome arrives; an error if it dies first."""
    while True:
        if receiver.poll(0.2):
            try:
                kind, value = pickle.loads(receiver.recv_bytes())
            except EOFError:
                worker.join()
                raise _died(worker) from None
            if kind == "log":
                logging.getLogger(value.name).handle(value)
            elif kind == "warning":
                category, message, filename, lineno = value
                warnings.warn_explicit(message, category, filename, lineno)
            else:
                return kind, value
        elif not worker.is_alive() and not receiver.poll(0):
            raise _died(worker)


def _died(worker) -> Flow2OnnxError:
    code = worker.exitcode
    how = f"was killed by signal {-code} ({signal.Signals(-code).name})" if code is not None and code < 0 else f"exited with status {code}"
    return Flow2OnnxError(
        f"the isolated export's worker process {how} before it finished; OneFlow probably crashed in it (nothing was "
        "written). Export without isolate to see OneFlow's own error"
    )


def _stop(worker, signum: int) -> None:
    """Pass Ctrl-C or SIGTERM on to the worker and give it time to clean up; kill it if it does not end."""
    with contextlib.suppress(ProcessLookupError):
        if worker.is_alive():
            os.kill(worker.pid, signum)
    worker.join(STOP_GRACE)


# ---------------------------------------------------------------- in the worker process


class _Forward(logging.Handler):
    """Sends each log record to the parent, rendered to plain text so that it pickles."""

    def __init__(self, sender):
        super().__init__()
        self.sender = sender

    def emit(self, record: logging.LogRecord) -> None:
        record.msg, record.args = record.getMessage(), None
        record.exc_info = record.exc_text = None
        self.sender.send_bytes(pickle.dumps(("log", record)))


def _work(sender, job: bytes, levels) -> None:
    """The worker's body: the export, with its log records, warnings and outcome sent back."""
    _die_with_parent()
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    root = logging.getLogger(LOGGERS[0])
    root.propagate = False
    root.addHandler(_Forward(sender))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            outcome = ("result", _export(*pickle.loads(job)))
        except BaseException as error:  # KeyboardInterrupt and Terminated too: the parent re-raises them
            outcome = ("error", error)
    # The export has cleaned up after itself; a Ctrl-C the parent passes on now must not cut the reply short.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for warning in caught:
        sender.send_bytes(pickle.dumps(("warning", (warning.category, str(warning.message), warning.filename, warning.lineno))))
    try:
        reply = pickle.dumps(outcome)
    except Exception as error:  # an exception that does not pickle: its text comes back
        reply = pickle.dumps(("error", Flow2OnnxError(f"{type(outcome[1]).__name__}: {outcome[1]} ({error})")))
    sender.send_bytes(reply)
    sender.close()
    os._exit(0)  # past OneFlow's native teardown, which can abort after the work is done


def _export(model, example_inputs, options):
    flow = import_oneflow()
    if not isinstance(model, (flow.nn.Module, flow.nn.Graph)) and callable(model):
        model = model()
    return run_export(model, example_inputs, ExportOptions(**options))


def _die_with_parent() -> None:
    """Ask Linux to send SIGTERM to this worker when its parent dies (killed with SIGKILL, say)."""
    try:
        ctypes.CDLL(None).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
