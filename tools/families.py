"""``python -m tools.families``: regenerate op_families.json from the installed families.

The families are those of the source checkout this package was installed from: the distributions
under ``op_handlers/`` that declare a ``flow2onnx`` entry point (``op_handlers/all/``, the
``flow2onnx`` distribution, declares none). Each must be installed, as ``./dev setup`` does.
"""

from __future__ import annotations

import json
import pathlib
import re
import sys

from flow2onnx.lowering.families import CATALOGUE
from flow2onnx.lowering.plugin_manager import load_plugins

CHECKOUT_FAMILIES = pathlib.Path(__file__).resolve().parents[1] / "op_handlers"


def render(registry, families: list[str]) -> str:
    """The catalogue's JSON text for ``families``, from what each registered in ``registry``."""
    lowered = {family: set() for family in sorted(families)}
    for op_type, entries in registry.lowerings.items():
        for lowering in entries:
            if lowering.plugin in lowered:
                lowered[lowering.plugin].add(op_type)
    return json.dumps({family: sorted(op_types) for family, op_types in lowered.items()}, indent=2) + "\n"


def checkout_families(folder: pathlib.Path = CHECKOUT_FAMILIES) -> list[str]:
    """The distribution names of the op-handler families under ``folder`` (a checkout's ``op_handlers/``)."""
    families = []
    for path in folder.glob("*/pyproject.toml"):
        text = path.read_text()
        if "[project.entry-points.flow2onnx]" in text:
            families.append(re.search(r'^name = "([^"]+)"', text, re.M).group(1))
    return sorted(families)


def main() -> int:
    families = checkout_families()
    if not families:
        print(f"no op-handler families under {CHECKOUT_FAMILIES}: run this from a flow2onnx source checkout", file=sys.stderr)
        return 2
    CATALOGUE.write_text(render(load_plugins(only=families).registry, families))
    print(f"wrote {CATALOGUE} ({len(families)} families)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
