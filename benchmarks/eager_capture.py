"""Eager capture against graph capture, on the same model in the same run.

flowvision ResNet-50 (random weights, seed 0) is exported twice, verification off so that only
capture and conversion are timed: once by compiling an ``nn.Graph`` (``capture="graph"``) and once
by recording the ops the eager module runs (``capture="eager"``). Both files then run on ONNX
Runtime on the same inputs, and their outputs are compared with each other and with OneFlow's.
Each capture runs ``--repeat`` times, alternating, and the median is reported. Results go to
``benchmarks/results/eager_capture.md``.

    python benchmarks/eager_capture.py [--model resnet50] [--repeat 3]
"""

from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import tempfile
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "eager_capture.md")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    import numpy as np
    import onnx
    import onnxruntime

    import flow2onnx
    from flow2onnx._oneflow import import_oneflow

    flow = import_oneflow()
    import flowvision.models as models

    flow.manual_seed(0)
    model = getattr(models, args.model)().eval()
    example = flow.rand(1, 3, 224, 224)
    seconds = {"graph": [], "eager": []}
    with tempfile.TemporaryDirectory(prefix="flow2onnx-eager-") as out:
        paths = {capture: os.path.join(out, f"{capture}.onnx") for capture in seconds}
        for _ in range(args.repeat):
            for capture, path in paths.items():
                started = time.perf_counter()
                flow2onnx.export(model, [example], path, capture=capture, verify=False)
                seconds[capture].append(time.perf_counter() - started)
        x = np.random.default_rng(1).uniform(-1, 1, size=(1, 3, 224, 224)).astype(np.float32)
        outputs, nodes = {}, {}
        for capture, path in paths.items():
            session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
            outputs[capture] = session.run(None, {session.get_inputs()[0].name: x})[0]
            nodes[capture] = sorted(node.op_type for node in onnx.load(path).graph.node)
        with flow.no_grad():
            reference = model(flow.tensor(x)).numpy()
    scale = float(np.abs(reference).max())
    graph_s, eager_s = statistics.median(seconds["graph"]), statistics.median(seconds["eager"])
    lines = [
        f"| capture | export (median of {args.repeat}) | ONNX nodes | max abs diff to OneFlow |",
        "| --- | ---: | ---: | ---: |",
    ]
    for capture, median in (("graph", graph_s), ("eager", eager_s)):
        lines.append(f"| {capture} | {median:.2f} s | {len(nodes[capture])} | {float(np.abs(outputs[capture] - reference).max()):.3e} |")
    lines += [
        "",
        f"- eager / graph export time: **{eager_s / graph_s:.2f}**",
        f"- the two files' outputs differ by at most {float(np.abs(outputs['graph'] - outputs['eager']).max()):.3e} "
        f"(largest |output| {scale:.3e}); the same node types: {nodes['graph'] == nodes['eager']}",
    ]
    text = "\n".join(lines)
    print(text)
    with open(RESULTS, "w") as handle:
        handle.write(
            f"# Eager capture against graph capture: flowvision {args.model}\n\n"
            f"`python benchmarks/eager_capture.py --model {args.model} --repeat {args.repeat}`, {datetime.date.today().isoformat()}, "
            "2 CPU cores, no GPU; export without verification, batch 1, 224 x 224.\n\n" + text + "\n"
        )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
