"""The capture stage: the model's graph under ONNX names, from a compiled ``nn.Graph``
(:mod:`.graphs`) or from the ops an eager run calls (:mod:`.eager`), whichever the export asks for
or OneFlow can build.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from ... import compile_guard
from ..._oneflow import error_text, import_oneflow
from ...errors import InvalidModelError
from ...lowering.graph import FlowGraph
from .eager import capture_eagerly, frozen_warning
from .graphs import rejected_inputs, as_compiled_graph, example_tensors, for_inference, read_graph, wrap_module
from .nested import flatten_inputs

log = logging.getLogger("flow2onnx")


def capture_again(graph: FlowGraph, tensors: Sequence) -> FlowGraph:
    """The eager module of ``graph`` captured again, the way ``graph`` was, on ``tensors`` of other sizes."""
    tree = graph.source.input_tree
    if graph.source.capture == "eager":
        return capture_eagerly(graph.source.eager_module, tensors, name=graph.name, tree=tree).graph
    return read_graph(wrap_module(graph.source.eager_module, tensors, tree))


@dataclass(frozen=True)
class Captured:
    """The capture step's value: the model's graph under ONNX names."""

    graph: FlowGraph
    timings: Mapping[str, float]
    #: The user's example inputs as arrays (copied before compiling), for the first verification
    #: run; ``None`` when the export was given a compiled graph without them.
    examples: tuple[np.ndarray, ...] | None = None
    #: What the export should be told about the capture (a fallback to eager capture, frozen values).
    warnings: tuple[str, ...] = ()
    #: Why the graph was captured the way it was (``graph.source.capture``), in a sentence for the result.
    reason: str = ""


def capture(model, example_inputs: Sequence | None, how: str = "auto", verified: bool = True) -> Captured:
    """The first step of an export: compile ``model`` (when needed) and read its graph.

    ``how`` is ``"graph"`` (compile an ``nn.Graph``), ``"eager"`` (record the ops an eager run calls,
    :mod:`.eager`) or ``"auto"``: an ``nn.Graph`` is read as a graph; an eager module is compiled as
    one, and captured eagerly when OneFlow cannot build that graph. Eager capture freezes the values a
    module reads back to Python, which only verification checks: unless the export is ``verified``,
    ``auto`` refuses to fall back.
    """
    started = time.perf_counter()
    flow = import_oneflow()
    # Tuples, lists and dicts of tensors are an eager module's to take; an nn.Graph takes tensors.
    flat, tree = flatten_inputs(model, example_inputs) if isinstance(model, flow.nn.Module) else (example_inputs, None)
    inputs = example_tensors(flat)
    examples = None if inputs is None else tuple(_as_array(tensor) for tensor in inputs)
    if how == "graph" or (how == "auto" and not isinstance(model, flow.nn.Module)):  # an nn.Graph is no Module
        _refuse_unguarded(model)
        graph, told = read_graph(as_compiled_graph(model, inputs, tree)), []
        reason = "capture='graph' was asked for" if how == "graph" else (
            "the model is an nn.Graph" if isinstance(model, flow.nn.Graph) else "the model is not an eager module"
        )
    else:
        graph, told, reason = _captured_eagerly(model, inputs, tree, fallback=how == "auto", verified=verified)
    seconds = time.perf_counter() - started
    if log.isEnabledFor(logging.INFO):  # counting the op types is a pass over every op
        log.info("read graph %s (%s capture: %s): %d ops of %d types", graph.name, graph.source.capture, reason, len(graph.ops), len(graph.op_types()))
    if examples is not None and not (
        len(examples) == len(graph.inputs)
        and all(a is not None and tuple(a.shape) == tuple(info.shape) for a, info in zip(examples, graph.inputs))
    ):
        # Global tensors, or a graph compiled earlier on other inputs: verification draws its own.
        examples = None
    return Captured(graph, {"read_graph": seconds}, examples, tuple(told), reason)


def _captured_eagerly(model, inputs, tree, fallback: bool, verified: bool = True) -> tuple[FlowGraph, list[str], str]:
    """Eager capture; with ``fallback``, only once graph capture failed to build the graph.
    Returns the graph, the warnings and why it was captured so."""
    module = _eager_module(model, inputs, "auto" if fallback else "eager")
    told = []
    reason = "capture='eager' was asked for"
    if fallback:
        try:
            return read_graph(as_compiled_graph(model, inputs, tree)), [], "OneFlow built the module as an nn.Graph"
        except InvalidModelError as error:
            why = f"OneFlow could not build {type(module).__name__} as an nn.Graph ({error_text(error.__cause__ or error)})"
            if not verified:
                raise InvalidModelError(
                    f"{why}. Eager capture could record its ops instead, but it freezes the values a module reads back "
                    "to Python, and only verification checks them: export with verification on (the default), or pass "
                    "capture='eager' (CLI: --capture eager) to take the eager capture unverified"
                ) from error
            told.append(f"{why}; flow2onnx captured the ops its eager run calls instead (capture='eager')")
            reason = f"{why}: the ops of its eager run were captured"
    try:
        with rejected_inputs(module, module.forward, inputs):
            captured = capture_eagerly(module, inputs, tree=tree)
    except InvalidModelError as error:
        if fallback:
            raise InvalidModelError(f"{told[0].split('; flow2onnx')[0]}, but eager capture failed too: {error}") from error
        raise
    if captured.frozen:
        told.append(frozen_warning(captured.frozen))
    for message in told:
        log.warning(message)
    return captured.graph, told, reason


def _eager_module(model, inputs, how: str):
    """The eager module to capture for ``capture=how``; a graph or a missing input is refused."""
    flow = import_oneflow()
    if isinstance(model, flow.nn.Graph) or not isinstance(model, flow.nn.Module):
        raise InvalidModelError(
            f"capture={how!r} runs an eager oneflow.nn.Module; got a {type(model).__module__}.{type(model).__name__}: "
            "pass the module with example_inputs, or export the nn.Graph with capture='graph'"
        )
    if inputs is None:
        raise InvalidModelError(
            f"exporting the module {type(model).__name__} needs example_inputs: the tensors it is run on once, "
            "e.g. export(module, [flow.rand(1, 3, 224, 224)])"
        )
    for_inference(model)
    return model


def _refuse_unguarded(model) -> None:
    """Refuse a compiled graph, handed over, that was compiled before flow2onnx was imported and whose
    modules hold plain tensors: if one of them was a stride-0 view then, OneFlow 0.9 wrote past its
    memory (see :mod:`flow2onnx.compile_guard`), and the graph, the module and any file made from them
    compute with garbage that agrees with itself. Compiling leaves such tensors contiguous, so they
    cannot be told apart afterwards, and verification against the module would prove nothing."""
    flow = import_oneflow()
    if not isinstance(model, flow.nn.Graph) or not getattr(model, "_is_compiled", False) or compile_guard.was_guarded(model):
        return
    held = [
        f"{type(owner).__name__}.{name}" for block in model._blocks.values()
        for owner, name, _ in compile_guard.plain_tensors(flow, block.to(flow.nn.Module), stride0_only=False)
    ]
    if held:
        raise InvalidModelError(
            f"the nn.Graph {type(model).__name__} was compiled before flow2onnx was imported, and its modules hold plain "
            f"tensors ({', '.join(held[:4])}{', …' if len(held) > 4 else ''}): if one was a stride-0 view (expand()) then, "
            "OneFlow 0.9's compile wrote past its memory, and the graph and the module now compute with garbage that no "
            "check can tell from the right values. Import flow2onnx before compiling the graph (it then compiles such "
            "views safely), or export the uncompiled graph or the eager module with example_inputs"
        )


def _as_array(tensor):
    try:
        return np.array(tensor.numpy(), copy=True)
    except Exception:  # a global tensor on several ranks, a tensor on another device: verify without it
        return None
