"""Fused against unfused exports: ONNX nodes, ONNX Runtime latency, and what ONNX Runtime's transformer optimizer then finds.

For flowvision ViT, Swin and ConvNeXt (random weights) and a GPT-style stack of blocks, each exported
twice in the same run: with the fusion family (``flow2onnx-fusion``: LayerNormalization, Gelu) and
with it disabled through the plugin controls (``disable_plugins=["flow2onnx-fusion"]``), which is
the op-by-op export. Both are verified against OneFlow by the export itself. Then, for each file:

- its node count;
- its latency on ONNX Runtime's CPU provider (default graph optimizations, batch 1, median of
  ``--runs`` runs after warm-up runs, ``--threads`` intra-op threads);
- ``onnxruntime.transformers.optimizer.optimize_model`` on it: the fused operators it reports
  (Attention, MultiHeadAttention, SkipLayerNormalization, BiasGelu, …) and the optimized model's
  latency, measured the same way.

Ratios compare numbers of the same run, on the same machine::

    .venv/bin/python benchmarks/fusion.py                       # every model, opset 17 and 20
    .venv/bin/python benchmarks/fusion.py --models gpt --opsets 20 --runs 50
    .venv/bin/python benchmarks/fusion.py --markdown benchmarks/results/fusion.md
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import platform
import statistics
import sys
import tempfile
import time

import numpy as np
import onnx

import flow2onnx
from flow2onnx._oneflow import import_oneflow

flow = import_oneflow()

FUSION = "flow2onnx-fusion"
#: Model name -> (how to build it, example input shape, transformer optimizer's model type, heads, hidden size).
#: Heads and hidden size 0 let the optimizer detect them (Swin's change from stage to stage).
MODELS = {
    "vit": ("vit_tiny_patch16_224", (1, 3, 224, 224), "vit", 3, 192),
    "swin": ("swin_tiny_patch4_window7_224", (1, 3, 224, 224), "swin", 0, 0),
    "convnext": ("convnext_tiny_224", (1, 3, 224, 224), "bert", 0, 0),
    "gpt": ("gpt", (1, 128, 256), "gpt2", 4, 256),
}


class GPTBlock(flow.nn.Module):
    """A GPT-2 block as minGPT writes it: causal self-attention and an MLP with the tanh GELU written out."""

    def __init__(self, width: int, heads: int, context: int):
        super().__init__()
        self.heads = heads
        self.ln_1, self.ln_2 = flow.nn.LayerNorm(width), flow.nn.LayerNorm(width)
        self.c_attn, self.c_proj = flow.nn.Linear(width, 3 * width), flow.nn.Linear(width, width)
        self.c_fc, self.mlp_proj = flow.nn.Linear(width, 4 * width), flow.nn.Linear(4 * width, width)
        self.register_buffer("mask", flow.tril(flow.ones(context, context)).view(1, 1, context, context))

    def attention(self, x):
        batch, tokens, width = x.shape
        q, k, v = self.c_attn(x).split(width, dim=2)
        q, k, v = (t.view(batch, tokens, self.heads, width // self.heads).transpose(1, 2) for t in (q, k, v))
        scores = flow.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(width // self.heads))
        scores = scores.masked_fill(self.mask[:, :, :tokens, :tokens] == 0, float("-inf"))
        y = flow.matmul(flow.softmax(scores, dim=-1), v)
        return self.c_proj(y.transpose(1, 2).reshape(batch, tokens, width))

    def forward(self, x):
        x = x + self.attention(self.ln_1(x))
        h = self.c_fc(self.ln_2(x))
        h = 0.5 * h * (1.0 + flow.tanh(math.sqrt(2.0 / math.pi) * (h + 0.044715 * flow.pow(h, 3.0))))
        return x + self.mlp_proj(h)


def build(name: str):
    if name == "gpt":
        return flow.nn.Sequential(*[GPTBlock(256, 4, 128) for _ in range(4)]).eval()
    from flowvision.models import ModelCreator

    return ModelCreator.create_model(name, pretrained=False).eval()


def latencies_ms(paths, shape, runs: int, threads: int) -> list[float]:
    """Median wall time of one run of each model on ONNX Runtime's CPU provider, in milliseconds.

    The models run in turn, one run each per round, so that other load on the machine falls on all
    of them alike.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    sessions = [onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"]) for path in paths]
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    feeds = [{session.get_inputs()[0].name: x} for session in sessions]
    times = [[] for _ in sessions]
    for round_ in range(runs + 3):  # the first 3 rounds warm up
        for session, feed, spent in zip(sessions, feeds, times):
            started = time.perf_counter()
            session.run(None, feed)
            if round_ >= 3:
                spent.append(time.perf_counter() - started)
    return [1000 * statistics.median(spent) for spent in times]


def transformer_optimized(path: str, model_type: str, heads: int, hidden: int) -> tuple[str, dict]:
    """Run onnxruntime.transformers' optimizer on ``path``: the optimized file and its fused operator counts.

    As its default ``opt_level=1`` does: ONNX Runtime's basic optimizations (constant folding and
    the like) first, then the fusions. The first step is done here, with a session, because the
    optimizer's own imports PyTorch to do it. ``MatMulAddFusion`` is left out of that step, as the
    optimizer itself leaves it out at ``opt_level=2``: on a file of static shapes it turns each
    MatMul + Add into Reshape + Gemm + Reshape, which its attention fusion does not look for.
    """
    import onnxruntime
    from onnxruntime.transformers import optimizer

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = basic = path.replace(".onnx", ".basic.onnx")
    onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"], disabled_optimizers=["MatMulAddFusion"])
    optimized = optimizer.optimize_model(basic, model_type=model_type, num_heads=heads, hidden_size=hidden, opt_level=0)
    out = path.replace(".onnx", ".transformers.onnx")
    optimized.save_model_to_file(out)
    counts = {op: n for op, n in optimized.get_fused_operator_statistics().items() if n}
    return out, counts


def exported(key: str, opset: int, fused: bool, folder: str) -> dict:
    """Export one model one way (verified), and run the transformer optimizer on the file."""
    name, shape, model_type, heads, hidden = MODELS[key]
    path = os.path.join(folder, f"{key}-{opset}-{'fused' if fused else 'unfused'}.onnx")
    result = flow2onnx.export(build(name), [flow.randn(*shape)], path, opset=opset, disable_plugins=[] if fused else [FUSION])
    if not result.report.passed:
        raise SystemExit(f"{key} at opset {opset} did not verify:\n{result.report.to_text()}")
    optimized, counts = transformer_optimized(path, model_type, heads, hidden)
    return {
        "path": path,
        "optimized_path": optimized,
        "nodes": len(onnx.load(path, load_external_data=False).graph.node),
        "groups": len(result.pattern_groups),
        "optimized_nodes": len(onnx.load(optimized, load_external_data=False).graph.node),
        "fused_ops": counts,
    }


def measure(key: str, opset: int, folder: str, runs: int, threads: int) -> tuple[dict, dict]:
    """The unfused and the fused export of one model at one opset, each with its latencies."""
    plain, fused = (exported(key, opset, way, folder) for way in (False, True))
    paths = [plain["path"], fused["path"], plain["optimized_path"], fused["optimized_path"]]
    times = latencies_ms(paths, MODELS[key][1], runs, threads)
    plain["latency"], fused["latency"], plain["optimized_latency"], fused["optimized_latency"] = times
    return plain, fused


def describe(counts: dict) -> str:
    return ", ".join(f"{op} {n}" for op, n in sorted(counts.items())) or "none"


def attention(counts: dict) -> int:
    return sum(n for op, n in counts.items() if "Attention" in op)


def table(rows) -> str:
    """The results as a Markdown table, with fused/unfused ratios."""
    lines = [
        "| model | opset | nodes unfused → fused | groups fused | ORT ms unfused | ORT ms fused | fused/unfused "
        "| after transformer optimizer: nodes unfused → fused | ms unfused | ms fused | fused/unfused "
        "| attention fused (unfused → fused) | optimizer's fused ops, unfused | optimizer's fused ops, fused |",
        "|" + "---|" * 14,
    ]
    for key, opset, plain, fused in rows:
        lines.append(
            f"| {key} | {opset} | {plain['nodes']} → {fused['nodes']} | {fused['groups']} "
            f"| {plain['latency']:.2f} | {fused['latency']:.2f} | {fused['latency'] / plain['latency']:.2f} "
            f"| {plain['optimized_nodes']} → {fused['optimized_nodes']} | {plain['optimized_latency']:.2f} "
            f"| {fused['optimized_latency']:.2f} | {fused['optimized_latency'] / plain['optimized_latency']:.2f} "
            f"| {attention(plain['fused_ops'])} → {attention(fused['fused_ops'])} "
            f"| {describe(plain['fused_ops'])} | {describe(fused['fused_ops'])} |"
        )
    return "\n".join(lines)


def environment(args) -> str:
    import onnxruntime

    return (
        f"OneFlow {flow.__version__}, ONNX Runtime {onnxruntime.__version__} (CPUExecutionProvider, "
        f"{args.threads} intra-op thread{'s' if args.threads > 1 else ''}), onnx {onnx.__version__}, "
        f"Python {platform.python_version()}, {platform.machine()} with {os.cpu_count()} CPUs; batch 1, "
        f"median of {args.runs} runs after 3 warm-up runs, the four files of a row run in turn"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    parser.add_argument("--opsets", default="17,20", help="comma-separated opsets (LayerNormalization from 17, Gelu from 20)")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--markdown", help="also write the table, with the environment, to this file")
    args = parser.parse_args(argv)
    logging.getLogger("onnxruntime.transformers").setLevel(logging.ERROR)
    rows = []
    with tempfile.TemporaryDirectory(prefix="flow2onnx-fusion-") as folder:
        for key in args.models.split(","):
            for opset in map(int, args.opsets.split(",")):
                plain, fused = measure(key, opset, folder, args.runs, args.threads)
                rows.append((key, opset, plain, fused))
                print(f"{key} opset {opset}: {plain['nodes']} -> {fused['nodes']} nodes, "
                      f"{plain['latency']:.2f} -> {fused['latency']:.2f} ms", file=sys.stderr)
    text = table(rows)
    print(environment(args))
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as file:
            file.write(f"# Fusion benchmark\n\n`{' '.join(['benchmarks/fusion.py', *(argv or sys.argv[1:])])}`: {environment(args)}.\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
