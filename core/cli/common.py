"""What the ``flow2onnx`` commands share: reading a shape, and finding the user's model callable."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from ..errors import Flow2OnnxError


def parse_shape(text: str) -> tuple[int, ...]:
    """``--input-shape 1,3,224,224`` (or ``1x3x224x224``) as a tuple of positive integers."""
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a shape like 1,3,224,224") from None
    if not shape or any(dim <= 0 for dim in shape):
        raise argparse.ArgumentTypeError(f"{text!r}: every dimension must be a positive integer")
    return shape


def load_callable(spec: str):
    """The callable ``MODULE:CALLABLE`` names, found from the current directory too (like ``python -m``)."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise Flow2OnnxError(f"{spec!r} is not MODULE:CALLABLE (for example flowvision.models:resnet18)")
    sys.path.insert(0, os.getcwd())  # like `python -m`, let the user's own modules be found
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise Flow2OnnxError(f"cannot import module {module_name!r} for {spec!r}: {error}") from error
    except Exception as error:  # the user's module raised while it was imported
        raise Flow2OnnxError(
            f"importing module {module_name!r} for {spec!r} failed: {type(error).__name__}: {last_line(error)}; "
            f"fix the module (python -c 'import {module_name}' shows the whole traceback)"
        ) from error
    finally:
        sys.path.pop(0)
    target = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise Flow2OnnxError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise Flow2OnnxError(f"{spec!r} is not callable; it must return a oneflow.nn.Module or nn.Graph")
    return target


def last_line(error: Exception) -> str:
    """An exception's own last line, without its type, as words for a one-line error."""
    from .._oneflow import error_text

    return error_text(error).partition(": ")[2]
