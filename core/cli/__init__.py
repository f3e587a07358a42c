"""The ``flow2onnx`` command: export and check (:mod:`.main`), ``ops`` (:mod:`.ops`), ``run`` and
``info`` (:mod:`.run`). Only this package and the tutorial API print; the library logs."""

from .main import console, main

__all__ = ["console", "main"]
