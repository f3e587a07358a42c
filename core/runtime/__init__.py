"""Running exported models: :mod:`.model` opens a file on the best execution provider that works and
checks inputs against it; :mod:`.imaging` prepares images and reads class labels.

The names of :mod:`.model`'s ``__all__`` are the runtime's public API, importable from here.
"""

from .model import *  # noqa: F401,F403
from .model import __all__  # noqa: F401
