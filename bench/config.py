"""Typed benchmark configuration: YAML layers, dotted overrides, validation and the protocol hash.

A config has three top-level parts. ``data`` and ``protocol`` together are *the protocol*: every cell of a
run must share them, so their canonical JSON is hashed and the hash is recorded in every cell. The
``architectures`` section (which models, with which extra settings) is the only thing allowed to differ.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.errors import BenchError

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def _range(lo: float | None = None, hi: float | None = None, choices: tuple = ()) -> dict:
    return {"lo": lo, "hi": hi, "choices": choices}


@dataclass
class DataConfig:
    source: str = "synthetic"  # "synthetic" or a path to a Kaggle TGS folder
    n_train: int = field(default=4000, metadata=_range(8))  # synthetic: images generated; folder: ignored
    n_test: int = field(default=18000, metadata=_range(0))
    seed: int = field(default=0, metadata=_range(0))  # synthetic generator seed
    style: str = field(default="default", metadata=_range(choices=("default", "hard")))  # synthetic: same labels, other images
    subset: int | None = field(default=None, metadata=_range(8))  # use a seeded random subset of train images
    # The locked holdout: labelled images no choice ever reads, predicted once at the end of a run.
    holdout: float = field(default=0.0, metadata=_range(0, 0.9))  # folder: coverage-stratified fraction of train
    n_holdout: int = field(default=0, metadata=_range(0))  # synthetic: extra generated images
    # Of the loaded images (ids + masks, holdout included): filled in by the runner, checked when given.
    fingerprint: str | None = None


@dataclass
class InputConfig:
    size: int = field(default=128, metadata=_range(32, 1024))
    mode: str = field(default="pad", metadata=_range(choices=("pad", "resize")))


@dataclass
class AugmentConfig:
    hflip: float = field(default=0.5, metadata=_range(0, 1))
    shift_scale: float = field(default=0.5, metadata=_range(0, 1))  # probability of a random affine
    max_shift: float = field(default=0.1, metadata=_range(0, 0.5))  # fraction of the image side
    max_scale: float = field(default=0.1, metadata=_range(0, 0.5))
    color: float = field(default=0.5, metadata=_range(0, 1))  # probability of brightness/contrast jitter
    brightness: float = field(default=0.1, metadata=_range(0, 1))
    contrast: float = field(default=0.1, metadata=_range(0, 1))


@dataclass
class OptimizerConfig:
    name: str = field(default="adamw", metadata=_range(choices=("adamw", "sgd")))
    lr: float = field(default=1e-3, metadata=_range(1e-7, 10))
    weight_decay: float = field(default=1e-4, metadata=_range(0, 1))
    momentum: float = field(default=0.9, metadata=_range(0, 1))  # sgd only


@dataclass
class SchedulerConfig:
    name: str = field(default="cosine", metadata=_range(choices=("cosine", "plateau", "none")))
    warmup_epochs: int = field(default=1, metadata=_range(0))
    min_lr_ratio: float = field(default=0.01, metadata=_range(0, 1))  # cosine floor, as a fraction of lr
    factor: float = field(default=0.5, metadata=_range(0.01, 0.99))  # plateau
    patience: int = field(default=3, metadata=_range(0))  # plateau


@dataclass
class LossConfig:
    first: dict[str, float] = field(default_factory=lambda: {"bce": 1.0})
    then: dict[str, float] | None = None  # used from switch_epoch on (a staged schedule)
    switch_epoch: int | None = field(default=None, metadata=_range(0))


@dataclass
class ModelConfig:
    encoder: str = "resnet34"
    encoder_weights: str | None = None


@dataclass
class EmptyHeadConfig:
    """The optional empty-vs-salt head, the same for every architecture (``architectures.create(empty_head=...)``):
    ``weight * BCE(head logit, has salt)`` is added to the segmentation loss. Off (``protocol.empty_head: null``)
    unless set; part of the protocol, so every architecture of a run has it or none does."""

    weight: float = field(default=0.1, metadata=_range(0, 100))  # > 0, checked in _validate
    dropout: float = field(default=0.2, metadata=_range(0, 1))  # < 1, checked in _validate; = EMPTY_HEAD_DEFAULTS


@dataclass
class BudgetConfig:
    """Equal compute instead of equal epochs (``bench.cost``): each architecture trains for the epochs that spend
    ``train_flops`` counted training FLOPs per trained model, or see ``images`` training images. ``epochs`` is
    derived when the data has loaded (architecture -> epochs) and recorded in the run's config."""

    train_flops: float | None = field(default=None, metadata=_range(0))
    images: float | None = field(default=None, metadata=_range(0))
    epochs: dict[str, int] = field(default_factory=dict)


@dataclass
class ProtocolConfig:
    folds: int = field(default=5, metadata=_range(2, 20))
    fold_seed: int = field(default=0, metadata=_range(0))
    seeds: list[int] = field(default_factory=lambda: [0], metadata=_range(0))  # seeds are SeedSequence entropy: >= 0
    input: InputConfig = field(default_factory=InputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    epochs: int = field(default=40, metadata=_range(1, 10000))
    batch_size: int = field(default=32, metadata=_range(1, 4096))
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    # which weights a cell keeps and scores: the last epoch of the fixed schedule, or per validation half the
    # epoch chosen on the other half; selection never reads the images it scores
    checkpoint: str = field(default="final", metadata=_range(choices=("final", "crossfit")))
    grad_clip: float | None = field(default=None, metadata=_range(0))
    empty_head: EmptyHeadConfig | None = None
    # region of practical equivalence of the verdict, in TGS points: two architectures whose difference is shown to
    # lie inside +-rope are "equivalent" (README, "The verdict")
    rope: float = field(default=0.01, metadata=_range(0, 1))
    # equal compute (``bench.cost``): null = every architecture trains ``epochs`` epochs
    budget: BudgetConfig | None = None


PRECISIONS = ("auto", "float32", "bfloat16")  # runtime.precision


@dataclass
class RuntimeConfig:
    """How to run, not what to run: excluded from the protocol hash because it does not change results
    beyond numerical precision (recorded in env.json)."""

    device: str = field(default="auto", metadata=_range(choices=("auto", "cpu", "cuda")))
    # torch.compile of the training forward: false, true or "default", "reduce-overhead" (CUDA graphs on CUDA)
    compile: bool | str = False
    # reproducible kernels on CUDA (cuDNN deterministic, no autotuning, deterministic algorithms where torch has
    # them, a fixed cuBLAS workspace), set by ``bench.runtime.setup``; no effect on CPU results
    deterministic: bool = True
    threads: int | None = field(default=None, metadata=_range(1))
    # the arithmetic of training and prediction: auto = bfloat16 autocast on CUDA, float32 on the CPU; bfloat16
    # on a CPU is used only where the CPU has native bf16 (``bench.runtime.set_precision``)
    precision: str = field(default="auto", metadata=_range(choices=PRECISIONS))
    # seconds between resume checkpoints of a cell (0: after every epoch); a kill loses at most this much work,
    # and at 60 s writing model + optimizer state stays far below 2% of a cell's time
    checkpoint_every: float = field(default=60.0, metadata=_range(0, 86400))
    # validate every N-th epoch (and the last): with ``checkpoint: final`` validation only draws learning curves
    validate_every: int = field(default=1, metadata=_range(1, 10000))
    # local worker processes claiming cells: None = auto (4 on a CUDA GPU with >= 40 GB, else 1)
    workers: int | None = field(default=None, metadata=_range(1, 64))

    @property
    def compile_mode(self) -> str | None:
        """The ``torch.compile`` mode, or None for eager: true and "default" are one mode."""
        return None if self.compile is False else "default" if self.compile is True else self.compile


COMPILE_MODES = ("default", "reduce-overhead")  # runtime.compile's strings (besides false and true)


@dataclass
class Config:
    name: str = "benchmark"
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    architectures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def arch_options(self, arch: str) -> dict[str, Any]:
        """``architectures.<arch>`` without its recipe (``train``) and provenance (``tuned``): the model options."""
        return {k: v for k, v in (self.architectures.get(arch) or {}).items() if k not in ARCH_RESERVED}

    def plan(self, arch: str, source: str = "config") -> ArchPlan:
        """Resolve ``arch`` once: its model, its training recipe and the hashes that identify it.

        Only the recipe (the fields of ``Recipe``) may differ per architecture (that is what per-arch
        tuning changes); data, folds, seeds, epochs, input and augmentation stay shared.
        """
        override = copy.deepcopy((self.architectures.get(arch) or {}).get("train") or {})
        bad = sorted(set(override) - set(RECIPE_KEYS))
        if bad:
            raise BenchError(f"{source}: architectures.{arch}.train.{bad[0]}: not a per-architecture setting "
                             f"(allowed: {', '.join(RECIPE_KEYS)})")
        protocol, runtime = self.protocol, self.runtime
        if override:
            merged = deep_merge(dataclasses.asdict(self.protocol), override)
            protocol = _build(ProtocolConfig, merged, f"architectures.{arch}.train", source)
        if protocol.budget is not None and arch in protocol.budget.epochs:
            protocol, runtime = _budgeted(protocol, runtime, protocol.budget.epochs[arch])
        model = {"encoder": self.protocol.model.encoder, "encoder_weights": self.protocol.model.encoder_weights,
                 **self.arch_options(arch)}
        if self.protocol.empty_head is not None:
            model["empty_head"] = {"dropout": self.protocol.empty_head.dropout}
        tuned = (self.architectures.get(arch) or {}).get("tuned")
        return ArchPlan(arch=arch, protocol=protocol, model=model, recipe_override=override,
                        protocol_hash=protocol_hash(self), runtime=runtime, tuned=None if tuned is None else str(tuned))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _budgeted(p: ProtocolConfig, runtime: RuntimeConfig, epochs: int) -> tuple[ProtocolConfig, RuntimeConfig]:
    """The protocol at ``epochs`` derived from the budget: warm-up, loss switch and validation interval keep their
    fraction of the schedule (a switch at the last epoch stays at the last epoch)."""
    scale = epochs / p.epochs

    def scaled(n: int) -> int:
        return max(int(round(n * scale)), 1) if n else 0

    scheduler = dataclasses.replace(p.scheduler, warmup_epochs=min(scaled(p.scheduler.warmup_epochs), epochs))
    switch = p.loss.switch_epoch
    loss = p.loss if switch is None else dataclasses.replace(p.loss, switch_epoch=min(scaled(switch), epochs))
    return (dataclasses.replace(p, epochs=epochs, scheduler=scheduler, loss=loss),
            dataclasses.replace(runtime, validate_every=scaled(runtime.validate_every)))


@dataclass(frozen=True)
class Recipe:
    """The training recipe: the only part of the protocol an architecture may override (``architectures.<arch>.train``)."""

    batch_size: int
    optimizer: OptimizerConfig
    scheduler: SchedulerConfig
    loss: LossConfig
    grad_clip: float | None


RECIPE_KEYS = tuple(f.name for f in dataclasses.fields(Recipe))


@dataclass(frozen=True)
class ArchPlan:
    """One architecture under the run's protocol, resolved: what the trainer takes, and all it takes.

    ``protocol`` is the shared protocol with the architecture's recipe laid over it; ``protocol_hash`` is
    the hash of the *shared* protocol (every cell of a run carries the same one), so no caller can hash
    the overlaid copy by mistake.
    """

    arch: str
    protocol: ProtocolConfig
    model: dict[str, Any]  # keyword arguments of ``architectures.create``: the shared encoder, then the options
    recipe_override: dict[str, Any]  # ``architectures.<arch>.train`` as written; {} = the shared recipe
    protocol_hash: str
    runtime: RuntimeConfig
    tuned: str | None = None  # the study whose best trial wrote this section (``architectures.<arch>.tuned``)

    @property
    def recipe(self) -> Recipe:
        p = self.protocol
        return Recipe(p.batch_size, p.optimizer, p.scheduler, p.loss, p.grad_clip)

    def recipe_label(self) -> str:
        """``shared``, or the short difference from the shared recipe, e.g. ``lr=0.0048 bs=16``."""
        if not self.recipe_override:
            return "shared"
        short = {"batch_size": "bs", "optimizer.lr": "lr", "optimizer.weight_decay": "wd", "grad_clip": "clip"}
        parts = [f"{short.get(k, k)}={v:.4g}" if isinstance(v, float) else f"{short.get(k, k)}={v}"
                 for k, v in _flatten(self.recipe_override)]
        return " ".join(parts)


def _flatten(tree: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for key, value in sorted(tree.items()):
        name = f"{prefix}{key}"
        out += _flatten(value, f"{name}.") if isinstance(value, dict) else [(name, value)]
    return out


ARCH_RESERVED = ("train", "tuned")  # keys of ``architectures.<arch>`` that are not model options


def protocol_dict(cfg: Config) -> dict[str, Any]:
    """The part of the config every cell must share: data and protocol (not the architectures, not runtime).

    ``empty_head`` and ``budget`` are left out while they are off, so the hash of a protocol without them is the
    one it had before they existed and older run directories continue under it."""
    d = cfg.to_dict()
    for key in ("empty_head", "budget"):
        if d["protocol"][key] is None:
            del d["protocol"][key]
    if "budget" in d["protocol"]:  # derived from the budget, the data and the architectures, which are hashed
        del d["protocol"]["budget"]["epochs"]
    return {"data": d["data"], "protocol": d["protocol"]}


def protocol_hash(cfg: Config) -> str:
    canonical = json.dumps(protocol_dict(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def deep_merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise BenchError(f"{path}: cannot read config ({exc.strerror})") from None
    try:
        if any(isinstance(event, yaml.AliasEvent) for event in yaml.parse(text, Loader=yaml.SafeLoader)):
            # nested aliases expand exponentially when the config is copied out: a few bytes, gigabytes of memory
            raise BenchError(f"{path}: YAML aliases (*name) are not accepted in a config; write the values out")
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise BenchError(f"{path}: invalid YAML{where}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BenchError(f"{path}: top level must be a mapping, got {type(raw).__name__}")
    return raw


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b.c=value`` -> (["a","b","c"], value parsed as YAML, so 30 is int and null is None)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise BenchError(f"--set {text!r}: expected KEY=VALUE, e.g. --set protocol.epochs=30")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def _set_dotted(tree: dict, keys: list[str], value: Any) -> None:
    node = tree
    for k in keys[:-1]:
        child = node.get(k)
        if child is None:
            child = node[k] = {}
        if not isinstance(child, dict):
            raise BenchError(f"--set {'.'.join(keys)}: {k!r} is not a section")
        node = child
    node[keys[-1]] = value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, key: str, source: str) -> Any:
    """Check ``value`` against the annotation ``tp``; build nested dataclasses. Errors name key and file."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key, source)
            except BenchError as exc:
                errors.append(exc)
        raise errors[0]
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise BenchError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
        return _build(tp, value, key, source)
    if origin is list:
        (item_tp,) = typing.get_args(tp)
        if not isinstance(value, list):
            raise BenchError(f"{source}: {key}: expected a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        _, val_tp = typing.get_args(tp)
        if not isinstance(value, dict):
            raise BenchError(f"{source}: {key}: expected a mapping, got {type(value).__name__}")
        return {str(k): (v if val_tp is Any else _coerce(v, val_tp, f"{key}.{k}", source)) for k, v in value.items()}
    if tp is float:
        return _finite(value, key, source)
    if tp in (int, float, str, bool):
        if isinstance(value, bool) and tp is not bool or not isinstance(value, tp):
            raise BenchError(f"{source}: {key}: expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
        return value
    raise BenchError(f"{source}: {key}: unsupported type {_type_name(tp)}")


def _build(cls: type, raw: dict, prefix: str, source: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        where = f"{prefix}.{unknown[0]}" if prefix else unknown[0]
        raise BenchError(f"{source}: unknown key {where!r} (valid: {', '.join(sorted(fields))})")
    kwargs = {}
    for name, value in raw.items():
        key = f"{prefix}.{name}" if prefix else name
        value = _coerce(value, hints[name], key, source)
        meta = fields[name].metadata
        if meta and value is not None:
            _check_range(value, meta, key, source)
        kwargs[name] = value
    return cls(**kwargs)


def _finite(value: Any, key: str, source: str) -> float:
    """A float from an int, a float or a numeric string (YAML 1.1 reads 1e-3 as a string), refusing NaN and
    infinities: NaN passes every range comparison and would silently drop a loss term or diverge training."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise BenchError(f"{source}: {key}: expected float, got {type(value).__name__} {value!r}")
    try:
        number = float(value)
    except (ValueError, OverflowError):
        raise BenchError(f"{source}: {key}: expected float, got {type(value).__name__} {value!r}") from None
    if not math.isfinite(number):
        raise BenchError(f"{source}: {key}: expected a finite number, got {value!r}")
    return number


def _check_finite_within(value: Any, key: str, source: str) -> None:
    """Free-form model options have no declared type: a NaN or infinity anywhere in them (a float, or a string that
    reads as one, as ``--set x=nan`` gives) is refused as in a typed float field."""
    if isinstance(value, dict):
        for k, v in value.items():
            _check_finite_within(v, f"{key}.{k}", source)
    elif isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_finite_within(v, f"{key}[{i}]", source)
    elif isinstance(value, (float, str)) and not isinstance(value, bool):
        try:
            number = float(value)
        except (ValueError, OverflowError):
            return
        if not math.isfinite(number):
            raise BenchError(f"{source}: {key}: expected a finite number, got {value!r}")


def _check_range(value: Any, meta: dict, key: str, source: str) -> None:
    """The range of a list field applies to each item. Written as ``not lo <= value`` so that a value no
    comparison holds for (NaN) fails too."""
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_range(item, meta, f"{key}[{i}]", source)
        return
    if meta["choices"] and value not in meta["choices"]:
        raise BenchError(f"{source}: {key}: {value!r} is not one of {', '.join(meta['choices'])}")
    if meta["lo"] is not None and not meta["lo"] <= value:
        raise BenchError(f"{source}: {key}: {value!r} is below the minimum {meta['lo']}")
    if meta["hi"] is not None and not value <= meta["hi"]:
        raise BenchError(f"{source}: {key}: {value!r} is above the maximum {meta['hi']}")


def check_name(name: str, what: str) -> None:
    """A run or study name becomes one folder or file name (``runs/<name>``, ``tuning/<study>.db``): refuse
    whatever would make it a path elsewhere, or no name at all."""
    problems = [(not name.strip(), "is empty"), (".." in name, "holds '..'"),
                (any(c in name for c in "/\\\0"), "holds a path separator"), (name == ".", "is the current folder")]
    problem = next((text for bad, text in problems if bad), None)
    if problem:
        raise BenchError(f"{what}: {name!r} {problem}; a name, not a path, is expected (choose the folder with --out)")


def _validate(cfg: Config, source: str) -> None:
    from bench import losses  # local: config must not import torch at module import time

    check_name(cfg.name, f"{source}: name")

    if isinstance(cfg.runtime.compile, str) and cfg.runtime.compile not in COMPILE_MODES:
        raise BenchError(f"{source}: runtime.compile: {cfg.runtime.compile!r} is not one of false, true, default, "
                         "reduce-overhead")

    for part in ("first", "then"):
        terms = getattr(cfg.protocol.loss, part)
        if terms is not None:
            losses.check_terms(terms, f"{source}: protocol.loss.{part}")
    loss = cfg.protocol.loss
    if (loss.then is None) != (loss.switch_epoch is None):
        raise BenchError(f"{source}: protocol.loss: 'then' and 'switch_epoch' go together")
    if not cfg.protocol.seeds:
        raise BenchError(f"{source}: protocol.seeds: at least one seed is needed")
    twice = next((s for i, s in enumerate(cfg.protocol.seeds) if s in cfg.protocol.seeds[:i]), None)
    if twice is not None:
        raise BenchError(f"{source}: protocol.seeds: seed {twice} is listed twice in {cfg.protocol.seeds} "
                         "(each seed is one replicate)")
    if cfg.protocol.input.size % 32:
        raise BenchError(f"{source}: protocol.input.size: {cfg.protocol.input.size} is not a multiple of 32")
    if cfg.protocol.input.mode == "pad" and cfg.protocol.input.size < 101:
        raise BenchError(f"{source}: protocol.input.size: padding needs at least 101, got {cfg.protocol.input.size}")
    head = cfg.protocol.empty_head
    if head is not None and not head.weight > 0:
        raise BenchError(f"{source}: protocol.empty_head.weight: {head.weight!r} must be above 0 "
                         "(protocol.empty_head: null turns the head off)")
    if head is not None and not head.dropout < 1:
        raise BenchError(f"{source}: protocol.empty_head.dropout: {head.dropout!r} must be below 1")
    budget = cfg.protocol.budget
    if budget is not None and (budget.train_flops is None) == (budget.images is None):
        raise BenchError(f"{source}: protocol.budget: give exactly one of train_flops or images (null: equal epochs)")
    if budget is not None and not (budget.train_flops or budget.images) > 0:
        raise BenchError(f"{source}: protocol.budget: the budget must be above 0")
    if not cfg.architectures:
        raise BenchError(f"{source}: architectures: no architecture to run")
    import architectures

    for arch, kwargs in cfg.architectures.items():
        if arch not in architectures.names():
            raise BenchError(f"{source}: architectures.{arch}: unknown (valid: {', '.join(architectures.names())})")
        if kwargs is not None and not isinstance(kwargs, dict):
            raise BenchError(f"{source}: architectures.{arch}: expected a mapping of settings")
        valid = {"encoder", "encoder_weights", *architectures.ARCHITECTURES[arch].defaults}
        unknown = sorted(set(cfg.arch_options(arch)) - valid)
        if unknown:
            raise BenchError(f"{source}: architectures.{arch}.{unknown[0]}: not an option of {arch} "
                             f"(valid: {', '.join(sorted(valid | set(ARCH_RESERVED)))})")
        for name, value in cfg.arch_options(arch).items():
            _check_finite_within(value, f"architectures.{arch}.{name}", source)
        plan = cfg.plan(arch, source)
        for part in ("first", "then"):
            terms = getattr(plan.protocol.loss, part)
            if terms is not None:
                losses.check_terms(terms, f"{source}: architectures.{arch}.train.loss.{part}")


def load(paths: list[str | Path] | None = None, overrides: list[str] | None = None) -> Config:
    """Layer YAML files left to right, apply ``--set`` overrides, and validate the result."""
    tree: dict = {}
    sources = []
    for path in paths or []:
        path = Path(path)
        tree = deep_merge(tree, read_yaml(path))
        sources.append(str(path))
    for text in overrides or []:
        keys, value = parse_override(text)
        _set_dotted(tree, keys, value)
    source = " + ".join(sources) or "<defaults>"
    if overrides:
        source += " (with --set)"
    cfg = _build(Config, tree, "", source)
    _validate(cfg, source)
    return cfg


def from_dict(tree: dict, source: str = "<dict>") -> Config:
    cfg = _build(Config, copy.deepcopy(tree), "", source)
    _validate(cfg, source)
    return cfg

