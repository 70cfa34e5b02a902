"""Custom models: plain ``nn.Module`` classifiers that take ``num_classes`` and ``in_chans``.

Any user module with that constructor works through ``model=custom``; ``SmallCNN``, ``SmallResNet``
and ``EncoderDecoderClassifier`` ship with the framework. Their last ``nn.Linear`` is the head (see
:func:`experiments.models.core.find_head`).
"""

from __future__ import annotations

import math

from torch import nn

from experiments.errors import ModelError
from experiments.models.core import ModelInfo, ModelSpec, Preprocessing, find_head
from experiments.config.arguments import accepted_kwargs


class SmallCNN(nn.Module):
    """A small convolutional classifier for small images (the digits default).

    Three conv stages (conv-BN-ReLU, the first two followed by 2x2 max-pooling), global average
    pooling, dropout and a linear head. Works for any input size >= 4x4.
    """

    def __init__(
        self, num_classes: int, in_chans: int = 1, width: int = 32, dropout: float = 0.1
    ) -> None:
        super().__init__()

        def stage(cin: int, cout: int, pool: bool) -> nn.Sequential:
            layers: list[nn.Module] = [
                nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                nn.BatchNorm2d(cout),
                nn.ReLU(inplace=True),
            ]
            if pool:
                layers.append(nn.MaxPool2d(2))
            return nn.Sequential(*layers)

        self.stage1 = stage(in_chans, width, pool=True)
        self.stage2 = stage(width, 2 * width, pool=True)
        self.stage3 = stage(2 * width, 4 * width, pool=False)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.pool(self.stage3(self.stage2(self.stage1(x)))))


class LeNetBN(nn.Module):
    """A LeNet-style digits network with BatchNorm and a flattened feature layer.

    Three conv-BN-ReLU-maxpool blocks (kernel 5, 3, 3; widths ``width * (1, 2, 4)``) halve the
    resolution each, then the feature map is FLATTENED (no global pooling: where a stroke lies is
    kept, which the digits-M task needs) into a fully connected ``features``-wide layer
    (Linear-BN-ReLU-dropout) and a linear head. Blocks for fine-tuning: ``block1`` .. ``block3``,
    ``features`` (four, input side first). ``input_hw`` (from the data) sizes the flattened layer.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, input_hw: tuple[int, ...] | None = (32, 32),
                 width: int = 32, features: int = 256, dropout: float = 0.5) -> None:
        super().__init__()

        def block(cin: int, cout: int, kernel: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout),
                                 nn.ReLU(inplace=True), nn.MaxPool2d(2))

        h, w = tuple(input_hw or (32, 32))[-2:]
        if h < 8 or w < 8:
            raise ModelError(f"model=lenet_bn halves the image three times and needs at least 8x8 inputs, "
                             f"got {h}x{w}; resize the data (data.image_size=32)")
        self.block1 = block(in_chans, width, 5)
        self.block2 = block(width, 2 * width, 3)
        self.block3 = block(2 * width, 4 * width, 3)
        flat = 4 * width * (h // 8) * (w // 8)
        self.features = nn.Sequential(nn.Flatten(), nn.Linear(flat, features, bias=False), nn.BatchNorm1d(features),
                                      nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.fc = nn.Linear(features, num_classes)

    def forward(self, x):
        return self.fc(self.features(self.block3(self.block2(self.block1(x)))))


class ResidualBlock(nn.Module):
    """Two 3x3 conv-BN layers with a skip connection (1x1 conv-BN when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class SmallResNet(nn.Module):
    """A small ResNet for 32x32 images: a conv-BN-ReLU stem, four residual stages of widths
    ``width * (1, 2, 4, 8)``, each halving the resolution (32x32 -> 2x2: cheap enough for CPU
    sweeps), global average pooling and a linear head. Its blocks for fine-tuning are ``stem``,
    ``stage1`` .. ``stage4`` (five, input side first), so ``partial`` and ``gradual`` have depths to
    choose from. Any input size works.
    """

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 16, dropout: float = 0.0) -> None:
        super().__init__()
        widths = [width, 2 * width, 4 * width, 8 * width]
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, padding=1, bias=False), nn.BatchNorm2d(width),
                                  nn.ReLU(inplace=True))
        self.stage1 = ResidualBlock(width, widths[0], stride=2)
        self.stage2 = ResidualBlock(widths[0], widths[1], stride=2)
        self.stage3 = ResidualBlock(widths[1], widths[2], stride=2)
        self.stage4 = ResidualBlock(widths[2], widths[3], stride=2)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout))
        self.fc = nn.Linear(widths[3], num_classes)

    def forward(self, x):
        x = self.stage4(self.stage3(self.stage2(self.stage1(self.stem(x)))))
        return self.fc(self.pool(x))


class EncoderDecoderClassifier(nn.Module):
    """The classic custom-module shape: an ``encoder`` ``Linear(in, k)`` and a ``decoder``.

    The input is flattened; ``in_features`` is ``in_chans * H * W`` and is given by the data
    (``input_shape``), so it is never typed twice. The decoder ends in the classification layer.
    """

    def __init__(
        self,
        num_classes: int,
        in_chans: int = 1,
        input_hw: tuple[int, ...] | None = (8, 8),
        hidden: int = 64,
    ) -> None:
        super().__init__()
        in_features = in_chans * math.prod(input_hw or ())  # 1-D data: input_shape (F,) -> in_chans=F
        self.encoder = nn.Sequential(nn.Flatten(), nn.Linear(in_features, hidden), nn.ReLU())
        self.decoder = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.decoder(self.encoder(x))


def build_custom(
    net,
    num_classes: int,
    in_chans: int = 1,
    input_hw: tuple[int, int] | None = None,
    name: str = "custom",
    head: str | None = None,
    group_matcher: dict | None = None,
    pretrained: bool = False,
) -> ModelSpec:
    """A user ``nn.Module`` class (a Hydra ``_partial_``) as a :class:`ModelSpec`.

    ``net`` is called with ``num_classes`` and, when its signature accepts them, ``in_chans`` and
    ``input_hw`` (from the data). ``head`` names the classifier (default: the last nn.Linear);
    blocks are the top-level children unless a timm-style ``group_matcher`` is given.
    ``pretrained`` has no meaning for a custom module: use ``model.weights``.
    """
    if pretrained:
        raise ModelError(
            f"model.pretrained=true has no weights to fetch for the custom model {name!r}; "
            "give model.weights=PATH instead"
        )
    module = net(**accepted_kwargs(net, num_classes=num_classes, in_chans=in_chans,
                                   input_hw=tuple(input_hw) if input_hw else None))
    return ModelSpec(module, head or find_head(module), group_matcher, Preprocessing(in_chans=in_chans),
                     ModelInfo("custom", name))


