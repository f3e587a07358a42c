"""The one export pipeline that the API, the tutorial-compatible functions, the CLI and the tests call."""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx

from . import graph as graph_reader
from ._oneflow import import_oneflow
from .converter import convert
from .errors import Flow2OnnxError, InvalidModelError, OpsetError, OutputPathError, PluginError, VerificationError
from .plugin_manager import load_plugins
from .registry import DEFAULT_OPSET, MIN_OPSET, max_opset
from .verification import DEFAULT_ATOL, DEFAULT_RTOL, VerificationReport, compare, draw_inputs, run_oneflow

log = logging.getLogger("flow2onnx")

# Protobuf cannot serialise a message of 2 GiB or more; past this the weights must go to a side file.
PROTOBUF_LIMIT = 2**31 - 1
DEFAULT_VERIFIER = "onnxruntime"


@dataclass
class ExportResult:
    """What an export produced, and how it was checked."""

    path: str
    opset: int
    input_names: list[str]
    output_names: list[str]
    #: OneFlow op type -> number of ops of that type in the graph.
    op_types: dict[str, int]
    #: OneFlow op type -> the plugin whose lowering converted it.
    lowered_by: dict[str, str]
    dynamic_batch: bool
    external_data: bool
    post_passes: list[str]
    #: Seconds spent in each phase (read_graph, convert, check, post_passes, write, verify).
    timings: dict[str, float] = field(default_factory=dict)
    report: VerificationReport | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def data_path(self) -> str | None:
        return self.path + ".data" if self.external_data else None


def export(
    model,
    example_inputs: Sequence | None = None,
    path: str | os.PathLike = "model.onnx",
    *,
    opset: int | None = None,
    dynamic_batch: bool = False,
    verify: bool = True,
    verifier: str = DEFAULT_VERIFIER,
    verify_batch_sizes: Sequence[int] | None = None,
    rtol: float = DEFAULT_RTOL,
    atol: float = DEFAULT_ATOL,
    input_range: tuple[float, float] | None = None,
    print_outlier: bool = False,
    external_data: bool | None = None,
    post_passes: Sequence[str] = (),
    plugins: Sequence[Any] = (),
) -> ExportResult:
    """Export a OneFlow model to an ONNX file and verify it against OneFlow.

    :param model: a compiled ``oneflow.nn.Graph``, an uncompiled one together with ``example_inputs``,
        or an eager ``oneflow.nn.Module`` with ``example_inputs`` (wrapped in a graph here, and put in
        eval mode with a warning if it was training).
    :param example_inputs: tensors (or numpy arrays) to compile the graph with; their shapes become
        the model's static shapes, except dim 0 when ``dynamic_batch`` is set.
    :param path: the ``.onnx`` file to write; an existing directory gets ``model.onnx`` inside it.
        The file appears only once complete and verified.
    :param opset: target ONNX opset, from 11 to the newest the installed onnx knows (default 17).
    :param dynamic_batch: make dim 0 of every input and output symbolic (``batch``); verification then
        runs at three batch sizes.
    :param verify: run the written model with ``verifier`` and compare every output with OneFlow's;
        a mismatch raises :class:`VerificationError` and leaves no file.
    :param external_data: store weights in ``<path>.data``; ``None`` decides by size (over 2 GB).
    :param post_passes: names of registered post-passes to run, in order (e.g. ``["onnxsim"]``).
    :param plugins: extra plugin objects for this export only.
    """
    timings: dict[str, float] = {}
    target = _resolve_target(path)
    opset = _check_opset(opset)

    started = time.perf_counter()
    flow_graph_obj = _as_compiled_graph(model, example_inputs)
    graph = graph_reader.read_graph(flow_graph_obj)
    timings["read_graph"] = time.perf_counter() - started
    log.info("read graph %s: %d ops of %d types", graph.name, len(graph.ops), len(graph.op_types()))
    if dynamic_batch:
        _check_dynamic_batch(graph)

    loaded = load_plugins(extra_plugins=plugins)
    registry = loaded.registry
    if verify and verifier not in registry.verifiers:
        raise PluginError(
            f"verifier {verifier!r} is not registered (available: {sorted(registry.verifiers) or 'none'}); "
            "install or enable the plugin that provides it, or pass verify=False"
        )
    unknown_passes = [name for name in post_passes if name not in registry.post_passes]
    if unknown_passes:
        raise PluginError(
            f"post-pass {', '.join(map(repr, unknown_passes))} is not registered "
            f"(available: {', '.join(sorted(registry.post_passes)) or 'none'})"
        )

    started = time.perf_counter()
    onnx_model, used = convert(graph, registry, opset, dynamic_batch, producer_version=_version())
    timings["convert"] = time.perf_counter() - started
    log.info("converted %d ops to %d ONNX nodes at opset %d", len(graph.ops), len(onnx_model.graph.node), opset)

    warnings_seen: list[str] = []
    applied = []
    started = time.perf_counter()
    for name in post_passes:
        post_pass = registry.post_passes[name]
        try:
            candidate = post_pass.function(onnx_model)
            onnx.checker.check_model(candidate)
        except Exception as error:  # keep the model from before the failing pass
            message = f"post-pass {name!r} (plugin {post_pass.plugin!r}) failed and was skipped: {type(error).__name__}: {error}"
            log.warning(message)
            warnings_seen.append(message)
            continue
        onnx_model = candidate
        applied.append(name)
    timings["post_passes"] = time.perf_counter() - started

    size = onnx_model.ByteSize()
    if external_data is None:
        external_data = size >= PROTOBUF_LIMIT

    result = ExportResult(
        path=target,
        opset=opset,
        input_names=[info.name for info in graph.inputs],
        output_names=[info.name for info in graph.outputs],
        op_types=graph.op_types(),
        lowered_by={op_type: lowering.plugin for op_type, lowering in used.items()},
        dynamic_batch=dynamic_batch,
        external_data=bool(external_data),
        post_passes=applied,
        timings=timings,
        warnings=warnings_seen,
    )

    staging = _staging_dir(target)
    try:
        started = time.perf_counter()
        staged = os.path.join(staging, os.path.basename(target))
        data_name = os.path.basename(target) + ".data"
        if external_data:
            onnx.save_model(onnx_model, staged, save_as_external_data=True, all_tensors_to_one_file=True, location=data_name, size_threshold=1024)
        else:
            onnx.save_model(onnx_model, staged)
        del onnx_model
        timings["write"] = time.perf_counter() - started
        # Checked from the file: the in-memory check would serialise the whole model once more.
        started = time.perf_counter()
        _check_model(staged)
        timings["check"] = time.perf_counter() - started
        log.info("wrote %s (%.1f MB)", target, size / 1e6)

        if verify:
            started = time.perf_counter()
            batch_sizes = _batch_sizes(graph, dynamic_batch, verify_batch_sizes)
            result.report = _verify(graph, registry.verifiers[verifier], staged, batch_sizes, rtol, atol, input_range)
            timings["verify"] = time.perf_counter() - started
            log.info("verified with %s at batch size %s: %s", verifier, batch_sizes, "ok" if result.report.passed else "MISMATCH")
            if print_outlier or not result.report.passed:
                print(result.report.to_text(outliers=print_outlier))
            if not result.report.passed:
                raise VerificationError(
                    "the exported model's outputs differ from OneFlow's beyond tolerance (report above; nothing was "
                    "written). Pass verify=False (CLI: --no-verify) to write it anyway, or report the op types "
                    f"involved: {', '.join(sorted(result.op_types))}",
                    result.report,
                )

        staged_data = os.path.join(staging, data_name)
        if os.path.exists(staged_data):  # absent when every tensor is under save_model's size threshold
            os.replace(staged_data, target + ".data")
        else:
            result.external_data = False
        os.replace(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


# ---- steps ----


def _version() -> str:
    from .plugin_manager import _own_version

    return _own_version()


def _check_opset(opset: int | None) -> int:
    newest = max_opset()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise OpsetError(
            f"opset {opset!r} is not supported: flow2onnx exports opsets {MIN_OPSET} to {newest} "
            f"(the newest the installed onnx {onnx.__version__} knows); the default is {DEFAULT_OPSET}"
        )
    return opset


def _resolve_target(path) -> str:
    """The absolute file path to write; fail now, before any work, if it cannot be written."""
    path = os.fspath(path)
    if os.path.isdir(path):
        path = os.path.join(path, "model.onnx")
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as error:
        raise OutputPathError(
            f"cannot write the model to {path}: {error.strerror or error}; choose a writable directory for the output"
        ) from error
    return path


def _staging_dir(target: str) -> str:
    # Same directory as the target, so the final rename is atomic (same file system).
    return tempfile.mkdtemp(prefix=f".{os.path.basename(target)}.partial-", dir=os.path.dirname(target))


def _check_model(model) -> None:
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as error:
        raise Flow2OnnxError(f"the converted model is not valid ONNX: {error}") from error
    except onnx.shape_inference.InferenceError as error:
        raise Flow2OnnxError(f"the converted model fails ONNX shape inference: {error}") from error


def _as_compiled_graph(model, example_inputs):
    flow = import_oneflow()
    inputs = None
    if example_inputs is not None:
        if isinstance(example_inputs, (flow.Tensor, np.ndarray)):
            example_inputs = [example_inputs]
        inputs = [flow.tensor(x) if isinstance(x, np.ndarray) else x for x in example_inputs]
    if isinstance(model, flow.nn.Graph):
        if not getattr(model, "_is_compiled", False):
            if inputs is None:
                raise InvalidModelError(
                    f"the nn.Graph {type(model).__name__} is not compiled: pass example_inputs, or call "
                    "graph._compile(*example_inputs) before exporting"
                )
            graph_reader.compile_graph(model, inputs)
        return model
    if isinstance(model, flow.nn.Module):
        if inputs is None:
            raise InvalidModelError(
                f"exporting the module {type(model).__name__} needs example_inputs: the tensors (or shapes) it is "
                "run on once to build the graph, e.g. export(module, [flow.rand(1, 3, 224, 224)])"
            )
        return graph_reader.wrap_module(model, inputs)
    raise InvalidModelError(
        f"cannot export a {type(model).__module__}.{type(model).__name__}: pass a oneflow.nn.Graph or a "
        "oneflow.nn.Module with example_inputs"
    )


def _batch_sizes(graph, dynamic_batch: bool, requested) -> list:
    """Batch sizes to verify at; ``None`` means the example's own shapes."""
    if not dynamic_batch:
        return [None]
    if requested:
        return list(requested)
    example = graph.inputs[0].shape[0]
    return [example, example + 1, 2 * example + 3]


def _check_dynamic_batch(graph) -> None:
    batch_dims = {info.name: info.shape[0] if info.shape else None for info in graph.inputs}
    if not graph.inputs or None in batch_dims.values() or len(set(batch_dims.values())) > 1:
        raise InvalidModelError(
            f"dynamic_batch needs every input to carry the batch on dim 0, with the same size; the example inputs "
            f"have dim 0 of {batch_dims or 'no inputs'}. Export with static shapes, or give the inputs a common batch dimension"
        )


def _verify(graph, verifier, model_path: str, batch_sizes, rtol: float, atol: float, input_range) -> VerificationReport:
    report = VerificationReport(verifier=verifier.name, rtol=rtol, atol=atol)
    for index, batch in enumerate(batch_sizes):
        arrays = draw_inputs(graph.inputs, batch, seed=index)
        if input_range is not None:
            low, high = input_range
            arrays = [a * (high - low) + low if np.issubdtype(a.dtype, np.floating) else a for a in arrays]
        expected = run_oneflow(graph, arrays)
        feeds = {info.name: array for info, array in zip(graph.inputs, arrays)}
        try:
            actual = verifier.function(model_path, feeds)
        except Exception as error:
            raise Flow2OnnxError(
                f"verifier {verifier.name!r} (plugin {verifier.plugin!r}) could not run the exported model: "
                f"{type(error).__name__}: {error}"
            ) from error
        if len(actual) != len(expected):
            raise Flow2OnnxError(f"the exported model has {len(actual)} outputs but OneFlow's graph has {len(expected)}")
        for info, want, got in zip(graph.outputs, expected, actual):
            report.comparisons.append(compare(info.name, want, got, rtol, atol, batch_size=batch))
    return report
