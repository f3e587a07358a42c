"""Export flowvision ResNet-50 with flow2onnx and with the reference converter, in one run.

Each exporter runs in its own process on the same model (random weights, seed 0), compiled as an
``nn.Graph`` on a 1x3x224x224 input, so that OneFlow's own memory is in the baseline. What is
measured is the export call alone: wall time, and peak resident memory above the memory the process
held just before it (the kernel's high-water mark is reset first, through /proc/self/clear_refs).

The reference, ``oneflow-onnx`` 0.6.2, needs numpy<1.24, so it runs from its own environment,
``.venv-reference/`` (created on first use; ``--reference-python`` points elsewhere). Its
``export_onnx_model`` saves the weights to /tmp and loads them back, and runs onnx-simplifier:
that is its documented path, and what users of OneFlow's tutorial get.

    python benchmarks/export_resnet50.py [--repeat N] [--model resnet50] [--skip-reference]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

from _procstat import status_kib  # benchmarks/_procstat.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_VENV = os.path.join(ROOT, ".venv-reference")
REFERENCE_PACKAGES = [
    "oneflow==0.9.0",
    "numpy<1.24",  # oneflow-onnx 0.6.2 uses np.bool
    "protobuf>=3.20.2,<4",
    "onnx>=1.14,<1.18",
    "onnxruntime>=1.16,<1.20",
    "oneflow-onnx==0.6.2",
    "nvidia-cublas-cu11==11.10.3.66",
    "nvidia-cudnn-cu11==8.5.0.96",
    "setuptools<81",
    "wheel",
]
RESULTS = os.path.join(ROOT, "benchmarks", "results")


# ---------------------------------------------------------------- worker (one exporter, one process)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        return True
    except OSError:
        return False


def worker(tool: str, model_name: str, out_dir: str) -> dict:
    if tool == "flow2onnx":
        import flow2onnx
        from flow2onnx._oneflow import import_oneflow

        flow = import_oneflow()
    else:
        import oneflow as flow  # the parent put the CUDA 11 libraries on LD_LIBRARY_PATH
        from oneflow_onnx.oneflow2onnx.util import export_onnx_model

    from flowvision.models import ModelCreator

    flow.manual_seed(0)
    model = ModelCreator.create_model(model_name, pretrained=False).eval()

    class ModelGraph(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = model

        def build(self, x):
            return self.model(x)

    graph = ModelGraph()
    graph._compile(flow.rand(1, 3, 224, 224))

    path = os.path.join(out_dir, "model.onnx")
    reset = _reset_peak()
    baseline = status_kib("VmRSS")
    started = time.perf_counter()
    if tool == "flow2onnx":
        flow2onnx.export(graph, path=path, verify=False)
    else:
        export_onnx_model(graph, onnx_model_path=out_dir)
    seconds = time.perf_counter() - started
    peak = status_kib("VmHWM")
    return {
        "tool": tool,
        "seconds": seconds,
        "baseline_mib": baseline / 1024,
        "peak_mib": peak / 1024,
        "peak_above_baseline_mib": (peak - baseline) / 1024 if reset else None,
        "model_mib": os.path.getsize(path) / 2**20,
    }


# ---------------------------------------------------------------- parent


def _nvidia_library_path(python: str) -> str:
    code = "import nvidia, os; r = list(nvidia.__path__)[0]; print(os.path.join(r, 'cublas', 'lib') + ':' + os.path.join(r, 'cudnn', 'lib'))"
    return subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def ensure_reference_env() -> str:
    python = os.path.join(REFERENCE_VENV, "bin", "python")
    stamp = os.path.join(REFERENCE_VENV, ".installed")
    if os.path.exists(stamp):
        return python
    print(f"creating {REFERENCE_VENV} for oneflow-onnx 0.6.2 (its own numpy<1.24)...", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", REFERENCE_VENV], check=True)
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + REFERENCE_PACKAGES, check=True)
    subprocess.run(pip + ["--no-build-isolation", "flowvision==0.2.1"], check=True)
    open(stamp, "w").close()
    return python


def run_worker(python: str, tool: str, model: str, env: dict) -> dict:
    with tempfile.TemporaryDirectory(prefix=f"bench-{tool}-") as out_dir:
        done = subprocess.run(
            [python, __file__, "--worker", tool, "--model", model, "--out", out_dir],
            capture_output=True,
            text=True,
            env=env,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} worker failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet50")
    parser.add_argument("--repeat", type=int, default=1, help="runs per exporter (the best time is kept)")
    parser.add_argument("--skip-reference", action="store_true", help="measure flow2onnx alone")
    parser.add_argument("--reference-python", help="a Python with oneflow-onnx 0.6.2 installed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.out)))
        return 0

    env = {**os.environ, "GLOG_minloglevel": "3"}
    runs = {"flow2onnx": [run_worker(sys.executable, "flow2onnx", args.model, env) for _ in range(args.repeat)]}
    if not args.skip_reference:
        python = args.reference_python or ensure_reference_env()
        reference_env = {**env, "LD_LIBRARY_PATH": _nvidia_library_path(python)}
        runs["oneflow-onnx 0.6.2"] = [run_worker(python, "reference", args.model, reference_env) for _ in range(args.repeat)]

    best = {tool: min(results, key=lambda r: r["seconds"]) for tool, results in runs.items()}
    rows = [("exporter", "export s", "peak RSS MiB", "peak above baseline MiB", "model MiB")]
    for tool, r in best.items():
        above = "n/a" if r["peak_above_baseline_mib"] is None else f"{r['peak_above_baseline_mib']:.0f}"
        rows.append((tool, f"{r['seconds']:.2f}", f"{r['peak_mib']:.0f}", above, f"{r['model_mib']:.1f}"))
    lines = [f"{args.model}, nn.Graph compiled on 1x3x224x224, random weights, best of {args.repeat}, export without verification", ""]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines.append("| " + " | ".join(cell.ljust(w) for cell, w in zip(rows[0], widths)) + " |")
    lines.append("| " + " | ".join("-" * w for w in widths) + " |")
    lines.extend("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |" for row in rows[1:])
    if len(best) == 2:
        ours, ref = best["flow2onnx"], best["oneflow-onnx 0.6.2"]
        lines.append("")
        lines.append(f"time: the reference takes {ref['seconds'] / ours['seconds']:.1f}x as long as flow2onnx")
        if ours["peak_above_baseline_mib"] and ref["peak_above_baseline_mib"]:
            ratio = ref["peak_above_baseline_mib"] / ours["peak_above_baseline_mib"]
            lines.append(f"memory above baseline: the reference needs {ratio:.1f}x as much as flow2onnx")
    text = "\n".join(lines)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, f"export_{args.model}.md"), "w") as out:
        out.write(f"# Export benchmark: {args.model}\n\nMeasured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
