"""GPU check: exported models on ONNX Runtime's CUDA and TensorRT providers, judged against OneFlow.

Two stages, because the machine that exports need not be the one that deploys:

``prepare`` (needs OneFlow; the CPU is enough) exports each model once with flow2onnx (dynamic
batch, verified on the CPU provider) and writes a bundle: the ONNX files, and for each batch size
OneFlow's own outputs on seeded random images. The images are not stored: ``run`` draws them again
from the same seed and checks their SHA-256 against the one ``prepare`` recorded.

With ``--variants``, a model is also prepared op by op (the fusion family off) and after
``onnxruntime.transformers``' optimizer (its Attention, SkipLayerNormalization and BiasGelu), each
judged against the same OneFlow outputs: fusion on the GPU, measured.

``run`` (needs only NumPy and onnxruntime-gpu; no OneFlow, no flow2onnx install) opens every file on
each provider it can (CUDA with TF32 off, CUDA with its defaults, TensorRT, CPU), compares every
output with OneFlow's by flow2onnx's own rule (``core/exporter/verify/comparison.py``, loaded by its path),
records where ONNX Runtime placed each node, and times each provider host to host (numpy in, numpy
out) at every batch size. Where OneFlow with CUDA is importable on that machine, it times OneFlow's
compiled ``nn.Graph`` on the GPU too; where it is not, the result says why. Results go to
``benchmarks/results/gpu.md`` (or ``--out``).

    python benchmarks/gpu_check.py prepare --bundle DIR [--models resnet50,vit_tiny_patch16_224] [--variants vit_tiny_patch16_224]
    python benchmarks/gpu_check.py run --bundle DIR [--iterations 50] [--warmup 10] [--out FILE]
    python benchmarks/gpu_check.py            # both, on a machine that has OneFlow and a GPU

Exit status: 0 when every provider that opened the files agrees with OneFlow (CUDA judged with TF32
off: TF32 rounds products to 10 mantissa bits by design, so the default is reported, not judged);
1 on a mismatch or when a GPU is present but the CUDA provider cannot use it; 0 with a message and
nothing measured on a machine without a CUDA provider.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
DEFAULT_MODELS = ("resnet50", "vit_tiny_patch16_224")
IMAGE_SHAPE = (3, 224, 224)
MANIFEST = "manifest.json"


def _inputs(batch: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).random((batch, *IMAGE_SHAPE), dtype=np.float32)


def _sha256(array: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()


# ---------------------------------------------------------------- prepare (OneFlow, CPU)


def _transformer_optimized(path: str, target: str) -> dict:
    """``onnxruntime.transformers``' optimizer on ``path`` (ViT fusions: Attention, SkipLayerNormalization,
    BiasGelu), after ONNX Runtime's basic optimizations without MatMulAddFusion (see benchmarks/fusion.py)."""
    import onnxruntime
    from onnxruntime.transformers import optimizer

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = basic = target.replace(".onnx", ".basic.onnx")
    onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulAddFusion"])
    optimized = optimizer.optimize_model(basic, model_type="vit", num_heads=0, hidden_size=0, opt_level=0)
    optimized.save_model_to_file(target)
    os.remove(basic)
    return {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}


def prepare(bundle: str, models: list[str], batch_sizes: list[int], variants: list[str] = ()) -> int:
    import flow2onnx
    from flow2onnx._oneflow import import_oneflow
    from flowvision.models import ModelCreator

    flow = import_oneflow()
    os.makedirs(bundle, exist_ok=True)
    manifest = {"oneflow": flow.__version__, "flow2onnx": flow2onnx.__version__ if hasattr(flow2onnx, "__version__") else "0.1.0", "models": []}
    for index, name in enumerate(models):
        flow.manual_seed(0)
        model = ModelCreator.create_model(name, pretrained=False).eval()
        path = os.path.join(bundle, f"{name}.onnx")
        started = time.perf_counter()
        flow2onnx.export(model, [flow.tensor(_inputs(1, seed=1000))], path, dynamic_batch=True)
        export_s = time.perf_counter() - started
        print(f"{name}: exported and verified in {export_s:.1f} s ({os.path.getsize(path) / 1e6:.1f} MB)", file=sys.stderr)
        entry = {"name": name, "model": name, "file": os.path.basename(path), "export_s": export_s, "runs": []}
        extra = []
        if name in variants:  # the same model op by op, and after ONNX Runtime's transformer optimizer
            unfused = os.path.join(bundle, f"{name}-op-by-op.onnx")
            flow2onnx.export(model, [flow.tensor(_inputs(1, seed=1000))], unfused, dynamic_batch=True, disable_plugins=["flow2onnx-fusion"])
            fused_ops = _transformer_optimized(path, os.path.join(bundle, f"{name}-ort-transformers.onnx"))
            print(f"{name}: transformer optimizer fused {fused_ops}", file=sys.stderr)
            extra = [(f"{name} (op by op, fusion family off)", unfused), (f"{name} (then onnxruntime.transformers: {', '.join(f'{op} {n}' for op, n in fused_ops.items())})", os.path.join(bundle, f"{name}-ort-transformers.onnx"))]
        for batch in batch_sizes:
            seed = 100 * index + batch
            images = _inputs(batch, seed)
            with flow.no_grad():
                outputs = model(flow.tensor(images))
            outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
            files = []
            for k, output in enumerate(outputs):
                target = f"{name}_b{batch}_out{k}.npy"
                np.save(os.path.join(bundle, target), output.numpy())
                files.append(target)
            entry["runs"].append({"batch": batch, "seed": seed, "sha256": _sha256(images), "outputs": files})
        manifest["models"].append(entry)
        manifest["models"].extend(dict(entry, name=label, file=os.path.basename(file)) for label, file in extra)
    with open(os.path.join(bundle, MANIFEST), "w") as out:
        json.dump(manifest, out, indent=2)
    return 0


# ---------------------------------------------------------------- run (onnxruntime only)


def _comparison_module():
    """flow2onnx's comparison rule, loaded by path: this stage runs where flow2onnx is not installed."""
    path = os.path.join(ROOT, "core", "exporter", "verify", "comparison.py")
    spec = importlib.util.spec_from_file_location("flow2onnx_comparison", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def _gpu_name() -> str | None:
    if shutil.which("nvidia-smi"):
        done = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"], capture_output=True, text=True)
        if done.returncode == 0 and done.stdout.strip():
            return done.stdout.strip().splitlines()[0]
    return None


# label -> (providers for InferenceSession, whether its agreement with OneFlow decides the exit status)
def _configurations(available: list[str]) -> list[tuple[str, list, bool]]:
    configs = []
    if "TensorrtExecutionProvider" in available:
        configs.append(("TensorRT (fp32), CUDA fallback", ["TensorrtExecutionProvider", ("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"], True))
    configs.append(("CUDA, TF32 off", [("CUDAExecutionProvider", {"use_tf32": "0"}), "CPUExecutionProvider"], True))
    configs.append(("CUDA, defaults (TF32 on)", ["CUDAExecutionProvider", "CPUExecutionProvider"], False))
    configs.append(("CPU", ["CPUExecutionProvider"], True))
    return configs


def _placement(ort, path: str, providers: list, feed: dict) -> dict:
    """Nodes per provider, from one profiled run: {provider: count}, plus the op types not on the first provider."""
    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = os.path.join(tempfile.gettempdir(), "gpu-check-profile")
    session = ort.InferenceSession(path, options, providers=providers)
    session.run(None, feed)
    profile = session.end_profiling()
    with open(profile) as handle:
        events = json.load(handle)
    os.remove(profile)
    counts: dict[str, int] = {}
    elsewhere: dict[str, int] = {}
    first = session.get_providers()[0]
    seen = set()
    for event in events:
        args = event.get("args", {})
        if event.get("cat") != "Node" or "provider" not in args or event["name"] in seen:
            continue
        seen.add(event["name"])
        counts[args["provider"]] = counts.get(args["provider"], 0) + 1
        if args["provider"] != first:
            elsewhere[args.get("op_name", "?")] = elsewhere.get(args.get("op_name", "?"), 0) + 1
    return {"providers": counts, "not_on_first": elsewhere}


def _time(session, feed: dict, iterations: int, warmup: int) -> dict:
    for _ in range(warmup):
        session.run(None, feed)
    seconds = []
    for _ in range(iterations):
        started = time.perf_counter()
        session.run(None, feed)
        seconds.append(time.perf_counter() - started)
    seconds.sort()
    return {"median_ms": statistics.median(seconds) * 1e3, "p90_ms": seconds[min(len(seconds) - 1, int(0.9 * len(seconds)))] * 1e3}


def _load_cuda_libraries(ort) -> str:
    """Make CUDA and cuDNN loadable for the CUDA provider; says how."""
    try:
        import torch  # noqa: F401  (a CUDA build of PyTorch loads the CUDA and cuDNN libraries the provider links)

        return f"CUDA libraries loaded through PyTorch {torch.__version__}"
    except ImportError:
        pass
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
        return "CUDA libraries loaded by onnxruntime.preload_dlls()"
    return "CUDA libraries from the system"


def _oneflow_cuda(bundle: str, iterations: int, warmup: int) -> tuple[list, str | None]:
    """OneFlow's compiled nn.Graph on the GPU, in a child process; ([records], why not)."""
    done = subprocess.run(
        [sys.executable, __file__, "oneflow-worker", "--bundle", bundle, "--iterations", str(iterations), "--warmup", str(warmup)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    records = [json.loads(line[7:]) for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    problem = next((r["error"] for r in records if "error" in r), None)
    if problem is None and done.returncode:
        tail = done.stderr.strip().splitlines()
        problem = f"exit {done.returncode}: {tail[-1] if tail else 'no message'}"
    return [r for r in records if "error" not in r], problem


def oneflow_worker(bundle: str, iterations: int, warmup: int) -> int:
    try:
        try:
            from flow2onnx._oneflow import import_oneflow  # loads the CUDA 11 libraries OneFlow links

            flow = import_oneflow()
        except ModuleNotFoundError:
            import oneflow as flow
        from flowvision.models import ModelCreator
    except Exception as error:  # noqa: BLE001  (any import failure means: no OneFlow here)
        print("RESULT " + json.dumps({"error": f"OneFlow cannot be imported here ({type(error).__name__}: {error})"}), flush=True)
        return 0
    if not flow.cuda.is_available():
        print("RESULT " + json.dumps({"error": f"OneFlow {flow.__version__} sees no CUDA device"}), flush=True)
        return 0
    with open(os.path.join(bundle, MANIFEST)) as handle:
        manifest = json.load(handle)
    timed = set()
    for entry in manifest["models"]:
        if entry.get("model", entry["name"]) in timed:  # a variant of a model already timed
            continue
        timed.add(entry.get("model", entry["name"]))
        flow.manual_seed(0)
        model = ModelCreator.create_model(entry.get("model", entry["name"]), pretrained=False).eval().to("cuda")
        for run in entry["runs"]:

            class InferenceGraph(flow.nn.Graph):
                def __init__(self):
                    super().__init__()
                    self.model = model

                def build(self, x):
                    return self.model(x)

            graph = InferenceGraph()
            images = _inputs(run["batch"], run["seed"])
            graph(flow.tensor(images, device="cuda")).numpy()
            for _ in range(warmup):
                graph(flow.tensor(images, device="cuda")).numpy()
            seconds = []
            for _ in range(iterations):
                started = time.perf_counter()
                graph(flow.tensor(images, device="cuda")).numpy()
                seconds.append(time.perf_counter() - started)
            seconds.sort()
            print("RESULT " + json.dumps({"model": entry["name"], "batch": run["batch"], "median_ms": statistics.median(seconds) * 1e3, "p90_ms": seconds[int(0.9 * (len(seconds) - 1))] * 1e3}), flush=True)
    return 0


def run(bundle: str, iterations: int, warmup: int, out: str | None, with_oneflow: bool) -> int:
    import onnxruntime as ort

    comparison = _comparison_module()
    with open(os.path.join(bundle, MANIFEST)) as handle:
        manifest = json.load(handle)
    available = ort.get_available_providers()
    gpu = _gpu_name()
    if "CUDAExecutionProvider" not in available:
        print(
            f"no CUDA execution provider in this onnxruntime {ort.__version__} (available: {', '.join(available)}): "
            "nothing to check on this machine. Install onnxruntime-gpu (docs/installation.md, 'GPU runtime') where there is an NVIDIA GPU. Nothing was measured."
        )
        return 0
    libraries = _load_cuda_libraries(ort)

    lines = [
        f"GPU: {gpu or 'none named by nvidia-smi'}; Python {platform.python_version()}, NumPy {np.__version__}, "
        f"onnxruntime {ort.__version__} (providers listed: {', '.join(available)}); {libraries}.",
        f"Files exported by flow2onnx {manifest['flow2onnx']} from OneFlow {manifest['oneflow']} (flowvision, random weights, dynamic batch), "
        "judged against OneFlow's own outputs computed on the CPU when the files were made.",
        "",
        f"Rule: {comparison.RULE}.",
        "",
    ]
    failed = False
    opened: dict[str, str] = {}
    timings = []
    agreement = ["| model | batch | provider | max abs diff | out of tolerance | result |", "| --- | --- | --- | --- | --- | --- |"]
    placements = []
    for entry in manifest["models"]:
        path = os.path.join(bundle, entry["file"])
        for label, providers, decides in _configurations(available):
            try:
                session = ort.InferenceSession(path, providers=providers)
            except Exception as error:  # noqa: BLE001  (reported per provider)
                opened[label] = f"could not open {entry['file']}: {str(error).splitlines()[0]}"
                # TensorRT is optional (its libraries are a separate install); CUDA and CPU must work.
                failed = failed or "TensorRT" not in label
                continue
            wanted = providers[0] if isinstance(providers[0], str) else providers[0][0]
            actual = session.get_providers()
            if wanted not in actual:
                opened[label] = f"fell back to {', '.join(actual)}: {wanted} did not load (its reason is in onnxruntime's log above)"
                # Without a GPU there is nothing to load; with one, CUDA must work (TensorRT is a separate install).
                failed = failed or (gpu is not None and "TensorRT" not in label)
                continue
            opened.setdefault(label, "opened")
            name = session.get_inputs()[0].name
            for run_entry in entry["runs"]:
                images = _inputs(run_entry["batch"], run_entry["seed"])
                if _sha256(images) != run_entry["sha256"]:
                    print(f"FAILED: the images drawn for {entry['name']} batch {run_entry['batch']} differ from those OneFlow saw (NumPy's generator changed)", file=sys.stderr)
                    return 1
                feed = {name: images}
                got = session.run(None, feed)
                for k, (target, value) in enumerate(zip(run_entry["outputs"], got)):
                    result = comparison.compare(f"out{k}", np.load(os.path.join(bundle, target)), value)
                    verdict = "ok" if result.passed else ("MISMATCH" if decides else "differs (reported, not judged)")
                    failed = failed or (decides and not result.passed)
                    agreement.append(f"| {entry['name']} | {run_entry['batch']} | {label} | {result.max_abs_diff:.3e} | {result.mismatch_fraction:.4%} | {verdict} |")
                timings.append({"model": entry["name"], "batch": run_entry["batch"], "runtime": f"onnxruntime, {label}", **_time(session, feed, iterations, warmup)})
                print(f"{entry['name']} batch {run_entry['batch']} {label}: {timings[-1]['median_ms']:.2f} ms", file=sys.stderr, flush=True)
            if label != "CPU" and "TF32 on" not in label:
                where = _placement(ort, path, providers, {name: _inputs(1, 0)})
                counts = ", ".join(f"{p}: {n}" for p, n in sorted(where["providers"].items(), key=lambda item: -item[1]))
                moved = ", ".join(f"{op} x{n}" for op, n in sorted(where["not_on_first"].items())) or "none"
                placements.append(f"- {entry['name']}, {label}: nodes per provider {counts}; op types not on {wanted}: {moved}")
            del session

    oneflow_records, oneflow_problem = ([], "not asked for (--no-oneflow)")
    if with_oneflow:
        oneflow_records, oneflow_problem = _oneflow_cuda(bundle, iterations, warmup)
    for record in oneflow_records:
        timings.append({"model": record["model"], "batch": record["batch"], "runtime": "OneFlow, CUDA, compiled nn.Graph", "median_ms": record["median_ms"], "p90_ms": record["p90_ms"]})

    lines += ["Providers:", ""] + [f"- {label}: {state}" for label, state in opened.items()]
    lines += ["", "Agreement with OneFlow, every output of every file at every batch size:", ""] + agreement
    lines += ["", "Where ONNX Runtime placed the nodes (one profiled run at batch 1):", ""] + placements
    lines += [
        "",
        f"Latency, host to host (numpy in, numpy out), median and 90th percentile of {iterations} runs after {warmup} warm-up runs, "
        "with the ratio against the CPU provider on the same file and batch:",
        "",
        "| model | batch | runtime | median ms | p90 ms | images/s | CPU provider / this |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    cpu = {(t["model"], t["batch"]): t["median_ms"] for t in timings if t["runtime"] == "onnxruntime, CPU"}
    for t in sorted(timings, key=lambda t: (t["model"], t["batch"])):
        ratio = cpu.get((t["model"], t["batch"]))
        versus = "-" if ratio is None else f"{ratio / t['median_ms']:.1f}x"
        lines.append(
            f"| {t['model']} | {t['batch']} | {t['runtime']} | {t['median_ms']:.2f} | {t['p90_ms']:.2f} | "
            f"{t['batch'] / t['median_ms'] * 1e3:.0f} | {versus} |"
        )
    if oneflow_problem:
        lines += ["", f"OneFlow on the GPU: {oneflow_problem}; no OneFlow figures."]
    if failed:
        verdict = "MISMATCH, or a provider that should work did not"
    elif gpu is None:
        verdict = "no GPU is visible (nvidia-smi names none): only the CPU provider was measured"
    else:
        verdict = "every judged provider agrees with OneFlow"
    lines += ["", f"Verdict: {verdict}"]
    text = "\n".join(lines)
    print(text)
    target = out or os.path.join(RESULTS, "gpu.md")
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    with open(target, "w") as handle:
        handle.write(f"# GPU check\n\nMeasured {datetime.date.today().isoformat()} with `benchmarks/gpu_check.py`.\n\n{text}\n")
    print(f"written to {target}", file=sys.stderr)
    return 1 if failed else 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", nargs="?", choices=["prepare", "run", "oneflow-worker"], help="prepare, run, or (left out) both")
    parser.add_argument("--bundle", help="folder of the exported files and OneFlow's outputs (default: a temporary folder, for both stages)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"flowvision models to export (default {','.join(DEFAULT_MODELS)})")
    parser.add_argument("--batch-sizes", default="1,32", help="comma-separated batch sizes (default 1,32)")
    parser.add_argument("--iterations", type=int, default=50, help="timed runs per provider and batch size (default 50)")
    parser.add_argument("--warmup", type=int, default=10, help="untimed runs first (default 10)")
    parser.add_argument("--out", help="where the results go (default benchmarks/results/gpu.md)")
    parser.add_argument("--variants", default="", help="models also prepared op by op and through onnxruntime.transformers (e.g. vit_tiny_patch16_224)")
    parser.add_argument("--no-oneflow", action="store_true", help="do not try to time OneFlow on the GPU")
    args = parser.parse_args()
    batch_sizes = [int(part) for part in args.batch_sizes.split(",")]
    models = [part for part in args.models.split(",") if part]
    if args.stage == "prepare":
        return prepare(args.bundle or "gpu-bundle", models, batch_sizes, args.variants.split(","))
    if args.stage == "oneflow-worker":
        return oneflow_worker(args.bundle, args.iterations, args.warmup)
    if args.stage == "run":
        return run(args.bundle or "gpu-bundle", args.iterations, args.warmup, args.out, not args.no_oneflow)
    bundle = args.bundle or tempfile.mkdtemp(prefix="gpu-check-")
    try:
        status = prepare(bundle, models, batch_sizes, args.variants.split(","))
        return status or run(bundle, args.iterations, args.warmup, args.out, not args.no_oneflow)
    finally:
        if not args.bundle:
            shutil.rmtree(bundle, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
