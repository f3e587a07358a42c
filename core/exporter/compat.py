"""The API of OneFlow's tutorial tool (``oneflow_onnx``), on flow2onnx's export pipeline.

Differences that are on purpose: weights are read from memory (``flow_weight_dir`` is accepted and
not needed), every output is compared (not only the first), ``dynamic_batch_size=True`` gives a model
that really runs at any batch size and is verified at three, and a mismatch raises
:class:`flow2onnx.VerificationError` with a per-output report.
"""

from __future__ import annotations

import os

from ..errors import VerificationError
from .api import export

MODEL_FILE_NAME = "model.onnx"
#: The tutorial's ``device`` values; the graph's own placement decides, so they are only checked.
DEVICES = ("cpu", "gpu", "cpu_global", "gpu_global")


def _model_path(onnx_model_path) -> str:
    path = os.fspath(onnx_model_path)
    if os.path.isdir(path) or path.endswith(os.sep) or not path.endswith(".onnx"):
        return os.path.join(path, MODEL_FILE_NAME)
    return path


def export_onnx_model(graph, external_data=False, opset=None, flow_weight_dir=None, onnx_model_path="/tmp", dynamic_batch_size=False):
    """Export a compiled ``nn.Graph`` to ``<onnx_model_path>/model.onnx``.

    Like the tutorial's tool it does not verify a static model; a dynamic batch it does verify, at
    batch sizes other than the example's, since a file that fails at another batch size must never
    be written (a mismatch raises :class:`VerificationError` and writes nothing). Returns ``(path,
    cleanup)`` as the tutorial's tool does; ``cleanup`` has nothing to remove, since no weights are
    saved to disk.
    """
    result = export(
        graph,
        path=_model_path(onnx_model_path),
        opset=opset,
        dynamic_batch=dynamic_batch_size,
        external_data=external_data or None,
        verify=bool(dynamic_batch_size),
    )
    return result.path, lambda: None


def convert_to_onnx_and_check(
    graph,
    print_outlier=False,
    external_data=False,
    ort_optimize=True,
    opset=None,
    flow_weight_dir=None,
    onnx_model_path="/tmp",
    dynamic_batch_size=False,
    device="cpu",
    input_tensor_range=None,
):
    """Export a compiled ``nn.Graph`` and check every output against OneFlow on ONNX Runtime.

    Prints the per-output report (with the worst elements when ``print_outlier``) and returns the
    :class:`flow2onnx.ExportResult`; on a mismatch prints the report and raises
    :class:`flow2onnx.VerificationError`, which carries it; so does an output that no verification run
    could compare (NaN everywhere: the report says "not verified"), and nothing is written then.
    ``input_tensor_range=[low, high]`` sets the range of the random float inputs (default [0, 1)).
    ``ort_optimize`` is accepted for compatibility. ``device`` (``"cpu"``, ``"gpu"``,
    ``"cpu_global"``, ``"gpu_global"``) is checked but not needed: the placement and SBP of each input
    of a graph built on global tensors (as LiBai builds its models) are read from the compiled graph,
    and OneFlow is run on inputs laid out that way. Verification runs on ONNX Runtime's CPU provider.
    """
    if device not in DEVICES:
        raise ValueError(f"device must be one of {', '.join(map(repr, DEVICES))}, got {device!r}")
    input_range = None
    if input_tensor_range is not None:
        low, high = input_tensor_range
        if not low < high:
            raise ValueError(f"input_tensor_range must be [low, high] with low < high, got {input_tensor_range!r}")
        input_range = (low, high)
    # The tutorial's check promises a comparison: an output that no run could compare (NaN
    # everywhere) fails it, where export() only warns.
    try:
        result = export(
            graph,
            path=_model_path(onnx_model_path),
            opset=opset,
            dynamic_batch=dynamic_batch_size,
            external_data=external_data or None,
            verify=True,
            input_range=input_range,
            require_verified=True,
        )
    except VerificationError as error:
        # The tutorial's tool printed its findings; this API does too, as the library itself does not.
        print(_mismatch_text(error, outliers=print_outlier))
        raise
    print(result.report.to_text(outliers=print_outlier) if result.report is not None else f"not verified: {result.verification_skipped}")
    return result


def _mismatch_text(error: VerificationError, outliers: bool = False) -> str:
    """The text shown for a failed verification: the report, then what the first-divergence finder found."""
    parts = [error.report.to_text(outliers=outliers)]
    if error.divergence is not None:
        parts.append(error.divergence.to_text())
    return "\n".join(parts)
