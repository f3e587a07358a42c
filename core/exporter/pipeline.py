"""The export pipeline: the stages in the order the data flows, each a subpackage that takes the
previous stage's value and returns its own.

:mod:`.capture` -> :mod:`.plan` (dynamic axes and verification runs) -> :mod:`.lower` ->
:mod:`.passes` (post-passes) -> :mod:`.write` (staged beside the target) -> :mod:`.verify` ->
publish. A failed check is a value: :func:`run_export` routes it to the post-pass fallback and to
:mod:`.diagnose`, and no stage calls back into an earlier one. The registry and the captured graph
are built once and handed to the stages that need them. The :class:`ExportResult` is built once, at
the end, from their values. The library logs (logger ``flow2onnx``) and never prints: the CLI and
the tutorial API render the report. :func:`flow2onnx.export` (:mod:`.api`) checks the options and
calls :func:`run_export`, here or in a worker process (:mod:`.isolation`).
"""

from __future__ import annotations

import contextlib
import gc
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

from .. import progress
from .capture import capture as capture_model
from .diagnose import NOT_RUN, diagnose
from .lower import lower, select_plugins
from .options import ExportOptions
from .passes import apply_post_passes, settle_post_passes
from .plan import plan_axes, settle_sizes
from .verify import VerificationReport, Verified, Verifier, conclude
from .write import resolve_target, staging_folder

__all__ = ["ExportResult", "run_export"]


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
                verified = _verified(staged, passes, Verifier(graph, registry, plan, options, lowered), stage)
            else:
                verified = Verified.not_asked(staged, passes)
            published = stage.publish(verified.staged)
        return _result(options, captured, graph, plan, lowered, passes, staged, verified, published)
    finally:
        collector.restore()


def _verified(staged, passes, verifier: Verifier, stage) -> Verified:
    """Check the staged file; a failed check goes to the post-pass fallback (the model from before
    a pass that changed the results), then, if it still fails (or ``bisect`` asks), to diagnose."""
    options, started = verifier.options, time.perf_counter()
    check, settled = verifier(staged.path), None
    if check.failed and passes.applied:
        settled = settle_post_passes(verifier.lowered, passes.applied, stage.write, verifier, options.strict_post_passes)
        staged, check = settled.staged, settled.check
    diagnosis = NOT_RUN
    if check.report is not None and (check.failed or options.bisect):
        diagnosis = diagnose(verifier.graph, verifier.registry, options, check.failed_run)
    return conclude(check, staged, settled, passes, verifier, diagnosis, started)


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
        capture=graph.source.capture,
        capture_reason=captured.reason,
    )


def _merged(parts) -> dict[str, float]:
    """The steps' timings in pipeline order; a phase that ran more than once (write, check) is summed."""
    timings: dict[str, float] = {}
    for part in parts:
        for phase, seconds in part.items():
            timings[phase] = timings.get(phase, 0.0) + seconds
    return timings
