"""What a OneFlow op type takes: its argument names and its attributes with their types.

OneFlow keeps the definitions of its user ops (``UserOpDef``: arguments, attribute types and
defaults) in a C++ registry that OneFlow 0.9 does not expose to Python. What it does expose is the
compiled job: when OneFlow compiles an ``nn.Graph`` it completes every op against that registry,
so each op's ``user_conf`` lists every argument bound to a tensor and every attribute, with the
registered default where the model set none. A schema here is therefore read from the graph: one
:class:`OpSchema` per op type, from all the ops of that type in the graph. An argument that some op
of the type leaves unbound is marked optional; one that no op of the graph binds is unknown to it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Mapping

import numpy as np

# OneFlow AttrValue field -> the type a lowering sees (see flow2onnx.exporter.capture.graphs.attribute_value).
ATTR_TYPES = {
    "at_int32": "int",
    "at_int64": "int",
    "at_bool": "bool",
    "at_float": "float",
    "at_double": "float",
    "at_string": "str",
    "at_shape": "shape",
    "at_data_type": "dtype",
    "at_list_int32": "list[int]",
    "at_list_int64": "list[int]",
    "at_list_float": "list[float]",
    "at_list_data_type": "list[dtype]",
    "at_list_shape": "list[shape]",
    "at_list_string": "list[str]",
    "at_stride": "stride",
    "at_list_stride": "list[stride]",
}


@dataclass(frozen=True)
class ArgSpec:
    """One input or output argument of an op type: its name, and whether an op may leave it unbound."""

    name: str
    optional: bool = False

    def __str__(self) -> str:
        return self.name + ("?" if self.optional else "")


@dataclass(frozen=True)
class AttrSpec:
    """One attribute of an op type: its name and type (``int``, ``float``, ``str``, ``list[int]``, …)."""

    name: str
    type: str


@dataclass(frozen=True)
class OpSchema:
    """The arguments and attributes of one OneFlow op type, as the compiled graph shows them.

    ``str(schema)`` is its signature, ``softshrink(in) -> out; alpha: float``; an optional
    argument ends in ``?``. Arguments and attributes are sorted by name.
    """

    op_type: str
    inputs: tuple[ArgSpec, ...]
    outputs: tuple[ArgSpec, ...]
    attrs: tuple[AttrSpec, ...]

    @property
    def input_names(self) -> list[str]:
        """The input argument names, sorted."""
        return [arg.name for arg in self.inputs]

    @property
    def output_names(self) -> list[str]:
        """The output argument names, sorted."""
        return [arg.name for arg in self.outputs]

    @property
    def attr_names(self) -> list[str]:
        """The attribute names, sorted."""
        return [attr.name for attr in self.attrs]

    def attr_type(self, name: str) -> str | None:
        """The type of attribute ``name``, or ``None`` when the op type has no such attribute."""
        return next((attr.type for attr in self.attrs if attr.name == name), None)

    def signature(self, values: Mapping[str, Any] | None = None) -> str:
        """``op_type(inputs) -> outputs; attr: type, …``, with ``= value`` after each attribute in ``values``.

        ``values`` is usually one op's ``attrs``: ``softshrink(in) -> out; alpha: float = 0.5``.
        """
        text = f"{self.op_type}({', '.join(map(str, self.inputs))}) -> {', '.join(map(str, self.outputs))}"
        attrs = []
        for attr in self.attrs:
            shown = f"{attr.name}: {attr.type}"
            if values is not None and attr.name in values:
                shown += f" = {format_value(values[attr.name])}"
            attrs.append(shown)
        return text + (f"; {', '.join(attrs)}" if attrs else "")

    def __str__(self) -> str:
        return self.signature()


def format_value(value: Any) -> str:
    """An attribute value as a signature shows it: ``0.5``, ``'channels_first'``, ``[1, 1]``, ``float32``."""
    if isinstance(value, np.dtype):
        return str(value)
    if isinstance(value, (list, tuple)):
        inner = ", ".join(format_value(item) for item in value)
        return f"({inner}{',' if len(value) == 1 else ''})" if isinstance(value, tuple) else f"[{inner}]"
    if isinstance(value, float):
        # A float32 attribute (epsilon: 1e-05) arrives widened to a double: show it as it was written.
        single = np.float32(value)
        return str(single) if float(single) == value and np.isfinite(single) else repr(value)
    return repr(value)


def schema_from_ops(op_type: str, bindings: Iterable[tuple[Mapping, Mapping, Mapping[str, str]]]) -> OpSchema:
    """The schema of ``op_type`` from its ops: ``(inputs, outputs, attribute types)`` of each.

    An argument missing from (or bound to no tensor in) some of the ops is optional. Arguments and
    attributes are sorted by name: the compiled graph keeps them in maps, which have no order.
    """
    bindings = list(bindings)

    def arguments(index: int) -> tuple[ArgSpec, ...]:
        seen: dict[str, int] = {}
        for binding in bindings:
            for name, tensors in binding[index].items():
                if tensors:
                    seen[name] = seen.get(name, 0) + 1
                else:
                    seen.setdefault(name, 0)
        return tuple(ArgSpec(name, seen[name] < len(bindings)) for name in sorted(seen))

    types: dict[str, str] = {}
    for _, _, attr_types in bindings:
        for name, kind in attr_types.items():
            types.setdefault(name, kind)
    attrs = tuple(AttrSpec(name, types[name]) for name in sorted(types))
    return OpSchema(op_type, arguments(0), arguments(1), attrs)


def python_type(value: Any) -> str:
    """The schema type of a plain Python attribute value (for ops built by hand, without a graph)."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, np.integer)):
        return "int"
    if isinstance(value, (float, np.floating)):
        return "float"
    if isinstance(value, str):
        return "str"
    if isinstance(value, np.dtype):
        return "dtype"
    if isinstance(value, tuple):
        return "shape"
    if isinstance(value, list):
        inner = {python_type(item) for item in value}
        return f"list[{inner.pop()}]" if len(inner) == 1 else "list"
    return type(value).__name__


def binding_key(inputs: Mapping, outputs: Mapping, attrs: tuple) -> tuple:
    """What one op says about its type's schema: its arguments, which of them are bound, and its
    attributes (``attrs``: their names and types, in any hashable form). Ops with equal keys say the same."""
    return tuple(inputs), tuple(map(bool, inputs.values())), tuple(outputs), tuple(map(bool, outputs.values())), attrs


def schemas_of_bindings(bindings: Iterable[tuple[str, Mapping, Mapping, Mapping[str, str]]]) -> dict[str, OpSchema]:
    """One schema per op type from each op's ``(op type, inputs, outputs, attribute types)``.

    Ops of a type that bind the same arguments and have the same attributes say the same thing
    about it, so each such shape is read once: a 20,000-op graph has a handful of them.
    """
    distinct: dict[str, dict[tuple, tuple]] = {}
    for op_type, inputs, outputs, attr_types in bindings:
        key = binding_key(inputs, outputs, tuple(attr_types.items()))
        distinct.setdefault(op_type, {}).setdefault(key, (inputs, outputs, attr_types))
    return {op_type: schema_from_ops(op_type, shapes.values()) for op_type, shapes in distinct.items()}
