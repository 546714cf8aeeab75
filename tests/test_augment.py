"""The augmentation keeps image and mask aligned, makes no host sync, and gives the same batches as before it
stopped asking the device."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench.augment import _uniform, augment
from bench.config import AugmentConfig
from bench.host_sync import count_host_syncs


def _augment_with_host_check(x: torch.Tensor, y: torch.Tensor, cfg: AugmentConfig,
                             gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """The algorithm as it was when it skipped the affine warp after asking the device whether any image drew one."""
    n, device = x.shape[0], x.device
    flip = torch.rand(n, generator=gen, device=device) < cfg.hflip
    affine = torch.rand(n, generator=gen, device=device) < cfg.shift_scale
    scale = _uniform(n, 1 - cfg.max_scale, 1 + cfg.max_scale, gen, device)
    shift = _uniform(2 * n, -2 * cfg.max_shift, 2 * cfg.max_shift, gen, device).view(n, 2)
    color = torch.rand(n, generator=gen, device=device) < cfg.color
    contrast = _uniform(n, 1 - cfg.contrast, 1 + cfg.contrast, gen, device)
    brightness = _uniform(n, -cfg.brightness, cfg.brightness, gen, device)

    sel = flip.view(n, 1, 1, 1)
    x = torch.where(sel, x.flip(-1), x)
    y = torch.where(sel, y.flip(-1), y)

    if bool(affine.any()):
        theta = torch.zeros(n, 2, 3, device=device, dtype=x.dtype)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0 / scale
        theta[:, :, 2] = shift
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        xw = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        yw = (F.grid_sample(y, grid, mode="bilinear", padding_mode="reflection", align_corners=False) > 0.5).to(y.dtype)
        sel = affine.view(n, 1, 1, 1)
        x = torch.where(sel, xw, x)
        y = torch.where(sel, yw, y)

    c = torch.where(color, contrast, torch.ones_like(contrast)).view(n, 1, 1, 1)
    b = torch.where(color, brightness, torch.zeros_like(brightness)).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - mean) * c + mean + b).clamp_(0.0, 1.0)
    return x, y


def _batch(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 101, 101, generator=gen), (torch.rand(n, 1, 101, 101, generator=gen) > 0.6).float()


CONFIGS = {
    "default": AugmentConfig(),
    "no-affine": AugmentConfig(shift_scale=0.0),
    "all-affine": AugmentConfig(hflip=1.0, shift_scale=1.0, max_shift=0.5, max_scale=0.5, color=1.0, brightness=1, contrast=1),
    "flip-only": AugmentConfig(hflip=0.5, shift_scale=0.0, color=0.0),
    "rare-affine": AugmentConfig(shift_scale=0.05, color=0.0),
}


@pytest.mark.parametrize("name", CONFIGS)
@pytest.mark.parametrize("seed", [0, 1, 7])
def test_batches_are_bit_identical_to_the_host_checked_algorithm(name: str, seed: int) -> None:
    cfg = CONFIGS[name]
    x, y = _batch(6, seed)
    gen, old_gen = torch.Generator().manual_seed(100 + seed), torch.Generator().manual_seed(100 + seed)
    for _ in range(3):  # successive steps of one stream
        new, old = augment(x, y, cfg, gen), _augment_with_host_check(x, y, cfg, old_gen)
        assert torch.equal(new[0], old[0]) and torch.equal(new[1], old[1])
    assert torch.equal(gen.get_state(), old_gen.get_state())


def test_a_batch_with_no_affine_draw_is_left_unwarped() -> None:
    """shift_scale=0 draws no warp: the masks are only flipped, so each equals its input or its mirror."""
    x, y = _batch(8, 3)
    cfg = AugmentConfig(hflip=0.5, shift_scale=0.0, max_shift=0.5, max_scale=0.5)
    _, out = augment(x, y, cfg, torch.Generator().manual_seed(0))
    for before, after in zip(y, out):
        assert torch.equal(after, before) or torch.equal(after, before.flip(-1))


@pytest.mark.parametrize("name", CONFIGS)
def test_augment_makes_no_host_sync(name: str) -> None:
    x, y = _batch(4, 0)
    gen = torch.Generator().manual_seed(0)
    with count_host_syncs() as syncs:
        augment(x, y, CONFIGS[name], gen)
    assert syncs.count == 0, syncs.calls


def test_the_counter_finds_the_host_check_augment_used_to_make() -> None:
    x, y = _batch(4, 0)
    with count_host_syncs() as syncs:
        _augment_with_host_check(x, y, AugmentConfig(), torch.Generator().manual_seed(0))
    assert syncs.calls == ["Tensor.__bool__"]


@pytest.mark.parametrize(("sync", "name"), [
    (lambda t: t.sum().item(), "Tensor.item"),
    (lambda t: bool(t.any()), "Tensor.__bool__"),
    (lambda t: float(t.sum()), "Tensor.__float__"),
    (lambda t: int(t.sum()), "Tensor.__int__"),
    (lambda t: range(t.sum().long()), "Tensor.__index__"),
    (lambda t: t.tolist(), "Tensor.tolist"),
    (lambda t: t.numpy(), "Tensor.numpy"),
    (lambda t: t.cpu(), "Tensor.cpu"),
    (lambda t: t.nonzero(), "Tensor.nonzero"),
    (lambda t: torch.nonzero(t), "torch.nonzero"),
    (lambda t: t.unique(), "Tensor.unique"),
    (lambda t: t[t > 0.5], "Tensor.__getitem__[bool mask]"),
])
def test_the_counter_counts_each_kind_of_sync_once(sync, name: str) -> None:
    t = torch.rand(5)
    with count_host_syncs() as syncs:
        t[1:3], t[torch.tensor([0, 2])], t.to(t.device), t + 1  # none of these waits for the device
        sync(t)
    assert syncs.calls == [name]


def test_the_counter_counts_a_copy_from_the_device_only() -> None:
    with count_host_syncs() as syncs:
        torch.rand(3).to("cpu")
        with pytest.raises(NotImplementedError):  # a meta tensor has no data to copy, but the copy was asked for
            torch.empty(3, device="meta").to("cpu")
    assert syncs.calls == ["Tensor.to(cpu)"]


def test_the_counter_restores_tensor_methods() -> None:
    before = {m: torch.Tensor.__dict__.get(m) for m in ("item", "__bool__", "to", "unique", "__getitem__")}
    with count_host_syncs():
        assert torch.Tensor.__dict__.get("item") is not None
    assert {m: torch.Tensor.__dict__.get(m) for m in before} == before
    with count_host_syncs() as syncs:
        pass
    torch.ones(1).item()
    assert syncs.count == 0


def test_augment_keeps_image_and_mask_aligned() -> None:
    gen = torch.Generator().manual_seed(0)
    masks = (torch.rand(16, 1, 101, 101, generator=gen) > 0.7).float()
    images = masks.clone()
    cfg = AugmentConfig(hflip=0.5, shift_scale=1.0, max_shift=0.1, max_scale=0.1, color=0.0)
    x, y = augment(images, masks, cfg, torch.Generator().manual_seed(1))
    assert not torch.equal(y, masks), "the augmentation did nothing"
    agreement = ((x > 0.5).float() == y).float().mean()
    assert agreement > 0.97
