"""Running exported models: :mod:`.model` opens a file on the best execution provider that works and
checks inputs against it; :mod:`.imaging` prepares images and reads class labels."""

from .model import (
    CPU,
    CUDA,
    PREFERRED_PROVIDERS,
    TENSORRT,
    Model,
    ModelInfo,
    TensorSpec,
    available_providers,
    check_external_data,
    check_model_file,
    describe,
    load_model_proto,
    provider_name,
)

__all__ = [
    "CPU",
    "CUDA",
    "PREFERRED_PROVIDERS",
    "TENSORRT",
    "Model",
    "ModelInfo",
    "TensorSpec",
    "available_providers",
    "check_external_data",
    "check_model_file",
    "describe",
    "load_model_proto",
    "provider_name",
]
