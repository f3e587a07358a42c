"""Which op-handler family lowers each OneFlow op type, known even when that family is not installed.

flow2onnx's lowerings ship as one distribution per op family (``flow2onnx-conv``,
``flow2onnx-math``, …), each found through the ``flow2onnx`` entry-point group like any third-party
plugin; the ``flow2onnx`` distribution installs them all. With only some installed, an export that
meets an op of a missing family should still say which distribution to install: the catalogue in
``op_families.json`` (family -> op types) says. It is generated from the families' own
registrations by this package's ``__main__``, and a test fails when it is out of date:

    python -m tools.families    # rewrites op_families.json from the families in op_handlers/
"""

from __future__ import annotations

import functools
import importlib.metadata
import json
import pathlib

CATALOGUE = pathlib.Path(__file__).with_name("op_families.json")


@functools.lru_cache(maxsize=None)
def catalogue() -> dict[str, tuple[str, ...]]:
    """Family distribution name -> the OneFlow op types it lowers."""
    return {family: tuple(op_types) for family, op_types in json.loads(CATALOGUE.read_text()).items()}


def family_names() -> list[str]:
    """Every op-handler family flow2onnx ships, by distribution (and plugin) name."""
    return list(catalogue())


def family_of(op_type: str) -> str | None:
    """The family that lowers ``op_type``, or ``None`` when no family of flow2onnx does."""
    return next((family for family, op_types in catalogue().items() if op_type in op_types), None)


def is_installed(distribution: str) -> bool:
    """Whether a distribution of that name is installed (whether or not its plugin loads)."""
    try:
        importlib.metadata.distribution(distribution)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def family_note(op_type: str, registry) -> str:
    """A note for the unsupported-op error: the family that lowers ``op_type``, and why it did not here."""
    family = family_of(op_type)
    if family is None:
        return "; no flow2onnx op-handler family lowers it"
    if not is_installed(family):
        return f"; lowered by {family}, not installed (pip install {family})"
    if not any(lowering.plugin == family for lowering in registry.lowerings.get(op_type, ())):
        return f"; lowered by {family}, installed but not loaded (disabled, or not among --only-plugins)"
    return f"; lowered by {family}"
