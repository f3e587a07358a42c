"""Train a small CNN on handwritten digits in OneFlow, export it with flow2onnx, run it on ONNX Runtime.

scikit-learn ships 1,797 handwritten digits as 8x8 grayscale images, so nothing is downloaded. A
small convolutional network trains on three quarters of them for a few seconds (fixed seeds); the
held-out quarter is then classified twice: by the OneFlow module and by the exported model on ONNX
Runtime (through ``flow2onnx.runtime``, on the best execution provider the machine has). The two
accuracies are printed side by side. The exit status is 1 when they differ or when accuracy is
not well above chance (10%).

Beside the model it writes a labels file and, for each digit, the first held-out example that
OneFlow classifies correctly as a PNG, to try the command line on::

    python examples/digits_demo.py [--output build/digits.onnx] [--epochs 12]
    flow2onnx run build/digits.onnx --image build/digits-samples/digit-7.png --labels build/digits-labels.txt
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LABELS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
CHANCE = 1 / len(LABELS)
# "Well above chance": a network that learnt nothing scores about 10%; this one scores over 90%.
MIN_ACCURACY = 0.8


def load_digits_split(seed: int = 0):
    """The digits as float32 images in [0, 1], shape [N, 1, 8, 8], split 75/25, stratified."""
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        sys.exit("the digits demo needs scikit-learn: pip install 'flow2onnx[demo]' (or: pip install scikit-learn)")
    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    labels = digits.target.astype(np.int64)
    return train_test_split(images, labels, test_size=0.25, random_state=seed, stratify=labels)


def build_network(flow):
    """Two 3x3 convolutions, a 2x2 max-pool and two fully connected layers: about 38k parameters."""
    nn = flow.nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, 64),
        nn.ReLU(),
        nn.Linear(64, len(LABELS)),
    )


def train(flow, network, images, labels, epochs: int, seed: int = 0, batch_size: int = 64) -> None:
    optimizer = flow.optim.Adam(network.parameters(), lr=3e-3)
    loss_function = flow.nn.CrossEntropyLoss()
    order_rng = np.random.default_rng(seed)
    network.train()
    started = time.perf_counter()
    for epoch in range(1, epochs + 1):
        order = order_rng.permutation(len(images))
        total = 0.0
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            loss = loss_function(network(flow.tensor(images[batch])), flow.tensor(labels[batch]))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.numpy()) * len(batch)
        print(f"  epoch {epoch:>2}/{epochs}: mean loss {total / len(images):.4f}  ({time.perf_counter() - started:.1f} s)")
    network.eval()


def write_try_it_files(directory: str, images, labels, predictions) -> tuple[str, list[str]]:
    """A labels file and one PNG per digit (its first held-out example that OneFlow gets right)."""
    from PIL import Image

    labels_path = os.path.join(directory, "digits-labels.txt")
    with open(labels_path, "w", encoding="utf-8") as file:
        file.write("\n".join(LABELS) + "\n")
    samples_dir = os.path.join(directory, "digits-samples")
    os.makedirs(samples_dir, exist_ok=True)
    samples = []
    for digit in range(len(LABELS)):
        hits = np.flatnonzero((labels == digit) & (predictions == digit))
        if not hits.size:
            continue
        pixels = np.round(images[hits[0], 0] * 255).astype(np.uint8)
        path = os.path.join(samples_dir, f"digit-{digit}.png")
        Image.fromarray(pixels, mode="L").save(path)
        samples.append(path)
    return labels_path, samples


def _shown(path: str) -> str:
    """``path`` relative to the current directory when it lies below it, else absolute."""
    relative = os.path.relpath(path)
    return path if relative.startswith(os.pardir) else relative


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", default=os.path.join(ROOT, "build", "digits.onnx"), help="where to write the model (default build/digits.onnx)")
    parser.add_argument("--epochs", type=int, default=12, help="training epochs (default 12, a few seconds on two CPU cores)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the split, the weights and the batch order")
    args = parser.parse_args(argv)

    import flow2onnx
    from flow2onnx._oneflow import import_oneflow
    from flow2onnx.runtime import Model

    flow = import_oneflow()
    import onnxruntime

    train_images, test_images, train_labels, test_labels = load_digits_split(args.seed)
    print(f"digits: {len(train_images)} for training, {len(test_images)} held out, 8x8 grayscale, 10 classes")

    flow.manual_seed(args.seed)
    network = build_network(flow)
    print(f"training a small CNN in OneFlow {flow.__version__} for {args.epochs} epochs:")
    train(flow, network, train_images, train_labels, args.epochs, seed=args.seed)

    with flow.no_grad():
        flow_logits = network(flow.tensor(test_images)).numpy()
    flow_predictions = flow_logits.argmax(axis=1)

    print(f"exporting to {args.output} with flow2onnx (dynamic batch) and verifying against OneFlow:")
    result = flow2onnx.export(network, [flow.tensor(test_images[:1])], args.output, dynamic_batch=True)
    print(result.report.to_text())

    model = Model(result.path)
    print(f"ONNX Runtime runs it on {model.provider}: {model.provider_note}")
    onnx_logits = model.run(test_images)[model.output_names[0]]
    onnx_predictions = onnx_logits.argmax(axis=1)

    flow_accuracy = float(np.mean(flow_predictions == test_labels))
    onnx_accuracy = float(np.mean(onnx_predictions == test_labels))
    agree = int(np.sum(flow_predictions == onnx_predictions))
    total = len(test_labels)
    rows = [
        (f"OneFlow {flow.__version__} (eager module)", flow_accuracy, int(np.sum(flow_predictions == test_labels))),
        (f"ONNX Runtime {onnxruntime.__version__} ({model.provider})", onnx_accuracy, int(np.sum(onnx_predictions == test_labels))),
    ]
    width = max(len(row[0]) for row in rows)
    print(f"\naccuracy on the {total} held-out digits (chance: {CHANCE:.0%}):")
    for name, accuracy, correct in rows:
        print(f"  {name:<{width}}  {accuracy:7.2%}  ({correct}/{total})")
    print(f"  predictions agree on {agree}/{total} digits; largest logit difference {np.max(np.abs(onnx_logits - flow_logits)):.2e}")

    labels_path, samples = write_try_it_files(os.path.dirname(result.path), test_images, test_labels, flow_predictions)
    if samples:
        print(f"\ntry it: flow2onnx run {_shown(result.path)} --image {_shown(samples[-1])} --labels {_shown(labels_path)}")

    if flow_accuracy != onnx_accuracy:
        print(f"FAILED: OneFlow and ONNX Runtime disagree ({flow_accuracy:.2%} vs {onnx_accuracy:.2%})", file=sys.stderr)
        return 1
    if onnx_accuracy < MIN_ACCURACY:
        print(f"FAILED: accuracy {onnx_accuracy:.2%} is not well above chance (needs {MIN_ACCURACY:.0%})", file=sys.stderr)
        return 1
    print("OneFlow and ONNX Runtime agree")
    return 0


if __name__ == "__main__":
    sys.exit(main())
