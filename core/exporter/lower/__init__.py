"""The lower stage: the plugins chosen, the second compilation, and every op lowered to ONNX nodes
(:mod:`.stage`; the conversion of one graph is :mod:`.converter`)."""

from .stage import Lowered, lower, select_plugins

__all__ = ["Lowered", "lower", "select_plugins"]
