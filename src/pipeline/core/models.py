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
* ``cnn``: ``block1, block2`` (after each block's max-pool), ``flat`` (the third block's output,
  flattened: the papers' "CNN-Flat (1024)"), ``fc1, fc2, fc3`` (after ReLU).  ``block3`` is not a
  probe layer of its own: it is the same tensor as ``flat`` (flattening only reshapes), so it
  would be probed, stored and drawn twice; it stays a split boundary.  The papers report ``flat``
  and ``fc1..fc3`` (authors' ``input_fc_0`` and ``output_fc_*_after_noise_relu``); the first two
  convolutional blocks are extra.  See :attr:`ProbedModel.paper_layers`.
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

Feature-dynamics models (issue 9): ``resnet20`` (He et al.'s CIFAR ResNet-20, :class:`ResNet20`) and
``bottleneck_mlp`` (flatten -> Linear 100 -> ReLU -> Linear 2 -> Linear K, :class:`BottleneckMLP`;
the input is the flattened image of any size: 784 on MNIST, 64 on ``digits``).  All six models are in
the one registry :data:`MODELS`.

Training defaults (:data:`MODELS`)
----------------------------------

=========  =========  ======  ========  =========================  =====  =============
model      optimizer  lr      momentum  batch size                 late   normalization
=========  =========  ======  ========  =========================  =====  =============
mlp        SGD        1e-3    0.9       32                         5      unit (x/255)
cnn        Adam       2e-4    --        128; cifar10: 32           5      standardize
alexnet    Adam       1e-4    --        500                        10     standardize
resnet18   SGD        1e-3    0.9       32                         5      standardize
resnet20   SGD        0.1     0.9       128                        5      standardize
bottleneck SGD        0.1     0         200                        5      unit (x/255)
=========  =========  ======  ========  =========================  =====  =============

``resnet20`` also has weight decay 1e-4 and a step decay (x0.1 after epochs 100 and 150), and per
dataset the optimizer defaults of the feature-dynamics paper's Table 2 (:data:`PAPER_TABLE2`: MNIST
SGD 0.01, SVHN / STL-10 Adam 1e-3, CIFAR-10/100 SGD 0.1; batch 200 or 128); ``bottleneck_mlp``
(``bottleneck`` above) has weight decay 1e-5 (Experiment 3).  The four probing models have no weight
decay and a constant learning rate.

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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "ProbedModel", "MLP", "CNN", "AlexNet", "ResNet18", "BasicBlock",
    "ModelSpec", "MODELS", "build_model", "layer_dims",
    "SplitStage", "ResNet20", "CifarBasicBlock", "BottleneckMLP", "HYPERPARAMETER_KEYS", "PAPER_TABLE2",
]


# ----------------------------------------------------------------------------- split stages

@dataclass(frozen=True)
class SplitStage:
    """One piece of a split forward pass: ``fn`` maps the previous boundary's tensor to the tensor
    at boundary ``name``; ``modules`` are the submodule names whose parameters/buffers it uses."""

    name: str
    fn: Callable[[Tensor], Tensor]
    modules: tuple[str, ...] = ()


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

    # ------------------------------------------------------------------ split forward (issue 9)
    #
    # A network f = f[d+1:n] o f[1:d] split at a named *boundary* d.  Subclasses describe their
    # forward pass as an ordered list of :class:`SplitStage` (``_split_stages``), each ending at a
    # boundary, plus a head (``_split_head``) from the last boundary to the logits; the stages
    # replicate :meth:`_forward_all` op for op, so ``forward_from(d, forward_to(d, x))`` equals
    # ``forward(x)`` exactly.  Each stage lists the submodules it owns, which says which state-dict
    # entries (parameters *and* buffers) belong to the shallow part f[1:d].

    def _split_stages(self) -> list[SplitStage]:
        raise NotImplementedError(f"{type(self).__name__} defines no split stages")

    def _split_head(self) -> SplitStage:
        raise NotImplementedError(f"{type(self).__name__} defines no split head")

    def _boundary_aliases(self) -> dict[str, str]:
        """Extra boundary names, each an alias of a stage boundary (e.g. a stage = its last block)."""
        return {}

    @property
    def split_boundaries(self) -> tuple[str, ...]:
        """Every boundary name (stage boundaries in forward order, then aliases)."""
        return tuple(st.name for st in self._split_stages()) + tuple(self._boundary_aliases())

    def _stage_index(self, boundary: str) -> int:
        names = [st.name for st in self._split_stages()]
        canonical = self._boundary_aliases().get(boundary, boundary)
        if canonical not in names:
            raise ValueError(f"unknown boundary {boundary!r} for {type(self).__name__}; "
                             f"boundaries are {list(self.split_boundaries)}")
        return names.index(canonical)

    def canonical_boundary(self, boundary: str) -> str:
        """The stage boundary that ``boundary`` names (aliases resolved)."""
        return self._split_stages()[self._stage_index(boundary)].name

    def forward_to(self, boundary: str, x: Tensor) -> Tensor:
        """The shallow part f[1:d](x): the activation at ``boundary`` (unflattened)."""
        stages = self._split_stages()
        h = x
        for stage in stages[:self._stage_index(boundary) + 1]:
            h = stage.fn(h)
        return h

    def forward_from(self, boundary: str, z: Tensor) -> Tensor:
        """The deep part f[d+1:n](z): logits from the activation ``z`` at ``boundary``."""
        stages = self._split_stages()
        h = z
        for stage in stages[self._stage_index(boundary) + 1:]:
            h = stage.fn(h)
        return self._split_head().fn(h)

    def shallow_state_keys(self, boundary: str) -> tuple[str, ...]:
        """State-dict keys (parameters and buffers) owned by the shallow part up to ``boundary``."""
        stages = self._split_stages()
        owned = [m for st in stages[:self._stage_index(boundary) + 1] for m in st.modules]
        return tuple(k for k in self.state_dict()
                     if any(k == m or k.startswith(m + ".") for m in owned))

    def unowned_state_keys(self) -> tuple[str, ...]:
        """State-dict keys owned by no stage and not by the head (should be empty)."""
        owned = [m for st in (*self._split_stages(), self._split_head()) for m in st.modules]
        return tuple(k for k in self.state_dict()
                     if not any(k == m or k.startswith(m + ".") for m in owned))


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
        self.fc1, self.fc2, self.fc3, self.fc4 = (nn.Linear(a, b) for a, b in zip(widths, widths[1:], strict=False))
        self.output = nn.Linear(self.HIDDEN[-1], num_classes)
        self.dropout = nn.Dropout(self.DROPOUT_P) if dropout else nn.Identity()

    def _forward_all(self, x):
        acts = {}
        h = torch.flatten(x, 1)
        for name in self.probe_layers:
            h = self.dropout(F.relu(getattr(self, name)(h)))
            acts[name] = h
        return self.output(h), acts

    def _split_stages(self):
        def hidden(name):
            layer = getattr(self, name)
            return lambda h: self.dropout(F.relu(layer(torch.flatten(h, 1))))
        return [SplitStage(name, hidden(name), (name,)) for name in self.probe_layers]

    def _split_head(self):
        return SplitStage("logits", self.output, ("output",))


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
    # no "block3": it is "flat" before the reshape (the same values; see the module docstring)
    probe_layers = ("block1", "block2", "flat", "fc1", "fc2", "fc3")
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

    def _split_stages(self):
        def fc(name):
            layer = getattr(self, name)
            return lambda h: self.dropout(F.relu(layer(h)))
        stages = [SplitStage(name, getattr(self, name), (name,))
                  for name in ("block1", "block2", "block3")]
        stages.append(SplitStage("flat", lambda h: torch.flatten(h, 1), ()))
        stages += [SplitStage(name, fc(name), (name,)) for name in ("fc1", "fc2", "fc3")]
        return stages

    def _split_head(self):
        return SplitStage("logits", self.output, ("output",))


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

    def _split_stages(self):
        return [
            SplitStage("conv1", lambda h: _alexnet_pool(F.relu(self.conv1(h))), ("conv1",)),
            SplitStage("conv2", lambda h: _alexnet_pool(F.relu(self.conv2(h))), ("conv2",)),
            SplitStage("conv3", lambda h: F.relu(self.conv3(h)), ("conv3",)),
            SplitStage("conv4", lambda h: F.relu(self.conv4(h)), ("conv4",)),
            SplitStage("conv5", lambda h: _alexnet_pool(F.relu(self.conv5(h))), ("conv5",)),
            SplitStage("fc1", lambda h: F.relu(self.fc1(self.dropout(torch.flatten(h, 1)))), ("fc1",)),
            SplitStage("fc2", lambda h: F.relu(self.fc2(self.dropout(h))), ("fc2",)),
        ]

    def _split_head(self):
        return SplitStage("logits", self.fc3, ("fc3",))


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
        for i, (width, stride) in enumerate(zip(self.WIDTHS, self.STRIDES, strict=True), start=1):
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

    def _split_stages(self):
        """Boundaries ``L0``, ``L{i}.block{j}`` (after each basic block), ``avg_pool``;
        ``L{i}`` is an alias of ``L{i}.block2``."""
        stages = [SplitStage("L0", lambda h: self.maxpool(F.relu(self.bn1(self.conv1(h)))),
                             ("conv1", "bn1"))]
        for i in range(1, 5):
            for j, block in enumerate(getattr(self, f"layer{i}"), start=1):
                stages.append(SplitStage(f"L{i}.block{j}", block, (f"layer{i}.{j - 1}",)))
        stages.append(SplitStage("avg_pool",
                                 lambda h: self.dropout(torch.flatten(self.avgpool(h), 1)), ()))
        return stages

    def _boundary_aliases(self):
        return {f"L{i}": f"L{i}.block2" for i in range(1, 5)}

    def _split_head(self):
        return SplitStage("logits", self.fc, ("fc",))


# ----------------------------------------------------------------------------- ResNet-20 (issue 9)

class CifarBasicBlock(nn.Module):
    """The CIFAR ResNet basic block of He et al. (2016) / akamaster's ``pytorch_resnet_cifar10``
    (the code the feature-dynamics paper cites): ``relu(bn2(conv2(relu(bn1(conv1(x))))) + sc(x))``
    with the parameter-free option-A shortcut -- when the shape changes, ``x[:, :, ::2, ::2]``
    zero-padded with ``planes // 4`` channels on each side.  Out of place throughout."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = stride != 1 or in_planes != planes
        self.pad = planes // 4 if self.downsample else 0

    def shortcut(self, x: Tensor) -> Tensor:
        if not self.downsample:
            return x
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad), "constant", 0.0)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet20(ProbedModel):
    """ResNet-20 for CIFAR (He et al. 2016, section 4.2; akamaster's ``resnet20``): 3x3 stem conv (16)
    -> BN -> ReLU (= ``stem``), three stages of three :class:`CifarBasicBlock` with 16, 32, 64
    channels (strides 1, 2, 2; option-A shortcuts), global average pool (= ``avg_pool``, 64) ->
    ``fc``.  Conv and Linear weights are Kaiming-normal initialised as in akamaster's code.

    Probe layers: ``stem, stage1, stage2, stage3, avg_pool``.  Split boundaries: ``stem``,
    ``stage{i}.block{j}`` after each of the nine basic blocks (i, j in 1..3), ``avg_pool``; ``stage{i}``
    is an alias of ``stage{i}.block3``.

    Where "d at the second basic block" splits (paper, Figs. 2 and 5): counting basic blocks in forward
    order, the shallow part f[1:d] is the stem plus the first two basic blocks, i.e. the boundary
    ``stage1.block2`` (:attr:`PAPER_SPLIT`, 16x32x32 on CIFAR-10).  The other reading -- the end of the
    second *stage* (akamaster's ``layer2``, i.e. after six blocks) -- is the boundary ``stage2``
    (:attr:`PAPER_SPLIT_ALTERNATIVE`).  Our choice is the first; record it with the results.
    """

    WIDTHS = (16, 32, 64)
    STRIDES = (1, 2, 2)
    BLOCKS_PER_STAGE = 3
    DROPOUT_P = 0.2
    PAPER_SPLIT = "stage1.block2"
    PAPER_SPLIT_ALTERNATIVE = "stage2"
    probe_layers = ("stem", "stage1", "stage2", "stage3", "avg_pool")
    paper_layers = probe_layers
    last_probe_layer = "avg_pool"
    _classifier_attr = "fc"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 16, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        planes = 16
        for i, (width, stride) in enumerate(zip(self.WIDTHS, self.STRIDES, strict=True), start=1):
            blocks = []
            for j in range(self.BLOCKS_PER_STAGE):
                blocks.append(CifarBasicBlock(planes, width, stride if j == 0 else 1))
                planes = width
            setattr(self, f"stage{i}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.dropout = nn.Dropout(self.DROPOUT_P) if dropout else nn.Identity()
        self.fc = nn.Linear(planes, num_classes)
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(module.weight)

    def _forward_all(self, x):
        acts = {}
        h = F.relu(self.bn1(self.conv1(x)))
        acts["stem"] = h
        for i in range(1, 4):
            h = getattr(self, f"stage{i}")(h)
            acts[f"stage{i}"] = h
        h = self.dropout(torch.flatten(self.avgpool(h), 1))
        acts["avg_pool"] = h
        return self.fc(h), acts

    def _split_stages(self):
        stages = [SplitStage("stem", lambda h: F.relu(self.bn1(self.conv1(h))), ("conv1", "bn1"))]
        for i in range(1, 4):
            for j, block in enumerate(getattr(self, f"stage{i}"), start=1):
                stages.append(SplitStage(f"stage{i}.block{j}", block, (f"stage{i}.{j - 1}",)))
        stages.append(SplitStage("avg_pool",
                                 lambda h: self.dropout(torch.flatten(self.avgpool(h), 1)), ()))
        return stages

    def _boundary_aliases(self):
        return {f"stage{i}": f"stage{i}.block{self.BLOCKS_PER_STAGE}" for i in range(1, 4)}

    def _split_head(self):
        return SplitStage("logits", self.fc, ("fc",))


# ----------------------------------------------------------------------------- bottleneck MLP (issue 9)

class BottleneckMLP(ProbedModel):
    """The 2-D bottleneck MLP of the paper's Experiment 3 (Fig. 6): flatten (784 on MNIST) ->
    Linear 100 -> ReLU (= ``fc1``) -> Linear 2, *no* activation (= ``bottleneck``, the 2-D feature
    space whose trajectories and decision regions are plotted) -> Linear(2, K).

    ``dropout=True`` (not in the paper) puts ``Dropout(0.2)`` after ``fc1``'s ReLU.
    """

    HIDDEN = 100
    BOTTLENECK = 2
    DROPOUT_P = 0.2
    probe_layers = ("fc1", "bottleneck")
    paper_layers = ("bottleneck",)
    last_probe_layer = "bottleneck"
    _classifier_attr = "output"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, self.HIDDEN)
        self.bottleneck = nn.Linear(self.HIDDEN, self.BOTTLENECK)
        self.output = nn.Linear(self.BOTTLENECK, num_classes)
        self.dropout = nn.Dropout(self.DROPOUT_P) if dropout else nn.Identity()

    def _forward_all(self, x):
        h = self.dropout(F.relu(self.fc1(torch.flatten(x, 1))))
        z = self.bottleneck(h)
        return self.output(z), {"fc1": h, "bottleneck": z}

    def _split_stages(self):
        return [SplitStage("fc1", lambda h: self.dropout(F.relu(self.fc1(torch.flatten(h, 1)))),
                           ("fc1",)),
                SplitStage("bottleneck", self.bottleneck, ("bottleneck",))]

    def _split_head(self):
        return SplitStage("logits", self.output, ("output",))


# ----------------------------------------------------------------------------- pytorch-playground models (issue 16)
#
# The MNIST, SVHN and STL-10 networks of the feature-dynamics paper: its Appendix H trains them with
# "the open-source code ... https://github.com/aaron-xichen/pytorch-playground" and Table 2's
# optimizer settings. Layer for layer as that code's ``mnist/model.py``, ``svhn/model.py`` and
# ``stl10/model.py`` (with its train.py defaults: 256-256 hidden units; ``--channel 32``).

class PlaygroundMLP(ProbedModel):
    """pytorch-playground's MNIST ``MLP(784, [256, 256], 10)``: flatten -> [Linear -> ReLU ->
    Dropout(0.2)] x2 (= ``fc1``, ``fc2``) -> Linear(256, K) (``out``). The dropout is the cited code's
    and always present (``dropout`` adds nothing)."""

    HIDDEN = (256, 256)
    DROPOUT_P = 0.2
    probe_layers = ("fc1", "fc2")
    paper_layers = probe_layers
    last_probe_layer = "fc2"
    _classifier_attr = "out"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        self.fc1 = nn.Linear(in_channels * image_size * image_size, self.HIDDEN[0])
        self.fc2 = nn.Linear(self.HIDDEN[0], self.HIDDEN[1])
        self.out = nn.Linear(self.HIDDEN[1], num_classes)
        self.drop = nn.Dropout(self.DROPOUT_P)

    def _hidden(self, name: str):
        layer = getattr(self, name)
        return lambda h: self.drop(F.relu(layer(torch.flatten(h, 1))))

    def _forward_all(self, x):
        h1 = self._hidden("fc1")(x)
        h2 = self._hidden("fc2")(h1)
        return self.out(h2), {"fc1": h1, "fc2": h2}

    def _split_stages(self):
        return [SplitStage(name, self._hidden(name), (name,)) for name in self.probe_layers]

    def _split_head(self):
        return SplitStage("logits", self.out, ("out",))


class PlaygroundCNN(ProbedModel):
    """pytorch-playground's SVHN / STL-10 network (``make_layers(cfg, batch_norm=True)`` then
    ``Linear(8n, K)``): per conv entry of :attr:`CFG`, conv3x3 (padding 1, or 0 where the entry says
    so) -> BatchNorm(affine=False) -> ReLU [-> Dropout(:attr:`DROPOUT_P`)], and the max-pool 2/2 that
    follows it in the cfg; each such unit is one probe layer / split boundary ``layer{i}``. The last
    layer is 8n x 1 x 1 on the dataset's image size (32 for SVHN, 96 for STL-10); smaller images are
    refused at the forward pass (the padding-0 convolutions need at least :attr:`MIN_IMAGE_SIZE`)."""

    N_CHANNEL = 32
    CFG: tuple = ()
    DROPOUT_P = 0.0
    MIN_IMAGE_SIZE = 0
    last_probe_layer = ""
    _classifier_attr = "classifier_fc"

    def __init__(self, in_channels: int, image_size: int, num_classes: int, dropout: bool = False):
        super().__init__()
        p = self.DROPOUT_P or (0.3 if dropout else 0.0)
        channels, side, index = in_channels, image_size, 0
        for i, entry in enumerate(self.CFG):
            if entry == "M":
                continue
            out, padding = entry if isinstance(entry, tuple) else (entry, 1)
            index += 1
            parts = [nn.Conv2d(channels, out, 3, padding=padding), nn.BatchNorm2d(out, affine=False),
                     nn.ReLU()]
            if p:
                parts.append(nn.Dropout(p))
            side = side + 2 * padding - 2
            if i + 1 < len(self.CFG) and self.CFG[i + 1] == "M":
                parts.append(nn.MaxPool2d(2, 2))
                side //= 2
            setattr(self, f"layer{index}", nn.Sequential(*parts))
            channels = out
        # the cited code's Linear(8n, K) assumes a 1x1 last layer (the dataset's size); another size
        # gets the flattened size it produces (names of the boundaries do not depend on it)
        self.classifier_fc = nn.Linear(channels * max(side, 1) ** 2, num_classes)

    def _check(self, x: Tensor) -> None:
        if min(x.shape[-2:]) < self.MIN_IMAGE_SIZE:
            raise ValueError(f"{type(self).__name__} needs images of at least {self.MIN_IMAGE_SIZE} pixels "
                             f"(image_size); got {tuple(x.shape[-2:])}")

    def _forward_all(self, x):
        self._check(x)
        acts, h = {}, x
        for name in self.probe_layers:
            h = getattr(self, name)(h)
            acts[name] = h
        return self.classifier_fc(torch.flatten(h, 1)), acts

    def _split_stages(self):
        first = getattr(self, self.probe_layers[0])

        def checked_first(h):
            self._check(h)
            return first(h)
        return [SplitStage(name, checked_first if i == 0 else getattr(self, name), (name,))
                for i, name in enumerate(self.probe_layers)]

    def _split_head(self):
        return SplitStage("logits", lambda h: self.classifier_fc(torch.flatten(h, 1)), ("classifier_fc",))


class SvhnCNN(PlaygroundCNN):
    """SVHN: cfg [n, n, M, 2n, 2n, M, 4n, 4n, M, (8n, 0), M], n = 32, Dropout(0.3) after every conv
    unit (the cited code's); 7 layers, 32x32 -> 256x1x1."""

    N = PlaygroundCNN.N_CHANNEL
    CFG = (N, N, "M", 2 * N, 2 * N, "M", 4 * N, 4 * N, "M", (8 * N, 0), "M")
    DROPOUT_P = 0.3
    MIN_IMAGE_SIZE = 32
    probe_layers = tuple(f"layer{i}" for i in range(1, 8))
    paper_layers = probe_layers
    last_probe_layer = "layer7"


class Stl10CNN(PlaygroundCNN):
    """STL-10: cfg [n, M, 2n, M, 4n, M, 4n, M, (8n, 0), (8n, 0), M], n = 32, no dropout in the cited
    code (``dropout=True`` adds Dropout(0.3) after every conv unit, our option); 6 layers,
    96x96 -> 256x1x1."""

    N = PlaygroundCNN.N_CHANNEL
    CFG = (N, "M", 2 * N, "M", 4 * N, "M", 4 * N, "M", (8 * N, 0), (8 * N, 0), "M")
    MIN_IMAGE_SIZE = 96
    probe_layers = tuple(f"layer{i}" for i in range(1, 7))
    paper_layers = probe_layers
    last_probe_layer = "layer6"


# ----------------------------------------------------------------------------- registry

#: The optimizer settings a :class:`ModelSpec` may set per dataset (``by_dataset``), i.e. the keys of
#: :meth:`ModelSpec.defaults` (and of ``train.overrides.<model>``).
HYPERPARAMETER_KEYS = ("optimizer", "lr", "momentum", "batch_size", "weight_decay",
                       "lr_decay_epochs", "lr_decay_factor")

#: Table 2 of "Feature dynamics as implicit data augmentation" (Appendix H), "Training settings across
#: different datasets", as per-dataset optimizer defaults.  Table 2 gives optimizer, batch size, lr,
#: weight decay and momentum only; the rest is our reading of the code it cites (Appendix H: "the
#: learning rate was reduced at specific epochs during training ... see the URL"):
#:
#: * decay: x0.1 at epochs 100 and 150 for CIFAR-10/100 (akamaster's ``pytorch_resnet_cifar10``,
#:   ``MultiStepLR(milestones=[100, 150])``), x0.1 at epochs 80 and 120 for MNIST, SVHN and STL-10
#:   (aaron-xichen's ``pytorch-playground``, ``--decreasing_lr 80,120``).  Epoch ``e`` (1-based, as
#:   in the training log) trains with ``lr * factor ** #{m in lr_decay_epochs : m < e}``, so "decay
#:   at 100" means epochs 101.. use lr/10, exactly as both codes do with 0-based epochs;
#: * ``epochs``: the paper's runs last 300 epochs (Figs. 2-5, 10: ``t_2 = 300``) and 1000 for the
#:   forgetting/transferability runs (Figs. 12, 13); Table 2 has no epoch column.  ``epochs`` is
#:   documentation for configs (``train.max_epochs`` decides), never a hyperparameter.
#:
#: Decay epochs of the 300- and 1000-epoch runs (the paper is ambiguous: the cited code trains 200
#: epochs (CIFAR) or 150 (SVHN/STL-10)): we keep the code's *absolute* decay epochs for every run
#: length, not a rescaling to 50 %/75 % of the run.  Reasons: (i) the paper's Figs. 2, 5 and 13 pair
#: epoch-300 networks with epochs up to 500, i.e. the 300-epoch checkpoints and the later ones come
#: from one long run, which only holds when the schedule does not depend on the run length (a
#: 300-epoch run then equals the first 300 epochs of the 1000-epoch run with the same seed); (ii)
#: the paper's "late-stage drift" (||theta_300 - theta_150|| / ||theta_300|| ~ 0.07) describes
#: training at the final small lr after the last decay; (iii) it is what the cited code does.
#: Override with ``train.overrides.<model>.lr_decay_epochs`` (recorded in the hyperparameters).
#:
#: The paper's SVHN/STL-10 weight decays (0 / 1e-3) are the reverse of the cited code's defaults
#: (SVHN 1e-3, STL-10 0); we follow Table 2.  Momentum is 0 where the optimizer is Adam.
PAPER_TABLE2: Mapping[str, Mapping[str, object]] = MappingProxyType({
    "mnist": MappingProxyType({"optimizer": "sgd", "batch_size": 200, "lr": 0.01, "weight_decay": 1e-4,
                               "momentum": 0.9, "lr_decay_epochs": (80, 120), "lr_decay_factor": 0.1,
                               "epochs": 300}),
    "svhn": MappingProxyType({"optimizer": "adam", "batch_size": 200, "lr": 0.001, "weight_decay": 0.0,
                              "momentum": 0.0, "lr_decay_epochs": (80, 120), "lr_decay_factor": 0.1,
                              "epochs": 300}),
    "stl10": MappingProxyType({"optimizer": "adam", "batch_size": 200, "lr": 0.001, "weight_decay": 1e-3,
                               "momentum": 0.0, "lr_decay_epochs": (80, 120), "lr_decay_factor": 0.1,
                               "epochs": 300}),
    "cifar10": MappingProxyType({"optimizer": "sgd", "batch_size": 128, "lr": 0.1, "weight_decay": 1e-4,
                                 "momentum": 0.9, "lr_decay_epochs": (100, 150), "lr_decay_factor": 0.1,
                                 "epochs": 300}),
    "cifar100": MappingProxyType({"optimizer": "sgd", "batch_size": 128, "lr": 0.1, "weight_decay": 1e-4,
                                  "momentum": 0.9, "lr_decay_epochs": (100, 150), "lr_decay_factor": 0.1,
                                  "epochs": 300}),
})


@dataclass(frozen=True)
class ModelSpec:
    """A model's builder and its published training defaults.

    Per-dataset defaults: ``batch_size_by_dataset`` (batch size only, the probing papers' CNN) and
    ``by_dataset`` (any of :data:`HYPERPARAMETER_KEYS`, plus ``epochs`` as documentation: the
    feature-dynamics paper's Table 2, :data:`PAPER_TABLE2`); :meth:`defaults` resolves them, and
    ``train.overrides.<model>`` in the config goes on top (:func:`pipeline.core.training.hyperparameters`).
    """

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
    #: L2 weight decay of the optimizer (0.0 for the four models of the probing papers)
    weight_decay: float = 0.0
    #: step decay: multiply the learning rate by :attr:`lr_decay_factor` after each of these epochs
    #: (empty: constant lr, no scheduler -- the four models of the probing papers)
    lr_decay_epochs: tuple[int, ...] = ()
    lr_decay_factor: float = 0.1
    #: per-dataset defaults: dataset -> {hyperparameter key: value, "epochs": n}
    by_dataset: Mapping[str, Mapping[str, object]] = field(default_factory=lambda: MappingProxyType({}))

    def default_batch_size(self, dataset: str) -> int:
        """The batch size for ``dataset``: ``by_dataset``, then ``batch_size_by_dataset``, then
        :attr:`batch_size`."""
        own = self.by_dataset.get(dataset, {})
        if "batch_size" in own:
            return int(own["batch_size"])
        return int(self.batch_size_by_dataset.get(dataset, self.batch_size))

    def defaults(self, dataset: str) -> dict:
        """The optimizer settings for ``dataset`` before config overrides.

        Always ``optimizer, lr, momentum, batch_size, weight_decay`` (in that order: the four
        probing models give exactly the dict they always gave); ``lr_decay_epochs`` (a sorted list)
        and ``lr_decay_factor`` only when there is a step decay.
        """
        own = dict(self.by_dataset.get(dataset, {}))
        hp = {"optimizer": own.get("optimizer", self.optimizer), "lr": own.get("lr", self.lr),
              "momentum": own.get("momentum", self.momentum),
              "batch_size": self.default_batch_size(dataset),
              "weight_decay": own.get("weight_decay", self.weight_decay)}
        decay = own.get("lr_decay_epochs", self.lr_decay_epochs)
        if decay:
            hp["lr_decay_epochs"] = sorted(int(e) for e in decay)
            hp["lr_decay_factor"] = float(own.get("lr_decay_factor", self.lr_decay_factor))
        return hp

    def paper_epochs(self, dataset: str) -> int | None:
        """The run length the model's paper used on ``dataset`` (documentation; None if unknown)."""
        epochs = self.by_dataset.get(dataset, {}).get("epochs")
        return None if epochs is None else int(epochs)


#: The one model registry.  The four models of the probing papers, then the two of the
#: feature-dynamics paper (issue 9):
#:
#: * ``resnet20``: Table 2's CIFAR-10/100 row as its base (SGD lr 0.1, momentum 0.9, wd 1e-4, batch
#:   128, x0.1 at epochs 100 and 150 -- see :data:`PAPER_TABLE2` for why these decay epochs also for
#:   the 300/1000-epoch runs), and Table 2's other rows per dataset (``by_dataset``).
#: * ``bottleneck_mlp``: Experiment 3 (lr 0.1, wd 1e-5, 200 epochs).  Momentum, batch size and decay
#:   are not stated: plain SGD (momentum 0), batch 200 (Table 2's MNIST row) and a constant lr are
#:   our choices; inputs x / 255.  Its input is the flattened image of any size (784 on MNIST, 64 on
#:   the 8x8 ``digits``).
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
    "resnet20": ModelSpec("resnet20", ResNet20, optimizer="sgd", lr=0.1, momentum=0.9,
                          batch_size=128, late_checkpoint_interval=5, normalization="standardize",
                          weight_decay=1e-4, lr_decay_epochs=(100, 150), lr_decay_factor=0.1,
                          by_dataset=PAPER_TABLE2),
    "bottleneck_mlp": ModelSpec("bottleneck_mlp", BottleneckMLP, optimizer="sgd", lr=0.1,
                                momentum=0.0, batch_size=200, late_checkpoint_interval=5,
                                normalization="unit", weight_decay=1e-5,
                                by_dataset=MappingProxyType({"mnist": MappingProxyType({"epochs": 200})})),
    # the MNIST / SVHN / STL-10 networks of the paper (pytorch-playground), each with its Table 2 row
    # (decay x0.1 at 80 and 120, the cited code's ``--decreasing_lr``); inputs standardized (the code
    # normalizes with fixed means/stds: MNIST's own, 0.5 for SVHN / STL-10)
    "mnist_mlp": ModelSpec("mnist_mlp", PlaygroundMLP, optimizer="sgd", lr=0.01, momentum=0.9,
                           batch_size=200, weight_decay=1e-4, lr_decay_epochs=(80, 120),
                           by_dataset=MappingProxyType({"mnist": PAPER_TABLE2["mnist"]})),
    "svhn_cnn": ModelSpec("svhn_cnn", SvhnCNN, optimizer="adam", lr=0.001, momentum=0.0, batch_size=200,
                          weight_decay=0.0, lr_decay_epochs=(80, 120),
                          by_dataset=MappingProxyType({"svhn": PAPER_TABLE2["svhn"]})),
    "stl10_cnn": ModelSpec("stl10_cnn", Stl10CNN, optimizer="adam", lr=0.001, momentum=0.0,
                           batch_size=200, weight_decay=1e-3, lr_decay_epochs=(80, 120),
                           by_dataset=MappingProxyType({"stl10": PAPER_TABLE2["stl10"]})),
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
