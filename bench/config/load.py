"""Where a config comes from: YAML files layered left to right, ``--set`` overrides, or a dict; built and
validated into a ``Config``."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from bench.config.build import build, deep_merge
from bench.config.schema import Config
from bench.config.validate import validate
from bench.errors import BenchError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def read_yaml(path: Path) -> dict:
    """One YAML config layer as a mapping; an unreadable file, bad YAML or an alias is one line naming it."""
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
    cfg = build(Config, tree, "", source)
    validate(cfg, source)
    return cfg


def from_dict(tree: dict, source: str = "<dict>") -> Config:
    """A config from a tree already in memory (a run's config.yaml, a test's dict), checked as a file is."""
    cfg = build(Config, copy.deepcopy(tree), "", source)
    validate(cfg, source)
    return cfg

