"""``python -m flow2onnx``: the same command as ``flow2onnx``."""

import sys

from .cli import main

sys.exit(main())
