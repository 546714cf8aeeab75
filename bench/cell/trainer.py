"""The trainer of one cell: its model, optimiser, schedule and loss, and the training step."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

import architectures
from bench import losses, runtime
from bench.augment import stream_seed
from bench.cell.data import INIT, DeviceData
from bench.cell.optim import OPTIMIZERS, SCHEDULERS, stepped_per_epoch
from bench.config import ArchPlan
from bench.inference import autocast, from_network, split_outputs, to_network
from bench.rundir import Cell


class Trainer:
    """Model, optimiser, schedule and loss of one cell; ``step`` is the harness's training step.

    ``arithmetic`` is the dtype the cell computes in (``runtime.arithmetic``), passed to every forward pass of
    training and prediction. With ``protocol.empty_head`` the model carries the image-level head and the loss
    gains ``weight * BCE(head logit, has salt)``, "has salt" read off the augmented mask: the same term for every
    architecture.
    """

    def __init__(self, plan: ArchPlan, cell: Cell, data: DeviceData, steps_per_epoch: int):
        self.plan, self.cell, self.data = plan, cell, data
        self.protocol = plan.protocol
        self.device = data.images.device
        self.arithmetic = runtime.arithmetic(plan.runtime, self.device)
        torch.manual_seed(stream_seed(cell.seed, INIT))
        model = architectures.create(cell.arch, in_channels=1, classes=1, **plan.model)
        self.model = runtime.prepare_model(model, self.device, plan.runtime.deterministic)
        self.deterministic_kernels = runtime.deterministic_kernels(plan.runtime.deterministic, self.device)
        # torch.compile of the forward (its backward follows): "reduce-overhead" replays it as CUDA graphs on CUDA
        self.compile_mode = plan.runtime.compile_mode
        self.forward = torch.compile(self.model, mode=self.compile_mode) if self.compile_mode else self.model
        self.optimizer = OPTIMIZERS[self.protocol.optimizer.name](self.protocol.optimizer, self.model)
        self.scheduler = SCHEDULERS[self.protocol.scheduler.name](self.protocol.scheduler, self.optimizer,
                                                                  steps_per_epoch, self.protocol.epochs)
        loss = self.protocol.loss
        self.loss = losses.StagedLoss(loss.first, loss.then, loss.switch_epoch).to(self.device)
        self.head_weight = None if self.protocol.empty_head is None else self.protocol.empty_head.weight
        self.size = tuple(data.images.shape[-2:])

    def objective(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """The training loss of a batch: the segmentation loss on the 101x101 crop, plus the head's weighted BCE."""
        p = self.protocol
        xin = to_network((x - self.data.mean) / self.data.std, p.input).contiguous(memory_format=torch.channels_last)
        if self.compile_mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()  # a new iteration: the last step's graph outputs are free
        with autocast(self.device, self.arithmetic):
            logits, head_logits = split_outputs(self.forward(xin))
        logits = from_network(logits.float(), p.input, self.size, deterministic=self.deterministic_kernels)
        loss = self.loss.at(epoch)(logits, y)
        if self.head_weight is not None:
            has_salt = y.flatten(1).amax(dim=1)
            loss = loss + self.head_weight * F.binary_cross_entropy_with_logits(head_logits.float(), has_salt)
        return loss

    def step(self, x: torch.Tensor, y: torch.Tensor, epoch: int) -> torch.Tensor:
        """Forward, loss (``objective``), backward, optimiser and per-step schedule. Returns the loss."""
        p = self.protocol
        loss = self.objective(x, y, epoch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if p.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), p.grad_clip)
        self.optimizer.step()
        if not stepped_per_epoch(self.scheduler):
            self.scheduler.step()
        return loss.detach()

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
