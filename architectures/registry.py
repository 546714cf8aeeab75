"""The registry: architecture name -> builder and the options it accepts, with defaults for 128 px inputs.

Every option an architecture accepts is listed in its defaults, so an unknown or misspelt option
is an error rather than something smp would silently hand to the encoder and drop.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import segmentation_models_pytorch as smp
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
    **kwargs: Any,
) -> nn.Module:
    """Build architecture ``name`` on ``encoder``; the model maps (N, in_channels, H, W) to logits (N, classes, H, W).

    H and W must be multiples of 32. ``kwargs`` override the registry defaults and must be among them.
    Seed torch before calling for a reproducible initialisation.
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
    try:
        return entry.build(
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
