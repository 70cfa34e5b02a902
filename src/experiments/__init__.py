"""experiments: transfer-learning experiments on PyTorch Lightning and Hydra.

Importing the package is cheap: torch, Lightning, timm and torchvision are imported only by the
sub-modules that need them, so config composition and validation answer fast.
"""

__version__ = "0.1.0"
