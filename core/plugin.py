"""Everything a plugin author needs, in one module: ``from flow2onnx.plugin import ...``.

A family of lowerings is a module with a :class:`Lowerings` table, filled where each lowering is
defined, and a hook that hands the table to flow2onnx::

    import numpy as np
    from flow2onnx.plugin import Lowerings, hookimpl

    LOWERINGS = Lowerings()

    @LOWERINGS.op("softplus", since_opset=9)
    def lower_softplus(ctx, op):
        ctx.make_node("Softplus", [op.input("in")], [op.output("out")])

    @hookimpl
    def flow2onnx_register_lowerings(register):
        LOWERINGS.register_lowerings(register)

What else is here: the hook marker (:data:`hookimpl`), the context a lowering writes through
(:class:`LoweringContext`), the op it reads (:class:`FlowOp`), what a pattern's ``match`` returns
(:class:`PatternMatch`), the node-building helpers that emit each opset's form of an operator
(:func:`unsqueeze`, :func:`reduce`, :func:`cast_if_needed`, ...), the opset bounds, the errors a
lowering raises, :func:`import_oneflow` (OneFlow, with the libraries it needs loaded first and
its start-up noise kept quiet), and, for tests, :func:`check_export` and :func:`random_inputs` (pytest users add
``pytest_plugins = ["flow2onnx.testing"]`` for the ``flow2onnx_check`` fixture). The modules
behind these names may move; these names stay.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable

from ._oneflow import import_oneflow
from .errors import LoweringError, PluginError, UnsupportedOpsError
from .lowering.context import LoweringContext
from .lowering.graph import FlowOp
from .lowering.helpers import (
    INT64_MAX,
    INT64_MIN,
    accepted_dtype,
    cast,
    cast_if_needed,
    clip,
    dims,
    extremum,
    int64s,
    is_dynamic,
    layer_normalization,
    newer_form,
    normalize_axes,
    reduce,
    reshaped_weight,
    resize,
    scalar_like,
    select,
    size_value,
    sizes_attr,
    sizes_tensor,
    squeeze,
    takes_dtype,
    typed_node,
    unsqueeze,
    with_axes,
)
from .lowering.hookspecs import hookimpl
from .lowering.patterns import PatternMatch
from .lowering.registry import DEFAULT_OPSET, DEFAULT_SINCE_OPSET, MIN_OPSET, OP_TYPE, PATTERN_NAME, max_opset

__all__ = [
    "DEFAULT_OPSET",
    "DEFAULT_SINCE_OPSET",
    "INT64_MAX",
    "INT64_MIN",
    "MIN_OPSET",
    "FlowOp",
    "LoweringContext",
    "LoweringError",
    "Lowerings",
    "PatternMatch",
    "PluginError",
    "UnsupportedOpsError",
    "accepted_dtype",
    "cast",
    "cast_if_needed",
    "check_export",
    "clip",
    "dims",
    "extremum",
    "hookimpl",
    "import_oneflow",
    "int64s",
    "is_dynamic",
    "layer_normalization",
    "max_opset",
    "newer_form",
    "normalize_axes",
    "random_inputs",
    "reduce",
    "reshaped_weight",
    "resize",
    "scalar_like",
    "select",
    "size_value",
    "sizes_attr",
    "sizes_tensor",
    "squeeze",
    "takes_dtype",
    "typed_node",
    "unsqueeze",
    "with_axes",
]

#: The testing helpers, loaded on first use: they import OneFlow and the exporter, which a plugin
#: that only registers lowerings does not need.
_TESTING = ("check_export", "random_inputs")


def __getattr__(name: str):
    if name in _TESTING:
        from . import testing  # noqa: PLC0415 (OneFlow loads only for tests that ask for it)

        return getattr(testing, name)
    raise AttributeError(f"module 'flow2onnx.plugin' has no attribute {name!r}")


class Lowerings:
    """A family's lowerings and patterns, each registered where it is defined, with its op type
    (or pattern name) and opset range; checked when the decorator is applied, so that a mistake
    names the function and the line it is on, not a later export.

    :meth:`op` and :meth:`pattern` are decorators; :meth:`add` registers a function made elsewhere
    (a ``functools.partial`` over a table). The family's hooks hand the whole table over with
    :meth:`register_lowerings` and :meth:`register_patterns`.
    """

    def __init__(self) -> None:
        self._lowerings: list[tuple[str, Callable, int, int | None, bool]] = []
        self._patterns: list[tuple[str, Callable, Callable, int, int | None, bool]] = []

    def __len__(self) -> int:
        return len(self._lowerings) + len(self._patterns)

    def op(self, *op_types: str, since_opset: int = DEFAULT_SINCE_OPSET, until_opset: int | None = None, override: bool = False, **bound):
        """Decorate ``lowering(ctx, op)`` as the lowering of each of ``op_types`` from
        ``since_opset`` to ``until_opset`` (``None``: every newer opset). Keyword arguments beyond
        those are bound into the function for these op types (one function serving a table of
        ops). The function is returned unchanged, so decorators stack."""
        if not op_types:
            raise PluginError("Lowerings.op() needs at least one OneFlow op type, e.g. @LOWERINGS.op(\"relu\")")

        def decorate(function):
            for op_type in op_types:
                self.add(op_type, function, since_opset=since_opset, until_opset=until_opset, override=override, **bound)
            return function

        return decorate

    def add(self, op_type: str, function: Callable, *, since_opset: int = DEFAULT_SINCE_OPSET, until_opset: int | None = None, override: bool = False, **bound) -> None:
        """Register ``function`` (with ``bound`` keyword arguments) as the lowering of ``op_type``."""
        where = _where(function)
        if not isinstance(op_type, str) or not OP_TYPE.match(op_type):
            raise PluginError(f"{where}: {op_type!r} is not a OneFlow op type name (such as 'conv2d')")
        _check_range(where, f"the lowering of {op_type!r}", since_opset, until_opset)
        _check_callable(where, function, ("ctx", "op"), bound)
        lowering = functools.partial(function, **bound) if bound else function
        for other, _, since, _, _ in self._lowerings:
            if other == op_type and since == since_opset:
                raise PluginError(f"{where}: a second lowering of {op_type!r} from opset {since_opset}; give each a different since_opset")
        self._lowerings.append((op_type, lowering, since_opset, until_opset, override))

    def pattern(self, name: str, match: Callable, *, since_opset: int = DEFAULT_SINCE_OPSET, until_opset: int | None = None, override: bool = False):
        """Decorate ``lowering(ctx, match)`` as the lowering of pattern ``name``, whose groups
        ``match(graph)`` finds (see the ``flow2onnx_register_patterns`` hook)."""

        def decorate(function):
            where = _where(function)
            if not isinstance(name, str) or not PATTERN_NAME.match(name):
                raise PluginError(f"{where}: pattern name {name!r}; use letters, digits, '_', '.' and '-'")
            _check_range(where, f"pattern {name!r}", since_opset, until_opset)
            _check_callable(where, function, ("ctx", "match"))
            _check_callable(_where(match), match, ("graph",))
            self._patterns.append((name, match, function, since_opset, until_opset, override))
            return function

        return decorate

    def register_lowerings(self, register) -> None:
        """Hand every lowering to a ``flow2onnx_register_lowerings`` hook's ``register``."""
        for op_type, lowering, since_opset, until_opset, override in self._lowerings:
            register(op_type, lowering, since_opset=since_opset, until_opset=until_opset, override=override)

    def register_patterns(self, register) -> None:
        """Hand every pattern to a ``flow2onnx_register_patterns`` hook's ``register``."""
        for name, match, lowering, since_opset, until_opset, override in self._patterns:
            register(name, match, lowering, since_opset=since_opset, until_opset=until_opset, override=override)


def _where(function) -> str:
    inner = function.func if isinstance(function, functools.partial) else function
    code = getattr(inner, "__code__", None)
    name = getattr(inner, "__qualname__", repr(inner))
    return f"{name} ({code.co_filename}:{code.co_firstlineno})" if code else name


def _check_range(where: str, what: str, since_opset, until_opset) -> None:
    newest = max_opset()
    if not isinstance(since_opset, int) or isinstance(since_opset, bool) or not 1 <= since_opset <= newest:
        raise PluginError(f"{where}: {what} has since_opset={since_opset!r}; use an int from 1 to {newest}, the newest opset this onnx knows")
    if until_opset is not None and (not isinstance(until_opset, int) or isinstance(until_opset, bool) or until_opset < since_opset):
        raise PluginError(f"{where}: {what} has until_opset={until_opset!r}; use None or an int from since_opset={since_opset} up")


def _check_callable(where: str, function, arguments: tuple[str, ...], bound: dict | None = None) -> None:
    """``function`` can be called with ``arguments`` (positional) and the ``bound`` keywords."""
    if not callable(function):
        raise PluginError(f"{where}: {function!r} is not callable")
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):  # a builtin without a signature: taken on trust
        return
    try:
        signature.bind(*arguments, **(bound or {}))
    except TypeError as error:
        called = ", ".join([*arguments, *(f"{name}=..." for name in bound or {})])
        raise PluginError(f"{where}: it is called as ({called}), but its signature {signature} does not take that: {error}") from None
