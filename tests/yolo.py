"""YOLOv5 v6.0 as one-yolov5 builds it, from its model description, with random weights.

one-yolov5's export (``export.py``: a user ``nn.Graph`` over the eval-mode model, compiled by the
user, then ``convert_to_onnx_and_check``) is OneFlow's most-used deployment path. Its weights
come from the network, which tests cannot reach; the architecture comes from a yaml file, whose
content is :data:`ARCHITECTURE` here, and the modules below compute what one-yolov5's do: SiLU
convolutions with batch norm, C3 blocks, SPPF, nearest upsampling, and the ``Detect`` head that
keeps its grids and anchor grids as ``expand()`` views (stride 0) between calls, the tensors
that OneFlow 0.9 overwrote once a graph over them was compiled.
"""

from __future__ import annotations

import math

from .helpers import flow

nn = flow.nn

#: yolov5{n,s}.yaml (v6.0): the three anchor sets, and rows of (from, repeats, module, arguments).
ANCHORS = ([10, 13, 16, 30, 33, 23], [30, 61, 62, 45, 59, 119], [116, 90, 156, 198, 373, 326])
ARCHITECTURE = [
    # backbone
    (-1, 1, "Conv", [64, 6, 2, 2]),  # 0-P1/2
    (-1, 1, "Conv", [128, 3, 2]),  # 1-P2/4
    (-1, 3, "C3", [128]),
    (-1, 1, "Conv", [256, 3, 2]),  # 3-P3/8
    (-1, 6, "C3", [256]),
    (-1, 1, "Conv", [512, 3, 2]),  # 5-P4/16
    (-1, 9, "C3", [512]),
    (-1, 1, "Conv", [1024, 3, 2]),  # 7-P5/32
    (-1, 3, "C3", [1024]),
    (-1, 1, "SPPF", [1024, 5]),  # 9
    # head
    (-1, 1, "Conv", [512, 1, 1]),
    (-1, 1, "Upsample", [None, 2, "nearest"]),
    ([-1, 6], 1, "Concat", [1]),
    (-1, 3, "C3", [512, False]),  # 13
    (-1, 1, "Conv", [256, 1, 1]),
    (-1, 1, "Upsample", [None, 2, "nearest"]),
    ([-1, 4], 1, "Concat", [1]),
    (-1, 3, "C3", [256, False]),  # 17 (P3/8-small)
    (-1, 1, "Conv", [256, 3, 2]),
    ([-1, 14], 1, "Concat", [1]),
    (-1, 3, "C3", [512, False]),  # 20 (P4/16-medium)
    (-1, 1, "Conv", [512, 3, 2]),
    ([-1, 10], 1, "Concat", [1]),
    (-1, 3, "C3", [1024, False]),  # 23 (P5/32-large)
    ([17, 20, 23], 1, "Detect", ["nc", "anchors"]),
]
#: (depth multiple, width multiple) of each size.
SIZES = {"yolov5n": (0.33, 0.25), "yolov5s": (0.33, 0.50)}


class Conv(nn.Module):
    def __init__(self, c_in, c_out, k=1, s=1, p=None):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, s, k // 2 if p is None else p, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Bottleneck(nn.Module):
    def __init__(self, c_in, c_out, shortcut=True):
        super().__init__()
        self.cv1, self.cv2 = Conv(c_in, c_out, 1), Conv(c_out, c_out, 3)
        self.add = shortcut and c_in == c_out

    def forward(self, x):
        y = self.cv2(self.cv1(x))
        return x + y if self.add else y


class C3(nn.Module):
    def __init__(self, c_in, c_out, n=1, shortcut=True):
        super().__init__()
        hidden = c_out // 2
        self.cv1, self.cv2, self.cv3 = Conv(c_in, hidden), Conv(c_in, hidden), Conv(2 * hidden, c_out)
        self.m = nn.Sequential(*(Bottleneck(hidden, hidden, shortcut) for _ in range(n)))

    def forward(self, x):
        return self.cv3(flow.cat((self.m(self.cv1(x)), self.cv2(x)), 1))


class SPPF(nn.Module):
    def __init__(self, c_in, c_out, k=5):
        super().__init__()
        self.cv1, self.cv2 = Conv(c_in, c_in // 2), Conv(c_in // 2 * 4, c_out)
        self.m = nn.MaxPool2d(kernel_size=k, stride=1, padding=k // 2)

    def forward(self, x):
        x = self.cv1(x)
        y1 = self.m(x)
        y2 = self.m(y1)
        return self.cv2(flow.cat((x, y1, y2, self.m(y2)), 1))


class Concat(nn.Module):
    def __init__(self, dim=1):
        super().__init__()
        self.dim = dim

    def forward(self, xs):
        return flow.cat(xs, self.dim)


class Detect(nn.Module):
    """The detection head, with one-yolov5's grid cache: grids are rebuilt only when a level's size
    changes (or always, with ``dynamic``), and kept as ``expand()`` views in between."""

    def __init__(self, nc, anchors, channels, strides):
        super().__init__()
        self.nc, self.no, self.nl, self.na = nc, nc + 5, len(anchors), len(anchors[0]) // 2
        self.register_buffer("anchors", flow.tensor(anchors, dtype=flow.float32).view(self.nl, -1, 2))
        self.m = nn.ModuleList(nn.Conv2d(c, self.no * self.na, 1) for c in channels)
        self.stride = strides
        self.grid = [flow.empty(0) for _ in range(self.nl)]
        self.anchor_grid = [flow.empty(0) for _ in range(self.nl)]
        self.dynamic = False
        self.export = False

    def forward(self, xs):
        z = []
        for i in range(self.nl):
            x = self.m[i](xs[i])
            bs, _, ny, nx = x.shape
            x = x.view(bs, self.na, self.no, ny, nx).permute(0, 1, 3, 4, 2).contiguous()
            if self.dynamic or self.grid[i].shape[2:4] != x.shape[2:4]:
                self.grid[i], self.anchor_grid[i] = self._make_grid(nx, ny, i)
            xy, wh, conf = x.sigmoid().split((2, 2, self.nc + 1), 4)
            xy = (xy * 2 + self.grid[i]) * self.stride[i]
            wh = (wh * 2) ** 2 * self.anchor_grid[i]
            z.append(flow.cat((xy, wh, conf), 4).view(bs, self.na * nx * ny, self.no))
            xs[i] = x
        return (flow.cat(z, 1),) if self.export else (flow.cat(z, 1), xs)

    def _make_grid(self, nx, ny, i):
        shape = (1, self.na, ny, nx, 2)
        yv, xv = flow.meshgrid(flow.arange(ny, dtype=flow.float32), flow.arange(nx, dtype=flow.float32), indexing="ij")
        grid = flow.stack((xv, yv), 2).expand(shape) - 0.5
        anchor_grid = (self.anchors[i] * self.stride[i]).view((1, self.na, 1, 1, 2)).expand(shape)
        return grid, anchor_grid


class DetectionModel(nn.Module):
    """The layers of :data:`ARCHITECTURE` at one size, run in order with their saved outputs."""

    def __init__(self, size="yolov5n", nc=80):
        super().__init__()
        depth, width = SIZES[size]
        # Output channels by layer index; before the first layer, the image's 3 as "the last one".
        channels, layers, self.sources = [3], [], []
        for index, (source, repeats, kind, args) in enumerate(ARCHITECTURE):
            repeats = max(round(repeats * depth), 1) if repeats > 1 else repeats
            c_in = channels[source] if isinstance(source, int) else None
            if kind in ("Conv", "C3", "SPPF"):
                c_out = math.ceil(args[0] * width / 8) * 8
                if kind == "C3":
                    layer = C3(c_in, c_out, repeats, *args[1:])
                else:
                    layer = (Conv if kind == "Conv" else SPPF)(c_in, c_out, *args[1:])
            elif kind == "Upsample":
                layer, c_out = nn.Upsample(scale_factor=args[1], mode=args[2]), c_in
            elif kind == "Concat":
                layer, c_out = Concat(args[0]), sum(channels[k] for k in source)
            else:
                layer, c_out = Detect(nc, [list(a) for a in ANCHORS], [channels[k] for k in source], [8.0, 16.0, 32.0]), None
            layers.append(layer)
            self.sources.append(source)
            channels = ([] if index == 0 else channels) + [c_out]
        self.model = nn.ModuleList(layers)

    def forward(self, x):
        saved = []
        for layer, source in zip(self.model, self.sources):
            if isinstance(source, int):
                x = x if source == -1 else saved[source]
            else:
                x = [x if k == -1 else saved[k] for k in source]
            x = layer(x)
            saved.append(x)
        return x

    @property
    def detect(self) -> Detect:
        return self.model[-1]
