"""The search space of ``salt-bench tune``: a YAML file read and validated like a config.

Parameters are named by config keys relative to ``architectures.<arch>.``: ``train.*`` is the
architecture's training recipe (``architectures.<arch>.train``, see ``bench.config.RECIPE_KEYS``),
anything else is a model option of that architecture (``architectures/registry.py``). ``shared``
parameters are identical for every architecture, which is what makes equal-budget tuning fair;
``architectures.<arch>`` adds decoder options that exist only for that architecture. Every bound and
choice is checked against the config (and every model option built on the meta device) before a
trial runs, so a typo is a one-line error naming the file and the key, not a failed study.
"""
from __future__ import annotations

import copy
import dataclasses
import inspect
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml

import architectures
from bench import config as bconfig
from bench.config import RECIPE_KEYS, Config
from bench.errors import BenchError

DEFAULT_SPACE = bconfig.CONFIG_DIR / "tune" / "default.yaml"
EPOCHS = "epochs"  # an int bound that means protocol.epochs (e.g. the staged-loss switch epoch)

PRUNERS: dict[str, type[optuna.pruners.BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "none": optuna.pruners.NopPruner,
}
_DIST_KEYS = {"float": {"low", "high", "log", "step"}, "int": {"low", "high", "log", "step"}, "categorical": {"choices"}}
_TOP_KEYS = ("sampler", "pruner", "heartbeat", "shared", "architectures")


@dataclass(frozen=True)
class Param:
    """One tuned key: its Optuna distribution and, for categorical choices, label -> value."""

    key: str  # relative to architectures.<arch>., e.g. "train.optimizer.lr" or "decoder_attention_type"
    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    labels: dict[Any, Any] = field(default_factory=dict)  # Optuna choice -> config value (lists as labels)

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.kind == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.kind == "int":
            return trial.suggest_int(self.key, self.low, self.high, log=self.log, step=self.step or 1)
        return self.labels[trial.suggest_categorical(self.key, list(self.labels))]

    def candidates(self) -> list[Any]:
        """The values validation tries: both bounds, or every choice."""
        return list(self.labels.values()) if self.kind == "categorical" else [self.low, self.high]


@dataclass
class Space:
    path: Path
    sampler: dict[str, int]
    pruner: dict[str, Any]
    heartbeat: dict[str, int]
    shared: list[Param]
    per_arch: dict[str, list[Param]]

    def params(self, arch: str) -> list[Param]:
        """The parameters one architecture's study tunes: the shared ones, then its own."""
        return self.shared + self.per_arch.get(arch, [])

    def suggest(self, trial: optuna.Trial, arch: str) -> dict[str, Any]:
        return {p.key: p.suggest(trial) for p in self.params(arch)}

    def make_pruner(self) -> optuna.pruners.BasePruner:
        kwargs = {k: v for k, v in self.pruner.items() if k != "name"}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return PRUNERS[self.pruner["name"]](**kwargs)

    @property
    def per_cell_pruning(self) -> bool:
        """Wilcoxon compares one value per fold; the others read a learning curve, one value per epoch."""
        return self.pruner["name"] == "wilcoxon"


def nest(params: dict[str, Any]) -> dict[str, Any]:
    """{"train.optimizer.lr": 0.01, "encoder": "x"} -> {"train": {"optimizer": {"lr": 0.01}}, "encoder": "x"}."""
    tree: dict[str, Any] = {}
    for key, value in params.items():
        node = tree
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return tree


def arch_section(cfg: Config, arch: str, params: dict[str, Any]) -> dict[str, Any]:
    """The config's ``architectures.<arch>`` section with the trial's parameters laid over it."""
    return bconfig.deep_merge(copy.deepcopy(cfg.architectures.get(arch) or {}), nest(params))


def with_arch(cfg: Config, arch: str, section: dict[str, Any], source: str) -> Config:
    """``cfg`` with ``architectures.<arch>`` replaced by ``section``, validated like any config."""
    tree = cfg.to_dict()
    tree["architectures"] = {**tree["architectures"], arch: section}
    return bconfig.from_dict(tree, source)


def _err(path: Path, key: str, message: str) -> BenchError:
    return BenchError(f"{path}: {key}: {message}")


def _mapping(value: Any, path: Path, key: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise _err(path, key, f"expected a mapping, got {type(value).__name__}")
    return value


def _number(value: Any, path: Path, key: str, kind: str, cfg: Config) -> float | int:
    if kind == "int" and value == EPOCHS:
        return cfg.protocol.epochs
    if isinstance(value, str) and kind == "float":
        try:
            value = float(value)  # YAML 1.1 reads 1e-3 as a string
        except ValueError:
            pass
    ok = isinstance(value, int) if kind == "int" else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok:
        extra = f" or {EPOCHS!r}" if kind == "int" else ""
        raise _err(path, key, f"expected a number{extra}, got {value!r}")
    return value if kind == "int" else float(value)


def _label(value: Any) -> Any:
    """Optuna choices must be scalars; a list choice (e.g. atrous rates) is named by its YAML flow form."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return yaml.safe_dump(value, default_flow_style=True).strip()


def _param(key: str, spec: Any, path: Path, where: str, cfg: Config) -> Param:
    spec = _mapping(spec, path, where)
    kind = spec.get("type")
    if kind not in _DIST_KEYS:
        raise _err(path, where, f"type must be one of {', '.join(_DIST_KEYS)}, got {kind!r}")
    unknown = sorted(set(spec) - _DIST_KEYS[kind] - {"type"})
    if unknown:
        raise _err(path, f"{where}.{unknown[0]}", f"not a {kind} setting (valid: {', '.join(sorted(_DIST_KEYS[kind]))})")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list) or not choices:
            raise _err(path, f"{where}.choices", "expected a non-empty list")
        labels = {_label(c): c for c in choices}
        if len(labels) != len(choices):
            raise _err(path, f"{where}.choices", "choices repeat")
        return Param(key, kind, labels=labels)
    for bound in ("low", "high"):
        if bound not in spec:
            raise _err(path, where, f"{kind} needs '{bound}'")
    low, high = (_number(spec[b], path, f"{where}.{b}", kind, cfg) for b in ("low", "high"))
    step = None if spec.get("step") is None else _number(spec["step"], path, f"{where}.step", kind, cfg)
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise _err(path, f"{where}.log", f"expected true or false, got {log!r}")
    try:  # Optuna's own checks: low <= high, log needs low > 0, log and step exclude each other
        dist = optuna.distributions.FloatDistribution if kind == "float" else optuna.distributions.IntDistribution
        dist(low, high, log=log, step=step if kind == "float" else (step or 1))
    except ValueError as exc:
        raise _err(path, where, str(exc).splitlines()[0]) from None
    return Param(key, kind, low=low, high=high, log=log, step=step)


def _check_param(param: Param, cfg: Config, arch: str, path: Path, where: str) -> None:
    """Every candidate value of ``param`` must make a valid config (and, for model options, a model)."""
    head = param.key.split(".")[0]
    if head == "train":
        sub = param.key.split(".")[1] if "." in param.key else ""
        if sub not in RECIPE_KEYS:
            raise _err(path, where, f"not a per-architecture training setting (train.<{'|'.join(RECIPE_KEYS)}>...)")
    else:
        allowed = {"encoder", "encoder_weights", *architectures.ARCHITECTURES[arch].defaults}
        if head not in allowed or "." in param.key:
            raise _err(path, where, f"not a model option of {arch} (valid: {', '.join(sorted(allowed))}, or train.*)")
    for value in param.candidates():
        source = f"{path}: {where}={value!r} for {arch}"
        trial_cfg = with_arch(cfg, arch, arch_section(cfg, arch, {param.key: value}), source)
        plan = trial_cfg.plan(arch, source)
        merged = {**cfg.to_dict(), "protocol": dataclasses.asdict(plan.protocol),
                  "architectures": {arch: trial_cfg.arch_options(arch)}}
        bconfig.from_dict(merged, source)  # the merged recipe obeys the protocol's own rules too
        if head != "train":
            _check_builds(arch, {**plan.model, "encoder_weights": None}, cfg.protocol.input.size,
                          path, where, value)


def _check_builds(arch: str, kwargs: dict[str, Any], size: int, path: Path, where: str, value: Any) -> None:
    """Build the model and run a forward pass on the meta device (no memory, no compute): options that
    only fail at run time (e.g. an attention block on a decoder stage too narrow for it) fail here."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.device("meta"):
                model = architectures.create(arch, in_channels=1, classes=1, **kwargs)
            model(torch.empty(2, 1, size, size, device="meta"))
    except Exception as exc:  # smp and timm raise many types for options they reject
        reason = (str(exc).strip("\"'").splitlines() or [""])[0][:160]
        raise _err(path, where, f"{value!r} does not work for {arch} ({type(exc).__name__}: {reason})") from None


def _settings(raw: Any, path: Path, key: str, defaults: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Integer settings; ``defaults`` maps each name to (default, minimum)."""
    raw = _mapping(raw, path, key)
    unknown = sorted(set(raw) - set(defaults))
    if unknown:
        raise _err(path, f"{key}.{unknown[0]}", f"unknown (valid: {', '.join(defaults)})")
    out = {k: raw.get(k, default) for k, (default, _) in defaults.items()}
    for k, v in out.items():
        lo = defaults[k][1]
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise _err(path, f"{key}.{k}", f"expected an integer >= {lo}, got {v!r}")
    return out


def _pruner(raw: Any, path: Path) -> dict[str, Any]:
    raw = dict(_mapping(raw, path, "pruner")) or {"name": "median"}
    name = raw.get("name", "median")
    if name not in PRUNERS:
        raise _err(path, "pruner.name", f"{name!r} is not one of {', '.join(PRUNERS)}")
    accepted = set(inspect.signature(PRUNERS[name]).parameters)
    unknown = sorted(set(raw) - accepted - {"name"})
    if unknown:
        raise _err(path, f"pruner.{unknown[0]}", f"not a {name} pruner setting (valid: {', '.join(sorted(accepted)) or 'none'})")
    raw["name"] = name
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            PRUNERS[name](**{k: v for k, v in raw.items() if k != "name"})
    except (ValueError, TypeError) as exc:
        raise _err(path, "pruner", str(exc).splitlines()[0]) from None
    return raw


def load_space(path: str | Path | None, cfg: Config, archs: list[str]) -> Space:
    """Read and validate a search space for ``archs`` under ``cfg`` (int bounds may say ``epochs``)."""
    path = Path(path) if path is not None else DEFAULT_SPACE
    raw = bconfig.read_yaml(path)
    unknown = sorted(set(raw) - set(_TOP_KEYS))
    if unknown:
        raise _err(path, unknown[0], f"unknown section (valid: {', '.join(_TOP_KEYS)})")
    shared_raw = _mapping(raw.get("shared"), path, "shared")
    per_raw = _mapping(raw.get("architectures"), path, "architectures")
    for arch in per_raw:
        if arch not in architectures.names():
            raise _err(path, f"architectures.{arch}", f"unknown architecture (valid: {', '.join(architectures.names())})")
    shared = [_param(k, v, path, f"shared.{k}", cfg) for k, v in shared_raw.items()]
    per_arch = {a: [_param(k, v, path, f"architectures.{a}.{k}", cfg) for k, v in _mapping(s, path, f"architectures.{a}").items()]
                for a, s in per_raw.items()}
    for arch, params in per_arch.items():
        for p in params:
            if p.key in shared_raw:
                raise _err(path, f"architectures.{arch}.{p.key}",
                           "also in 'shared': a shared knob must be the same for every architecture")
            if p.key.split(".")[0] in ("train", "encoder", "encoder_weights"):
                raise _err(path, f"architectures.{arch}.{p.key}",
                           "training recipe and encoder knobs belong in 'shared' (same for every architecture)")
    for arch in archs:
        for p in shared:
            _check_param(p, cfg, arch, path, f"shared.{p.key}")
        for p in per_arch.get(arch, []):
            _check_param(p, cfg, arch, path, f"architectures.{arch}.{p.key}")
    space = Space(
        path=path,
        sampler=_settings(raw.get("sampler"), path, "sampler", {"seed": (0, 0), "n_startup_trials": (10, 0)}),
        pruner=_pruner(raw.get("pruner"), path),
        heartbeat=_settings(raw.get("heartbeat"), path, "heartbeat",
                            {"interval": (60, 1), "grace_period": (180, 1), "max_retry": (2, 0)}),
        shared=shared,
        per_arch=per_arch,
    )
    for arch in archs:
        if not space.params(arch):  # its trials would all be the untuned config, labelled tuned
            raise BenchError(f"{path}: no parameter to tune for {arch} (the file has none under 'shared' or "
                             f"'architectures.{arch}')")
    return space
