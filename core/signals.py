"""Ctrl-C and ``kill`` end an export cleanly: an exception unwinds it, and its clean-up runs.

Importing OneFlow 0.9 installs a C-level SIGINT handler that ends the process at once (exit code
255): Python never sees ``KeyboardInterrupt`` and no ``finally`` runs, so an export's staging
folder would stay behind. :func:`restore_interrupt` gives SIGINT back to Python after OneFlow's
import. SIGTERM's default action also kills without clean-up; :func:`signals_raise` turns it into
:class:`Terminated` (a ``BaseException``, like ``KeyboardInterrupt``) for the duration of an export, and makes sure neither signal is lost inside
native code.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

#: Exit status of a process ended by SIGINT / SIGTERM, as shells report it (128 + signal number).
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM


class Terminated(BaseException):
    """Raised in the main thread when SIGTERM arrives during an export, as ``KeyboardInterrupt`` is for SIGINT.

    Not a ``SystemExit``: native code that reports a Python exception with ``PyErr_Print`` ends the
    process at once on a ``SystemExit``, before any clean-up. The CLI turns it into exit status 143.
    """


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


# The signals an export turns into exceptions (see _exception_for).
_SIGNALS = (signal.SIGINT, signal.SIGTERM)


@contextlib.contextmanager
def signals_raise():
    """While the body runs, SIGINT raises ``KeyboardInterrupt`` and SIGTERM :class:`Terminated`, so
    that ``finally`` blocks clean up; the previous handlers come back afterwards.

    An exception raised by a signal handler can be swallowed on its way out: native code that was
    running (an extension module's initialisation, a C++ call) may turn it into another exception,
    which a library then wraps. So each signal that arrives is also recorded, and when the body
    ends by any other exception, or none, the signal's own exception is raised from there.
    Outside the main thread, where handlers cannot be set, the body runs unchanged.
    """
    if not _in_main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum, frame):
        received.append(signum)
        if _held:  # a step that must not be cut in two: raise when it ends
            _pending.append(signum)
            return
        raise _exception_for(signum)

    previous_hooks = sys.unraisablehook, sys.excepthook

    def ours(exc_type) -> bool:
        return bool(received) and exc_type is not None and issubclass(exc_type, (KeyboardInterrupt, Terminated))

    # Where Python cannot raise (a finaliser, a callback), it prints "Exception ignored" and a
    # traceback; native code that calls into Python may print one with PyErr_Print. The signal is
    # recorded and raised when the body ends, so those prints of it are noise.
    def unraisable(info):
        if not ours(info.exc_type):
            previous_hooks[0](info)

    def excepthook(exc_type, value, traceback):
        if not ours(exc_type):
            previous_hooks[1](exc_type, value, traceback)

    previous = {signum: signal.signal(signum, handler) for signum in _SIGNALS}
    sys.unraisablehook, sys.excepthook = unraisable, excepthook
    try:
        yield
    except (KeyboardInterrupt, Terminated):
        raise
    except BaseException as error:
        if received:
            raise _exception_for(received[0]) from error
        raise
    else:
        if received:
            raise _exception_for(received[0])
    finally:
        sys.unraisablehook, sys.excepthook = previous_hooks
        for signum, old in previous.items():
            signal.signal(signum, old if old is not None else signal.SIG_DFL)


def _exception_for(signum: int) -> BaseException:
    return KeyboardInterrupt() if signum == signal.SIGINT else Terminated()


@contextlib.contextmanager
def deferred():
    """Hold back the exception of a SIGINT or SIGTERM that arrives while the body runs, and raise
    it when the body ends.

    For the few steps that create something and record that they did (a folder and the variable
    naming it): an exception between the two would leave a thing nobody knows to remove. Masking
    the signal would not do: OneFlow runs threads of its own, and the kernel hands a process's
    signal to any thread that does not block it, after which Python runs the handler in the main
    thread at once. So the handler of :func:`signals_raise` looks here and, while a step is held,
    only records the signal.
    """
    _held.append(True)
    try:
        yield
    finally:
        _held.pop()
        if not _held and _pending:
            signum = _pending.pop(0)
            _pending.clear()
            raise _exception_for(signum)


# Steps under :func:`deferred`, and the signals that arrived during them.
_held: list = []
_pending: list = []
