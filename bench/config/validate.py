"""What the types alone cannot say: names, loss terms, seeds, input size, the head, the budget, and each
architecture's options and recipe, checked on a built ``Config`` with errors that name the file and the key."""
from __future__ import annotations

from bench.config.build import check_finite_within
from bench.config.plan import ARCH_RESERVED
from bench.config.schema import Config
from bench.config.sections import COMPILE_MODES, ProtocolConfig
from bench.errors import BenchError


def check_name(name: str, what: str) -> None:
    """A run or study name becomes one folder or file name (``runs/<name>``, ``tuning/<study>.db``): refuse
    whatever would make it a path elsewhere, or no name at all."""
    problems = [(not name.strip(), "is empty"), (".." in name, "holds '..'"),
                (any(c in name for c in "/\\\0"), "holds a path separator"), (name == ".", "is the current folder")]
    problem = next((text for bad, text in problems if bad), None)
    if problem:
        raise BenchError(f"{what}: {name!r} {problem}; a name, not a path, is expected (choose the folder with --out)")


def _check_registered(name: str, registry: dict, key: str) -> None:
    if name not in registry:
        raise BenchError(f"{key}: {name!r} is not one of {', '.join(registry)}")


def _check_recipe_names(protocol: ProtocolConfig, where: str) -> None:
    """The optimiser and schedule are names in their registries (``bench.cell.optim``), their one home."""
    from bench.cell.optim import OPTIMIZERS, SCHEDULERS  # local: config must not import torch at module import time

    _check_registered(protocol.optimizer.name, OPTIMIZERS, f"{where}.optimizer.name")
    _check_registered(protocol.scheduler.name, SCHEDULERS, f"{where}.scheduler.name")


def validate(cfg: Config, source: str) -> None:
    """Refuse ``cfg`` (built from ``source``) at its first problem, as one line naming ``source`` and the key."""
    from bench import losses  # local: config must not import torch at module import time

    check_name(cfg.name, f"{source}: name")

    if isinstance(cfg.runtime.compile, str) and cfg.runtime.compile not in COMPILE_MODES:
        raise BenchError(f"{source}: runtime.compile: {cfg.runtime.compile!r} is not one of false, true, default, "
                         "reduce-overhead")

    _check_recipe_names(cfg.protocol, f"{source}: protocol")
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
            check_finite_within(value, f"architectures.{arch}.{name}", source)
        plan = cfg.plan(arch, source)
        _check_recipe_names(plan.protocol, f"{source}: architectures.{arch}.train")
        for part in ("first", "then"):
            terms = getattr(plan.protocol.loss, part)
            if terms is not None:
                losses.check_terms(terms, f"{source}: architectures.{arch}.train.loss.{part}")
