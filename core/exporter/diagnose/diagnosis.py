"""The diagnose stage: after a failed verification (or when asked), the first op whose lowering
diverges from OneFlow, found by :mod:`.bisect` on the eager module, and a sentence for the error."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ..._oneflow import import_oneflow
from ...lowering.graph import FlowGraph
from ...lowering.registry import Registry
from ..options import ExportOptions
from ..plan.draws import draw_inputs, index_bounds
from .bisect import find_first_divergence

log = logging.getLogger("flow2onnx")


@dataclass(frozen=True)
class Diagnosis:
    """What the first-divergence finder said, with a sentence for an error message."""

    divergence: Any
    ran: bool
    sentence: str


def diagnose(graph: FlowGraph, registry: Registry, options: ExportOptions, failed_run=None) -> Diagnosis:
    """Run the first-divergence finder on the eager module the graph was traced from, if there is one,
    with inputs drawn as those of the run that failed (at the example's shapes), the export's own
    plugins (``registry``, not loaded again) and its verifier."""
    if graph.source.frozen:
        # The likeliest cause, and the finder compiles a graph, which such a module may not allow.
        return Diagnosis(None, False, (
            f"The module reads tensor values back to Python, and the export froze them to the example's: "
            f"{'; '.join(graph.source.frozen)}. At other inputs the module takes another path or size there, which one "
            "ONNX graph cannot follow: make that code tensor-only, or export with static inputs and accept the freeze. "
        ))
    if graph.source.eager_module is None:
        return Diagnosis(None, False, (
            "The first-divergence finder needs the eager module the graph was built from: export the "
            "nn.Module (with example_inputs) rather than the compiled graph to have it name the op. "
        ))
    if graph.source.capture == "eager":
        return Diagnosis(None, False, "The first-divergence finder compiles the module as an nn.Graph, so it does not run on an eager capture. ")
    flow = import_oneflow()
    floats = failed_run.draw if failed_run is not None and failed_run.draw != "example" else "unit"
    examples = [flow.tensor(a) for a in draw_inputs(graph.inputs, None, seed=99, bounds=index_bounds(graph))]
    log.info("looking for the first op whose lowering diverges")
    divergence = find_first_divergence(
        graph.source.eager_module, examples, opset=options.opset, dynamic_batch=options.dynamic_batch, registry=registry,
        verifier=options.verifier, rtol=options.rtol, atol=options.atol, floats=floats,
    )
    if divergence is None:
        return Diagnosis(None, True, "No intermediate tensor that OneFlow exposes diverges. ")
    log.info("first divergence: %s op %r, lowered by plugin %r", divergence.op_type, divergence.op_name, divergence.plugin)
    return Diagnosis(divergence, True, (
        f"The first divergence is at {divergence.op_type} op {divergence.op_name!r}, lowered by plugin {divergence.plugin!r}. "
    ))


#: The diagnosis of an export whose verification passed, without ``bisect``.
NOT_RUN = Diagnosis(None, False, "")
