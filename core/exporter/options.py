"""What one export was asked to do: the options of :func:`flow2onnx.export`, checked once.

Every step of the pipeline reads its settings from one frozen :class:`ExportOptions`, so a step
cannot change what a later one sees, and an invalid option fails before any work is done.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Mapping

import onnx

from ..errors import Flow2OnnxError, OpsetError
from ..lowering.registry import DEFAULT_OPSET, MIN_OPSET, max_opset

DEFAULT_VERIFIER = "onnxruntime"

#: How a model's ops are captured: by compiling an nn.Graph, by recording an eager run, or the
#: first, falling back to the second when OneFlow cannot build the graph.
CAPTURES = ("graph", "eager", "auto")


@dataclass(frozen=True)
class ExportOptions:
    """The options of one export, as :func:`flow2onnx.export` documents them.

    Built by ``export``; construct one directly to run the pipeline without it. Lists become tuples
    and ``dynamic_axes`` a read-only mapping; ``opset=None`` becomes the default opset.
    """

    path: str = "model.onnx"
    opset: int | None = None
    dynamic_batch: bool = False
    dynamic_axes: Mapping[str, Mapping[int, str]] | None = None
    verify: bool = True
    verifier: str = DEFAULT_VERIFIER
    verify_batch_sizes: tuple[int, ...] | None = None
    rtol: float | None = None
    atol: float | None = None
    input_range: tuple[float, float] | None = None
    #: Also log the verification report with each output's worst elements (logger ``flow2onnx``, INFO).
    print_outlier: bool = False
    external_data: bool | None = None
    post_passes: tuple[str, ...] = ()
    strict_post_passes: bool = False
    plugins: tuple[Any, ...] = ()
    disable_plugins: tuple[str, ...] = ()
    only_plugins: tuple[str, ...] | None = None
    bundle_dir: str | None = None
    bisect: bool = False
    #: Fail, rather than warn, when an output is constant or has no finite value in every run.
    strict: bool = False
    #: Fail, rather than warn, when some output has no finite value in every run (nothing of it was
    #: compared): what the tutorial's ``convert_to_onnx_and_check`` promises.
    require_verified: bool = False
    #: How the model's ops are captured, one of :data:`CAPTURES`.
    capture: str = "auto"
    #: Run the export in a worker process (:mod:`.isolation`); read by ``export``, not by the steps.
    isolate: bool = False

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
