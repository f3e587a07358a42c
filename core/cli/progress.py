"""The command's status line: progress records of the library (:mod:`flow2onnx.progress`), drawn on stderr.

Drawn only when stderr is a terminal and the command is not quiet, and only once the work has lasted
:data:`DELAY` seconds: short exports print nothing more than before. Log lines printed meanwhile
clear the status line first, and it is drawn again with the next record.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time

from ..progress import LOGGER_NAME

#: Seconds of work before the status line appears.
DELAY = 2.0
#: Seconds between two redraws.
INTERVAL = 0.1


class StatusLine(logging.Handler):
    """Renders progress records as one line, ``flow2onnx: lowering 12000/20020 ops``, redrawn in place."""

    def __init__(self, stream):
        super().__init__(logging.DEBUG)
        self.stream = stream
        self.started = time.monotonic()
        self.shown = False
        self._last = None
        self._drawn_at = 0.0
        self._phase_started: dict[str, float] = {}
        self._lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        step = getattr(record, "progress", None)
        if step is not None:
            with self._lock:
                self._last = step
                self._phase_started.setdefault(step.phase, time.monotonic())
            self.tick(throttled=True)

    def tick(self, throttled: bool = False) -> None:
        """Draw the latest step (with the seconds its phase has lasted), once the work has lasted :data:`DELAY`."""
        with self._lock:
            now = time.monotonic()
            if self._last is None or now - self.started < DELAY or (throttled and now - self._drawn_at < INTERVAL):
                return
            self._drawn_at = now
            self.stream.write("\r\x1b[K" + self.render(self._last, now - self._phase_started[self._last.phase]))
            self.stream.flush()
            self.shown = True

    @staticmethod
    def render(step, seconds: float) -> str:
        text = f"flow2onnx: {step.phase}"
        if step.done is not None and step.unit == "bytes":
            rate = step.done / 1e6 / seconds if seconds > 0 else 0.0
            text += f" {step.done / 1e6:.1f}/{(step.total or 0) / 1e6:.1f} MB ({rate:.0f} MB/s)"
        elif step.done is not None:
            text += f" {step.done:g}" + (f"/{step.total:g}" if step.total is not None else "") + f" {step.unit}"
        if step.detail:
            text += f": {step.detail}"
        return f"{text[:150]} ({seconds:.0f} s)"

    def clear(self) -> None:
        with self._lock:
            if self.shown:
                self.stream.write("\r\x1b[K")
                self.stream.flush()
                self.shown = False


class _ClearingHandler(logging.StreamHandler):
    """The command's log lines: the status line is cleared before each one."""

    def __init__(self, stream, status: StatusLine):
        super().__init__(stream)
        self.status = status

    def emit(self, record: logging.LogRecord) -> None:
        self.status.clear()
        super().emit(record)


def _tick(status: StatusLine, stop: threading.Event) -> None:
    """Redraw the status line while a phase reports nothing (OneFlow compiling, ONNX Runtime loading)."""
    while not stop.wait(0.5):
        status.tick()


@contextlib.contextmanager
def status_line(quiet: bool, stream=None):
    """Show progress records on ``stream`` (stderr) for the time of the block, when it is a terminal and not ``quiet``."""
    stream = stream or sys.stderr
    if quiet or not getattr(stream, "isatty", lambda: False)():
        yield
        return
    # Its own descriptor for the terminal: while OneFlow compiles, descriptor 2 points at a file that
    # filters OneFlow's native noise (see flow2onnx._oneflow.quiet_native_output).
    terminal = os.fdopen(os.dup(stream.fileno()), "w")
    status = StatusLine(terminal)
    progress_logger = logging.getLogger(LOGGER_NAME)
    root = logging.getLogger()
    lines = _ClearingHandler(stream, status)
    lines.setFormatter(logging.Formatter("flow2onnx: %(message)s"))
    replaced = [h for h in root.handlers if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is stream]
    for handler in replaced:
        root.removeHandler(handler)
    root.addHandler(lines)
    progress_logger.addHandler(status)
    progress_logger.setLevel(logging.DEBUG)
    progress_logger.propagate = False
    stop = threading.Event()
    ticker = threading.Thread(target=_tick, args=(status, stop), name="flow2onnx-status", daemon=True)
    ticker.start()
    try:
        yield
    finally:
        stop.set()
        ticker.join()
        status.clear()
        progress_logger.removeHandler(status)
        progress_logger.setLevel(logging.NOTSET)
        progress_logger.propagate = True
        root.removeHandler(lines)
        for handler in replaced:
            root.addHandler(handler)
        terminal.close()
