"""The typed sections of a config (``data``, ``protocol`` and its parts, ``runtime``): fields, defaults, ranges.

A field's ``metadata`` (``_range``) is its allowed range or choices, checked by ``bench.config.build``.
"""
from __future__ import annotations

from dataclasses import dataclass, field


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
    name: str = "adamw"  # a name in bench.cell.optim.OPTIMIZERS (checked by bench.config.validate)
    lr: float = field(default=1e-3, metadata=_range(1e-7, 10))
    weight_decay: float = field(default=1e-4, metadata=_range(0, 1))
    momentum: float = field(default=0.9, metadata=_range(0, 1))  # sgd only


@dataclass
class SchedulerConfig:
    name: str = "cosine"  # a name in bench.cell.optim.SCHEDULERS (checked by bench.config.validate)
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

    weight: float = field(default=0.1, metadata=_range(0, 100))  # > 0, checked in validate
    dropout: float = field(default=0.2, metadata=_range(0, 1))  # < 1, checked in validate; = EMPTY_HEAD_DEFAULTS


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
    # on a CPU is used only where the CPU has native bf16 (``bench.runtime.arithmetic``)
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
