"""Small models for tests that go through the CLI (MODULE:CALLABLE)."""

from flow2onnx._oneflow import import_oneflow

flow = import_oneflow()


class TinyCNN(flow.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = flow.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = flow.nn.BatchNorm2d(8)
        self.pool = flow.nn.AdaptiveAvgPool2d(1)
        self.fc = flow.nn.Linear(8, 4)

    def forward(self, x):
        x = flow.relu(self.bn(self.conv(x)))
        return self.fc(flow.flatten(self.pool(x), 1))


def tiny_cnn():
    return TinyCNN().eval()


def with_unsupported_ops():
    class Unsupported(flow.nn.Module):
        def forward(self, x):
            return flow.sin(x) + flow.cos(x) + flow.sin(x * 2)

    return Unsupported()


def not_a_model():
    return 42
