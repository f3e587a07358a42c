"""GPU check: an exported ResNet-50 on ONNX Runtime's CUDA provider, against the CPU and against OneFlow.

On a machine with an NVIDIA GPU and the ``gpu`` extra installed (README, "GPU runtime"):

1. flowvision ResNet-50 (random weights, seed 0) is exported once with flow2onnx (dynamic batch,
   verified against OneFlow on the CPU provider);
2. the same file runs on the CUDA provider and on the CPU provider on the same inputs, and the
   outputs are compared with flow2onnx's verification tolerance; the comparison that decides uses
   the CUDA provider with TF32 off (``use_tf32=0``, where the installed onnxruntime knows the
   option), because TF32 rounds products to 10 mantissa bits by design. The default (TF32 allowed on
   Ampere and newer) is compared too and reported;
3. latency is measured host to host (numpy in, numpy out: upload, compute, download) at batch 1 and
   32: OneFlow on CUDA as a compiled ``nn.Graph``, and onnxruntime on the CUDA provider with its
   default options. Median and 90th percentile of ``--iterations`` runs after ``--warmup`` runs.

The results go to ``benchmarks/results/gpu_resnet50.md``. OneFlow runs in child processes (its
CUDA 11 libraries stay out of onnxruntime's process, and a crash of a compiled graph, a known
OneFlow 0.9 fault, loses only OneFlow's figures). Without a CUDA provider the script says so and
exits 0 without measuring anything.

    python benchmarks/gpu_check.py [--batch-sizes 1,32] [--iterations 50] [--warmup 10]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
RESULT_PREFIX = "RESULT "
MODEL = "resnet50"
IMAGE_SHAPE = (3, 224, 224)


def _inputs(batch: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *IMAGE_SHAPE), dtype=np.float32)


def _summary(seconds: list[float], batch: int) -> dict:
    ordered = sorted(seconds)
    median = statistics.median(ordered)
    return {
        "batch": batch,
        "median_ms": median * 1e3,
        "p90_ms": ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))] * 1e3,
        "images_per_s": batch / median,
        "runs": len(ordered),
    }


def _timed(run, iterations: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(iterations):
        started = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - started)
    return seconds


# ---------------------------------------------------------------- OneFlow workers (child processes)


def _flowvision_model(flow):
    from flowvision.models import ModelCreator

    flow.manual_seed(0)
    return ModelCreator.create_model(MODEL, pretrained=False).eval()


def worker_export(path: str) -> None:
    import flow2onnx
    from flow2onnx._oneflow import import_oneflow

    flow = import_oneflow()
    model = _flowvision_model(flow)
    result = flow2onnx.export(model, [flow.tensor(_inputs(1))], path, dynamic_batch=True)
    print(result.report.to_text(), file=sys.stderr)
    print(RESULT_PREFIX + json.dumps({"oneflow": flow.__version__, "export_s": sum(result.timings.values())}), flush=True)


def worker_oneflow_latency(batch_sizes: list[int], iterations: int, warmup: int) -> None:
    from flow2onnx._oneflow import import_oneflow

    flow = import_oneflow()
    if not flow.cuda.is_available():
        print(RESULT_PREFIX + json.dumps({"error": "OneFlow sees no CUDA device"}), flush=True)
        return
    model = _flowvision_model(flow).to("cuda")

    class InferenceGraph(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = model

        def build(self, x):
            return self.model(x)

    for batch in batch_sizes:
        graph = InferenceGraph()  # a graph is compiled for one input shape
        host = _inputs(batch)
        started = time.perf_counter()
        graph(flow.tensor(host, device="cuda")).numpy()
        compile_s = time.perf_counter() - started

        def run():
            return graph(flow.tensor(host, device="cuda")).numpy()

        record = _summary(_timed(run, iterations, warmup), batch)
        record["compile_s"] = compile_s
        print(RESULT_PREFIX + json.dumps(record), flush=True)


def _child(args: list[str], timeout: float) -> tuple[list[dict], str | None]:
    """Run this script as a worker; its RESULT lines, and what went wrong, if anything."""
    try:
        done = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as expired:
        stdout = expired.stdout.decode() if isinstance(expired.stdout, bytes) else expired.stdout or ""
        return _results(stdout), f"timed out after {timeout:.0f} s"
    problem = None
    if done.returncode < 0:
        problem = f"crashed with signal {-done.returncode}"
    elif done.returncode:
        problem = f"exit {done.returncode}: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else 'no message'}"
    if done.stderr.strip():
        print(done.stderr.rstrip(), file=sys.stderr)
    return _results(done.stdout), problem


def _results(stdout: str) -> list[dict]:
    return [json.loads(line[len(RESULT_PREFIX) :]) for line in stdout.splitlines() if line.startswith(RESULT_PREFIX)]


# ---------------------------------------------------------------- onnxruntime (this process)


def _gpu_name() -> str | None:
    """The first GPU's name and driver as nvidia-smi reports them; None where there is none."""
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    return None


def _probe_cuda(workdir: str) -> str | None:
    """Open a one-node model on the CUDA provider alone: None when it works, else why not."""
    import onnx
    from onnx import TensorProto, helper

    from flow2onnx.errors import Flow2OnnxError
    from flow2onnx.runtime import Model

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "probe",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = os.path.join(workdir, "probe.onnx")
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    try:
        Model(path, ["cuda"])
    except Flow2OnnxError as error:
        return str(error)
    return None


def _compare(name: str, reference: np.ndarray, actual: np.ndarray) -> dict:
    from flow2onnx.exporter.verification import DEFAULT_ATOL, DEFAULT_RTOL, compare

    result = compare(name, reference, actual, DEFAULT_RTOL, DEFAULT_ATOL)
    return {"name": name, "passed": result.passed, "max_abs_diff": result.max_abs_diff, "mismatch": result.mismatch_fraction}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes to time (default 1,32)")
    parser.add_argument("--iterations", type=int, default=50, help="timed runs per batch size (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    parser.add_argument("--no-write", action="store_true", help=f"print the results without writing {os.path.relpath(RESULTS, ROOT)}/")
    parser.add_argument("--worker", choices=["export", "oneflow"], help=argparse.SUPPRESS)
    parser.add_argument("--path", help=argparse.SUPPRESS)
    args = parser.parse_args()
    batch_sizes = [int(part) for part in args.batch_sizes.split(",")]

    if args.worker == "export":
        worker_export(args.path)
        return 0
    if args.worker == "oneflow":
        worker_oneflow_latency(batch_sizes, args.iterations, args.warmup)
        return 0

    import onnxruntime

    from flow2onnx.errors import Flow2OnnxError
    from flow2onnx.runtime import CUDA, Model, available_providers

    available = available_providers()
    if CUDA not in available:
        print(
            f"no CUDA execution provider in this onnxruntime {onnxruntime.__version__} (available: {', '.join(available)}): "
            "there is nothing to check on this machine. On a machine with an NVIDIA GPU, install the gpu extra "
            "(README, 'GPU runtime') and run this again. Nothing was measured."
        )
        return 0
    if hasattr(onnxruntime, "preload_dlls"):
        # CUDA and cuDNN from the nvidia-* wheels, when they are installed; system libraries otherwise.
        onnxruntime.preload_dlls()

    workdir = tempfile.mkdtemp(prefix="gpu-check-")
    try:
        broken = _probe_cuda(workdir)
        if broken:
            gpu = _gpu_name()
            print(f"the CUDA provider is listed but does not work here: {broken}")
            if gpu is None:
                print("no NVIDIA GPU is visible (nvidia-smi finds none), so there is nothing to check. Nothing was measured.")
                return 0
            print(f"FAILED: {gpu} is present but onnxruntime cannot use it; check its CUDA and cuDNN libraries", file=sys.stderr)
            return 1
        path = os.path.join(workdir, f"{MODEL}.onnx")
        print(f"exporting flowvision {MODEL} (random weights) with flow2onnx, verified on the CPU provider ...")
        exported, problem = _child(["--worker", "export", "--path", path], timeout=600)
        if problem or not os.path.exists(path):
            print(f"FAILED: the export {problem or 'wrote no file'}", file=sys.stderr)
            return 1
        oneflow_version = exported[0]["oneflow"] if exported else "?"

        try:
            cpu = Model(path, ["cpu"])
            cuda = Model(path, ["cuda"])
        except Flow2OnnxError as error:
            print(f"FAILED: {error}", file=sys.stderr)
            return 1
        try:
            cuda_fp32 = Model(path, [("cuda", {"use_tf32": "0"})])
        except Flow2OnnxError as error:  # an onnxruntime older than the option
            print(f"note: cannot turn TF32 off ({error}); comparing the default CUDA configuration only")
            cuda_fp32 = None

        check_input = _inputs(4, seed=1)
        reference = cpu.run(check_input)["output"]
        comparisons = [_compare("CUDA (default options) vs CPU", reference, cuda.run(check_input)["output"])]
        if cuda_fp32 is not None:
            comparisons.append(_compare("CUDA (TF32 off) vs CPU", reference, cuda_fp32.run(check_input)["output"]))
        deciding = comparisons[-1]
        for item in comparisons:
            print(f"{item['name']}: max abs diff {item['max_abs_diff']:.3e}, {item['mismatch']:.4%} out of tolerance: {'ok' if item['passed'] else 'MISMATCH'}")
        del cpu, cuda_fp32

        ort_results = []
        for batch in batch_sizes:
            host = _inputs(batch)
            ort_results.append(_summary(_timed(lambda: cuda.run(host), args.iterations, args.warmup), batch))
        print("timing OneFlow (CUDA, nn.Graph) in a child process ...")
        oneflow_results, oneflow_problem = _child(
            ["--worker", "oneflow", "--batch-sizes", args.batch_sizes, "--iterations", str(args.iterations), "--warmup", str(args.warmup)],
            timeout=900,
        )
        oneflow_error = next((r["error"] for r in oneflow_results if "error" in r), None) or oneflow_problem
        oneflow_results = [r for r in oneflow_results if "error" not in r]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)

    lines = [
        f"{MODEL} (flowvision, random weights), {_gpu_name() or 'unnamed GPU'}; onnxruntime {onnxruntime.__version__} "
        f"({', '.join(cuda.providers)}), OneFlow {oneflow_version}",
        "",
        "Outputs on 4 random images, against onnxruntime's CPU provider "
        "(|cuda - cpu| <= 1e-4 * max(1, max|cpu|) + 1e-3 * |cpu|):",
        "",
    ]
    lines.extend(f"- {c['name']}: max abs diff {c['max_abs_diff']:.3e}, {c['mismatch']:.4%} out of tolerance: {'ok' if c['passed'] else 'MISMATCH'}" for c in comparisons)
    lines += [
        "",
        f"Latency, host to host (numpy in, numpy out), median and 90th percentile of {args.iterations} runs after {args.warmup} warm-up runs:",
        "",
        "| runtime | batch | median ms | p90 ms | images/s |",
        "| --- | --- | --- | --- | --- |",
    ]
    for label, results in (("OneFlow, CUDA, nn.Graph", oneflow_results), ("onnxruntime, CUDA provider", ort_results)):
        for r in results:
            lines.append(f"| {label} | {r['batch']} | {r['median_ms']:.2f} | {r['p90_ms']:.2f} | {r['images_per_s']:.0f} |")
    if oneflow_error:
        lines += ["", f"OneFlow: {oneflow_error}; its figures are missing or partial."]
    text = "\n".join(lines)
    print(text)
    if not args.no_write:
        os.makedirs(RESULTS, exist_ok=True)
        target = os.path.join(RESULTS, f"gpu_{MODEL}.md")
        with open(target, "w") as out:
            out.write(f"# GPU check: {MODEL}\n\nMeasured {datetime.date.today().isoformat()} with benchmarks/gpu_check.py.\n\n{text}\n")
        print(f"written to {os.path.relpath(target, ROOT)}")
    return 0 if deciding["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
