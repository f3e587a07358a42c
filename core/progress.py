"""Progress of long work, emitted as log records: the library never prints.

Each step of an export that can take seconds reports on the logger ``flow2onnx.progress``, at
level DEBUG, with a :class:`Progress` in the record's ``progress`` attribute: capture, lowering
(ops done of the graph's), checking, writing (bytes of the weights) and verification (runs done).
Nothing is built when no handler listens at DEBUG. The CLI renders these records as one status line
on a terminal; records of an isolated export come back from its worker like any other.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

LOGGER_NAME = "flow2onnx.progress"
_log = logging.getLogger(LOGGER_NAME)


@dataclass(frozen=True)
class Progress:
    """Where one phase of an export stands."""

    #: ``capture``, ``lowering``, ``checking``, ``writing`` or ``verification``.
    phase: str
    done: float | None = None
    total: float | None = None
    #: What ``done`` and ``total`` count: ``ops``, ``bytes``, ``runs``.
    unit: str = ""
    #: A few words on the current step (the shapes of a verification run).
    detail: str = ""

    def __str__(self) -> str:
        counted = ""
        if self.done is not None:
            counted = f" {self.done:g}" + (f"/{self.total:g}" if self.total is not None else "") + f" {self.unit}"
        return f"{self.phase}{counted}{': ' + self.detail if self.detail else ''}"


def listening() -> bool:
    """Whether anyone takes progress records (cheap; callers in loops check it first)."""
    return _log.isEnabledFor(logging.DEBUG)


def report(phase: str, done: float | None = None, total: float | None = None, unit: str = "", detail: str = "") -> None:
    """Emit one progress record (nothing when no handler listens)."""
    if listening():
        step = Progress(phase, done, total, unit, detail)
        _log.debug("%s", step, extra={"progress": step})


class Counter:
    """Reports ``done`` of ``total`` in steps of at least ``every``, so that loops report a few hundred times at most."""

    def __init__(self, phase: str, total: float, unit: str, every: float):
        self.phase, self.total, self.unit, self.every = phase, total, unit, every
        self.done = 0.0
        self._next = 0.0
        self.active = listening()

    def add(self, amount: float = 1) -> None:
        self.done += amount
        if self.active and (self.done >= self._next or self.done >= self.total):
            self._next = self.done + self.every
            report(self.phase, self.done, self.total, self.unit)
