"""The hooks a flow2onnx plugin may implement: this module is the plugin author's reference.

A plugin is any module or object with functions decorated by :data:`flow2onnx.hookimpl` whose names
are listed here. It reaches flow2onnx through the ``flow2onnx`` entry-point group of an installed
distribution (built-in plugins are registered the same way, from a list of defaults), or per export
through ``flow2onnx.export(..., plugins=[...])``.

Every hook here receives a ``register`` callback; the host stamps each registration with the name of
the plugin whose hook made it, so errors, ``flow2onnx plugins`` and export results can say who
provided what. An implementation may accept a subset of a spec's arguments: argument names are the
API and are never renamed.
"""

from __future__ import annotations

import pluggy

PROJECT = "flow2onnx"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------------------------------
# Conversion: how OneFlow ops become ONNX nodes
# --------------------------------------------------------------------------------------------------


@hookspec
def flow2onnx_register_lowerings(register):
    """Register lowerings: functions that turn one OneFlow op into ONNX nodes.

    :param register: ``register(op_type, lowering, *, since_opset=11, until_opset=None)``.
        ``op_type`` is the OneFlow user op type (``"conv2d"``, ``"relu"``, …). ``lowering`` is called
        as ``lowering(ctx, op)`` with a :class:`flow2onnx.LoweringContext` and a
        :class:`flow2onnx.FlowOp`; it adds nodes through ``ctx.make_node`` and must produce every
        output of ``op`` that other ops or the graph's outputs read. ``since_opset`` is the lowest
        ONNX opset the lowering is valid for and ``until_opset`` the highest (``None``: every newer
        opset). For one op type the registration with the highest ``since_opset`` not above the
        target opset wins, so a lowering for newer opsets stacks on an older one.

    Return value is ignored.
    """


# --------------------------------------------------------------------------------------------------
# After conversion: passes over the ONNX model
# --------------------------------------------------------------------------------------------------


@hookspec
def flow2onnx_register_post_passes(register):
    """Register post-passes: functions that rewrite the converted ONNX model.

    :param register: ``register(name, post_pass)``. ``post_pass`` is called as
        ``post_pass(model)`` with an ``onnx.ModelProto`` and returns the rewritten ``ModelProto``.
        A post-pass runs only when an export names it (``post_passes=[name, ...]`` or the CLI's
        ``--post-pass``); the model is checked and verified after every pass has run.

    Return value is ignored.
    """


# --------------------------------------------------------------------------------------------------
# Verification: running the exported model
# --------------------------------------------------------------------------------------------------


@hookspec
def flow2onnx_register_verifiers(register):
    """Register runtimes that can run an exported model, to verify it against OneFlow.

    :param register: ``register(name, run)``. ``run`` is called as ``run(model_path, feeds)`` with
        the path of the written ONNX model and a dict mapping input names to numpy arrays; it
        returns the model's outputs as a list of numpy arrays, in the model's output order. The
        host compares them with OneFlow's outputs on the same inputs.

    Return value is ignored.
    """
