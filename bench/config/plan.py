"""The per-architecture plan: the shared protocol with one architecture's recipe laid over it (``ArchPlan``).

Only the recipe (the fields of ``Recipe``) may differ per architecture (that is what per-arch tuning changes);
data, folds, seeds, epochs, input and augmentation stay shared. ``Config.plan(arch)`` is the way in.
"""
from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

from bench.config.build import build, deep_merge
from bench.config.sections import LossConfig, OptimizerConfig, ProtocolConfig, RuntimeConfig, SchedulerConfig
from bench.errors import BenchError

ARCH_RESERVED = ("train", "tuned")  # keys of ``architectures.<arch>`` that are not model options


def model_options(section: dict[str, Any]) -> dict[str, Any]:
    """``architectures.<arch>`` without its recipe (``train``) and provenance (``tuned``): the model options."""
    return {k: v for k, v in section.items() if k not in ARCH_RESERVED}


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



def resolve(arch: str, section: dict[str, Any], shared: ProtocolConfig, runtime: RuntimeConfig, protocol_hash: str,
            source: str) -> ArchPlan:
    """The plan of ``arch`` from its ``architectures.<arch>`` section and the shared protocol and runtime;
    ``protocol_hash`` is the shared protocol's. A recipe key that is not one, or a bad value, names ``source``."""
    override = copy.deepcopy(section.get("train") or {})
    bad = sorted(set(override) - set(RECIPE_KEYS))
    if bad:
        raise BenchError(f"{source}: architectures.{arch}.train.{bad[0]}: not a per-architecture setting "
                         f"(allowed: {', '.join(RECIPE_KEYS)})")
    protocol = shared
    if override:
        merged = deep_merge(dataclasses.asdict(shared), override)
        protocol = build(ProtocolConfig, merged, f"architectures.{arch}.train", source)
    if protocol.budget is not None and arch in protocol.budget.epochs:
        protocol, runtime = _budgeted(protocol, runtime, protocol.budget.epochs[arch])
    model = {"encoder": shared.model.encoder, "encoder_weights": shared.model.encoder_weights, **model_options(section)}
    if shared.empty_head is not None:
        model["empty_head"] = {"dropout": shared.empty_head.dropout}
    tuned = section.get("tuned")
    return ArchPlan(arch=arch, protocol=protocol, model=model, recipe_override=override,
                    protocol_hash=protocol_hash, runtime=runtime, tuned=None if tuned is None else str(tuned))


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

