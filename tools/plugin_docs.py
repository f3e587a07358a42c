"""The generated references of docs/plugins.md: the hooks, and the lowering API a lowering calls.

``python -m tools.plugin_docs docs/plugins.md`` rewrites the parts of the file between
the markers below from the docstrings of the hook specs and of :class:`LoweringContext`,
:class:`FlowOp` and :class:`OpSchema`; a test fails when the file is not current.
"""

from __future__ import annotations

import functools
import inspect
import re
import sys

from flow2onnx.lowering import hookspecs
from flow2onnx.lowering.context import LoweringContext
from flow2onnx.lowering.graph import FlowGraph, FlowOp, Provenance, TensorInfo
from flow2onnx.lowering.patterns import PatternMatch
from flow2onnx.lowering.schema import ArgSpec, AttrSpec, OpSchema

BEGIN = "<!-- hook reference: generated from core/lowering/hookspecs.py by `python -m tools.plugin_docs docs/plugins.md` -->"
END = "<!-- end of hook reference -->"
API_BEGIN = "<!-- lowering API reference: generated from core/lowering/{context,graph,schema,patterns}.py by `python -m tools.plugin_docs docs/plugins.md` -->"
API_END = "<!-- end of lowering API reference -->"

#: The classes of the lowering API, with the name a lowering usually gives an instance.
API_CLASSES = [
    (LoweringContext, "ctx"), (FlowOp, "op"), (OpSchema, "op.schema"), (ArgSpec, None), (AttrSpec, None), (TensorInfo, None),
    (FlowGraph, "ctx.graph"), (Provenance, "ctx.graph.source"), (PatternMatch, "match"),
]


def hook_specs() -> list:
    """The hook spec functions, in the order the module defines them."""
    specs = [value for name, value in vars(hookspecs).items() if name.startswith("flow2onnx_") and callable(value)]
    return sorted(specs, key=lambda spec: inspect.getsourcelines(spec)[1])


def markdown(docstring: str | None) -> str:
    """A docstring in Markdown: Sphinx roles become code, ``:param x:`` a list item."""
    text = inspect.cleandoc(docstring or "")
    text = re.sub(r":(?:class|meth|func|attr|mod|data|exc):`~?([^`]+)`", lambda m: f"`{m.group(1)}`", text)
    text = re.sub(r"^:param (\w+):", r"- `\1`:", text, flags=re.M)
    return re.sub(r"^:returns?:", "Returns:", text, flags=re.M)


def hook_reference() -> str:
    """The Markdown reference of every hook spec."""
    parts = []
    for spec in hook_specs():
        signature = f"{spec.__name__}{inspect.signature(spec)}"
        parts.append(f"### `{signature}`\n\n{markdown(spec.__doc__)}\n")
    return "\n".join(parts)


def api_members(cls) -> list[tuple[str, object]]:
    """The public methods and properties a class defines itself, in source order."""
    members = []
    for name, value in vars(cls).items():
        if name.startswith("_"):
            continue
        function = _getter(value) or value
        if inspect.isfunction(function):
            members.append((inspect.getsourcelines(function)[1], name, value))
    return [(name, value) for _, name, value in sorted(members)]


def _getter(value):
    """The function behind a property (plain or cached), or ``None`` for anything else."""
    if isinstance(value, property):
        return value.fget
    if isinstance(value, functools.cached_property):
        return value.func
    return None


def _call_signature(function, skip_self: bool = True) -> str:
    """``name(a, b=1, *, c=None, **rest) -> type``, without parameter annotations (they are in the text)."""
    signature = inspect.signature(function)
    parameters = list(signature.parameters.values())[1 if skip_self else 0 :]
    bare = signature.replace(parameters=[p.replace(annotation=inspect.Parameter.empty) for p in parameters], return_annotation=inspect.Signature.empty)
    returns = signature.return_annotation
    return f"{bare}" + ("" if returns is inspect.Signature.empty else f" -> {returns}")


def class_reference(cls, instance: str | None) -> str:
    """The Markdown reference of one class: its docstring, then each public member's."""
    if hasattr(cls, "__dataclass_fields__"):
        heading = f"{cls.__name__}({', '.join(cls.__dataclass_fields__)})"
    else:
        heading = f"{cls.__name__}{_call_signature(cls.__init__)}"
    parts = [f"### `{heading}`\n\n{markdown(cls.__doc__)}\n"]
    for name, value in api_members(cls):
        prefix = f"{instance}." if instance else ""
        getter = _getter(value)
        if getter is not None:
            returns = inspect.signature(getter).return_annotation
            title = f"{prefix}{name}" + ("" if returns is inspect.Signature.empty else f" -> {returns}")
            doc = getter.__doc__
        else:
            title = f"{prefix}{name}{_call_signature(value)}"
            doc = value.__doc__
        parts.append(f"#### `{title}`\n\n{markdown(doc)}\n")
    return "\n".join(parts)


def api_reference() -> str:
    """The Markdown reference of the lowering API: the context, the op, its schema."""
    return "\n".join(class_reference(cls, instance) for cls, instance in API_CLASSES)


def _replace_between(text: str, begin: str, end: str, body: str) -> str:
    if begin not in text or end not in text:
        raise ValueError(f"the markers {begin!r} and {end!r} are missing")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{begin}\n\n{body}\n{end}{tail}"


def update(text: str) -> str:
    """``text`` with the generated references between their markers."""
    text = _replace_between(text, BEGIN, END, hook_reference())
    return _replace_between(text, API_BEGIN, API_END, api_reference())


def main(argv=None) -> int:
    """Rewrite the generated parts of the file named in ``argv``."""
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m tools.plugin_docs docs/plugins.md", file=sys.stderr)
        return 2
    with open(argv[0]) as file:
        text = file.read()
    with open(argv[0], "w") as file:
        file.write(update(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
