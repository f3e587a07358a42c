"""OneFlow's own outputs for verification's inputs: the reference the exported file is compared with.

From the eager module when there is one (the same Python over the same modules; no compiled job is
launched, see :func:`flow2onnx.exporter.capture.graphs.run_build_eagerly`), else from the user
graph's ``build`` run eagerly, else from the compiled graph itself.
"""

from __future__ import annotations

import logging
from typing import Sequence

import numpy as np

from ..._oneflow import error_text, import_oneflow, quiet_native_output
from ...lowering.graph import FlowGraph
from ..capture.graphs import flatten_outputs, flow_inputs, refuse_unrunnable, run_build_eagerly

log = logging.getLogger("flow2onnx")


def run_oneflow(graph: FlowGraph, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """OneFlow's outputs for ``arrays``: from the eager module when there is one, else from the graph."""
    refuse_unrunnable(graph, "Verification")
    flow = import_oneflow()
    with quiet_native_output():
        if graph.source.eager_module is not None:
            with flow.no_grad():
                outputs = graph.source.run_module(flow_inputs(graph, arrays))
            return [t.numpy() for t in flatten_outputs(outputs)]
        if graph.source.flow_graph is not None:
            replayed = _replay_build(flow, graph, arrays)
            if replayed is not None:
                return replayed
        return _run_compiled_graph(flow, graph, arrays)


def _replay_build(flow, graph: FlowGraph, arrays: Sequence[np.ndarray]) -> list[np.ndarray] | None:
    """The user graph's ``build`` run eagerly (see :func:`~flow2onnx.exporter.capture.graphs.run_build_eagerly`), or ``None``
    when it cannot run outside the graph or returns other outputs than the compiled graph has."""
    try:
        outputs = flatten_outputs(run_build_eagerly(graph.source.flow_graph, flow_inputs(graph, arrays)))
    except Exception as error:  # build needs the graph itself: the compiled graph is run instead
        log.debug("running %s.build eagerly failed (%s); running the compiled graph", type(graph.source.flow_graph).__name__, error_text(error))
        return None
    if len(outputs) != len(graph.outputs) or not all(isinstance(t, flow.Tensor) for t in outputs):
        return None
    return [t.numpy() for t in outputs]


def _run_compiled_graph(flow, graph: FlowGraph, arrays: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Run the compiled graph, which only takes the example's static shapes.

    For a batch size other than the example's, the inputs are cut into chunks of the example batch
    (the last one padded by repeating its first sample), run chunk by chunk and the outputs joined:
    per-sample results of an inference graph do not depend on their neighbours in the batch.
    """
    example = graph.inputs[0].shape[0] if graph.inputs and graph.inputs[0].shape else None
    batch = arrays[0].shape[0] if arrays and arrays[0].ndim else None
    if example is None or batch is None or batch == example:
        chunks = [list(arrays)]
    else:
        chunks = []
        for start in range(0, batch, example):
            chunk = []
            for array in arrays:
                part = array[start : start + example]
                if part.shape[0] < example:
                    pad = np.repeat(part[:1], example - part.shape[0], axis=0)
                    part = np.concatenate([part, pad], axis=0)
                chunk.append(part)
            chunks.append(chunk)
    results: list[list[np.ndarray]] = []
    for chunk in chunks:
        outputs = graph.source.flow_graph(*flow_inputs(graph, chunk))
        # Copies: the graph reuses its output buffers on later runs.
        results.append([t.numpy().copy() for t in flatten_outputs(outputs)])
    if len(chunks) == 1 and (batch is None or batch == example):
        return results[0]
    # Joined and cut back to the batch asked for: a single chunk too, when it was padded.
    return [np.concatenate([r[i] for r in results], axis=0)[:batch] for i in range(len(results[0]))]
