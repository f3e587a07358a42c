"""The example plugin's own test, written the way a plugin author tests theirs."""

import onnx

from flow2onnx.testing import check_export, flow


class Inverse(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("identity", flow.eye(3))

    def forward(self, x):
        return flow.linalg.inv(x + 2 * self.identity)  # well conditioned for x in [0, 1)


def test_inv_lowering_matches_oneflow(tmp_path):
    result = check_export(Inverse(), [(4, 3, 3)], tmp_path / "inverse.onnx", opsets=[11, 17], dynamic_batch=True)
    assert result.lowered_by["inv"] == "example"
    assert result.custom_domains == {"com.microsoft": 1}


def test_metadata_post_pass(tmp_path):
    result = check_export(Inverse(), [(4, 3, 3)], tmp_path / "inverse.onnx", post_passes=["example-metadata"])
    metadata = {prop.key: prop.value for prop in onnx.load(result.path).metadata_props}
    assert metadata["converted_from"] == "oneflow"
