"""Export every flowvision model with flow2onnx, verify it on ONNX Runtime, and tabulate the results.

Each model runs in its own process, with a timeout: OneFlow 0.9 crashes now and then, and one
model's crash or hang must not take the others with it. A worker creates the model with random
weights, compiles it as an ``nn.Graph`` on one example input, runs that graph once (so that models
OneFlow itself cannot run are told apart, with OneFlow's own error), then exports it with
``flow2onnx.export`` and verifies every output against the eager module. A model whose graph OneFlow
cannot build is run eagerly instead; when that works it is exported by eager capture
(``capture="eager"``), and the table says which capture each model took.

Results accumulate in ``benchmarks/results/zoo.json`` (one entry per model, so subsets can be run
in several sittings) and are rendered to ``benchmarks/results/zoo.md``: a table of every model run
and a summary per family.

    python benchmarks/zoo.py                          # all 295 models
    python benchmarks/zoo.py --representatives        # one model per family (51)
    python benchmarks/zoo.py --families vgg,resnet --limit 3
    python benchmarks/zoo.py --models resnet18,vit_tiny_patch16_224 --timeout 600
    python benchmarks/zoo.py --render                 # only re-render zoo.md from zoo.json
    python benchmarks/zoo.py --representatives --dynamic-sizes   # batch, height and width symbolic

With ``--dynamic-sizes`` every model is exported with batch, height and width dynamic, verified at
sizes far from the example, and the results go to ``zoo_dynamic.json``/``zoo_dynamic.md``: per
model, verified at far sizes, refused with the op that bakes a size named, or static by nature (the
module itself only builds at its example's size, e.g. a ViT whose position embeddings fix it, or
its Python takes another path at other sizes, e.g. PVT resizing its position embeddings).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from concurrent.futures import ThreadPoolExecutor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
JSON_PATH = os.path.join(RESULTS, "zoo.json")
MD_PATH = os.path.join(RESULTS, "zoo.md")

# Input sizes other than 224 (the size each model was designed for).
INPUT_SIZES = {
    "inception_v3": 299,
    "iresnet50": 112,
    "iresnet101": 112,
    "ssd300_vgg16": 300,
    "ssdlite320_mobilenet_v3_large": 320,
    "fasterrcnn_mobilenet_v3_large_320_fpn": 320,
    # flowvision 0.2.1 builds this one for 384 despite its name.
    "vit_huge_patch14_224": 384,
}
# Families whose constructors download a backbone unless told not to.
NEEDS_NO_BACKBONE = {"faster_rcnn", "retinanet", "fcos", "mask_rcnn", "ssd", "ssdlite", "deeplabv3", "fcn", "lraspp"}
# One small model per family, for a quick census (families not listed use their first model).
REPRESENTATIVES = {
    "cait": "cait_XS24_384",
    "conv_mixer": "convmixer_768_32_relu",
    "convnext": "convnext_tiny_224",
    "crossformer": "crossformer_tiny_patch4_group7_224",
    "cswin": "cswin_tiny_224",
    "deeplabv3": "deeplabv3_mobilenet_v3_large_coco",
    "deit_III": "deit_small_patch16_LS_224",
    "densenet": "densenet121",
    "dla": "dla34",
    "efficientnet": "efficientnet_b0",
    "fan": "fan_tiny_12_p16_224",
    "faster_rcnn": "fasterrcnn_mobilenet_v3_large_320_fpn",
    "fcn": "fcn_resnet50_coco",
    "genet": "genet_small",
    "hrnet": "hrnet_w18_small",
    "ir_resnet": "iresnet50",
    "levit": "levit_128s",
    "mlp_mixer": "mlp_mixer_b16_224",
    "mnasnet": "mnasnet0_5",
    "mobilenet_v3": "mobilenet_v3_small",
    "mobilevit": "mobilevit_xx_small",
    "poolformer": "poolformer_s12",
    "pvt": "pvt_tiny",
    "regionvit": "regionvit_tiny_224",
    "regnet": "regnet_x_400mf",
    "res2net": "res2net50_26w_4s",
    "res_mlp": "resmlp_12_224",
    "resnest": "resnest50",
    "resnet": "resnet18",
    "retinanet": "retinanet_resnet50_fpn",
    "rexnet": "rexnetv1_1_0",
    "rexnet_lite": "rexnet_lite_1_0",
    "senet": "se_resnet50",
    "shufflenet_v2": "shufflenet_v2_x0_5",
    "squeezenet": "squeezenet1_1",
    "swin_transformer": "swin_tiny_patch4_window7_224",
    "uniformer": "uniformer_small",
    "van": "van_tiny",
    "vgg": "vgg11",
    "vision_transformer": "vit_tiny_patch16_224",
}


def input_size(name: str) -> int:
    if name in INPUT_SIZES:
        return INPUT_SIZES[name]
    for size in (448, 384, 320, 300, 299):
        if f"_{size}" in name:
            return size
    return 224


# ------------------------------------------------------------------ worker (one model, one process)


def _create_model(flow, name: str, family: str):
    from flowvision.models import ModelCreator

    kwargs = {"pretrained": False}
    if family in NEEDS_NO_BACKBONE:
        kwargs["pretrained_backbone"] = False
    if family == "googlenet":
        kwargs["init_weights"] = False  # its default init imports scipy
    if not hasattr(flow.Tensor, "zeros_"):
        # flowvision's ResNeSt calls Tensor.zeros_, which OneFlow 0.9.0 names zero_.
        flow.Tensor.zeros_ = lambda self: self.zero_()
    return ModelCreator.create_model(name, **kwargs).eval()


def _error_text(error: BaseException) -> str:
    text = " ".join(str(error).split())
    # OneFlow's messages carry ANSI colour codes and long C++ stacks; keep the first meaningful part.
    for code in ("\x1b[1m", "\x1b[0m", "\x1b[38;2;255;000;000m"):
        text = text.replace(code, "")
    return f"{type(error).__name__}: {text[:400]}"


DYNAMIC_SIZES = {"input": {0: "batch", 2: "height", 3: "width"}}


def _dynamic_refusal(error: Exception) -> tuple[str, str] | None:
    """(category, reason) for an export refused because a size cannot stay dynamic, else ``None``."""
    text = str(error)
    if "cannot stay dynamic: OneFlow cannot build" in text or "model runs at none of the sizes" in text:
        return "static by nature", "the module builds only at its example's size: " + _error_text(error)
    if "takes another path at other sizes" in text:
        return "static by nature", "the model's Python branches on its size: " + _error_text(error)
    if "cannot keep the dynamic axes" in text or "no product of the dynamic sizes explains" in text:
        return "refused", "an op bakes a size: " + _error_text(error)
    return None


def run_worker(name: str, family: str, out_path: str, opset: int, dynamic_batch: bool, dynamic_sizes: bool = False) -> None:
    record = {"model": name, "family": family, "size": input_size(name), "stage": "import"}

    def save():
        with open(out_path, "w") as handle:
            json.dump(record, handle)

    save()
    import numpy as np

    import flow2onnx
    from flow2onnx._oneflow import import_oneflow, quiet_native_output
    from flow2onnx.exporter.capture.graphs import wrap_module

    flow = import_oneflow()
    flow.manual_seed(0)
    size = record["size"]
    example = flow.tensor(np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32))

    def stage(label: str):
        record["stage"] = label
        save()

    graph = None
    try:
        stage("create")
        with quiet_native_output():
            model = _create_model(flow, name, family)
        stage("compile")
        try:
            graph = wrap_module(model, [example])
        except Exception as error:  # OneFlow's graph compiler refuses it: does it run eagerly?
            record["graph_error"] = f"OneFlow cannot build the nn.Graph: {_error_text(error)}"
        stage("run")
        with quiet_native_output(), flow.no_grad():
            (graph or model)(example)
    except Exception as error:
        record["category"] = "oneflow" if record["stage"] in ("compile", "run") else "setup"
        what = {"create": "creating the model failed", "compile": "OneFlow cannot build the nn.Graph", "run": "OneFlow cannot run the nn.Graph"}
        if "graph_error" in record and record["stage"] == "run":
            record["reason"] = f"OneFlow cannot run it even eagerly: {_error_text(error)} ({record['graph_error']})"
        else:
            record["reason"] = f"{what.get(record['stage'], record['stage'])}: {_error_text(error)}"
        save()
        return

    # A model OneFlow cannot build as a graph but runs eagerly is exported by eager capture.
    record["capture"] = "graph" if graph is not None else "eager"
    record["oneflow_runs"] = True
    stage("export")
    path = os.path.join(tempfile.mkdtemp(prefix="zoo-"), f"{name}.onnx")
    started = time.perf_counter()
    try:
        axes = DYNAMIC_SIZES if dynamic_sizes else None
        target, inputs = (graph, None) if graph is not None else (model, [example])
        result = flow2onnx.export(
            target, inputs, path=path, opset=opset, dynamic_batch=dynamic_batch and not dynamic_sizes, dynamic_axes=axes,
            capture=record["capture"],
        )
        record.update(exported=True, verified=result.report.passed, category="ok")
        record["frozen"] = [w for w in result.warnings if "frozen to the example" in w]
        report = result.report
        if dynamic_sizes:
            record["sizes"] = sorted({tuple(c.shape) for c in report.comparisons})
    except flow2onnx.UnsupportedOpsError as error:
        record.update(category="flow2onnx", missing={k: v[0] for k, v in error.missing.items()})
        record["reason"] = "unsupported ops: " + ", ".join(sorted(error.missing))
        report = None
    except flow2onnx.VerificationError as error:
        record.update(exported=True, verified=False, category="flow2onnx")
        frozen = "froze them to the example's" in str(error)
        record["reason"] = "verification failed: outputs differ beyond tolerance" + (" where values read back to Python were frozen" if frozen else "")
        report = error.report
    except Exception as error:
        refusal = _dynamic_refusal(error) if dynamic_sizes else None
        if refusal is not None:
            record.update(category=refusal[0], reason=refusal[1])
        else:
            record.update(category="flow2onnx", reason=_error_text(error), trace=traceback.format_exc(limit=3)[-1500:])
        report = None
    finally:
        record["export_s"] = round(time.perf_counter() - started, 2)
        for leftover in (path, path + ".data"):
            if os.path.exists(leftover):
                os.remove(leftover)
    if report is not None and report.comparisons:
        record["max_abs_diff"] = max(c.max_abs_diff for c in report.comparisons)
        # The absolute difference relative to the output's magnitude, max(1, max|output|): the
        # comparison scales its atol (DEFAULT_ATOL for float32) by that magnitude.
        from flow2onnx.exporter.verify.comparison import DEFAULT_ATOL

        record["rel_err"] = max((c.max_abs_diff / (c.atol / DEFAULT_ATOL) if c.atol > 0 else c.max_abs_diff) for c in report.comparisons)
    stage("done")


# ------------------------------------------------------------------ driver


def all_models() -> dict[str, str]:
    """Every registered flowvision model name -> its family (the module that registers it)."""
    from flow2onnx._oneflow import import_oneflow

    import_oneflow()
    from flowvision.models import ModelCreator

    return {name: ModelCreator._model_to_module[name] for name in ModelCreator.model_list()}


def select(models: dict[str, str], args) -> list[tuple[str, str]]:
    chosen = sorted(models.items(), key=lambda item: (item[1], item[0]))
    if args.families:
        wanted = set(args.families.split(","))
        unknown = wanted - set(models.values())
        if unknown:
            sys.exit(f"unknown families: {', '.join(sorted(unknown))}")
        chosen = [item for item in chosen if item[1] in wanted]
    if args.models:
        wanted = args.models.split(",")
        unknown = [name for name in wanted if name not in models]
        if unknown:
            sys.exit(f"unknown models: {', '.join(unknown)}")
        chosen = [(name, models[name]) for name in wanted]
    if args.representatives:
        firsts: dict[str, str] = {}
        for name, family in chosen:
            firsts.setdefault(family, name)
        chosen = [(REPRESENTATIVES.get(family, first), family) for family, first in firsts.items()]
    if args.limit:
        per_family: dict[str, int] = {}
        limited = []
        for name, family in chosen:
            per_family[family] = per_family.get(family, 0) + 1
            if per_family[family] <= args.limit:
                limited.append((name, family))
        chosen = limited
    return chosen


def run_one(name: str, family: str, args) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as handle:
        out_path = handle.name
    command = [sys.executable, os.path.abspath(__file__), "--worker", name, "--family", family, "--out", out_path, "--opset", str(args.opset)]
    if args.dynamic_batch:
        command.append("--dynamic-batch")
    if args.dynamic_sizes:
        command.append("--dynamic-sizes")
    env = dict(os.environ, GLOG_minloglevel="3")
    started = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=args.timeout)
        returncode, tail = done.returncode, (done.stderr or "")[-600:]
    except subprocess.TimeoutExpired:
        returncode, tail = None, ""
    elapsed = time.perf_counter() - started
    try:
        with open(out_path) as handle:
            record = json.load(handle)
    except (OSError, ValueError):
        record = {"model": name, "family": family, "size": input_size(name), "stage": "start"}
    finally:
        if os.path.exists(out_path):
            os.remove(out_path)
    record["wall_s"] = round(elapsed, 1)
    stage = record.get("stage")
    if returncode is None:
        record["category"] = "timeout"
        record["reason"] = f"timed out after {args.timeout} s (during {stage})"
    elif stage != "done" and "reason" not in record:
        died = f"signal {-returncode}" if returncode < 0 else f"exit code {returncode}"
        last = " ".join(tail.split())[-300:]
        if stage in ("compile", "run"):
            record["category"] = "oneflow"
            record["reason"] = f"OneFlow's process died ({died}) while {'building' if stage == 'compile' else 'running'} the nn.Graph: {last}"
        else:
            record["category"] = "flow2onnx" if stage == "export" else "setup"
            record["reason"] = f"process died ({died}) during {stage}: {last}"
    return record


def load_results() -> dict[str, dict]:
    if not os.path.exists(JSON_PATH):
        return {}
    with open(JSON_PATH) as handle:
        return {record["model"]: record for record in json.load(handle)["models"]}


def save_results(results: dict[str, dict], meta: dict) -> None:
    os.makedirs(RESULTS, exist_ok=True)
    records = sorted(results.values(), key=lambda r: (r["family"], r["model"]))
    with open(JSON_PATH, "w") as handle:
        json.dump({"meta": meta, "models": records}, handle, indent=1)


def _fmt(value, spec: str) -> str:
    return "" if value is None else format(value, spec)


def render(results: dict[str, dict], meta: dict, total_models: int | None) -> str:
    records = sorted(results.values(), key=lambda r: (r["family"], r["model"]))
    runnable = [r for r in records if r.get("oneflow_runs")]
    verified = [r for r in records if r.get("verified")]
    eager = [r for r in runnable if r.get("capture") == "eager"]
    share = f"{100 * len(verified) / len(runnable):.1f}%" if runnable else "-"
    dynamic = meta.get("mode") == "dynamic sizes"
    lines = [
        "# flowvision model zoo: export and verification" + (", batch, height and width dynamic" if dynamic else ""),
        "",
        f"Measured {meta.get('date', '?')} with `python benchmarks/zoo.py` on {meta.get('machine', '?')}: "
        f"flowvision {meta.get('flowvision', '?')}, OneFlow {meta.get('oneflow', '?')}, opset {meta.get('opset', '?')}, "
        "random weights, batch 1, each model in its own process "
        f"(timeout {meta.get('timeout', '?')} s). Verification: every output within rtol 1e-3, atol 1e-4 x max(1, max|output|).",
        "",
        f"Models run: {len(records)}" + (f" of {total_models} registered" if total_models else "") + ". "
        f"OneFlow runs {len(runnable)} of them on the CPU ({len(runnable) - len(eager)} as an nn.Graph, {len(eager)} only "
        f"eagerly, exported by eager capture); flow2onnx exports and verifies {len(verified)} of those ({share}), "
        f"{sum(1 for r in eager if r.get('verified'))} of them by eager capture.",
        "",
    ]
    if meta.get("note"):
        lines += [meta["note"], ""]
    if dynamic:
        counts: dict[str, int] = {}
        for r in runnable:
            counts[r.get("category", "?")] = counts.get(r.get("category", "?"), 0) + 1
        lines += [
            "Each export has batch, height and width symbolic and is verified at the example's size and far from it "
            "(batch 1 or 2 and 2B+3; about 1/2 and 3/2 of height and width, each axis by its own factor). Of the models "
            "OneFlow runs: " + ", ".join(f"{count} {'verified' if category == 'ok' else category}" for category, count in sorted(counts.items())) + ".",
            "",
        ]
    lines += [
        "## Summary per family",
        "",
        "| family | models run | OneFlow runs | exported | verified | failures (reason) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    families: dict[str, list[dict]] = {}
    for record in records:
        families.setdefault(record["family"], []).append(record)
    for family, members in families.items():
        reasons: dict[str, int] = {}
        for r in members:
            if not r.get("verified"):
                key = r.get("reason", "?")
                key = key if len(key) <= 90 else key[:87] + "..."
                reasons[key] = reasons.get(key, 0) + 1
        notes = "; ".join(f"{count}x {reason}" if count > 1 else reason for reason, count in reasons.items())
        lines.append(
            f"| {family} | {len(members)} | {sum(1 for r in members if r.get('oneflow_runs'))} | "
            f"{sum(1 for r in members if r.get('exported'))} | {sum(1 for r in members if r.get('verified'))} | "
            f"{notes.replace('|', '/')} |"
        )
    missing: dict[str, list[str]] = {}
    for record in records:
        for op_type in record.get("missing", {}):
            missing.setdefault(op_type, []).append(record["model"])
    if missing:
        lines += ["", "## Op types still missing (models they block)", "", "| op type | models | examples |", "| --- | --- | --- |"]
        for op_type, models in sorted(missing.items(), key=lambda item: (-len(item[1]), item[0])):
            lines.append(f"| {op_type} | {len(models)} | {', '.join(models[:4])}{' ...' if len(models) > 4 else ''} |")
    lines += [
        "",
        "## Every model",
        "",
        "| model | family | input | capture | exported | verified | max abs diff | relative error (diff / max(1, max abs output)) | export s | reason for failure, or what eager capture froze |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in records:
        reason = (r.get("reason") or "; ".join(r.get("frozen", []))[:300]).replace("|", "/")
        lines.append(
            f"| {r['model']} | {r['family']} | {r.get('size', '')} | {r.get('capture') or ('graph' if r.get('oneflow_runs') else '')} | {'yes' if r.get('exported') else 'no'} | "
            f"{'yes' if r.get('verified') else 'no'} | {_fmt(r.get('max_abs_diff'), '.2e')} | {_fmt(r.get('rel_err'), '.2e')} | "
            f"{_fmt(r.get('export_s'), '.2f')} | {reason} |"
        )
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", help="comma-separated model names")
    parser.add_argument("--families", help="comma-separated families (flowvision module names, e.g. resnet,vgg)")
    parser.add_argument("--representatives", action="store_true", help="one model per family")
    parser.add_argument("--limit", type=int, default=0, help="at most N models per family")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per model (default 900)")
    parser.add_argument("--jobs", type=int, default=1, help="models run at once (default 1)")
    parser.add_argument("--opset", type=int, default=17)
    parser.add_argument("--dynamic-batch", action="store_true", help="export with a symbolic batch and verify at three batch sizes")
    parser.add_argument(
        "--dynamic-sizes", action="store_true",
        help="batch, height and width symbolic, verified far from the example; results in zoo_dynamic.json/.md",
    )
    parser.add_argument("--fresh", action="store_true", help="forget earlier results instead of updating them")
    parser.add_argument("--render", action="store_true", help="only re-render zoo.md from zoo.json")
    parser.add_argument("--list", action="store_true", help="print the selected models and exit")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--family", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.worker:
        run_worker(args.worker, args.family, args.out, args.opset, args.dynamic_batch, args.dynamic_sizes)
        return 0
    if args.dynamic_sizes:
        global JSON_PATH, MD_PATH
        JSON_PATH, MD_PATH = os.path.join(RESULTS, "zoo_dynamic.json"), os.path.join(RESULTS, "zoo_dynamic.md")

    results = {} if args.fresh else load_results()
    models = all_models()
    meta = {}
    if os.path.exists(JSON_PATH) and not args.fresh:
        with open(JSON_PATH) as handle:
            meta = json.load(handle).get("meta", {})
    if args.render:
        print(render(results, meta, len(models)), end="")
        with open(MD_PATH, "w") as handle:
            handle.write(render(results, meta, len(models)))
        return 0

    chosen = select(models, args)
    if args.list:
        print("\n".join(f"{family}\t{name}" for name, family in chosen))
        return 0
    import flowvision

    from flow2onnx._oneflow import import_oneflow

    meta.update(
        date=time.strftime("%Y-%m-%d"),
        machine=f"{os.cpu_count()} CPU cores, no GPU",
        flowvision=flowvision.__version__,
        oneflow=import_oneflow().__version__,
        opset=args.opset,
        timeout=args.timeout,
        mode="dynamic sizes" if args.dynamic_sizes else "static",
    )
    print(f"running {len(chosen)} models, {args.jobs} at a time, timeout {args.timeout} s", flush=True)

    def one(item):
        name, family = item
        record = run_one(name, family, args)
        status = "verified" if record.get("verified") else record.get("reason", "?")[:160]
        print(f"{family:<20} {name:<42} {record.get('export_s', '-')!s:>7} s  {status}", flush=True)
        return record

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        for record in pool.map(one, chosen):
            results[record["model"]] = record
            save_results(results, meta)
    with open(MD_PATH, "w") as handle:
        handle.write(render(results, meta, len(models)))
    print(f"wrote {MD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
