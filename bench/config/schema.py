"""The config as a whole (``Config``) and the part of it every cell must share, with its hash.

A config has three top-level parts. ``data`` and ``protocol`` together are *the protocol*: every cell of a
run must share them, so their canonical JSON is hashed and the hash is recorded in every cell. The
``architectures`` section (which models, with which extra settings) is the only thing allowed to differ.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from bench.config.plan import ArchPlan, model_options, resolve
from bench.config.sections import DataConfig, ProtocolConfig, RuntimeConfig


@dataclass
class Config:
    name: str = "benchmark"
    data: DataConfig = field(default_factory=DataConfig)
    protocol: ProtocolConfig = field(default_factory=ProtocolConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    architectures: dict[str, dict[str, Any]] = field(default_factory=dict)

    def arch_options(self, arch: str) -> dict[str, Any]:
        """``architectures.<arch>`` without its recipe (``train``) and provenance (``tuned``): the model options."""
        return model_options(self.architectures.get(arch) or {})

    def plan(self, arch: str, source: str = "config") -> ArchPlan:
        """Resolve ``arch`` once: its model, its training recipe and the hashes that identify it
        (``bench.config.plan``)."""
        return resolve(arch, self.architectures.get(arch) or {}, self.protocol, self.runtime, protocol_hash(self),
                       source)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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

