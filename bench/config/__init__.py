"""Typed benchmark configuration, one job per module: ``sections`` (the typed parts and their ranges), ``schema``
(``Config`` and the protocol hash), ``build`` (raw trees to checked dataclasses), ``plan`` (one architecture's
recipe over the shared protocol: ``ArchPlan``), ``validate`` (the checks types cannot express) and ``load``
(YAML layers and ``--set`` overrides). Callers import from ``bench.config``.
"""
from bench.config.build import deep_merge
from bench.config.load import CONFIG_DIR, from_dict, load, parse_override, read_yaml
from bench.config.plan import ARCH_RESERVED, RECIPE_KEYS, ArchPlan, Recipe
from bench.config.schema import Config, protocol_dict, protocol_hash
from bench.config.sections import (
    COMPILE_MODES,
    PRECISIONS,
    AugmentConfig,
    BudgetConfig,
    DataConfig,
    EmptyHeadConfig,
    InputConfig,
    LossConfig,
    ModelConfig,
    OptimizerConfig,
    ProtocolConfig,
    RuntimeConfig,
    SchedulerConfig,
)
from bench.config.validate import check_name

__all__ = ["ARCH_RESERVED", "COMPILE_MODES", "CONFIG_DIR", "PRECISIONS", "RECIPE_KEYS", "ArchPlan", "AugmentConfig",
           "BudgetConfig", "Config", "DataConfig", "EmptyHeadConfig", "InputConfig", "LossConfig", "ModelConfig",
           "OptimizerConfig", "ProtocolConfig", "Recipe", "RuntimeConfig", "SchedulerConfig", "check_name",
           "deep_merge", "from_dict", "load", "parse_override", "protocol_dict", "protocol_hash", "read_yaml"]
