"""The verify stage: run the written model and OneFlow on the same inputs and compare every output
(the rule and the report are :mod:`.comparison`'s, OneFlow's side :mod:`.reference`'s).

:class:`Verifier` checks one file and returns a :class:`Check`, a value whether it passed or not;
the pipeline routes a failed check to the post-pass fallback and to the diagnose stage, and
:func:`conclude` turns the last check into the stage's value, or raises
:class:`VerificationError` with the report: nothing is published.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from ... import progress
from ..._oneflow import error_text
from ...errors import Flow2OnnxError, VerificationError
from ...lowering.graph import FlowGraph
from ...lowering.registry import Registry
from ..lower import Lowered
from ..options import ExportOptions
from ..passes import PassesRun, Settled
from ..capture import capture_again
from ..capture.graphs import ABORTING_ON_EMPTY, empty_aborting_op
from ..plan import POSITION_OPS, RANDOM_OPS, UNSPECIFIED_OPS, AxesPlan
from ..plan.axes import inputs_at
from ..plan.draws import draw_inputs, index_bounds
from ..write.bundle import write_bundle
from ..write.staging import Staged
from .comparison import RANDOM_RUNS, RANDOM_SAMPLE, VerificationReport, compare, has_reference
from .kernels import missing_kernel
from .reference import run_oneflow

log = logging.getLogger("flow2onnx")

#: Seconds of OneFlow runs that each verification run may spend on more draws of a random graph.
RANDOM_SECONDS = 10.0


@dataclass(frozen=True)
class Check:
    """One verification of one model file."""

    report: VerificationReport | None
    #: Why the verifier could not run the model (then ``report`` is ``None``).
    skipped: str | None = None
    #: The first run's inputs and OneFlow's outputs for them, for a repro bundle.
    sample: tuple[dict, list] | None = None
    #: Runs left out, and why (OneFlow cannot run the model with every dynamic axis at 1).
    notes: tuple[str, ...] = ()
    #: The first run with an output out of tolerance (the divergence finder draws its inputs alike).
    failed_run: Any = None

    @property
    def failed(self) -> bool:
        return self.report is not None and not self.report.passed


class _CannotRun(Exception):
    """The verifier cannot run the model for a reason that is not the model's fault (a custom domain)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Verifier:
    """Runs a model file with the chosen verifier and OneFlow at each shape of the plan, and compares."""

    graph: FlowGraph
    registry: Registry
    plan: AxesPlan
    options: ExportOptions
    lowered: Lowered

    def __call__(self, model_path: str) -> Check:
        """Verify the model at ``model_path``: one run per shape of the plan, every output compared.

        OneFlow runs first, for every shape, and only then is the model opened in the verifier (one
        session for all the runs, when the verifier can keep one): the two never hold their
        memory at the same time, and the session goes when the comparison is done.
        """
        options = self.options
        verifier = self.registry.verifiers[options.verifier]
        drawn = drawn_outputs(self.graph)
        runs, notes = self._oneflow_runs(twice=any(kind.startswith("random") for kind in drawn.values()))
        sample = (runs[0][1], runs[0][2]) if runs else None
        report = VerificationReport(verifier=verifier.name, rtol=options.rtol, atol=options.atol)
        failed_run, from_indices = None, outputs_from_float_indices(self.graph)
        try:
            progress.report("verification", len(runs), 2 * len(runs), "runs", f"opening the model in {verifier.name}")
            run_model = self._opened(verifier, model_path)
            for index, (run, feeds, expected, again) in enumerate(runs):
                progress.report("verification", len(runs) + index, 2 * len(runs), "runs", f"{verifier.name} on {_run_text(run)}")
                try:
                    actual = self._guarded(verifier, lambda: run_model(feeds), model_path)
                    # Random draws: more runs of each side, for samples large enough to tell distributions apart.
                    actual_again = [self._guarded(verifier, lambda: run_model(feeds), model_path) for _ in again or ()]
                except Flow2OnnxError as error:
                    if not run.ones:
                        raise
                    # Loud, not wrong: the file refuses that size (ONNX Runtime's LayerNormalization
                    # over one element, say). Said in the warnings; not verified there.
                    notes.append(_left_out(run, f"the exported file does not run there ({error})"))
                    continue
                if len(actual) != len(expected):
                    raise Flow2OnnxError(f"the exported model has {len(actual)} outputs but OneFlow's graph has {len(expected)}")
                for position, (info, want, got) in enumerate(zip(self.graph.outputs, expected, actual)):
                    report.comparisons.append(compare(
                        info.name, want, got, options.rtol, options.atol, batch_size=run.batch, inputs=run.inputs,
                        edges=run.at_edges, from_indices=info.name in from_indices, drawn=drawn.get(info.name),
                        again=None if again is None else ([more[position] for more in again], [more[position] for more in actual_again]),
                    ))
                    if not report.comparisons[-1].passed and failed_run is None:
                        failed_run = run
        except _CannotRun as cannot:
            return Check(None, skipped=cannot.reason, sample=sample, notes=tuple(notes))
        return Check(report, sample=sample, notes=tuple(notes), failed_run=failed_run)

    def _oneflow_runs(self, twice: bool) -> tuple[list, list[str]]:
        """OneFlow's outputs for each run of the plan: ``(run, feeds, outputs, more or None)``, where
        the graph draws random values ``twice`` or more, ``more`` holding the outputs of the runs
        after the first (enough for :data:`~.comparison.RANDOM_SAMPLE` values of the smallest
        output, at most :data:`~.comparison.RANDOM_RUNS` runs); and the notes on runs left out."""
        runs, notes = [], []
        for index, run in enumerate(self.plan.runs):
            progress.report("verification", index, 2 * len(self.plan.runs), "runs", f"OneFlow on {_run_text(run)}")
            arrays = self._inputs(index, run)
            aborts = self._aborts_at(run) if run.ones else None
            if aborts is not None:  # said, not verified: the run would take the process with it
                notes.append(_left_out(run, f"OneFlow 0.9 would abort the process there ({aborts})"))
                continue
            try:
                expected = run_oneflow(self.graph, arrays)
            except Exception as error:
                if not run.ones:
                    raise
                # Where OneFlow cannot run the model, no file has to: said, not verified.
                notes.append(_left_out(run, f"OneFlow cannot run {self.graph.name} there ({error_text(error)})"))
                continue
            if run.draw == "edges":
                run, arrays, expected = self._edge_run(index, run, arrays, expected)
            feeds = {info.name: array for info, array in zip(self.graph.inputs, arrays)}
            runs.append((run, feeds, expected, self._more_draws(arrays, expected) if twice else None))
        return runs, notes

    def _more_draws(self, arrays: list, expected: list) -> list:
        """OneFlow's outputs of more runs on ``arrays``, for a graph that draws random values: enough
        for :data:`~.comparison.RANDOM_SAMPLE` values of the smallest output, at most
        :data:`~.comparison.RANDOM_RUNS` runs in all and, past the second, as many as fit in
        :data:`RANDOM_SECONDS` (a large model draws fewer; the report says how many)."""
        smallest = max(1, min((int(np.size(value)) for value in expected), default=1))
        wanted = min(RANDOM_RUNS, max(2, -(-RANDOM_SAMPLE // smallest))) - 1
        started = time.perf_counter()
        more = [run_oneflow(self.graph, arrays)]
        each = max(time.perf_counter() - started, 1e-6)
        more += [run_oneflow(self.graph, arrays) for _ in range(min(wanted, int(RANDOM_SECONDS / each)) - 1)]
        return more

    def _aborts_at(self, run) -> str | None:
        """For a graph with ops OneFlow aborts on when empty: what would abort at ``run``'s sizes
        (the graph compiled there, which runs no kernel), or ``None``."""
        if not ABORTING_ON_EMPTY & set(self.graph.op_types()) or self.graph.source.eager_module is None:
            return None
        try:
            return empty_aborting_op(capture_again(self.graph, inputs_at(self.graph, run.shapes)))
        except Exception:  # OneFlow cannot build it there: run_oneflow says so, as before
            return None

    def _edge_run(self, index: int, run, arrays: list, expected: list):
        """The run at edge values: drawn again without NaN, ±inf and the largest floats where those
        leave OneFlow no value to compare (a deep model, whose every output reads every input)."""
        if any(has_reference(value) for value in expected):
            return run, arrays, expected
        run = dataclasses.replace(run, draw="finite-edges")
        arrays = self._inputs(index, run)
        return run, arrays, run_oneflow(self.graph, arrays)

    def _opened(self, verifier, model_path: str):
        """A function from feeds to the model's outputs: a session of the verifier, or one call per run."""
        libraries = [entry.path for entry in self.registry.runtime_libraries.values()]
        if verifier.session is not None:
            return self._guarded(verifier, lambda: verifier.session(model_path, libraries), model_path)
        return lambda feeds: verifier.function(model_path, feeds, libraries)

    def _guarded(self, verifier, call, model_path: str):
        """``call()``; a failure of the verifier is an error, or :class:`_CannotRun` when a custom domain explains it."""
        try:
            return call()
        except Flow2OnnxError:
            raise
        except Exception as error:
            reason = self._cannot_run(verifier, error)
            if reason is None:
                no_kernel = missing_kernel(error, model_path, self.graph, self.lowered.lowered_by)
                if no_kernel is not None:
                    raise no_kernel from error
                raise Flow2OnnxError(f"verifier {verifier.describe()} could not run the exported model: {type(error).__name__}: {error}") from error
            raise _CannotRun(reason) from error

    def _inputs(self, index: int, run) -> list[np.ndarray]:
        """The run's inputs: the user's example, or drawn at the run's shapes (seeded by the run's index)."""
        if run.arrays is not None:
            return list(run.arrays)
        return draw_inputs(
            self.graph.inputs, None, seed=index, bounds=index_bounds(self.graph), shapes=run.shapes, floats=run.draw,
            within=self.options.input_range,
        )

    def _cannot_run(self, verifier, error: Exception) -> str | None:
        """Why verification cannot run when the model imports a custom domain no plugin teaches the
        verifier; ``None`` when that is not the reason, and the failure is an error."""
        unknown = sorted(set(self.lowered.custom_domains) - set(self.registry.runtime_libraries))
        if not unknown:
            return None
        return (
            f"verification could not run: the model uses the custom ONNX domain {', '.join(map(repr, unknown))} "
            f"(lowered by plugin {', '.join(sorted(set(self.lowered.lowered_by.values())))}) and no plugin "
            f"provides a {verifier.name} library for it through flow2onnx_register_runtime_libraries "
            f"({verifier.name} said: {type(error).__name__}: {str(error).splitlines()[0]})"
        )


@dataclass(frozen=True)
class Verified:
    """The verify step's value: the model file that matched OneFlow (or could not be run), and how."""

    staged: Staged
    report: VerificationReport | None
    skipped: str | None
    #: The post-passes whose output is in the file (a pass that changed the results is dropped).
    post_passes: tuple[str, ...]
    warnings: tuple[str, ...]
    bundle_dir: str | None
    #: What the first-divergence finder found (``None``: it did not run, or nothing diverged).
    divergence: Any
    bisected: bool
    timings: Mapping[str, float]

    @classmethod
    def not_asked(cls, staged: Staged, passes: PassesRun) -> "Verified":
        """The value standing for the verify step when the export was asked not to verify."""
        return cls(staged, None, None, passes.names, (), None, None, False, {})


def conclude(check: Check, staged: Staged, settled: Settled | None, passes: PassesRun, verifier: Verifier, diagnosis, started: float) -> Verified:
    """The verify stage's value from the last check of the file (after the post-passes were settled,
    when they had to be) and the diagnosis of a failure; raises :class:`VerificationError` when the
    file differs from OneFlow, or when ``strict``/``require_verified`` refuse what it proved."""
    graph, options = verifier.graph, verifier.options
    kept, warnings, rewrites = passes.names, [], {}
    if settled is not None:
        kept, warnings, rewrites = settled.kept, list(settled.warnings), settled.timings
    # Logged here, once: settling the post-passes runs the verifier more than once.
    for note in check.notes:
        log.warning(note)
    warnings.extend(check.notes)
    if check.skipped:
        log.warning(check.skipped)
        warnings.append(check.skipped)
    timings = {**rewrites, "verify": time.perf_counter() - started}
    bundle_dir = None
    if options.bundle_dir is not None and check.sample is not None:
        # Written whatever the verdict: a failing bundle is the one worth sending.
        bundle_dir = write_bundle(options.bundle_dir, staged.path, *check.sample, graph.outputs)
        log.info("wrote the repro bundle %s", bundle_dir)
    if check.report is not None:
        log.info(
            "verified with %s on %s: %s", options.verifier, "; ".join(_run_text(run) for run in verifier.plan.runs),
            "ok" if check.report.verified else ("NOT VERIFIED" if check.report.passed else "MISMATCH"),
        )
        if options.print_outlier:
            log.info("verification report:\n%s", check.report.to_text(outliers=True))
    if check.failed:
        raise _mismatch(check.report, diagnosis.sentence, diagnosis.divergence)
    warnings += _unverified_outputs(check.report, options.strict or options.require_verified)
    warnings += _weak_outputs(check.report, options.strict)
    return Verified(
        staged=staged, report=check.report, skipped=check.skipped, post_passes=kept, warnings=tuple(warnings),
        bundle_dir=bundle_dir, divergence=diagnosis.divergence, bisected=diagnosis.ran, timings=timings,
    )


def outputs_from_float_indices(graph: FlowGraph) -> set[str]:
    """The graph outputs computed from integers that an op derived from floats (an argsort, a
    top-k's indices, an argmax, a cast), or from positions it read from floats (a grid_sample's
    grid): at edge values, ties and NaN make those integers, and the rounding of a position that
    falls on a half, each runtime's own choice, and everything computed from them too. One pass
    over the ops in order."""
    derived: set[str] = set()
    for op in graph.ops:
        inputs = [name for names in op.inputs.values() for name in names]
        outputs = [name for names in op.outputs.values() for name in names]
        if op.type in POSITION_OPS or any(name in derived for name in inputs):
            derived.update(outputs)
            continue
        if any(name in graph.tensors and np.dtype(graph.tensors[name].dtype).kind == "f" for name in inputs):
            derived.update(name for name in outputs if name in graph.tensors and np.dtype(graph.tensors[name].dtype).kind in "iu")
    sources = graph.output_sources or [info.name for info in graph.outputs]
    return {info.name for info, source in zip(graph.outputs, sources) if source in derived or info.name in derived}


def drawn_outputs(graph: FlowGraph) -> dict[str, str]:
    """Output name -> what its values are drawn from (see :func:`drawn_tensors`)."""
    reached = drawn_tensors(graph)
    sources = graph.output_sources or [info.name for info in graph.outputs]
    return {info.name: reached[source] for info, source in zip(graph.outputs, sources) if source in reached}


def drawn_tensors(graph: FlowGraph) -> dict[str, str]:
    """Tensor name -> what its values are drawn from, for the tensors computed from random draws
    (``"random: normal"``) or from memory ``flow.empty`` left as it was (``"unspecified: empty"``;
    random wins where both reach a tensor). One pass over the ops in order."""
    reached: dict[str, str] = {}
    for op in graph.ops:
        inputs = [name for names in op.inputs.values() for name in names]
        found = [reached[name] for name in inputs if name in reached]
        if op.type in RANDOM_OPS:
            found.append(f"random: {op.type}")
        elif op.type in UNSPECIFIED_OPS:
            found.append(f"unspecified: {op.type}")
        if found:
            kind = min(found, key=lambda text: not text.startswith("random"))
            reached.update((name, kind) for names in op.outputs.values() for name in names)
    return reached


def _run_text(run) -> str:
    shapes = ", ".join(f"{name} {list(shape)}" for name, shape in run.shapes.items())
    return run.label + (f" at {shapes}" if shapes else "")


def _left_out(run, why: str) -> str:
    """The note for a run with every dynamic axis at 1 that was left out, and why."""
    return f"not verified with every dynamic axis at 1 ({_run_text(run)}): {why}"


def _unverified_outputs(report: VerificationReport | None, fail: bool) -> list[str]:
    """A warning naming the outputs that no run could check (NaN everywhere); with ``fail``, an error."""
    if report is None or not report.unverified_outputs:
        return []
    reasons = report.unverified_outputs
    described = "; ".join(
        f"output {name!r} {'is' if why == 'NaN everywhere' or why.startswith('computed') else 'has'} {why}"
        for name, why in reasons.items()
    )
    advice = "verify with inputs where it is finite (input_range, CLI --input-range)"
    if any("memory OneFlow leaves" in why for why in reasons.values()):
        advice = "fill what flow.empty returns before it is read (flow.zeros, fill_) to make the output checkable"
    message = (
        f"NOT VERIFIED: {described} in every verification run, so no value of it was compared and the file may "
        f"compute it wrongly; {advice}"
    )
    if fail:
        raise VerificationError(message + "; nothing was written", report)
    log.warning(message)
    return [message]


def _weak_outputs(report: VerificationReport | None, strict: bool) -> list[str]:
    """Warnings for outputs whose agreement proves little; with ``strict``, an error instead."""
    if report is None:
        return []
    weak = {c.name: c.weakness for c in report.weak_outputs}
    if not weak:
        return []
    described = "; ".join(f"output {name!r} {why}" for name, why in weak.items())
    message = (
        f"verification proves little for some outputs: {described} on the verification inputs, so a wrong lowering "
        "could still match them"
    )
    if strict:
        raise VerificationError(
            message + " (strict is set, so the export stops). Verify with inputs that make them vary "
            "(input_range, CLI --input-range), or export without strict", report,
        )
    log.warning(message)
    return [message]


def _mismatch(report: VerificationReport, sentence: str, divergence) -> VerificationError:
    failed = [c for c in report.comparisons if not c.passed]
    how = "the model has no outputs to compare"
    if failed:
        # A shape that differs from OneFlow's says more than any difference of values.
        reshaped = [c for c in failed if c.oneflow_shape is not None]
        worst = reshaped[0] if reshaped else max(failed, key=lambda c: c.max_abs_diff)
        at_batch = "" if worst.batch_size is None else f" at batch size {worst.batch_size}"
        on = f" on {worst.inputs} inputs" if worst.inputs and worst.inputs != "example" else ""
        if reshaped:
            what = f"has shape {list(worst.shape)} where OneFlow's is {list(worst.oneflow_shape)}"
        elif worst.statistics:
            what = f"compared by its statistics, which differ: {worst.statistics}"
        else:
            what = f"max abs diff {worst.max_abs_diff:.3g}"
        how = f"{len(failed)} of {len(report.comparisons)} comparisons fail; the worst: output {worst.name!r}{at_batch}{on}, {what}"
    return VerificationError(
        f"the exported model's outputs differ from OneFlow's beyond tolerance ({how}); nothing was written. "
        + sentence + "Pass verify=False (CLI: --no-verify) to write it anyway.",
        report, divergence=divergence,
    )
