"""Every node of an exported model checked against its ONNX operator's type constraints at the model's opset.

ONNX operators accept different element types at different opsets (``Min``/``Max`` take integers
only from opset 12, ``Sum`` never does, ``Pow`` takes integers from 12), and a lowering that emits
a node outside its operator's constraints gives a model that runtimes refuse to load.
:func:`ill_typed_nodes` reads each node's input and output types from ONNX shape inference and
compares them with ``onnx.defs.get_schema(op_type, opset).type_constraints``; the lowering tests
call it on every model they export, so a lowering that emits an ill-typed node fails there, with
the node, the type it got and the types its operator takes at that opset.
"""

from __future__ import annotations

import onnx
from onnx import TensorProto, defs, shape_inference

_VARIADIC = defs.OpSchema.FormalParameterOption.Variadic


def type_string(type_proto: onnx.TypeProto) -> str | None:
    """``tensor(int64)`` for an int64 tensor type, as ONNX's schemas write types; ``None`` when unknown."""
    if type_proto.WhichOneof("value") != "tensor_type" or not type_proto.tensor_type.elem_type:
        return None
    return f"tensor({TensorProto.DataType.Name(type_proto.tensor_type.elem_type).lower()})"


def _known_types(graph: onnx.GraphProto, outer: dict[str, str]) -> dict[str, str]:
    known = dict(outer)
    for info in list(graph.input) + list(graph.output) + list(graph.value_info):
        found = type_string(info.type)
        if found:
            known[info.name] = found
    for tensor in graph.initializer:
        known[tensor.name] = f"tensor({TensorProto.DataType.Name(tensor.data_type).lower()})"
    return known


def _formal(parameters, index: int):
    if index < len(parameters):
        return parameters[index]
    if parameters and parameters[-1].option == _VARIADIC:
        return parameters[-1]
    return None


def _node_problems(node: onnx.NodeProto, opset: int, types: dict[str, str]) -> list[str]:
    try:
        schema = defs.get_schema(node.op_type, opset, node.domain)
    except defs.SchemaError:
        return [f"node {node.name!r}: {node.op_type} does not exist at opset {opset}"]
    allowed = {constraint.type_param_str: set(constraint.allowed_type_strs) for constraint in schema.type_constraints}
    where = f"node {node.name!r} ({node.op_type}, opset {opset}; schema since {schema.since_version})"
    problems = []
    bound: dict[str, tuple[str, str]] = {}  # type parameter -> (first argument bound to it, its type)
    for role, names, parameters in (("input", node.input, schema.inputs), ("output", node.output, schema.outputs)):
        for index, name in enumerate(names):
            if not name:
                continue  # an omitted optional argument
            parameter = _formal(parameters, index)
            if parameter is None:
                problems.append(f"{where}: {role} {index} ({name!r}) is beyond the operator's {len(parameters)} {role}s")
                continue
            actual = types.get(name)
            if actual is None:
                continue
            accepted = allowed.get(parameter.type_str, {parameter.type_str})
            if actual not in accepted:
                problems.append(
                    f"{where}: {role} {parameter.name} ({name!r}) is {actual}; "
                    f"{parameter.type_str} takes {', '.join(sorted(accepted))}"
                )
                continue
            homogeneous = parameter.type_str in allowed and (parameter.option != _VARIADIC or parameter.is_homogeneous)
            if homogeneous:
                first = bound.setdefault(parameter.type_str, (name, actual))
                if first[1] != actual:
                    problems.append(f"{where}: {role} {name!r} is {actual} but {first[0]!r}, of the same type {parameter.type_str}, is {first[1]}")
    return problems


def ill_typed_nodes(model: onnx.ModelProto) -> list[str]:
    """One line per node argument whose type its operator does not accept at the model's opset.

    Types come from ONNX shape inference (not strict, so that every problem is listed rather than
    the first); arguments whose type stays unknown are not judged. Subgraphs (``Scan``, ``Loop``,
    ``If`` bodies) are checked too, at the same opsets.
    """
    inferred = shape_inference.infer_shapes(model)
    opsets = {entry.domain or "": entry.version for entry in inferred.opset_import}
    problems: list[str] = []

    def walk(graph: onnx.GraphProto, outer: dict[str, str]) -> None:
        types = _known_types(graph, outer)
        for node in graph.node:
            domain = node.domain or ""
            if domain in ("", "ai.onnx"):
                problems.extend(_node_problems(node, opsets.get(domain, opsets.get("", 0)), types))
            for attribute in node.attribute:
                for subgraph in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else list(attribute.graphs)):
                    walk(subgraph, types)

    walk(inferred.graph, {})
    return problems
