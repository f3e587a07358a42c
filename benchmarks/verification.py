"""What verification costs on ResNet-50: time and memory, with and without it, for two trees in one run.

Each tree runs in its own process (``PYTHONPATH`` puts its ``flow2onnx`` first; no tree: the installed
one), on the same model: flowvision ResNet-50, random weights (seed 0), compiled as an ``nn.Graph``
on 1x3x224x224, static shapes (a dynamic batch would add OneFlow's second compilation, about 800 MB,
to every number), so that verification makes three runs at that shape (the example input, then
draws in [-1, 1) and across five orders of magnitude). Measured: the export without verification, then with it (wall time, the
verify phase, peak resident memory above what the process held before the export), and the memory
still held once the export has returned (after a garbage collection).

    python benchmarks/verification.py --before /tmp/before     # before = an older checkout's package folder
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time

from _procstat import status_kib  # benchmarks/_procstat.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _measured(flow2onnx, graph, path: str, verify: bool) -> dict:
    gc.collect()
    before = status_kib("VmRSS") / 1024
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    started = time.perf_counter()
    result = flow2onnx.export(graph, None, path, verify=verify)
    seconds = time.perf_counter() - started
    peak = status_kib("VmHWM") / 1024 - before
    del result
    gc.collect()
    return {"seconds": seconds, "peak_mib": peak, "held_mib": status_kib("VmRSS") / 1024 - before}


def worker() -> dict:
    import flow2onnx
    from flow2onnx._oneflow import import_oneflow
    from flow2onnx.exporter.capture.graphs import as_compiled_graph
    from flowvision.models import resnet50

    flow = import_oneflow()
    flow.manual_seed(0)
    graph = as_compiled_graph(resnet50().eval(), [flow.rand(1, 3, 224, 224)])
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "resnet50.onnx")
        _measured(flow2onnx, graph, path, False)  # warm-up: plugins imported, first-call costs paid
        plain = _measured(flow2onnx, graph, path, False)
        verified = _measured(flow2onnx, graph, path, True)
        started = time.perf_counter()
        timings = flow2onnx.export(graph, None, path).timings
        verified["verify_s"] = timings["verify"]
        verified["again_s"] = time.perf_counter() - started
    return {"tree": os.path.dirname(flow2onnx.__file__), "plain": plain, "verified": verified}


def run(tree: str | None) -> dict:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    done = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker"], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(rows: dict) -> str:
    lines = [
        "# Verification cost: ResNet-50, three runs",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/verification.py --before TREE` on {os.cpu_count()} CPU cores "
        "shared with other work; each tree in its own process, same model and seed.",
        "",
        "| tree | export s | peak MiB | export + verification s | verify phase s | peak with verification MiB | held after return MiB |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for label, row in rows.items():
        plain, verified = row["plain"], row["verified"]
        lines.append(
            f"| {label} | {plain['seconds']:.2f} | {plain['peak_mib']:.0f} | {verified['seconds']:.2f} | {verified['verify_s']:.2f} | "
            f"{verified['peak_mib']:.0f} | {verified['held_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", metavar="TREE", help="a folder holding an older flow2onnx package, measured first")
    parser.add_argument("--output", default=os.path.join(RESULTS, "verification.md"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker()))
        os._exit(0)  # past OneFlow's native teardown
    rows = {}
    if args.before:
        rows["before"] = run(args.before)
    rows["after"] = run(None)
    text = render(rows)
    with open(args.output, "w") as file:
        file.write(text)
    print(text)


if __name__ == "__main__":
    main()
