"""Why ONNX Runtime cannot load an exported model: a node for whose types its CPU provider has no
kernel. The message names the node, the OneFlow op whose lowering emitted it and the plugin, the
types the provider does have a kernel for (read from ONNX Runtime's own kernel registry), and what
to do; nothing is written.
"""

from __future__ import annotations

import re

import onnx

from ...errors import MissingKernelError
from ...lowering.graph import FlowGraph

# ONNX Runtime's wording when a session finds no kernel for a node (1.16 to 1.23).
_NO_KERNEL = re.compile(r"Could not find an implementation for (?P<op>[\w.]+)\((?P<version>\d+)\) node with name '(?P<node>[^']*)'")


def kernel_types(op_type: str, version: int, domain: str = "", provider: str = "CPUExecutionProvider") -> dict[str, list[str]]:
    """The types ``provider``'s kernels of ``op_type`` (the schema of ``version``) take, by type
    parameter (``{"T": ["tensor(float)"]}``); empty where there is no such kernel at all."""
    from onnxruntime.capi import _pybind_state

    types: dict[str, list[str]] = {}
    for kernel in _pybind_state.get_all_opkernel_def():
        low, high = kernel.version_range
        if kernel.op_name == op_type and kernel.domain == domain and kernel.provider == provider and low <= version <= high:
            for parameter, allowed in kernel.type_constraints.items():
                types.setdefault(parameter, []).extend(t for t in allowed if t not in types.get(parameter, []))
    return types


def missing_kernel(error: Exception, model_path: str, graph: FlowGraph, lowered_by: dict[str, str]) -> MissingKernelError | None:
    """The error to raise for ``error`` when it is ONNX Runtime finding no kernel for a node; else ``None``."""
    found = _NO_KERNEL.search(str(error))
    if found is None:
        return None
    op_type, version, node_name = found["op"], int(found["version"]), found["node"]
    node = _node(model_path, node_name)
    domain = node.domain if node is not None and node.domain != "ai.onnx" else ""
    owner = next((op for op in graph.ops if node_name.startswith(op.name + "/") or node_name == op.name), None)
    dtypes = sorted({str(graph.tensors[name].dtype) for name in _inputs_of(owner) if name in graph.tensors}) if owner is not None else []
    available = kernel_types(op_type, version, domain)
    has = "; ".join(f"{parameter}: {', '.join(t[7:-1] if t.startswith('tensor(') else t for t in allowed)}" for parameter, allowed in available.items())
    where = (
        f", emitted by the lowering of {owner.type} op '{owner.name}' (plugin '{lowered_by.get(owner.type, '?')}', on {', '.join(dtypes) or 'its inputs'})"
        if owner is not None else ""
    )
    fix = (
        "export the model in float32 (model.float() and float32 inputs)"
        if "float64" in dtypes else "export the model with inputs of a type the kernel takes"
    )
    return MissingKernelError(
        f"ONNX Runtime's CPU provider has no kernel of {op_type} (opset {version}) for the types of node '{node_name}'{where}; "
        f"it has {op_type} for {has or 'no types at all'}. Nothing was written. To export: {fix}, or lower {owner.type if owner else op_type} "
        f"with a plugin that avoids {op_type} for these types; verify=False writes the file for a runtime that has the kernel, but ONNX Runtime's CPU provider will not load it.",
        op_type, node_name, owner.type if owner is not None else None,
    )


def _node(model_path: str, name: str) -> onnx.NodeProto | None:
    model = onnx.load(model_path, load_external_data=False)
    return next((node for node in model.graph.node if node.name == name), None)


def _inputs_of(op) -> list[str]:
    return [name for names in op.inputs.values() for name in names]
