"""The architecture registry: shapes, gradients, determinism, 128 px defaults, RefineNet's structure, describe(),
and the empty-vs-salt head: the same on every architecture, its gradients, "off is unchanged"."""
from __future__ import annotations

import pytest
import segmentation_models_pytorch as smp
import torch
import torch.nn.functional as F
from huggingface_hub.errors import LocalEntryNotFoundError
from segmentation_models_pytorch.base import ClassificationHead
from torch import nn

from architectures import EMPTY_HEAD_DEFAULTS, WeightsUnavailable, create, describe, names
from architectures.refinenet import ChainedResidualPooling, RefineNet, ResidualConvUnit

#: every registered architecture runs through the same suite, so a new one is tested with no edit here
NAMES = names()
ENCODERS = ["resnet18", "tu-test_resnet"]
CASES = [(name, encoder) for name in NAMES for encoder in ENCODERS]


def _build(name: str, encoder: str, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    return create(name, encoder=encoder, **kwargs)


def _batch(size: int, channels: int = 1) -> torch.Tensor:
    return torch.randn(2, channels, size, size, generator=torch.Generator().manual_seed(size))


@pytest.fixture(scope="module", params=CASES, ids=[f"{n}-{e}" for n, e in CASES])
def case(request) -> tuple[str, str, nn.Module]:
    """One model per (name, encoder), shared by the tests that only run it."""
    name, encoder = request.param
    return name, encoder, _build(name, encoder)


def test_the_registry_holds_the_six_benchmarked_architectures() -> None:
    assert {"unet", "linknet", "pspnet", "refinenet", "deeplabv3", "deeplabv3plus"} <= set(NAMES)
    assert len(set(NAMES)) == len(NAMES)


@pytest.mark.parametrize("size", [64, 128])
def test_output_shape(case, size: int) -> None:
    _, _, model = case
    model.train()
    with torch.no_grad():
        out = model(_batch(size))
    assert out.shape == (2, 1, size, size)
    assert torch.isfinite(out).all()


def test_every_parameter_gets_a_gradient(case) -> None:
    _, _, model = case
    _assert_all_parameters_learn(model)


@pytest.mark.parametrize(
    ("name", "encoder", "options"),
    [
        ("pspnet", "resnet18", {"encoder_depth": 3}),
        ("pspnet", "resnet18", {"encoder_depth": 4, "encoder_output_stride": 32}),
        ("refinenet", "tu-test_resnet", {"variant": "light"}),
    ],
)
def test_every_parameter_gets_a_gradient_with_options(name: str, encoder: str, options: dict) -> None:
    _assert_all_parameters_learn(_build(name, encoder, **options))


def test_every_scse_parameter_is_reached() -> None:
    """Reached, not necessarily non-zero: the 16-channel block's channel squeeze has 16 // 16 = 1 hidden
    unit, which a ReLU can switch off for a whole batch (smp's design, left alone)."""
    _assert_all_parameters_learn(_build("unet", "tu-test_resnet", decoder_attention_type="scse"), nonzero=False)


def _assert_all_parameters_learn(model: nn.Module, nonzero: bool = True) -> None:
    """Every parameter is reached by the backward pass and has a non-zero gradient on the second step.

    Not the first: timm's ResNets zero-initialise the last batch-norm scale of each residual block,
    so that block's other weights get an exactly zero gradient until one step has moved the scale.
    """
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    for step in range(2):
        optimizer.zero_grad(set_to_none=True)
        out = model(_batch(128))
        (out * torch.randn(out.shape, generator=torch.Generator().manual_seed(step))).mean().backward()
        if step == 0:
            assert [n for n, p in model.named_parameters() if p.grad is None] == []
            optimizer.step()
    silent = [n for n, p in model.named_parameters() if p.grad is None or (nonzero and p.grad.abs().sum() == 0)]
    assert silent == []


@pytest.mark.parametrize(("name", "encoder"), CASES)
def test_init_is_deterministic_for_a_seed(name: str, encoder: str) -> None:
    first, again, other = (_build(name, encoder, seed=s).state_dict() for s in (0, 0, 1))
    assert first.keys() == again.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert any(not torch.equal(first[k], other[k]) for k in first if first[k].is_floating_point())


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize(("name", "encoder"), CASES)
def test_input_channels(name: str, encoder: str, channels: int) -> None:
    model = _build(name, encoder, in_channels=channels).eval()
    stem = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert stem.in_channels == channels
    with torch.no_grad():
        assert model(_batch(64, channels)).shape == (2, 1, 64, 64)


def test_classes_sets_output_channels() -> None:
    model = _build("refinenet", "tu-test_resnet", classes=3).eval()
    with torch.no_grad():
        assert model(_batch(64)).shape == (2, 3, 64, 64)


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(KeyError) as info:
        create("segnet")
    assert all(name in str(info.value) for name in NAMES)


@pytest.mark.parametrize(("name", "option"), [("unet", "decoder_chanels"), ("linknet", "decoder_atrous_rates")])
def test_unknown_option_is_an_error_naming_it(name: str, option: str) -> None:
    with pytest.raises(TypeError, match=f"{name}.*{option}"):
        create(name, encoder="tu-test_resnet", **{option: 1})


# --- DeepLab's atrous rates at the protocol size -------------------------------------------------


def _aspp_branches(model: nn.Module, size: int) -> list[tuple[int, int, float]]:
    """(dilation, input map size, response of the off-centre taps alone) for each dilated ASPP conv.

    The response is the conv re-run on its real input with the centre tap zeroed: it is 0 exactly
    when every off-centre tap falls in the zero padding, i.e. when the branch is a 1x1 conv.
    """
    convs = [m for m in model.decoder.aspp.modules() if isinstance(m, nn.Conv2d) and m.dilation[0] > 1]
    inputs: dict[nn.Conv2d, torch.Tensor] = {}
    hooks = [c.register_forward_hook(lambda m, args, _out: inputs.__setitem__(m, args[0])) for c in convs]
    model.eval()
    with torch.no_grad():
        model(_batch(size)[:1])
    for hook in hooks:
        hook.remove()
    branches = []
    for conv in convs:
        x = inputs[conv]
        off_centre = conv.weight.clone()
        off_centre[..., 1, 1] = 0
        response = F.conv2d(x, off_centre, None, conv.stride, conv.padding, conv.dilation, conv.groups)
        branches.append((conv.dilation[0], x.shape[-1], response.abs().sum().item()))
    return branches


@pytest.mark.parametrize("name", ["deeplabv3", "deeplabv3plus"])
def test_every_aspp_branch_reaches_beyond_its_centre_at_128px(name: str) -> None:
    branches = _aspp_branches(_build(name, "tu-test_resnet"), 128)
    assert [rate for rate, _, _ in branches] == [3, 6, 9]
    for rate, map_size, response in branches:
        assert map_size == 16
        assert rate < map_size
        assert response > 0


def test_smp_default_rates_degenerate_at_128px() -> None:
    """The check above can fail: smp's (12, 24, 36) leaves the 24 and 36 branches as 1x1 convs on 16x16."""
    branches = _aspp_branches(_build("deeplabv3", "tu-test_resnet", decoder_atrous_rates=(12, 24, 36)), 128)
    assert [(rate, response > 0) for rate, _, response in branches] == [(12, True), (24, False), (36, False)]


# --- RefineNet against the paper ------------------------------------------------------------------


def _rcu_params(width: int) -> int:
    return 2 * (9 * width * width + width)


def test_refinenet_structure_matches_the_paper() -> None:
    model = _build("refinenet", "tu-test_resnet")
    assert list(model.blocks) == ["refinenet4", "refinenet3", "refinenet2", "refinenet1"]
    assert [block.width for block in model.blocks.values()] == [512, 256, 256, 256]
    for level, block in model.blocks.items():
        paths = 1 if level == "refinenet4" else 2
        assert [len(rcus) for rcus in block.rcus] == [2] * paths
        assert len(block.out) == 1
        assert (block.fuse is None) == (paths == 1)
        assert len(block.crp.stages) == 4
        for pool, conv in block.crp.stages:
            assert (pool.kernel_size, pool.stride, pool.padding) == (5, 1, 2)
            assert conv.kernel_size == (3, 3)
    assert [type(m) for m in model.head] == [ResidualConvUnit, ResidualConvUnit, nn.Conv2d]


def test_refinenet_parameter_count_follows_the_paper() -> None:
    """Decoder size computed from the paper's description, independently of the module tree."""
    model = _build("refinenet", "tu-test_resnet")
    stages = model.encoder.out_channels[2:][::-1]
    widths = (512, 256, 256, 256)
    expected = sum(9 * c * w for c, w in zip(stages, widths))
    previous = None
    for w in widths:
        paths = [w] if previous is None else [w, previous]
        width = min(paths)
        expected += sum(2 * _rcu_params(p) for p in paths)
        expected += sum(9 * p * width for p in paths) if len(paths) > 1 else 0
        expected += 4 * 9 * width * width + _rcu_params(width)
        previous = width
    expected += 2 * _rcu_params(256) + 9 * 256 + 1
    decoder = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("encoder."))
    assert decoder == expected


def test_light_refinenet_has_no_rcus_and_only_1x1_decoder_convs() -> None:
    model = _build("refinenet", "tu-test_resnet", variant="light")
    decoder = [m for n, m in model.named_modules() if n and not n.startswith("encoder")]
    assert not any(isinstance(m, ResidualConvUnit) for m in decoder)
    kernels = [m.kernel_size for m in decoder if isinstance(m, nn.Conv2d)]
    assert kernels[-1] == (3, 3)
    assert set(kernels[:-1]) == {(1, 1)}
    assert all(len(m.stages) == 4 for m in decoder if isinstance(m, ChainedResidualPooling))
    assert describe(model)["macs"] < describe(_build("refinenet", "tu-test_resnet"))["macs"] / 5


def test_refinenet_crp_length_and_widths_are_configurable() -> None:
    model = _build("refinenet", "tu-test_resnet", crp_blocks=2, decoder_channels=(64, 32, 32, 32))
    assert [len(b.crp.stages) for b in model.blocks.values()] == [2, 2, 2, 2]
    assert [b.width for b in model.blocks.values()] == [64, 32, 32, 32]


def test_refinenet_rejects_unknown_variant_and_odd_sizes() -> None:
    with pytest.raises(ValueError, match="variant"):
        RefineNet("tu-test_resnet", variant="lite")
    with pytest.raises(ValueError, match="divisible by 32"):
        RefineNet("tu-test_resnet", in_channels=1)(torch.zeros(1, 1, 101, 101))


# --- describe() -----------------------------------------------------------------------------------


def test_describe_unet_resnet18() -> None:
    model = _build("unet", "resnet18")
    info = describe(model)
    assert info["output_stride"] == 32
    assert info["dead_params"] == 0
    assert info["params"] == sum(p.numel() for p in model.parameters())
    assert 0.5e9 < info["macs"] < 5e9
    assert describe(model, input_size=64)["macs"] * 4 == info["macs"]


@pytest.mark.parametrize(("name", "stride"), [("pspnet", 8), ("deeplabv3", 8), ("deeplabv3plus", 8), ("refinenet", 32)])
def test_describe_output_stride(name: str, stride: int) -> None:
    assert describe(_build(name, "tu-test_resnet"))["output_stride"] == stride


def test_describe_counts_only_parameters_that_learn() -> None:
    """smp's own PSPNet on resnet18 keeps layer3/layer4 but never runs them; ours has no such dead weight."""
    torch.manual_seed(0)
    stock = describe(smp.PSPNet("resnet18", encoder_weights=None, in_channels=1))
    assert stock["dead_params"] > 10_000_000
    ours = describe(_build("pspnet", "resnet18", encoder_depth=3))
    assert ours["dead_params"] == 0
    assert ours["params"] == stock["params"]


def test_describe_leaves_model_and_rng_untouched() -> None:
    model = _build("deeplabv3", "tu-test_resnet").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    describe(model)
    assert torch.equal(torch.get_rng_state(), rng)
    assert model.training
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


# --- pretrained weights offline -------------------------------------------------------------------


def _offline(*_args, **_kwargs):
    raise LocalEntryNotFoundError("Cannot reach https://huggingface.co: connection refused\nretry later")


def test_imagenet_weights_offline_is_one_clear_line(monkeypatch) -> None:
    monkeypatch.setattr(smp.encoders, "hf_hub_download", _offline)
    with pytest.raises(WeightsUnavailable) as info:
        create("unet", encoder="resnet18", encoder_weights="imagenet")
    assert isinstance(info.value, RuntimeError)
    message = str(info.value)
    assert "\n" not in message
    assert "encoder_weights: null" in message
    assert "resnet18" in message


def test_timm_weights_offline_is_one_clear_line(monkeypatch) -> None:
    import timm.models._builder

    monkeypatch.setattr(timm.models._builder, "load_state_dict_from_hf", _offline)
    with pytest.raises(WeightsUnavailable, match="encoder_weights: null"):
        create("refinenet", encoder="tu-test_resnet", encoder_weights=True)


def test_unknown_weights_name_is_not_reported_as_a_network_failure() -> None:
    with pytest.raises(KeyError, match="nonsense"):
        create("unet", encoder="resnet18", encoder_weights="nonsense")


# --- the empty-vs-salt head -----------------------------------------------------------------------


HEAD_ENCODER = "tu-test_resnet"


def _build_with_head(name: str, empty_head: dict | None, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create(name, encoder=HEAD_ENCODER, encoder_weights=None, in_channels=1, empty_head=empty_head)


def _head_batch() -> torch.Tensor:
    return torch.randn(2, 1, 64, 64, generator=torch.Generator().manual_seed(7))


@pytest.fixture(scope="module", params=names())
def pair(request) -> tuple[str, nn.Module, nn.Module]:
    """(name, model without the head, model with it), both from seed 0."""
    return request.param, _build_with_head(request.param, None), _build_with_head(request.param, {"dropout": 0.3})


def _head_layout(head: nn.Module) -> list[str]:
    return [type(m).__name__ for m in head]


def test_head_is_the_same_on_every_architecture() -> None:
    """Same layout, the same parameter count (C + 1 for C deepest encoder channels) and output shape for all six."""
    counts, layouts = {}, {}
    for name in names():
        model = _build_with_head(name, {}).eval()
        head = model.classification_head
        assert isinstance(head, ClassificationHead)
        assert isinstance(head[0], nn.AdaptiveAvgPool2d) and head[0].output_size == 1
        assert head[2].p == EMPTY_HEAD_DEFAULTS["dropout"]
        assert (head[3].in_features, head[3].out_features) == (model.encoder.out_channels[-1], 1)
        assert isinstance(head[4].activation, nn.Identity)
        with torch.no_grad():
            masks, empty = model(_head_batch())
        assert masks.shape == (2, 1, 64, 64) and empty.shape == (2, 1)
        counts[name] = sum(p.numel() for p in head.parameters())
        layouts[name] = _head_layout(head)
    assert len(set(counts.values())) == 1, counts
    assert len({tuple(v) for v in layouts.values()}) == 1, layouts
    assert counts["unet"] == _build_with_head("unet", None).encoder.out_channels[-1] + 1


def test_dropout_option_reaches_the_head() -> None:
    assert isinstance(_build_with_head("linknet", {"dropout": 0.0}).classification_head[2], nn.Identity)
    assert _build_with_head("refinenet", {"dropout": 0.45}).classification_head[2].p == 0.45


def test_off_is_todays_model_and_on_adds_only_the_head(pair) -> None:
    """Without the head: no head, a tensor out. With it (same seed): every other weight and the mask logits are bit-identical."""
    _, off, on = pair
    assert off.classification_head is None
    off_state, on_state = off.state_dict(), on.state_dict()
    extra = sorted(set(on_state) - set(off_state))
    assert extra == ["classification_head.3.bias", "classification_head.3.weight"]
    assert all(torch.equal(off_state[k], on_state[k]) for k in off_state)
    off.eval()
    on.eval()
    with torch.no_grad():
        plain = off(_head_batch())
        masks, _ = on(_head_batch())
    assert isinstance(plain, torch.Tensor)
    assert torch.equal(plain, masks)


def test_head_loss_trains_the_encoder_and_not_the_decoder(pair) -> None:
    _, _, model = pair
    model.train()
    model.zero_grad(set_to_none=True)
    _, empty = model(_head_batch())
    F.binary_cross_entropy_with_logits(empty, torch.tensor([[1.0], [0.0]])).backward()
    encoder = [p.grad for p in model.encoder.parameters()]
    assert all(g is not None for g in encoder)
    assert sum(g.abs().sum() for g in encoder) > 0
    assert next(model.encoder.parameters()).grad.abs().sum() > 0  # the stem, farthest from the head
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.classification_head.parameters())
    rest = [n for n, p in model.named_parameters()
            if not n.startswith(("encoder.", "classification_head.")) and p.grad is not None]
    assert rest == []


def test_describe_counts_the_head_as_live(pair) -> None:
    _, off, on = pair
    without, with_head = describe(off, 64), describe(on, 64)
    assert with_head["dead_params"] == 0
    assert with_head["params"] - without["params"] == on.encoder.out_channels[-1] + 1


def test_empty_head_options_are_checked() -> None:
    with pytest.raises(TypeError, match="weight"):
        create("unet", encoder=HEAD_ENCODER, empty_head={"dropout": 0.2, "weight": 0.5})
    with pytest.raises(ValueError, match="dropout"):
        create("unet", encoder=HEAD_ENCODER, empty_head={"dropout": 1.0})
