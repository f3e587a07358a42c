"""``flow2onnx.export``: the export options checked once, before any work, and the pipeline run
here or in a worker process of its own."""

from __future__ import annotations

import os
from typing import Any, Sequence

from .isolation import export_isolated
from .options import DEFAULT_VERIFIER, ExportOptions
from .pipeline import ExportResult, run_export

__all__ = ["export"]


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
        return export_isolated(model, example_inputs, dict(settings, path=path))
    return run_export(model, example_inputs, options)
