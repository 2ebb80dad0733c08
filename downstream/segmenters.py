"""Segmenter registry (like the generators'): ``@register_segmenter`` and ``list_segmenters("smp-*")``.

A segmenter is a named builder of a network mapping RGB in [0, 1], (B, 3, H, W), to two-class logits
(B, 2, H, W) (channel 1 "anomalous"); the training protocol (:mod:`anobench.downstream.training`)
is the same for all of them. Each has a ``Config`` dataclass of its own options (set per run under
``downstream.options.<name>``); the protocol settings shared by all (image size, epochs, ...) stay in
:class:`~anobench.downstream.training.SegmenterConfig`.

Built in:

* ``draem-unet``: DRAEM's discriminative U-Net from scratch (the paper protocol; width from
  ``segmenter.base_width``);
* ``smp-unet``, ``smp-fpn``, ``smp-deeplabv3plus``: segmentation-models-pytorch decoders on a timm
  encoder (``tu-<timm name>``), ImageNet-pretrained offline: the project's EfficientNet-Lite0 weights
  by default, or any timm encoder's weights file (``encoder_weights: /path/to/file.safetensors``);
* ``draem-e2e``: DRAEM's reconstructive + discriminative pair (:mod:`anobench.downstream.draem`).

Example:
    >>> from anobench.downstream.segmenters import list_segmenters
    >>> list_segmenters("smp-*")
    ['smp-deeplabv3plus', 'smp-fpn', 'smp-unet']
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from anobench.downstream.errors import DownstreamInputError
from anobench.downstream.segmenter import DiscriminativeUNet, focal_loss
from anobench.downstream.weights import (
    EFFICIENTNET_LITE0,
    efficientnet_lite0_state_dict,
    file_digest,
    read_state_dict,
)
from anobench.generation.registry import Registry

if TYPE_CHECKING:
    from anobench.downstream.training import SegmenterConfig

DEFAULT_SEGMENTER = "draem-unet"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass
class NoOptions:
    """A segmenter without options of its own."""


class Segmenter:
    """A named network builder; subclasses set ``Config`` and implement :meth:`build`."""

    name: ClassVar[str] = ""
    Config: ClassVar[type] = NoOptions
    #: Smallest training batch the network accepts (BatchNorm on a 1x1 pooled map needs 2).
    min_batch: ClassVar[int] = 1
    #: Whether :meth:`build` honours ``segmenter.gradient_checkpointing``.
    gradient_checkpointing: ClassVar[bool] = False

    def __init__(self, **options: Any) -> None:
        self.config = self.Config(**options)

    def build(self, protocol: SegmenterConfig) -> nn.Module:
        """A fresh network for ``protocol`` (image size, widths); seeded by the caller."""
        raise NotImplementedError

    def loss(self, model: nn.Module, images: torch.Tensor, masks: torch.Tensor, gamma: float) -> torch.Tensor:
        """The training loss of one batch; the default is DRAEM's focal loss on the logits."""
        return focal_loss(model(images), masks, gamma=gamma)

    def weights(self) -> str | None:
        """What pretrained weights the network starts from (recorded with the result); None: none."""
        return None


SEGMENTERS: Registry[Segmenter] = Registry(
    "segmenter",
    builtin_modules=("anobench.downstream.draem",),  # this module's own are registered below
    entry_point_group=None,
    error=DownstreamInputError,
)
_REGISTRY = SEGMENTERS.classes
register_segmenter = SEGMENTERS.register
list_segmenters = SEGMENTERS.names
get_segmenter = SEGMENTERS.get


def create_segmenter(name: str, **options: Any) -> Segmenter:
    """Instantiate a registered segmenter with its config ``options`` (unknown options are an error)."""
    return SEGMENTERS.create(name, **options)


@register_segmenter(DEFAULT_SEGMENTER)
class DraemUNet(Segmenter):
    """DRAEM's discriminative U-Net trained from scratch (the paper protocol)."""

    gradient_checkpointing = True

    def build(self, protocol: SegmenterConfig) -> nn.Module:
        """``DiscriminativeUNet`` of width ``protocol.base_width``."""
        return DiscriminativeUNet(
            base_width=protocol.base_width,
            gradient_checkpointing=protocol.gradient_checkpointing,
            unit_chunk=protocol.unit_chunk,
        )


class Normalized(nn.Module):
    """Standardises [0, 1] RGB with ImageNet statistics before a pretrained network."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The wrapped network's output on standardised ``x``."""
        return self.net((x - self.mean) / self.std)


@dataclass
class SmpConfig:
    """A segmentation-models-pytorch model on a timm encoder."""

    encoder: str = "tu-tf_efficientnet_lite0"  # smp's timm-universal encoder name
    # offline-imagenet-efficientnet-lite0 (the project's weights package; needs the lite0 encoder),
    # a .safetensors/.pth file of the timm model's state dict, or null (random initialisation)
    encoder_weights: str | None = EFFICIENTNET_LITE0

    def __post_init__(self) -> None:
        if not self.encoder.startswith("tu-"):
            raise DownstreamInputError(
                f"encoder={self.encoder!r}: give a timm encoder as tu-<timm name>, "
                "e.g. tu-tf_efficientnet_lite0"
            )
        weights = self.encoder_weights
        if weights == EFFICIENTNET_LITE0 and self.encoder != "tu-tf_efficientnet_lite0":
            raise DownstreamInputError(
                f"encoder_weights={EFFICIENTNET_LITE0} fits encoder=tu-tf_efficientnet_lite0 only; "
                "give a weights file for another encoder"
            )
        if weights not in (None, EFFICIENTNET_LITE0) and not Path(weights).expanduser().is_file():
            raise DownstreamInputError(f"encoder_weights: {weights} is not a file")


class SmpSegmenter(Segmenter):
    """Base of the smp models: ``architecture`` names the ``segmentation_models_pytorch`` class."""

    Config = SmpConfig
    architecture: ClassVar[str] = ""

    def build(self, protocol: SegmenterConfig) -> nn.Module:
        """The smp model (two classes), its encoder loaded from ``encoder_weights``, input standardised."""
        try:
            import segmentation_models_pytorch as smp
        except ImportError:
            raise DownstreamInputError(
                f"segmenter {self.name!r} needs `pip install --no-deps segmentation-models-pytorch==0.6.0`"
            ) from None
        model = getattr(smp, self.architecture)(
            encoder_name=self.config.encoder, encoder_weights=None, classes=2
        )
        if self.config.encoder_weights is None:
            return model
        _load_encoder(model.encoder.model, self._state_dict(), self.config.encoder_weights)
        return Normalized(model)

    def _state_dict(self) -> dict[str, torch.Tensor]:
        if self.config.encoder_weights == EFFICIENTNET_LITE0:
            return efficientnet_lite0_state_dict()
        return read_state_dict(self.config.encoder_weights)

    def weights(self) -> str | None:
        """The weights package name, or the weights file's digest."""
        weights = self.config.encoder_weights
        if weights in (None, EFFICIENTNET_LITE0):
            return weights
        return file_digest(Path(weights).expanduser())


def _load_encoder(encoder: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load a timm classification state dict into smp's feature encoder (the head is left out)."""
    try:
        result = encoder.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[-1].strip()
        raise DownstreamInputError(f"encoder_weights {source}: does not fit the encoder ({first})") from None
    if result.missing_keys:
        raise DownstreamInputError(
            f"encoder_weights {source}: {len(result.missing_keys)} encoder tensors missing "
            f"(first: {result.missing_keys[0]}); is it the encoder's timm state dict?"
        )


@register_segmenter("smp-unet")
class SmpUnet(SmpSegmenter):
    """segmentation-models-pytorch U-Net, ImageNet-pretrained timm encoder (EfficientNet-Lite0)."""

    architecture = "Unet"


@register_segmenter("smp-fpn")
class SmpFpn(SmpSegmenter):
    """segmentation-models-pytorch FPN, ImageNet-pretrained timm encoder (EfficientNet-Lite0)."""

    architecture = "FPN"


@register_segmenter("smp-deeplabv3plus")
class SmpDeepLabV3Plus(SmpSegmenter):
    """segmentation-models-pytorch DeepLabV3+, ImageNet-pretrained timm encoder (EfficientNet-Lite0)."""

    architecture = "DeepLabV3Plus"
    min_batch = 2  # ASPP's image pooling ends in BatchNorm on a 1x1 map
