"""Print params (gradient-receiving) and GMACs at 128 px for every architecture, plus RefineNet's structure.

Run: python benchmarks/arch_table.py [--encoder resnet34] [--size 128]
The numbers are measured with ``architectures.describe`` (a real forward/backward), not computed by hand.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import architectures
from architectures.refinenet import RefineNet, ResidualConvUnit


def _params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _millions(n: int) -> str:
    return f"{n / 1e6:.2f}M"


def table(encoder: str, size: int) -> str:
    """One row per architecture at its registry defaults, 1 input channel, 1 class."""
    lines = [
        f"encoder={encoder}, input {size}x{size}x1, registry defaults",
        f"{'architecture':<15}{'params':>10}{'dead':>8}{'GMACs':>9}{'stride':>8}",
    ]
    for name in architectures.names():
        torch.manual_seed(0)
        info = architectures.describe(architectures.create(name, encoder=encoder), input_size=size)
        lines.append(
            f"{name:<15}{_millions(info['params']):>10}{info['dead_params']:>8}"
            f"{info['macs'] / 1e9:>9.2f}{info['output_stride']:>8}"
        )
    return "\n".join(lines)


def refinenet_summary(model: RefineNet) -> str:
    """Blocks, widths and parameter counts per part, in the paper's terms."""
    lines = [f"RefineNet ({model.variant}) on {type(model.encoder).__name__}: {_millions(_params(model))} params"]
    lines.append(f"  encoder                               {_millions(_params(model.encoder)):>9}")
    for level, conv in model.adapt.items():
        k = conv.kernel_size[0]
        lines.append(
            f"  adapt[{level}] conv{k}x{k} {conv.in_channels}->{conv.out_channels}".ljust(40)
            + f"{_millions(_params(conv)):>9}"
        )
    for level, block in model.blocks.items():
        lines.append(f"  {level} (width {block.width})".ljust(40) + f"{_millions(_params(block)):>9}")
        for rcus, conv in zip(block.rcus, block.fuse or [None] * len(block.rcus)):
            width = conv.in_channels if conv is not None else block.width
            if len(rcus):
                lines.append(f"    path {width}: {len(rcus)} RCU".ljust(40) + f"{_millions(_params(rcus)):>9}")
            if conv is not None:
                k = conv.kernel_size[0]
                lines.append(
                    f"    fusion conv{k}x{k} {width}->{conv.out_channels}".ljust(40) + f"{_millions(_params(conv)):>9}"
                )
        k = block.crp.stages[0][1].kernel_size[0]
        lines.append(
            f"    CRP {len(block.crp.stages)} x [maxpool5x5 s1 -> conv{k}x{k}]".ljust(40)
            + f"{_millions(_params(block.crp)):>9}"
        )
        if len(block.out):
            lines.append(f"    output: {len(block.out)} RCU".ljust(40) + f"{_millions(_params(block.out)):>9}")
    rcus = sum(isinstance(m, ResidualConvUnit) for m in model.head)
    lines.append(f"  head: {rcus} RCU + conv3x3 classifier".ljust(40) + f"{_millions(_params(model.head)):>9}")
    return "\n".join(lines)


def paper_scale() -> str:
    """Sizes in the papers' setting (ResNet-50/101/152, RGB, 21 VOC classes, 512x512), built on the meta device."""
    lines = ["Paper setting (3 channels, 21 classes, 512x512):", f"{'model':<28}{'params':>10}{'GMACs':>9}"]
    for variant, encoder in [("full", "resnet101"), ("light", "resnet50"), ("light", "resnet101"), ("light", "resnet152")]:
        with torch.device("meta"):
            model = RefineNet(encoder, in_channels=3, classes=21, variant=variant).eval()
            with FlopCounterMode(display=False) as counter:
                model(torch.empty(1, 3, 512, 512))
        lines.append(f"{variant + ' ' + encoder:<28}{_millions(_params(model)):>10}{counter.get_total_flops() / 2e9:>9.1f}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default="resnet34")
    parser.add_argument("--size", type=int, default=128)
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(table(args.encoder, args.size))
    for variant in ("full", "light"):
        torch.manual_seed(0)
        print()
        print(refinenet_summary(architectures.create("refinenet", encoder=args.encoder, variant=variant)))
    print()
    print(paper_scale())


if __name__ == "__main__":
    main()
