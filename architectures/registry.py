"""The registry: architecture name -> builder and the options it accepts, with defaults for 128 px inputs.

Every option an architecture accepts is listed in its defaults, so an unknown or misspelt option
is an error rather than something smp would silently hand to the encoder and drop.

The optional empty-vs-salt head is the same for every architecture: smp's ``ClassificationHead``
(global average pool -> dropout -> linear(C, 1), no activation: what smp's ``aux_params`` builds) on
the encoder's deepest feature map, initialised by smp's ``initialize_head``. ``create`` attaches it to
the finished model rather than passing ``aux_params``: smp would build it before initialising the
decoder, shifting the decoder's random draws, whereas attached last it leaves every other weight as
the same seed gives without it, so "with head" and "without" differ by the head alone.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import segmentation_models_pytorch as smp
from segmentation_models_pytorch.base import ClassificationHead
from segmentation_models_pytorch.base.initialization import initialize_head
from torch import nn

from architectures.refinenet import RefineNet


class WeightsUnavailable(RuntimeError):
    """Pretrained encoder weights were asked for but could not be fetched (usually: no network)."""


@dataclass(frozen=True)
class Entry:
    """How to build one architecture: a callable taking smp's four common arguments plus ``defaults``."""

    build: Callable[..., nn.Module]
    defaults: dict[str, Any] = field(default_factory=dict)


def _drop_unused_stages(encoder: nn.Module, depth: int) -> None:
    """Replace encoder stages deeper than ``depth`` with ``nn.Identity``.

    smp's own encoders (``resnet34``, ...) build all five stages whatever ``depth`` says and only skip
    the deep ones in ``forward``, leaving their parameters dead; timm (``tu-``) encoders are already
    built to the depth asked for and have no ``get_stages``.
    """
    if depth >= 5 or not hasattr(encoder, "get_stages"):
        return
    unused = {
        id(module)
        for stride, stage in encoder.get_stages().items()
        if stride > 2**depth
        for part in stage
        for module in part.modules()
    }
    for parent in list(encoder.modules()):
        for child_name, child in list(parent.named_children()):
            if id(child) in unused:
                setattr(parent, child_name, nn.Identity())


def _unet(**kwargs: Any) -> nn.Module:
    """smp Unet, minus the attention module smp builds but never runs on blocks without a skip (the last one)."""
    model = smp.Unet(**kwargs)
    skips = len(model.encoder.out_channels) - 2
    for block in model.decoder.blocks[skips:]:
        block.attention1 = nn.Identity()
    return model


def _pspnet(*, encoder_depth: int, encoder_output_stride: int, **kwargs: Any) -> nn.Module:
    """smp PSPNet with an optionally dilated encoder (as in Zhao et al.) and no dead encoder stages."""
    if encoder_depth not in (3, 4, 5):
        raise ValueError(f"pspnet encoder_depth must be 3, 4 or 5, got {encoder_depth}")
    if encoder_output_stride not in (8, 16, 32):
        raise ValueError(f"pspnet encoder_output_stride must be 8, 16 or 32, got {encoder_output_stride}")
    model = smp.PSPNet(
        encoder_depth=encoder_depth,
        output_stride=encoder_output_stride,
        upsampling=min(encoder_output_stride, 2**encoder_depth),
        **kwargs,
    )
    _drop_unused_stages(model.encoder, encoder_depth)
    return model


ARCHITECTURES: dict[str, Entry] = {
    "unet": Entry(_unet, {"decoder_channels": (256, 128, 64, 32, 16), "decoder_attention_type": None}),
    "linknet": Entry(smp.Linknet),
    "pspnet": Entry(
        _pspnet, {"encoder_depth": 5, "encoder_output_stride": 8, "psp_out_channels": 512, "psp_dropout": 0.2}
    ),
    "refinenet": Entry(
        RefineNet, {"variant": "full", "decoder_channels": (512, 256, 256, 256), "crp_blocks": 4, "decoder_norm": False}
    ),
    "deeplabv3": Entry(
        smp.DeepLabV3,
        {"encoder_output_stride": 8, "decoder_atrous_rates": (3, 6, 9), "decoder_channels": 256, "decoder_aspp_dropout": 0.5},
    ),
    "deeplabv3plus": Entry(
        smp.DeepLabV3Plus,
        {
            "encoder_output_stride": 8,
            "decoder_atrous_rates": (3, 6, 9),
            "decoder_channels": 256,
            "decoder_aspp_separable": True,
            "decoder_aspp_dropout": 0.5,
        },
    ),
}


EMPTY_HEAD_DEFAULTS: dict[str, Any] = {"dropout": 0.2}
"""The model-side options of ``create(empty_head=...)``; training options (the loss weight) stay with the trainer."""


def _empty_head_dropout(empty_head: dict[str, Any]) -> float:
    """The head's dropout from the ``empty_head`` options, checked before anything is built."""
    unknown = sorted(set(empty_head) - set(EMPTY_HEAD_DEFAULTS))
    if unknown:
        raise TypeError(
            f"empty_head got unexpected option(s) {', '.join(unknown)}; it accepts: {', '.join(sorted(EMPTY_HEAD_DEFAULTS))}"
        )
    dropout = {**EMPTY_HEAD_DEFAULTS, **empty_head}["dropout"]
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) or not 0 <= dropout < 1:
        raise ValueError(f"empty_head.dropout must be a number in [0, 1), got {dropout!r}")
    return float(dropout)


def _empty_head(channels: int, dropout: float) -> nn.Module:
    """The one-logit "has salt" head on ``channels`` encoder features, initialised as smp initialises its heads."""
    head = ClassificationHead(channels, classes=1, pooling="avg", dropout=dropout, activation=None)
    initialize_head(head)
    return head


def names() -> list[str]:
    """The architecture names ``create`` accepts, in registry order."""
    return list(ARCHITECTURES)


def create(
    name: str,
    *,
    encoder: str = "resnet34",
    encoder_weights: str | bool | None = None,
    in_channels: int = 1,
    classes: int = 1,
    empty_head: dict[str, Any] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build architecture ``name`` on ``encoder``; the model maps (N, in_channels, H, W) to logits (N, classes, H, W).

    H and W must be multiples of 32. ``kwargs`` override the registry defaults and must be among them.
    Seed torch before calling for a reproducible initialisation.

    ``empty_head`` (options from ``EMPTY_HEAD_DEFAULTS``, ``{}`` for the defaults) adds the image-level
    head; the model then returns ``(mask_logits, empty_logits)`` of shapes (N, classes, H, W) and (N, 1),
    where ``sigmoid(empty_logits)`` is the probability that the image has salt. The head is built after
    everything else, so with the same seed every other weight, and so the mask logits, are those of the
    model without it; ``None`` builds exactly today's model.
    """
    try:
        entry = ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; valid names: {', '.join(names())}") from None
    unknown = sorted(set(kwargs) - set(entry.defaults))
    if unknown:
        raise TypeError(
            f"{name} got unexpected option(s) {', '.join(unknown)}; it accepts: {', '.join(sorted(entry.defaults)) or 'none'}"
        )
    options = {**entry.defaults, **kwargs}
    dropout = None if empty_head is None else _empty_head_dropout(empty_head)
    try:
        model = entry.build(
            encoder_name=encoder, encoder_weights=encoder_weights, in_channels=in_channels, classes=classes, **options
        )
    except OSError as exc:
        if encoder_weights is None:
            raise
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailable(
            f"cannot fetch {encoder_weights!r} weights for encoder {encoder!r} (no network? {type(exc).__name__}: "
            f"{reason}); set `encoder_weights: null` to train from scratch"
        ) from exc
    if dropout is not None:
        model.classification_head = _empty_head(model.encoder.out_channels[-1], dropout)
    return model
