"""The one export pipeline that the API, the tutorial-compatible functions, the CLI and the tests call.

:func:`export` checks its options once (:class:`ExportOptions`) and runs the steps, each in its own
module and each taking and returning values: :mod:`.capture`, :mod:`.axes` (the dynamic-axes plan),
:mod:`.lower`, :mod:`.passes` (post-passes), :mod:`.staging` (write, then publish by renaming) and
:mod:`.verify`. The :class:`ExportResult` is built once, at the end, from their values. The library
logs (logger ``flow2onnx``) and never prints: the CLI and the tutorial API render the report.
"""

from __future__ import annotations

import contextlib
import gc
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import progress
from .axes import plan_axes, settle_sizes
from .capture import capture as capture_model
from .lower import lower, select_plugins
from .options import DEFAULT_VERIFIER, ExportOptions
from .passes import apply_post_passes
from .staging import resolve_target, staging_folder
from .verification import VerificationReport
from .verify import Verified, Verifier, verify

__all__ = ["ExportOptions", "ExportResult", "export", "run_export"]


@dataclass(frozen=True)
class ExportResult:
    """What an export produced, and how it was checked; built once, from the values of the pipeline's steps."""

    path: str
    opset: int
    input_names: list[str]
    output_names: list[str]
    #: OneFlow op type -> number of ops of that type in the graph.
    op_types: dict[str, int]
    #: OneFlow op type -> the plugin whose lowering converted it (ops that no pattern claimed).
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
    #: How the model's ops were captured: ``"graph"`` (a compiled nn.Graph) or ``"eager"`` (an eager run's ops).
    capture: str = "graph"
    #: Why that capture was used (the model was an nn.Graph; OneFlow built or could not build the module as one).
    capture_reason: str = ""
    #: Pattern name -> the plugin whose pattern lowered groups of ops as a whole (e.g. ``recurrent``).
    patterns: dict[str, str] = field(default_factory=dict)
    #: Each group of ops a pattern lowered (named after its module scope, ``model.rnn``) -> the pattern.
    pattern_groups: dict[str, str] = field(default_factory=dict)

    @property
    def data_path(self) -> str | None:
        """The weights' file beside the model, when they are stored apart from it."""
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
    strict: bool = False,
    require_verified: bool = False,
    capture: str = "auto",
    isolate: bool = False,
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
        runs at the example's batch B, at 1 (2 when B is 1) and at 2B + 3.
    :param verify: run the written model with ``verifier`` and compare every output with OneFlow's;
        a mismatch raises :class:`VerificationError` and leaves no file.
    :param verifier: the registered verifier that runs the model (default ``onnxruntime``).
    :param verify_batch_sizes: the batch sizes of the random verification runs of a dynamic batch
        (default: 1, or 2 when the example's batch B is 1, and 2B + 3); the example's own run comes first.
    :param rtol: relative tolerance for floating-point outputs (default by dtype: 1e-3 for float32).
    :param atol: absolute tolerance, scaled by the output's largest magnitude (default 1e-4 for float32).
    :param input_range: ``(low, high)``: draw the random float inputs of verification uniformly in
        this range. By default, after a run on the example inputs, one run draws floats uniformly in
        [-1, 1) and one with random signs across five orders of magnitude (1e-3 to 1e2), so that a
        lowering wrong only for negative or for large values shows. Give a range for models whose
        inputs must stay in a domain (probabilities, positive scales).
    :param print_outlier: also log the report with the worst elements of each output (logger
        ``flow2onnx``, level INFO). The library prints nothing: the report is ``result.report``, or
        the :class:`VerificationError`'s ``report`` on a mismatch, and ``report.to_text(outliers=True)``
        renders it as the CLI does.
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
        Verification then runs at the example's shapes and at sizes far from them (about half and
        one and a half times each axis, keeping its power-of-two alignment), and an op whose
        lowering depends on an example's size along such an axis is reported instead of exported
        (eager modules only, for axes other than the batch).
    :param bisect: run the first-divergence finder even when verification passes (it always runs
        when verification fails and the model is an eager module); see ``result.divergence``.
    :param strict: fail, rather than warn, when an output is constant or has no finite value (NaN or
        infinities only) in a verification run: agreeing with such an output proves little.
    :param require_verified: fail, rather than warn, when some output has no finite value in every
        verification run (NaN everywhere), so that nothing of it was compared: the report then says
        "not verified" for it (``convert_to_onnx_and_check`` always asks for this).
    :param capture: how the model's ops are recorded. ``"graph"`` compiles an ``nn.Graph``;
        ``"eager"`` runs the eager module on ``example_inputs`` and records each OneFlow op it calls,
        replayed in OneFlow's lazy mode (the same ops a graph holds), for modules OneFlow cannot
        build as a graph; values the module reads back to Python (``.item()``, ``.numpy()``,
        ``bool(t)``, boolean masks) are frozen to the example's, each place named in
        ``result.warnings``. ``"auto"`` (the default) reads an ``nn.Graph`` as it is, compiles an eager
        module as a graph and falls back to eager capture, with a warning quoting OneFlow's error,
        when OneFlow cannot build it; verification then checks what eager capture froze, so with
        ``verify=False`` auto refuses to fall back. ``result.capture`` and ``result.capture_reason``
        say which capture was used and why.
    :param isolate: export in a worker process of its own (see :mod:`flow2onnx.exporter.isolation`),
        which takes OneFlow's memory with it when it ends: OneFlow never frees a compiled graph, so a
        long-lived process that exports many models should isolate them. ``model`` is then an eager
        module or a function without arguments that builds the model (both sent by pickling), not
        a compiled graph; the result, warnings, log records and errors come back as they would here.
    :returns: an :class:`ExportResult`. A failure raises a :class:`flow2onnx.Flow2OnnxError` (a
        subclass per cause) whose message names the cause and the fix, and leaves ``path`` as it was.
    """
    settings = dict(
        opset=opset,
        dynamic_batch=dynamic_batch,
        dynamic_axes=dynamic_axes,
        verify=verify,
        verifier=verifier,
        verify_batch_sizes=verify_batch_sizes,
        rtol=rtol,
        atol=atol,
        input_range=input_range,
        print_outlier=print_outlier,
        external_data=external_data,
        post_passes=post_passes,
        strict_post_passes=strict_post_passes,
        plugins=plugins,
        disable_plugins=disable_plugins,
        only_plugins=only_plugins,
        bundle_dir=bundle_dir,
        bisect=bisect,
        strict=strict,
        require_verified=require_verified,
        capture=capture,
    )
    options = ExportOptions(path=path, isolate=isolate, **settings)  # checked here, before any work (or worker process)
    if options.isolate:
        from .isolation import export_isolated

        return export_isolated(model, example_inputs, dict(settings, path=path))
    return run_export(model, example_inputs, options)


def run_export(model, example_inputs: Sequence | None, options: ExportOptions) -> ExportResult:
    """Run the steps of an export in order, each on the values of the steps before it.

    capture -> plan the dynamic axes -> lower -> post-passes -> write -> verify -> publish. Only the
    last one writes the target; the steps before it write into a staging folder beside it, which
    goes away with whatever is left in it, on success or failure.
    """
    target = resolve_target(options.path)
    collector = _Collector()
    try:
        with collector.spared():
            progress.report("capture")
            captured = capture_model(model, example_inputs, options.capture, verified=options.verify)
            graph = captured.graph
            plan = settle_sizes(graph, plan_axes(graph, options, captured.examples))
            registry = select_plugins(options)
            lowered = lower(graph, plan, registry, options)
        graph = lowered.graph  # traced again when a dynamic axis of size 1 made OneFlow build other ops
        with staging_folder(target, lowered.external_data) as stage:
            with collector.spared():
                passed = apply_post_passes(lowered, registry, options)
                staged, passes = stage.write(passed.model, passed.weights, lowered.read_weight), passed.run
            # After post-passes the model holds every weight; the file has it now, so let it go before verifying.
            del passed
            if options.verify:
                verified = verify(staged, passes, Verifier(graph, registry, plan, options, lowered), stage)
            else:
                verified = Verified.not_asked(staged, passes)
            published = stage.publish(verified.staged)
        return _result(options, captured, graph, plan, lowered, passes, staged, verified, published)
    finally:
        collector.restore()


class _Collector:
    """Python's cyclic garbage collector during an export: off for the steps whose work follows the op
    count (capture, lowering, writing), on for verification, and never walking what those steps made.

    Those steps hold tens of thousands of small objects alive at once (ops, tensor names, protobuf
    messages). With the collector on, each collection of the oldest generation walked all of them,
    more often as they accumulated: measured on a 20k-op chain, 15% of the export. Turned off, it
    still counts them, and its first collection after walked them all at once (100 ms at 20k ops).
    So at the end of each step they are moved out of its sight (``gc.freeze()``, which costs nothing),
    and back (``gc.unfreeze()``) when the export ends, by which time most of them are freed; any cycle
    among them is collected later, with the process's other long-lived objects. The freeze is left
    alone when the process froze objects itself (``gc.get_freeze_count()``), since unfreezing would
    undo that.
    """

    def __init__(self):
        self._may_freeze = gc.get_freeze_count() == 0
        self._frozen = False

    @contextlib.contextmanager
    def spared(self):
        was_enabled = gc.isenabled()
        gc.disable()
        try:
            yield
        finally:
            if self._may_freeze:
                gc.freeze()
                self._frozen = True
            if was_enabled:
                gc.enable()

    def restore(self) -> None:
        if self._frozen:
            gc.unfreeze()
            self._frozen = False


def _result(options, captured, graph, plan, lowered, passes, staged, verified, published) -> ExportResult:
    return ExportResult(
        path=published.path,
        opset=options.opset,
        input_names=[info.name for info in graph.inputs],
        output_names=[info.name for info in graph.outputs],
        op_types=graph.op_types(),
        lowered_by=lowered.lowered_by,
        dynamic_batch=options.dynamic_batch,
        dynamic_axes=plan.symbolic_axes,
        external_data=published.external_data,
        post_passes=list(verified.post_passes),
        timings=_merged([captured.timings, lowered.timings, passes.timings, staged.timings, verified.timings]),
        report=verified.report,
        warnings=[*captured.warnings, *passes.warnings, *verified.warnings],
        overrides=lowered.overrides,
        custom_domains=lowered.custom_domains,
        verification_skipped=verified.skipped,
        bundle_dir=verified.bundle_dir,
        divergence=verified.divergence,
        bisected=verified.bisected,
        patterns=lowered.patterns,
        pattern_groups=lowered.pattern_groups,
        capture=graph.capture,
        capture_reason=captured.reason,
    )


def _merged(parts) -> dict[str, float]:
    """The steps' timings in pipeline order; a phase that ran more than once (write, check) is summed."""
    timings: dict[str, float] = {}
    for part in parts:
        for phase, seconds in part.items():
            timings[phase] = timings.get(phase, 0.0) + seconds
    return timings
