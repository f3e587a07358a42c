"""Values that follow the dynamic axes: found by comparing two compilations, computed in the graph.

When a model computes a number from a tensor's size in Python (``x.sum((2, 3)) / (x.shape[2] *
x.shape[3])``, ``flow.zeros(x.shape[0], 4)``), OneFlow's graph holds the example's number as an op
attribute. flow2onnx compiles the module a second time at other sizes of the dynamic axes; an
attribute that differs there follows the axes. :func:`explain` finds the relation that gives both
values: a coefficient times a product of dynamic sizes, each to the power -1, 0 or 1 (``1 / (H *
W)``, ``B``, ``H * W / 4``), the simplest first. The lowering then emits that arithmetic on
``Shape`` of the tensors it names (:func:`flow2onnx.lowering.helpers.size_value`), and verification
at sizes far from both compilations, and at 1, checks it. The sizes considered are those of the
op's own inputs and those of the graph's inputs: ``n, c, h, w = y.shape; y.reshape(n, 2, c // 2, h,
w)`` takes ``h`` from ``y`` itself, exact at any size, where ``H / 8`` of the input, which fits two
compilations at sizes aligned to the stride, is wrong at the others. A value no such relation
explains is refused.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping

#: A dynamic axis: (graph input name, axis).
Axis = tuple[str, int]


@dataclass(frozen=True)
class SizeExpression:
    """``coefficient * prod(size(input, axis) ** exponent)`` over some dynamic axes."""

    coefficient: float
    #: ((input name, axis), exponent) pairs, exponents -1 or 1.
    factors: tuple[tuple[Axis, int], ...]
    #: Whether the value is an integer (then the coefficient is a fraction and the exponents positive;
    #: it is computed as ``size * numerator // denominator``).
    integer: bool = False

    def evaluate(self, sizes: Mapping[Axis, int]) -> float:
        """The value at the given sizes of the dynamic axes."""
        value = self.coefficient
        for axis, exponent in self.factors:
            value *= sizes[axis] ** exponent
        return value

    @property
    def numerator(self) -> int:
        """For an integer expression: the coefficient's numerator (its denominator is :attr:`denominator`)."""
        return Fraction(self.coefficient).numerator

    @property
    def denominator(self) -> int:
        return Fraction(self.coefficient).denominator

    def describe(self) -> str:
        terms = [f"{name}[{axis}]" + ("" if exponent == 1 else f"^{exponent}") for (name, axis), exponent in self.factors]
        return " * ".join([str(self.coefficient) if self.integer else f"{self.coefficient:g}"] + terms)


def explain(example: float, other: float, example_sizes: Mapping[Axis, int], other_sizes: Mapping[Axis, int]) -> SizeExpression | None:
    """The simplest :class:`SizeExpression` that is ``example`` at ``example_sizes`` and ``other`` at
    ``other_sizes``; ``None`` when none is."""
    integer = isinstance(example, int) and isinstance(other, int) and not isinstance(example, bool)
    axes = sorted(axis for axis in example_sizes if example_sizes[axis] != other_sizes.get(axis))
    exponent_choices = (0, 1) if integer else (0, 1, -1)
    candidates = []
    for exponents in itertools.product(exponent_choices, repeat=len(axes)):
        factors = tuple((axis, exponent) for axis, exponent in zip(axes, exponents) if exponent)
        if not factors:
            continue
        base = SizeExpression(1.0, factors, integer)
        at_example = base.evaluate(example_sizes)
        coefficient = example / at_example
        if integer:
            # A size such as H / 8 after three stride-2 stages, or H * W / 256 patches of 16 x 16: a fraction
            # exact at both points.
            fraction = Fraction(coefficient).limit_denominator(4096)
            if fraction * int(at_example) != example:
                continue
            coefficient = fraction
        guess = SizeExpression(coefficient if integer else float(coefficient), factors, integer)
        if math.isclose(guess.evaluate(other_sizes), other, rel_tol=1e-9, abs_tol=0.0):
            candidates.append(guess)
    if not candidates:
        return None
    best = min(candidates, key=simplicity)
    if sum(1 for candidate in candidates if simplicity(candidate) == simplicity(best)) > 1:
        return None  # two axes that changed alike: the compilations cannot tell which one the value follows
    return best


def simplicity(expression: SizeExpression) -> tuple:
    """How simple an explanation is, smaller first: fewest factors, then positive powers (a size before
    its reciprocal), then a coefficient nearest one."""
    return len(expression.factors), sum(e < 0 for _, e in expression.factors), abs(math.log(abs(expression.coefficient) or 1))
