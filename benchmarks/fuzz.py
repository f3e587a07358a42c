"""Differential fuzzer: random small OneFlow programs, exported with flow2onnx, run on ONNX Runtime.

Each program is an eager ``flow.nn.Module`` whose ``forward`` is a random chain or DAG of 2 to 6 ops
(elementwise, broadcasting binary, reductions, softmax, shape ops, matmul, convolution, pooling,
normalisation, resize, indexing, casts, in-place ops). It is exported with
``flow2onnx.export(..., verify=False)`` at an opset from 11 to 17 or the newest, about half the time
with some input axes dynamic, and the written file's outputs on ONNX Runtime (CPU provider) are
compared with eager OneFlow's on fresh inputs: random ones at the example shape, inputs holding edge
values (signed zeros, large finite values, exp overflow, tanh saturation, tiny and denormal values,
infinities, NaN), and, on dynamic axes, other sizes (1 and odd sizes). Edge values are judged by
verification's rule for them: NaN, ±inf and the largest floats only in programs whose every op is
elementwise (elsewhere they become finite edge values), no element where OneFlow overflows, and no
output of a program that derives integers from floats (``INDEX_OPS``).

Outcomes: ``ok``; ``refused`` (a ``Flow2OnnxError``: a clear refusal, not a finding);
``oneflow-error`` (OneFlow cannot run the program eagerly or cannot compile it: not a finding);
``crash`` (any other exception from export, or ONNX Runtime failing to load the file or to run it
at the example shape); ``wrong`` (the file runs but outputs, shapes or dtypes differ, or it fails at
another size of a dynamic axis where OneFlow runs); ``abort`` (the worker process died or hung).
Every finding is shrunk (ops removed, symbol sizes reduced, input values made benign) while its
outcome holds, and printed as a standalone script.

Programs run in a worker process (``fuzz.py --worker``, JSON lines on a pipe) so that a OneFlow
abort or segfault is recorded instead of ending the run; one worker serves many programs because
importing OneFlow takes about 3 seconds, and it is restarted after an abort. A program is a pure
function of ``(seed, index)``: ``--replay SEED:INDEX`` runs one again.

    python benchmarks/fuzz.py --seed 0 --count 30
    python benchmarks/fuzz.py --seed 1 --minutes 45 --out benchmarks/results/fuzz.md --json
    python benchmarks/fuzz.py --replay 1:17
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import random
import select
import subprocess
import sys
import tempfile
import time
import traceback

import numpy as np

from flow2onnx.exporter.plan.draws import edge_values as verification_edge_values
from flow2onnx.exporter.verify.comparison import compare as compare_output

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DEFAULT_OUT = os.path.join(HERE, "results", "fuzz.md")

#: Outcomes that are findings (shrunk and reported); the others are expected behaviour.
FINDINGS = ("wrong", "crash", "abort")
OUTCOMES = ("ok", "refused", "oneflow-error", "crash", "wrong", "abort")

#: Edge values fed to floating-point inputs: signed zeros, ones, large finite values, exp overflow
#: (88.72 is log(FLT_MAX)), tanh saturation, tiny and denormal values, infinities and NaN.
EDGE_FLOAT32 = [0.0, -0.0, 1.0, -1.0, 1e30, -1e30, 3e38, -3e38, 88.7, 88.8, -88.7, -103.0,
                10.0, -10.0, 20.0, -20.0, 1e-38, -1e-38, 1e-45, -1e-45,
                math.inf, -math.inf, math.nan, 0.5, -0.5, 2.5]
EDGE_FLOAT64 = EDGE_FLOAT32 + [1e300, -1e300, 5e-324, 709.8]
EDGE_INT64 = [0, 1, -1, 2, 2**31 - 1, -(2**31), 2**40, -(2**40)]

#: Sizes drawn for a symbol (an input axis); 1 is drawn less often than the others.
SIZES = [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 7, 8]
MAX_ELEMENTS = 4096

# --------------------------------------------------------------------------------------------------
# Program generation (pure Python: the parent process never imports OneFlow)
# --------------------------------------------------------------------------------------------------
#
# A program is a JSON-able dict:
#   symbols  {name: example size}: every input axis is a symbol or the literal 1 (a broadcast axis);
#            inputs that share a symbol change together when it is made dynamic
#   inputs   [{"dims": [symbol or 1, ...], "dtype": "float32" | "float64" | "int64"}]
#   nodes    [{"op": op name (the Python call), "ins": [value ids], "code": "flow.relu({0})", "init": "..."}]
#            value ids: inputs first (0..k-1, variables x0, x1, ...), then one per node (v<id>);
#            "{0}", "{1}" in code are the node's inputs, "{m}" its submodule (self.m<id>)
#   opset, dynamic (symbols made dynamic), dynamic_batch (export with dynamic_batch=True instead),
#   pinned (symbols an op baked in: not made dynamic), weight_seed, input_seed.
# The outputs are the node values no node consumes. During generation each value also carries a
# shape, a dtype and per-axis labels (the symbol an axis follows, or None), so that ops pick valid
# axes and the second operand of a binary op can be built to broadcast against the first.


class Value:
    """What the generator knows about a value: shape at the example sizes, dtype, axis labels."""

    def __init__(self, shape, dtype, labels):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.labels = tuple(labels)
        assert len(self.shape) == len(self.labels)

    @property
    def rank(self):
        return len(self.shape)

    @property
    def size(self):
        return int(np.prod(self.shape)) if self.shape else 1

    @property
    def floating(self):
        return self.dtype in ("float32", "float64")


class Generator:
    """Builds one program from a ``random.Random``; each ``op_*`` method adds one node or returns False."""

    def __init__(self, rng: random.Random, max_opset: int):
        self.rng = rng
        self.max_opset = max_opset
        self.symbols: dict[str, int] = {}
        self.inputs: list[dict] = []
        self.nodes: list[dict] = []
        self.values: list[Value] = []  # index = value id; inputs are appended as they are created
        self.ids: list[int] = []  # value id of each entry of self.values, in creation order
        self.pinned: set[str] = set()

    # -- values ------------------------------------------------------------------------------------

    def new_symbol(self, size=None):
        name = "abcdefghijklmnopqrstuvwxyz"[len(self.symbols)] if len(self.symbols) < 26 else f"s{len(self.symbols)}"
        self.symbols[name] = size if size is not None else self.rng.choice(SIZES)
        return name

    def new_input(self, dims, dtype):
        """An input whose axes are ``dims`` (symbols or 1); returns its value id."""
        self.inputs.append({"dims": list(dims), "dtype": dtype})
        shape = [self.symbols[d] if isinstance(d, str) else 1 for d in dims]
        labels = [d if isinstance(d, str) else None for d in dims]
        self.values.append(Value(shape, dtype, labels))
        self.ids.append(("input", len(self.inputs) - 1))
        return len(self.values) - 1

    def fresh_input(self):
        rank = self.rng.choice([1, 2, 2, 3, 3, 4, 4, 4])
        dtype = self.rng.choices(["float32", "float64", "int64"], [85, 8, 7])[0]
        return self.new_input([self.new_symbol() for _ in range(rank)], dtype)

    def add(self, op, ins, code, out: Value, init=None, pins=()):
        """Append a node; ``pins``: labels whose sizes the node bakes in (kept static)."""
        if out.size > MAX_ELEMENTS or out.size == 0:
            return False
        self.nodes.append({"op": op, "ins": list(ins), "code": code, "init": init})
        self.values.append(out)
        self.ids.append(("node", len(self.nodes) - 1))
        self.pinned.update(label for label in pins if label)
        return True

    def pick(self, pred=lambda v: True):
        """A value id satisfying ``pred``, recent values more likely (chains more than fan-outs)."""
        candidates = [i for i, v in enumerate(self.values) if pred(v)]
        if not candidates:
            return None
        weights = [1 + 3 * (k == len(candidates) - 1) + (k >= len(candidates) - 3) for k in range(len(candidates))]
        return self.rng.choices(candidates, weights)[0]

    def axis(self, v: Value):
        """An axis of ``v``, written negative half the time."""
        a = self.rng.randrange(v.rank)
        return a - v.rank if self.rng.random() < 0.5 else a

    def partner(self, vid, *, allow_new=True):
        """A second operand for a broadcasting binary op with value ``vid``: (value id or None, code, Value).

        An existing value of the same shape and labels, a new input built from ``vid``'s axes (axes
        that follow a symbol keep it or become 1, others become 1), or a constant tensor held by the
        module whose axes are 1 or static sizes.
        """
        v = self.values[vid]
        same = [i for i, w in enumerate(self.values) if w.shape == v.shape and w.labels == v.labels and w.dtype == v.dtype and i != vid]
        choice = self.rng.random()
        if same and choice < 0.35:
            i = self.rng.choice(same)
            return i, None, self.values[i]
        if allow_new and len(self.inputs) < 3 and choice < 0.8:
            dims = [lab if (lab in self.symbols and self.symbols.get(lab) == s and self.rng.random() < 0.8) else 1
                    for lab, s in zip(v.labels, v.shape)]
            drop = self.rng.randrange(len(dims) + 1) if self.rng.random() < 0.3 else 0
            dims = dims[drop:]  # a lower rank broadcasts from the right
            i = self.new_input(dims, v.dtype)
            return i, None, self.values[i]
        shape = [s if lab is None and self.rng.random() < 0.5 else 1 for lab, s in zip(v.labels, v.shape)]
        w = Value(shape, v.dtype, [None] * len(shape))
        return None, shape, w

    @staticmethod
    def broadcast(a: Value, b: Value):
        """Shape and labels of broadcasting ``a`` with ``b`` (None when they do not broadcast)."""
        rank = max(a.rank, b.rank)
        sa = (1,) * (rank - a.rank) + a.shape
        sb = (1,) * (rank - b.rank) + b.shape
        la = (None,) * (rank - a.rank) + a.labels
        lb = (None,) * (rank - b.rank) + b.labels
        shape, labels = [], []
        for x, y, lx, ly in zip(sa, sb, la, lb):
            if x == y:
                shape.append(x)
                labels.append(lx if lx == ly or ly is None else (ly if lx is None else None))
                if x == 1 and (lx is None) != (ly is None):
                    labels[-1] = None  # a dynamic axis of size 1 against a static 1: either may grow
            elif x == 1:
                shape.append(y)
                labels.append(ly)
            elif y == 1:
                shape.append(x)
                labels.append(lx)
            else:
                return None
        return shape, labels

    def const_code(self, shape, dtype):
        """Source for a constant tensor of ``shape`` held by the module (its values from the weight seed)."""
        if dtype == "int64":
            return f"flow.randint(-3, 4, {tuple(shape)!r}).to(flow.int64)"
        return f"flow.randn({tuple(shape)!r}, dtype=flow.{dtype})"

    # -- ops ---------------------------------------------------------------------------------------

    UNARY = {
        # op name: (code templates, int64 allowed)
        "relu": (["flow.relu({0})", "{0}.relu()", "flow.nn.functional.relu({0})"], False),
        "sigmoid": (["flow.sigmoid({0})", "{0}.sigmoid()"], False),
        "tanh": (["flow.tanh({0})", "{0}.tanh()"], False),
        "exp": (["flow.exp({0})", "{0}.exp()"], False),
        "log": (["flow.log({0})", "{0}.log()"], False),
        "sqrt": (["flow.sqrt({0})", "{0}.sqrt()"], False),
        "abs": (["flow.abs({0})", "{0}.abs()"], True),
        "neg": (["flow.neg({0})", "-{0}"], True),
        "softplus": (["flow.nn.functional.softplus({0})", "flow.nn.functional.softplus({0}, beta=2.0, threshold=5.0)"], False),
        "gelu": (["flow.nn.functional.gelu({0})"], False),
        "silu": (["flow.nn.functional.silu({0})"], False),
        "elu": (["flow.nn.functional.elu({0}, alpha=1.0)", "flow.nn.functional.elu({0}, alpha=0.5)"], False),
        "leaky_relu": (["flow.nn.functional.leaky_relu({0}, 0.01)", "flow.nn.functional.leaky_relu({0}, 0.3)"], False),
        "hardswish": (["flow.nn.functional.hardswish({0})"], False),
        "hardsigmoid": (["flow.nn.functional.hardsigmoid({0})"], False),
        "erf": (["flow.erf({0})"], False),
        "floor": (["flow.floor({0})"], False),
        "ceil": (["flow.ceil({0})"], False),
        "round": (["flow.round({0})"], False),
        "sign": (["flow.sign({0})"], True),
        "reciprocal": (["flow.reciprocal({0})", "1.0 / {0}"], False),
        "square": (["flow.square({0})", "{0} * {0}"], True),
        "clamp": (["flow.clamp({0}, -1.5, 2.0)", "{0}.clamp(min=0.25)", "flow.clamp({0}, max=0.5)"], True),
        "pow(scalar)": (["{0} ** 2.0", "flow.pow({0}, 3.0)", "{0} ** 0.5", "flow.pow({0}, -1.0)", "2.0 ** {0}"], False),
    }

    def op_unary(self):
        name = self.rng.choice([n for n, (codes, _) in self.UNARY.items() if codes])
        codes, ints = self.UNARY[name]
        vid = self.pick(lambda v: v.floating or (ints and v.dtype == "int64"))
        if vid is None:
            return False
        v = self.values[vid]
        code = self.rng.choice(codes)
        if v.dtype == "int64":
            code = code.replace("-1.5", "-1").replace("2.0", "2").replace("0.25", "0").replace("0.5", "1")
        return self.add(name, [vid], code, Value(v.shape, v.dtype, v.labels))

    BINARY = {
        "broadcast_add": ["{0} + {1}", "flow.add({0}, {1})"],
        "broadcast_sub": ["{0} - {1}", "flow.sub({0}, {1})"],
        "broadcast_mul": ["{0} * {1}", "flow.mul({0}, {1})"],
        "broadcast_div": ["{0} / {1}", "flow.div({0}, {1})"],
        "broadcast_maximum": ["flow.maximum({0}, {1})"],
        "broadcast_minimum": ["flow.minimum({0}, {1})"],
    }
    SCALAR = {
        "scalar_add": ["{0} + {s}", "{s} + {0}"],
        "scalar_sub": ["{0} - {s}", "{s} - {0}"],
        "scalar_mul": ["{0} * {s}"],
        "scalar_div": ["{0} / {s}"],
    }

    def op_binary(self):
        if self.rng.random() < 0.3:
            name = self.rng.choice(list(self.SCALAR))
            vid = self.pick(lambda v: v.floating or name != "scalar_div")
            if vid is None:
                return False
            v = self.values[vid]
            s = self.rng.choice([2.5, -1.5, 0.5, 3.0, 0.0] if v.floating else [2, -1, 3, 0])
            if name == "scalar_div" and s == 0:
                s = 0.25
            code = self.rng.choice(self.SCALAR[name]).replace("{s}", repr(s))
            return self.add(name.replace("scalar_", "") + "(scalar)", [vid], code, Value(v.shape, v.dtype, v.labels))
        name = self.rng.choice(list(self.BINARY))
        vid = self.pick(lambda v: v.floating or name != "broadcast_div")
        if vid is None:
            return False
        other, const_shape, w = self.partner(vid)
        out = self.broadcast(self.values[vid], w)
        if out is None:
            return False
        code = self.rng.choice(self.BINARY[name])
        if other is None:  # a constant held by the module
            init = "{m} = " + self.const_code(const_shape, w.dtype)
            code = code.replace("{1}", "self.m{id}")
            ins, pins = [vid], ()
        else:
            init, ins, pins = None, [vid, other], ()
        if self.rng.random() < 0.5 and other is not None:
            code = code.replace("{0}", "@").replace("{1}", "{0}").replace("@", "{1}")  # operand order
        return self.add(name.replace("broadcast_", ""), ins, code, Value(out[0], self.values[vid].dtype, out[1]), init, pins)

    def op_compare(self):
        ops = {"broadcast_greater": ">", "broadcast_less": "<", "broadcast_equal": "==",
               "broadcast_greater_equal": ">=", "broadcast_not_equal": "!=", "broadcast_less_equal": "<="}
        name = self.rng.choice(list(ops))
        vid = self.pick(lambda v: v.dtype != "bool")
        if vid is None:
            return False
        v = self.values[vid]
        if self.rng.random() < 0.5:
            s = self.rng.choice([0, 1, -1]) if v.dtype == "int64" else self.rng.choice([0.0, 0.5, -1.0])
            return self.add(name.replace("broadcast_", "") + "(scalar)", [vid], f"{{0}} {ops[name]} {s!r}", Value(v.shape, "bool", v.labels))
        other, const_shape, w = self.partner(vid, allow_new=True)
        if other is None:
            return False
        out = self.broadcast(v, w)
        if out is None:
            return False
        return self.add(name.replace("broadcast_", ""), [vid, other], f"{{0}} {ops[name]} {{1}}", Value(out[0], "bool", out[1]))

    def op_where(self):
        vid = self.pick(lambda v: v.dtype != "bool")
        if vid is None:
            return False
        v = self.values[vid]
        conds = [i for i, w in enumerate(self.values) if w.dtype == "bool" and self.broadcast(v, w) and self.broadcast(v, w)[0] == list(v.shape)]
        zero = "0" if v.dtype == "int64" else "0.0"
        if conds and self.rng.random() < 0.7:
            c = self.rng.choice(conds)
            other = self.rng.choice([zero, "-{0}", "{0} * 2"])
            return self.add("where", [c, vid], "flow.where({0}, {1}, " + other.replace("{0}", "{1}") + ")", Value(v.shape, v.dtype, v.labels))
        return self.add("where", [vid], f"flow.where({{0}} > {zero}, {{0}}, {{0}} * 3)", Value(v.shape, v.dtype, v.labels))

    def op_logical(self):
        vid = self.pick(lambda v: v.dtype == "bool")
        if vid is None:
            return False
        v = self.values[vid]
        if self.rng.random() < 0.5:
            return self.add("logical_not", [vid], "flow.logical_not({0})", Value(v.shape, "bool", v.labels))
        code, dtype = self.rng.choice([("{0}.float()", "float32"), ("{0}.to(flow.int64)", "int64"), ("{0}.to(flow.float64)", "float64")])
        return self.add("cast", [vid], code, Value(v.shape, dtype, v.labels))

    def op_cast(self):
        vid = self.pick(lambda v: v.dtype in ("float32", "float64", "int64"))
        if vid is None:
            return False
        v = self.values[vid]
        # Floating to integer casts of NaN, infinities and out-of-range values are undefined in C and
        # differ between runtimes for no fault of a converter, so only widening or int-to-float casts.
        targets = {"float32": [("{0}.double()", "float64"), ("{0}.to(flow.float64)", "float64")],
                   "float64": [("{0}.float()", "float32"), ("{0}.to(flow.float32)", "float32")],
                   "int64": [("{0}.float()", "float32"), ("{0}.to(flow.float64)", "float64")]}[v.dtype]
        code, dtype = self.rng.choice(targets)
        return self.add("cast", [vid], code, Value(v.shape, dtype, v.labels))

    def op_reduce(self):
        name = self.rng.choice(["sum", "mean", "max", "min", "prod"])
        vid = self.pick(lambda v: v.rank >= 1 and (v.floating or name in ("sum", "max", "min")))
        if vid is None:
            return False
        v = self.values[vid]
        method = name
        keep = self.rng.random() < 0.5
        if method in ("max", "min", "prod") or self.rng.random() < 0.5:
            axes = [self.axis(v)]
        else:
            axes = sorted({self.axis(v) for _ in range(self.rng.randint(1, v.rank))}, key=lambda a: a % v.rank)
            if len({a % v.rank for a in axes}) != len(axes):
                return False
        if method in ("max", "min"):
            code = f"{{0}}.{method}(dim={axes[0]}, keepdim={keep})[0]"
            if self.rng.random() < 0.2:
                code, axes, keep = f"{{0}}.{method}()", list(range(v.rank)), False
        elif len(axes) == 1 and self.rng.random() < 0.5:
            code = f"flow.{method}({{0}}, dim={axes[0]}, keepdim={keep})" if method != "prod" else f"{{0}}.prod(dim={axes[0]}, keepdim={keep})"
        else:
            code = f"{{0}}.{method}(dim={tuple(axes)!r}, keepdim={keep})" if method != "prod" else f"{{0}}.prod(dim={axes[0]}, keepdim={keep})"
        positive = {a % v.rank for a in axes}
        shape = [1 if i in positive else s for i, s in enumerate(v.shape) if keep or i not in positive]
        labels = [None if i in positive else lab for i, lab in enumerate(v.labels) if keep or i not in positive]
        return self.add(name + ("(dims)" if len(axes) > 1 else ""), [vid], code, Value(shape, v.dtype, labels))

    def op_argmax(self):
        vid = self.pick(lambda v: v.rank >= 1 and v.dtype != "bool")
        if vid is None:
            return False
        v = self.values[vid]
        a = self.axis(v)
        keep = self.rng.random() < 0.5
        shape = [1 if i == a % v.rank else s for i, s in enumerate(v.shape) if keep or i != a % v.rank]
        labels = [None if i == a % v.rank else lab for i, lab in enumerate(v.labels) if keep or i != a % v.rank]
        return self.add("argmax", [vid], f"flow.argmax({{0}}, dim={a}, keepdim={keep})", Value(shape, "int64", labels))

    def op_topk(self):
        vid = self.pick(lambda v: v.rank >= 1 and v.floating)
        if vid is None:
            return False
        v = self.values[vid]
        a = self.axis(v)
        size = v.shape[a]
        k = self.rng.randint(1, min(size, 3))
        which = self.rng.randrange(2)
        largest = self.rng.random() < 0.7
        shape = list(v.shape)
        shape[a] = k
        labels = list(v.labels)
        labels[a] = None
        code = f"flow.topk({{0}}, {k}, dim={a}, largest={largest})[{which}]"
        return self.add("topk", [vid], code, Value(shape, v.dtype if which == 0 else "int64", labels))

    def op_softmax(self):
        vid = self.pick(lambda v: v.rank >= 1 and v.floating)
        if vid is None:
            return False
        v = self.values[vid]
        a = self.axis(v)
        name = self.rng.choice(["softmax", "log_softmax"])
        code = self.rng.choice([f"flow.nn.functional.{name}({{0}}, dim={a})", f"flow.{name}({{0}}, dim={a})" if name == "softmax" else f"{{0}}.log_softmax(dim={a})"])
        return self.add(name, [vid], code, Value(v.shape, v.dtype, v.labels))

    def op_cumsum(self):
        vid = self.pick(lambda v: v.rank >= 1 and v.dtype in ("float32", "float64", "int64"))
        if vid is None:
            return False
        v = self.values[vid]
        return self.add("cumsum", [vid], f"flow.cumsum({{0}}, dim={self.axis(v)})", Value(v.shape, v.dtype, v.labels))

    def op_reshape(self):
        vid = self.pick(lambda v: v.rank >= 1)
        if vid is None:
            return False
        v = self.values[vid]
        kind = self.rng.choice(["merge", "merge", "split", "flatten", "view_shape"])
        shape, labels = list(v.shape), list(v.labels)
        if kind == "flatten":
            start = self.rng.randrange(v.rank)
            end = self.rng.randrange(start, v.rank)
            merged = int(np.prod(shape[start:end + 1]))
            label = labels[start] if start == end else ("~" if any(labels[start:end + 1]) else None)
            code = f"flow.flatten({{0}}, {start}, {end})" if self.rng.random() < 0.5 else f"{{0}}.flatten({start - v.rank if self.rng.random() < 0.3 else start}, {end})"
            return self.add("flatten", [vid], code, Value(shape[:start] + [merged] + shape[end + 1:], v.dtype, labels[:start] + [label] + labels[end + 1:]))
        if kind == "merge" and v.rank >= 2:
            i = self.rng.randrange(v.rank - 1)
            new_shape = shape[:i] + [shape[i] * shape[i + 1]] + shape[i + 2:]
            new_labels = labels[:i] + ["~" if labels[i] or labels[i + 1] else None] + labels[i + 2:]
        elif kind == "split":
            i = self.rng.randrange(v.rank)
            f = [d for d in (2, 3) if shape[i] % d == 0 and shape[i] > d]
            if not f or v.rank >= 4:
                return False
            d = self.rng.choice(f)
            new_shape = shape[:i] + [d, shape[i] // d] + shape[i + 1:]
            new_labels = labels[:i] + [None, None] + labels[i + 1:]
            self.pinned.add(labels[i])
        else:
            new_shape, new_labels = shape[::-1] if v.rank == 2 and self.rng.random() < 0.5 else [v.size], [None]
            if len(new_shape) == 2:
                new_labels = [None, None]
        # The target is written with literal sizes, one axis -1: the dynamic one when there is one.
        # Axes written as literals bake their sizes in; with ``x.shape[i]`` the size follows the input.
        target = [str(s) for s in new_shape]
        dyn = [k for k, lab in enumerate(new_labels) if lab]
        minus = self.rng.choice(dyn) if dyn else self.rng.randrange(len(new_shape))
        target[minus] = "-1"
        for k, lab in enumerate(new_labels):
            if lab and k != minus and lab in self.symbols and v.labels.count(lab) and self.rng.random() < 0.7:
                target[k] = f"{{0}}.shape[{v.labels.index(lab)}]"
        for k, lab in enumerate(labels):
            if lab and lab in self.symbols and not any(t.endswith(f".shape[{k}]") for t in target) and len(dyn) > 1:
                self.pinned.add(lab)
        if kind == "view_shape":
            for lab in labels:
                if lab and len(dyn) == 0:
                    pass  # flattened into one axis written -1: follows every size
        if new_labels.count("~") + sum(1 for lab in new_labels if lab and lab != "~") > 1:
            for lab in labels:
                if lab and lab != "~":
                    self.pinned.add(lab)
        method = self.rng.choice(["reshape", "view", "flow.reshape"])
        args = ", ".join(target)
        code = f"flow.reshape({{0}}, ({args},))" if method == "flow.reshape" else f"{{0}}.{method}({args})"
        return self.add(method.replace("flow.", ""), [vid], code, Value(new_shape, v.dtype, new_labels))

    def op_permute(self):
        vid = self.pick(lambda v: v.rank >= 2)
        if vid is None:
            return False
        v = self.values[vid]
        if self.rng.random() < 0.5:
            perm = list(range(v.rank))
            self.rng.shuffle(perm)
            code = f"{{0}}.permute({', '.join(map(str, perm))})" if self.rng.random() < 0.5 else f"flow.permute({{0}}, {tuple(perm)!r})"
            name = "permute"
        else:
            a, b = self.rng.sample(range(v.rank), 2)
            perm = list(range(v.rank))
            perm[a], perm[b] = perm[b], perm[a]
            code = f"{{0}}.transpose({a - v.rank if self.rng.random() < 0.4 else a}, {b})"
            name = "transpose"
        return self.add(name, [vid], code, Value([v.shape[p] for p in perm], v.dtype, [v.labels[p] for p in perm]))

    def op_squeeze(self):
        vid = self.pick(lambda v: 1 in v.shape or v.rank < 4)
        if vid is None:
            return False
        v = self.values[vid]
        ones = [i for i, s in enumerate(v.shape) if s == 1]
        if ones and self.rng.random() < 0.6:
            i = self.rng.choice(ones)
            d = i - v.rank if self.rng.random() < 0.5 else i
            if v.labels[i]:
                self.pinned.add(v.labels[i])  # squeeze of a size that may change: not made dynamic
            return self.add("squeeze", [vid], f"{{0}}.squeeze({d})", Value(v.shape[:i] + v.shape[i + 1:], v.dtype, v.labels[:i] + v.labels[i + 1:]))
        if v.rank >= 4:
            return False
        i = self.rng.randrange(v.rank + 1)
        d = i - v.rank - 1 if self.rng.random() < 0.5 else i
        code = f"{{0}}.unsqueeze({d})" if self.rng.random() < 0.5 else f"flow.unsqueeze({{0}}, {d})"
        return self.add("unsqueeze", [vid], code, Value(v.shape[:i] + (1,) + v.shape[i:], v.dtype, v.labels[:i] + (None,) + v.labels[i:]))

    def op_expand(self):
        vid = self.pick(lambda v: 1 in v.shape)
        if vid is None:
            return False
        v = self.values[vid]
        target, shape = [], []
        for s, lab in zip(v.shape, v.labels):
            if s == 1 and lab is None and self.rng.random() < 0.7:
                n = self.rng.choice([2, 3, 5])
                target.append(str(n))
                shape.append(n)
            else:
                target.append("-1")
                shape.append(s)
        extra = self.rng.choice([0, 0, 1]) if v.rank < 4 else 0
        target = ["2"] * extra + target
        shape = [2] * extra + shape
        return self.add("expand", [vid], f"{{0}}.expand({', '.join(target)})", Value(shape, v.dtype, (None,) * extra + v.labels))

    def op_concat(self):
        vid = self.pick(lambda v: v.rank >= 1)
        if vid is None:
            return False
        v = self.values[vid]
        stack = self.rng.random() < 0.3
        a = self.rng.randrange(v.rank + stack)
        same = [i for i, w in enumerate(self.values) if w.shape == v.shape and w.labels == v.labels and w.dtype == v.dtype]
        if stack or self.rng.random() < 0.5:
            other = self.rng.choice(same)
            shape = list(v.shape)
            if stack:
                shape.insert(a, 2)
                labels = list(v.labels[:a]) + [None] + list(v.labels[a:])
            else:
                shape[a] *= 2
                labels = list(v.labels)
                labels[a] = "~" if labels[a] else None
        else:
            if len(self.inputs) >= 3:
                return False
            dims = [lab if lab in self.symbols and self.symbols[lab] == s else None for lab, s in zip(v.labels, v.shape)]
            if None in dims[:a] + dims[a + 1:]:
                return False
            dims[a] = self.new_symbol()
            other = self.new_input(dims, v.dtype)
            shape = list(v.shape)
            shape[a] += self.symbols[dims[a]]
            labels = list(v.labels)
            labels[a] = "~"
        d = a - (v.rank + stack) if self.rng.random() < 0.5 else a
        code = f"flow.stack([{{0}}, {{1}}], dim={d})" if stack else self.rng.choice([f"flow.cat([{{0}}, {{1}}], dim={d})", f"flow.concat([{{0}}, {{1}}], dim={d})"])
        return self.add("stack" if stack else "cat", [vid, other], code, Value(shape, v.dtype, labels))

    def op_slice(self):
        vid = self.pick(lambda v: v.rank >= 1 and max(v.shape) >= 2)
        if vid is None:
            return False
        v = self.values[vid]
        a = self.rng.choice([i for i, s in enumerate(v.shape) if s >= 2])
        n = v.shape[a]
        kind = self.rng.choice(["slice", "slice", "narrow", "split", "chunk"])
        labels = list(v.labels)
        shape = list(v.shape)
        if kind == "slice":
            start = self.rng.choice([None, 0, 1, -1, -2])
            stop = self.rng.choice([None, None, -1, n - 1, 2])
            step = self.rng.choice([None, 1, 2, 3])
            length = len(range(n)[slice(start, stop, step)])
            if length == 0:
                return False
            text = ":".join("" if p is None else str(p) for p in (start, stop, step))
            code = "{0}[" + ", ".join([":"] * a + [text]) + "]"
            if labels[a] and (stop not in (None, -1) or start not in (None, 0, 1, -1)):
                self.pinned.add(labels[a])
            if labels[a] and (start, stop, step) != (None, None, None):
                labels[a] = "~" if step in (None, 1) else None
                self.pinned.add(v.labels[a])  # strided slices of a dynamic axis: sizes not checked
            shape[a] = length
            return self.add("slice", [vid], code, Value(shape, v.dtype, labels))
        if kind == "narrow":
            length = self.rng.randint(1, n - 1)
            start = self.rng.randint(0, n - length)
            shape[a] = length
            labels[a] = None
            self.pinned.add(v.labels[a])
            return self.add("narrow", [vid], f"flow.narrow({{0}}, {self.rng.choice([a, a - v.rank])}, {start}, {length})", Value(shape, v.dtype, labels))
        if kind == "split":
            size = self.rng.randint(1, n - 1)
            parts = [size] * (n // size) + ([n % size] if n % size else [])
            k = self.rng.randrange(len(parts))
            shape[a] = parts[k]
            labels[a] = None
            self.pinned.add(v.labels[a])
            return self.add("split", [vid], f"flow.split({{0}}, {size}, dim={a})[{k}]", Value(shape, v.dtype, labels))
        chunks = self.rng.randint(2, min(n, 3))
        size = -(-n // chunks)
        parts = [size] * (n // size) + ([n % size] if n % size else [])
        k = self.rng.randrange(len(parts))
        shape[a] = parts[k]
        labels[a] = None
        self.pinned.add(v.labels[a])
        return self.add("chunk", [vid], f"flow.chunk({{0}}, {chunks}, dim={a - v.rank})[{k}]", Value(shape, v.dtype, labels))

    def op_matmul(self):
        vid = self.pick(lambda v: v.rank >= 1 and v.floating)
        if vid is None:
            return False
        v = self.values[vid]
        k = v.shape[-1]
        n = self.rng.choice([1, 2, 3, 5])
        kind = self.rng.choice(["linear", "linear", "weight", "batch"] if v.rank >= 2 else ["linear", "weight"])
        pins = [v.labels[-1]]
        if kind == "linear":
            init = f"{{m}} = flow.nn.Linear({k}, {n}, bias={self.rng.random() < 0.7})" + (".double()" if v.dtype == "float64" else "")
            return self.add("linear", [vid], "self.m{id}({0})", Value(v.shape[:-1] + (n,), v.dtype, v.labels[:-1] + (None,)), init, pins)
        if kind == "weight":
            init = "{m} = flow.nn.Parameter(" + self.const_code((k, n), v.dtype) + ")"
            shape = v.shape[:-1] + (n,)
            return self.add("matmul", [vid], self.rng.choice(["flow.matmul({0}, self.m{id})", "{0} @ self.m{id}"]), Value(shape, v.dtype, v.labels[:-1] + (None,)), init, pins)
        if len(self.inputs) >= 3 or any(lab is None or lab not in self.symbols for lab in v.labels[:-2]):
            return False
        dims = list(v.labels[:-2]) + [v.labels[-1] if v.labels[-1] in self.symbols else None, self.new_symbol(n)]
        if dims[-2] is None:
            return False
        other = self.new_input(dims, v.dtype)
        return self.add("matmul", [vid, other], "flow.matmul({0}, {1})", Value(v.shape[:-1] + (n,), v.dtype, v.labels[:-1] + (dims[-1],)))

    def op_conv(self):
        vid = self.pick(lambda v: v.rank == 4 and v.floating)
        if vid is None:
            return False
        v = self.values[vid]
        c = v.shape[1]
        kernel = self.rng.choice([1, 2, 3])
        stride = self.rng.choice([1, 1, 2])
        padding = self.rng.choice([0, 1]) if kernel > 1 else 0
        dilation = self.rng.choice([1, 1, 2])
        groups = c if c > 1 and self.rng.random() < 0.3 else 1
        out_c = groups * self.rng.choice([1, 2]) if groups > 1 else self.rng.choice([1, 2, 3, 4])
        span = dilation * (kernel - 1) + 1
        hw = [(s + 2 * padding - span) // stride + 1 for s in v.shape[2:]]
        if min(hw) < 1:
            return False
        init = (f"{{m}} = flow.nn.Conv2d({c}, {out_c}, {kernel}, stride={stride}, padding={padding}, dilation={dilation}, groups={groups}, bias={self.rng.random() < 0.7})"
                + (".double()" if v.dtype == "float64" else ""))
        return self.add("conv2d", [vid], "self.m{id}({0})", Value((v.shape[0], out_c, *hw), v.dtype, (v.labels[0], None, v.labels[2] if stride == 1 and span == 1 + 2 * padding else "~", v.labels[3] if stride == 1 and span == 1 + 2 * padding else "~")), init, [v.labels[1]])

    def op_pool(self):
        vid = self.pick(lambda v: v.rank == 4 and v.floating)
        if vid is None:
            return False
        v = self.values[vid]
        kind = self.rng.choice(["max_pool_2d", "avg_pool_2d"])
        kernel = self.rng.choice([1, 2, 3])
        stride = self.rng.choice([1, 2, kernel])
        padding = self.rng.randint(0, kernel // 2)
        ceil = self.rng.random() < 0.5
        hw = []
        for s in v.shape[2:]:
            span = s + 2 * padding - kernel
            if span < 0:
                return False
            o = (-(-span // stride) if ceil else span // stride) + 1
            if ceil and (o - 1) * stride >= s + padding:
                o -= 1  # the last window must start inside the input or the left padding
            hw.append(o)
        if kind == "max_pool_2d":
            code = f"flow.nn.functional.max_pool2d({{0}}, {kernel}, stride={stride}, padding={padding}, ceil_mode={ceil})"
        else:
            include = self.rng.random() < 0.5
            code = f"flow.nn.functional.avg_pool2d({{0}}, {kernel}, stride={stride}, padding={padding}, ceil_mode={ceil}, count_include_pad={include})"
        return self.add(kind.replace("_pool_2d", "_pool2d"), [vid], code, Value((*v.shape[:2], *hw), v.dtype, v.labels[:2] + ("~", "~")))

    def op_norm(self):
        kind = self.rng.choice(["batch_norm", "layer_norm"])
        if kind == "batch_norm":
            vid = self.pick(lambda v: v.rank in (2, 3, 4) and v.floating)
            if vid is None:
                return False
            v = self.values[vid]
            c = v.shape[1]
            cls = {2: "BatchNorm1d", 3: "BatchNorm1d", 4: "BatchNorm2d"}[v.rank]
            init = (f"{{m}} = flow.nn.{cls}({c}, affine={self.rng.random() < 0.8})" + (".double()" if v.dtype == "float64" else "") + "\n"
                    "flow.nn.init.normal_({m}.running_mean)\nflow.nn.init.uniform_({m}.running_var, 0.5, 2.0)")
            return self.add("batch_norm", [vid], "self.m{id}({0})", Value(v.shape, v.dtype, v.labels), init, [v.labels[1]])
        vid = self.pick(lambda v: v.rank >= 2 and v.floating)  # OneFlow needs more axes than it normalises
        if vid is None:
            return False
        v = self.values[vid]
        k = self.rng.randint(1, min(2, v.rank - 1))
        shape = v.shape[-k:]
        init = f"{{m}} = flow.nn.LayerNorm({list(shape)!r}, elementwise_affine={self.rng.random() < 0.7})" + (".double()" if v.dtype == "float64" else "")
        return self.add("layer_norm", [vid], "self.m{id}({0})", Value(v.shape, v.dtype, v.labels), init, v.labels[-k:])

    def op_interpolate(self):
        vid = self.pick(lambda v: v.rank == 4 and v.floating)
        if vid is None:
            return False
        v = self.values[vid]
        mode = self.rng.choice(["nearest", "bilinear"])
        align = "" if mode == "nearest" else f", align_corners={self.rng.random() < 0.5}"
        if self.rng.random() < 0.6:
            f = self.rng.choice([2, 3])
            code = f"flow.nn.functional.interpolate({{0}}, scale_factor={float(f)}, mode={mode!r}{align})"
            shape = (*v.shape[:2], v.shape[2] * f, v.shape[3] * f)
            labels = v.labels[:2] + ("~", "~")
        else:
            size = (self.rng.choice([2, 3, 5, 6]), self.rng.choice([2, 3, 5, 6]))
            code = f"flow.nn.functional.interpolate({{0}}, size={size!r}, mode={mode!r}{align})"
            shape = (*v.shape[:2], *size)
            labels = v.labels[:2] + (None, None)
        return self.add(f"interpolate({mode})", [vid], code, Value(shape, v.dtype, labels))

    def op_inplace(self):
        vid = self.pick(lambda v: v.dtype in ("float32", "float64"))
        if vid is None:
            return False
        v = self.values[vid]
        kind = self.rng.choice(["relu", "add_", "mul_", "clamp_"])
        if kind == "relu":
            return self.add("relu(inplace)", [vid], "flow.nn.functional.relu({0}, inplace=True)", Value(v.shape, v.dtype, v.labels))
        if kind == "add_":
            same = [i for i, w in enumerate(self.values) if w.shape == v.shape and w.labels == v.labels and w.dtype == v.dtype and i != vid]
            if same and self.rng.random() < 0.5:
                return self.add("add_", [vid, self.rng.choice(same)], "{0}.add_({1})", Value(v.shape, v.dtype, v.labels))
            return self.add("add_", [vid], "{0}.add_(1.5)", Value(v.shape, v.dtype, v.labels))
        if kind == "mul_":
            return self.add("mul_", [vid], "{0}.mul_(-2.0)", Value(v.shape, v.dtype, v.labels))
        return self.add("clamp_", [vid], "{0}.clamp_(-1.0, 1.0)", Value(v.shape, v.dtype, v.labels))

    OPS = {  # family -> weight
        "unary": 22, "binary": 16, "compare": 4, "where": 3, "logical": 3, "cast": 3, "reduce": 9,
        "argmax": 2, "topk": 2, "softmax": 5, "cumsum": 2, "reshape": 8, "permute": 5, "squeeze": 5,
        "expand": 3, "concat": 4, "slice": 6, "matmul": 5, "conv": 4, "pool": 4, "norm": 4,
        "interpolate": 3, "inplace": 4,
    }

    def generate(self, target_ops: int):
        self.fresh_input()
        tries = 0
        while len(self.nodes) < target_ops and tries < 200:
            tries += 1
            family = self.rng.choices(list(self.OPS), list(self.OPS.values()))[0]
            before = (len(self.symbols), len(self.inputs), len(self.values), set(self.pinned))
            try:
                added = getattr(self, "op_" + family)()
            except (ValueError, IndexError):
                added = False
            if not added:  # undo symbols and inputs an op created before giving up
                symbols, inputs, values, pinned = before
                for name in list(self.symbols)[symbols:]:
                    del self.symbols[name]
                del self.inputs[inputs:]
                del self.values[values:]
                del self.ids[values:]
                self.pinned = pinned


def _value_index(ids):
    """Value id layout of a program: inputs first, then nodes; maps generator order to program ids."""
    inputs = [k for k, (kind, _) in enumerate(ids) if kind == "input"]
    nodes = [k for k, (kind, _) in enumerate(ids) if kind == "node"]
    return {k: i for i, k in enumerate(inputs + nodes)}


def generate(seed: int, index: int, max_opset: int = 17) -> dict:
    """The program of ``(seed, index)``: the same pair gives the same program on every machine."""
    rng = random.Random(f"flow2onnx-fuzz:{seed}:{index}")
    g = Generator(rng, max_opset)
    g.generate(rng.randint(2, 6))
    remap = _value_index(g.ids)
    nodes = [dict(node, ins=[remap[i] for i in node["ins"]]) for node in g.nodes]
    # Dynamic axes: about half the programs, a non-empty set of the symbols no op baked in.
    free = [s for s in g.symbols if s not in g.pinned and any(s in inp["dims"] for inp in g.inputs)]
    dynamic, dynamic_batch = [], False
    if free and rng.random() < 0.55:
        dynamic = sorted(rng.sample(free, rng.randint(1, min(2, len(free)))))
        if rng.random() < 0.1:  # sometimes a symbol an op baked in too: a refusal or a skip is expected
            dynamic = sorted(set(dynamic) | {rng.choice(list(g.symbols))})
        first = g.inputs[0]["dims"][0] if g.inputs[0]["dims"] else None
        if dynamic == [first] and all(inp["dims"] and inp["dims"][0] == first for inp in g.inputs) and rng.random() < 0.5:
            dynamic_batch = True
    opset = rng.choice([11, 12, 13, 14, 15, 16, 17, max_opset])
    return {
        "seed": seed, "index": index, "symbols": dict(g.symbols), "inputs": g.inputs, "nodes": nodes,
        "opset": opset, "dynamic": dynamic, "dynamic_batch": dynamic_batch, "pinned": sorted(p for p in g.pinned if p in g.symbols),
        "weight_seed": rng.randrange(2**31), "input_seed": rng.randrange(2**31),
    }


# --------------------------------------------------------------------------------------------------
# Source of a program
# --------------------------------------------------------------------------------------------------


def outputs_of(program) -> list[int]:
    """The value ids a program returns: node values that no node consumes (all nodes when a cycle of
    aliases leaves none)."""
    k = len(program["inputs"])
    used = {i for node in program["nodes"] for i in node["ins"]}
    sinks = [k + j for j in range(len(program["nodes"])) if k + j not in used]
    return sinks or [k + len(program["nodes"]) - 1]


def used_inputs(program) -> list[int]:
    used = {i for node in program["nodes"] for i in node["ins"]}
    return [i for i in range(len(program["inputs"])) if i in used]


def input_names(program) -> list[str]:
    used = used_inputs(program)
    return ["input"] if len(used) == 1 else [f"input_{n}" for n in range(len(used))]


def input_shape(program, i, sizes=None) -> tuple:
    sizes = sizes or program["symbols"]
    return tuple(sizes[d] if isinstance(d, str) else 1 for d in program["inputs"][i]["dims"])


def module_source(program) -> str:
    """``class M(flow.nn.Module)`` of a program, as Python source."""
    k = len(program["inputs"])
    var = {i: f"x{i}" for i in range(k)}
    var.update({k + j: f"v{k + j}" for j in range(len(program["nodes"]))})
    init, body = [], []
    for j, node in enumerate(program["nodes"]):
        vid = k + j
        if node["init"]:
            for line in node["init"].split("\n"):
                init.append(line.replace("{m}", f"self.m{vid}"))
        code = node["code"].replace("self.m{id}", f"self.m{vid}")
        code = code.format(*[var[i] for i in node["ins"]])
        body.append(f"{var[vid]} = {code}")
    outs = outputs_of(program)
    params = ", ".join(var[i] for i in used_inputs(program))
    lines = ["class M(flow.nn.Module):", "    def __init__(self):", "        super().__init__()"]
    lines += [f"        {line}" for line in init]
    lines += [f"    def forward(self, {params}):"] + [f"        {line}" for line in body]
    lines.append(f"        return {', '.join(var[i] for i in outs)}")
    return "\n".join(lines) + "\n"


def input_code(program, i, name) -> str:
    """Source for example input ``i``: the same arrays :func:`example_arrays` makes."""
    inp = program["inputs"][i]
    shape = input_shape(program, i)
    seed = program["input_seed"] + i
    if inp["dtype"] == "int64":
        return f"{name} = np.asarray(np.random.default_rng({seed}).integers(-4, 5, {shape!r}), dtype=np.int64)"
    return f"{name} = np.asarray(np.random.default_rng({seed}).standard_normal({shape!r}), dtype=np.{inp['dtype']})"


def example_arrays(program) -> list:
    arrays = []
    for i in used_inputs(program):
        namespace = {"np": np}
        exec(input_code(program, i, "a"), namespace)
        arrays.append(namespace["a"])
    return arrays


def export_kwargs(program) -> dict:
    kwargs = {"opset": program["opset"]}
    if program["dynamic_batch"]:
        kwargs["dynamic_batch"] = True
    elif program["dynamic"]:
        axes = {}
        for name, i in zip(input_names(program), used_inputs(program)):
            dims = {a: d for a, d in enumerate(program["inputs"][i]["dims"]) if d in program["dynamic"]}
            if dims:
                axes[name] = dims
        if axes:
            kwargs["dynamic_axes"] = axes
    return kwargs


def _literal(array) -> str:
    """``array`` as exact Python source (float32 values are exact in float64 reprs)."""
    def item(x):
        if isinstance(x, float):
            return "float('nan')" if math.isnan(x) else ("float('inf')" if x == math.inf else ("float('-inf')" if x == -math.inf else repr(x)))
        return repr(x)
    flat = ", ".join(item(x) for x in array.reshape(-1).tolist())
    return f"np.array([{flat}]).astype(np.{array.dtype}).reshape({array.shape!r})"


def repro_source(program, bad_inputs=None) -> str:
    """A standalone script: the module, its example inputs, the export call, and the input it fails on."""
    used = used_inputs(program)
    names = [f"x{i}" for i in used]
    lines = ["import numpy as np", "import onnxruntime as ort", "import flow2onnx",
             "from flow2onnx._oneflow import import_oneflow", "", "flow = import_oneflow()", "", ""]
    lines.append(module_source(program))
    lines.append("")
    lines.append(f"flow.manual_seed({program['weight_seed']})")
    lines.append("model = M().eval()")
    lines += [input_code(program, i, n) for i, n in zip(used, names)]
    kwargs = ", ".join(f"{k}={v!r}" for k, v in export_kwargs(program).items())
    lines.append(f"flow2onnx.export(model, [{', '.join(f'flow.tensor({n})' for n in names)}], \"repro.onnx\", {kwargs}, verify=False)")
    if bad_inputs is not None:
        lines.append("# the input on which ONNX Runtime and OneFlow differ")
        lines += [f"{n} = {_literal(a)}" for n, a in zip(names, bad_inputs)]
    feed = ", ".join(f"{k!r}: {n}" for k, n in zip(input_names(program), names))
    lines.append("session = ort.InferenceSession(\"repro.onnx\", providers=[\"CPUExecutionProvider\"])")
    lines.append(f"print(\"onnx   \", session.run(None, {{{feed}}}))")
    lines.append(f"print(\"oneflow\", model({', '.join(f'flow.tensor({n})' for n in names)}))")
    return "\n".join(lines) + "\n"


def ops_of(program) -> list[str]:
    return [node["op"] for node in program["nodes"]]


# --------------------------------------------------------------------------------------------------
# Running a program (worker side: imports OneFlow)
# --------------------------------------------------------------------------------------------------


def compare(onnx, ref, edges: bool = False, from_indices: bool = False) -> str | None:
    """None when ``onnx`` matches ``ref`` (OneFlow) under flow2onnx's comparison rule (at edge values,
    its rule for them), else what differs."""
    if onnx.shape != ref.shape:
        return f"shape {list(onnx.shape)} != oneflow {list(ref.shape)}"
    if onnx.dtype != ref.dtype:
        return f"dtype {onnx.dtype} != oneflow {ref.dtype}"
    result = compare_output("output", ref, onnx, edges=edges, from_indices=from_indices)
    if result.passed:
        return None
    index, want, got = result.outliers[0]
    bound = result.atol + result.rtol * abs(want) if math.isfinite(want) else 0.0
    return (f"{round(result.mismatch_fraction * ref.size)}/{ref.size} elements differ, the worst at {list(index)}: "
            f"onnx {got!r}, oneflow {want!r} (bound {bound:.3g})")


def edge_array(rng, shape, dtype, mixed):
    """An array of ``shape`` holding edge values (all of them, or mixed with ordinary ones)."""
    pool = {"float32": EDGE_FLOAT32, "float64": EDGE_FLOAT64, "int64": EDGE_INT64}[dtype]
    values = np.asarray(np.array(pool, dtype=dtype)[rng.integers(0, len(pool), shape)])
    if mixed:
        ordinary = random_array(rng, shape, dtype)
        values = np.where(rng.random(shape) < 0.5, values, ordinary)
    return np.asarray(values, dtype=dtype)


#: OneFlow op types that derive integers from floats (indices, casts): at edge values their ties and
#: NaN are each runtime's choice, so a program holding one has its edge outputs left uncompared, as
#: verification leaves the outputs computed from them (here per program: the fuzzer sees op types).
INDEX_OPS = frozenset({"top_k", "arg_sort", "argmax", "argmin", "cast", "median_with_indices", "grid_sample"})


def finite_edges(array):
    """An edge array for a program that sums or selects, held to what verification promises there:
    its finite edge values (``edge_values(dtype, finite=True)``) reach ``log(max) + 0.5`` in
    magnitude and hold no NaN or infinity. So NaN becomes 0.5, and every magnitude above that
    largest finite edge (1e30, the largest floats, ±inf) becomes it, with its sign; the tiny and
    subnormal values stay, as verification draws them too. Deterministic, so that a program's
    random stream is unchanged."""
    if array.dtype.kind != "f":
        return array
    largest = float(np.abs(verification_edge_values(array.dtype, finite=True)).max())
    out = np.where(np.isnan(array), 0.5, array)
    return np.where(np.abs(out) > largest, np.sign(out) * largest, out).astype(array.dtype)


def edge_values(arrays) -> list[str]:
    """The distinct values left in simplified inputs besides the benign fill (0.5, or 1 for integers)."""
    seen = {}
    for a in arrays:
        fill = 1 if a.dtype.kind in "iu" else 0.5
        for x in a.reshape(-1).tolist():
            if x != fill:
                seen.setdefault(repr(x) if not (isinstance(x, float) and math.copysign(1.0, x) < 0 and x == 0) else "-0.0", None)
    return list(seen)


def random_array(rng, shape, dtype):
    if dtype == "int64":
        return np.asarray(rng.integers(-6, 7, shape), dtype=np.int64)
    return np.asarray(rng.standard_normal(shape) * rng.choice([0.5, 1.0, 3.0]), dtype=dtype)  # 0-d stays an array


def other_sizes(n: int) -> list[int]:
    """Sizes of a dynamic axis to try besides the example's ``n``: 1, an odd size, a far size."""
    odd = n + 2 if n % 2 else n + 1
    return [s for s in dict.fromkeys([1, odd, 2 * n + 3, max(1, n - 1)]) if s != n]


def trials(program):
    """Fresh inputs to compare on: ``(kind, arrays)``, kinds ``random``, ``edge``, ``size a=5``."""
    rng = np.random.default_rng(program["input_seed"] ^ 0x5EED)
    used = used_inputs(program)
    dtypes = [program["inputs"][i]["dtype"] for i in used]
    shapes = [input_shape(program, i) for i in used]
    out = [("example", example_arrays(program))]
    for _ in range(2):
        out.append(("random", [random_array(rng, s, d) for s, d in zip(shapes, dtypes)]))
    dynamic = program["dynamic"] or ([program["inputs"][used[0]]["dims"][0]] if program["dynamic_batch"] else [])
    for sym in dynamic:
        for n in other_sizes(program["symbols"][sym]):
            sizes = dict(program["symbols"], **{sym: n})
            arrays = [random_array(rng, input_shape(program, i, sizes), d) for i, d in zip(used, dtypes)]
            out.append((f"size {sym}={n}", arrays))
    if len(dynamic) > 1:
        sizes = dict(program["symbols"], **{s: other_sizes(program["symbols"][s])[1] for s in dynamic})
        out.append(("size " + ",".join(f"{s}={sizes[s]}" for s in dynamic),
                    [random_array(rng, input_shape(program, i, sizes), d) for i, d in zip(used, dtypes)]))
    # Edge values last: their differences (NaN propagation above all) would hide the others.
    for mixed in (False, True, True):
        out.append(("edge", [edge_array(rng, s, d, mixed) for s, d in zip(shapes, dtypes)]))
    return out


class Runner:
    """Runs programs in this process: exports them and compares ONNX Runtime with eager OneFlow."""

    def __init__(self):
        import flow2onnx
        import onnxruntime

        from flow2onnx._oneflow import import_oneflow

        from flow2onnx.exporter.plan.axes import ELEMENTWISE

        self.flow2onnx = flow2onnx
        self.elementwise = ELEMENTWISE
        self.ort = onnxruntime
        self.flow = import_oneflow()
        self.folder = tempfile.mkdtemp(prefix="flow2onnx-fuzz-")
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = 1
        self.session_options = options

    def eager(self, model, arrays):
        """OneFlow's outputs as numpy arrays (inputs copied: in-place ops must not change them)."""
        flow = self.flow
        with flow.no_grad():
            result = model(*[flow.tensor(a.copy()) for a in arrays])
        result = result if isinstance(result, tuple) else (result,)
        return [r.numpy() for r in result]

    def run(self, program: dict) -> dict:
        """The outcome of one program: ``{"outcome", "detail", "kind", "bad_inputs"}``."""
        flow = self.flow
        namespace = {"flow": flow, "np": np}
        try:
            exec(module_source(program), namespace)
            flow.manual_seed(program["weight_seed"])
            model = namespace["M"]().eval()
            example = example_arrays(program)
            phase("eager OneFlow on the example inputs")
            self.eager(model, example)
        except Exception as error:  # the program is invalid for OneFlow: not a finding
            return {"outcome": "oneflow-error", "detail": _first_line(error)}
        path = os.path.join(self.folder, "model.onnx")
        if os.path.exists(path):
            os.remove(path)
        try:
            flow.manual_seed(program["weight_seed"])
            # Without verification, unless a recheck asks what verification makes of a finding.
            verify = bool(program.get("verify"))
            phase("export")
            exported = self.flow2onnx.export(model, [flow.tensor(a) for a in example], path, verify=verify, **export_kwargs(program))
        except self.flow2onnx.Flow2OnnxError as error:
            return {"outcome": "refused", "detail": f"{type(error).__name__}: {_first_line(error)}"}
        except Exception as error:
            text = f"{type(error).__name__}: {_first_line(error)}"
            if _oneflow_compile_error(error):
                return {"outcome": "oneflow-error", "detail": "graph compile: " + text}
            return {"outcome": "crash", "detail": "export raised " + text, "trace": traceback.format_exc(limit=-4)}
        try:
            session = self.ort.InferenceSession(path, self.session_options, providers=["CPUExecutionProvider"])
        except Exception as error:
            return {"outcome": "crash", "detail": f"ONNX Runtime cannot load the file: {_first_line(error)}"}
        names = [i.name for i in session.get_inputs()]
        declared = [o for o in session.get_outputs()]
        # Edge values as verification judges them: NaN, ±inf and the largest floats only where every
        # op is elementwise, and outputs computed from indices of floats not compared there.
        elementwise = set(exported.op_types) <= self.elementwise
        indices = bool(set(exported.op_types) & INDEX_OPS)
        for kind, arrays in trials(program):
            if kind == "edge" and not elementwise:
                arrays = [finite_edges(a) for a in arrays]
            phase(f"eager OneFlow on {kind} inputs {[list(a.shape) for a in arrays]}")
            try:
                ref = self.eager(model, arrays)
            except Exception:
                continue  # OneFlow itself refuses this input (a size it cannot take): skipped
            try:
                got = session.run(None, dict(zip(names, arrays)))
            except Exception as error:
                outcome = "crash" if kind in ("example", "random", "edge") else "wrong"
                return {"outcome": outcome, "kind": kind, "detail": f"ONNX Runtime raised on {kind} inputs {[list(a.shape) for a in arrays]}: {_first_line(error)}",
                        "bad_inputs": [a.tolist() for a in arrays], "bad_dtypes": [str(a.dtype) for a in arrays]}
            problem = self.differs(got, ref, declared, kind, indices)
            if problem:
                if kind == "edge":  # make every input element that does not matter an ordinary value
                    arrays = self.simplify(model, session, names, arrays, declared, kind, indices)
                    problem = self.differs(session.run(None, dict(zip(names, arrays))), self.eager(model, arrays), declared, kind, indices) or problem
                if kind == "edge":
                    problem += f" [input values that matter: {', '.join(edge_values(arrays)) or 'none'}]"
                return {"outcome": "wrong", "kind": kind, "detail": f"{kind} inputs {[list(a.shape) for a in arrays]}: {problem}",
                        "bad_inputs": [a.tolist() for a in arrays], "bad_dtypes": [str(a.dtype) for a in arrays]}
        return {"outcome": "ok", "detail": ""}

    @staticmethod
    def differs(got, ref, declared, kind, indices=False):
        if len(got) != len(ref):
            return f"{len(got)} outputs, oneflow {len(ref)}"
        for n, (o, r) in enumerate(zip(got, ref)):
            o = np.asarray(o)
            problem = compare(o, r, edges=kind == "edge", from_indices=indices)
            if problem:
                return f"output {n}: {problem}"
            dims = declared[n].shape if declared else None
            if kind == "example" and dims is not None and len(dims) == r.ndim:
                for d, s in zip(dims, r.shape):
                    if isinstance(d, int) and d != s:
                        return f"output {n}: declared shape {dims} but oneflow gives {list(r.shape)}"
        return None

    def simplify(self, model, session, names, arrays, declared, kind, indices=False):
        """Greedily replace input elements by 0.5 (1 for integers) while the outputs still differ."""
        arrays = [a.copy() for a in arrays]
        for a in arrays:
            if a.size > 256:
                continue
            flat = a.reshape(-1)
            for e in range(flat.size):
                old = flat[e].copy()
                flat[e] = 1 if a.dtype.kind in "iu" else 0.5
                if old == flat[e]:
                    continue
                try:
                    still = self.differs(session.run(None, dict(zip(names, arrays))), self.eager(model, arrays), declared, kind, indices)
                except Exception:
                    still = None
                if not still:
                    flat[e] = old
        return arrays


def _first_line(error) -> str:
    text = str(error).strip().splitlines()
    return (text[0] if text else type(error).__name__)[:300]


def _oneflow_compile_error(error) -> bool:
    """Whether an export failed inside OneFlow's own graph compiler (not flow2onnx's doing)."""
    tb = traceback.extract_tb(error.__traceback__)
    return bool(tb) and "oneflow" in tb[-1].filename and "flow2onnx" not in tb[-1].filename and "core" not in tb[-1].filename


def worker_main():
    """``fuzz.py --worker``: read programs as JSON lines on stdin, answer outcomes on the original stdout."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # OneFlow and plugins print to stdout: keep it off the protocol channel
    import warnings

    warnings.simplefilter("ignore")
    runner = Runner()
    channel.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        program = json.loads(line)
        try:
            result = runner.run(program)
        except Exception as error:  # a fault in the fuzzer's own checking, reported rather than hidden
            result = {"outcome": "crash", "detail": f"fuzzer: {type(error).__name__}: {_first_line(error)}", "trace": traceback.format_exc(limit=-4)}
        channel.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # past OneFlow's native teardown, which can abort at exit


# --------------------------------------------------------------------------------------------------
# Worker process (parent side)
# --------------------------------------------------------------------------------------------------


class Worker:
    """One ``fuzz.py --worker`` child; restarted after it dies or hangs."""

    def __init__(self, timeout: float = 90.0):
        self.timeout = timeout
        self.process = None
        self.log = tempfile.NamedTemporaryFile(prefix="flow2onnx-fuzz-worker-", suffix=".log", delete=False)
        self.restarts = 0

    def start(self):
        env = dict(os.environ, OMP_NUM_THREADS="1", ONEFLOW_NUM_THREADS="1")
        self.log.seek(0)
        self.log.truncate()
        self.process = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self.log, env=env, text=True, bufsize=1)
        ready = self._read(120.0)
        if not ready or not ready.get("ready"):
            raise RuntimeError(f"fuzz worker did not start: {self._log_tail()}")

    def _read(self, timeout):
        ready, _, _ = select.select([self.process.stdout], [], [], timeout)
        if not ready:
            return None
        line = self.process.stdout.readline()
        return json.loads(line) if line else None

    def _log_tail(self, n=600):
        self.log.flush()
        with open(self.log.name, errors="replace") as f:
            return f.read()[-n:].strip()

    def run(self, program: dict) -> dict:
        if self.process is None or self.process.poll() is not None:
            self.start()
        self.log.seek(0, 2)
        mark = self.log.tell()
        try:
            self.process.stdin.write(json.dumps(program) + "\n")
            self.process.stdin.flush()
            result = self._read(self.timeout)
        except (BrokenPipeError, OSError):
            result = None
        if result is not None:
            return result
        hung = self.process.poll() is None
        if hung:
            self.process.kill()
        code = self.process.wait()
        self.process = None
        self.restarts += 1
        with open(self.log.name, errors="replace") as f:
            f.seek(mark)
            lines = f.read().strip().splitlines()
        phases = [line.split(PHASE, 1)[1].strip() for line in lines if line.startswith(PHASE)]
        tail = " | ".join(line.strip() for line in lines if not line.startswith(PHASE))[-400:]
        what = f"no answer in {self.timeout:.0f} s (killed)" if hung else f"worker died with {_signal_name(code)}"
        # Where it died: in flow2onnx's export, or in eager OneFlow running a trial input of the
        # fuzzer's own (OneFlow 0.9 aborts on some sizes, a convolution left with nothing, in eager
        # mode): the second is the harness meeting OneFlow, not a finding about the exporter.
        where = phases[-1] if phases else "export"
        result = {"outcome": "abort", "detail": f"{what} in {where}: {tail}" if tail else f"{what} in {where}"}
        if where.startswith("eager OneFlow"):
            result["kind"] = "oneflow"
        return result

    def close(self):
        if self.process is not None and self.process.poll() is None:
            self.process.stdin.close()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
        self.process = None
        os.unlink(self.log.name)


def _signal_name(code):
    import signal

    if code is not None and code < 0:
        try:
            return signal.Signals(-code).name
        except ValueError:
            pass
    return f"exit status {code}"


# --------------------------------------------------------------------------------------------------
# Shrinking
# --------------------------------------------------------------------------------------------------


def without_node(program, j):
    """``program`` with node ``j`` removed: its uses read the node's first input instead."""
    nodes = program["nodes"]
    if len(nodes) <= 1 or not nodes[j]["ins"]:
        return None
    k = len(program["inputs"])
    vid, repl = k + j, nodes[j]["ins"][0]

    def moved(i):  # value ids after node j shift down by one
        return repl if i == vid else (i - 1 if i > vid else i)

    new = [dict(node, ins=[moved(i) for i in node["ins"]]) for n, node in enumerate(nodes) if n != j]
    return dict(program, nodes=new)


def category(result: dict) -> str:
    """A finding's outcome and the kind of input it showed on: ``wrong/edge``, ``wrong/size``, ``crash``."""
    kind = result.get("kind", "")
    kind = "size" if kind.startswith("size") else kind
    return f"{result['outcome']}/{kind}" if kind else result["outcome"]


def same_finding(a: dict, b: dict) -> bool:
    """Whether result ``b`` is the same kind of finding as ``a`` (outcome, and the kind of input)."""
    return category(a) == category(b)


def smaller_programs(program: dict):
    """Candidates for shrinking, in the order tried: ``program`` without one of its ops (the last
    first), then with one dynamic size reduced."""
    for j in reversed(range(len(program["nodes"]))):
        candidate = without_node(program, j)
        if candidate is not None:
            yield candidate
    for sym, n in sorted(program["symbols"].items()):
        for m in sorted({1, 2, 3, n // 2, n - 1}):
            if 1 <= m < n:
                yield dict(program, symbols=dict(program["symbols"], **{sym: m}))


def shrink(worker: Worker, program: dict, result: dict, budget_s: float = 60.0):
    """Remove ops and reduce symbol sizes while the finding holds; returns ``(program, result, tries)``.

    After each step that keeps the finding, the candidates of the smaller program are tried from the start.
    """
    started = time.monotonic()
    tries = 0
    progress = True
    while progress:
        progress = False
        for candidate in smaller_programs(program):
            if time.monotonic() - started > budget_s:
                return program, result, tries
            tries += 1
            r = worker.run(candidate)
            if same_finding(result, r):
                program, result, progress = candidate, r, True
                break
    return program, result, tries


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------


def finding_text(finding) -> str:
    program, result = finding["minimal"], finding["minimal_result"]
    bad = None
    if result.get("bad_inputs") is not None:
        bad = [np.array(a, dtype=d) for a, d in zip(result["bad_inputs"], result["bad_dtypes"])]
    lines = [f"### {finding['replay']}: {category(result)} ({' -> '.join(ops_of(program))}, opset {program['opset']}"
             f"{', dynamic ' + ','.join(program['dynamic']) if program['dynamic'] else ''}{', dynamic_batch' if program['dynamic_batch'] else ''})", "",
             f"original: {len(finding['program']['nodes'])} ops ({' -> '.join(ops_of(finding['program']))}): {finding['result']['detail']}",
             "", f"minimal ({finding['tries']} shrink runs): {result['detail']}", ""]
    if finding.get("duplicates"):
        more = finding["duplicates"]
        lines += [f"same category and ops in {len(more)} more programs: {', '.join(more[:20])}{' …' if len(more) > 20 else ''}", ""]
    lines += ["```python", repro_source(program, bad).rstrip(), "```", ""]
    return "\n".join(lines)


def report(summary: dict) -> str:
    lines = ["# Differential fuzzing: flow2onnx against eager OneFlow on ONNX Runtime", "",
             f"`{summary['command']}`", "",
             f"seed {summary['seed']}, {summary['programs']} programs in {summary['seconds'] / 60:.1f} min "
             f"({summary['worker_restarts']} worker restarts); flow2onnx's newest opset {summary['max_opset']}.", "",
             "| outcome | programs |", "| --- | ---: |"]
    for outcome in OUTCOMES:
        lines.append(f"| {outcome} | {summary['outcomes'].get(outcome, 0)} |")
    lines += ["", "| export | programs |", "| --- | ---: |"]
    for key, count in summary["dynamic"].items():
        lines.append(f"| {key} | {count} |")
    lines += ["", "| opset | programs |", "| --- | ---: |"]
    for opset, count in sorted(summary["opsets"].items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {opset} | {count} |")
    lines += ["", "| op | uses |", "| --- | ---: |"]
    for op, count in sorted(summary["ops"].items(), key=lambda kv: (-kv[1], kv[0])):
        lines.append(f"| {op} | {count} |")
    lines += ["", "## Refusals (most common messages)", ""]
    for text, count in summary["refusals"]:
        lines.append(f"- {count} x {text}")
    lines += ["", "## OneFlow errors (not findings; most common)", ""]
    for text, count in summary["oneflow_errors"]:
        lines.append(f"- {count} x {text}")
    lines += ["", f"## Findings ({len(summary['findings'])})", ""]
    if not summary["findings"]:
        lines.append("none")
    for finding in summary["findings"]:
        lines.append(finding_text(finding))
    return "\n".join(lines) + "\n"


def _common(texts, n=12):
    def key(text):  # group messages that differ only in op names and numbers
        import re

        return re.sub(r"'[^']*'|\d+", "…", text)[:160]

    counts = collections.Counter(key(t) for t in texts)
    return counts.most_common(n)


def summarise(args, records, findings, seconds, worker, max_opset) -> dict:
    ops = collections.Counter(op for r in records for op in ops_of(r["program"]))
    return {
        "command": " ".join(["python benchmarks/fuzz.py"] + sys.argv[1:]),
        "seed": args.seed, "programs": len(records), "seconds": seconds, "max_opset": max_opset,
        "worker_restarts": worker.restarts,
        "outcomes": dict(collections.Counter(r["result"]["outcome"] for r in records)),
        "dynamic": dict(collections.Counter("dynamic_batch" if r["program"]["dynamic_batch"] else ("dynamic_axes" if r["program"]["dynamic"] else "static") for r in records)),
        "opsets": dict(collections.Counter(str(r["program"]["opset"]) for r in records)),
        "ops": dict(ops),
        "refusals": _common([r["result"]["detail"] for r in records if r["result"]["outcome"] == "refused"]),
        "oneflow_errors": _common([r["result"]["detail"] for r in records if r["result"]["outcome"] == "oneflow-error"]),
        "findings": findings,
    }


# --------------------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------------------


def max_opset() -> int:
    """flow2onnx's newest opset, asked of a short child so that this process never imports OneFlow."""
    code = "import flow2onnx, os; print(flow2onnx.max_opset(), flush=True); os._exit(0)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    return int(out.stdout.strip().splitlines()[-1])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--count", type=int, help="programs to run (default 30 unless --minutes)")
    parser.add_argument("--minutes", type=float, help="run for this long instead of a count")
    parser.add_argument("--out", default=DEFAULT_OUT, help="Markdown report (default benchmarks/results/fuzz.md)")
    parser.add_argument("--json", action="store_true", help="also write the summary and every program's outcome as JSON beside --out")
    parser.add_argument("--replay", metavar="SEED:INDEX", help="run one program again, shrink it if it is a finding, and print it")
    parser.add_argument("--no-shrink", action="store_true")
    parser.add_argument("--timeout", type=float, default=90.0, help="seconds a program may take before the worker is killed")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--recheck", metavar="JSON",
        help="export every finding of a --json run again with verification on, and say which it refuses and which it would ship",
    )
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main()
    newest = max_opset()
    worker = Worker(args.timeout)
    try:
        if args.recheck:
            return recheck(args, worker)
        if args.replay:
            seed, index = (int(p) for p in args.replay.split(":"))
            program = generate(seed, index, newest)
            print(module_source(program))
            result = worker.run(program)
            print(f"{args.replay}: {result['outcome']}: {result['detail']}")
            if result["outcome"] in FINDINGS and not args.no_shrink:
                minimal, minimal_result, tries = shrink(worker, program, result)
                print(finding_text({"replay": args.replay, "program": program, "result": result, "minimal": minimal,
                                    "minimal_result": minimal_result, "tries": tries}))
            return 0 if result["outcome"] not in FINDINGS else 1
        return fuzz(args, worker, newest)
    finally:
        worker.close()


def fuzz(args, worker, newest):
    count = args.count if args.count is not None else (None if args.minutes else 30)
    deadline = time.monotonic() + args.minutes * 60 if args.minutes else None
    started = time.monotonic()
    records, findings, seen = [], [], {}
    index = 0
    while (count is None or index < count) and (deadline is None or time.monotonic() < deadline):
        program = generate(args.seed, index, newest)
        t = time.monotonic()
        result = worker.run(program)
        records.append({"index": index, "program": program, "result": result})
        dyn = "dynamic_batch" if program["dynamic_batch"] else ("dyn " + ",".join(program["dynamic"]) if program["dynamic"] else "static")
        print(f"[{index}] {result['outcome']:13} opset {program['opset']:2} {dyn:14} {' -> '.join(ops_of(program))}"
              f"  ({time.monotonic() - t:.1f} s){'  ' + result['detail'][:160] if result['outcome'] != 'ok' else ''}", flush=True)
        if result["outcome"] in FINDINGS:
            replay = f"{args.seed}:{index}"
            # A finding whose program holds the single op of a known one-op finding of the same
            # category is counted with it unshrunk: shrinking the same NaN difference of max()
            # hundreds of times would take most of a run.
            explained = next((f for key, f in seen.items() if key[0] == category(result) and len(key[1]) == 1
                              and key[1][0] in ops_of(program)), None)
            if explained is not None:
                explained["duplicates"].append(replay)
                print(f"    like {explained['replay']} ({' -> '.join(ops_of(explained['minimal']))})", flush=True)
                index += 1
                continue
            if args.no_shrink:
                minimal, minimal_result, tries = program, result, 0
            else:
                minimal, minimal_result, tries = shrink(worker, program, result)
            key = (category(minimal_result), tuple(ops_of(minimal)))
            finding = {"replay": replay, "program": program, "result": result, "minimal": minimal,
                       "minimal_result": minimal_result, "tries": tries, "category": category(minimal_result)}
            if key in seen:
                seen[key]["duplicates"].append(replay)
            else:
                finding["duplicates"] = []
                seen[key] = finding
                findings.append(finding)
            print(f"    minimal: {' -> '.join(ops_of(minimal))}: {minimal_result['detail'][:200]}", flush=True)
        index += 1
    summary = summarise(args, records, findings, time.monotonic() - started, worker, newest)
    text = report(summary)
    print()
    print(text)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        f.write(text)
    if args.json:
        with open(os.path.splitext(args.out)[0] + ".json", "w") as f:
            json.dump({"summary": summary, "records": records}, f, indent=1, default=str)
    return 1 if findings else 0


#: How the worker marks in its log what it is doing, so that an abort can be placed.
PHASE = "flow2onnx-fuzz phase:"


def phase(what: str) -> None:
    print(f"{PHASE} {what}", file=sys.stderr, flush=True)


#: What verification makes of a finding, by the outcome of its export with verification on.
RECHECK = {
    "refused": "refused (a clear error; nothing written)",
    "ok": "verified, and right on every input the fuzzer tries",
    "wrong": "verified, and WRONG on some input the fuzzer tries (a silent wrong file)",
    "crash": "crash", "abort": "abort", "oneflow-error": "OneFlow cannot run it",
}


def recheck(args, worker) -> int:
    """Every finding of a ``--json`` run exported again with verification on (flow2onnx's default):
    the run itself exports without it, to find lowering bugs; this says which of them a user would
    meet as a clear refusal, and which as a verified file that is wrong (the worst finding)."""
    with open(args.recheck) as f:
        records = json.load(f)["records"]
    found = [r for r in records if r["result"]["outcome"] in FINDINGS]
    started, outcomes, silent, refusals = time.monotonic(), collections.Counter(), [], collections.Counter()
    for n, record in enumerate(found):
        program = dict(record["program"], verify=True)
        result = worker.run(program)
        outcomes[result["outcome"]] += 1
        replay = f"{program['seed']}:{program['index']}"
        if result["outcome"] == "wrong":
            silent.append((replay, " -> ".join(ops_of(program)), result["detail"][:200]))
        if result["outcome"] == "refused":
            refusals[result["detail"].split(":")[0]] += 1
        print(f"[{n + 1}/{len(found)}] {replay} was {record['result']['outcome']}, with verification {result['outcome']}", flush=True)
    lines = [
        f"## With verification on: {len(found)} findings exported again ({time.monotonic() - started:.0f} s)",
        "",
        f"`python benchmarks/fuzz.py --recheck {os.path.basename(args.recheck)}`: every program whose export without "
        "verification was a finding, exported again as a user would (verification on), and compared the same way.",
        "",
        "| with verification | findings |",
        "| --- | ---: |",
    ]
    lines += [f"| {RECHECK.get(outcome, outcome)} | {outcomes[outcome]} |" for outcome in RECHECK if outcomes[outcome]]
    lines += ["", "Refusals by error type: " + ", ".join(f"{kind} {n}" for kind, n in refusals.most_common()), ""]
    if silent:
        lines += ["Silent wrong files:", ""] + [f"- `{replay}` ({ops}): {detail}" for replay, ops, detail in silent]
    else:
        lines.append("No finding became a verified wrong file.")
    text = "\n".join(lines) + "\n"
    print(text)
    with open(args.out, "w") as f:
        f.write(text)
    return 1 if silent else 0


if __name__ == "__main__":
    sys.exit(main())
