"""Export time per phase and peak memory on synthetic chains of 1k to 100k OneFlow ops.

The model is a chain of identical blocks, ``x + GELU(LayerNorm(Linear(x)))`` at width 16, which
OneFlow 0.9 builds on the CPU as 13 ops and 4 weights per block; the chain gets as many blocks as
the size asks for (20,020 ops for 20k). Each size runs in its own process: the module is built,
compiled as an ``nn.Graph`` (OneFlow's own compile time, reported beside the export), then exported
without verification (each phase's seconds and the peak resident memory above the memory held just
before the export), then once more with verification for its cost.

The graph is exported ``--repeat`` times (default 3): the table gives the first export's phases and
the median time of all of them, since the machine's speed drifts within minutes on shared cores. A
fixed piece of pure-Python work is timed just before each export (the probe column): a slow stretch
of the machine shows there, beside the export it slowed.

With ``--before TREE`` the same process also exports the same compiled graph with another checkout
of flow2onnx (a folder holding a ``flow2onnx`` package, e.g. made from an older commit with
``git archive``), first, so both are measured on one graph, one machine and one run: the table then
gives the ratio of the costs per op; after their first exports the trees take turns, so that each
meets the same drift. Modules of one checkout are removed from ``sys.modules``
before the other is imported, op-handler packages included.

    python benchmarks/scale.py                                  # 1k, 10k, 20k, 100k ops
    python benchmarks/scale.py --sizes 1000,20000 --before /tmp/before
    python benchmarks/scale.py --capture eager                  # no compile: 100k ops in minutes

Each worker runs with its stack limit raised to the hard limit: OneFlow's compile of a 100k-op
chain overflows the default 8 MiB stack (SIGSEGV after about 8 minutes); unlimited, it compiles.

With ``--capture eager`` the module is not compiled: each export captures it eagerly, which builds
the same ops in OneFlow's lazy mode without the nn.Graph compiler, whose time grows about n^1.7 (the
100k-op graph took 609 s). The capture is then part of ``read_graph``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

from _procstat import status_kib  # benchmarks/_procstat.py

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, "benchmarks", "results")
OPS_PER_BLOCK = 13
EXPORT_PHASES = ("read_graph", "convert", "check", "write")


# ---------------------------------------------------------------- worker: one size, one process


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")  # the kernel's high-water mark restarts from the current RSS


def _chain(flow, blocks: int, width: int = 16):
    nn = flow.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc, self.norm, self.act = nn.Linear(width, width), nn.LayerNorm(width), nn.GELU()

        def forward(self, x):
            return x + self.act(self.norm(self.fc(x)))

    return nn.Sequential(*[Block() for _ in range(blocks)]).eval()


def _use_tree(tree: str | None):
    """Import flow2onnx from ``tree`` (``None``: the installed one), after forgetting any other copy."""
    for name in [n for n in sys.modules if n == "flow2onnx" or n.startswith(("flow2onnx.", "flow2onnx_"))]:
        del sys.modules[name]
    sys.path[:] = [p for p in sys.path if not p.startswith("/") or not os.path.isdir(os.path.join(p, "flow2onnx", "exporter"))]
    if tree:
        sys.path.insert(0, tree)
    import flow2onnx

    return flow2onnx


def probe() -> float:
    """Seconds for a fixed piece of pure-Python work (dicts, tuples, strings: what an export does most):
    the machine's speed at that moment, timed before each export, so that a slow stretch of the shared
    cores shows as a slow probe rather than passing for a slow export."""
    started = time.perf_counter()
    table = {}
    for i in range(150_000):
        table[f"k{i % 5000}"] = (i, str(i))
    return time.perf_counter() - started


def _measured_export(flow2onnx, model, path: str, verify: bool, inputs=None) -> dict:
    """Export ``model`` (a compiled graph; with ``inputs``, an eager module captured eagerly)."""
    probe_s = probe()
    rss = status_kib("VmRSS")
    _reset_peak()
    started = time.perf_counter()
    options = {"capture": "eager"} if inputs is not None else {}
    result = flow2onnx.export(model, inputs, path, verify=verify, **options)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "timings": dict(result.timings),
        "peak_mib": (status_kib("VmHWM") - rss) / 1024,
        "ops": sum(result.op_types.values()),
        "file_mib": os.path.getsize(result.path) / 2**20,
        "probe_s": probe_s,
    }


def worker(size: int, trees: list, verify: bool, eager: bool, repeat: int = 1) -> dict:
    flow2onnx = _use_tree(None)
    from flow2onnx._oneflow import import_oneflow
    from flow2onnx.exporter.capture.graphs import as_compiled_graph

    flow = import_oneflow()
    flow.manual_seed(0)
    model = _chain(flow, max(1, round(size / OPS_PER_BLOCK)))
    inputs = [flow.rand(2, 16)]
    started = time.perf_counter()
    if eager:  # nothing to compile: each export captures the module's ops itself
        graph, compile_s = model, None
    else:
        graph, inputs = as_compiled_graph(model, inputs), None
        compile_s = time.perf_counter() - started
    record = {"size": size, "compile_s": compile_s, "capture": "eager" if eager else "graph", "runs": {}}
    tiny = _chain(flow, 1)
    tiny_graph, tiny_inputs = (tiny, [flow.rand(2, 16)]) if eager else (as_compiled_graph(tiny, [flow.rand(2, 16)]), None)

    def export_with(label: str, tree: str | None, verified: bool = False) -> tuple[dict, dict]:
        flow2onnx = _use_tree(tree)
        # A warm-up export of one block first: plugin discovery, imports and first-use set-up
        # cost the same at any size, and are reported apart from the cost per op.
        warmup = _measured_export(flow2onnx, tiny_graph, os.path.join(folder, "warmup.onnx"), False, tiny_inputs)
        return warmup, _measured_export(flow2onnx, graph, os.path.join(folder, f"{label}.onnx"), verified, inputs)

    with tempfile.TemporaryDirectory() as folder:
        for label, tree in trees:
            warmup, first = export_with(label, tree)
            record["runs"][label] = {"export": first, "warmup_s": warmup["seconds"], "again_s": [], "probe_s": [first["probe_s"]]}
        # The same exports again, the trees taking turns: the machine's speed drifts by a third within
        # minutes (shared cores), so the median of several rounds is the steadier figure beside the
        # first export, and each tree's rounds meet the same drift.
        for _ in range(repeat - 1):
            for label, tree in trees:
                again = export_with(label, tree)[1]
                record["runs"][label]["again_s"].append(again["seconds"])
                record["runs"][label]["probe_s"].append(again["probe_s"])
        for label, tree in trees:
            run = record["runs"][label]
            if verify:
                run["verified"] = export_with(label, tree, verified=True)[1]
            print(f"  {size} ops, {label}: {json.dumps(run)}", file=sys.stderr, flush=True)
    return record


# ---------------------------------------------------------------- driver and report


def _deep_stack() -> None:
    """In the worker, before it starts: the stack may grow to the hard limit (usually unlimited).
    OneFlow 0.9's nn.Graph compile recurses along a chain of ops; at 100k ops it overflows the
    default 8 MiB stack and dies with SIGSEGV after about 8 minutes."""
    import resource

    _, hard = resource.getrlimit(resource.RLIMIT_STACK)
    resource.setrlimit(resource.RLIMIT_STACK, (hard, hard))


def run_size(size: int, before: str | None, verify: bool, timeout: float, eager: bool = False, repeat: int = 1, after: str | None = None) -> dict:
    trees = ([["before", os.path.abspath(before)]] if before else []) + [["after", os.path.abspath(after) if after else None]]
    command = [sys.executable, os.path.abspath(__file__), "--worker", str(size), "--trees", json.dumps(trees), "--repeat", str(repeat)]
    if not verify:
        command.append("--no-verify")
    if eager:
        command += ["--capture", "eager"]
    started = time.perf_counter()
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout, cwd=ROOT, preexec_fn=_deep_stack)
    if done.returncode != 0:
        return {"size": size, "error": f"worker exited with status {done.returncode}", "wall_s": time.perf_counter() - started}
    record = json.loads(done.stdout.strip().splitlines()[-1])
    record["wall_s"] = time.perf_counter() - started
    return record


def _export_seconds(run: dict) -> float:
    """The export call's wall time: its phases and everything between them (plugins loaded, result built)."""
    return run["export"]["seconds"]


def render(records: list, before: bool, eager: bool = False) -> str:
    flags = (" --capture eager" if eager else "") + (" --before TREE" if before else "")
    how = (
        "captured eagerly (`capture=\"eager\"`: no nn.Graph compile; read_graph is the capture, OneFlow's lazy build "
        "of each op included)"
        if eager
        else "compiled as an nn.Graph"
    )
    lines = [
        f"# Export at scale: synthetic chains of 1k to 100k ops{', eager capture' if eager else ''}",
        "",
        f"Measured {time.strftime('%Y-%m-%d')} with `python benchmarks/scale.py{flags}` on "
        f"{os.cpu_count()} CPU cores shared with other work. Model: blocks of `x + GELU(LayerNorm(Linear(x)))`, width 16, "
        f"13 OneFlow ops and 4 weights per block, {how} on a 2x16 input; export without verification "
        "(each phase), then again with verification. Peak: resident memory above what the process held just before the export. "
        "µs per op after read_graph: the export's cost once OneFlow's graph is read (lowering, checks, writing). "
        "Warm-up: each worker first exports a one-block chain (plugin discovery, imports, first-use set-up: the same at any "
        "size), so that the per-op figures are the cost that grows with the ops. Probe: a fixed piece of pure-Python work "
        "timed just before each export (median over the exports): the machine's speed then, for telling a slow stretch of "
        "the shared cores from a slow export.",
        "",
        "| ops | OneFlow compile s | tree | warm-up s | read_graph s | convert s | check s | write s | export s | µs per op | µs per op, median of the exports | µs per op after read_graph | probe ms | peak MiB | verify s | peak with verify MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for record in records:
        if "error" in record:
            lines.append(f"| {record['size']} | {record['error']} |")
            continue
        for label, run in record["runs"].items():
            timings, seconds = run["export"]["timings"], _export_seconds(run)
            verified = run.get("verified")
            ops = run["export"]["ops"]
            compiled = "-" if record.get("compile_s") is None else f"{record['compile_s']:.1f}"
            warmup = f"{run['warmup_s']:.2f}" if "warmup_s" in run else "-"
            lines.append(
                f"| {ops} | {compiled} | {label} | {warmup} | "
                + " | ".join(f"{timings.get(p, 0.0):.2f}" for p in EXPORT_PHASES)
                + f" | {seconds:.2f} | {seconds / ops * 1e6:.0f} | {_median_cell(run, ops)} | {(seconds - timings.get('read_graph', 0.0)) / ops * 1e6:.0f} | {_probe_cell(run)} | {run['export']['peak_mib']:.0f} | "
                + (f"{verified['timings'].get('verify', 0.0):.2f} | {verified['peak_mib']:.0f} |" if verified else "- | - |")
            )
    if before:
        lines += ["", "Cost per op, after / before (same graph, same process):", ""]
        lines += ["| ops | export | export, median | read_graph | convert | check | write | verify |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
        for record in records:
            runs = record.get("runs", {})
            if "before" in runs and "after" in runs:
                lines.append(_ratio_row(runs["before"], runs["after"]))
    lines += _linearity(records)
    return "\n".join(lines) + "\n"


def _median_cell(run: dict, ops: int) -> str:
    """The median µs per op over the first export and the ones after it (``n=3``), or ``-``."""
    again = run.get("again_s")
    if not again:
        return "-"
    every = [_export_seconds(run), *again]
    return f"{statistics.median(every) / ops * 1e6:.0f} (n={len(every)})"


def _probe_cell(run: dict) -> str:
    probes = run.get("probe_s")
    return f"{statistics.median(probes) * 1e3:.0f}" if probes else "-"


def _linearity(records: list) -> list[str]:
    """Per-op cost of each size against the smallest's, for the checkout measured ("after")."""
    runs = [(record["runs"]["after"]["export"], record) for record in records if "after" in record.get("runs", {})]
    if len(runs) < 2:
        return []
    def per_op(export, phase=None):
        seconds = export["seconds"] if phase is None else export["seconds"] - export["timings"].get("read_graph", 0.0)
        return seconds / export["ops"]
    first = runs[0][0]
    lines = ["", f"Cost per op against the smallest size ({first['ops']} ops), same checkout: 1.00 is linear.", ""]
    lines += ["| ops | export | after read_graph |", "| --- | --- | --- |"]
    for export, _ in runs:
        lines.append(f"| {export['ops']} | {per_op(export) / per_op(first):.2f} | {per_op(export, 'rest') / per_op(first, 'rest'):.2f} |")
    return lines


def _ratio_row(before: dict, after: dict) -> str:
    def ratio(a, b):
        return f"{a / b:.2f}" if b else "-"

    def median(run):
        return statistics.median([_export_seconds(run), *run.get("again_s", [])])

    cells = [ratio(_export_seconds(after), _export_seconds(before)), ratio(median(after), median(before))]
    cells += [ratio(after["export"]["timings"].get(p, 0.0), before["export"]["timings"].get(p, 0.0)) for p in EXPORT_PHASES]
    if "verified" in before and "verified" in after:
        cells.append(ratio(after["verified"]["timings"].get("verify", 0.0), before["verified"]["timings"].get("verify", 0.0)))
    else:
        cells.append("-")
    return f"| {after['export']['ops']} | " + " | ".join(cells) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1000,10000,20000,100000", help="op counts, comma-separated")
    parser.add_argument("--before", metavar="TREE", help="also export with the flow2onnx package in TREE, for ratios")
    parser.add_argument("--after", metavar="TREE", help="measure the flow2onnx package in TREE instead of the installed one (a frozen copy, so the checkout may change meanwhile)")
    parser.add_argument("--no-verify", action="store_true", help="skip the verified exports")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per size")
    parser.add_argument("--output", help="default benchmarks/results/scale.md (scale_eager.md with --capture eager)")
    parser.add_argument("--append", action="store_true", help="keep the sizes already in the output's .json (rerun sizes replace theirs)")
    parser.add_argument("--capture", choices=["graph", "eager"], default="graph", help="eager: no nn.Graph compile, so 100k ops fit in minutes (default output scale_eager.md)")
    parser.add_argument("--repeat", type=int, default=3, help="exports of each graph per tree, for the median beside the first (default 3)")
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--trees", help=argparse.SUPPRESS)
    args = parser.parse_args()
    eager = args.capture == "eager"
    args.output = args.output or os.path.join(RESULTS, "scale_eager.md" if eager else "scale.md")
    if args.worker is not None:
        print(json.dumps(worker(args.worker, json.loads(args.trees), not args.no_verify, eager, args.repeat)))
        os._exit(0)  # past OneFlow's native teardown, which can abort after the work is done
    json_path = os.path.splitext(args.output)[0] + ".json"
    records = []
    if args.append and os.path.exists(json_path):
        with open(json_path) as file:
            records = json.load(file)
    for size in (int(s) for s in args.sizes.split(",")):
        print(f"{size} ops ...", file=sys.stderr, flush=True)
        records = [r for r in records if r["size"] != size] + [run_size(size, args.before, not args.no_verify, args.timeout, eager, args.repeat, args.after)]
        records.sort(key=lambda record: record["size"])
        with open(json_path, "w") as file:
            json.dump(records, file, indent=1)
    text = render(records, bool(args.before), eager)
    with open(args.output, "w") as file:
        file.write(text)
    print(text)


if __name__ == "__main__":
    main()
