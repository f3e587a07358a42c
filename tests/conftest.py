"""Shared fixtures."""

import pytest


@pytest.fixture
def onnx_path(tmp_path):
    return tmp_path / "model.onnx"
