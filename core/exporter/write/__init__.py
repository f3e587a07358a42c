"""The write stage: the model written, its weights streamed from OneFlow's memory
(:mod:`flow2onnx.exporter.serialize`), into a staging folder beside the target, and published by
renaming once verified (:mod:`.staging`); the repro bundle (:mod:`.bundle`)."""

from .staging import Published, Staged, Staging, resolve_target, staging_folder

__all__ = ["Published", "Staged", "Staging", "resolve_target", "staging_folder"]
