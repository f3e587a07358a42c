"""What the documentation site (``mkdocs.yml``) needs beyond MkDocs and mkdocstrings.

``mkdocs.yml`` names this file twice:

- under ``hooks:``, where :func:`on_config` keeps the folder of the ``mkdocs`` command off the
  module search path (that folder also holds the ``flow2onnx`` console script, a file without a
  suffix that griffe would otherwise take for the package) and reads included snippets from the
  project root, wherever ``mkdocs`` was started;
- under the Python handler's ``extensions:``, where :class:`Docstrings` reads the docstrings a
  module writes at import time (``flow2onnx.export``'s, derived from the export options) and the
  ``#:`` comments above attributes (the fields of ``ExportResult``), and turns the Sphinx roles of
  the docstrings (``:class:`ExportResult```) into cross-references: a link where the target is
  documented on the site, code where it is not.

Only the modules that assign a ``__doc__`` are imported; everything else is read from the source.
"""

from __future__ import annotations

import os
import re
import sys

import griffe
from mkdocs.plugins import event_priority

#: ``:role:`target``` and ``:role:`~dotted.target```, for the roles the docstrings use.
ROLE = re.compile(r":(?:class|meth|func|attr|mod|data|exc|obj):`(~?)([^`]+)`")


@event_priority(100)  # before mkdocstrings sets up its handlers from sys.path
def on_config(config, **kwargs):
    """Leave out of ``sys.path`` every folder where ``flow2onnx`` is a file that is not Python, and
    read snippets (``--8<--``) from the folder of ``mkdocs.yml``."""
    sys.path[:] = [path for path in sys.path if not _holds_console_script(path)]
    snippets = config.mdx_configs.get("pymdownx.snippets")
    if snippets is not None:
        root = os.path.dirname(os.path.abspath(config.config_file_path))
        snippets["base_path"] = [os.path.join(root, path) for path in snippets.get("base_path", ["."])]
    return config


def _holds_console_script(folder: str) -> bool:
    """Whether ``folder`` holds a file named ``flow2onnx`` (the console script; the package is a folder)."""
    candidate = os.path.join(folder or os.curdir, "flow2onnx")
    return os.path.isfile(candidate)


class Docstrings(griffe.Extension):
    """Completes and rewrites every docstring of a package once the whole package has loaded."""

    def on_package(self, *, pkg: griffe.Module, **kwargs) -> None:
        for obj in _objects(pkg):
            if obj.is_function and obj.docstring is None and _assigns_doc(obj):
                _inspected(obj, like=pkg.docstring)
            if obj.is_attribute and obj.docstring is None and (comment := _comment_above(obj)):
                obj.docstring = griffe.Docstring(comment, lineno=obj.lineno, parent=obj, **_style(pkg.docstring))
            if obj.docstring is not None:
                obj.docstring.value = ROLE.sub(lambda match: _reference(obj, match), obj.docstring.value)


def _objects(module: griffe.Module):
    """The module and every object defined under it (aliases left out: they point elsewhere)."""
    pending = [module]
    while pending:
        obj = pending.pop()
        yield obj
        pending.extend(member for member in obj.members.values() if not member.is_alias)


def _assigns_doc(function: griffe.Function) -> bool:
    """Whether the function's module sets its docstring at import time (``name.__doc__ = ...``)."""
    source = function.module.source if function.module.filepath else ""
    return re.search(rf"^{re.escape(function.name)}\.__doc__ = ", source, re.M) is not None


def _inspected(function: griffe.Function, like: griffe.Docstring | None) -> None:
    """Take the docstring and signature of ``function`` from its module, imported; the docstring is
    parsed ``like`` the package's own (the docstring style that mkdocs.yml chose)."""
    live = griffe.inspect(function.module.path)[function.name]
    if live.docstring is not None:
        function.docstring = griffe.Docstring(live.docstring.value, parent=function, **_style(like))
    function.parameters = live.parameters
    function.returns = live.returns


def _style(like: griffe.Docstring | None) -> dict:
    """The keyword arguments that make a new docstring parse as ``like`` does."""
    return {"parser": like.parser, "parser_options": like.parser_options} if like is not None else {}


def _comment_above(attribute: griffe.Attribute) -> str:
    """The ``#:`` comment lines right above the attribute's first line, without the markers."""
    lines = attribute.module.lines if attribute.lineno else []
    comment: list[str] = []
    index = (attribute.lineno or 0) - 2
    while index >= 0 and lines[index].strip().startswith("#:"):
        comment.insert(0, lines[index].strip()[2:].strip())
        index -= 1
    return "\n".join(comment)


def _reference(obj: griffe.Object, match: re.Match) -> str:
    """The cross-reference for one role: optional, so that a target not on the site is plain code."""
    short, target = match.groups()
    title = target.rsplit(".", 1)[-1] if short else target
    return f'<autoref identifier="{_resolved(obj, target)}" optional><code>{title}</code></autoref>'


def _resolved(obj: griffe.Object, target: str) -> str:
    """The full path of ``target`` as seen from ``obj``: relative module names and names in scope."""
    if target.startswith("."):
        package = obj if obj.is_module else obj.module
        if not package.is_package:
            package = package.parent or package
        levels = len(target) - len(target.lstrip("."))
        base = package.path.split(".")
        return ".".join(base[: len(base) - levels + 1] + [target.lstrip(".")])
    head, _, rest = target.partition(".")
    scope = obj if obj.is_module or obj.is_class else obj.parent
    while scope is not None:
        if head in scope.members:
            member = scope.members[head]
            path = member.target_path if member.is_alias else member.path
            return f"{path}.{rest}" if rest else path
        scope = scope.parent
    return target
