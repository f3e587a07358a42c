"""What one export was asked to do: the options of :func:`flow2onnx.export`, declared once and
checked once.

:class:`ExportOptions` declares each option (name, type, default, summary, detail, command-line
flag); :func:`flow2onnx.export`'s signature and documentation and the CLI's flags are derived from
it. Every step of the pipeline reads its settings from one frozen :class:`ExportOptions`, so a step
cannot change what a later one sees, and an invalid option fails before any work is done.
"""

from __future__ import annotations

import difflib
import inspect
import math
import os
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, Callable, Mapping

import onnx

from ..errors import Flow2OnnxError, OpsetError
from ..lowering.registry import DEFAULT_OPSET, MIN_OPSET, max_opset

DEFAULT_VERIFIER = "onnxruntime"

#: How a model's ops are captured: by compiling an nn.Graph, by recording an eager run, or the
#: first, falling back to the second when OneFlow cannot build the graph.
CAPTURES = ("graph", "eager", "auto")


def parse_range(text: str) -> tuple[float, float]:
    """``LOW,HIGH`` on a command line, as ``input_range`` takes it."""
    try:
        low, high = (float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"{text!r} is not a range LOW,HIGH like -1,1") from None
    return low, high


def parse_dynamic_axes(text: str) -> tuple[str, dict[int, str]]:
    """``INPUT=AXIS:NAME,...`` on a command line: one input's entry of ``dynamic_axes``."""
    name, sep, rest = text.partition("=")
    try:
        mapping = {int(axis): symbol for axis, _, symbol in (item.partition(":") for item in rest.split(","))}
    except ValueError:
        mapping = {}
    if not sep or not name or not mapping or any(not symbol for symbol in mapping.values()):
        raise ValueError(f"{text!r} is not INPUT=AXIS:NAME,... like input=0:batch,2:height")
    return name, mapping


def parse_names(text: str | None) -> tuple[str, ...] | None:
    """``NAME,...`` on a command line."""
    return tuple(part.strip() for part in text.split(",") if part.strip()) if text else None


@dataclass(frozen=True)
class Flag:
    """An option's form on the command line (``flow2onnx export`` and ``flow2onnx check``).

    The keywords are :meth:`argparse.ArgumentParser.add_argument`'s; ``to_option`` turns the parsed
    value into the option's (``--no-verify`` into ``verify=False``). ``export_only`` flags concern
    the written file, which ``check`` does not keep.
    """

    name: str
    action: str | None = None
    type: Callable[[str], Any] | None = None
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    to_option: Callable[[Any], Any] | None = None
    #: What the command line adds to the option's summary (its syntax, say).
    note: str = ""
    #: The help in place of the summary, for a flag that says the opposite (``--no-verify``).
    help: str | None = None
    export_only: bool = False

    @property
    def dest(self) -> str:
        """The attribute argparse stores the flag's value under."""
        return self.name.lstrip("-").replace("-", "_")

    def describe(self, summary: str) -> str:
        """The flag's help text."""
        text = self.help or summary
        return f"{text}; {self.note}" if self.note else text


def option(default: Any, summary: str, detail: str = "", flag: Flag | None = None):
    """One export option: its default, a one-line ``summary`` (the CLI's help and the first words of
    the API's), the ``detail`` the API documentation adds, and its command-line ``flag``."""
    return field(default=default, metadata={"summary": summary, "detail": detail, "flag": flag})


@dataclass(frozen=True)
class ExportOptions:
    """The options of one export: declared here once, with their defaults and documentation.

    :func:`flow2onnx.export`'s signature and documentation, and the command line's flags, are
    derived from these fields (:func:`api_parameters`, :func:`api_documentation`, :func:`flags`).
    Built by ``export``; construct one directly to run the pipeline without it. Lists become tuples
    and ``dynamic_axes`` a read-only mapping; ``opset=None`` becomes the default opset. Every step
    of the pipeline reads its settings from it, so a step cannot change what a later one sees, and
    an invalid option fails before any work is done.
    """

    path: str = option(
        "model.onnx", "the .onnx file to write; an existing directory gets model.onnx inside it",
        "The file appears only once complete and verified.",
    )
    opset: int | None = option(
        None, f"target ONNX opset, from {MIN_OPSET} to the newest the installed onnx knows (default {DEFAULT_OPSET})",
        flag=Flag("--opset", type=int),
    )
    dynamic_batch: bool = option(
        False, "make dim 0 of every input and output symbolic (batch)",
        "Verification then runs at the example's batch B, at 1 (2 when B is 1) and at 2B + 3.",
        Flag("--dynamic-batch", action="store_true"),
    )
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = option(
        None, "axes of an input to keep symbolic, by input name: {axis: symbol}",
        "E.g. ``{'input': {0: 'batch', 2: 'height', 3: 'width'}}``. Outputs get the symbols that follow. Verification then runs at the example's shapes, at sizes far from them "
        "(about half and one and a half times each axis, keeping its power-of-two alignment, never the example's own "
        "size) and with every dynamic axis at 1; an op whose lowering depends on an example's size along such an axis "
        "is reported instead of exported (eager modules only, for axes other than the batch).",
        Flag(
            "--dynamic-axes", action="append", type=parse_dynamic_axes, metavar="INPUT=AXIS:NAME,...",
            to_option=lambda value: dict(value) if value else None, note="written input=0:batch,2:height; repeat for other inputs",
        ),
    )
    verify: bool = option(
        True, "run the written model with the verifier and compare every output with OneFlow's",
        "A mismatch raises VerificationError and leaves no file.",
        Flag("--no-verify", action="store_true", to_option=lambda value: not value, help="write the model without comparing it with OneFlow", export_only=True),
    )
    verifier: str = option(DEFAULT_VERIFIER, "the registered verifier that runs the model (default onnxruntime)")
    verify_batch_sizes: tuple[int, ...] | None = option(
        None, "the batch sizes of the random verification runs of a dynamic batch",
        "Default: 1, or 2 when the example's batch B is 1, and 2B + 3; the example's own run comes first.",
    )
    rtol: float | None = option(
        None, "relative tolerance of verification (default by output dtype: 1e-3 for float32)", flag=Flag("--rtol", type=float, metavar="R"),
    )
    atol: float | None = option(
        None, "absolute tolerance, scaled by the output's largest magnitude (default 1e-4 for float32)", flag=Flag("--atol", type=float, metavar="A"),
    )
    input_range: tuple[float, float] | None = option(
        None, "draw verification's random float inputs uniformly in [low, high)",
        "Given as ``(low, high)``. By default, after a run on the example inputs, one run draws floats uniformly in [-1, 1) and one with random "
        "signs across five orders of magnitude (1e-3 to 1e2), so that a lowering wrong only for negative or for large "
        "values shows; a last run puts each float dtype's edge values among them. Give a range for models whose inputs "
        "must stay in a domain (probabilities, positive scales).",
        Flag("--input-range", type=parse_range, metavar="LOW,HIGH", note="e.g. --input-range=-1,1 (with '=' when LOW is negative)"),
    )
    print_outlier: bool = option(
        False, "show the worst elements of each output",
        "The library logs the report with them (logger flow2onnx, level INFO) and prints nothing: the report is "
        "result.report, or the VerificationError's report on a mismatch, and report.to_text(outliers=True) renders it "
        "as the CLI does.",
        Flag("--print-outlier", action="store_true"),
    )
    external_data: bool | None = option(
        None, "store the weights in <path>.data (default: only when the model is over 2 GB)",
        "``None`` decides by size, ``True`` and ``False`` choose.",
        flag=Flag("--external-data", action="store_true", to_option=lambda value: True if value else None, export_only=True),
    )
    post_passes: tuple[str, ...] = option(
        (), "registered post-passes to run, in order (onnxsim, onnxoptimizer)",
        "A pass that fails, or whose output no longer matches OneFlow, is reported by name and the model from before "
        "it is kept; with strict_post_passes the export fails instead.",
        Flag("--post-pass", action="append", metavar="NAME", to_option=lambda value: tuple(value or ()), note="repeatable"),
    )
    strict_post_passes: bool = option(
        False, "fail when a post-pass fails or changes the results, instead of skipping it", flag=Flag("--strict-post-passes", action="store_true"),
    )
    plugins: tuple[Any, ...] = option((), "extra plugin objects for this export only")
    disable_plugins: tuple[str, ...] = option(
        (), "plugins not to load, by name (see flow2onnx plugins)",
        flag=Flag("--disable-plugin", action="append", metavar="NAME", to_option=lambda value: tuple(value or ()), note="repeatable; also $FLOW2ONNX_DISABLE_PLUGINS"),
    )
    only_plugins: tuple[str, ...] | None = option(
        None, "load only these plugins, by name, and the essential ones",
        flag=Flag("--only-plugins", metavar="NAME,...", to_option=parse_names, note="also $FLOW2ONNX_PLUGINS"),
    )
    bundle_dir: str | None = option(
        None, "also write a repro bundle in this directory: the model and test_data_set_0/ with the inputs of the first verification run and OneFlow's outputs",
        "ONNX's test-data layout, so that anyone can rerun the comparison with ONNX Runtime alone. Written even when "
        "verification fails; needs verify.",
        Flag("--bundle", metavar="DIR", export_only=True),
    )
    bisect: bool = option(
        False, "run the first-divergence finder even when verification passes",
        "It always runs when verification fails and the model is an eager module; see result.divergence.",
        Flag("--bisect", action="store_true"),
    )
    strict: bool = option(
        False, "fail, rather than warn, when an output is constant or not finite in a verification run",
        "Agreeing with such an output proves little.",
        Flag("--strict", action="store_true"),
    )
    require_verified: bool = option(
        False, "fail, writing nothing, when some output could not be compared in any verification run (NaN everywhere)",
        "Otherwise the report says \"not verified\" for it, with a warning; convert_to_onnx_and_check always asks for this.",
        Flag("--require-verified", action="store_true"),
    )
    capture: str = option(
        "auto", "how the model's ops are recorded: graph, eager or auto",
        "graph compiles an nn.Graph; eager runs the eager module on example_inputs and records each OneFlow op it "
        "calls, replayed in OneFlow's lazy mode (the same ops a graph holds), for modules OneFlow cannot build as a "
        "graph; values the module reads back to Python (.item(), .numpy(), bool(t), boolean masks) are frozen to the "
        "example's, each place named in result.warnings. auto (the default) reads an nn.Graph as it is, compiles an "
        "eager module as a graph and falls back to eager capture, with a warning quoting OneFlow's error, when "
        "OneFlow cannot build it; verification then checks what eager capture froze, so without verification auto "
        "does not fall back. result.capture and result.capture_reason say which capture was used and why.",
        Flag("--capture", choices=CAPTURES),
    )
    isolate: bool = option(
        False, "export in a worker process of its own, which takes OneFlow's memory with it when it ends",
        "OneFlow never frees a compiled graph, so a long-lived process that exports many models should isolate them. "
        "The model is then an eager module or a function without arguments that builds it (both sent by pickling), "
        "not a compiled graph; the result, warnings, log records and errors come back as they would without it.",
        Flag("--isolate", action="store_true"),
    )

    def __post_init__(self) -> None:
        # Frozen: normalised values are set through object.__setattr__, once, here.
        normalised = {
            "path": os.fspath(self.path),
            "opset": _checked_opset(self.opset),
            "dynamic_axes": _frozen_axes(self.dynamic_axes),
            "verify_batch_sizes": _checked_batch_sizes(self.verify_batch_sizes),
            "input_range": _checked_range(self.input_range),
            "rtol": _checked_tolerance("rtol", self.rtol),
            "atol": _checked_tolerance("atol", self.atol),
            "post_passes": _names("post_passes", self.post_passes),
            "plugins": tuple(self.plugins),
            "disable_plugins": _names("disable_plugins", self.disable_plugins),
            "only_plugins": None if self.only_plugins is None else _names("only_plugins", self.only_plugins),
            "bundle_dir": None if self.bundle_dir is None else os.fspath(self.bundle_dir),
        }
        for name, value in normalised.items():
            object.__setattr__(self, name, value)
        if self.capture not in CAPTURES:
            raise Flow2OnnxError(
                f"capture must be one of {', '.join(map(repr, CAPTURES))} (how the model's ops are recorded); got {self.capture!r}"
            )
        if self.bundle_dir is not None and not self.verify:
            raise Flow2OnnxError("a repro bundle holds OneFlow's outputs from verification: bundle_dir needs verify=True")


def _checked_opset(opset) -> int:
    newest = max_opset()
    if opset is None:
        return min(DEFAULT_OPSET, newest)
    if not isinstance(opset, int) or isinstance(opset, bool) or not MIN_OPSET <= opset <= newest:
        raise OpsetError(
            f"opset {opset!r} is not supported: flow2onnx exports opsets {MIN_OPSET} to {newest} "
            f"(the newest the installed onnx {onnx.__version__} knows); the default is {DEFAULT_OPSET}"
        )
    return opset


def _names(option: str, names) -> tuple[str, ...]:
    # A bare string would be read letter by letter ("post-pass 'o', 'n', ... is not registered").
    if isinstance(names, str):
        raise Flow2OnnxError(f"{option} takes a list of names, e.g. {option}=[{names!r}], not the string {names!r}")
    return tuple(names)


def _frozen_axes(dynamic_axes) -> Mapping[str, Mapping[int, str]] | None:
    # Input names, axes and symbols are checked against the graph when the axes are planned.
    if dynamic_axes is None:
        return None
    if not isinstance(dynamic_axes, Mapping) or not all(isinstance(m, Mapping) for m in dynamic_axes.values()):
        raise Flow2OnnxError(
            f"dynamic_axes maps input names to {{axis: symbol}}, e.g. {{'input': {{0: 'batch', 2: 'height'}}}}; got {dynamic_axes!r}"
        )
    return MappingProxyType({name: MappingProxyType(dict(mapping)) for name, mapping in dynamic_axes.items()})


def _checked_batch_sizes(sizes) -> tuple[int, ...] | None:
    if sizes is None:
        return None
    sizes = tuple(sizes)
    if not sizes or not all(isinstance(size, int) and not isinstance(size, bool) and size > 0 for size in sizes):
        raise Flow2OnnxError(f"verify_batch_sizes must be positive integers, e.g. [1, 2, 5]; got {list(sizes)!r}")
    return sizes


def _checked_range(input_range) -> tuple[float, float] | None:
    if input_range is None:
        return None
    try:
        low, high = (float(bound) for bound in input_range)
    except (TypeError, ValueError):
        raise Flow2OnnxError(f"input_range must be (low, high), two numbers, e.g. (-1, 1); got {input_range!r}") from None
    if not (math.isfinite(low) and math.isfinite(high) and low < high):
        raise Flow2OnnxError(f"input_range must be (low, high) with finite low < high, got {tuple(input_range)!r}")
    return (low, high)


def _checked_tolerance(name: str, value) -> float | None:
    # A negative tolerance fails every element, and the first-divergence finder then blames an innocent op.
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise Flow2OnnxError(f"{name} must be a finite number >= 0 (or None for the default of each output's dtype); got {value!r}")
    return float(value)


#: The parameters of :func:`flow2onnx.export` that come before its options.
LEADING = (
    ("model", inspect.Parameter.empty, "Any",
     "a compiled oneflow.nn.Graph, an uncompiled one together with example_inputs, or an eager oneflow.nn.Module "
     "with example_inputs (wrapped in a graph here, and put in eval mode with a warning if it was training)"),
    ("example_inputs", None, "Sequence | None",
     "tensors (or numpy arrays) to compile the graph with; their shapes become the model's static shapes, except "
     "the axes made dynamic"),
)


def api_parameters() -> list[inspect.Parameter]:
    """The signature of :func:`flow2onnx.export`: ``model``, ``example_inputs`` and ``path`` by
    position or name, then every other option by name, with its type and default."""
    kinds = {"model": inspect.Parameter.POSITIONAL_OR_KEYWORD, "example_inputs": inspect.Parameter.POSITIONAL_OR_KEYWORD}
    parameters = [inspect.Parameter(name, kinds[name], default=default, annotation=annotation) for name, default, annotation, _ in LEADING]
    for item in fields(ExportOptions):
        kind = inspect.Parameter.POSITIONAL_OR_KEYWORD if item.name == "path" else inspect.Parameter.KEYWORD_ONLY
        parameters.append(inspect.Parameter(item.name, kind, default=item.default, annotation=item.type))
    return parameters


def api_documentation() -> str:
    """The ``:param:`` lines of :func:`flow2onnx.export`, one per parameter, in the signature's order."""
    lines = [f":param {name}: {text}." for name, _, _, text in LEADING]
    for item in fields(ExportOptions):
        summary, detail = item.metadata["summary"], item.metadata["detail"]
        lines.append(f":param {item.name}: {summary}." + (f" {detail}" if detail else ""))
    return "\n".join(lines)


def flags(keeps_file: bool = True) -> list[tuple[str, Flag, Any]]:
    """(option name, its :class:`Flag`, its default) for each option the command line sets; without
    ``keeps_file``, those of ``flow2onnx check`` (which does not keep the file)."""
    return [
        (item.name, item.metadata["flag"], item.default)
        for item in fields(ExportOptions)
        if item.metadata["flag"] is not None and (keeps_file or not item.metadata["flag"].export_only)
    ]


def summary_of(name: str) -> str:
    """The option's one-line summary."""
    return next(item.metadata["summary"] for item in fields(ExportOptions) if item.name == name)


def checked_keywords(keywords: Mapping[str, Any]) -> None:
    """Refuse a keyword that is no option of :func:`flow2onnx.export`, naming the nearest."""
    known = [item.name for item in fields(ExportOptions)]
    for name in keywords:
        if name not in known:
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {near[0]!r}?" if near else f"; the options are {', '.join(known)}"
            raise TypeError(f"export() got an unexpected keyword argument {name!r}{hint}")
