"""Tensor parallel across two processes, exported into one single-device ONNX file.

LiBai splits large weights across ranks: a column-parallel linear holds a slice of the output
features on each rank (SBP ``split(0)``), a row-parallel linear a slice of the input features
(``split(1)``). This benchmark launches itself on two CPU processes with OneFlow's own launcher
(``python -m oneflow.distributed.launch --nproc_per_node 2``), builds such a model with its weights
split across the two ranks, compiles it as an ``nn.Graph`` and calls ``flow2onnx.export`` on every
rank, as a LiBai script would. Each rank verifies its file against the distributed graph; rank 0
then compares its file on ONNX Runtime with the same model built in one process from the same
weights. Results go to ``benchmarks/results/two_ranks.md``.

    python benchmarks/two_ranks.py [--width 256] [--layers 4]
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import subprocess
import sys
import tempfile
import time

RESULTS = pathlib.Path(__file__).resolve().parent / "results" / "two_ranks.md"


def _model(flow, width: int, layers: int):
    class Block(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.up = flow.nn.Linear(width, 4 * width)
            self.down = flow.nn.Linear(4 * width, width)

        def forward(self, x):
            return x + self.down(flow.nn.functional.gelu(self.up(x)))

    return flow.nn.Sequential(*[Block() for _ in range(layers)]).eval()


def _split_weights(flow, model, placement):
    """Every tensor broadcast, then each block's up-projection split by rows (column parallel) and its
    down-projection by columns (row parallel), as LiBai's parallel linears lay them out."""
    model.to_global(placement=placement, sbp=flow.sbp.broadcast)
    for block in model:
        block.up.weight = flow.nn.Parameter(block.up.weight.to_global(placement=placement, sbp=flow.sbp.split(0)))
        block.up.bias = flow.nn.Parameter(block.up.bias.to_global(placement=placement, sbp=flow.sbp.split(0)))
        block.down.weight = flow.nn.Parameter(block.down.weight.to_global(placement=placement, sbp=flow.sbp.split(1)))


def rank_main(args) -> None:
    import numpy as np

    import flow2onnx
    from flow2onnx._oneflow import import_oneflow

    flow = import_oneflow()
    rank = flow.env.get_rank()
    placement = flow.placement("cpu", ranks=[0, 1])
    flow.manual_seed(0)
    model = _model(flow, args.width, args.layers)
    single = {name: tensor.numpy().copy() for name, tensor in model.state_dict().items()}
    _split_weights(flow, model, placement)
    local_rows = model[0].up.weight.to_local().shape[0]

    class Distributed(flow.nn.Graph):
        def __init__(self):
            super().__init__()
            self.model = model

        def build(self, x):
            return self.model(x)

    graph = Distributed()
    x = np.random.default_rng(0).standard_normal((4, args.width)).astype(np.float32)
    graph._compile(flow.tensor(x, placement=placement, sbp=flow.sbp.broadcast))
    path = pathlib.Path(args.out) / f"model-rank{rank}.onnx"
    start = time.perf_counter()
    result = flow2onnx.export(graph, None, path)
    seconds = time.perf_counter() - start
    print(f"rank {rank}: {local_rows} of {4 * args.width} rows of each up-projection; export {seconds:.2f} s; verified {result.report.passed}", flush=True)
    if rank != 0:
        return
    import onnxruntime

    reference = _model(flow, args.width, args.layers)
    reference.load_state_dict({name: flow.tensor(value) for name, value in single.items()})
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(None, {"input": x})[0]
    want = reference(flow.tensor(x)).numpy()
    print(f"single-process model: max abs diff {float(np.abs(got - want).max()):.3e} (max |output| {float(np.abs(want).max()):.3e})", flush=True)
    print(f"file: {path.stat().st_size / 2**20:.2f} MiB; single-process weights: {sum(v.nbytes for v in single.values()) / 2**20:.2f} MiB", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.out:  # a rank, started by OneFlow's launcher
        rank_main(args)
        return 0
    with tempfile.TemporaryDirectory(prefix="flow2onnx-two-ranks-") as out:
        command = [sys.executable, "-m", "oneflow.distributed.launch", "--nproc_per_node", "2", __file__,
                   "--width", str(args.width), "--layers", str(args.layers), "--out", out]
        start = time.perf_counter()
        run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
        seconds = time.perf_counter() - start
    lines = [line for line in run.stdout.splitlines() if line.startswith(("rank ", "single-process", "file:"))]
    print("\n".join(lines) or run.stdout + run.stderr[-3000:])
    if run.returncode != 0:
        print(f"the launch failed with status {run.returncode}", file=sys.stderr)
        return 1
    RESULTS.write_text(
        "# Two ranks, one ONNX file\n\n"
        f"`python benchmarks/two_ranks.py --width {args.width} --layers {args.layers}`, "
        f"{datetime.date.today().isoformat()}, two CPU processes started by OneFlow's launcher ({seconds:.1f} s in all).\n\n"
        "Each block's up-projection is split by rows across the two ranks and its down-projection by columns; "
        "every rank exports the compiled graph and verifies it against the distributed graph; rank 0 compares its "
        "file with the same model built in one process.\n\n```\n" + "\n".join(lines) + "\n```\n"
    )
    print(f"wrote {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
