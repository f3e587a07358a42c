"""How ONNX Runtime's outputs are compared with OneFlow's: the rule, its tolerances and the report.

Pure NumPy: this module imports nothing else of flow2onnx, so that a machine without OneFlow (a GPU
box that only runs exported files, ``benchmarks/gpu_check.py run``) judges outputs by the very same
rule, loading this file by its path.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np

DEFAULT_RTOL = 1e-3
DEFAULT_ATOL = 1e-4
OUTLIERS_SHOWN = 10

# dtype kind/name -> (rtol, atol): what float arithmetic in another order (another runtime, other
# kernels) can honestly differ by. Integers and booleans are exact.
TOLERANCES = {
    "float16": (1e-2, 1e-2),
    "float32": (DEFAULT_RTOL, DEFAULT_ATOL),
    "float64": (1e-6, 1e-7),
}


def tolerance_for(dtype, rtol: float | None = None, atol: float | None = None) -> tuple[float, float]:
    """The (rtol, atol) used for an output of ``dtype``; explicit values replace the float defaults
    (float16 never gets tighter than its own)."""
    dtype = np.dtype(dtype)
    if dtype.kind not in "fc":
        return 0.0, 0.0
    default_rtol, default_atol = TOLERANCES.get(dtype.name, TOLERANCES["float32"])
    chosen = (default_rtol if rtol is None else rtol, default_atol if atol is None else atol)
    if dtype == np.float16:
        chosen = (max(chosen[0], default_rtol), max(chosen[1], default_atol))
    return chosen


@dataclass
class OutputComparison:
    """How one output of one run compares: the statistics and whether it is within tolerance.

    ``nan_count``/``inf_count`` count OneFlow's non-finite values; ``nonfinite_mismatches`` counts
    elements where the two disagree on NaN or on an infinity (position or sign). ``unverified`` says
    why this comparison checked no value at all (``"NaN everywhere"``, ``"no finite value"``): an
    output that OneFlow computes as NaN everywhere matches any lowering that also gives NaN, right or
    wrong. ``weakness`` says why agreement proves little though values were compared (constant,
    empty), or is ``None``.
    """

    name: str
    batch_size: int | None
    shape: tuple[int, ...]
    dtype: str
    max_abs_diff: float
    max_rel_diff: float
    mismatch_fraction: float
    atol: float
    rtol: float
    passed: bool
    outliers: list[tuple[tuple[int, ...], float, float]] = field(default_factory=list)
    nan_count: int = 0
    inf_count: int = 0
    nonfinite_mismatches: int = 0
    weakness: str | None = None
    unverified: str | None = None
    #: The run's inputs, in a word or two ("example", "edge values", ...).
    inputs: str = ""
    #: Elements not judged: OneFlow overflowed there in a run at edge values.
    uncompared: int = 0
    #: OneFlow's shape of this output, where the model's (``shape``) differs from it; else ``None``.
    oneflow_shape: tuple[int, ...] | None = None

    @property
    def result(self) -> str:
        """The verdict shown for this comparison: ``ok``, ``FAILED`` or ``not verified: <why>``."""
        if not self.passed:
            return "FAILED"
        return f"not verified: {self.unverified}" if self.unverified else "ok"


@dataclass
class VerificationReport:
    """Every output of every run compared; ``passed`` only when all are within tolerance.

    ``rtol``/``atol`` are the values the caller asked for (``None``: the defaults of each output's
    dtype); each comparison states the tolerances it used, ``atol`` already scaled.
    """

    verifier: str
    rtol: float | None = None
    atol: float | None = None
    comparisons: list[OutputComparison] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """No comparison is out of tolerance (some may have checked nothing: see :attr:`verified`)."""
        return bool(self.comparisons) and all(c.passed for c in self.comparisons)

    @property
    def unverified_outputs(self) -> dict[str, str]:
        """Output name -> why, for the outputs that no run could check (NaN everywhere in every run)."""
        checked = {c.name for c in self.comparisons if not (c.passed and c.unverified)}
        return {c.name: c.unverified for c in self.comparisons if c.name not in checked}

    @property
    def verified(self) -> bool:
        """Every output was compared on some value, and every comparison is within tolerance."""
        return self.passed and not self.unverified_outputs

    @property
    def weak_outputs(self) -> list[OutputComparison]:
        """Comparisons that passed on values that prove little: the output is constant or empty."""
        return [c for c in self.comparisons if c.passed and c.weakness]

    @property
    def verdict(self) -> str:
        """The report's last line: whether every output matched, some could not be checked, or some differ."""
        if not self.passed:
            return "MISMATCH: some outputs are out of tolerance"
        unverified = self.unverified_outputs
        if unverified:
            named = "; ".join(f"output {name!r}: {why} in every run" for name, why in unverified.items())
            return f"NOT VERIFIED: {named}; no run compared a value of it, so the file may be wrong there (the other outputs match)"
        return "all outputs match"

    @property
    def batch_sizes(self) -> list:
        return sorted({c.batch_size for c in self.comparisons if c.batch_size is not None})

    def to_dict(self) -> dict:
        data = asdict(self)
        data["passed"] = self.passed
        data["verified"] = self.verified
        data["unverified_outputs"] = self.unverified_outputs
        data["verdict"] = self.verdict
        for entry, c in zip(data["comparisons"], self.comparisons):
            entry["result"] = c.result
        data["rule"] = RULE
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def _rows(self) -> list[tuple]:
        return [
            (
                c.name,
                c.inputs or "-",
                "-" if c.batch_size is None else str(c.batch_size),
                str(list(c.shape)),
                c.dtype,
                f"{c.max_abs_diff:.3e}",
                f"{c.max_rel_diff:.3e}",
                f"{c.mismatch_fraction:.4%}",
                f"{c.nan_count}/{c.inf_count}",
                f"{c.rtol:g}",
                f"{c.atol:.3g}",
                c.result,
            )
            for c in self.comparisons
        ]

    _HEADER = ("output", "inputs", "batch", "shape", "dtype", "max abs diff", "max rel diff", "out of tol", "nan/inf", "rtol", "atol", "result")

    def to_text(self, outliers: bool = False) -> str:
        rows = [self._HEADER] + self._rows()
        widths = [max(len(row[i]) for row in rows) for i in range(len(self._HEADER))]
        lines = [f"verification with {self.verifier}: {RULE}"]
        for index, row in enumerate(rows):
            lines.append("  ".join(cell.rjust(w) if 4 < i < 11 else cell.ljust(w) for i, (cell, w) in enumerate(zip(row, widths))).rstrip())
            if index == 0:
                lines.append("-" * len(lines[-1]))
            elif outliers:
                c = self.comparisons[index - 1]
                if c.outliers:
                    lines.append(f"    worst elements of {c.name} (index: oneflow vs onnx):")
                    lines.extend(f"      {list(i)}: {e:.7g} vs {a:.7g}" for i, e, a in c.outliers)
        lines.extend(self._weakness_lines())
        lines.append(self.verdict)
        return "\n".join(lines)

    def _weakness_lines(self) -> list[str]:
        seen = {}
        for c in self.weak_outputs:
            seen.setdefault(c.name, c.weakness)
        return [f"note: output {name!r} {why}: agreement on it proves little" for name, why in seen.items()]

    def to_markdown(self) -> str:
        """A Markdown table, for CI logs and pull requests."""
        lines = [
            f"**Verification with {self.verifier}: {self.verdict}** ({RULE})",
            "",
            "| " + " | ".join(self._HEADER) + " |",
            "|" + "|".join("---" for _ in self._HEADER) + "|",
        ]
        lines.extend("| " + " | ".join(row) + " |" for row in self._rows())
        notes = self._weakness_lines()
        if notes:
            lines += [""] + [f"- {note}" for note in notes]
        return "\n".join(lines)


RULE = (
    "NaN exactly where OneFlow has NaN, infinities equal in position and sign, elsewhere "
    "|onnx - oneflow| <= atol * max(1, max finite |oneflow|) + rtol * |oneflow|; tolerances by output dtype, integers exact; "
    "at edge values, not judged where OneFlow overflows (NaN, inf, or past max/2**precision), "
    "nor outputs computed from indices of floats"
)


def compare(
    name: str, expected: np.ndarray, actual: np.ndarray, rtol: float | None = None, atol: float | None = None,
    batch_size=None, inputs: str = "", edges: bool = False, from_indices: bool = False,
) -> OutputComparison:
    """Compare one output of ONNX Runtime (``actual``) with OneFlow's (``expected``) by :data:`RULE`.

    Non-finite values are compared by position and kind, never through arithmetic (``inf - inf`` is
    NaN, and a NaN difference compares false with any tolerance); ``atol`` is scaled by the largest
    finite magnitude of ``expected``. ``inputs`` names the run's inputs in the report.

    With ``edges`` (a run at edge values), OneFlow's value is the reference only where OneFlow did
    not overflow: where it is NaN, infinite or within :func:`overflow_margin` of the largest finite
    value, the inputs are outside what float arithmetic computes in a definite way (another order
    of the same sum overflows or not), so the file is not judged there. Everywhere else the rule is
    the same, and a file that overflows where OneFlow does not (``log(1 + exp(x))`` at 89) fails.
    ``from_indices`` (an output computed from integers that the graph derived from floats: an
    argsort, a top-k's indices, a cast) is not compared in such a run: the order of ties and of NaN
    is each runtime's own choice.
    """
    expected, actual = np.asarray(expected), np.asarray(actual)
    rtol, atol = tolerance_for(expected.dtype, rtol, atol)
    dtype, shape = expected.dtype.name, tuple(expected.shape)
    if expected.shape != actual.shape:
        return OutputComparison(
            name, batch_size, tuple(actual.shape), dtype, float("inf"), float("inf"), 1.0, atol, rtol, False, inputs=inputs, oneflow_shape=shape,
        )
    want, got = expected.astype(np.float64), actual.astype(np.float64)
    if want.size == 0:
        return OutputComparison(name, batch_size, shape, dtype, 0.0, 0.0, 0.0, atol, rtol, True, weakness="is empty", inputs=inputs)
    if edges and from_indices:
        return OutputComparison(
            name, batch_size, shape, dtype, 0.0, 0.0, 0.0, atol, rtol, True, inputs=inputs,
            unverified="computed from indices of floats (at edge values the order of ties and NaN is each runtime's choice)",
        )
    finite_want, reference, nonfinite_bad, bad, diff, rel, scaled_atol = _judged(expected, actual, want, got, edges, atol, rtol)
    any_nonfinite_bad = bool(nonfinite_bad.any())
    return OutputComparison(
        name=name,
        batch_size=batch_size,
        shape=shape,
        dtype=dtype,
        max_abs_diff=float("inf") if any_nonfinite_bad else float(diff.max()),
        max_rel_diff=float("inf") if any_nonfinite_bad else float(rel.max()),
        mismatch_fraction=float(bad.mean()),
        atol=scaled_atol,
        rtol=rtol,
        passed=not bad.any(),
        outliers=_worst_elements(bad, np.where(nonfinite_bad, np.inf, diff), want, got),
        nan_count=int(np.isnan(want).sum()),
        inf_count=int(np.isinf(want).sum()),
        nonfinite_mismatches=int(nonfinite_bad.sum()),
        weakness=None if edges else _weakness(want, finite_want),
        unverified=_unverified(want, finite_want, reference),
        inputs=inputs,
        uncompared=int((~reference).sum()),
    )


def _judged(expected, actual, want, got, edges: bool, atol: float, rtol: float):
    """The element masks and differences of :func:`compare`: where OneFlow's value is finite, where
    it is the reference, where a non-finite value differs, where any element fails; the absolute
    and relative differences, and the absolute tolerance scaled by the largest magnitude."""
    finite_got = np.isfinite(got)
    finite_want = np.isfinite(want)
    # Where OneFlow's value is the reference (everywhere, except where it overflowed in an edge run).
    reference = finite_want & (np.abs(want) < overflow_margin(expected.dtype)) if edges and expected.dtype.kind == "f" else np.ones(want.shape, bool)
    both_finite = finite_want & finite_got & reference
    # Where either side is not finite, the two must be the very same value (NaN and NaN, +inf and +inf).
    nonfinite_bad = reference & ~(finite_want & finite_got) & ~((want == got) | (np.isnan(want) & np.isnan(got)))
    magnitude = np.abs(np.where(finite_want & reference, want, 0.0))
    scaled_atol = atol * max(1.0, float(magnitude.max(initial=0.0)))
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf: masked out just below
        diff = np.where(both_finite, np.abs(got - want), 0.0)
    bad = nonfinite_bad | (diff > scaled_atol + rtol * magnitude)
    if expected.dtype.kind not in "fc":
        # Exact in the integers' own type: float64 cannot tell apart int64 values past 2**53.
        bad |= expected != actual
    # Relative to the magnitude, floored at the absolute tolerance so that zeros do not explode it.
    rel = diff / np.maximum(magnitude, scaled_atol if scaled_atol > 0 else np.finfo(np.float64).tiny)
    return finite_want, reference, nonfinite_bad, bad, diff, rel, scaled_atol


def has_reference(expected: np.ndarray) -> bool:
    """Whether an edge-value run can judge anything of this OneFlow output: a float output with
    some value that did not overflow, or any other output with a value."""
    expected = np.asarray(expected)
    if expected.dtype.kind != "f":
        return expected.size > 0
    return bool((np.isfinite(expected) & (np.abs(expected) < overflow_margin(expected.dtype))).any())


def overflow_margin(dtype) -> float:
    """The magnitude from which a float of ``dtype`` counts as overflowed in an edge-value run: the
    largest finite value over 2**(precision bits), about 2e31 for float32, 32 for float16. A sum
    of values past it can overflow in one order and not in another."""
    info = np.finfo(dtype)
    return float(info.max) * 2.0 ** -(info.nmant + 1)


def _worst_elements(bad: np.ndarray, diff: np.ndarray, want: np.ndarray, got: np.ndarray) -> list:
    """Up to :data:`OUTLIERS_SHOWN` failing elements, largest difference first: (index, oneflow, onnx)."""
    if not bad.any():
        return []
    flat_bad = np.flatnonzero(bad)
    order = flat_bad[np.argsort(diff.ravel()[flat_bad], kind="stable")[::-1][:OUTLIERS_SHOWN]]
    return [
        (tuple(int(i) for i in np.unravel_index(k, want.shape)), float(want.ravel()[k]), float(got.ravel()[k]))
        for k in order
    ]


def _unverified(want: np.ndarray, finite: np.ndarray, reference: np.ndarray) -> str | None:
    """Why no value of this output was checked, or ``None``: NaN matches NaN whatever the lowering computed."""
    if (finite & reference).any():
        return None
    if np.isnan(want).all():
        return "NaN everywhere"
    if not finite.any():
        return "no finite value"
    return "OneFlow overflows everywhere"


def _weakness(want: np.ndarray, finite: np.ndarray) -> str | None:
    """Why matching this output proves little though values were compared, or ``None``: a lowering can
    be wrong and still agree with an output that has the same value everywhere."""
    if not finite.any():
        return None  # not checked at all: see _unverified
    if want.size > 1 and np.all(want == want.flat[0]):
        return f"is constant ({want.flat[0]:.7g} everywhere)"
    return None
