"""RefineNet (Lin et al., CVPR 2017) and Light-Weight RefineNet (Nekrasov et al., BMVC 2018).

smp has no RefineNet, so it is written here on ``smp.encoders.get_encoder`` and therefore takes
every encoder the smp architectures take, ``tu-`` timm encoders included.

Full variant (``variant="full"``), a 4-cascade over the encoder stages at 1/32, 1/16, 1/8, 1/4:

- each stage goes through an adaptation conv (3x3) to its path width: 512 on the 1/32 path,
  256 elsewhere (``decoder_channels``, deepest first);
- RefineNet-4 takes the 1/32 path alone; RefineNet-k (k = 3, 2, 1) takes its encoder path and
  the output of RefineNet-(k+1);
- each block: 2 residual conv units (RCU: ReLU-conv3x3-ReLU-conv3x3 + identity, no batch norm)
  per input path -> multi-resolution fusion (3x3 conv of every path to the smallest path width,
  bilinear upsampling to the largest resolution, sum; skipped for a single path) -> chained
  residual pooling (CRP: ReLU, then a chain of [5x5 max-pool stride 1 -> 3x3 conv], each output
  added to a running residual sum) -> 1 output RCU;
- after RefineNet-1 (1/4): 2 more RCUs, a 3x3 classifier, bilinear upsampling to the input size.

CRP length: the CVPR paper's illustration and text describe two pooling blocks; the authors'
released code and Nekrasov's reimplementations chain four. ``crp_blocks=4`` is the default
(the issue's choice); ``crp_blocks=2`` gives the CVPR text.

At 128 px inputs the 1/32 map is 4x4: the first 5x5 max-pool of RefineNet-4's CRP already sees
at least 3x3 of it and every later pool in the chain sees all of it, so that CRP is global
pooling. That is what the architecture does on small images: faithful, not a bug.

Batch norm: none in the decoder, as in the paper, whose decoder refines pretrained ResNet features.
``decoder_norm=True`` puts one after every decoder conv (as every smp decoder has); trained from
scratch, the norm-free decoder often never leaves the all-empty prediction, so the benchmark configs
switch it on and say so.

Image-level head: ``classification_head`` is ``None``, or a module on the encoder's deepest features
(``architectures.create(empty_head=...)`` attaches the one every architecture gets); the model then
returns ``(mask_logits, class_logits)``, as smp's models do.

Bilinear upsampling (fusion, final) runs in ``BilinearResize`` modules: torch's ``F.interpolate``, or fixed-matrix
products after ``architectures.make_deterministic`` (deterministic on CUDA).

Light variant (``variant="light"``, Nekrasov et al.): no RCUs at all, and every 3x3 conv of the
decoder (adaptation, fusion, CRP) becomes 1x1; the 3x3 classifier stays. Same widths and CRP.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch.encoders import get_encoder
from torch import nn

from architectures.deterministic import BilinearResize

LEVELS = ("refinenet4", "refinenet3", "refinenet2", "refinenet1")
"""Block names, deepest first; they consume encoder stages 5, 4, 3, 2 (strides 32, 16, 8, 4)."""


def _conv(in_channels: int, out_channels: int, kernel: int, bias: bool = False, norm: bool = False) -> nn.Module:
    """A stride-1 'same' conv. The paper's decoder has no batch norm (it fine-tunes pretrained features);
    ``norm=True`` appends one, which a decoder trained from scratch needs to start learning at all."""
    conv = nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2, bias=bias and not norm)
    return nn.Sequential(conv, nn.BatchNorm2d(out_channels)) if norm else conv


class ResidualConvUnit(nn.Module):
    """ReLU-conv3x3-ReLU-conv3x3 plus identity: a ResNet unit without batch norm, to fine-tune encoder features."""

    def __init__(self, width: int, norm: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv(width, width, 3, bias=True, norm=norm)
        self.conv2 = _conv(width, width, 3, bias=True, norm=norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class ChainedResidualPooling(nn.Module):
    """ReLU, then chained [5x5 max-pool stride 1 -> conv] stages whose outputs are summed onto the input.

    Each stage pools the previous stage's output, so the sum mixes context from ever larger windows.
    """

    def __init__(self, width: int, blocks: int, kernel: int, norm: bool = False) -> None:
        super().__init__()
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(5, stride=1, padding=2), _conv(width, width, kernel, norm=norm))
            for _ in range(blocks)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(x)
        out = x
        for stage in self.stages:
            x = stage(x)
            out = out + x
        return out


class RefineNetBlock(nn.Module):
    """Per-path RCUs -> multi-resolution fusion -> chained residual pooling -> output RCUs.

    The block's width is the smallest input width, as the paper's fusion prescribes.
    """

    def __init__(self, in_widths: Sequence[int], *, kernel: int, rcus: int, crp_blocks: int, output_rcus: int,
                 norm: bool = False) -> None:
        super().__init__()
        self.width = min(in_widths)
        self.rcus = nn.ModuleList(nn.Sequential(*(ResidualConvUnit(w, norm) for _ in range(rcus))) for w in in_widths)
        self.fuse = (nn.ModuleList(_conv(w, self.width, kernel, norm=norm) for w in in_widths)
                     if len(in_widths) > 1 else None)
        self.resize = BilinearResize(align_corners=False) if self.fuse is not None else None
        self.crp = ChainedResidualPooling(self.width, crp_blocks, kernel, norm)
        self.out = nn.Sequential(*(ResidualConvUnit(self.width, norm) for _ in range(output_rcus)))

    def forward(self, *paths: torch.Tensor) -> torch.Tensor:
        paths = tuple(rcu(p) for rcu, p in zip(self.rcus, paths, strict=True))
        if self.fuse is None:
            x = paths[0]
        else:
            size = max((p.shape[-2:] for p in paths), key=lambda s: s[0] * s[1])
            x = sum(self._resize(conv(p), size) for conv, p in zip(self.fuse, paths))
        return self.out(self.crp(x))

    def _resize(self, x: torch.Tensor, size: torch.Size) -> torch.Tensor:
        """Bilinear upsampling, skipped when the map already has the target size."""
        return x if x.shape[-2:] == size else self.resize(x, size)


class RefineNet(nn.Module):
    """4-cascade RefineNet over an smp/timm encoder; returns logits at the input size (and the image-level head's)."""

    def __init__(
        self,
        encoder_name: str = "resnet34",
        encoder_weights: str | None = None,
        in_channels: int = 3,
        classes: int = 1,
        *,
        variant: Literal["full", "light"] = "full",
        decoder_channels: Sequence[int] = (512, 256, 256, 256),
        crp_blocks: int = 4,
        decoder_norm: bool = False,
    ) -> None:
        super().__init__()
        if variant not in ("full", "light"):
            raise ValueError(f"RefineNet variant must be 'full' or 'light', got {variant!r}")
        if len(decoder_channels) != 4:
            raise ValueError(f"RefineNet needs 4 decoder widths (deepest first), got {tuple(decoder_channels)}")
        self.variant = variant
        light = variant == "light"
        kernel = 1 if light else 3
        self.encoder = get_encoder(encoder_name, in_channels=in_channels, depth=5, weights=encoder_weights)
        stage_channels = self.encoder.out_channels[2:][::-1]
        self.adapt = nn.ModuleDict(
            {level: _conv(c, w, kernel, norm=decoder_norm)
             for level, c, w in zip(LEVELS, stage_channels, decoder_channels, strict=True)}
        )
        self.blocks = nn.ModuleDict()
        previous: int | None = None
        for level, width in zip(LEVELS, decoder_channels):
            in_widths = (width,) if previous is None else (width, previous)
            block = RefineNetBlock(
                in_widths, kernel=kernel, rcus=0 if light else 2, crp_blocks=crp_blocks, output_rcus=0 if light else 1,
                norm=decoder_norm,
            )
            self.blocks[level] = block
            previous = block.width
        self.head = nn.Sequential(
            *(ResidualConvUnit(previous, decoder_norm) for _ in range(0 if light else 2)),
            nn.Conv2d(previous, classes, 3, padding=1, bias=True),
        )
        self.upsample = BilinearResize(align_corners=False)
        self.classification_head: nn.Module | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        if x.shape[-2] % 32 or x.shape[-1] % 32:
            raise ValueError(f"RefineNet needs height and width divisible by 32, got {tuple(x.shape[-2:])}")
        features = self.encoder(x)
        y: torch.Tensor | None = None
        for level, feature in zip(LEVELS, features[2:][::-1], strict=True):
            path = self.adapt[level](feature)
            y = self.blocks[level](path) if y is None else self.blocks[level](path, y)
        masks = self.upsample(self.head(y), x.shape[-2:])
        if self.classification_head is None:
            return masks
        return masks, self.classification_head(features[-1])
