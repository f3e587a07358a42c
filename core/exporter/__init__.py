"""The export pipeline: capture a OneFlow graph, lower it through the plugins' registry, write the
ONNX file, verify it on ONNX Runtime; plus the first-divergence finder and the tutorial API."""
