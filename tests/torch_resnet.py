"""A plain-torch ResNet with torchvision's state-dict names (torchvision does not import
here), for the weight-import tests: 7x7 or deep stem, stride on the 1x1 (Caffe / DeepLab-v2)
or on the 3x3 (v1.5), ceil- or floor-mode stem pool, per-stage dilations, channel width,
and the DeepLab-v2 ASPP head `layer5.conv2d_list.{0..3}` (summing its first `active`
branches)."""

import torch
from torch import nn


def _randomize_bn(module, generator):
    for m in module.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.weight.data = 1 + 0.2 * torch.randn(c, generator=generator)
            m.bias.data = 0.2 * torch.randn(c, generator=generator)
            m.running_mean.data = 0.2 * torch.randn(c, generator=generator)
            m.running_var.data = 0.5 + torch.rand(c, generator=generator)


class Bottleneck(nn.Module):
    def __init__(self, inplanes, planes, stride, dilation, stride_in_1x1, projection):
        super().__init__()
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = nn.Conv2d(inplanes, planes, 1, s1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, s3, padding=dilation, dilation=dilation,
                               bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU()
        self.downsample = (nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride, bias=False),
                                         nn.BatchNorm2d(planes * 4)) if projection else None)

    def forward(self, x):
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        return self.relu(y + (self.downsample(x) if self.downsample is not None else x))


class ASPPv2(nn.Module):
    def __init__(self, inplanes, num_classes, rates=(6, 12, 18, 24), active=2):
        super().__init__()
        self.conv2d_list = nn.ModuleList(
            nn.Conv2d(inplanes, num_classes, 3, padding=r, dilation=r) for r in rates)
        self.active = active

    def forward(self, x):
        return sum(conv(x) for conv in self.conv2d_list[:self.active])


class ResNet(nn.Module):
    """units: blocks per stage; dilations: one tuple per stage (stride 1 where > 1)."""

    def __init__(self, units=(1, 1, 1, 1), width=0.25, *, deep_stem=False,
                 stride_in_1x1=False, ceil_mode=False, strides=(1, 2, 2, 2),
                 dilations=None, in_channels=3, num_classes=None, fc=False, seed=0):
        super().__init__()
        c = lambda n: max(1, int(round(n * width)))  # noqa: E731
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(in_channels, c(64), 3, 2, 1, bias=False), nn.BatchNorm2d(c(64)),
                nn.ReLU(), nn.Conv2d(c(64), c(64), 3, 1, 1, bias=False), nn.BatchNorm2d(c(64)),
                nn.ReLU(), nn.Conv2d(c(64), c(128), 3, 1, 1, bias=False))
            inplanes = c(128)
        else:
            self.conv1 = nn.Conv2d(in_channels, c(64), 7, 2, 3, bias=False)
            inplanes = c(64)
        self.bn1 = nn.BatchNorm2d(inplanes)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1, ceil_mode=ceil_mode)
        dilations = dilations or [(1,) * n for n in units]
        for stage, (n, planes) in enumerate(zip(units, (64, 128, 256, 512)), 1):
            blocks = []
            for b in range(n):
                blocks.append(Bottleneck(inplanes, c(planes), strides[stage - 1] if b == 0 else 1,
                                         dilations[stage - 1][b], stride_in_1x1, b == 0))
                inplanes = c(planes) * 4
            setattr(self, f"layer{stage}", nn.Sequential(*blocks))
        self.layer5 = ASPPv2(inplanes, num_classes) if num_classes else None
        self.fc = nn.Linear(inplanes, 10) if fc else None
        generator = torch.Generator().manual_seed(seed)
        for p in self.parameters():
            p.data = 0.1 * torch.randn(p.shape, generator=generator)
        _randomize_bn(self, generator)
        self.eval()

    def forward(self, x):
        """{"P2".."P5", and "layer5" with a head}, NCHW."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        out = {}
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
            out[f"P{stage + 1}"] = x
        if self.layer5 is not None:
            out["layer5"] = self.layer5(x)
        return out


def state_dict_numpy(module, drop=()):
    """{key: numpy} of `module`'s state dict, without keys containing any of `drop`."""
    return {k: v.detach().numpy() for k, v in module.state_dict().items()
            if not any(d in k for d in drop)}
