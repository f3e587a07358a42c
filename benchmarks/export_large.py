"""Export a synthetic transformer of about 2.5 GB of weights: time and peak memory against 1.5 x W.

A stack of 13 pre-norm transformer blocks (multi-head self-attention, GELU MLP, width 2048) is
created in OneFlow with random weights and exported with flow2onnx. The model exceeds protobuf's
2 GiB limit, so the weights go to ``model.onnx.data``, streamed from OneFlow's memory one tensor at
a time. Measured in this process, with the kernel's high-water mark reset (/proc/self/clear_refs)
before each phase:

1. the export alone (``verify=False``): peak resident memory above what the process held before,
   i.e. above OneFlow's own copy of the weights, compared with 1.5 x W;
2. the same export with verification: ONNX Runtime loads the written model and runs it, and every
   output is compared with OneFlow's at batch sizes 1, 2 and 5.

    python benchmarks/export_large.py [--layers 13] [--width 2048] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

from _procstat import status_kib  # benchmarks/_procstat.py

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")


def build(flow, layers: int, width: int):
    nn = flow.nn

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.heads = 16
            self.norm1 = nn.LayerNorm(width)
            self.qkv = nn.Linear(width, 3 * width)
            self.proj = nn.Linear(width, width)
            self.norm2 = nn.LayerNorm(width)
            self.fc1 = nn.Linear(width, 4 * width)
            self.fc2 = nn.Linear(4 * width, width)

        def forward(self, x):
            batch, tokens, _ = x.shape
            q, k, v = self.qkv(self.norm1(x)).reshape(batch, tokens, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
            attention = flow.softmax(flow.matmul(q, k.transpose(-2, -1)) * (width // self.heads) ** -0.5, dim=-1)
            x = x + self.proj(flow.matmul(attention, v).transpose(1, 2).reshape(batch, tokens, width))
            return x + self.fc2(nn.functional.gelu(self.fc1(self.norm2(x))))

    class Transformer(nn.Module):
        def __init__(self):
            super().__init__()
            self.blocks = nn.Sequential(*[Block() for _ in range(layers)])
            self.head = nn.Linear(width, 1000)

        def forward(self, x):
            return self.head(self.blocks(x).mean(dim=1))

    return Transformer().eval()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=13)
    parser.add_argument("--width", type=int, default=2048)
    parser.add_argument("--tokens", type=int, default=16)
    parser.add_argument("--keep", help="write the model here and keep it (default: a temporary directory)")
    args = parser.parse_args()

    import flow2onnx
    from flow2onnx._oneflow import import_oneflow

    flow = import_oneflow()
    flow.manual_seed(0)
    model = build(flow, args.layers, args.width)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    example = [flow.rand(1, args.tokens, args.width)]
    # One forward pass first, so that OneFlow's own copy of the weights is resident before the
    # baseline is taken: what is measured is the export's memory, not OneFlow's.
    with flow.no_grad():
        model(*example).numpy()
    directory = args.keep or tempfile.mkdtemp(prefix="flow2onnx-large-")
    path = os.path.join(directory, "model.onnx")
    rows = []
    try:
        for verify in (False, True):
            _reset_peak()
            baseline = status_kib("VmRSS") / 1024
            started = time.perf_counter()
            result = flow2onnx.export(model, example, path, verify=verify, dynamic_batch=True)
            seconds = time.perf_counter() - started
            above = status_kib("VmHWM") / 1024 - baseline
            rows.append((verify, seconds, baseline, above, result))
        sizes = {name: os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory)}
    finally:
        if not args.keep:
            shutil.rmtree(directory, ignore_errors=True)

    w_mib = weights / 2**20
    lines = [
        f"synthetic transformer: {args.layers} blocks, width {args.width}, {weights / 1e9:.2f} GB of float32 weights (W = {w_mib:.0f} MiB); "
        f"input 1x{args.tokens}x{args.width}, dynamic batch",
        "files: " + ", ".join(f"{name} {size / 2**20:.0f} MiB" for name, size in sorted(sizes.items())),
        "",
        "| phase | seconds | RSS before (MiB) | peak above it (MiB) | peak / W | bound 1.5 x W |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for verify, seconds, baseline, above, result in rows:
        phase = "export + verification (ONNX Runtime loads and runs the model)" if verify else "export alone"
        bound = "met" if above <= 1.5 * w_mib else "NOT met"
        lines.append(f"| {phase} | {seconds:.1f} | {baseline:.0f} | {above:.0f} | {above / w_mib:.2f} | {bound if not verify else '(export only)'} |")
    verified = rows[-1][-1]
    lines += [
        "",
        f"external data: {verified.external_data}; timings of the verified export: "
        + ", ".join(f"{phase} {s:.2f} s" for phase, s in verified.timings.items()),
        "",
        verified.report.to_markdown(),
    ]
    text = "\n".join(lines)
    print(text)
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "export_large.md"), "w") as out:
        out.write(f"# Export benchmark: a model over 2 GB\n\nMeasured {time.strftime('%Y-%m-%d')} on {os.cpu_count()} CPU cores.\n\n{text}\n")
    return 0 if verified.report.passed and rows[0][3] <= 1.5 * w_mib else 1


if __name__ == "__main__":
    sys.exit(main())
