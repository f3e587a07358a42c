"""The one export pipeline that the API, the tutorial-compatible functions, the CLI and the tests call."""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from . import capture as graph_reader
from .._oneflow import import_oneflow
from .converter import convert, dynamic_axes_of
from ..errors import Flow2OnnxError, InvalidModelError, LoweringError, OpsetError, OutputPathError, PluginError, VerificationError
from ..lowering.plugin_manager import load_plugins, own_version
from ..lowering.registry import DEFAULT_OPSET, MIN_OPSET, max_opset
from .verification import VerificationReport, compare, draw_inputs, index_bounds, run_oneflow
from .writer import materialize, skeleton, weights_nbytes, write_external, write_streamed

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
    #: Input name -> {axis: symbol} for the axes that are symbolic in the model.
    dynamic_axes: dict
    external_data: bool
    post_passes: list[str]
    #: Seconds spent in each phase (read_graph, convert, check, post_passes, write, verify).
    timings: dict[str, float] = field(default_factory=dict)
    report: VerificationReport | None = None
    warnings: list[str] = field(default_factory=list)
    #: OneFlow op type -> "plugin overrides other plugin", for the lowerings used that override another.
    overrides: dict[str, str] = field(default_factory=dict)
    #: Custom ONNX domains the model imports -> their versions.
    custom_domains: dict[str, int] = field(default_factory=dict)
    #: Why verification did not run although it was asked for (e.g. a custom domain no runtime knows).
    verification_skipped: str | None = None
    #: The repro bundle's directory, when one was asked for.
    bundle_dir: str | None = None
    #: What the first-divergence finder found (``None``: it did not run, or nothing diverged).
    divergence: Any = None
    #: Whether the first-divergence finder ran.
    bisected: bool = False

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
    rtol: float | None = None,
    atol: float | None = None,
    input_range: tuple[float, float] | None = None,
    print_outlier: bool = False,
    external_data: bool | None = None,
    post_passes: Sequence[str] = (),
    strict_post_passes: bool = False,
    plugins: Sequence[Any] = (),
    disable_plugins: Sequence[str] = (),
    only_plugins: Sequence[str] | None = None,
    bundle_dir: str | os.PathLike | None = None,
    bisect: bool = False,
    dynamic_axes: dict[str, dict[int, str]] | None = None,
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
    :param rtol: relative tolerance for floating-point outputs (default by dtype: 1e-3 for float32).
    :param atol: absolute tolerance, scaled by the output's largest magnitude (default 1e-4 for float32).
    :param external_data: store weights in ``<path>.data``; ``None`` decides by size (over 2 GB).
    :param post_passes: names of registered post-passes to run, in order (e.g. ``["onnxsim"]``). A
        pass that fails, or whose output no longer matches OneFlow, is reported by name and the model
        from before it is kept; with ``strict_post_passes`` the export fails instead.
    :param plugins: extra plugin objects for this export only.
    :param disable_plugins: names of plugins not to load (see ``flow2onnx plugins``).
    :param only_plugins: load only these plugins (and the essential ones).
    :param bundle_dir: also write a repro bundle there: the model and ``test_data_set_0/`` with the
        inputs of the first verification run and OneFlow's outputs for them (ONNX's test-data
        layout), so that anyone can rerun the comparison with ONNX Runtime alone. Written even when
        verification fails; needs ``verify``.
    :param dynamic_axes: input name -> ``{axis: symbol}`` for axes to keep symbolic, e.g.
        ``{"input": {0: "batch", 2: "height", 3: "width"}}``; outputs get the symbols that follow.
        Verification then runs at three shapes, and an op whose lowering depends on an example's
        size along such an axis is reported instead of exported (eager modules only, for axes
        other than the batch).
    :param bisect: run the first-divergence finder even when verification passes (it always runs
        when verification fails and the model is an eager module); see ``result.divergence``.
    """
    timings: dict[str, float] = {}
    target = _resolve_target(path)
    opset = _check_opset(opset)
    if bundle_dir is not None and not verify:
        raise Flow2OnnxError("a repro bundle holds OneFlow's outputs from verification: bundle_dir needs verify=True")

    started = time.perf_counter()
    flow_graph_obj = _as_compiled_graph(model, example_inputs)
    graph = graph_reader.read_graph(flow_graph_obj)
    timings["read_graph"] = time.perf_counter() - started
    log.info("read graph %s: %d ops of %d types", graph.name, len(graph.ops), len(graph.op_types()))
    if dynamic_batch:
        _check_dynamic_batch(graph)
    _check_dynamic_axes(graph, dynamic_axes)
    axes = dynamic_axes_of(graph, dynamic_batch, dynamic_axes)

    loaded = load_plugins(extra_plugins=plugins, disable=disable_plugins, only=only_plugins)
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
    variant = None
    if any(axes.values()) and graph.eager_module is not None:
        variant, variant_shapes = _variant_graph(graph, axes)
    onnx_model, used, weights = convert(
        graph, registry, opset, dynamic_batch, producer_version=own_version(), dynamic_axes=dynamic_axes, variant=variant
    )
    timings["convert"] = time.perf_counter() - started
    if variant is not None:
        started = time.perf_counter()
        _check_shapes_follow(graph, variant, variant_shapes, axes, registry, opset, dynamic_batch, dynamic_axes, onnx_model)
        timings["dynamic_axes_check"] = time.perf_counter() - started
    log.info("converted %d ops to %d ONNX nodes at opset %d", len(graph.ops), len(onnx_model.graph.node), opset)

    size = onnx_model.ByteSize() + weights_nbytes(weights)
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
        dynamic_axes={name: mapping for name, mapping in axes.items() if mapping},
        external_data=bool(external_data),
        post_passes=[],
        timings=timings,
        overrides={
            op_type: f"{lowering.plugin} overrides {', '.join(lowering.overrides)}"
            for op_type, lowering in used.items()
            if lowering.overrides
        },
        custom_domains={d.domain: d.version for d in onnx_model.opset_import if d.domain not in ("", "ai.onnx")},
    )

    passes = [registry.post_passes[name] for name in post_passes]
    if passes and size >= PROTOBUF_LIMIT:
        _warn(result, f"post-passes {', '.join(post_passes)} skipped: the model is {size / 2**30:.1f} GiB and post-passes "
              "work on one in-memory protobuf, which cannot exceed 2 GiB")
        passes = []
    if passes:
        # Post-passes need the weights inside the model; without them, the writer streams the
        # weights from OneFlow's memory to the file.
        onnx_model, weights = materialize(onnx_model, weights, graph.read_weight), []
    started = time.perf_counter()
    onnx_model = _run_post_passes(onnx_model, passes, result, strict_post_passes)
    timings["post_passes"] = time.perf_counter() - started

    staging = _staging_dir(target)
    try:
        staged = _write(onnx_model, staging, target, external_data, timings, weights, graph.read_weight)
        del onnx_model
        if verify:
            started = time.perf_counter()
            variants = _variants(graph, axes, verify_batch_sizes)
            batch_sizes = [batch for batch, _ in variants]
            samples: list = []
            run = functools.partial(_verify, graph, registry, registry.verifiers[verifier], variants, rtol, atol, input_range, samples=samples)
            report = run(staged, result)
            if report is not None and not report.passed and result.post_passes:
                # Conversion is cheap and deterministic: rebuild the model from before the passes
                # rather than keep a copy of it (and its weights) through every export.
                rebuilt, _, rebuilt_weights = convert(
                    graph, registry, opset, dynamic_batch, producer_version=own_version(), dynamic_axes=dynamic_axes, variant=variant
                )
                before_passes = materialize(rebuilt, rebuilt_weights, graph.read_weight)
                report = _drop_pass_that_changed_results(before_passes, passes, result, run, staging, target, external_data, strict_post_passes, timings)
            result.report = report
            timings["verify"] = time.perf_counter() - started
            if bundle_dir is not None and samples:
                # Written whatever the verdict: a failing bundle is the one worth sending.
                feeds, expected = samples[-1]
                result.bundle_dir = write_bundle(bundle_dir, staged, feeds, expected, graph.outputs)
                log.info("wrote the repro bundle %s", result.bundle_dir)
            if report is not None:
                log.info("verified with %s at batch size %s: %s", verifier, batch_sizes, "ok" if report.passed else "MISMATCH")
                if print_outlier or not report.passed:
                    print(report.to_text(outliers=print_outlier))
                finder = functools.partial(
                    _bisect, graph, opset, dynamic_batch, plugins, disable_plugins, only_plugins, rtol, atol, result
                )
                if not report.passed:
                    error = VerificationError(
                        "the exported model's outputs differ from OneFlow's beyond tolerance (report above; nothing was "
                        "written). " + finder() + "Pass verify=False (CLI: --no-verify) to write it anyway.",
                        report,
                    )
                    error.divergence = result.divergence
                    raise error
                if bisect:
                    finder()
        staged_data = staged + ".data"
        if os.path.exists(staged_data):  # absent when every tensor is under save_model's size threshold
            os.replace(staged_data, target + ".data")
        else:
            result.external_data = False
        os.replace(staged, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result


def write_bundle(directory, model_path: str, feeds: dict, expected: list, outputs) -> str:
    """Write ``model.onnx`` (and its data file) with ``test_data_set_0/input_N.pb`` and ``output_N.pb``.

    The directory is assembled beside its final place and renamed into it, replacing an older bundle.
    """
    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    assembling = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.partial-", dir=parent)
    try:
        name = os.path.basename(model_path)
        shutil.copyfile(model_path, os.path.join(assembling, "model.onnx"))
        if os.path.exists(model_path + ".data"):
            # The model refers to its data file by name, which therefore stays as it is.
            shutil.copyfile(model_path + ".data", os.path.join(assembling, name + ".data"))
        data = os.path.join(assembling, "test_data_set_0")
        os.mkdir(data)
        for index, (input_name, array) in enumerate(feeds.items()):
            with open(os.path.join(data, f"input_{index}.pb"), "wb") as file:
                file.write(numpy_helper.from_array(np.ascontiguousarray(array), input_name).SerializeToString())
        for index, (info, array) in enumerate(zip(outputs, expected)):
            with open(os.path.join(data, f"output_{index}.pb"), "wb") as file:
                file.write(numpy_helper.from_array(np.ascontiguousarray(array), info.name).SerializeToString())
        if os.path.isdir(directory):
            shutil.rmtree(directory)
        os.replace(assembling, directory)
    except OSError as error:
        shutil.rmtree(assembling, ignore_errors=True)
        raise OutputPathError(f"cannot write the repro bundle to {directory}: {error.strerror or error}") from error
    return directory


def _bisect(graph, opset, dynamic_batch, plugins, disable_plugins, only_plugins, rtol, atol, result) -> str:
    """Run the first-divergence finder; returns a sentence for an error message."""
    if graph.eager_module is None:
        return (
            "The first-divergence finder needs the eager module the graph was built from: export the "
            "nn.Module (with example_inputs) rather than the compiled graph to have it name the op. "
        )
    from .bisect import find_first_divergence

    flow = import_oneflow()
    examples = [flow.tensor(a) for a in draw_inputs(graph.inputs, None, seed=99, bounds=index_bounds(graph))]
    log.info("looking for the first op whose lowering diverges")
    result.divergence = find_first_divergence(
        graph.eager_module, examples, opset=opset, dynamic_batch=dynamic_batch, plugins=plugins,
        disable_plugins=disable_plugins, only_plugins=only_plugins, rtol=rtol, atol=atol,
    )
    result.bisected = True
    if result.divergence is None:
        return "No intermediate tensor that OneFlow exposes diverges. "
    print(result.divergence.to_text())
    return f"The first divergence is at {result.divergence.op_type} op {result.divergence.op_name!r} (details above). "


def _warn(result: ExportResult, message: str) -> None:
    log.warning(message)
    result.warnings.append(message)


def _run_post_passes(model, passes, result: ExportResult, strict: bool):
    """Apply the post-passes in order; one that raises or breaks the model is reported and skipped."""
    for post_pass in passes:
        try:
            candidate = post_pass.function(model)
            onnx.checker.check_model(candidate)
        except Exception as error:
            message = f"post-pass {post_pass.describe()} failed: {type(error).__name__}: {error}"
            if strict:
                raise Flow2OnnxError(message + " (strict_post_passes is set, so the export stops)") from error
            _warn(result, message + "; it was skipped and the model from before it kept")
            continue
        model = candidate
        result.post_passes.append(post_pass.name)
    return model


def _drop_pass_that_changed_results(before, passes, result, run, staging, target, external_data, strict, timings):
    """Re-run the applied passes one at a time, verifying after each, and keep the model from before
    the first one whose output no longer matches OneFlow."""
    applied = [p for p in passes if p.name in result.post_passes]
    model = before
    staged = _write(model, staging, target, external_data, timings)
    report = run(staged, result)
    if not report.passed:
        return report  # the conversion itself is wrong, not a post-pass
    kept = []
    for post_pass in applied:
        # A pass may modify its input in place: give it a copy so that the model before it survives.
        copy = onnx.ModelProto()
        copy.CopyFrom(model)
        candidate = post_pass.function(copy)
        staged = _write(candidate, staging, target, external_data, timings)
        candidate_report = run(staged, result)
        if not candidate_report.passed:
            worst = max(candidate_report.comparisons, key=lambda c: c.max_abs_diff)
            message = (
                f"post-pass {post_pass.describe()} changed the results (output {worst.name!r}: max abs diff "
                f"{worst.max_abs_diff:.3g})"
            )
            if strict:
                print(candidate_report.to_text())
                raise VerificationError(message + " (strict_post_passes is set, so the export stops)", candidate_report)
            _warn(result, message + "; the model from before it was kept")
            _write(model, staging, target, external_data, timings)
            break
        model, report = candidate, candidate_report
        kept.append(post_pass.name)
    result.post_passes = kept
    return report


def _write(model, staging: str, target: str, external_data: bool, timings: dict, weights=(), read=None) -> str:
    """Write ``model`` (and ``weights``, streamed) into the staging directory under the target's name,
    then check the file."""
    started = time.perf_counter()
    staged = os.path.join(staging, os.path.basename(target))
    if external_data:
        if os.path.exists(staged + ".data"):
            os.remove(staged + ".data")  # save_model appends to an existing data file
        if weights:
            write_external(model, weights, read, staged)
        else:
            onnx.save_model(model, staged, save_as_external_data=True, all_tensors_to_one_file=True, location=os.path.basename(target) + ".data", size_threshold=1024)
    elif weights:
        write_streamed(model, weights, read, staged)
    else:
        onnx.save_model(model, staged)
    timings["write"] = timings.get("write", 0.0) + time.perf_counter() - started
    # Streamed weights are checked as a skeleton (types and shapes, no data); a model that went
    # through post-passes is checked from its file, since the in-memory check would serialise it again.
    started = time.perf_counter()
    _check_model(skeleton(model, weights) if weights else staged)
    timings["check"] = timings.get("check", 0.0) + time.perf_counter() - started
    log.info("wrote %s (%.1f MB)", target, os.path.getsize(staged) / 1e6)
    return staged


# ---- steps ----


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


def _variants(graph, axes: dict, requested_batch_sizes) -> list[tuple]:
    """The input shapes to verify at: ``(batch label, {input name: shape})``; one ``(None, {})`` when static.

    A dynamic batch B is tried at B, B + 1 and 2B + 3 (or the batch sizes asked for); other dynamic
    axes of size S at S, S + 1 and S + 3.
    """
    if not any(axes.values()):
        return [(None, {})]
    count = len(requested_batch_sizes) if requested_batch_sizes else 3
    variants = []
    for k in range(count):
        shapes, batch = {}, None
        for info in graph.inputs:
            shape = list(info.shape)
            for axis in axes.get(info.name, {}):
                if axis == 0:
                    shape[0] = requested_batch_sizes[k] if requested_batch_sizes else (shape[0], shape[0] + 1, 2 * shape[0] + 3)[k]
                    batch = shape[0]
                else:
                    shape[axis] += (0, 1, 3)[k % 3]
            shapes[info.name] = tuple(shape)
        variants.append((batch, shapes))
    return variants


def _check_dynamic_axes(graph, dynamic_axes) -> None:
    if not dynamic_axes:
        return
    names = {info.name: info for info in graph.inputs}
    for name, mapping in dynamic_axes.items():
        if name not in names:
            raise InvalidModelError(f"dynamic_axes names input {name!r}, but the model's inputs are {', '.join(names) or 'none'}")
        rank = len(names[name].shape)
        for axis, symbol in mapping.items():
            if not isinstance(axis, int) or not 0 <= axis < rank:
                raise InvalidModelError(f"dynamic_axes[{name!r}] has axis {axis!r}; input {name!r} has {rank} axes (0 to {rank - 1})")
            if not isinstance(symbol, str) or not symbol:
                raise InvalidModelError(f"dynamic_axes[{name!r}][{axis}] must be a symbol name like 'height', not {symbol!r}")
        if graph.eager_module is None and any(axis != 0 for axis in mapping):
            raise InvalidModelError(
                f"dynamic axes other than dim 0 ({name!r}: {sorted(a for a in mapping if a)}) need the eager module, to check "
                "and verify the model at other sizes: export the nn.Module with example_inputs rather than a compiled graph"
            )


def _variant_graph(graph, axes):
    """The eager module compiled again at the second verification shape (dynamic axes grown)."""
    flow = import_oneflow()
    shapes = _variants(graph, axes, None)[1][1]
    arrays = draw_inputs(graph.inputs, None, seed=7, bounds=index_bounds(graph), shapes=shapes)
    try:
        compiled = graph_reader.wrap_module(graph.eager_module, [flow.tensor(a) for a in arrays])
    except Exception as error:
        described = {name: sorted(mapping.items()) for name, mapping in axes.items() if mapping}
        raise InvalidModelError(
            f"the dynamic axes {described} cannot stay dynamic: OneFlow cannot build the module for inputs "
            f"{ {name: list(shape) for name, shape in shapes.items()} } ({type(error).__name__}: {str(error).strip().splitlines()[-1]}); "
            "the module itself fixes those sizes. Export with those axes static."
        ) from error
    return graph_reader.read_graph(compiled), shapes


def _check_shapes_follow(graph, variant, shapes, axes, registry, opset, dynamic_batch, dynamic_axes, model) -> None:
    """Convert the module compiled at other sizes of the dynamic axes; an op whose ONNX nodes change
    with those sizes has baked them in, and the model would be wrong (or fail) at other shapes."""
    described = ", ".join(f"{name}: {{{', '.join(f'{a}: {s!r}' for a, s in sorted(m.items()))}}}" for name, m in axes.items() if m)
    example = {info.name: list(info.shape) for info in graph.inputs}
    other_shapes = {name: list(shape) for name, shape in shapes.items()}
    try:
        other, _, _ = convert(variant, registry, opset, dynamic_batch, dynamic_axes=dynamic_axes, variant=graph)
    except LoweringError as error:
        raise LoweringError(
            f"the dynamic axes ({described}) cannot stay dynamic: with inputs {other_shapes} instead of {example}, {error}"
        ) from error
    difference = _first_size_dependent_node(model, other)
    if difference is None:
        return
    node_name, what = difference
    op = next((op for op in graph.ops if node_name == op.name or node_name.startswith(op.name + "/")), None)
    where = f"{op.type} op {op.name!r}" if op is not None else f"ONNX node {node_name!r}"
    raise LoweringError(
        f"{where} cannot keep the dynamic axes ({described}) dynamic: its lowering depends on the example's sizes "
        f"({what} differ between inputs {example} and {other_shapes}), so the model "
        "would be wrong at other sizes. Export with those axes static, or give the op a lowering that computes "
        "sizes in the graph (Shape/Gather) in a plugin."
    )


def _first_size_dependent_node(model, other):
    """The first node (name, what) whose type, attributes or constant inputs differ between two conversions."""
    from onnx import numpy_helper

    constants = {t.name: t for t in model.graph.initializer}
    other_constants = {t.name: t for t in other.graph.initializer}
    other_nodes = {node.name: node for node in other.graph.node}
    for node in model.graph.node:
        twin = other_nodes.get(node.name)
        if twin is None or twin.op_type != node.op_type or list(twin.input) != list(node.input):
            return node.name, "the nodes it emits"
        if sorted(a.SerializeToString() for a in node.attribute) != sorted(a.SerializeToString() for a in twin.attribute):
            return node.name, f"the attributes of its {node.op_type} node"
        for name in node.input:
            if name in constants:
                a, b = numpy_helper.to_array(constants[name]), numpy_helper.to_array(other_constants[name]) if name in other_constants else None
                if b is None or a.shape != b.shape or not np.array_equal(a, b):
                    return node.name, f"the constant {name!r} of its {node.op_type} node"
    return None


def _check_dynamic_batch(graph) -> None:
    batch_dims = {info.name: info.shape[0] if info.shape else None for info in graph.inputs}
    if not graph.inputs or None in batch_dims.values() or len(set(batch_dims.values())) > 1:
        raise InvalidModelError(
            f"dynamic_batch needs every input to carry the batch on dim 0, with the same size; the example inputs "
            f"have dim 0 of {batch_dims or 'no inputs'}. Export with static shapes, or give the inputs a common batch dimension"
        )


def _verify(graph, registry, verifier, variants, rtol, atol, input_range, model_path: str, result: ExportResult, samples=None):
    """Compare the model at ``model_path`` with OneFlow at each input shape; ``None`` when it cannot run."""
    report = VerificationReport(verifier=verifier.name, rtol=rtol, atol=atol)
    libraries = [entry.path for entry in registry.runtime_libraries.values()]
    bounds = index_bounds(graph)
    for index, (batch, shapes) in enumerate(variants):
        arrays = draw_inputs(graph.inputs, None, seed=index, bounds=bounds, shapes=shapes)
        if input_range is not None:
            low, high = input_range
            arrays = [a * (high - low) + low if np.issubdtype(a.dtype, np.floating) else a for a in arrays]
        feeds = {info.name: array for info, array in zip(graph.inputs, arrays)}
        try:
            actual = verifier.function(model_path, feeds, libraries)
        except Exception as error:
            unknown = sorted(set(result.custom_domains) - set(registry.runtime_libraries))
            if unknown:
                reason = (
                    f"verification could not run: the model uses the custom ONNX domain {', '.join(map(repr, unknown))} "
                    f"(lowered by plugin {', '.join(sorted({result.lowered_by[t] for t in result.op_types}))}) and no plugin "
                    f"provides a {verifier.name} library for it through flow2onnx_register_runtime_libraries "
                    f"({verifier.name} said: {type(error).__name__}: {str(error).splitlines()[0]})"
                )
                result.verification_skipped = reason
                _warn(result, reason)
                return None
            raise Flow2OnnxError(
                f"verifier {verifier.describe()} could not run the exported model: {type(error).__name__}: {error}"
            ) from error
        expected = run_oneflow(graph, arrays)
        if samples is not None and index == 0:
            samples[:] = [(feeds, expected)]
        if len(actual) != len(expected):
            raise Flow2OnnxError(f"the exported model has {len(actual)} outputs but OneFlow's graph has {len(expected)}")
        for info, want, got in zip(graph.outputs, expected, actual):
            report.comparisons.append(compare(info.name, want, got, rtol, atol, batch_size=batch))
    return report
