"""Resident memory of a long-lived process over many exports: in-process against isolated.

One process exports a small CNN (dynamic batch, verified) again and again and records its anonymous
resident memory (``RssAnon``) after each export (after a garbage collection). In-process, every export compiles OneFlow
graphs that OneFlow 0.9 never frees; with ``isolate=True`` each export runs in a worker process
that takes them with it. The growth per export is the slope of a least-squares line through the
second half of the exports (the first ones also pay one-time costs: imports, plugin loading).
Each mode runs in a process of its own; ``--before TREE`` adds an in-process run of an older tree.

    python benchmarks/memory.py --exports 100 [--before /tmp/before]
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

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")


def _rss_mib() -> float:
    """Anonymous resident memory: what a leak grows. File-backed pages (OneFlow's 2 GB of libraries)
    come and go with the machine's memory pressure and would hide it."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("RssAnon")


def small_cnn():
    """A module-level factory, so that an isolated export can build the model in its worker."""
    from flow2onnx._oneflow import import_oneflow

    nn = import_oneflow().nn
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 4)
    ).eval()


def worker(exports: int, isolate: bool) -> dict:
    import flow2onnx

    example = [np.random.default_rng(0).random((2, 3, 16, 16), dtype=np.float32)]
    rss = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(exports):
            model = small_cnn if isolate else small_cnn()
            options = {"isolate": True} if isolate else {}  # older trees have no such option
            flow2onnx.export(model, example, os.path.join(folder, "m.onnx"), dynamic_batch=True, **options)
            del model
            gc.collect()
            rss.append(_rss_mib())
    return {"rss": rss, "seconds": time.perf_counter() - started, "tree": os.path.dirname(flow2onnx.__file__)}


def slope(rss: list) -> float:
    """MiB per export: least squares through the second half of the exports."""
    half = rss[len(rss) // 2 :]
    return float(np.polyfit(np.arange(len(half)), half, 1)[0]) if len(half) > 1 else 0.0


def run(exports: int, isolate: bool, tree: str | None) -> dict:
    env = dict(os.environ)
    if tree:
        env["PYTHONPATH"] = os.path.abspath(tree) + os.pathsep + env.get("PYTHONPATH", "")
    command = [sys.executable, os.path.abspath(__file__), "--worker", "--exports", str(exports)] + (["--isolate"] if isolate else [])
    done = subprocess.run(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def render(rows: dict, exports: int) -> str:
    lines = [
        f"# Resident memory over {exports} exports in one process",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/memory.py --exports {exports}` on {os.cpu_count()} CPU cores "
        "shared with other work. Model: Conv-BN-ReLU-pool-Linear, 2x3x16x16, dynamic batch, verified (three runs).",
        "",
        "| mode | RssAnon after export 1 MiB | after the last MiB | growth per export MiB (second half) | seconds per export |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, row in rows.items():
        rss = row["rss"]
        lines.append(f"| {label} | {rss[0]:.0f} | {rss[-1]:.0f} | {slope(rss):.2f} | {row['seconds'] / len(rss):.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", type=int, default=100)
    parser.add_argument("--before", metavar="TREE", help="also run in-process with the flow2onnx package in TREE")
    parser.add_argument("--isolate", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output", default=os.path.join(RESULTS, "memory.md"))
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.exports, args.isolate)))
        os._exit(0)  # past OneFlow's native teardown
    rows = {}
    if args.before:
        rows["in-process, before"] = run(args.exports, False, args.before)
    rows["in-process"] = run(args.exports, False, None)
    rows["isolated (isolate=True)"] = run(args.exports, True, None)
    text = render(rows, args.exports)
    with open(args.output, "w") as file:
        file.write(text)
    with open(os.path.splitext(args.output)[0] + ".json", "w") as file:
        json.dump(rows, file)
    print(text)


if __name__ == "__main__":
    main()
