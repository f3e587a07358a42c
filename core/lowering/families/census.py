"""The census of OneFlow's user op types: every op type the installed OneFlow registers, in one class.

The classes are ``lowered`` (by a family of ``op_families.json``), ``training`` (gradients,
optimizer updates, losses: ops of training graphs only), ``system`` (data loading, devices and
communication, random draws, summaries, debugging: ops with no meaning in an ONNX model),
``not expressible`` (ONNX has no operator or composition that computes it) and ``to do`` (ONNX can
express it; no family lowers it yet). Every class but ``lowered`` carries a reason.

``op_census.json`` holds the groups: each a class, a reason and the op types it covers, named or
given as shell-style patterns (``*_grad``). An op type in ``op_families.json`` is lowered whatever
the groups say; otherwise a group that names it wins over one whose pattern matches it, and of
several matching patterns the first group wins. :func:`census_problems` lists what keeps the
census from being exact: a registered op type in no class, a name no OneFlow op type has, a name in
two groups, a lowered op type a group names, a pattern that covers nothing.

The op types themselves come from OneFlow at run time (:func:`registered_op_types`), so a census
that falls behind the installed OneFlow fails its test instead of going stale.
"""

from __future__ import annotations

import ctypes
import fnmatch
import functools
import json
import pathlib
import re
import subprocess
import sys
from dataclasses import dataclass

from ..._oneflow import import_oneflow

CENSUS = pathlib.Path(__file__).with_name("op_census.json")

LOWERED, TRAINING, SYSTEM, NOT_EXPRESSIBLE, TO_DO = "lowered", "training", "system", "not expressible", "to do"
CLASSES = (LOWERED, TRAINING, SYSTEM, NOT_EXPRESSIBLE, TO_DO)

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# The registry manager of OneFlow 0.9's liboneflow (oneflow::user_op::UserOpRegistryMgr). Its
# functions take std::string in the pre-C++11 ABI ("Ss" in the mangled names), which is the string
# layout read below.
_GET_MANAGER = "_ZN7oneflow7user_op17UserOpRegistryMgr3GetEv"
_OLD_ABI_MARKER = "_ZN7oneflow7user_op17UserOpRegistryMgr19GetOpRegistryResultERKSs"


class CensusError(RuntimeError):
    """The installed OneFlow's op registry could not be read."""


@dataclass(frozen=True)
class Group:
    """Op types of one class that share a reason: names, and patterns such as ``*_grad``."""

    cls: str
    reason: str
    op_types: tuple[str, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(op_type for op_type in self.op_types if _NAME.match(op_type))

    @property
    def patterns(self) -> tuple[str, ...]:
        return tuple(op_type for op_type in self.op_types if not _NAME.match(op_type))


@dataclass(frozen=True)
class Entry:
    """Where the census puts one op type: its class, and its family (lowered) or its group."""

    op_type: str
    cls: str | None
    family: str | None = None
    group: Group | None = None


@functools.lru_cache(maxsize=None)
def groups() -> tuple[Group, ...]:
    """The groups of ``op_census.json``, in its order."""
    data = json.loads(CENSUS.read_text())
    return tuple(Group(group["class"], group["reason"], tuple(group["op_types"])) for group in data["groups"])


def _liboneflow() -> ctypes.CDLL:
    with open("/proc/self/maps") as maps:
        paths = {line.split()[-1] for line in maps if "/liboneflow" in line and line.rstrip().endswith(".so")}
    if len(paths) != 1:
        raise CensusError(f"expected one liboneflow shared library in this process, found {sorted(paths) or 'none'}")
    return ctypes.CDLL(paths.pop())


@functools.lru_cache(maxsize=None)
def registered_op_types() -> frozenset[str]:
    """Every user op type the installed OneFlow registers, read from its op registry at run time by
    a child process (:func:`read_registry`), so that a misread, which could crash, ends there."""
    child = subprocess.run([sys.executable, "-m", __name__], capture_output=True, text=True)
    if child.returncode != 0:
        last = (child.stderr.strip().splitlines() or [f"exit status {child.returncode}"])[-1]
        raise CensusError(f"reading OneFlow's op registry failed in a child process: {last}")
    return frozenset(json.loads(child.stdout.strip().splitlines()[-1]))


def read_registry() -> list[str]:
    """Every user op type the installed OneFlow registers, read from its op registry in this process.

    OneFlow 0.9 has no Python binding that lists its registry: ``UserOpRegistryMgr`` keeps the
    registrations in a hash map (op type -> registration) that only its C++ reads. Its ``Get()`` is
    an exported function of liboneflow, and the map is the manager's first member, so the map is
    read here, read-only, through ctypes, as libstdc++ lays out an ``unordered_map`` with
    pre-C++11-ABI string keys. The walk must find exactly as many entries as the map says it
    holds, each an identifier that OneFlow's ``OpBuilder`` accepts as an op type; anything else
    raises :class:`CensusError` rather than guess.
    """
    import_oneflow()
    import oneflow._oneflow_internal as internal

    library = _liboneflow()
    if not all(hasattr(library, symbol) for symbol in (_GET_MANAGER, _OLD_ABI_MARKER)):
        raise CensusError("this OneFlow's liboneflow does not export the op registry of OneFlow 0.9 (UserOpRegistryMgr::Get)")
    get_manager = getattr(library, _GET_MANAGER)
    get_manager.restype = ctypes.c_void_p
    manager = get_manager()

    def word(address: int) -> int:
        return ctypes.c_size_t.from_address(address).value

    # _Hashtable: buckets, bucket count, before-begin node (its next pointer), element count, ...
    expected = word(manager + 24)
    if not 0 < expected < 100_000:
        raise CensusError(f"OneFlow's op registry says it holds {expected} op types; not a registry this can read")
    names = []
    node = word(manager + 16)
    while node and len(names) <= expected:
        # A node: next pointer, then the key (a std::string: one pointer to characters that follow
        # the string's header of length, capacity and reference count).
        characters = word(node + 8)
        length = word(characters - 24)
        name = ctypes.string_at(characters, min(length, 256)).decode("ascii", "replace")
        if length > 256 or not _NAME.match(name):
            raise CensusError(f"OneFlow's op registry holds an entry that is not an op type name: {name[:40]!r}")
        names.append(name)
        node = word(node)
    if len(names) != expected or len(set(names)) != expected:
        raise CensusError(f"OneFlow's op registry says it holds {expected} op types, and {len(set(names))} were read")
    for name in names:
        try:
            internal.one.OpBuilder(name, "flow2onnx_census").build()
        except Exception as error:  # noqa: BLE001 (any failure means the walk read something else)
            raise CensusError(f"OneFlow's OpBuilder refuses {name!r}, read from its op registry: {error}") from error
    return sorted(names)


def classify(op_types, catalogue) -> dict[str, Entry]:
    """The census entry of each of ``op_types``, given ``catalogue`` (family -> the op types it lowers)."""
    families = {op_type: family for family, lowered in catalogue.items() for op_type in lowered}
    named = {name: group for group in groups() for name in group.names}
    entries = {}
    for op_type in sorted(op_types):
        if op_type in families:
            entries[op_type] = Entry(op_type, LOWERED, family=families[op_type])
            continue
        group = named.get(op_type) or next((g for g in groups() if any(fnmatch.fnmatchcase(op_type, p) for p in g.patterns)), None)
        entries[op_type] = Entry(op_type, group.cls if group else None, group=group)
    return entries


def census_problems(registered, catalogue) -> list[str]:
    """What keeps the census of ``registered`` (the op types OneFlow registers) from being exact."""
    registered = set(registered)
    entries = classify(registered, catalogue)
    lowered = {op_type for op_types in catalogue.values() for op_type in op_types}
    problems = []
    unclassified = sorted(op_type for op_type, entry in entries.items() if entry.cls is None)
    if unclassified:
        problems.append(f"registered by OneFlow and in no class of the census: {', '.join(unclassified)}")
    unknown = sorted(lowered - registered)
    if unknown:
        problems.append(f"lowered, but OneFlow registers no such op type: {', '.join(unknown)}")
    seen: dict[str, Group] = {}
    for group in groups():
        if group.cls not in CLASSES[1:]:
            problems.append(f"group {group.reason!r}: class {group.cls!r} is not one of {', '.join(CLASSES[1:])}")
        for name in group.names:
            if name not in registered:
                problems.append(f"{name} (group {group.reason!r}): OneFlow registers no such op type")
            if name in lowered:
                problems.append(f"{name} (group {group.reason!r}): lowered, so it belongs to no other class")
            if name in seen:
                problems.append(f"{name}: named in two groups ({seen[name].reason!r} and {group.reason!r})")
            seen[name] = group
        for pattern in group.patterns:
            if not any(entry.group is group and fnmatch.fnmatchcase(op_type, pattern) for op_type, entry in entries.items()):
                problems.append(f"pattern {pattern} (group {group.reason!r}) covers no op type")
    return problems


if __name__ == "__main__":
    print(json.dumps(read_registry()))
