"""Example inputs that nest tensors in tuples, lists and dicts (an LSTM called with ``(x, (h0, c0))``,
``forward(self, batch)`` with a dict): flattened into the model's inputs, each named after its path
(``hx.0``, ``batch.mask``), and put back in their places whenever OneFlow runs the module.

OneFlow's ``nn.Graph`` flattens the values a graph returns, but takes tensors only; the export's
graph, its eager capture and every later run of the eager module take the flat tensors and call the
module with :meth:`InputTree.rebuild` of them.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Sequence

from ...errors import InvalidModelError

#: A leaf of the tree: one tensor (or array) of the flat inputs.
LEAF = "leaf"
#: Python values an argument may hold besides tensors (``pad(x, (1, 1))``'s padding, a mode string):
#: constants of the export, put back as they were, never inputs of the model.
_CONSTANTS = (bool, int, float, str, type(None))


@dataclass(frozen=True)
class InputTree:
    """Where each flat input goes in the module's arguments, and its name."""

    #: One spec per argument: :data:`LEAF`, ``("tuple" | "list", specs)``, ``("dict", ((key, spec), ...))``
    #: or ``("const", value)`` for a Python value the call is made with.
    specs: tuple
    #: The flat inputs' names, in order: the argument's name, then each key or index (``hx.0``).
    names: tuple[str, ...]

    def rebuild(self, flat: Sequence) -> list:
        """The module's arguments, with ``flat``'s tensors back where the example had them."""
        leaves = iter(flat)
        return [_rebuilt(spec, leaves) for spec in self.specs]


def flatten_inputs(module, example_inputs) -> tuple[list, InputTree | None]:
    """The example's tensors (or arrays) in order, and their tree; ``None`` for a flat example, whose
    inputs keep their usual names (``input``, ``input_0``, …)."""
    if not isinstance(example_inputs, (list, tuple)) or not any(_nests(value, example_inputs) for value in example_inputs):
        return example_inputs, None
    arguments = _argument_names(module, len(example_inputs))
    flat, names, specs = [], [], []
    for name, value in zip(arguments, example_inputs):
        specs.append(_flattened(value, name, flat, names))
    if len(set(names)) != len(names):
        raise InvalidModelError(f"the example inputs' paths name two inputs alike ({', '.join(names)}): give the dict keys distinct names")
    return flat, InputTree(tuple(specs), tuple(names))


def _flattened(value, path: str, flat: list, names: list):
    if isinstance(value, dict):
        if not value:
            raise InvalidModelError(f"example input {path!r} is an empty dict: nothing to export; pass the tensors the model reads")
        for key in value:
            if not isinstance(key, str) or not key or "." in key:
                raise InvalidModelError(f"example input {path!r} has the key {key!r}: dict inputs need non-empty string keys without '.'")
        return ("dict", tuple((key, _flattened(item, f"{path}.{key}", flat, names)) for key, item in value.items()))
    if isinstance(value, (list, tuple)) and not is_shape(value):
        if not value:
            raise InvalidModelError(f"example input {path!r} is an empty {type(value).__name__}: nothing to export")
        return ("tuple" if isinstance(value, tuple) else "list", tuple(_flattened(item, f"{path}.{i}", flat, names) for i, item in enumerate(value)))
    if isinstance(value, _CONSTANTS) or is_shape(value):
        return ("const", list(value) if isinstance(value, (list, tuple)) else value)
    flat.append(value)
    names.append(path)
    return LEAF


def _rebuilt(spec, leaves):
    if spec == LEAF:
        return next(leaves)
    kind, items = spec
    if kind == "const":
        return tuple(items) if isinstance(items, list) else items
    if kind == "dict":
        return {key: _rebuilt(item, leaves) for key, item in items}
    built = [_rebuilt(item, leaves) for item in items]
    return tuple(built) if kind == "tuple" else built


def _argument_names(module, count: int) -> list[str]:
    """The names of the first ``count`` parameters of ``module.forward`` (``input_N`` past them, or
    where the signature cannot be read, as for ``*args``)."""
    try:
        parameters = [
            p.name for p in inspect.signature(module.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)
        ]
    except (TypeError, ValueError):
        parameters = []
    return [parameters[i] if i < len(parameters) else f"input_{i}" for i in range(count)]


def _nests(value, example_inputs) -> bool:
    """Whether ``value``, one of the example's arguments, needs a tree: a tuple, list or dict (not a
    shape given where a tensor was meant, which the tensor check refuses with advice, unless tensors
    sit beside it), or a Python constant beside tensors."""
    if isinstance(value, dict) or (isinstance(value, (list, tuple)) and not is_shape(value)):
        return True
    beside_tensors = any(not isinstance(v, (list, tuple, dict) + _CONSTANTS) for v in example_inputs)
    return beside_tensors and (isinstance(value, _CONSTANTS) or is_shape(value))


def is_shape(value) -> bool:
    """A tuple or list of ints: a shape given where a tensor was meant (refused by the tensor check)."""
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def rebuild(tree: Any, flat: Sequence) -> list:
    """``tree.rebuild(flat)``, or ``flat`` itself where there is no tree."""
    return list(flat) if tree is None else tree.rebuild(flat)
