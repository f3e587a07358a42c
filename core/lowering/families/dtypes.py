"""The dtype matrix of the built-in lowerings: what each numerical case did in each dtype.

``dtype_matrix.json`` is written by ``python -m tests.dtype_matrix`` (which documents the outcomes)
and kept true by ``tests/test_dtypes.py``, which runs every recorded attempt again. It maps a case
to the OneFlow op types it exercises (``op_types``) and its outcomes, by dtype and opset:
``{"status": ..., "detail": ...}``. This module turns it into
one row per OneFlow op type for ``docs/supported_ops.md``.
"""

from __future__ import annotations

import functools
import json
import pathlib

MATRIX_PATH = pathlib.Path(__file__).with_name("dtype_matrix.json")
DTYPES = ("float32", "float64", "float16", "int64", "int32", "int8", "uint8", "bool")

#: Per status, the cell written for it (``{detail}`` replaced), best first: an op type whose cases
#: differ shows the best outcome any of them reached at every opset it ran.
CELLS = {
    "verified": "✓",
    "refused": "refused",
    "onnxruntime": "ORT: {detail}",
    "oneflow": "OneFlow: no",
    "oneflow-abort": "OneFlow: aborts",
    "mismatch": "MISMATCH",
    "blocked": "({detail})",
    "promoted": "",
}


@functools.lru_cache(maxsize=1)
def recorded() -> dict:
    """The matrix as recorded: case -> {"op_types": [...], "outcomes": dtype -> opset -> outcome}."""
    return json.loads(MATRIX_PATH.read_text()) if MATRIX_PATH.exists() else {}


def case_outcome(per_opset: dict) -> dict:
    """One case in one dtype: verified only if it verified at every opset it ran; else the first other outcome."""
    outcomes = [per_opset[opset] for opset in sorted(per_opset, key=int)]
    failed = [outcome for outcome in outcomes if outcome["status"] != "verified"]
    return failed[0] if failed else outcomes[0]


def op_type_outcomes(lowered: set[str]) -> dict[str, dict[str, dict]]:
    """Op type -> dtype -> the best outcome of the cases that exercise the op type.

    float32 is the dtype every lowering's own case runs in (``tests/test_lowerings.py``), so every
    lowered op type has it; a dtype left out means no case tried it (or only "promoted" it).
    """
    order = list(CELLS)
    best: dict[str, dict[str, dict]] = {}
    for case in recorded().values():
        for dtype, per_opset in case["outcomes"].items():
            found = case_outcome(per_opset)
            for op_type in case["op_types"]:
                outcome = _as_seen_by(op_type, found)
                held = best.setdefault(op_type, {}).get(dtype)
                if held is None or order.index(outcome["status"]) < order.index(held["status"]):
                    best[op_type][dtype] = outcome
    return {
        op_type: {"float32": {"status": "verified"}}
        | {dtype: outcome for dtype, outcome in best.get(op_type, {}).items() if outcome["status"] != "promoted"}
        for op_type in sorted(lowered)
    }


def _as_seen_by(op_type: str, outcome: dict) -> dict:
    """A runtime's or OneFlow's missing kernel for another op of the case leaves ``op_type`` untried:
    "blocked", the cell naming what blocked it."""
    blocker = outcome.get("op_type")
    if outcome["status"] not in ("onnxruntime", "oneflow") or blocker in (None, op_type):
        return outcome
    who = "ORT" if outcome["status"] == "onnxruntime" else "OneFlow"
    return {"status": "blocked", "detail": f"{who}: {outcome['detail'] if who == 'ORT' else 'no'} {blocker}"}


def render(lowered: set[str]) -> list[str]:
    """The Markdown section: a summary line per dtype, then one row per lowered op type."""
    outcomes = op_type_outcomes(lowered)
    lines = [
        "## Dtypes",
        "",
        "Each lowering's numerical cases run again in every dtype (`python -m tests.dtype_matrix` records the "
        "outcomes in `flow2onnx/lowering/families/dtype_matrix.json`; `tests/test_dtypes.py` runs each again and "
        "fails where it differs): the float cases with the module and its inputs in float64 and float16, the integer "
        "cases in each integer dtype OneFlow takes for them, each at the lowest opset of its op types and at the "
        "default. A cell is the best outcome of the cases that exercise the op type:",
        "",
        "- ✓: exported and verified, ONNX Runtime matching OneFlow on every output within the verifier's "
        "tolerances for its dtype (float16: rtol and atol 1e-2; float64: 1e-6 and 1e-7; integers exactly);",
        "- `ORT: Op`: the model is valid ONNX and within each operator's type constraints, but ONNX Runtime's CPU "
        "provider has no kernel for `Op` in that dtype (`FusedMatMul` and `QuickGelu` are fusions of its own optimizer);",
        "- `OneFlow: no`: OneFlow 0.9 has no CPU kernel for the op in that dtype, so there is nothing to compare with; "
        "`OneFlow: aborts`: it runs the module eagerly but aborts the process building the graph;",
        "- `refused`: flow2onnx refuses the op in that dtype and says why;",
        "- `(ORT: Op op_type)`, `(OneFlow: no op_type)`: not tried: ONNX Runtime or OneFlow has no kernel for "
        "another op of the case (`op_type`);",
        "- empty: no case tries that dtype: no integer case exercises the op type, or the case computes it in "
        "another dtype (a float32 constant promotes a float16 input).",
        "",
    ]
    titles = {"verified": "✓", "onnxruntime": "ORT: no kernel", "oneflow": "OneFlow: no kernel", "refused": "refused", None: "not tried"}
    lines += ["| dtype | " + " | ".join(titles.values()) + " |", "| --- |" + " ---: |" * len(titles)]
    for dtype in DTYPES:
        counts = [sum(_summary_status(row.get(dtype)) == status for row in outcomes.values()) for status in titles]
        lines.append(f"| {dtype} | " + " | ".join(str(count) for count in counts) + " |")
    lines += ["", "| OneFlow op type | " + " | ".join(DTYPES) + " |", "| --- |" + " --- |" * len(DTYPES)]
    for op_type, row in outcomes.items():
        lines.append(f"| `{op_type}` | " + " | ".join(_cell(row[dtype]) if dtype in row else "" for dtype in DTYPES) + " |")
    return lines


def _cell(outcome: dict) -> str:
    return CELLS[outcome["status"]].format(detail=outcome.get("detail", ""))


def _summary_status(outcome: dict | None) -> str | None:
    """The summary column an outcome counts in: an abort is OneFlow's refusal, a blocked cell was not tried."""
    if outcome is None:
        return None
    return {"oneflow-abort": "oneflow", "blocked": None}.get(outcome["status"], outcome["status"])
