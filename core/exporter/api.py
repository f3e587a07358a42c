"""``flow2onnx.export``: the export options checked once, before any work, and the pipeline run
here or in a worker process of its own.

Its signature and documentation come from the options' one declaration,
:class:`~flow2onnx.exporter.options.ExportOptions`, as the CLI's flags do.
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

from .isolation import export_isolated
from .options import ExportOptions, api_documentation, api_parameters, checked_keywords
from .pipeline import ExportResult, run_export

__all__ = ["export"]


def export(model, example_inputs: Sequence | None = None, path="model.onnx", **options: Any) -> ExportResult:
    checked_keywords(options)
    checked = ExportOptions(path=path, **options)  # checked here, before any work (or worker process)
    if checked.isolate:
        settings = {name: value for name, value in options.items() if name != "isolate"}
        return export_isolated(model, example_inputs, dict(settings, path=path))
    return run_export(model, example_inputs, checked)


export.__signature__ = inspect.Signature(api_parameters(), return_annotation="ExportResult")
export.__doc__ = f"""Export a OneFlow model to an ONNX file and verify it against OneFlow.

Every option is keyword-only after ``path``.

{api_documentation()}
:returns: an :class:`ExportResult`. A failure raises a :class:`flow2onnx.Flow2OnnxError` (a subclass
    per cause) whose message names the cause and the fix, and leaves ``path`` as it was.
"""
