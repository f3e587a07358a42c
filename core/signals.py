"""Ctrl-C and ``kill`` end an export cleanly: an exception unwinds it, and its clean-up runs.

Importing OneFlow 0.9 installs a C-level SIGINT handler that ends the process at once (exit code
255): Python never sees ``KeyboardInterrupt`` and no ``finally`` runs, so an export's staging
folder would stay behind. :func:`restore_interrupt` gives SIGINT back to Python after OneFlow's
import. SIGTERM's default action also kills without clean-up; :func:`termination_raises` turns it
into :class:`Terminated` for the duration of an export.
"""

from __future__ import annotations

import contextlib
import signal
import threading

#: Exit status of a process ended by SIGINT / SIGTERM, as shells report it (128 + signal number).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(SystemExit):
    """Raised in the main thread when SIGTERM arrives during an export; exits with status 143 if not caught."""

    def __init__(self):
        super().__init__(EXIT_TERMINATED)


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def restore_interrupt() -> None:
    """Re-install Python's own SIGINT handling over a C-level handler a native library installed.

    Python still believes its handler is in place (``signal.getsignal`` cannot see the native one),
    so installing that same handler again re-arms it. Only the main thread may set handlers; from
    another thread this does nothing.
    """
    if not _in_main_thread():
        return
    current = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, signal.default_int_handler if current is None else current)


def _raise_terminated(signum, frame):
    raise Terminated()


@contextlib.contextmanager
def termination_raises():
    """While the body runs, SIGTERM raises :class:`Terminated` so that ``finally`` blocks clean up.

    The previous SIGTERM handler comes back afterwards. Outside the main thread, where handlers
    cannot be set, the body runs unchanged.
    """
    if not _in_main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
