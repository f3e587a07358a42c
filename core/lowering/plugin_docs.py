"""The hook reference of docs/plugins.md, generated from the hook specs' docstrings.

``python -m flow2onnx.lowering.plugin_docs docs/plugins.md`` rewrites the part of the file between the
markers below; a test fails when the file is not current.
"""

from __future__ import annotations

import inspect
import sys

from . import hookspecs

BEGIN = "<!-- hook reference: generated from core/lowering/hookspecs.py by `python -m flow2onnx.lowering.plugin_docs docs/plugins.md` -->"
END = "<!-- end of hook reference -->"


def hook_specs() -> list:
    """The hook spec functions, in the order the module defines them."""
    specs = [value for name, value in vars(hookspecs).items() if name.startswith("flow2onnx_") and callable(value)]
    return sorted(specs, key=lambda spec: inspect.getsourcelines(spec)[1])


def hook_reference() -> str:
    parts = []
    for spec in hook_specs():
        signature = f"{spec.__name__}{inspect.signature(spec)}"
        parts.append(f"### `{signature}`\n\n{inspect.cleandoc(spec.__doc__ or '')}\n")
    return "\n".join(parts)


def update(text: str) -> str:
    """``text`` with the generated reference between the markers."""
    if BEGIN not in text or END not in text:
        raise ValueError(f"the markers {BEGIN!r} and {END!r} are missing")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n\n{hook_reference()}\n{END}{tail}"


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m flow2onnx.lowering.plugin_docs docs/plugins.md", file=sys.stderr)
        return 2
    with open(argv[0]) as file:
        text = file.read()
    with open(argv[0], "w") as file:
        file.write(update(text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
