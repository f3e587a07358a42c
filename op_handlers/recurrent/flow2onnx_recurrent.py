"""Recurrent modules: ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` as ONNX LSTM, GRU and RNN nodes, one per layer.

OneFlow 0.9 compiles these modules unrolled: for every time step, ``narrow`` the step out of the
sequence, then ``matmul``, ``bias_add``, ``sigmoid``, ``tanh``, ``add_n``, ``broadcast_mul`` and so
on, all in the module's scope (``model.rnn-narrow-12``). Lowered one by one, such a graph fixes the
sequence length, since the number of ops follows it. The ``recurrent`` pattern claims every op of
such a module's scope and lowers the module to ONNX's own recurrent operators, which take a
sequence of any length, so the batch and the sequence length both stay dynamic.

The module itself (``graph.module(scope)``) says what the ops compute: its kind, layers,
directions, hidden size, ``batch_first`` and bias. The ops say which tensors cross the group's
boundary, and what each is: the input sequence is read by the first layer's input matmuls; the
initial hidden state by the hidden matmuls, and an LSTM's initial cell state by the forget gate's
multiply; the output stacks the last layer's hidden states over time; ``h_n`` (and ``c_n``) stack
each layer's and direction's last state. Which layer and direction a tensor belongs to is read from
the weights of the matmuls it depends on. Where anything does not fit (a subclass with its own
``forward``, ``proj_size``, an unbatched input, a module called twice, a tensor that could be two
things, as the output and ``h_n`` of a one-step example are), the pattern leaves the module alone, with a warning: its ops are lowered one by one, with
the batch dynamic and the sequence length fixed.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from dataclasses import dataclass, field, replace

from flow2onnx.plugin import Lowerings, PatternMatch, hookimpl, import_oneflow, int64s, squeeze

LOWERINGS = Lowerings()


log = logging.getLogger("flow2onnx")

# OneFlow's mode -> the ONNX operator and its gates, as indices of OneFlow's gates. OneFlow (like
# PyTorch) stacks an LSTM's gates as input, forget, cell, output, ONNX as input, output, forget,
# cell; a GRU's as reset, update, new, ONNX as update, reset, hidden.
GATES = {
    "LSTM": ("LSTM", (0, 3, 1, 2)),
    "GRU": ("GRU", (1, 0, 2)),
    "RNN_TANH": ("RNN", (0,)),
    "RNN_RELU": ("RNN", (0,)),
}

# Every op type OneFlow 0.9's unrolled recurrent functions make; a scope with others holds more than the module.
UNROLLED_OP_TYPES = frozenset(
    {"add_n", "bias_add", "broadcast_mul", "broadcast_sub", "concat", "constant", "expand_dims", "matmul", "narrow", "relu",
     "sigmoid", "squeeze", "stack", "tanh", "transpose"}
)
# Ops that only move a tensor's elements: followed from an input to the first op that computes with it.
MOVES = frozenset({"narrow", "squeeze", "transpose", "expand_dims"})

_PARAMETER = re.compile(r"(weight|bias)_(ih|hh)_l(\d+)(_reverse)?")


@dataclass(frozen=True)
class Weight:
    """One parameter of the module, as its name says: ``weight_hh_l1_reverse``."""

    kind: str  # "weight" or "bias"
    matrix: str  # "ih" or "hh"
    layer: int
    direction: int


@dataclass(frozen=True)
class Recurrent:
    """What the pattern found out about one recurrent module, for its lowering."""

    mode: str
    scope: str
    layers: int
    directions: int
    hidden: int
    batch_first: bool
    bias: bool
    #: The input sequence, and the initial states when the module was given them.
    x: str
    h0: str | None = None
    c0: str | None = None
    #: "output", "h_n", "c_n" -> the boundary tensor that is it (those read outside the module).
    outputs: dict = field(default_factory=dict)

    def weight(self, kind: str, matrix: str, layer: int, direction: int) -> str:
        """The graph's name of a parameter of the module: ``model.rnn.weight_ih_l0_reverse``."""
        return f"{self.scope}.{kind}_{matrix}_l{layer}{'_reverse' if direction else ''}"


class Unsure(Exception):
    """Why a module's ops are left to their own lowerings."""


# ---- matching ----


def match_recurrent(graph):
    """Claim the ops of every ``nn.LSTM``, ``nn.GRU`` and ``nn.RNN`` scope that reads as the module alone."""
    # The scopes where a matmul reads the module's first input weight; then their ops (a graph without
    # recurrent modules costs one look at each op's type).
    scopes: dict[str, list] = {
        op.scope: [] for op in graph.ops if op.type == "matmul" and op.scope and f"{op.scope}.weight_ih_l0" in op.inputs.get("b", ())
    }
    if not scopes:
        return
    for op in graph.ops:
        if op.scope in scopes:
            scopes[op.scope].append(op)
    for scope, ops in scopes.items():
        module = graph.module(scope)
        base = _recurrent_class(module)
        if base is None:
            continue
        try:
            found = read_module(graph, scope, ops, module, base)
        except Unsure as reason:
            log.warning(
                "%s at %r is lowered op by op, unrolled over the example's sequence (whose length is then fixed): %s",
                type(module).__name__, scope, reason,
            )
            continue
        yield PatternMatch(ops, scope, found)


def _recurrent_class(module):
    if module is None:
        return None
    nn = import_oneflow().nn
    return next((cls for cls in (nn.LSTM, nn.GRU, nn.RNN) if isinstance(module, cls)), None)


def read_module(graph, scope: str, ops: list, module, base) -> Recurrent:
    """What the group computes, from the module and its ops; :class:`Unsure` when they do not fit."""
    if type(module).forward is not base.forward:
        raise Unsure(f"{type(module).__name__} overrides {base.__name__}.forward, so its ops may compute more than the module")
    if getattr(module, "proj_size", 0):
        raise Unsure("proj_size is set, and ONNX LSTM has no projection")
    others = sorted({op.type for op in ops} - UNROLLED_OP_TYPES)
    if others:
        raise Unsure(f"its scope holds ops ({', '.join(others)}) that OneFlow's recurrent functions do not make")
    lstm = module.mode == "LSTM"
    found = Recurrent(
        mode=module.mode, scope=scope, layers=module.num_layers, directions=2 if module.bidirectional else 1,
        hidden=module.hidden_size, batch_first=bool(module.batch_first), bias=bool(module.bias), x="",
    )
    weights = _weights(graph, scope, ops, found)
    origins = _origins(ops, weights)
    members = {op.name for op in ops}
    inputs, outputs = graph.boundary(ops)

    roles: dict[str, str] = {}
    for tensor in inputs:
        for role in _input_roles(graph, tensor, members, weights, lstm):
            if role in roles:
                raise Unsure(f"two tensors ({roles[role]!r} and {tensor!r}) enter as its {role}: is the module called twice?")
            roles[role] = tensor
    if "x" not in roles:
        raise Unsure("no input reaches the first layer's input weights")
    if ("h0" in roles) != ("c0" in roles) and lstm:
        raise Unsure("one initial state without the other")
    if "h0" not in roles:
        zeros = [op for op in ops if op.type == "constant"]
        if not zeros or any(op.attr("floating_value" if op.attr("is_floating_value") else "integer_value") != 0 for op in zeros):
            raise Unsure("no initial state is passed in, and the state it starts from is not zeros")

    x_shape = graph.tensors[roles["x"]].shape
    if len(x_shape) != 3 or x_shape[2] != module.input_size:
        raise Unsure(f"the input has shape {list(x_shape)}; only batched input [sequence, batch, features] (or batch first) is matched")
    steps, batch = (x_shape[1], x_shape[0]) if found.batch_first else (x_shape[0], x_shape[1])
    steps_computed = Counter(op.inputs["b"][0] for op in ops if op.type == "matmul")
    if set(steps_computed.values()) != {steps}:
        raise Unsure(f"its weights are used for {max(steps_computed.values())} steps of a {steps}-step input: is the module called twice?")
    state_shape = (found.layers * found.directions, batch, found.hidden)
    for role in ("h0", "c0"):
        if role in roles and graph.tensors[roles[role]].shape != state_shape:
            raise Unsure(f"its {role} has shape {list(graph.tensors[roles[role]].shape)}, not {list(state_shape)}")

    named = {}
    for tensor in outputs:
        roles_found = _output_roles(graph, tensor, origins, found, steps, lstm)
        if len(roles_found) != 1 or roles_found[0] in named:
            could_be = " or ".join(roles_found) or "none of output, h_n and c_n"
            raise Unsure(f"cannot tell what its output {tensor!r} is ({could_be})")
        named[roles_found[0]] = tensor
    return replace(found, x=roles["x"], h0=roles.get("h0"), c0=roles.get("c0"), outputs=named)


def _weights(graph, scope: str, ops: list, found: Recurrent) -> dict[str, Weight]:
    """The module's parameters that the group reads, by graph name; every one that ONNX needs must be read."""
    variables = {info.name for info in graph.variables}
    weights = {}
    for op in ops:
        for name in (name for names in op.inputs.values() for name in names if name in variables):
            parsed = _PARAMETER.fullmatch(name[len(scope) + 1 :]) if name.startswith(scope + ".") else None
            if parsed is None:
                raise Unsure(f"it reads {name!r}, which is not one of its own parameters")
            kind, matrix, layer, reverse = parsed.groups()
            weights[name] = Weight(kind, matrix, int(layer), 1 if reverse else 0)
    needed = {
        found.weight(kind, matrix, layer, direction)
        for kind in (("weight", "bias") if found.bias else ("weight",))
        for matrix in ("ih", "hh")
        for layer in range(found.layers)
        for direction in range(found.directions)
    }
    if needed - set(weights):
        raise Unsure(f"its ops do not read {', '.join(sorted(needed - set(weights)))}")
    return weights


def _origins(ops: list, weights: dict[str, Weight]) -> dict[str, frozenset]:
    """Tensor -> the (layer, direction) pairs whose weights it was computed with, since the last
    matmul: a hidden state of layer 1 depends on layer 0 only through layer 1's input matmul. One
    pass over the ops, in execution order."""
    origins: dict[str, frozenset] = {}
    for op in ops:
        if op.type == "matmul":
            weight = weights.get(next(iter(op.inputs.get("b", ())), None))
            if weight is None:
                raise Unsure(f"its matmul {op.name!r} reads none of its weights")
            found = frozenset({(weight.layer, weight.direction)})
        else:
            found = frozenset().union(*(origins.get(name, frozenset()) for names in op.inputs.values() for name in names))
        for names in op.outputs.values():
            for name in names:
                origins[name] = found
    return origins


def _input_roles(graph, tensor: str, members: set, weights: dict[str, Weight], lstm: bool) -> set:
    """What a tensor entering the group is: "x" (reaches layer 0's input weights), "h0" (hidden
    weights), "c0" (an LSTM's forget-gate multiply), after ops that only move elements."""
    roles, frontier, seen = set(), [tensor], {tensor}
    while frontier:
        name = frontier.pop()
        for reader in graph.consumers(name):
            if reader.name not in members:
                continue
            if reader.type in MOVES:
                for produced in (n for names in reader.outputs.values() for n in names if n not in seen):
                    seen.add(produced)
                    frontier.append(produced)
            elif reader.type == "matmul" and name in reader.inputs.get("a", ()):
                weight = weights[reader.inputs["b"][0]]
                if weight.matrix == "ih" and weight.layer == 0:
                    roles.add("x")
                elif weight.matrix == "hh":
                    roles.add("h0")
            elif lstm and reader.type == "broadcast_mul":
                roles.add("c0")
    if not roles or (len(roles) > 1 and roles != {"h0", "c0"}):  # the same tensor may be given as h0 and c0
        raise Unsure(f"cannot tell what its input {tensor!r} is ({', '.join(sorted(roles)) or 'nothing it reaches says'})")
    return roles


def _stacked(op) -> list | None:
    """The tensors a ``stack`` (or an ``expand_dims``, OneFlow's stack of one) lays along a new axis 0."""
    if op is None or op.type not in ("stack", "expand_dims") or op.attr("axis") != 0:
        return None
    return op.input_list("in")


def _output_roles(graph, tensor: str, origins: dict, found: Recurrent, steps: int, lstm: bool) -> list:
    producer = graph.producer(tensor)
    transposed = producer.type == "transpose" and list(producer.attr("perm")) == [1, 0, 2]
    stacked = _stacked(graph.producer(producer.input("input")) if transposed else producer)
    if stacked is None:
        return []
    roles = []
    last_layer = frozenset((found.layers - 1, direction) for direction in range(found.directions))
    if transposed == found.batch_first and len(stacked) == steps and all(origins.get(t) == last_layer for t in stacked):
        roles.append("output")
    states = found.layers * found.directions
    each = [frozenset({divmod(k, found.directions)}) for k in range(states)]
    if not transposed and len(stacked) == states and [origins.get(t) for t in stacked] == each:
        if not lstm:
            roles.append("h_n")
        elif all(_is_lstm_hidden(graph, t) for t in stacked):
            roles.append("h_n")
        elif all(graph.producer(t).type == "add_n" for t in stacked):  # c = f * c + i * g
            roles.append("c_n")
    return roles


def _is_lstm_hidden(graph, tensor: str) -> bool:
    """h = o * tanh(c)."""
    producer = graph.producer(tensor)
    return producer.type == "broadcast_mul" and any(
        getattr(graph.producer(name), "type", None) == "tanh" for names in producer.inputs.values() for name in names
    )


# ---- lowering ----


@LOWERINGS.pattern("recurrent", match_recurrent)
def lower_recurrent(ctx, match):
    """An ``nn.LSTM``, ``nn.GRU`` or ``nn.RNN`` as one ONNX LSTM, GRU or RNN node per layer, any sequence length."""
    module: Recurrent = match.data
    onnx_type, gates = GATES[module.mode]
    lstm = module.mode == "LSTM"
    sequence = module.x
    if module.batch_first:
        (sequence,) = ctx.make_node("Transpose", [module.x], perm=[1, 0, 2])
    states: dict[str, list[str]] = {"h_n": [], "c_n": []}
    for layer in range(module.layers):
        last = layer == module.layers - 1
        inputs = [
            sequence,
            _gate_weights(ctx, module, "ih", layer, gates),
            _gate_weights(ctx, module, "hh", layer, gates),
            _gate_biases(ctx, module, layer, gates) if module.bias else "",
            "",  # sequence_lens: every sequence of the batch has the full length
        ]
        for state in (module.h0, module.c0) if lstm else (module.h0,):
            inputs.append(_layer_state(ctx, module, state, layer) if state else "")
        while inputs[-1] == "":
            inputs.pop()
        outputs = [ctx.unique_name(f"{onnx_type}_{name}") for name in ("Y", "Y_h", "Y_c")[: 3 if lstm else 2]]
        if module.layers == 1:  # the node's last states are h_n and c_n themselves
            outputs[1:] = [module.outputs.get(role, name) for role, name in zip(("h_n", "c_n"), outputs[1:])]
        attributes = {"hidden_size": module.hidden, "direction": "bidirectional" if module.directions == 2 else "forward"}
        if module.mode == "GRU":
            attributes["linear_before_reset"] = 1  # OneFlow applies the reset gate after the hidden matmul
        if module.mode == "RNN_RELU":
            attributes["activations"] = ["Relu"] * module.directions
        y, *last_states = ctx.make_node(onnx_type, inputs, outputs, **attributes)
        for role, name in zip(("h_n", "c_n"), last_states):
            states[role].append(name)
        if not last:
            sequence = _merge_directions(ctx, module, y, batch_first=False)
        elif "output" in module.outputs:
            _merge_directions(ctx, module, y, batch_first=module.batch_first, output=module.outputs["output"])
    if module.layers > 1:
        for role, parts in states.items():
            if role in module.outputs:
                ctx.make_node("Concat", parts, [module.outputs[role]], axis=0)


def _gate_weights(ctx, module: Recurrent, matrix: str, layer: int, gates) -> str:
    """``[directions, gates * hidden, columns]`` in ONNX's gate order, from OneFlow's ``[gates * hidden, columns]`` matrices.

    Computed in the graph from the module's own weights (a Gather of rows), which runtimes fold
    when they load the model; the weights themselves go to the file once, untouched.
    """
    names = [module.weight("weight", matrix, layer, direction) for direction in range(module.directions)]
    rows, columns = ctx.shape(names[0])
    stacked = names[0] if len(names) == 1 else ctx.make_node("Concat", names, axis=0)[0]
    (gathered,) = ctx.make_node("Gather", [stacked, _gate_rows(ctx, module, gates, len(names))], axis=0)
    return ctx.make_node("Reshape", [gathered, int64s(ctx, [module.directions, rows, columns], "shape")])[0]


def _gate_biases(ctx, module: Recurrent, layer: int, gates) -> str:
    """``[directions, 2 * gates * hidden]``: each direction's input bias then hidden bias, in ONNX's gate order."""
    names = [module.weight("bias", matrix, layer, direction) for direction in range(module.directions) for matrix in ("ih", "hh")]
    (stacked,) = ctx.make_node("Concat", names, axis=0)
    (gathered,) = ctx.make_node("Gather", [stacked, _gate_rows(ctx, module, gates, len(names))], axis=0)
    return ctx.make_node("Reshape", [gathered, int64s(ctx, [module.directions, 2 * len(gates) * module.hidden], "shape")])[0]


def _gate_rows(ctx, module: Recurrent, gates, blocks: int) -> str:
    """The rows of ``blocks`` stacked OneFlow gate blocks, each reordered to ONNX's gates."""
    size = len(gates) * module.hidden
    rows = [block * size + gate * module.hidden + i for block in range(blocks) for gate in gates for i in range(module.hidden)]
    return int64s(ctx, rows, "gate_rows")


def _layer_state(ctx, module: Recurrent, state: str, layer: int) -> str:
    """The initial state of one layer: rows ``layer * directions`` on of ``[layers * directions, batch, hidden]``."""
    if module.layers == 1:
        return state
    start = layer * module.directions
    starts, ends, axes = (int64s(ctx, [value], hint) for value, hint in ((start, "starts"), (start + module.directions, "ends"), (0, "axes")))
    return ctx.make_node("Slice", [state, starts, ends, axes])[0]


def _merge_directions(ctx, module: Recurrent, y: str, batch_first: bool, output: str | None = None) -> str:
    """ONNX's ``Y`` ``[sequence, directions, batch, hidden]`` as OneFlow's ``[sequence, batch, directions * hidden]``
    (``[batch, sequence, …]`` when ``batch_first``)."""
    outputs = None if output is None else [output]
    if module.directions == 1:
        if not batch_first:
            return squeeze(ctx, y, [1], outputs)
        return ctx.make_node("Transpose", [squeeze(ctx, y, [1])], outputs, perm=[1, 0, 2])[0]
    (moved,) = ctx.make_node("Transpose", [y], perm=[2, 0, 1, 3] if batch_first else [0, 2, 1, 3])
    return ctx.make_node("Reshape", [moved, int64s(ctx, [0, 0, module.directions * module.hidden], "shape")], outputs)[0]


@hookimpl
def flow2onnx_register_patterns(register):
    LOWERINGS.register_patterns(register)
