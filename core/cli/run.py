"""The ``run`` and ``info`` commands: run an exported model on ONNX Runtime, describe a model file.

Neither imports OneFlow: running and describing need only onnx, onnxruntime and Pillow.
"""

from __future__ import annotations

import argparse
import os
import re

import numpy as np

from ..errors import ModelInputError, OutputPathError

PRINT_OPTIONS = dict(precision=5, suppress=True, threshold=200, edgeitems=4, linewidth=120)


def _parse_providers(text: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"{text!r} names no provider; write e.g. cuda,cpu")
    return names


def _parse_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace(",", "x").split("x")
    try:
        height, width = (int(part) for part in parts) if len(parts) == 2 else (int(parts[0]),) * 2
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a size like 224 or 224x224 (height x width)") from None
    if height <= 0 or width <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: height and width must be positive")
    return height, width


def _parse_floats(text: str) -> list[float]:
    try:
        return [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers like 0.485,0.456,0.406") from None


def _open_model(args):
    from ..runtime.model import Model

    providers = [name for group in args.providers for name in group] if args.providers else None
    return Model(args.model, providers, tf32=args.tf32)


def _image_input(model, image, args) -> tuple[str, np.ndarray]:
    """The model's one input, filled from ``--image`` through the letterbox preprocessing."""
    from ..runtime.imaging import preprocess_image

    if len(model.inputs) != 1:
        raise ModelInputError(
            f"--image feeds a model with one input; this one has {len(model.inputs)} "
            f"({', '.join(model.input_names)}): give each with --input NAME=ARRAY.npy"
        )
    spec = model.inputs[0]
    if len(spec.shape) != 4 or spec.dtype is None or spec.dtype.kind != "f":
        raise ModelInputError(
            f"--image needs a model whose input is a float image batch [batch, channels, height, width]; input "
            f"{spec.name!r} is {spec.describe()}: use --input {spec.name}=ARRAY.npy"
        )
    _, channels, height, width = spec.shape
    if not isinstance(channels, int) or channels not in (1, 3):
        raise ModelInputError(f"--image fills 1 (grayscale) or 3 (RGB) channels; input {spec.name!r} is {spec.describe()}")
    if args.size is not None:
        height, width = args.size
    elif not (isinstance(height, int) and isinstance(width, int)):
        raise ModelInputError(
            f"input {spec.name!r} is {spec.describe()}: its height and width are not fixed, so give the size to "
            "resize to with --size HEIGHTxWIDTH"
        )
    array = preprocess_image(image, (height, width), channels=channels, mean=args.mean, std=args.std, dtype=spec.dtype)
    return spec.name, array


def _array_inputs(model, specs: list[str]) -> dict:
    """``--input NAME=FILE.npy`` (or a bare ``FILE.npy``, taken in input order) as a feed mapping."""
    named, positional = {}, []
    for text in specs:
        name, sep, path = text.partition("=")
        if sep and name in model.input_names:
            named[name] = _load_array(path, name)
        elif sep and not os.path.exists(text):
            raise ModelInputError(f"the model has no input {name!r}; its inputs are {model.input_summary()}")
        else:
            positional.append(text)
    feeds = dict(named)
    free = [name for name in model.input_names if name not in named]
    if len(positional) > len(free):
        raise ModelInputError(
            f"{len(positional)} arrays given without a name but only {len(free)} input(s) left to fill "
            f"({', '.join(free) or 'none'}); write --input NAME=ARRAY.npy"
        )
    for name, path in zip(free, positional):
        feeds[name] = _load_array(path, name)
    return feeds


def _load_array(path: str, name: str) -> np.ndarray:
    try:
        value = np.load(path, allow_pickle=False)
    except FileNotFoundError as error:
        raise ModelInputError(f"array file {path} for input {name!r} does not exist") from error
    except (OSError, ValueError) as error:
        raise ModelInputError(f"cannot read {path} for input {name!r} as a .npy array ({error}); save it with numpy.save") from error
    if not isinstance(value, np.ndarray):  # an .npz archive
        value.close()
        raise ModelInputError(f"{path} is an .npz archive; save the array for input {name!r} alone with numpy.save")
    return value


def _safe_file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name) or "output"


def cmd_run(args) -> int:
    """Run a model on an image (classified, top-k) or on .npy arrays (outputs printed)."""
    from ..runtime.imaging import load_image, load_labels, top_k

    if (args.image is None) == (not args.input):
        raise ModelInputError("give the model's input: --image PICTURE or --input NAME=ARRAY.npy (repeatable), not both")
    # The user's files are read first, so that a wrong path fails before the model loads.
    if args.save:
        _check_save_dir(args.save)
    labels = load_labels(args.labels) if args.labels else None
    image = load_image(args.image) if args.image is not None else None
    model = _open_model(args)
    if image is not None:
        name, array = _image_input(model, image, args)
        outputs = model.run({name: array})
        output_name = model.output_names[0]
        predictions = top_k(outputs[output_name], args.top_k, labels)
        print(f"{args.model} on {model.provider}")
        print(f"image {args.image} -> input {name!r} {list(array.shape)}, letterboxed")
        print(f"top {len(predictions)} of output {output_name!r}:")
        for prediction in predictions:
            print(f"  {prediction.rank:>2}. {prediction.probability:8.2%}  {prediction.name}" + (f"  (class {prediction.index})" if prediction.label is not None else ""))
    else:
        outputs = model.run(_array_inputs(model, args.input))
        print(f"{args.model} on {model.provider}")
        with np.printoptions(**PRINT_OPTIONS):
            for name, value in outputs.items():
                print(f"output {name!r} {list(value.shape)} {value.dtype}:")
                print(np.array2string(np.asarray(value)))
    if args.save:
        os.makedirs(args.save, exist_ok=True)
        for name, value in outputs.items():
            np.save(os.path.join(args.save, _safe_file_name(name) + ".npy"), value)
        print(f"saved {len(outputs)} output(s) to {args.save}")
    return 0


def _check_save_dir(directory: str) -> None:
    """Fail before running anything when ``--save`` cannot be a directory of output files."""
    if os.path.exists(directory) and not os.path.isdir(directory):
        raise OutputPathError(f"--save {directory}: that is a file, not a directory; name a directory for the .npy outputs")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as error:
        raise OutputPathError(f"--save {directory}: cannot create that directory ({error.strerror or error}); choose a writable one") from error
    if not os.access(directory, os.W_OK | os.X_OK):
        raise OutputPathError(f"--save {directory}: the directory is not writable; choose a writable one")


def cmd_info(args) -> int:
    """Print a model file's inputs, outputs, opsets, op histogram and parameters; exit status 1
    when ``onnx.checker`` rejects the model."""
    from ..runtime.model import describe

    info = describe(args.model)
    print(info.to_text())
    return 0 if info.checker_error is None else 1


def add_runtime_commands(commands) -> None:
    """Add ``run`` and ``info`` to the ``flow2onnx`` command's subparsers."""
    run = commands.add_parser(
        "run",
        help="run an ONNX model on ONNX Runtime: classify an image, or feed .npy arrays",
        description="Run an ONNX model on ONNX Runtime, on TensorRT, CUDA or the CPU (the first that works here, "
        "unless --providers says otherwise).",
    )
    run.add_argument("model", metavar="MODEL.onnx", help="the model file")
    run.add_argument("--image", metavar="PICTURE", help="classify this image: letterboxed to the model's input size, scaled to [0, 1]")
    run.add_argument("--input", action="append", metavar="NAME=ARRAY.npy", help="an input array saved with numpy.save (repeat for several inputs)")
    run.add_argument("--labels", metavar="LABELS.txt", help="class names, one per line, in class order (with --image)")
    run.add_argument("--top-k", type=int, default=5, metavar="K", help="how many classes to show (default 5)")
    run.add_argument("--size", type=_parse_size, metavar="HxW", help="resize to this size when the model's input size is not fixed")
    run.add_argument("--mean", type=_parse_floats, metavar="M[,M,M]", help="per-channel mean to subtract after scaling to [0, 1]")
    run.add_argument("--std", type=_parse_floats, metavar="S[,S,S]", help="per-channel standard deviation to divide by")
    run.add_argument(
        "--providers",
        type=_parse_providers,
        action="append",
        metavar="P[,P...]",
        help="execution providers in order of preference (e.g. cuda,cpu or tensorrt,cuda,cpu); default: automatic",
    )
    run.add_argument(
        "--tf32",
        action="store_true",
        help="let CUDA round float32 products to TF32 on GPUs that have it: faster, but outputs can leave the "
        "tolerance the export was verified with (default: full float32)",
    )
    run.add_argument("--save", metavar="DIR", help="also save every output as DIR/NAME.npy")
    run.set_defaults(run=cmd_run)

    info = commands.add_parser("info", help="describe an ONNX model: inputs, outputs, opsets, ops, parameters")
    info.add_argument("model", metavar="MODEL.onnx", help="the model file")
    info.set_defaults(run=cmd_info)
