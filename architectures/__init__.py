"""Segmentation architectures for the salt benchmark, on shared smp/timm encoders.

``create(name, encoder=..., ...)`` builds one; ``names()`` lists them; ``describe(model)`` measures it.
The package knows nothing of the harness.

Defaults, and why they suit 101x101 images padded to 128x128:

- **DeepLab v3 / v3+**: encoder output stride 8, so ASPP works on a 16x16 map (stride 16 would
  leave 8x8 for salt bodies that are often a few pixels wide). Atrous rates (3, 6, 9): smp's
  (12, 24, 36) are the paper's rates for a 65x65 map (513 px crops at stride 8); on a 16x16 map a
  3x3 branch with rate >= 16 has only its centre tap inside the map and degenerates to a 1x1 conv.
  (3, 6, 9) scales the paper's rates by 16/65, keeping the same fraction of each kernel inside the
  map. v3+ keeps smp's separable ASPP and fuses the 1/4 features (32x32) as in the paper.
- **PSPNet**: the whole encoder, dilated to output stride 8 as in Zhao et al. (smp builds PSPNet
  with ``encoder_depth=3`` and no dilation, which uses only the stem and first two ResNet stages:
  ~1.3M of resnet34's 21.3M parameters). At 128 px the pyramid (1, 2, 3, 6 bins) then pools a
  16x16 map, where every bin covers at least 2x2 pixels. ``encoder_depth=3`` remains available;
  the unused stages are then removed so no parameter is dead.
- **UNet**: smp's decoder channels (256, 128, 64, 32, 16) and no attention, i.e. the plain UNet;
  ``decoder_channels`` and ``decoder_attention_type="scse"`` are options.
- **LinkNet**: smp's, unchanged; it has nothing size-dependent.
- **RefineNet**: see ``architectures.refinenet``; 512/256 widths, 4-block chained residual pooling.

``create(..., empty_head={"dropout": 0.2})`` adds an image-level "has salt" head, the same on every
architecture (global average pool of the deepest encoder features -> dropout -> linear(C, 1)), and the
model returns ``(mask_logits, empty_logits)``; without it the model is exactly the one above.

``make_deterministic(model)`` swaps the bilinear upsampling and adaptive average pooling of any of them for
fixed-matrix products, whose CUDA backward is deterministic (``architectures.deterministic``); on the CPU the
library operations are deterministic already.

Encoder weights default to ``None`` (random init, offline). ``"imagenet"`` downloads through smp;
without network ``create`` raises ``WeightsUnavailable`` saying so in one line.
"""
from architectures.describe import describe
from architectures.deterministic import make_deterministic
from architectures.registry import ARCHITECTURES, EMPTY_HEAD_DEFAULTS, WeightsUnavailable, create, names

__all__ = ["ARCHITECTURES", "EMPTY_HEAD_DEFAULTS", "WeightsUnavailable", "create", "describe", "make_deterministic",
           "names"]
