"""``python -m flow2onnx``: the same command as ``flow2onnx``."""

from .cli.main import console

console()
