"""Measure a model's size, cost and output stride by running it, so the numbers cannot drift from the code."""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from architectures.deterministic import AdaptiveAvgPool, BilinearResize


def _first_conv(model: nn.Module) -> nn.Conv2d:
    """The stem conv, whose input channels are the model's."""
    return next(m for m in model.modules() if isinstance(m, nn.Conv2d))


def describe(model: nn.Module, input_size: int = 128, in_channels: int | None = None) -> dict[str, int]:
    """Params, multiply-accumulates and output stride of ``model`` on one ``input_size`` square image.

    - ``params``: parameters that receive a gradient in a forward/backward pass, i.e. the model's real
      size; ``dead_params`` is the rest (0 for every architecture ``create`` builds).
    - ``macs``: conv and linear multiply-accumulates of one forward pass (``FlopCounterMode`` flops / 2;
      pooling, normalisation and interpolation are not counted, also where ``make_deterministic`` computes
      them as matrix products: the same model has the same ``macs`` either way).
    - ``output_stride``: input size over the size of the encoder's deepest feature map.

    Works on a copy in eval mode with its own random generator: the caller's weights, batch-norm
    statistics, gradients and global RNG state are untouched. ``model`` needs an ``encoder`` attribute,
    as every model from ``create`` has. A model with the empty-vs-salt head returns a tuple of outputs;
    the backward pass goes through all of them, so the head's parameters count as live.
    """
    probe = copy.deepcopy(model).eval()
    probe.zero_grad(set_to_none=True)
    device = next(probe.parameters()).device
    channels = in_channels or _first_conv(probe).in_channels
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, channels, input_size, input_size, generator=generator).to(device)

    deepest: list[int] = []
    hook = probe.encoder.register_forward_hook(lambda _m, _i, out: deepest.append(out[-1].shape[-1]))
    try:
        with FlopCounterMode(display=False) as counter:
            out = probe(x)
    finally:
        hook.remove()
    outputs = out if isinstance(out, tuple) else (out,)
    loss = sum((o * torch.randn(o.shape, generator=generator).to(device=device, dtype=o.dtype)).sum() for o in outputs)
    loss.backward()

    matrix_ops = sum(sum(counter.get_flop_counts().get(f"{type(probe).__name__}.{name}", {}).values())
                     for name, module in probe.named_modules() if isinstance(module, (BilinearResize, AdaptiveAvgPool)))
    total = sum(p.numel() for p in probe.parameters())
    live = sum(p.numel() for p in probe.parameters() if p.grad is not None)
    return {
        "params": live,
        "dead_params": total - live,
        "macs": (counter.get_total_flops() - matrix_ops) // 2,
        "output_stride": input_size // deepest[0],
    }
