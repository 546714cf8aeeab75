"""One cell = (architecture, fold, seed) -> artefacts: metrics.json, history.csv, oof.npz, model.pt.

The whole dataset lives on the device as uint8; a batch is an index gather; augmentation is batched on
the device from a generator seeded by (seed, fold, epoch). After an epoch, at most every
``runtime.checkpoint_every`` seconds, the cell's state is copied to the host and written atomically by a
background thread (``bench.checkpoint``), so a killed cell resumes at its last checkpointed epoch and ends with
the same result, and the loop does not wait for the disk.

``train_cell`` is a skeleton of phases: resume (``CellState``), ``train_one_epoch``, ``validate``,
``finish`` (the final inference) and ``write_artefacts``.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

import architectures
from bench import classifier, cost, losses, rundir, runtime
from bench.augment import augment, make_generator, stream_seed
from bench.checkpoint import CheckpointWriter, snapshot
from bench.config import ArchPlan, ProtocolConfig
from bench.errors import BenchError, summary
from bench.identity import cell_hash, cell_identity
from bench.inference import autocast, from_network, predict_outputs, quantise, split_outputs, to_network
from bench.metrics import iou, tgs_precision
from bench.rundir import Cell, CellRecord

INIT, EPOCH, HALVES = 1, 2, 3  # stream tags: model initialisation, per-epoch batch stream, validation halves


@dataclass
class DeviceData:
    """Train images and masks as (N,1,101,101) uint8 tensors on the training device."""

    ids: list[str]
    images: torch.Tensor
    masks: torch.Tensor
    mean: float
    std: float

    @classmethod
    def from_arrays(cls, ids: list[str], images: np.ndarray, masks: np.ndarray, device: torch.device) -> "DeviceData":
        x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.uint8)).unsqueeze(1).to(device)
        y = torch.from_numpy(np.ascontiguousarray(masks, dtype=np.uint8)).unsqueeze(1).to(device)
        pixels = images.astype(np.float64) / 255.0
        return cls(list(ids), x, y, float(pixels.mean()), float(max(pixels.std(), 1e-3)))


BatchHook = Callable[[int, torch.Tensor, torch.Tensor], None]
EpochHook = Callable[[int, float], None]


def batch_stream(
    p: ProtocolConfig, data: DeviceData, train_idx: torch.Tensor, seed: int, fold: int, epoch: int
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Augmented (x in [0,1], y in {0,1}) float batches of one epoch; depends on (seed, fold, epoch) only."""
    gen = make_generator(data.images.device, seed, fold, epoch, EPOCH)
    order = train_idx[torch.randperm(len(train_idx), generator=gen, device=data.images.device)]
    bs = min(p.batch_size, len(order))
    n_batches = len(order) // bs  # drop the ragged tail: BatchNorm needs more than one sample
    for b in range(n_batches):
        idx = order[b * bs : (b + 1) * bs]
        x = data.images[idx].float() / 255.0
        y = data.masks[idx].float()
        yield augment(x, y, p.augment, gen)


def _optimizer(p: ProtocolConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    o = p.optimizer
    if o.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=o.lr, momentum=o.momentum, weight_decay=o.weight_decay, nesterov=True)
    # fused on CUDA (one kernel for all parameters; recorded in the cell identity through the device type)
    fused = next(model.parameters()).device.type == "cuda"
    return torch.optim.AdamW(model.parameters(), lr=o.lr, weight_decay=o.weight_decay, fused=fused or None)


def _scheduler(p: ProtocolConfig, opt: torch.optim.Optimizer, steps_per_epoch: int) -> Any:
    s, epochs = p.scheduler, p.epochs
    if s.name == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(opt, mode="max", factor=s.factor, patience=s.patience)
    warmup = s.warmup_epochs * steps_per_epoch
    total = max(epochs * steps_per_epoch, 1)

    def factor(step: int) -> float:
        if s.name == "none":
            return 1.0
        if step < warmup:
            return (step + 1) / warmup
        progress = min((step - warmup) / max(total - warmup, 1), 1.0)
        return s.min_lr_ratio + (1 - s.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


class Trainer:
    """Model, optimiser, schedule and loss of one cell; ``step`` is the harness's training step.

    With ``protocol.empty_head`` the model carries the image-level head and the loss gains
    ``weight * BCE(head logit, has salt)``, "has salt" read off the augmented mask: the same term for every
    architecture.
    """

    def __init__(self, plan: ArchPlan, cell: Cell, data: DeviceData, steps_per_epoch: int):
        self.plan, self.cell, self.data = plan, cell, data
        self.protocol = plan.protocol
        self.device = data.images.device
        torch.manual_seed(stream_seed(cell.seed, INIT))
        model = architectures.create(cell.arch, in_channels=1, classes=1, **plan.model)
        self.model = runtime.prepare_model(model, self.device, plan.runtime.deterministic)
        self.deterministic_kernels = runtime.deterministic_kernels(plan.runtime.deterministic, self.device)
        # torch.compile of the forward (its backward follows): "reduce-overhead" replays it as CUDA graphs on CUDA
        self.compile_mode = plan.runtime.compile_mode
        self.forward = torch.compile(self.model, mode=self.compile_mode) if self.compile_mode else self.model
        self.optimizer = _optimizer(self.protocol, self.model)
        self.scheduler = _scheduler(self.protocol, self.optimizer, steps_per_epoch)
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
        with autocast(self.device):
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
        if not isinstance(self.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            self.scheduler.step()
        return loss.detach()

    def state(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])


def _cpu_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}


@dataclass
class Split:
    """Fold ``k``'s train and validation images, on the device, and the two validation halves that
    ``checkpoint: crossfit`` chooses an epoch on (``half_a``: True for half A, a seeded half of each fold)."""

    train_idx: torch.Tensor
    val_idx: torch.Tensor
    val_images: torch.Tensor
    val_truth: np.ndarray
    half_a: np.ndarray
    steps_per_epoch: int

    @classmethod
    def of(cls, data: DeviceData, folds: np.ndarray, fold: int, p: ProtocolConfig) -> Split:
        fold_t = torch.as_tensor(folds, device=data.images.device)
        train_idx = torch.nonzero(fold_t != fold).flatten()
        val_idx = torch.nonzero(fold_t == fold).flatten()
        steps = cost.steps_per_epoch(len(train_idx), p.batch_size)
        order = np.random.default_rng([p.fold_seed, fold, HALVES]).permutation(len(val_idx))
        half_a = np.zeros(len(val_idx), dtype=bool)
        half_a[order[: len(val_idx) // 2]] = True
        return cls(train_idx, val_idx, data.images[val_idx], data.masks[val_idx, 0].bool().cpu().numpy(), half_a, steps)


@dataclass
class CellState:
    """Everything a killed cell needs to continue where it stopped; saved in ``checkpoint.pt`` between epochs.

    ``kept`` holds, for ``checkpoint: crossfit``, the best epoch so far by the score of each validation half
    (``a``, ``b``) and of the whole fold (``all``, the weights ``model.pt`` keeps for the holdout ensemble),
    as copies on the training device: only a checkpoint's snapshot moves them to the host.
    """

    epoch: int = 0  # the next epoch to train
    history: list[dict[str, Any]] = field(default_factory=list)
    kept: dict[str, dict[str, Any]] = field(default_factory=dict)
    train_time: float = 0.0
    train_images: int = 0
    stop_reason: str = "completed all epochs"
    stopped: bool = False
    diverged: bool = False

    def to_checkpoint(self, cell_hash: str, trainer: Trainer) -> dict[str, Any]:
        """A host copy of the cell's and the trainer's state: training may go on while it is written."""
        cell = {f.name: getattr(self, f.name) for f in fields(self)}
        return snapshot({"cell_hash": cell_hash, "trainer": trainer.state(), "cell": cell})

    @classmethod
    def resume(cls, path: Path, cell_hash: str, trainer: Trainer) -> CellState:
        """The state saved at ``path`` (loaded into ``trainer`` too), or a fresh one when there is none.

        A checkpoint that cannot be read, or that belongs to another cell identity (a changed recipe, model
        option, device or version), is not continued: the cell restarts, and says so.
        """
        if not path.is_file():
            return cls()
        try:
            ckpt = torch.load(path, map_location=trainer.device, weights_only=True)
            saved_hash = ckpt["cell_hash"]
        except Exception as exc:  # torch raises many types for a truncated or foreign file
            print(f"{path}: unreadable checkpoint ({summary(exc)}); the cell restarts from epoch 0")
            return cls()
        if saved_hash != cell_hash:
            print(f"{path}: checkpoint of cell identity {saved_hash}, this cell is {cell_hash} (its recipe, model, "
                  "device or versions changed); the cell restarts from epoch 0")
            return cls()
        trainer.load_state(ckpt["trainer"])
        return cls(**ckpt["cell"])


def train_one_epoch(trainer: Trainer, data: DeviceData, split: Split, cell: Cell, epoch: int,
                    on_batch: BatchHook | None = None) -> tuple[float, int, bool]:
    """One pass over the fold's training images: (mean loss, steps, whether every loss was finite)."""
    torch.manual_seed(stream_seed(cell.seed, cell.fold, epoch, INIT))  # dropout draws, epoch-resumable
    trainer.model.train()
    device = trainer.device
    loss_sum = torch.zeros((), device=device)
    finite = torch.ones((), dtype=torch.bool, device=device)  # on the device: no host sync between steps
    first_bad = torch.full((), -1, dtype=torch.long, device=device)
    n_steps = 0
    for x, y in batch_stream(trainer.protocol, data, split.train_idx, cell.seed, cell.fold, epoch):
        if on_batch is not None:
            on_batch(epoch, x, y)
        loss = trainer.step(x, y, epoch)
        ok = torch.isfinite(loss)
        first_bad = torch.where(finite & ~ok, torch.full_like(first_bad, n_steps), first_bad)
        finite = finite & ok
        loss_sum = loss_sum + torch.where(ok, loss, torch.zeros_like(loss))
        n_steps += 1
    if not bool(finite):  # the epoch's one check
        return float("nan"), int(first_bad), False
    return float(loss_sum) / max(n_steps, 1), n_steps, True


def validate(trainer: Trainer, data: DeviceData, split: Split) -> tuple[np.ndarray, float]:
    """Per-image TGS scores and the mean IoU of the fold's validation images at threshold 0.5, no TTA."""
    probs = predict_outputs(trainer.model, split.val_images, trainer.protocol.input, data.mean, data.std, tta=False).masks
    pred = (probs > 0.5).cpu().numpy()
    return tgs_precision(split.val_truth, pred), float(iou(split.val_truth, pred).mean())


def validates(plan: ArchPlan, epoch: int) -> bool:
    """Whether ``epoch`` is validated: every ``runtime.validate_every``-th and the last. With the final checkpoint
    validation only draws the learning curves; crossfit and the plateau schedule need every epoch."""
    p = plan.protocol
    if p.checkpoint == "crossfit" or p.scheduler.name == "plateau":
        return True
    return (epoch + 1) % plan.runtime.validate_every == 0 or epoch + 1 == p.epochs


def _keep(state: CellState, key: str, score: float, epoch: int, model: torch.nn.Module) -> None:
    if score > state.kept.get(key, {"score": -1.0})["score"]:
        weights = {k: v.detach().clone() for k, v in model.state_dict().items()}  # on the device
        state.kept[key] = {"score": score, "epoch": epoch, "state": weights}


def _epoch(trainer: Trainer, data: DeviceData, split: Split, cell: Cell, state: CellState, epoch: int,
           on_batch: BatchHook | None) -> None:
    """Train, validate and record one epoch in ``state``; a non-finite loss stops the cell."""
    p, device = trainer.protocol, trainer.device
    t0 = time.perf_counter()
    train_loss, n_steps, finite = train_one_epoch(trainer, data, split, cell, epoch, on_batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    state.train_time += time.perf_counter() - t0
    state.train_images += n_steps * min(p.batch_size, len(split.train_idx))
    if not finite:
        state.stop_reason = f"non-finite loss at epoch {epoch} step {n_steps}"
        state.stopped = state.diverged = True
        return
    row = {"epoch": epoch, "lr": trainer.optimizer.param_groups[0]["lr"], "train_loss": train_loss,
           "val_score": math.nan, "val_iou": math.nan, "val_score_a": math.nan, "val_score_b": math.nan}
    state.history.append(row)
    state.epoch = epoch + 1
    if not validates(trainer.plan, epoch):
        return
    scores, val_iou = validate(trainer, data, split)
    score, score_a, score_b = float(scores.mean()), float(scores[split.half_a].mean()), float(scores[~split.half_a].mean())
    row.update(val_score=score, val_iou=val_iou, val_score_a=score_a, val_score_b=score_b)
    if isinstance(trainer.scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
        trainer.scheduler.step(score)
    if p.checkpoint == "crossfit":
        for key, value in (("all", score), ("a", score_a), ("b", score_b)):
            _keep(state, key, value, epoch, trainer.model)


@dataclass
class Final:
    """The cell's out-of-fold prediction by the weights it keeps, as uint8 probability levels, and the head's
    probability per image (float32; ``None`` without the head), each with and without flip TTA."""

    status: str
    oof_tta: np.ndarray
    oof_plain: np.ndarray
    oof_head: np.ndarray | None
    oof_head_plain: np.ndarray | None
    infer_images_per_s: float
    kept_epochs: dict[str, int]  # which epoch predicted which validation images
    val_score: float  # the kept prediction's validation TGS score at 0.5, no TTA
    model_state: dict[str, torch.Tensor] | None  # model.pt: the weights the holdout ensemble uses


def _head_array(head: torch.Tensor | None) -> np.ndarray | None:
    return None if head is None else head.cpu().numpy().astype(np.float32)


def _predict(trainer: Trainer, data: DeviceData, split: Split) -> tuple[np.ndarray, np.ndarray, np.ndarray | None,
                                                                        np.ndarray | None, float]:
    """(masks TTA, masks plain, head TTA, head plain, TTA images/s) of the fold's validation images."""
    p = trainer.protocol
    tta = predict_outputs(trainer.model, split.val_images, p.input, data.mean, data.std, tta=True)
    plain = predict_outputs(trainer.model, split.val_images, p.input, data.mean, data.std, tta=False)
    return quantise(tta.masks), quantise(plain.masks), _head_array(tta.head), _head_array(plain.head), tta.images_per_s


def finish(trainer: Trainer, data: DeviceData, split: Split, state: CellState) -> Final:
    """Predict the fold's validation images with the kept weights (with and without flip TTA).

    ``final``: the weights of the last epoch. ``crossfit``: half A by the epoch chosen on half B and half B
    by the epoch chosen on half A, so no validation image is scored by an epoch selected on it.
    """
    if state.diverged or not state.history:  # the cell predicts nothing, which the leaderboard scores honestly
        empty = np.zeros((len(split.val_idx), *trainer.size), np.uint8)
        head = None if trainer.head_weight is None else np.zeros(len(split.val_idx), np.float32)
        return Final("diverged", empty, empty, head, head, float("nan"), {}, float("nan"), None)
    if trainer.protocol.checkpoint == "final":
        tta, plain, head, head_plain, ips = _predict(trainer, data, split)
        last = state.history[-1]
        return Final("ok", tta, plain, head, head_plain, ips, {"all": last["epoch"]}, last["val_score"],
                     _cpu_state(trainer.model))
    parts = {}
    for chooser in ("a", "b"):
        trainer.model.load_state_dict(state.kept[chooser]["state"])
        parts[chooser] = _predict(trainer, data, split)
    half_a = split.half_a[:, None, None]
    tta = np.where(half_a, parts["b"][0], parts["a"][0])
    plain = np.where(half_a, parts["b"][1], parts["a"][1])
    head, head_plain = (None, None) if parts["a"][2] is None else (
        np.where(split.half_a, parts["b"][2], parts["a"][2]), np.where(split.half_a, parts["b"][3], parts["a"][3]))
    rows = {r["epoch"]: r for r in state.history}
    ea, eb = state.kept["a"]["epoch"], state.kept["b"]["epoch"]
    n_a, n_b = int(split.half_a.sum()), int((~split.half_a).sum())
    val_score = (n_a * rows[eb]["val_score_a"] + n_b * rows[ea]["val_score_b"]) / max(n_a + n_b, 1)
    kept = {"half_a_by": eb, "half_b_by": ea, "model_pt": state.kept["all"]["epoch"]}
    return Final("ok", tta, plain, head, head_plain, parts["a"][4], kept, val_score, snapshot(state.kept["all"]["state"]))


def cell_metrics(plan: ArchPlan, cell: Cell, trainer: Trainer, split: Split, state: CellState, final: Final,
                 identity: dict[str, Any], wall_s: float) -> CellRecord:
    """``metrics.json``: what the cell is, what it kept, how it went and what it cost."""
    p, device = plan.protocol, trainer.device
    described = architectures.describe(trainer.model, input_size=p.input.size, in_channels=1)
    flops = cost.count_flops(plan)
    head = {}
    if final.oof_head is not None:  # the head as a classifier of this fold's validation images, at 0.5
        judged = classifier.classifier_metrics(final.oof_head, ~split.val_truth.any(axis=(1, 2)))
        head = {"head_accuracy": judged["accuracy"], "head_roc_auc": judged["roc_auc"]}
    return CellRecord(
        arch=cell.arch, fold=cell.fold, seed=cell.seed, protocol_hash=plan.protocol_hash,
        cell_hash=cell_hash(identity), identity=identity, recipe=plan.recipe_label(), tuned=plan.tuned,
        status=final.status, stop_reason=state.stop_reason, arch_kwargs=plan.model,
        arch_train=plan.recipe_override, encoder=plan.model["encoder"],
        params=described["params"], macs=described["macs"], output_stride=described["output_stride"],
        checkpoint=p.checkpoint, kept_epochs=final.kept_epochs, epochs=p.epochs, epochs_run=len(state.history),
        val_score=final.val_score,
        train_images_per_s=state.train_images / max(state.train_time, 1e-9),
        infer_images_per_s=final.infer_images_per_s,
        # cost: FLOPs counted (the same on any machine), seconds and latency measured on this device
        train_flops=flops.train * state.train_images, infer_flops=flops.infer, train_s=state.train_time,
        infer_ms=cost.latency_ms(trainer.model, p.input, device),
        peak_mem_mb=torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        device=str(device), device_name=runtime.device_name(device), dtype=identity["dtype"],
        n_train=len(split.train_idx), n_val=len(split.val_idx), wall_s=wall_s, **head,
    )


def write_artefacts(out_dir: Path, metrics: CellRecord, state: CellState, final: Final, val_ids: np.ndarray) -> None:
    """The cell's files, ``metrics.json`` last: its presence marks the cell done."""
    if final.model_state is not None:
        rundir.write_weights(out_dir / rundir.MODEL, final.model_state)
    oof = rundir.OofPrediction(val_ids, final.oof_tta, final.oof_plain, final.oof_head, final.oof_head_plain)
    oof.write(out_dir / rundir.OOF)
    rundir.History.of(state.history).write(out_dir / rundir.HISTORY)
    metrics.write(out_dir / rundir.METRICS)
    (out_dir / rundir.CHECKPOINT).unlink(missing_ok=True)


def train_cell(
    plan: ArchPlan,
    cell: Cell,
    data: DeviceData,
    folds: np.ndarray,
    out_dir: Path,
    *,
    on_batch: BatchHook | None = None,
    on_epoch: EpochHook | None = None,
    progress: bool = True,
    progress_file: Path | None = None,
) -> CellRecord:
    """Train one cell and write its artefacts to ``out_dir``; resumes from ``checkpoint.pt`` if present.

    ``on_batch(epoch, x, y)`` sees every augmented batch (tests hash them); ``on_epoch(epoch, score)``
    sees every validation score and may raise to stop the cell (Optuna pruning). ``progress_file`` (``RunDir.
    progress_file``) gets the epochs done after each epoch, for the run's progress lines, and is deleted before
    the artefacts are written.
    """
    from tqdm.auto import tqdm

    out_dir, device = Path(out_dir), data.images.device
    budget = plan.protocol.budget
    if budget is not None and plan.arch not in budget.epochs:
        raise BenchError(f"protocol.budget: no epochs derived for {plan.arch} (bench.cost.resolve runs when the data loads)")
    split = Split.of(data, folds, cell.fold, plan.protocol)
    trainer = Trainer(plan, cell, data, split.steps_per_epoch)
    identity = cell_identity(plan, device)
    chash = cell_hash(identity)
    ckpt_path = out_dir / rundir.CHECKPOINT
    state = CellState.resume(ckpt_path, chash, trainer)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t_cell = last_checkpoint = time.perf_counter()
    start = state.epoch
    if progress_file is not None:
        rundir.CellProgress(start, plan.protocol.epochs, start).write(progress_file)
    # the writer is joined before the artefacts, and on any exception; then the bar clears its line, so an error
    # is printed on a line of its own
    with (tqdm(total=plan.protocol.epochs, initial=state.epoch, desc=f"{cell.arch} {cell.name}", unit="ep",
               leave=False, disable=not progress) as bar,
          CheckpointWriter(ckpt_path) as writer):
        while state.epoch < plan.protocol.epochs and not state.stopped:
            epoch = state.epoch
            _epoch(trainer, data, split, cell, state, epoch, on_batch)
            if state.epoch == epoch:  # the epoch did not finish (non-finite loss)
                break
            row = state.history[-1]
            if progress_file is not None:
                rundir.CellProgress(state.epoch, plan.protocol.epochs, start).write(progress_file)
            bar.update()
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", val=f"{row['val_score']:.3f}")
            if on_epoch is not None and not math.isnan(row["val_score"]):
                on_epoch(epoch, row["val_score"])
            writer.check()
            due = time.perf_counter() - last_checkpoint >= plan.runtime.checkpoint_every
            if due and state.epoch < plan.protocol.epochs:  # after the last epoch the artefacts follow at once
                writer.submit(state.to_checkpoint(chash, trainer))
                last_checkpoint = time.perf_counter()

    final = finish(trainer, data, split, state)
    val_ids = np.array([data.ids[i] for i in split.val_idx.cpu().tolist()])
    metrics = cell_metrics(plan, cell, trainer, split, state, final, identity, time.perf_counter() - t_cell)
    if progress_file is not None:
        progress_file.unlink(missing_ok=True)
    write_artefacts(out_dir, metrics, state, final, val_ids)
    return metrics


def load_model(cell_dir: Path, device: torch.device) -> torch.nn.Module:
    """Rebuild a cell's model from its metrics.json and load its kept weights (state dict only), prepared as the
    cell's training prepared it on ``device`` (``runtime.prepare_model``: channels_last, and the deterministic
    kernels of a ``runtime.deterministic`` cell on CUDA), so its predictions run the kernels its out-of-fold
    predictions ran."""
    record = CellRecord.read(Path(cell_dir) / rundir.METRICS)
    weights = Path(cell_dir) / rundir.MODEL
    model = architectures.create(record.arch, in_channels=1, classes=1, **record.arch_kwargs)
    try:
        model.load_state_dict(rundir.read_weights(weights))
    except RuntimeError as exc:  # weights of another model: missing or unexpected keys, other shapes
        raise BenchError(f"{weights}: not the weights of {record.arch} with {record.arch_kwargs} "
                         f"({summary(exc, 200)})") from None
    return runtime.prepare_model(model, device, record.identity.get("deterministic")).eval()
