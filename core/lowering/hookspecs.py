"""The hooks a flow2onnx plugin may implement: this module is the plugin author's reference.

A plugin is any module or object with functions decorated by :data:`flow2onnx.hookimpl` whose names
are listed here. It reaches flow2onnx through the ``flow2onnx`` entry-point group of an installed
distribution (built-in plugins are registered the same way, from a list of defaults), or per export
through ``flow2onnx.export(..., plugins=[...])``.

Every hook here receives a ``register`` callback; the host stamps each registration with the name of
the plugin whose hook made it, so errors, ``flow2onnx plugins`` and export results can say who
provided what. An implementation may accept a subset of a spec's arguments: argument names are the
API and are never renamed.

Hooks are called through pluggy with keyword arguments, one plugin at a time, in plugin order
(built-ins, installed plugins, per-export plugins). ``@hookimpl(tryfirst=True)`` or
``@hookimpl(trylast=True)`` moves a plugin's call before or after the others, as pluggy orders
them. Wrappers (``wrapper=True``, ``hookwrapper=True``) are refused with an error: each call
covers one plugin, so there is nothing else for them to wrap.
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

    :param register: ``register(op_type, lowering, *, since_opset=11, until_opset=None, override=False)``.
        ``op_type`` is the OneFlow user op type (``"conv2d"``, ``"relu"``, …). ``lowering`` is called
        as ``lowering(ctx, op)`` with a :class:`flow2onnx.LoweringContext` and a
        :class:`flow2onnx.FlowOp`; it adds nodes through ``ctx.make_node`` and must produce every
        output of ``op`` that other ops or the graph's outputs read. ``since_opset`` is the lowest
        ONNX opset the lowering is valid for and ``until_opset`` the highest (``None``: every newer
        opset). For one op type the registration with the highest ``since_opset`` not above the
        target opset wins, so a plugin's lowering for newer opsets stacks on its older one. Stack
        registrations only where the lowering itself differs; where ONNX merely changed an
        operator's form (Squeeze's axes became an input at 13), one lowering serves every opset and
        the helpers of :mod:`flow2onnx.lowering.helpers` emit each opset's form (``ctx.opset``);
        registering the same function twice for one op type is refused. A
        lowering whose opset range overlaps another plugin's lowering of the same op type is an
        error naming both plugins, unless it is registered with ``override=True``: it then replaces
        the other wherever it applies, and the export result and ``flow2onnx plugins`` say so. A
        lowering may emit nodes in its own ONNX domain (``ctx.make_node(..., domain="com.example",
        domain_version=1)``); the model then imports that domain.

    Return value is ignored.
    """


@hookspec
def flow2onnx_register_patterns(register):
    """Register patterns: lowerings of a whole group of OneFlow ops at once.

    Some modules compile to many ops whose number follows the input's sizes (OneFlow 0.9 unrolls
    ``nn.LSTM`` into ops for each time step), or to ops that ONNX has as one operator (a
    decomposed LayerNorm). A pattern finds such groups and lowers each as a whole, so that the
    model keeps those sizes dynamic, or gets the fused operator.

    :param register: ``register(name, match, lowering, *, since_opset=11, until_opset=None, override=False)``.
        ``match`` is called as ``match(graph)`` with the :class:`flow2onnx.lowering.graph.FlowGraph`
        being converted, once per conversion, and returns (or yields) the groups it claims, each a
        :class:`flow2onnx.lowering.patterns.PatternMatch`: the ops of the group, a stable ``name``
        for the nodes it becomes (by default the module scope its ops share, e.g. ``model.rnn``),
        and whatever ``data`` the lowering needs. ``graph.module(scope)`` gives the OneFlow module
        behind a scope, and ``graph.producer``, ``graph.consumers`` and ``graph.boundary`` walk
        the graph; a pattern that is unsure of a group leaves it out, and its ops are lowered one
        by one as usual. For each group the host derives the boundary: ``match.inputs``, the tensors
        its ops read that are produced outside it (graph inputs and outputs of other ops, not the
        weights), and ``match.outputs``, the tensors of the group that other ops or the graph's
        outputs read, both in the graph's order. It then calls ``lowering(ctx, match)`` with a
        :class:`flow2onnx.LoweringContext` and that match: the lowering adds nodes through
        ``ctx.make_node`` (named after ``match.name``, so that the model does not change with the
        number of ops the group has) and must produce every tensor of ``match.outputs``; those
        then take stable names, ``<match.name>/output_<k>``. The claimed ops are neither lowered
        one by one nor reported as unsupported. ``name``, ``since_opset``, ``until_opset`` and
        ``override`` follow the rules of :func:`flow2onnx_register_lowerings`, with the pattern's
        name in place of the op type: a pattern of the same name from another plugin over an
        overlapping opset range is an error unless one says ``override=True``. Patterns apply in
        the order of their names; an op claimed by two groups (of two patterns, or twice by one) is
        an error that names both patterns, and so is a group that cannot be placed among the
        other ops (it reads a tensor computed from one of its own outputs).

    Return value is ignored.
    """


# --------------------------------------------------------------------------------------------------
# After conversion: passes over the ONNX model
# --------------------------------------------------------------------------------------------------


@hookspec
def flow2onnx_register_post_passes(register):
    """Register post-passes: functions that rewrite the converted ONNX model.

    :param register: ``register(name, post_pass)``. ``post_pass`` is called as
        ``post_pass(model)`` with an ``onnx.ModelProto`` and returns the rewritten ``ModelProto``
        (the same object, modified, or a new one). A post-pass runs only when an export names it
        (``post_passes=[name, ...]`` or the CLI's ``--post-pass``). The result is checked with
        ``onnx.checker`` after each pass and verified against OneFlow after the last: a pass that
        raises, produces an invalid model or changes the outputs is reported by name and the
        model from before it is kept (or the export fails, with ``strict_post_passes``). Post-passes
        are skipped, with a warning, for models over protobuf's 2 GiB limit.

    Return value is ignored.
    """


# --------------------------------------------------------------------------------------------------
# Verification: running the exported model
# --------------------------------------------------------------------------------------------------


@hookspec
def flow2onnx_register_verifiers(register):
    """Register runtimes that can run an exported model, to verify it against OneFlow.

    :param register: ``register(name, run, session=None)``. ``run`` is called as
        ``run(model_path, feeds, custom_op_libraries)`` with the path of the written ONNX model, a
        dict mapping input names to numpy arrays, and the paths of the custom-op libraries that
        plugins registered (see :func:`flow2onnx_register_runtime_libraries`); it returns the
        model's outputs as a list of numpy arrays, in the model's output order. The host compares
        them with OneFlow's outputs on the same inputs. A verification makes several runs (input
        draws, sizes): a verifier that can load the model once for all of them also passes
        ``session``, called as ``session(model_path, custom_op_libraries)``, which returns a
        function ``feeds -> outputs``; the host then calls that for each run instead of ``run``,
        and drops it when the verification ends. Keep no session beyond that (no module-level
        cache): it holds the model's weights.

    Return value is ignored.
    """


@hookspec
def flow2onnx_register_runtime_libraries(register):
    """Register shared libraries that implement a custom ONNX domain's ops for ONNX Runtime.

    :param register: ``register(domain, library_path)``. ``library_path`` is an ONNX Runtime
        custom-op library (loaded with ``SessionOptions.register_custom_ops_library``) for the ops
        that this plugin's lowerings emit in ``domain``. Without one, a model using a domain that
        ONNX Runtime does not know is exported with a warning that says verification could not run.

    Return value is ignored.
    """
