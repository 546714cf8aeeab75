"""Config loading: layering, dotted overrides, one-line errors naming key and file, and the protocol hash."""
from __future__ import annotations

from pathlib import Path

import pytest

import architectures
from bench import config
from bench.errors import BenchError

QUICK = config.CONFIG_DIR / "quick.yaml"
BENCH = config.CONFIG_DIR / "benchmark.yaml"


def test_shipped_configs_load() -> None:
    quick, full = config.load([QUICK]), config.load([BENCH])
    assert quick.protocol.folds < full.protocol.folds
    assert set(quick.architectures) == set(full.architectures) == set(architectures.names())


def test_dotted_overrides_are_typed() -> None:
    cfg = config.load([QUICK], ["protocol.epochs=30", "architectures.unet.encoder=resnet50", "protocol.optimizer.lr=1e-4"])
    assert cfg.protocol.epochs == 30
    assert cfg.protocol.optimizer.lr == pytest.approx(1e-4)
    assert cfg.plan("unet").model["encoder"] == "resnet50"
    assert cfg.plan("linknet").model["encoder"] == cfg.protocol.model.encoder


def test_layering_later_file_wins(tmp_path: Path) -> None:
    extra = tmp_path / "extra.yaml"
    extra.write_text("protocol:\n  batch_size: 7\n")
    cfg = config.load([QUICK, extra])
    assert cfg.protocol.batch_size == 7
    assert cfg.protocol.epochs == config.load([QUICK]).protocol.epochs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("protocol:\n  epoks: 3\n", "unknown key 'protocol.epoks'"),
        ("protocol:\n  epochs: many\n", "protocol.epochs: expected int, got str"),
        ("protocol:\n  folds: 1\n", "protocol.folds: 1 is below the minimum 2"),
        ("protocol:\n  optimizer: {name: rmsprop}\n", "protocol.optimizer.name: 'rmsprop' is not one of adamw, sgd"),
        ("protocol:\n  scheduler: {name: step}\n", "protocol.scheduler.name: 'step' is not one of cosine, plateau, none"),
        ("architectures:\n  unet: {train: {optimizer: {name: lion}}}\n",
         "architectures.unet.train.optimizer.name: 'lion' is not one of adamw, sgd"),
        ("protocol:\n  loss: {first: {focal: 1.0}}\n", "unknown loss 'focal'"),
        ("protocol:\n  input: {size: 100}\n", "not a multiple of 32"),
        ("architectures:\n  segformer: {}\n", "architectures.segformer: unknown"),
        ("protocol: [1, 2\n", "invalid YAML"),
    ],
)
def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, text: str, message: str) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(text)
    with pytest.raises(BenchError) as err:
        config.load([QUICK, bad])
    assert message in str(err.value)
    assert str(bad) in str(err.value)
    assert "\n" not in str(err.value)


def test_bad_override_names_the_key() -> None:
    with pytest.raises(BenchError, match="protocol.batch_size: expected int"):
        config.load([QUICK], ["protocol.batch_size=big"])
    with pytest.raises(BenchError, match="expected KEY=VALUE"):
        config.load([QUICK], ["protocol.epochs"])


def test_protocol_hash_ignores_architectures_and_runtime_only() -> None:
    base = config.load([QUICK])
    same = config.load([QUICK], ["architectures.unet.decoder_attention_type=scse", "runtime.device=cpu", "name=other"])
    assert config.protocol_hash(base) == config.protocol_hash(same)
    for change in ["protocol.epochs=7", "data.n_train=100", "protocol.augment.hflip=0.0", "protocol.model.encoder=resnet34"]:
        assert config.protocol_hash(config.load([QUICK], [change])) != config.protocol_hash(base), change


def test_per_architecture_recipe_overrides_training_only() -> None:
    cfg = config.load([QUICK], ["architectures.unet.train.optimizer.lr=0.01", "architectures.unet.train.batch_size=4"])
    unet, linknet = cfg.plan("unet"), cfg.plan("linknet")
    assert unet.protocol.optimizer.lr == 0.01 and unet.protocol.batch_size == 4
    assert unet.recipe.batch_size == 4 and unet.recipe_override == {"optimizer": {"lr": 0.01}, "batch_size": 4}
    assert linknet.protocol == config.load([QUICK]).protocol and linknet.recipe_override == {}
    assert "train" not in unet.model
    assert config.protocol_hash(cfg) == config.protocol_hash(config.load([QUICK]))
    assert unet.protocol_hash == linknet.protocol_hash == config.protocol_hash(cfg)
    with pytest.raises(BenchError, match="architectures.unet.train.epochs: not a per-architecture setting"):
        config.load([QUICK], ["architectures.unet.train.epochs=3"])
    with pytest.raises(BenchError, match="architectures.unet.train.optimizer.lr: expected float"):
        config.load([QUICK], ["architectures.unet.train.optimizer.lr=fast"])
