"""A fixed-seed sample of the differential fuzzer (``benchmarks/fuzz.py``) as a test.

Each test runs one generated program in a fuzz worker process (one for the module: a OneFlow abort
ends the worker, not pytest) and fails when it is ``wrong``, ``crash`` or ``abort``. Programs whose
finding is known are listed in ``KNOWN`` with the reason; they are expected to fail (``xfail``), and
a known finding that no longer shows up fails the test, so that the list stays true.
"""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))

import fuzz  # noqa: E402  (benchmarks/fuzz.py: the generator and the worker)

SEED = 2024
COUNT = 40

#: Index -> (category, reason) of the programs of ``SEED`` whose finding is known. The category is
#: ``fuzz.category`` of the result (``wrong/edge``: outputs differ on edge-value inputs).
KNOWN: dict[int, tuple[str, str]] = {
    6: ("crash", "float64 interpolate lowers to Resize, which ONNX Runtime has no double kernel for"),
    14: ("crash", "float64 conv2d lowers to Conv, which ONNX Runtime has no double kernel for"),
    34: ("wrong/example", "clamp_ on a narrow() view changes the tensor it views in eager OneFlow, not in the graph"),
}


@pytest.fixture(scope="module")
def worker():
    newest = fuzz.max_opset()
    w = fuzz.Worker(timeout=60.0)
    yield w, newest
    w.close()


@pytest.mark.parametrize("index", range(COUNT))
def test_fuzz_program(worker, index):
    w, newest = worker
    program = fuzz.generate(SEED, index, newest)
    result = w.run(program)
    found = result["outcome"] in fuzz.FINDINGS
    where = f"replay with: python benchmarks/fuzz.py --replay {SEED}:{index}\n{fuzz.module_source(program)}"
    if index in KNOWN:
        category, reason = KNOWN[index]
        assert found and fuzz.category(result) == category, (
            f"known finding {category} ({reason}) no longer shows up (now {result['outcome']}: {result['detail']}); "
            f"remove it from KNOWN\n{where}")
        pytest.xfail(f"{category}: {reason}")
    assert not found, f"{fuzz.category(result)}: {result['detail']}\n{where}"
