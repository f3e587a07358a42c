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
    #: For an output computed from random draws, compared by its statistics instead of element by
    #: element: what was compared (``KS p=0.61; mean 0.49 vs 0.51; ...``). ``max_abs_diff`` is then
    #: the Kolmogorov-Smirnov distance.
    statistics: str | None = None

    @property
    def result(self) -> str:
        """The verdict shown for this comparison: ``ok``, ``FAILED`` or ``not verified: <why>``."""
        if not self.passed:
            return "FAILED"
        if self.unverified:
            return f"not verified: {self.unverified}"
        return "ok (by statistics)" if self.statistics else "ok"


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
        lines = [f"note: output {name!r} {why}: agreement on it proves little" for name, why in seen.items()]
        lines += [
            f"note: output {c.name!r} ({c.inputs or '-'}, batch {'-' if c.batch_size is None else c.batch_size}) compared by its statistics, "
            f"not element by element: {c.statistics}"
            for c in self.comparisons if c.statistics
        ]
        return lines

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


#: The p-value below which two samples' distributions are told apart: runs draw afresh, so a
#: comparison of the same distributions fails once in a million (per output and run).
RANDOM_ALPHA = 1e-6
#: Fewer values than this make a statistical comparison weak (a draw of the wrong distribution
#: with the right mean and spread passes below it; measured at 1,024 values).
FEW_DRAWS = 4096
#: Values of each output that verification draws on each side for a statistical comparison, in up
#: to :data:`RANDOM_RUNS` runs on the same inputs. At 16,384 the residuals tell a uniform draw from a
#: normal one of the same mean and spread in ``x + noise`` (p about 1e-20; at 4,096 it passed,
#: measured), and a spread 1.2 times OneFlow's.
RANDOM_SAMPLE = 16384
RANDOM_RUNS = 1024


RULE = (
    "NaN exactly where OneFlow has NaN, infinities equal in position and sign, elsewhere "
    "|onnx - oneflow| <= atol * max(1, max finite |oneflow|) + rtol * |oneflow|; tolerances by output dtype, integers exact; "
    "at edge values, not judged where OneFlow overflows (NaN, inf, or past max/2**precision), "
    "nor outputs computed from indices of floats; outputs computed from random draws compared by their statistics "
    f"(same dtype, shape and NaN/inf counts, two-sample Kolmogorov-Smirnov p >= {RANDOM_ALPHA:g})"
)


def compare(
    name: str, expected: np.ndarray, actual: np.ndarray, rtol: float | None = None, atol: float | None = None,
    batch_size=None, inputs: str = "", edges: bool = False, from_indices: bool = False, drawn: str | None = None,
    again: tuple[list, list] | None = None,
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

    ``drawn`` says an output is computed from random draws (``"random: normal"``): it is compared by
    :func:`compare_statistics`; or from uninitialized memory (``"unspecified: empty"``): its shape is
    compared, its values are not judged. ``again`` holds both sides' outputs of more runs on the
    same inputs, for the statistical comparison.
    """
    expected, actual = np.asarray(expected), np.asarray(actual)
    rtol, atol = tolerance_for(expected.dtype, rtol, atol)
    dtype, shape = expected.dtype.name, tuple(expected.shape)
    unjudged = _not_element_by_element(name, expected, actual, batch_size, inputs, edges, from_indices, drawn, again, rtol, atol)
    if unjudged is not None:
        return unjudged
    want, got = expected.astype(np.float64), actual.astype(np.float64)
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


def _not_element_by_element(name, expected, actual, batch_size, inputs, edges, from_indices, drawn, again, rtol, atol) -> OutputComparison | None:
    """The comparisons :func:`compare` does not make element by element: shapes that differ, an
    empty output, values of uninitialized memory, random draws, indices of floats at edge values."""
    dtype, shape = expected.dtype.name, tuple(expected.shape)
    if expected.shape != actual.shape:
        return OutputComparison(
            name, batch_size, tuple(actual.shape), dtype, float("inf"), float("inf"), 1.0, atol, rtol, False, inputs=inputs, oneflow_shape=shape,
        )
    if expected.size == 0:
        return OutputComparison(name, batch_size, shape, dtype, 0.0, 0.0, 0.0, atol, rtol, True, weakness="is empty", inputs=inputs)
    if drawn is not None and drawn.startswith("unspecified"):
        return OutputComparison(
            name, batch_size, shape, dtype, 0.0, 0.0, 0.0, atol, rtol, True, inputs=inputs,
            unverified=f"computed from memory OneFlow leaves as it was ({drawn.split(': ')[-1]})",
        )
    if drawn is not None:
        return compare_statistics(name, expected, actual, batch_size, inputs, drawn.split(": ")[-1], rtol, atol, again)
    if edges and from_indices:
        return OutputComparison(
            name, batch_size, shape, dtype, 0.0, 0.0, 0.0, atol, rtol, True, inputs=inputs,
            unverified="computed from indices of floats (at edge values the order of ties and NaN is each runtime's choice)",
        )
    return None


def compare_statistics(
    name: str, expected: np.ndarray, actual: np.ndarray, batch_size, inputs: str, source: str, rtol, atol, again=None,
) -> OutputComparison:
    """An output computed from random draws (``source``, the op type), as a sample of values: the
    same dtype and shape, the same NaN and inf counts, and a two-sample Kolmogorov-Smirnov test of
    the finite values at :data:`RANDOM_ALPHA`; mean, spread and range are reported beside it.

    With ``again`` (both sides' outputs of more runs on the same inputs), the values of every run are
    pooled, and each side's residuals are tested too: every value less its element's mean over that
    side's runs. What the inputs add cancels there, so a wrong draw shows even where it is small
    beside the inputs (``x + noise``): a wrong spread, or the wrong distribution with the right one.
    For elements where OneFlow takes few values (integer draws, subnormal products), the differences
    of disjoint pairs of runs instead: an estimated mean would shift the two sides' atoms apart, and
    one shared reference run would tie all of an element's values to it (both measured as false
    refusals)."""
    shape, dtype = tuple(expected.shape), expected.dtype.name
    want_runs = [expected] + [more for more in (again[0] if again else []) if np.shape(more) == expected.shape]
    got_runs = [actual] + [more for more in (again[1] if again else []) if np.shape(more) == actual.shape]
    want, got = (np.concatenate([np.asarray(r, dtype=np.float64).ravel() for r in runs]) for runs in (want_runs, got_runs))
    finite_want, finite_got = want[np.isfinite(want)], got[np.isfinite(got)]
    same_nonfinite = int(np.isnan(want).sum()) == int(np.isnan(got).sum()) and int(np.isinf(want).sum()) == int(np.isinf(got).sum())
    distance, p_value = ks_two_sample(finite_want, finite_got)
    summary = f"drawn by {source}, {len(want_runs)} runs of each side: KS distance {distance:.3g}, p={p_value:.3g}"
    if len(want_runs) > 1 and len(got_runs) > 1:
        few_valued = _few_valued(want_runs)  # OneFlow's decides, for both sides alike
        spread_want, spread_got = (_residuals(runs, few_valued) for runs in (want_runs, got_runs))
        spread_distance, spread_p = ks_two_sample(spread_want, spread_got)
        summary += f"; residuals: KS distance {spread_distance:.3g}, p={spread_p:.3g}"
        distance, p_value = max(distance, spread_distance), min(p_value, spread_p)
    if finite_want.size and finite_got.size:
        summary += (
            f"; mean {finite_want.mean():.4g} vs {finite_got.mean():.4g}, std {finite_want.std():.4g} vs {finite_got.std():.4g}, "
            f"range [{finite_want.min():.4g}, {finite_want.max():.4g}] vs [{finite_got.min():.4g}, {finite_got.max():.4g}] (oneflow vs onnx)"
        )
    passed = expected.dtype == actual.dtype and same_nonfinite and p_value >= RANDOM_ALPHA
    return OutputComparison(
        name, batch_size, shape, dtype, distance, 0.0, 0.0 if passed else 1.0, atol, rtol, passed, inputs=inputs,
        nan_count=int(np.isnan(want).sum()), inf_count=int(np.isinf(want).sum()), statistics=summary,
        weakness=f"was compared on {want.size} values, few for a statistical comparison" if want.size < FEW_DRAWS else None,
    )


def _stacked(runs: list) -> np.ndarray:
    """One side's runs as a [runs, elements] array of the elements finite in every run."""
    stacked = np.stack([np.asarray(r, dtype=np.float64).ravel() for r in runs])
    return stacked[:, np.isfinite(stacked).all(axis=0)]


def _few_valued(runs: list) -> np.ndarray:
    """Per element of the finite ones, whether it takes at most half as many distinct values as
    there are runs (an integer draw, or subnormal products that take few values)."""
    stacked = _stacked(runs)
    distinct = (np.diff(np.sort(stacked, axis=0), axis=0) != 0).sum(axis=0) + 1
    return distinct <= len(runs) / 2


def _residuals(runs: list, few_valued: np.ndarray) -> np.ndarray:
    """One side's values less each element's mean over that side's runs, and for the ``few_valued``
    elements the differences of disjoint pairs of runs instead; for the elements finite in every run.
    Under the same distributions both sides' residuals are alike, element by element."""
    stacked = _stacked(runs)
    if stacked.shape[1] != few_valued.shape[0]:  # other elements are finite on this side: none to compare alike
        few_valued = np.zeros(stacked.shape[1], dtype=bool)
    spread = stacked[:, ~few_valued]
    pairs = len(stacked) // 2
    paired = stacked[1 : 2 * pairs : 2, few_valued] - stacked[0 : 2 * pairs : 2, few_valued]
    return np.concatenate([(spread - spread.mean(axis=0)).ravel(), paired.ravel()])


def ks_two_sample(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """The two-sample Kolmogorov-Smirnov distance of ``a`` and ``b`` and its asymptotic p-value
    (Kolmogorov's distribution, with Stephens' small-sample correction); ties are handled by
    comparing the empirical distributions at every distinct value. ``(0, 1)`` when either is empty."""
    if a.size == 0 or b.size == 0:
        return 0.0, 1.0 if a.size == b.size else 0.0
    a, b = np.sort(a), np.sort(b)
    values = np.union1d(a, b)
    distance = float(np.abs(np.searchsorted(a, values, side="right") / a.size - np.searchsorted(b, values, side="right") / b.size).max())
    effective = np.sqrt(a.size * b.size / (a.size + b.size))
    lam = (effective + 0.12 + 0.11 / effective) * distance
    if lam < 1e-3:
        return distance, 1.0
    terms = np.arange(1, 101)
    p_value = float(np.clip(2.0 * np.sum((-1.0) ** (terms - 1) * np.exp(-2.0 * terms**2 * lam**2)), 0.0, 1.0))
    return distance, p_value


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
