"""The post-pass step: the passes asked for (``onnxsim``, ``onnxoptimizer``, a plugin's), in order.

A pass that raises or returns an invalid model is reported by name and skipped. One whose output no
longer matches OneFlow is found after verification, by :func:`settle_post_passes`, and the model
from before it is kept. With ``strict_post_passes`` either is an error instead.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping

import onnx

from ...errors import Flow2OnnxError, VerificationError
from ...lowering.graph import TensorInfo
from ...lowering.registry import NamedFunction, Registry
from ..lower.stage import Lowered
from ..options import ExportOptions
from ..serialize import materialize

if TYPE_CHECKING:  # the write stage comes after this one; the pipeline hands its writer over
    from ..write import Staged

log = logging.getLogger("flow2onnx")


@dataclass(frozen=True)
class PassesRun:
    """What the post-passes did: those applied, in order, and why any was skipped."""

    applied: tuple[NamedFunction, ...]
    warnings: tuple[str, ...]
    timings: Mapping[str, float]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(post_pass.name for post_pass in self.applied)


@dataclass(frozen=True)
class PostPassed:
    """The post-pass step's value: the model to write, and what the passes did."""

    model: onnx.ModelProto
    #: Weights still to stream from OneFlow's memory (none once the passes needed them in the model).
    weights: tuple[TensorInfo, ...]
    run: PassesRun


@dataclass(frozen=True)
class Settled:
    """After a mismatch: the model kept (the last whose output matched), its file and its check."""

    staged: Staged
    #: The verifier's :class:`~flow2onnx.exporter.verify.Check` of that file.
    check: Any
    kept: tuple[str, ...]
    warnings: tuple[str, ...]
    timings: Mapping[str, float]


def apply_post_passes(lowered: Lowered, registry: Registry, options: ExportOptions) -> PostPassed:
    """Run the post-passes of ``options`` on the lowered model, each on the output of the one before."""
    passes = [registry.post_passes[name] for name in options.post_passes]
    warnings = []
    if passes and not lowered.fits_protobuf:
        warnings.append(_warn(
            f"post-passes {', '.join(options.post_passes)} skipped: the model is {lowered.size / 2**30:.1f} GiB and post-passes "
            "work on one in-memory protobuf, which cannot exceed 2 GiB"
        ))
        passes = []
    if not passes:
        return PostPassed(lowered.model, lowered.weights, PassesRun((), tuple(warnings), {"post_passes": 0.0}))
    # Post-passes need the weights inside the model; without them, the writer streams the weights
    # from OneFlow's memory to the file.
    model = _with_weights(lowered)
    started = time.perf_counter()
    applied = []
    for post_pass in passes:
        try:
            candidate = _run_pass(post_pass, model)
        except Exception as error:
            message = f"post-pass {post_pass.describe()} failed: {_first_line(error)}"
            if options.strict_post_passes:
                raise Flow2OnnxError(message + " (strict_post_passes is set, so the export stops)") from error
            warnings.append(_warn(message + "; it was skipped and the model from before it kept"))
            continue
        model = candidate
        applied.append(post_pass)
    return PostPassed(model, (), PassesRun(tuple(applied), tuple(warnings), {"post_passes": time.perf_counter() - started}))


def _run_pass(post_pass: NamedFunction, model: onnx.ModelProto) -> onnx.ModelProto:
    """Run one pass on a copy of ``model`` (a pass may change its input in place and then fail) and
    check what it returns: a valid model, with the same inputs and outputs."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    candidate = post_pass.function(copy)
    if not isinstance(candidate, onnx.ModelProto):
        raise TypeError(f"it returned a {type(candidate).__name__}, not an onnx.ModelProto")
    onnx.checker.check_model(candidate, full_check=True)
    for kind in ("input", "output"):
        before, after = _interface(model.graph, kind), _interface(candidate.graph, kind)
        if before != after:
            raise ValueError(f"it changed the model's {kind}s from {before} to {after}; a post-pass must keep them")
    return candidate


def _interface(graph: onnx.GraphProto, kind: str) -> list[tuple[str, str]]:
    initializers = {tensor.name for tensor in graph.initializer}
    return [
        (info.name, onnx.TensorProto.DataType.Name(info.type.tensor_type.elem_type))
        for info in getattr(graph, kind)
        if info.name not in initializers
    ]


def _first_line(error: Exception) -> str:
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def settle_post_passes(lowered: Lowered, applied, write: Callable[[onnx.ModelProto], Staged], verifier: Callable[[str], Any], strict: bool) -> Settled:
    """Re-run the applied passes one at a time, verifying after each, and keep the model from before
    the first one whose output no longer matches OneFlow. The pipeline hands over how a candidate
    is written (``write``, the write stage's) and checked (``verifier``, the verify stage's).

    The model from before the passes is rebuilt from the lowered model and OneFlow's weights, which
    the export holds anyway, rather than kept as a copy through every export.
    """
    model = _with_weights(lowered)
    staged = write(model)
    check = verifier(staged.path)
    writes = [staged]
    kept, warnings = [], []
    if check.failed:
        return Settled(staged, check, (), (), _summed(writes))  # the conversion itself is wrong, not a pass
    for post_pass in applied:
        # On a copy, and checked, as when it first ran (it passed these checks then).
        candidate = _run_pass(post_pass, model)
        candidate_staged = write(candidate)
        writes.append(candidate_staged)
        candidate_check = verifier(candidate_staged.path)
        if candidate_check.failed:
            worst = max(candidate_check.report.comparisons, key=lambda c: c.max_abs_diff)
            message = f"post-pass {post_pass.describe()} changed the results (output {worst.name!r}: max abs diff {worst.max_abs_diff:.3g})"
            if strict:
                raise VerificationError(message + " (strict_post_passes is set, so the export stops)", candidate_check.report)
            warnings.append(_warn(message + "; the model from before it was kept"))
            staged = write(model)
            writes.append(staged)
            break
        model, staged, check = candidate, candidate_staged, candidate_check
        kept.append(post_pass.name)
    return Settled(staged, check, tuple(kept), tuple(warnings), _summed(writes))


def _with_weights(lowered: Lowered) -> onnx.ModelProto:
    """A copy of the lowered model with its weights inside; the lowered model itself stays without them."""
    model = onnx.ModelProto()
    model.CopyFrom(lowered.model)
    return materialize(model, list(lowered.weights), lowered.read_weight)


def _summed(writes) -> dict[str, float]:
    timings: dict[str, float] = {}
    for staged in writes:
        for phase, seconds in staged.timings.items():
            timings[phase] = timings.get(phase, 0.0) + seconds
    return timings


def _warn(message: str) -> str:
    log.warning(message)
    return message
