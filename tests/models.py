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
            # Ops that no built-in lowering covers (ONNX has neither erfc nor lgamma); should a family
            # come to lower one, these tests need another.
            return flow.erfc(x * 0.5) + flow.lgamma(x + 1) + flow.erfc(x * 0.25)

    return Unsupported()


def not_a_model():
    return 42


def uses_inverse():
    """A model with an op (inv, matrix inverse) that only the example plugin lowers."""

    class Inverse(flow.nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("identity", flow.eye(3))

        def forward(self, x):
            return flow.linalg.inv(x + 2 * self.identity) * 3

    return Inverse()


def drifting_scale():
    """A module whose output depends on how often it ran: the graph keeps the count of the call that
    built it, so the exported model no longer matches the module when verification runs it again."""
    calls = [0]

    class Drifting(flow.nn.Module):
        def forward(self, x):
            calls[0] += 1
            return x * float(calls[0])

    return Drifting().eval()


class SlowLinear(flow.nn.Module):
    """A linear layer whose every forward takes ``seconds``: verification runs it several times,
    which leaves time to interrupt an export while its staging folder exists."""

    def __init__(self, seconds=1.0):
        super().__init__()
        self.seconds = seconds
        self.fc = flow.nn.Linear(64, 64)

    def forward(self, x):
        import time

        time.sleep(self.seconds)
        return self.fc(x)


def slow_linear():
    return SlowLinear().eval()


def uses_softshrink():
    """A model with one op, softshrink, which has an attribute."""
    return flow.nn.Softshrink(0.5)


class _ReluLinear(flow.nn.Linear):
    """A Linear whose forward calls its parent's through ``super(type, obj)``, as flowvision's FAN does:
    inside an nn.Graph, ``self`` is the graph's proxy of the module, and Python refuses the call."""

    def forward(self, x):
        return super(_ReluLinear, self).forward(x).relu()


class GraphRefuses(flow.nn.Module):
    """Runs eagerly; OneFlow cannot build it as an nn.Graph (``super(type, obj)`` fails there)."""

    def __init__(self):
        super().__init__()
        self.head = _ReluLinear(4, 3)

    def forward(self, x):
        return self.head(x)


def graph_refuses():
    return GraphRefuses()


class _NanAndDouble(flow.nn.Module):
    def forward(self, x):
        return flow.log(-(x.abs() + 1.0)), x * 2.0


def nan_everywhere():
    """Two outputs: a log of negatives, NaN at every input, and a finite one."""
    return _NanAndDouble()
