"""Model registry: the four architectures of the papers, each exposing its probe layers exactly.

Every model is a :class:`ProbedModel`: ``forward(x)`` gives the pre-softmax logits and
``forward_layers(x, layers)`` gives the same logits together with the activations of the named
probe layers, computed in one explicit forward pass (no hooks).  All operations are out of place
(``F.relu``, ``out + identity``, non-inplace dropout), so a tensor returned for one layer is never
modified by a later operation.  ``classifier`` is the pre-softmax ``nn.Linear`` (the weights that
VeLPIC class vectors replace, section 8), and ``classifier(flatten(acts[last_probe_layer]))`` equals
the logits.

Architectures (sizes on the paper's dataset; every model also runs on the 8x8 grayscale ``digits``)
---------------------------------------------------------------------------------------------------

=========  ======================================================  ===================================
model      layers                                                  probe dims on the paper's dataset
=========  ======================================================  ===================================
mlp        flatten -> [Linear -> ReLU] x4 (128, 512, 2048, 2048)   MNIST / CIFAR-10:
           -> Linear(2048, K)                                       fc1..fc4 = 128, 512, 2048, 2048
cnn        3 blocks [conv3x3 p1 -> ReLU -> conv3x3 p1 -> ReLU ->    CIFAR-10: block1 16x16x16 = 4096,
           maxpool 2/2] with 16, 32, 64 filters -> flatten ->       block2 2048, block3 = flat = 1024,
           [Linear 250 -> ReLU] x3 -> Linear(250, K, bias=False)    fc1..fc3 = 250 (MNIST: flat = 576)
alexnet    conv11x11/4 p2 (64) -> pool, conv5x5 p2 (192) -> pool,   Tiny ImageNet (64x64): conv1 64x7x7,
           conv3x3 (384), conv3x3 (256), conv3x3 (256) -> pool,     conv2 192x3x3, conv3 384x3x3,
           all ReLU; pool = maxpool 3/2; flatten -> Linear 4096     conv4 256x3x3, conv5 256x1x1 = 256,
           -> ReLU -> Linear 4096 -> ReLU -> Linear(4096, K)        fc1 = fc2 = 4096
resnet18   stem conv3x3/1 (64) -> BN -> ReLU -> maxpool 3/2 p1      CIFAR-10: L0 = L1 = 64x16x16
           (= L0); layer1..layer4 of two BasicBlocks each           = 16384, L2 8192, L3 4096,
           (64, 128, 256, 512 channels; strides 1, 2, 2, 2);        L4 2048, avg_pool 512
           adaptive avg pool 1x1 -> flatten (= avg_pool) -> fc
=========  ======================================================  ===================================

Probe layers (names as the papers use them, in forward order):

* ``mlp``: ``fc1, fc2, fc3, fc4`` -- the four hidden layers after ReLU (authors' ``after_relu_fc*``).
* ``cnn``: ``block1, block2, block3`` (after each block's max-pool), ``flat`` (the flattened
  ``block3``, the papers' "CNN-Flat (1024)"), ``fc1, fc2, fc3`` (after ReLU).  The papers report
  ``flat`` and ``fc1..fc3`` (authors' ``input_fc_0`` and ``output_fc_*_after_noise_relu``); the
  three convolutional blocks are extra.  See :attr:`ProbedModel.paper_layers`.
* ``alexnet``: ``conv1 .. conv5`` (after ReLU and, for conv1/conv2/conv5, after the max-pool that
  follows), ``fc1, fc2`` (after ReLU).  ``conv5`` is what the authors call ``after_flatten``
  (256 dims on Tiny ImageNet); the papers report ``conv5 (flatten), fc1, fc2``.
* ``resnet18``: ``L0`` (stem output, before the first residual stage), ``L1 .. L4`` (outputs of
  layer1..layer4), ``avg_pool`` (flattened global average pool, 512) -- Appendix A.

Dropout variants (``dropout=True``; Appendix I)
-----------------------------------------------

* ``cnn``: ``Dropout(0.2)`` after every fully connected layer (after its ReLU); ``fc1..fc3`` are read
  after the dropout ("for models trained with dropout, we plot the results after the dropout
  layer").  The authors' code also applied ``torch.renorm(x, 1, 1, 3)`` (a batch-dependent max-norm
  that stays active in eval mode) after each dropout; that is not reproduced here.
* ``resnet18``: ``Dropout(0.2)`` before ``fc``; ``avg_pool`` is read after it.
* ``mlp`` (not in the papers): ``Dropout(0.2)`` after each hidden layer's ReLU, read after it.
* ``alexnet`` (not in the papers): ``Dropout(0.5)`` before ``fc1`` and before ``fc2``, as in the
  authors' commented-out dropout classifier and torchvision's AlexNet; probe layers are unaffected
  (the dropout sits between a probe layer and the next Linear).

In eval mode dropout is the identity, so activations and logits do not depend on it.

AlexNet geometry and small inputs
---------------------------------

The AlexNet is the authors' Tiny ImageNet model (``AlexNet(tiny_imagenet=True)`` in their
``cnn_create.py``): torchvision's AlexNet feature extractor (first conv 11x11, stride 4, padding 2)
without the adaptive average pool, so a 64x64 input reaches the classifier as 256x1x1 and ``fc1``
has 256 inputs, exactly as in their code (``nn.Linear(256 * 1 * 1, 4096)``).  To run on inputs
smaller than 64x64 (8x8 ``digits``, 28x28 MNIST, 32x32 CIFAR) each 3x3/stride-2 max-pool shrinks
its window to ``min(3, side)`` when the feature map is smaller than 3, which leaves the 64x64
geometry unchanged and turns a 2-pixel map into 1 and a 1-pixel map into an identity.  The
``fc1`` input size is computed from ``image_size`` (``256 * side**2``).  Inputs need
``image_size >= 7`` (the 11x11 conv with padding 2).

Training defaults (:data:`MODELS`)
----------------------------------

=========  =========  ======  ========  =========================  =====  =============
model      optimizer  lr      momentum  batch size                 late   normalization
=========  =========  ======  ========  =========================  =====  =============
mlp        SGD        1e-3    0.9       32                         5      unit (x/255)
cnn        Adam       2e-4    --        128; cifar10: 32           5      standardize
alexnet    Adam       1e-4    --        500                        10     standardize
resnet18   SGD        1e-3    0.9       32                         5      standardize
=========  =========  ======  ========  =========================  =====  =============

Sources: Appendix A of "Dynamics and transferability of latent generalization" (optimizers,
learning rates, MLP/ResNet batch sizes, normalization) and section 3.2 (checkpoints every 2 epochs
up to 20, then every 5 epochs, every 10 for AlexNet: ``late_checkpoint_interval``).  The CNN batch
sizes follow the authors' code (``model_params`` / ``test_loading`` in ``cnn_create.py``: 32 for
CIFAR-10, 128 for MNIST, Fashion-MNIST and CIFAR-100); Appendix A's text has them the other way
round.  AlexNet's Adam lr 1e-4 and batch 500 are from the same code.  "standardize" is per-channel
mean/std of the training set (Appendix A for the CNN and ResNet-18); note that the authors' code
actually fed Tiny ImageNet to AlexNet as ``ToTensor()`` only (x/255) -- override
``normalization`` per run if that is wanted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Callable, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ProbedModel", "MLP", "CNN", "AlexNet", "ResNet18", "BasicBlock",
    "ModelSpec", "MODELS", "build_model", "layer_dims",
]


# ----------------------------------------------------------------------------- base class

class ProbedModel(nn.Module):
    """A classifier whose probe-layer activations can be read exactly.

    Subclasses set the class attributes below and implement :meth:`_forward_all`, the one forward
    pass that both :meth:`forward` and :meth:`forward_layers` run, so their logits are identical.
    """

    #: probe layer names, in forward order
    probe_layers: tuple[str, ...] = ()
    #: the probe layers the papers report (a subset of ``probe_layers``)
    paper_layers: tuple[str, ...] = ()
    #: the probe layer whose flattened output feeds :attr:`classifier`
    last_probe_layer: str = ""
    #: attribute name of the pre-softmax Linear layer
    _classifier_attr: str = ""

    def _forward_all(self, x: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the activations of *every* probe layer (subclasses implement this)."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Pre-softmax logits, shape ``(N, num_classes)``."""
        logits, _ = self._forward_all(x)
        return logits

    def forward_layers(self, x: Tensor, layers: Iterable[str] | None = None
                       ) -> tuple[Tensor, dict[str, Tensor]]:
        """Logits and the activations of ``layers`` (default: all probe layers, in forward order).

        Each activation is the tensor at that point of the forward pass, unflattened (the caller
        flattens); no later operation modifies it.
        """
        names = self.probe_layers if layers is None else tuple(layers)
        unknown = [name for name in names if name not in self.probe_layers]
        if unknown:
            raise ValueError(f"unknown probe layer(s) {unknown} for {type(self).__name__}; "
                             f"probe layers are {list(self.probe_layers)}")
        logits, acts = self._forward_all(x)
        return logits, {name: acts[name] for name in names}

    @property
    def classifier(self) -> nn.Linear:
        """The pre-softmax linear layer (its input is ``flatten(acts[last_probe_layer])``)."""
        return getattr(self, self._classifier_attr)


# ----------------------------------------------------------------------------- MLP

class MLP(ProbedModel):
    """Four hidden layers (128, 512, 2048, 2048), each Linear -> ReLU [-> Dropout(0.2)]."""

    HIDDEN = (128, 512, 2048, 2048)
    DROPOUT_P = 0.2
    probe_layers = ("fc1", "fc2", "fc3", "fc4")
    paper_layers = probe_layers
    last_probe_layer = "fc4"
    _classifier_attr = "output"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        widths = (in_channels * image_size * image_size, *self.HIDDEN)
        # registered in forward order: fc1..fc4, then the output layer
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Linear(a, b) for a, b in zip(widths, widths[1:]))
        self.output = nn.Linear(self.HIDDEN[-1], num_classes)
        self.dropout = nn.Dropout(self.DROPOUT_P) if dropout else nn.Identity()

    def _forward_all(self, x):
        acts = {}
        h = torch.flatten(x, 1)
        for name in self.probe_layers:
            h = self.dropout(F.relu(getattr(self, name)(h)))
            acts[name] = h
        return self.output(h), acts


# ----------------------------------------------------------------------------- CNN

def _conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 p1 -> ReLU -> conv3x3 p1 -> ReLU -> maxpool 2x2/2 (ReLUs not in place)."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1), nn.ReLU(),
        nn.Conv2d(out_channels, out_channels, 3, padding=1), nn.ReLU(),
        nn.MaxPool2d(2, 2))


class CNN(ProbedModel):
    """Three conv blocks (16, 32, 64 filters), three FC layers of 250, bias-free output layer.

    The authors' ``NgnCnn`` (after Tran et al., 2022).  Flattened size ``64 * (image_size // 8)**2``:
    1024 on CIFAR-10, 576 on (Fashion-)MNIST, 64 on 8x8 digits.
    """

    FILTERS = (16, 32, 64)
    WIDTH = 250
    DROPOUT_P = 0.2
    probe_layers = ("block1", "block2", "block3", "flat", "fc1", "fc2", "fc3")
    paper_layers = ("flat", "fc1", "fc2", "fc3")
    last_probe_layer = "fc3"
    _classifier_attr = "output"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        side = image_size // 8  # three 2x2/2 max-pools, each flooring
        if side < 1:
            raise ValueError(f"CNN needs image_size >= 8, got {image_size}")
        f1, f2, f3 = self.FILTERS
        self.block1 = _conv_block(in_channels, f1)
        self.block2 = _conv_block(f1, f2)
        self.block3 = _conv_block(f2, f3)
        self.fc1 = nn.Linear(f3 * side * side, self.WIDTH)
        self.fc2 = nn.Linear(self.WIDTH, self.WIDTH)
        self.fc3 = nn.Linear(self.WIDTH, self.WIDTH)
        self.output = nn.Linear(self.WIDTH, num_classes, bias=False)
        self.dropout = nn.Dropout(self.DROPOUT_P) if dropout else nn.Identity()

    def _forward_all(self, x):
        acts = {}
        h = x
        for name in ("block1", "block2", "block3"):
            h = getattr(self, name)(h)
            acts[name] = h
        h = torch.flatten(h, 1)
        acts["flat"] = h
        for name in ("fc1", "fc2", "fc3"):
            h = self.dropout(F.relu(getattr(self, name)(h)))
            acts[name] = h
        return self.output(h), acts


# ----------------------------------------------------------------------------- AlexNet

def _alexnet_pool(x: Tensor) -> Tensor:
    """Max-pool 3x3 stride 2, with the window shrunk to the map when the map is smaller than 3."""
    h, w = x.shape[-2:]
    return F.max_pool2d(x, kernel_size=(min(3, h), min(3, w)), stride=2)


def _alexnet_side(image_size: int) -> int:
    """Spatial side of conv5's pooled output for a square ``image_size`` input."""
    def pool(s: int) -> int:
        return (s - min(3, s)) // 2 + 1
    s = (image_size + 2 * 2 - 11) // 4 + 1  # conv1: 11x11, stride 4, padding 2
    s = pool(s)                             # conv2..conv5 keep the size (padding k // 2)
    s = pool(s)
    return pool(s)


class AlexNet(ProbedModel):
    """The authors' Tiny ImageNet AlexNet (torchvision features, no adaptive pool; see module doc)."""

    DROPOUT_P = 0.5
    WIDTH = 4096
    probe_layers = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc1", "fc2")
    paper_layers = ("conv5", "fc1", "fc2")
    last_probe_layer = "fc2"
    _classifier_attr = "fc3"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        if image_size < 7:
            raise ValueError(f"AlexNet needs image_size >= 7, got {image_size}")
        self.conv1 = nn.Conv2d(in_channels, 64, kernel_size=11, stride=4, padding=2)
        self.conv2 = nn.Conv2d(64, 192, kernel_size=5, padding=2)
        self.conv3 = nn.Conv2d(192, 384, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(384, 256, kernel_size=3, padding=1)
        self.conv5 = nn.Conv2d(256, 256, kernel_size=3, padding=1)
        side = _alexnet_side(image_size)
        self.fc1 = nn.Linear(256 * side * side, self.WIDTH)
        self.fc2 = nn.Linear(self.WIDTH, self.WIDTH)
        self.fc3 = nn.Linear(self.WIDTH, num_classes)
        self.dropout = nn.Dropout(self.DROPOUT_P) if dropout else nn.Identity()

    def _forward_all(self, x):
        acts = {}
        h = _alexnet_pool(F.relu(self.conv1(x)))
        acts["conv1"] = h
        h = _alexnet_pool(F.relu(self.conv2(h)))
        acts["conv2"] = h
        h = F.relu(self.conv3(h))
        acts["conv3"] = h
        h = F.relu(self.conv4(h))
        acts["conv4"] = h
        h = _alexnet_pool(F.relu(self.conv5(h)))
        acts["conv5"] = h
        h = F.relu(self.fc1(self.dropout(torch.flatten(h, 1))))
        acts["fc1"] = h
        h = F.relu(self.fc2(self.dropout(h)))
        acts["fc2"] = h
        return self.fc3(h), acts


# ----------------------------------------------------------------------------- ResNet-18

class BasicBlock(nn.Module):
    """ResNet basic block, out of place: ``relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))``.

    The shortcut is a 1x1 strided conv + BN when the shape changes, else the identity.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(out_channels))
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(ProbedModel):
    """ResNet-18 adapted for CIFAR-10 (the authors' ``ResNet18``): 3x3/1 stem conv + 3x3/2 max-pool."""

    WIDTHS = (64, 128, 256, 512)
    STRIDES = (1, 2, 2, 2)
    DROPOUT_P = 0.2
    probe_layers = ("L0", "L1", "L2", "L3", "L4", "avg_pool")
    paper_layers = probe_layers
    last_probe_layer = "avg_pool"
    _classifier_attr = "fc"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        channels = 64
        for i, (width, stride) in enumerate(zip(self.WIDTHS, self.STRIDES), start=1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(channels, width, stride),
                                                     BasicBlock(width, width, 1)))
            channels = width
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(self.DROPOUT_P) if dropout else nn.Identity()
        self.fc = nn.Linear(channels, num_classes)

    def _forward_all(self, x):
        acts = {}
        h = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        acts["L0"] = h
        for i in range(1, 5):
            h = getattr(self, f"layer{i}")(h)
            acts[f"L{i}"] = h
        h = self.dropout(torch.flatten(self.avgpool(h), 1))
        acts["avg_pool"] = h
        return self.fc(h), acts


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class ModelSpec:
    """A model's builder and the authors' published training defaults."""

    name: str
    #: ``build(in_channels, image_size, num_classes, dropout=False) -> ProbedModel``
    build: Callable[..., ProbedModel]
    optimizer: str  # "sgd" | "adam"
    lr: float
    momentum: float  # 0.0 for adam
    batch_size: int
    batch_size_by_dataset: Mapping[str, int] = field(default_factory=lambda: MappingProxyType({}))
    #: checkpoint every N epochs after epoch 20 (section 3.2)
    late_checkpoint_interval: int = 5
    #: "unit" (x / 255) or "standardize" (per-channel training-set mean / std)
    normalization: str = "standardize"

    def default_batch_size(self, dataset: str) -> int:
        """The batch size for ``dataset``: its override if any, else :attr:`batch_size`."""
        return int(self.batch_size_by_dataset.get(dataset, self.batch_size))


MODELS: dict[str, ModelSpec] = {
    "mlp": ModelSpec("mlp", MLP, optimizer="sgd", lr=1e-3, momentum=0.9, batch_size=32,
                     late_checkpoint_interval=5, normalization="unit"),
    "cnn": ModelSpec("cnn", CNN, optimizer="adam", lr=2e-4, momentum=0.0, batch_size=128,
                     batch_size_by_dataset=MappingProxyType({"cifar10": 32, "mnist": 128,
                                                             "fashion_mnist": 128}),
                     late_checkpoint_interval=5, normalization="standardize"),
    "alexnet": ModelSpec("alexnet", AlexNet, optimizer="adam", lr=1e-4, momentum=0.0,
                         batch_size=500, late_checkpoint_interval=10,
                         normalization="standardize"),
    "resnet18": ModelSpec("resnet18", ResNet18, optimizer="sgd", lr=1e-3, momentum=0.9,
                          batch_size=32, late_checkpoint_interval=5, normalization="standardize"),
}


def build_model(name: str, *, in_channels: int, image_size: int, num_classes: int,
                dropout: bool = False) -> ProbedModel:
    """A freshly initialized model (PyTorch default init; seed the global RNG beforehand)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; allowed: {', '.join(MODELS)}")
    return MODELS[name].build(in_channels, image_size, num_classes, dropout=dropout)


def layer_dims(name: str, *, in_channels: int, image_size: int, num_classes: int,
               dropout: bool = False) -> dict[str, int]:
    """Flattened dimension of every probe layer, from one forward pass on a zero image (eval mode)."""
    model = build_model(name, in_channels=in_channels, image_size=image_size,
                        num_classes=num_classes, dropout=dropout).eval()
    with torch.no_grad():
        _, acts = model.forward_layers(torch.zeros(1, in_channels, image_size, image_size))
    return {layer: int(act[0].numel()) for layer, act in acts.items()}
