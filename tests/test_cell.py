"""The cell package's own rules: which epochs are validated, and the optimiser and schedule registries."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench import config
from bench.cell.loop import is_validation_epoch
from bench.cell.optim import OPTIMIZERS, SCHEDULERS, stepped_per_epoch

QUICK = Path(__file__).resolve().parents[1] / "configs" / "quick.yaml"


def test_validation_every_tenth_epoch_and_the_last_unless_selection_needs_them_all() -> None:
    plan = config.load([QUICK]).plan("unet")
    assert plan.runtime.validate_every == 10 and plan.protocol.epochs == 40
    assert [e for e in range(40) if is_validation_epoch(plan, e)] == [9, 19, 29, 39]
    crossfit = config.load([QUICK], ["protocol.checkpoint=crossfit"]).plan("unet")
    assert all(is_validation_epoch(crossfit, e) for e in range(40))
    last = config.load([QUICK], ["runtime.validate_every=5", "protocol.epochs=7"]).plan("unet")
    assert [e for e in range(7) if is_validation_epoch(last, e)] == [4, 6]


@pytest.mark.parametrize("schedule", sorted(SCHEDULERS))
@pytest.mark.parametrize("optimiser", sorted(OPTIMIZERS))
def test_every_registered_optimiser_and_schedule_builds_from_its_config_section_and_steps(optimiser: str,
                                                                                          schedule: str) -> None:
    plan = config.load([QUICK], [f"protocol.optimizer.name={optimiser}",
                                 f"protocol.scheduler.name={schedule}"]).plan("unet")
    model = torch.nn.Linear(2, 1)
    opt = OPTIMIZERS[optimiser](plan.protocol.optimizer, model)
    sched = SCHEDULERS[schedule](plan.protocol.scheduler, opt, 4, plan.protocol.epochs)
    assert type(opt).__name__.lower() == optimiser and opt.param_groups[0]["weight_decay"] == \
        plan.protocol.optimizer.weight_decay
    before = model.weight.detach().clone()
    model(torch.ones(3, 2)).sum().backward()
    opt.step()
    sched.step(0.5) if stepped_per_epoch(sched) else sched.step()
    assert not torch.equal(before, model.weight), f"{optimiser} did not move the weights"
    assert stepped_per_epoch(sched) == (schedule == "plateau")
