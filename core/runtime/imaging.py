"""Image classification around an exported model: letterbox preprocessing, labels, top-k.

Preprocessing follows OneFlow's ONNX deployment tutorial: the image is scaled by its longer side so
that it fits the model's input size with its aspect ratio kept, placed in the top-left corner of a
black canvas of that size, scaled to [0, 1], optionally normalised per channel, laid out channels
first (HWC to CHW) and given a batch axis. Pillow does the decoding and resizing (bilinear, with
antialiasing when shrinking), so OpenCV is not needed.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ModelInputError

# Pillow modes for the channel counts a classifier takes.
_MODES = {1: "L", 3: "RGB"}


def load_image(path: str | os.PathLike) -> Image.Image:
    """Open an image file, upright (its EXIF orientation applied), fully decoded.

    :raises ModelInputError: the file is missing or not an image Pillow can read.
    """
    path = os.fspath(path)
    try:
        with warnings.catch_warnings():
            # Past Pillow's pixel limit an image is a decompression bomb, whether Pillow warns or refuses.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                upright = ImageOps.exif_transpose(image)
                upright.load()
                return upright
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as error:
        raise ModelInputError(
            f"image {path} is too large to decode safely ({error}); pass an image of at most "
            f"{Image.MAX_IMAGE_PIXELS:,} pixels, resized beforehand"
        ) from error
    except FileNotFoundError as error:
        raise ModelInputError(f"image file {path} does not exist; check the path") from error
    except IsADirectoryError as error:
        raise ModelInputError(f"{path} is a directory; pass an image file") from error
    except (UnidentifiedImageError, OSError, ValueError) as error:
        raise ModelInputError(
            f"cannot read {path} as an image ({error}); pass a JPEG, PNG, BMP or another format Pillow reads"
        ) from error


def letterbox(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale ``image`` by its longer side to fit ``size`` = (height, width), aspect ratio kept,
    and place it in the top-left corner of a black canvas of exactly that size."""
    height, width = size
    scale = min(width / image.width, height / image.height)
    scaled = (max(1, min(width, round(image.width * scale))), max(1, min(height, round(image.height * scale))))
    if scaled != image.size:
        image = image.resize(scaled, Image.Resampling.BILINEAR)
    canvas = Image.new(image.mode, (width, height))  # zeros: black in every mode
    canvas.paste(image, (0, 0))
    return canvas


def preprocess_image(
    image: Image.Image | str | os.PathLike,
    size: tuple[int, int],
    *,
    channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    dtype=np.float32,
) -> np.ndarray:
    """An image (or image file) as a classifier's input: shape ``[1, channels, height, width]``.

    :param size: the model's input (height, width); the image is letterboxed to it.
    :param channels: 3 for RGB, 1 for grayscale.
    :param mean: per-channel mean subtracted after scaling to [0, 1] (e.g. ImageNet's 0.485, 0.456, 0.406).
    :param std: per-channel standard deviation divided by after the mean.
    :raises ModelInputError: the file cannot be read, or the options do not fit ``channels``.
    """
    if channels not in _MODES:
        raise ModelInputError(f"image input needs 1 (grayscale) or 3 (RGB) channels, the model wants {channels}")
    if not isinstance(image, Image.Image):
        image = load_image(image)
    boxed = letterbox(image.convert(_MODES[channels]), size)
    array = np.asarray(boxed, dtype=np.float32) / 255.0
    if array.ndim == 2:
        array = array[:, :, None]
    for name, values in (("mean", mean), ("std", std)):
        if values is not None and len(values) not in (1, channels):
            raise ModelInputError(f"{name} needs 1 or {channels} values (one per channel), got {len(values)}")
    if mean is not None:
        array = array - np.asarray(mean, dtype=np.float32)
    if std is not None:
        if any(value == 0 for value in std):
            raise ModelInputError("std values must be non-zero")
        array = array / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(array.transpose(2, 0, 1)[None], dtype=dtype)


def load_labels(path: str | os.PathLike) -> list[str]:
    """Class names from a text file, one per line, in class order (trailing blank lines ignored).

    :raises ModelInputError: the file is missing, unreadable or empty.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            labels = [line.strip() for line in file.read().splitlines()]
    except FileNotFoundError as error:
        raise ModelInputError(f"labels file {path} does not exist; check the path") from error
    except (OSError, UnicodeDecodeError) as error:
        raise ModelInputError(f"cannot read labels file {path} ({error}); it must be UTF-8 text, one class name per line") from error
    while labels and not labels[-1]:
        labels.pop()
    if not labels:
        raise ModelInputError(f"labels file {path} is empty; write one class name per line, in class order")
    return labels


@dataclass(frozen=True)
class Prediction:
    """One of the top-k classes."""

    rank: int
    index: int
    #: The model's own score for the class (a logit or a probability).
    score: float
    #: The class's probability: the scores themselves when they already are a distribution, else their softmax.
    probability: float
    label: str | None = None

    @property
    def name(self) -> str:
        """The label when there is one, else ``class N``."""
        return self.label if self.label is not None else f"class {self.index}"


def top_k(scores, k: int = 5, labels: Sequence[str] | None = None) -> list[Prediction]:
    """The ``k`` best classes of one score vector (shape ``[classes]`` or ``[1, classes]``), best first.

    :raises ModelInputError: the scores are not one vector, or ``labels`` does not name every class.
    """
    vector = np.asarray(scores, dtype=np.float64)
    if vector.ndim == 2 and vector.shape[0] == 1:
        vector = vector[0]
    if vector.ndim != 1 or vector.size == 0:
        raise ModelInputError(f"top-k needs one vector of class scores, got an array of shape {list(np.shape(scores))}")
    if labels is not None and len(labels) != vector.size:
        raise ModelInputError(
            f"the labels file names {len(labels)} classes but the model scores {vector.size}; use the labels the model was trained with"
        )
    if k < 1:
        raise ModelInputError(f"top-k needs k >= 1, got {k}")
    probabilities = vector if _is_distribution(vector) else _softmax(vector)
    order = np.argsort(-vector, kind="stable")[:k]
    return [
        Prediction(rank, int(index), float(vector[index]), float(probabilities[index]), labels[index] if labels is not None else None)
        for rank, index in enumerate(order, start=1)
    ]


def _is_distribution(vector: np.ndarray) -> bool:
    return bool(np.all(vector >= 0) and np.all(vector <= 1) and abs(vector.sum() - 1.0) < 1e-3)


def _softmax(vector: np.ndarray) -> np.ndarray:
    shifted = np.exp(vector - vector.max())  # shifted by the maximum so that exp cannot overflow
    return shifted / shifted.sum()
